"""The pure parts of provider callbacks: paths, signatures, the mapping, and the store."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from spectral.integrations import mapping, paths, verify
from spectral.integrations.mapping import Mapping, PayloadError, Step
from spectral.integrations.store import (
    CLEANUP_EVERY,
    MIGRATIONS,
    RETENTION_SECONDS,
    IntegrationStore,
)
from spectral.sql import SqliteSql
from spectral.tasks import state as sm

# -- paths ----------------------------------------------------------------------------------


def test_paths_parse_into_segments() -> None:
    assert paths.parse("data.object.id") == ("data", "object", "id")
    assert paths.parse("items.0.id") == ("items", "0", "id")
    assert paths.parse("$meta.@type-x") == ("$meta", "@type-x")


@pytest.mark.parametrize(
    "text", ["", ".", "a.", ".a", "a..b", "a b", "a/b", "a[0]", "ä", "a." * 20 + "a", "x" * 65]
)
def test_bad_paths_are_refused(text: str) -> None:
    with pytest.raises(paths.PathSyntaxError):
        paths.parse(text)


def test_paths_resolve_through_objects_and_lists() -> None:
    doc = {"data": {"items": [{"id": "a"}, {"id": "b"}], "0": "zero", "n": None, "f": False}}
    assert paths.resolve(doc, paths.parse("data.items.1.id")) == "b"
    assert paths.resolve(doc, paths.parse("data.0")) == "zero"  # a key named "0"
    assert paths.resolve(doc, paths.parse("data.f")) is False
    for missing in ("data.items.2.id", "data.nope", "data.items.x", "data.0.x", "data.n"):
        with pytest.raises(paths.MissingPathError):
            paths.resolve(doc, paths.parse(missing))


def test_a_missing_path_says_where_it_stopped() -> None:
    with pytest.raises(paths.MissingPathError, match=r"no value at data\.object$"):
        paths.resolve({"data": {}}, paths.parse("data.object.id"))


# -- signatures -----------------------------------------------------------------------------

NOW = 1_800_000_000


def _signed(secret: str, body: bytes, message_id: str = "msg_1", at: int = NOW) -> dict[str, str]:
    when = datetime.fromtimestamp(at, UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(at),
        "webhook-signature": Webhook(secret).sign(message_id, when, body.decode()),
    }


def test_standard_webhooks_signatures_of_the_reference_library_verify() -> None:
    secret = verify.new_secret(verify.STANDARD)
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = b'{"type": "paid"}'
    headers = _signed(secret, body)
    assert verify.verify_standard(secret, headers.get, body, NOW) == "msg_1"
    # The reference library agrees on a request signed now (it reads the real clock).
    fresh = _signed(secret, body, at=int(datetime.now(UTC).timestamp()))
    Webhook(secret).verify(body, fresh)
    assert verify.verify_standard(secret, fresh.get, body, float(fresh["webhook-timestamp"]))


@pytest.mark.parametrize("skew", [-300, 300])
def test_the_tolerance_is_five_minutes_either_way(skew: int) -> None:
    secret = verify.new_secret(verify.STANDARD)
    body = b"{}"
    headers = _signed(secret, body, at=NOW + skew)
    assert verify.verify_standard(secret, headers.get, body, NOW) == "msg_1"
    later = _signed(secret, body, at=NOW + skew + (1 if skew > 0 else -1))
    with pytest.raises(verify.SignatureError, match="tolerance"):
        verify.verify_standard(secret, later.get, body, NOW)


def test_standard_webhooks_refusals_name_the_header() -> None:
    secret = verify.new_secret(verify.STANDARD)
    body = b"{}"
    good = _signed(secret, body)
    cases = {
        "webhook-id": {k: v for k, v in good.items() if k != "webhook-id"},
        "webhook-timestamp": {**good, "webhook-timestamp": "soon"},
        "webhook-signature": {**good, "webhook-signature": "v1,AAAA"},
    }
    for header, headers in cases.items():
        with pytest.raises(verify.SignatureError, match=header):
            verify.verify_standard(secret, headers.get, body, NOW)
    with pytest.raises(verify.SignatureError):
        verify.verify_standard(secret, good.get, body + b" ", NOW)
    with pytest.raises(verify.SignatureError):  # another secret
        verify.verify_standard(verify.new_secret(verify.STANDARD), good.get, body, NOW)


def test_any_one_of_several_signatures_will_do() -> None:
    secret = verify.new_secret(verify.STANDARD)
    body = b"{}"
    good = _signed(secret, body)
    signature = good["webhook-signature"]
    for value in (f"v1,AAAA {signature}", f"v2,xyz {signature}", f"v1,!!, {signature}"):
        headers = {**good, "webhook-signature": value}
        assert verify.verify_standard(secret, headers.get, body, NOW) == "msg_1"


def test_hmac_hex_digests_with_or_without_the_prefix() -> None:
    secret = verify.new_secret(verify.HMAC_SHA256)
    assert len(secret) == 64
    body = b'{"a": 1}'
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify.sign_hmac(secret, body) == digest
    for value in (digest, f"sha256={digest}", digest.upper(), f" {digest} "):
        verify.verify_hmac(secret, "X-Sig", {"x-sig": value}.get, body)
    for headers in (
        {},
        {"x-sig": ""},
        {"x-sig": digest[:-1] + ("1" if digest[-1] == "0" else "0")},
        {"x-sig": "sha1=" + digest},
    ):
        with pytest.raises(verify.SignatureError, match="X-Sig"):
            verify.verify_hmac(secret, "X-Sig", headers.get, body)
    with pytest.raises(verify.SignatureError):
        verify.verify_hmac(secret, "X-Sig", {"x-sig": digest}.get, body + b"\n")


def test_the_verifier_compares_in_constant_time() -> None:
    source = Path(verify.__file__).read_text()
    tree = ast.parse(source)
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert "compare_digest" in source
    # No == / != between a given and an expected digest.
    for node in compares:
        names = {getattr(x, "id", "") for x in ast.walk(node)}
        assert not names & {"given", "expected"}, ast.unparse(node)


# -- mapping --------------------------------------------------------------------------------

MAPPING = Mapping(
    "data.id",
    "data.status",
    {"new": Step.INITIALIZED, "busy": Step.PROCESSING, "ok": Step.COMPLETED, "ko": Step.FAILED},
    progress_path="data.pct",
    error_path="data.why",
)


def _payload(status: str, **fields: object) -> dict[str, object]:
    return {"data": {"id": "e-1", "status": status, **fields}}


def test_each_step_becomes_its_command() -> None:
    new = mapping.read(MAPPING, _payload("new"))
    assert (new.external_id, new.step) == ("e-1", Step.INITIALIZED)
    assert mapping.command(new, "p") is None
    busy = mapping.read(MAPPING, _payload("busy", pct=12.5))
    assert mapping.command(busy, "p") == sm.Progress(progress=12.5, message="p: busy")
    no_progress = Mapping("data.id", "data.status", MAPPING.status_map)
    assert mapping.command(mapping.read(no_progress, _payload("busy")), "p") == sm.Log(
        message="p: busy"
    )
    assert mapping.command(mapping.read(MAPPING, _payload("ok")), "p") == sm.Complete()
    failed = mapping.read(MAPPING, _payload("ko", why="card declined"))
    assert mapping.command(failed, "p") == sm.Fail(error="card declined")
    default = mapping.read(MAPPING, _payload("ko"))
    assert default.error == mapping.DEFAULT_ERROR
    structured = mapping.read(MAPPING, _payload("ko", why={"code": 3}))
    assert structured.error == '{"code":3}'


def test_an_integer_external_id_is_its_text() -> None:
    assert mapping.read(MAPPING, {"data": {"id": 7, "status": "new"}}).external_id == "7"


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ([1], 400, "body"),
        ({"data": {"status": "new"}}, 400, "data.id"),
        ({"data": {"id": True, "status": "new"}}, 400, "data.id"),
        ({"data": {"id": 1.5, "status": "new"}}, 400, "data.id"),
        ({"data": {"id": "a\nb", "status": "new"}}, 400, "data.id"),
        ({"data": {"id": "x" * 256, "status": "new"}}, 400, "data.id"),
        ({"data": {"id": "e"}}, 400, "data.status"),
        ({"data": {"id": "e", "status": 3}}, 400, "data.status"),
        ({"data": {"id": "e", "status": "refunded"}}, 422, "data.status"),
        ({"data": {"id": "e", "status": "busy"}}, 400, "data.pct"),
        ({"data": {"id": "e", "status": "busy", "pct": 100.5}}, 400, "data.pct"),
        ({"data": {"id": "e", "status": "busy", "pct": "5"}}, 400, "data.pct"),
        ({"data": {"id": "e", "status": "busy", "pct": False}}, 400, "data.pct"),
    ],
)
def test_unreadable_payloads_name_the_path(payload: object, status: int, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        mapping.read(MAPPING, payload)
    assert (caught.value.status, caught.value.field) == (status, field)


def test_the_pure_modules_import_neither_trio_nor_sqlite() -> None:
    for module in (paths, verify, mapping):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(Path(module.__file__ or "").read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
        assert "spectral" in imported or module is paths
        assert not imported & {"trio", "sqlite3"}, module.__name__


# -- the store ------------------------------------------------------------------------------


def _raw(store: IntegrationStore) -> sqlite3.Connection:
    """The store's SQLite connection, for writing rows as an older version would."""
    assert isinstance(store.sql, SqliteSql)
    return store.sql.conn


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _store() -> tuple[IntegrationStore, _Clock]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for migration in MIGRATIONS:
        conn.executescript(migration.sql)
    clock = _Clock()
    return IntegrationStore(SqliteSql(conn), clock), clock


async def test_the_store_keeps_integrations_per_owner() -> None:
    store, _ = _store()
    made = await store.create("a", "n", verify.STANDARD, None, MAPPING)
    assert await store.get(made.id) == made and await store.get(made.id, "a") == made
    assert await store.get(made.id, "b") is None
    assert (
        await store.list("a") == [made]
        and await store.list("b") == []
        and await store.list(None) == [made]
    )
    assert (
        made.public()["callbackPath"] == f"/callbacks/{made.id}" and "secret" not in made.public()
    )
    changed = await store.update(
        made.id, {"status_map": {"go": Step.COMPLETED}, "error_path": None}
    )
    assert changed is not None and changed.mapping.status_map == {"go": Step.COMPLETED}
    assert changed.mapping.error_path is None and changed.secret == made.secret
    with pytest.raises(ValueError):
        await store.update(made.id, {"secret": "x"})
    await store.record(made.id, "d", 200, {"ok": True})
    assert await store.delete(made.id) and await store.get(made.id) is None
    assert await store.delivery_count(made.id) == 0 and not await store.delete(made.id)


async def test_processed_deliveries_expire_and_are_cleaned_up() -> None:
    store, clock = _store()
    made = await store.create("a", "n", verify.HMAC_SHA256, "X-Sig", MAPPING)
    await store.record(made.id, "d1", 200, {"n": 1})
    recorded = await store.recorded(made.id, "d1")
    assert recorded is not None and (recorded.status, recorded.answer) == (200, {"n": 1})
    assert await store.recorded(made.id, "d2") is None
    clock.now += RETENTION_SECONDS - 1
    assert await store.recorded(made.id, "d1") is not None
    clock.now += 1
    assert await store.recorded(made.id, "d1") is None  # expired, though still stored
    assert await store.delivery_count(made.id) == 1
    await store.record(made.id, "d2", 200, {"n": 2})  # over a minute since the last pass: one runs
    assert (
        await store.delivery_count(made.id) == 1 and await store.recorded(made.id, "d2") is not None
    )
    # Passes run at most every CLEANUP_EVERY seconds, as deliveries are recorded.
    _raw(store).execute(
        "INSERT INTO integration_deliveries VALUES (?, 'old', 200, '{}', ?)",
        (made.id, clock.now - RETENTION_SECONDS - 5),
    )
    clock.now += CLEANUP_EVERY - 1
    await store.record(made.id, "d3", 200, {})
    assert await store.delivery_count(made.id) == 3
    clock.now += 1
    await store.record(made.id, "d4", 200, {})
    assert await store.delivery_count(made.id) == 3  # "old" went; d2, d3 and d4 stay
    assert await store.cleanup() == 0
