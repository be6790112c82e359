"""WebhookStore over SqliteSql: the active cache, the outbox queries, attempts, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectral.sql import SqliteSql
from spectral.webhooks import store as webhook_store
from spectral.webhooks.store import DEAD, PENDING, AttemptResult, NewDelivery, WebhookStore
from storage import Registry
from storage.registry import ObjectRow


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(
        tmp_path / "registry.sqlite",
        migrations={webhook_store.STREAM: webhook_store.MIGRATIONS},
    )


async def test_changes_keep_the_active_cache_current(registry: Registry) -> None:
    store = WebhookStore(SqliteSql(registry.conn), clock=lambda: 1000.0)
    hook = await store.create("o", "http://x/", "*")
    assert store.active == {"o": [hook]}
    fresh = WebhookStore(SqliteSql(registry.conn))
    assert fresh.active == {}
    await fresh.reload()
    assert fresh.active == {"o": [hook]}
    paused = await store.update(hook.id, {"active": False})
    assert paused is not None and not paused.active and store.active == {}
    assert await store.update("wh_missing", {"active": True}) is None
    assert await store.get(hook.id, "p") is None and await store.get(hook.id) == paused
    assert await store.list("o") == [paused] and await store.list("p") == []
    assert await store.delete(hook.id) and not await store.delete(hook.id)
    assert await store.list() == []


async def test_a_webhook_keeps_its_format(registry: Registry) -> None:
    store = WebhookStore(SqliteSql(registry.conn), clock=lambda: 1000.0)
    plain = await store.create("o", "http://x/", "all")
    seed = await store.create("o", "http://y/", "all", format="seed-jobs")
    assert (plain.format, plain.public()["format"]) == ("spectral", "spectral")
    assert await store.get(seed.id) == seed and seed.public()["format"] == "seed-jobs"
    changed = await store.update(plain.id, {"format": "seed-jobs"})
    assert changed is not None and changed.format == "seed-jobs"
    assert [w.format for w in store.active["o"]] == ["seed-jobs", "seed-jobs"]


def test_webhooks_made_before_formats_are_spectral(tmp_path: Path) -> None:
    """Migration 3 on a registry at version 2: every existing webhook is ``spectral``."""
    first = Registry(
        tmp_path / "r.sqlite", migrations={webhook_store.STREAM: webhook_store.MIGRATIONS[:2]}
    )
    first.conn.execute(
        "INSERT INTO webhooks (id, owner, url, event_type, active, secret, created_at,"
        " updated_at) VALUES ('wh_1', 'o', 'http://x/', 'all', 1, 's', 1.0, 1.0)"
    )
    first.conn.commit()
    first.close()
    again = Registry(
        tmp_path / "r.sqlite", migrations={webhook_store.STREAM: webhook_store.MIGRATIONS}
    )
    [row] = again.conn.execute("SELECT format FROM webhooks").fetchall()
    assert row[0] == "spectral"
    again.close()


async def test_the_outbox_queries_and_delivery_bookkeeping(registry: Registry) -> None:
    now = [1000.0]
    store = WebhookStore(SqliteSql(registry.conn), clock=lambda: now[0])
    hook = await store.create("o", "http://x/", "*")
    for task_id, seq in (("a", 3), ("b", 1)):
        summary = {"taskId": task_id, "seq": seq}
        registry.stage(ObjectRow("task", task_id, 1.0, 1.0, "o", "pending", summary=summary))
    registry.flush_now()
    await store.write_batch([], {"b": ("o", 1), "gone": ("o", 4)})
    assert await store.cursors() == {"b": 1, "gone": 4}
    assert await store.lagging() == [("a", "o", 0, 3)]
    assert await store.vanished() == [("gone", "o", 4)]
    body = json.dumps({"n": 1}).encode()
    batch = [NewDelivery(f"msg_{n}", hook.id, "a", n, "progress", body) for n in (1, 2, 3)]
    await store.write_batch(batch, {"a": ("o", 3)}, removed=["gone"])
    assert await store.cursors() == {"a": 3, "b": 1}
    assert [d["id"] for d in await store.deliveries(hook.id, 10)] == ["msg_3", "msg_2", "msg_1"]
    due = await store.due(now[0], 2, exclude={"msg_1"})
    assert {d.id for d in due} == {"msg_2", "msg_3"} and due[0].body == body
    assert await store.due(now[0], 5, set(), paused=[hook.id]) == []
    failed = AttemptResult("msg_2", 1, now[0], 500, "HTTP 500", 1.5, PENDING, now[0] + 10)
    await store.record_attempts([failed])
    await store.record_attempts([failed])  # recorded twice (a retry of the write): one row
    dead = AttemptResult("msg_3", 1, now[0], None, "timed out", 2.0, DEAD, None)
    await store.record_attempts([dead])
    assert await store.next_due_at(now[0]) == now[0] + 10
    assert await store.counts() == {PENDING: 2, DEAD: 1}
    shown = {d["id"]: d for d in await store.deliveries(hook.id, 10)}
    assert len(shown["msg_2"]["attempts"]) == 1 and shown["msg_3"]["status"] == DEAD
    now[0] += 5
    assert await store.redeliver(hook.id, "msg_3") and not await store.redeliver(hook.id, "x")
    await store.record_attempts([AttemptResult("msg_3", 2, now[0], None, "x", 1.0, DEAD, None)])
    assert await store.prune(now[0]) == 0
    assert await store.prune(now[0] + 1) == 1
    assert await store.counts() == {PENDING: 2}
