"""The oRPC wire encoding, without a server: framing, Date meta, input meta, error bodies."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectral import wire
from spectral.api import orpc_wire as ow
from spectral.api import rpc_procedures as rp
from spectral.api.operations import OPERATIONS
from spectral.errors import ApiError
from spectral.tasks import state as sm

ISO = "2026-11-24T19:13:19.305Z"


def decode(envelope: Any) -> Any:
    """decode_body of ``envelope`` serialized as JSON."""
    return ow.decode_body(json.dumps(envelope).encode())


def is_orpc_error_json(value: Any) -> bool:
    """``isORPCErrorJson`` of packages/client/src/error.ts, in Python."""
    return (
        isinstance(value, dict)
        and set(value) <= {"defined", "code", "status", "message", "data"}
        and isinstance(value.get("defined"), bool)
        and isinstance(value.get("code"), str)
        and type(value.get("status")) is int
        and (value["status"] < 200 or value["status"] >= 400)
        and isinstance(value.get("message"), str)
    )


# -- responses ---------------------------------------------------------------------------


def test_serialize_without_dates_has_no_meta() -> None:
    assert ow.serialize({"success": True, "taskId": "a"}, rp.NO_DATES) == {
        "json": {"success": True, "taskId": "a"}
    }
    assert ow.serialize([1, 2]) == {"json": [1, 2]}


def test_serialize_marks_each_timestamp_of_the_shape_as_a_date() -> None:
    output = {
        "task": {"createdAt": ISO, "startedAt": None, "metadata": {"createdAt": ISO}},
        "latestHistory": [{"timestamp": ISO}, {"timestamp": None}, {"timestamp": ISO}],
        "extra": ISO,
    }
    assert ow.serialize(output, rp.MUTATION) == {
        "json": output,  # the values themselves are untouched
        "meta": [
            [1, "task", "createdAt"],
            [1, "latestHistory", 0, "timestamp"],
            [1, "latestHistory", 2, "timestamp"],
        ],
    }


def test_a_date_at_the_root_and_under_lists() -> None:
    assert ow.serialize(ISO, ow.DATE) == {"json": ISO, "meta": [[1]]}
    assert ow.serialize(None, ow.DATE) == {"json": None}
    assert ow.serialize([ISO, None], ow.Each(ow.DATE))["meta"] == [[1, 0]]
    # A value that is not what the shape expects is not marked (and not an error).
    assert ow.serialize({"task": [ISO]}, {"task": {"createdAt": ow.DATE}}) == {
        "json": {"task": [ISO]}
    }


def _state(*commands: sm.Command) -> sm.TaskState:
    state: sm.TaskState | None = None
    for index, command in enumerate(commands):
        state, _ = sm.apply(state, command, now=1_700_000_000.0 + index)
    assert state is not None
    return state


def test_the_task_shape_covers_every_timestamp_the_task_json_has() -> None:
    created = sm.Create(task_id="t", owner="o", epoch="e")
    task = wire.task_json(_state(created, sm.Progress(progress=5), sm.Complete()))
    timestamps = {key for key in task if key.endswith("At")}
    assert timestamps == set(rp.TASK)  # a new timestamp field must be added to the shape
    meta = ow.serialize(task, rp.TASK)["meta"]
    assert meta == [[1, "createdAt"], [1, "updatedAt"], [1, "startedAt"], [1, "completedAt"]]
    for _, name in meta:
        assert task[name].endswith("Z")  # what JavaScript's Date parses exactly


def test_the_event_shape_covers_the_event_json() -> None:
    _, event = sm.apply(None, sm.Create(task_id="t", owner="o", epoch="e"), now=1.5)
    body = wire.event_json(event)
    assert ow.serialize([body], ow.Each(rp.EVENT))["meta"] == [[1, 0, "timestamp"]]
    assert {key for key in body if key.endswith("At") or key == "timestamp"} == set(rp.EVENT)


def test_every_procedure_has_a_shape_and_the_reads_are_the_three_getters() -> None:
    procedures = {o.rpc.name: o.rpc for o in OPERATIONS if o.rpc is not None}
    assert set(procedures) == {
        "create",
        "getById",
        "addEvent",
        "updateProgress",
        "complete",
        "fail",
        "cancel",
        "getHistory",
        "listAll",
        "delete",
        "batchUpdateProgress",
    }
    reads = {name for name, procedure in procedures.items() if procedure.get}
    assert reads == {"getById", "getHistory", "listAll"}


@settings(deadline=None)  # a shared 2-core machine: timing is not the point
@given(
    st.lists(
        st.fixed_dictionaries(
            {"seq": st.integers(1, 10**6), "timestamp": st.none() | st.just(ISO)},
            optional={"metadata": st.dictionaries(st.sampled_from(["timestamp", "x"]), st.text())},
        ),
        max_size=20,
    )
)
def test_history_meta_names_exactly_the_non_null_timestamps(events: list[dict[str, Any]]) -> None:
    meta = ow.serialize(events, ow.Each(rp.EVENT)).get("meta", [])
    expected = [[1, i, "timestamp"] for i, e in enumerate(events) if e["timestamp"] is not None]
    assert meta == expected


# -- requests ----------------------------------------------------------------------------


def test_an_empty_body_or_one_without_json_is_undefined() -> None:
    assert ow.decode_body(b"") is ow.UNDEFINED
    assert ow.decode_body(b"  \n") is ow.UNDEFINED
    assert ow.decode_body(b"{}") is ow.UNDEFINED
    assert ow.decode_body(b'{"meta": []}') is ow.UNDEFINED
    assert decode({"json": None}) is None
    assert decode({"json": {"taskId": "a"}, "meta": None}) == {"taskId": "a"}


@settings(deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_without_meta_the_input_is_the_json(value: Any) -> None:
    assert decode({"json": value}) == value


def test_each_meta_type_is_revived() -> None:
    envelope = {
        "json": {
            "big": "-12345678901234567890",
            "when": ISO,
            "never": None,
            "nan": None,
            "holes": [None, 1],
            "url": "https://example.invalid/",
            "re": "/a+/gi",
            "set": [1, 2],
            "map": [["a", 1], ["b", ISO]],
            "pairs": [[1, "one"]],
        },
        "meta": [
            [0, "big"],
            [1, "when"],
            [1, "never"],
            [2, "nan"],
            [3, "holes", 0],
            [4, "url"],
            [5, "re"],
            [6, "set"],
            [1, "map", 1, 1],  # children first, then the container, as oRPC emits them
            [7, "map"],
            [7, "pairs"],
        ],
    }
    value = decode(envelope)
    assert value["big"] == -12345678901234567890
    assert (value["when"], value["never"]) == (ISO, None)  # dates stay ISO strings
    assert math.isnan(value["nan"])
    assert value["holes"] == [None, 1]
    assert (value["url"], value["re"]) == ("https://example.invalid/", "/a+/gi")
    assert value["set"] == [1, 2]
    assert value["map"] == {"a": 1, "b": ISO}
    assert value["pairs"] == [[1, "one"]]  # keys that are not strings: the pairs as sent


def test_meta_paths_follow_javascript_property_rules() -> None:
    assert decode({"json": [["5"]], "meta": [[0, "0", 0]]}) == [[5]]  # "0" indexes an array
    assert decode({"json": {"0": "5"}, "meta": [[0, 0]]}) == {"0": 5}  # 0 names key "0"
    assert decode({"json": "7", "meta": [[0]]}) == 7  # the root itself
    assert decode({"json": {"a": 1}, "meta": [[42, "a"], [42, "nope"]]}) == {"a": 1}  # custom


def test_bigints_up_to_orpcs_digit_limit() -> None:
    digits = "9" * ow.MAX_BIGINT_DIGITS
    assert decode({"json": digits, "meta": [[0]]}) == int(digits)
    with pytest.raises(ow.MalformedRequestError, match="bigint"):
        decode({"json": digits + "9", "meta": [[0]]})


MALFORMED: list[tuple[Any, str]] = [
    ([1], "JSON object"),
    (None, "JSON object"),
    ("text", "JSON object"),
    ({"json": 1, "meta": {}}, "meta must be an array"),
    ({"json": 1, "meta": [1]}, "invalid meta entry"),
    ({"json": 1, "meta": [[]]}, "invalid meta entry"),
    ({"json": 1, "meta": [[True]]}, "invalid meta entry"),
    ({"json": 1, "meta": [["1"]]}, "invalid meta entry"),
    ({"json": {"a": 1}, "meta": [[1, "a", 1.5]]}, "invalid meta entry"),
    ({"json": {"a": 1}, "meta": [[1, "b"]]}, "segment 'b' does not exist"),
    ({"json": [1], "meta": [[1, 1]]}, "segment 1 does not exist"),
    ({"json": [1], "meta": [[1, -1]]}, "does not exist"),
    ({"json": [1], "meta": [[1, "x"]]}, "does not exist"),
    ({"json": {"a": {"b": 1}}, "meta": [[1, "a", "b", "c"]]}, "does not exist"),
    ({"meta": [[1]]}, "expects a string or null"),
    ({"json": 5, "meta": [[0]]}, "bigint"),
    ({"json": "1.5", "meta": [[0]]}, "bigint"),
    ({"json": "01", "meta": [[0]]}, "bigint"),
    ({"json": 5, "meta": [[1]]}, "a string or null"),
    ({"json": 0, "meta": [[2]]}, "nan"),
    ({"json": 0, "meta": [[3]]}, "undefined"),
    ({"json": 5, "meta": [[4]]}, "url"),
    ({"json": 5, "meta": [[5]]}, "regexp"),
    ({"json": "x", "meta": [[6]]}, "set"),
    ({"json": {}, "meta": [[7]]}, "map"),
]


@pytest.mark.parametrize(("envelope", "words"), MALFORMED)
def test_malformed_framing_is_refused_with_a_reason(envelope: Any, words: str) -> None:
    with pytest.raises(ow.MalformedRequestError) as raised:
        decode(envelope)
    assert words in str(raised.value)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"NaN", b'{"json": Infinity}', b'{"json": -Infinity}', b"\xff", b"[" * 50_000],
)
def test_what_json_parse_refuses_is_refused(raw: bytes) -> None:
    with pytest.raises(ow.MalformedRequestError, match="not JSON"):
        ow.decode_body(raw)


def test_get_input_is_the_last_data_parameter() -> None:
    assert ow.decode_query([]) is ow.UNDEFINED
    assert ow.decode_query(['{"json": 1}', ""]) is ow.UNDEFINED  # parseEmptyableJSON("")
    assert ow.decode_query(['{"json": 1}', '{"json": 2}']) == 2
    with pytest.raises(ow.MalformedRequestError):
        ow.decode_query(["nope"])


@pytest.mark.parametrize(
    ("path", "procedure"),
    [
        ("/rpc/tasks/create", "/tasks/create"),
        ("/rpc/tasks/create/", "/tasks/create"),  # one trailing slash dropped
        ("/rpc/tasks/create//", "/tasks/create/"),
        ("/rpc//tasks/create", "//tasks/create"),  # one leading slash only
        ("/rpc/tasks%2Fcreate", "/tasks%2Fcreate"),  # matched as sent, still encoded
        ("/rpc", "/"),
        ("/rpc/", "/"),
        ("/rpcx/tasks/create", None),
        ("/tasks/create", None),
    ],
)
def test_procedure_path_as_orpcs_matcher_sees_it(path: str, procedure: str | None) -> None:
    assert ow.procedure_path(path, "/rpc") == procedure


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "BAD_REQUEST"),
        (401, "UNAUTHORIZED"),
        (403, "FORBIDDEN"),
        (404, "NOT_FOUND"),
        (405, "METHOD_NOT_SUPPORTED"),
        (409, "CONFLICT"),
        (413, "PAYLOAD_TOO_LARGE"),
        (415, "UNSUPPORTED_MEDIA_TYPE"),
        (422, "UNPROCESSABLE_CONTENT"),
        (429, "TOO_MANY_REQUESTS"),
        (500, "INTERNAL_SERVER_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
        (418, "BAD_REQUEST"),  # no common code: by class
        (507, "INTERNAL_SERVER_ERROR"),
    ],
)
def test_common_codes_by_status(status: int, code: str) -> None:
    assert ow.code_for_status(status) == code


def test_code_for_status_inverts_orpcs_table() -> None:
    for code, (status, _message) in ow.COMMON_ERRORS.items():
        assert ow.code_for_status(status) == code


def test_an_api_error_becomes_an_orpc_error_keeping_our_code_in_data() -> None:
    terminal = ow.api_error_json(ApiError(409, "TASK_TERMINAL", "task 'a' is success"))
    assert terminal == {
        "defined": False,
        "code": "CONFLICT",
        "status": 409,
        "message": "task 'a' is success",
        "data": {"code": "TASK_TERMINAL"},
    }
    details = [{"field": "progress", "message": "too big"}]
    invalid = ow.api_error_json(ApiError(400, "VALIDATION_ERROR", "progress: too big", details))
    assert invalid["data"] == {"code": "VALIDATION_ERROR", "details": details}
    assert invalid["code"] == "BAD_REQUEST"
    for body in (terminal, invalid, ow.error_json(404, "gone")):
        assert is_orpc_error_json(body), body
    assert "data" not in ow.error_json(404, "gone")
    assert ow.error_body(terminal) == {"json": terminal}  # no meta: nothing to revive


def test_the_wire_module_is_pure() -> None:
    tree = ast.parse(Path(ow.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "json" in imported  # the walk sees the imports at all
    assert not imported & {"trio", "quart", "werkzeug", "sqlite3", "actors", "storage", "httpx"}
