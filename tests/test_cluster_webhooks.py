"""Webhooks on three cluster nodes: each task's home delivers its events, exactly once.

A webhook made on node a; tasks made and changed through b and c (so homed on b and c,
and changed through the other node too); a real receiver on 127.0.0.1 verifies every
signature (tests/webhook_receiver.py). Each node's /metrics says which node delivered.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from spectral.webhooks.store import CACHE_TTL
from tests.cluster import Nodes, cluster
from tests.engines import Redis
from tests.webhook_receiver import Receiver

ENV = {"SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "1", "SPECTRAL_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.5"}
#: Tasks made through each of b and c.
TASKS = 4


async def _until(check: Callable[[], bool], seconds: float = 60.0) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.05)


async def _ok(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await http.post(path, json=body)
    assert response.status_code in (200, 201), response.text


async def _delivered(nodes: Nodes, name: str) -> float:
    """Deliveries node ``name`` made successfully, from its /metrics."""
    async with nodes.client(name) as http:
        text = (await http.get("/metrics")).text
    found = re.search(r'spectral_webhook_deliveries_total\{result="delivered"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


async def _settled(http: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    """The webhook's deliveries once none is pending."""
    with trio.fail_after(60):
        while True:
            answer = await http.get(f"/webhooks/{webhook_id}/deliveries?limit=100")
            assert answer.status_code == 200, answer.text
            found: list[dict[str, Any]] = answer.json()["deliveries"]
            if all(d["status"] != "pending" for d in found):
                return found
            await trio.sleep(0.05)


async def test_every_event_is_delivered_once_by_its_tasks_home(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with (
            cluster(tmp_path, pg_url, redis.url, env=ENV) as nodes,
            nodes.client("a") as a,
            nodes.client("b") as b,
            nodes.client("c") as c,
        ):
            made = await a.post("/webhooks", json={"url": receiver.url("all"), "eventType": "all"})
            assert made.status_code == 201, made.text
            webhook_id = made.json()["id"]
            receiver.secrets["/hook/all"] = made.json()["secret"]
            # b and c cache the active webhooks: they read them again within CACHE_TTL.
            await trio.sleep(CACHE_TTL + 0.5)

            expected: set[tuple[str, int]] = set()
            for home, other, name in ((b, c, "b"), (c, b, "c")):
                for i in range(TASKS):
                    task_id = f"{name}-{i}"
                    await _ok(home, "/tasks/create", {"id": task_id})
                    await _ok(other, "/tasks/updateProgress", {"taskId": task_id, "progress": 50})
                    await _ok(home, "/tasks/complete", {"taskId": task_id})
                    expected |= {(task_id, seq) for seq in (1, 2, 3)}
                deleted = f"{name}-0"
                assert (await other.delete(f"/tasks/{deleted}")).status_code == 200
                expected.add((deleted, 4))

            def payloads() -> list[dict[str, Any]]:
                return receiver.payloads("all")

            await _until(lambda: {(p["taskId"], p["seq"]) for p in payloads()} >= expected)
            settled = await _settled(a, webhook_id)
            await trio.sleep(1.5)  # past a delivery poll: a second sender would show now
            assert receiver.bad == []
            ids = [message_id for _, message_id, _ in receiver.arrivals]
            assert len(ids) == len(set(ids)) == len(expected), Counter(ids).most_common(3)
            seen = Counter((p["taskId"], p["seq"]) for p in payloads())
            assert set(seen) == expected and max(seen.values()) == 1
            assert {d["id"] for d in settled} == set(ids)
            assert all(d["status"] == "delivered" and d["attempt"] == 1 for d in settled)
            # Each home delivered its own tasks' events, and only those.
            per_node = [await _delivered(nodes, name) for name in ("a", "b", "c")]
            homed_on_c = sum(1 for task_id, _ in expected if task_id.startswith("c-"))
            assert per_node == [0, len(expected) - homed_on_c, homed_on_c]

            # A redelivery asked on a, of a delivery homed on c: c sends it, once.
            again = next(d for d in settled if d["taskId"] == "c-1")
            answer = await a.post(f"/webhooks/{webhook_id}/deliveries/{again['id']}/redeliver")
            assert answer.status_code == 202, answer.text
            await _until(lambda: len(receiver.arrivals) > len(expected), seconds=30)
            await _settled(a, webhook_id)
            await trio.sleep(1.5)
            ids = [message_id for _, message_id, _ in receiver.arrivals]
            assert Counter(ids)[again["id"]] == 2 and len(ids) == len(expected) + 1
            per_node = [await _delivered(nodes, name) for name in ("a", "b", "c")]
            assert per_node == [0, len(expected) - homed_on_c, homed_on_c + 1]
        nursery.cancel_scope.cancel()
