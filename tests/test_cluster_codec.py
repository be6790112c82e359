"""Actor messages, answers and errors cross nodes intact (spectral/cluster/codec.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from actors import ActorBrokenError, ObjectNotFoundError
from actors.messaging import Address, Incoming
from spectral.cluster.codec import TAG, Codec
from spectral.rooms.actor import Publish, RoomNotFoundError
from spectral.tasks import state as sm
from spectral.tasks.actor import Mutate, MutateEach, Mutation, Read, ReadHistory, TaskRejected

CODEC = Codec()


def _across(value: Any) -> Any:
    """Encode, go through JSON bytes as the transport does, decode."""
    return CODEC.decode(orjson.loads(orjson.dumps(CODEC.encode(value))))


@pytest.mark.parametrize(
    "message",
    [
        Mutate(
            sm.Create(
                task_id="t1",
                owner="alice",
                epoch="e1",
                status=sm.Status.IN_PROGRESS,
                metadata={"nested": {"list": [1, 2.5, None, "x"]}},
                tags=("a", "b"),
                phases=({"id": "p1", "weight": 2.0, "name": None},),
            ),
            "alice",
            ("stored-key", "fingerprint"),
        ),
        Mutate(sm.Progress(progress=0.25, message="quarter")),
        MutateEach((sm.Progress(progress=0.5), sm.Complete()), None, None),
        Read("bob"),
        ReadHistory(after=3, limit=10, upto=None, owner=None),
        Incoming(Address("task", "parent"), 1.5, 7, {"kind": "progress", "value": 0.5}),
        Publish(({"hello": "world"},), "alice"),
    ],
)
def test_messages_come_back_equal_with_their_types(message: Any) -> None:
    back = _across(message)
    assert back == message
    assert type(back) is type(message)


def test_enums_and_tuples_keep_their_types() -> None:
    back = _across(sm.Create(task_id="t", owner="o", epoch="e", tags=("x",)))
    assert back.status is sm.Status.PENDING
    assert isinstance(back.tags, tuple)


def test_a_dict_holding_the_tag_key_is_not_mistaken_for_a_class() -> None:
    metadata = {TAG: "spectral.tasks.actor:Read", "f": {}}
    back = _across(Mutate(sm.Progress(progress=0.1, metadata=metadata)))
    assert back.command.metadata == metadata


def test_answers_and_refusals_cross() -> None:
    answer = Mutation({"taskId": "t"}, {"seq": 2}, [{"seq": 2}], 12.5)
    assert _across(answer) == answer and type(_across(answer)) is Mutation
    outcomes = _across([answer, sm.TaskTerminalError("task 't' is completed")])
    assert outcomes[0] == answer
    assert type(outcomes[1]) is sm.TaskTerminalError and str(outcomes[1]) == "task 't' is completed"


@pytest.mark.parametrize(
    "error",
    [
        TaskRejected(sm.InvalidCommandError("progress", "must be between 0 and 1")),
        TaskRejected(sm.TaskExistsError("task 't' already exists")),
        ObjectNotFoundError("task 't' does not exist"),
        ActorBrokenError("task 't' is unavailable"),
        RoomNotFoundError("no room"),
    ],
)
def test_errors_keep_their_class_message_and_reason(error: Exception) -> None:
    back = _across(error)
    assert type(back) is type(error) and str(back) == str(error)
    if isinstance(error, TaskRejected):
        assert type(back.reason) is type(error.reason) and str(back.reason) == str(error.reason)
        assert getattr(back.reason, "field", None) == getattr(error.reason, "field", None)


def test_a_class_outside_the_allow_list_is_refused_both_ways() -> None:
    class Foreign:
        pass

    with pytest.raises(TypeError):
        CODEC.encode(Read(owner=Foreign()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="may not cross"):
        CODEC.decode({TAG: "os:system", "f": {}})
    with pytest.raises(ValueError, match="may not cross"):
        CODEC.decode({TAG: "subprocess:Popen", "x": ["ls"]})


def test_watcher_messages_cross_as_outgoing() -> None:
    from spectral.wire import Outgoing

    back = _across([Outgoing(3, '{"roomSeq":3}'), Outgoing(4, "{}", final=True)])
    assert [(o.seq, o.text, o.final) for o in back] == [
        (3, '{"roomSeq":3}', False),
        (4, "{}", True),
    ]


def test_an_admin_feed_message_gives_back_its_task_event() -> None:
    # Other nodes' Socket.IO sockets get job events from the admin channel's messages
    # (spectral/cluster/admin_feed.py): the event must come back whole.
    from spectral.api.admin_feed import admin_message
    from spectral.cluster.admin_feed import task_event
    from spectral.tasks.events import TaskEvent
    from spectral.wire import event_json, task_json

    state, event = sm.apply(None, sm.Create(task_id="t1", owner="u1", epoch="e"), 1_780_000_000.0)
    state, event = sm.apply(state, sm.Progress(progress=40), 1_780_000_001.25)
    sent = TaskEvent(
        "u1", "t1", 2, "progress", event.timestamp, task_json(state), event_json(event)
    )
    assert task_event(admin_message(sent).text) == sent
    gone = TaskEvent("u1", "t1", 3, "deleted", 1_780_000_002.5, None, None)
    assert task_event(admin_message(gone).text) == gone
