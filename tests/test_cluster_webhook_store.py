"""WebhookStore on a cluster's PostgreSQL: each node sees only its own tasks' outbox and
deliveries; another node's webhook change is seen once the cache is CACHE_TTL old."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from spectral.cluster import schema
from spectral.cluster.pg import open_database
from spectral.cluster.sql import PgSql
from spectral.webhooks.store import CACHE_TTL, NewDelivery, WebhookStore


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[PgSql]:
    """PgSql on a fresh, migrated database with nodes n1 and n2."""
    async with open_database(pg_url, size=2) as db:
        await db.run(schema.migrate)
        sql = PgSql(db)

        def nodes(conn: Any) -> None:
            conn.executemany(
                "INSERT INTO nodes (node_id, epoch, rpc_addr, lease_until)"
                " VALUES (?, 1, '127.0.0.1:1', now())",
                [("n1",), ("n2",)],
            )

        await sql.run(nodes, write=True)
        yield sql


async def _task(sql: PgSql, task_id: str, node: str, seq: int | None) -> None:
    """Place a task on ``node``; list it with ``seq`` unless None (deleted: placement only)."""

    def write(conn: Any) -> None:
        conn.execute(
            "INSERT INTO placements (kind, id, node_id) VALUES ('task', ?, ?)", (task_id, node)
        )
        if seq is not None:
            conn.execute(
                "INSERT INTO objects (kind, id, owner, status, created_at, updated_at, summary,"
                " node_id) VALUES ('task', ?, 'o', 'pending', 1, 1, ?, ?)",
                (task_id, json.dumps({"taskId": task_id, "seq": seq}), node),
            )

    await sql.run(write, write=True)


async def test_each_node_sees_its_own_tasks_only(sql: PgSql) -> None:
    n1 = WebhookStore(sql, clock=lambda: 1000.0, node_id="n1")
    n2 = WebhookStore(sql, clock=lambda: 1000.0, node_id="n2")
    everyone = WebhookStore(sql, clock=lambda: 1000.0)
    hook = await n1.create("o", "http://x/", "all")
    await _task(sql, "a1", "n1", 3)  # listed, lagging
    await _task(sql, "a2", "n2", 2)
    await _task(sql, "gone1", "n1", None)  # deleted while the node was down
    await _task(sql, "gone2", "n2", None)
    cursors = {"gone1": ("o", 4), "gone2": ("o", 5)}
    body = b"{}"
    deliveries = [
        NewDelivery("msg_1", hook.id, "a1", 1, "created", body),
        NewDelivery("msg_2", hook.id, "a2", 1, "created", body),
    ]
    await n1.write_batch(deliveries, cursors)

    assert await n1.lagging() == [("a1", "o", 0, 3)]
    assert await n2.lagging() == [("a2", "o", 0, 2)]
    assert sorted(await everyone.lagging()) == [("a1", "o", 0, 3), ("a2", "o", 0, 2)]
    assert await n1.vanished() == [("gone1", "o", 4)]
    assert await n2.vanished() == [("gone2", "o", 5)]
    assert await n1.cursors() == {"gone1": 4} and await n2.cursors() == {"gone2": 5}
    assert [d.id for d in await n1.due(2000.0, 10, set())] == ["msg_1"]
    assert [d.id for d in await n2.due(2000.0, 10, set())] == ["msg_2"]
    assert {d.id for d in await everyone.due(2000.0, 10, set())} == {"msg_1", "msg_2"}

    # A redelivery asked anywhere is due on the task's home only.
    def later(conn: Any) -> None:
        conn.execute("UPDATE webhook_deliveries SET next_attempt_at = 3000")

    await sql.run(later, write=True)
    assert await n2.redeliver(hook.id, "msg_1")  # made due at 1000, asked through n2
    assert await n2.due(2000.0, 10, set()) == [] and await n2.next_due_at(2000.0) == 3000.0
    assert [d.id for d in await n1.due(2000.0, 10, set())] == ["msg_1"]


async def test_another_nodes_change_is_seen_once_the_cache_is_old(sql: PgSql) -> None:
    clock = [0.0]
    here = WebhookStore(sql, node_id="n1", monotonic=lambda: clock[0])
    there = WebhookStore(sql, node_id="n2")
    assert await here.fresh() == {}
    hook = await there.create("o", "http://x/", "all")
    clock[0] += CACHE_TTL / 2
    assert await here.fresh() == {}  # trusted for CACHE_TTL
    clock[0] += CACHE_TTL / 2
    assert await here.fresh() == {"o": [hook]}
    await there.update(hook.id, {"active": False})
    assert await here.fresh() == {"o": [hook]}
    clock[0] += CACHE_TTL
    assert await here.fresh() == {}
