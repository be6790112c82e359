"""Input PostgreSQL cannot hold (U+0000) is a 400 naming the field on a cluster, as on one
server, and leaves the shared tables (the listing mirror, webhooks) working."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.cluster import cluster
from tests.engines import Redis

NUL = "\x00"


async def test_nul_is_refused_and_the_mirror_keeps_working(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
    ):
        assert (await a.post("/tasks/create", json={"id": "t"})).status_code == 201
        refused = [
            (await a.post("/tasks/create", json={"id": "n", "metadata": {"k": NUL}}), "metadata.k"),
            (
                await b.post(
                    "/tasks/updateProgress",
                    json={"taskId": "t", "progress": 5, "metadata": {"deep": [{NUL: 1}]}},
                ),
                "metadata.deep.0",
            ),
            (await b.post("/tasks/fail", json={"taskId": "t", "error": NUL}), "error"),
            (await b.get("/tasks", params={"q": "t" + NUL}), "q"),
            (await b.get("/tasks", params={"owner": NUL}), "owner"),
            (
                await b.post(
                    "/webhooks",
                    json={"url": "http://127.0.0.1/", "eventType": "all", "description": NUL},
                ),
                "description",
            ),
        ]
        for response, field in refused:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "VALIDATION_ERROR" and error["message"].startswith(field)
        # Nothing was half-applied, and the mirror still takes the task's changes.
        moved = await b.post("/tasks/updateProgress", json={"taskId": "t", "progress": 7})
        assert moved.status_code == 200, moved.text
        assert (
            await a.post("/tasks/create", json={"id": "u", "metadata": {"k": "\\u0000"}})
        ).status_code == 201
        with trio.fail_after(30):  # listing reads the mirror, a flush behind at most
            for http in (a, b):
                while True:
                    listed = (await http.get("/tasks")).json()["tasks"]
                    if sorted((t["taskId"], t["seq"]) for t in listed) == [("t", 2), ("u", 1)]:
                        break
                    await trio.sleep(0.05)
        assert (await b.get("/tasks/t")).json()["progress"] == 7
        assert (await b.get("/tasks/u")).json()["metadata"] == {"k": "\\u0000"}
        assert (await a.get("/tasks/n")).status_code == 404
