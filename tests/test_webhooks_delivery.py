"""Webhook deliveries end to end: a real server, a real receiver on 127.0.0.1 that verifies
every delivery with ``standardwebhooks``; filters, retries, dead and redeliver, an outage,
``kill -9`` with deliveries pending, and the SSRF guard at delivery time.

Every wait is on something observable (what the receiver got, what the server lists)
under a generous deadline. How fast deliveries and mutations are is bench/webhooks.py's
business, not these tests'.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import Server, running
from tests.webhook_receiver import Receiver

FAST = "0,0.2,0.5"
#: Delivery attempts a server makes at once (the default of SPECTRAL_WEBHOOK_WORKERS).
WORKERS = 8
#: The shortest pause of a failing webhook between two probes (spectral/webhooks/delivery.py).
MIN_PAUSE = 0.2


def _env(schedule: str = FAST, allow_private: bool = True) -> dict[str, str]:
    env = {**SERVE_ENV, "SPECTRAL_WEBHOOK_RETRY_SCHEDULE": schedule}
    if allow_private:
        env["SPECTRAL_WEBHOOK_ALLOW_PRIVATE"] = "1"
    return env


@asynccontextmanager
async def serving(
    data_dir: Path, env: dict[str, str]
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    """A server over ``data_dir`` and an admin client of it."""
    async with (
        running(serve_argv(data_dir), env=env) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        yield server, http


async def subscribe(
    http: httpx.AsyncClient,
    receiver: Receiver,
    name: str,
    event_type: str = "all",
    headers: dict[str, str] | None = None,
    **extra: str,
) -> str:
    """Create a webhook to ``/hook/<name>`` and give the receiver its secret."""
    response = await http.post(
        "/webhooks",
        headers=headers,
        json={"url": receiver.url(name), "eventType": event_type, **extra},
    )
    assert response.status_code == 201, response.text
    receiver.secrets[f"/hook/{name}"] = response.json()["secret"]
    return str(response.json()["id"])


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> None:
    """A mutation that must succeed."""
    response = await http.post(path, json=body, **kw)
    assert response.status_code in (200, 201), response.text


async def until(check: Callable[[], bool], seconds: float = 60.0) -> None:
    """Wait until ``check()`` holds (fails the test after ``seconds``)."""
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.05)


async def deliveries(
    http: httpx.AsyncClient, webhook_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The server's deliveries of a webhook (100 at most), newest first."""
    answer = await http.get(f"/webhooks/{webhook_id}/deliveries?limit=100", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


async def until_settled(
    http: httpx.AsyncClient, webhook_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Wait until none of a webhook's deliveries is pending; return them."""
    with trio.fail_after(60):
        while True:
            found = await deliveries(http, webhook_id, headers)
            if all(d["status"] != "pending" for d in found):
                return found
            await trio.sleep(0.05)


def failed_attempts(metrics: str) -> float:
    """Failed delivery attempts so far, from /metrics."""
    found = re.search(r'spectral_webhook_deliveries_total\{result="failed"\} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


async def test_filters_payloads_and_signatures(tmp_path: Path) -> None:
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(tmp_path / "data", _env()) as (_server, http):
            acme = await http.post("/admin/keys", json={"owner": "acme", "role": "service"})
            acme_key = {"X-API-Key": acme.json()["key"]}
            hooks = {
                "all": (await subscribe(http, receiver, "all"), None),
                "completed": (await subscribe(http, receiver, "completed", "completed"), None),
                "jobs": (
                    await subscribe(http, receiver, "jobs", "progress", taskIdPrefix="job-"),
                    None,
                ),
                "acme": (await subscribe(http, receiver, "acme", headers=acme_key), acme_key),
            }

            await post(http, "/tasks/create", {"taskId": "job-1"})
            await post(http, "/tasks/updateProgress", {"taskId": "job-1", "progress": 40})
            await post(
                http,
                "/tasks/addEvent",
                {"taskId": "job-1", "event": {"eventType": "log", "message": "half"}},
            )
            await post(http, "/tasks/complete", {"taskId": "job-1", "metadata": {"url": "x"}})
            await post(http, "/tasks/create", {"taskId": "misc-1"})
            await post(http, "/tasks/updateProgress", {"taskId": "misc-1", "progress": 5})
            await post(http, "/tasks/fail", {"taskId": "misc-1", "error": "boom"})
            await post(http, "/tasks/create", {"taskId": "misc-2"})
            await post(http, "/tasks/cancel", {"taskId": "misc-2"})
            assert (await http.delete("/tasks/misc-2")).status_code == 200
            await post(http, "/tasks/create", {"taskId": "acme-1"}, headers=acme_key)
            await post(http, "/tasks/complete", {"taskId": "acme-1"}, headers=acme_key)

            # acme-1's completion is the last event. The outbox writes deliveries in commit
            # order, so once it has arrived every delivery of every event exists ...
            await until(lambda: len(receiver.payloads("acme")) == 2)
            # ... and once none is pending, nothing more will arrive.
            settled = {name: await until_settled(http, *hook) for name, hook in hooks.items()}
        receiver.stop()

    assert {name: len(found) for name, found in settled.items()} == {
        "all": 10,
        "completed": 1,
        "jobs": 1,
        "acme": 2,
    }
    assert {d["status"] for found in settled.values() for d in found} == {"delivered"}

    assert receiver.bad == []
    everything = [(p["taskId"], p["seq"], p["eventType"]) for p in receiver.payloads("all")]
    assert sorted(everything) == sorted(
        [
            ("job-1", 1, "created"), ("job-1", 2, "progress"), ("job-1", 3, "event"),
            ("job-1", 4, "completed"), ("misc-1", 1, "created"), ("misc-1", 2, "progress"),
            ("misc-1", 3, "failed"), ("misc-2", 1, "created"), ("misc-2", 2, "canceled"),
            ("misc-2", 3, "deleted"),
        ]
    )  # fmt: skip
    assert [(p["taskId"], p["eventType"]) for p in receiver.payloads("completed")] == [
        ("job-1", "completed")
    ]
    assert [(p["taskId"], p["progress"]) for p in receiver.payloads("jobs")] == [("job-1", 40)]
    assert [(p["taskId"], p["eventType"]) for p in receiver.payloads("acme")] == [
        ("acme-1", "created"),
        ("acme-1", "completed"),
    ]
    by_key = {(p["taskId"], p["eventType"]): p for p in receiver.payloads("all")}
    done = by_key[("job-1", "completed")]
    assert done["result"] == {"url": "x"} and done["owner"] == "admin"
    assert done["task"]["status"] == "success" and done["task"]["progress"] == 100
    assert done["timestamp"].endswith("Z") and done["id"].startswith("msg_")
    assert by_key[("misc-1", "failed")]["error"] == "boom"
    assert by_key[("misc-2", "deleted")]["task"] is None


async def test_seed_jobs_format_for_tasks_an_admin_creates_for_a_user(tmp_path: Path) -> None:
    """A seed-jobs webhook gets the seed's bodies, signed, for the events the seed has a
    form of, and no delivery for the others; tasks an admin creates with ``owner`` reach
    that owner's webhooks."""
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(tmp_path / "data", _env()) as (_server, http):
            made = await http.post("/admin/keys", json={"owner": "u1", "role": "service"})
            u1 = {"X-API-Key": made.json()["key"]}
            hooks = {
                "seed": await subscribe(http, receiver, "seed", owner="u1", format="seed-jobs"),
                "seed-canceled": await subscribe(
                    http, receiver, "seed-canceled", "canceled", headers=u1, format="seed-jobs"
                ),
                "seed-progress": await subscribe(
                    http, receiver, "seed-progress", "progress", owner="u1", format="seed-jobs"
                ),
                "plain": await subscribe(http, receiver, "plain", headers=u1),
            }
            created = {"owner": "u1", "metadata": {"name": "export"}}
            await post(http, "/tasks/create", {"taskId": "j1", **created})
            await post(http, "/tasks/updateProgress", {"taskId": "j1", "progress": 40}, headers=u1)
            log = {"eventType": "log", "message": "hello"}
            await post(http, "/tasks/addEvent", {"taskId": "j1", "event": log}, headers=u1)
            moved = {"eventType": "progress", "message": "more", "progress": 60}
            await post(http, "/tasks/addEvent", {"taskId": "j1", "event": moved}, headers=u1)
            done = {"taskId": "j1", "metadata": {"result": {"rows": 3}}}
            await post(http, "/tasks/complete", done, headers=u1)
            await post(http, "/tasks/create", {"taskId": "j2", "owner": "u1"})
            await post(http, "/tasks/fail", {"taskId": "j2", "error": "boom"}, headers=u1)
            await post(http, "/tasks/create", {"taskId": "j3", "owner": "u1"})
            await post(http, "/tasks/cancel", {"taskId": "j3"})
            assert (await http.delete("/tasks/j3", headers=u1)).status_code == 200

            # j3's deletion is the last event: once the spectral webhook has it, every
            # delivery of every event exists; once none is pending, nothing more comes.
            await until(lambda: len(receiver.payloads("plain")) == 10)
            settled = {name: await until_settled(http, hook) for name, hook in hooks.items()}
        receiver.stop()

    assert receiver.bad == []  # every delivery verified with standardwebhooks
    assert {d["status"] for found in settled.values() for d in found} == {"delivered"}
    assert {p["owner"] for p in receiver.payloads("plain")} == {"u1"}
    job = {"jobname": "export", "userId": "u1"}
    progress = [
        {"id": "j1", **job, "progress": 40, "eventType": "progress"},
        {"id": "j1", **job, "progress": 60, "eventType": "progress"},
    ]
    completed = {"id": "j1", **job, "result": {"rows": 3}, "eventType": "completed"}
    failed = {"id": "j2", "jobname": "j2", "userId": "u1", "error": "boom", "eventType": "failed"}
    canceled = {
        "id": "j3", "jobname": "j3", "userId": "u1", "error": "canceled", "eventType": "failed",
    }  # fmt: skip

    def received(name: str) -> list[str]:
        return sorted(json.dumps(p, sort_keys=True) for p in receiver.payloads(name))

    def expected(*bodies: dict[str, Any]) -> list[str]:
        return sorted(json.dumps(b, sort_keys=True) for b in bodies)

    assert received("seed") == expected(*progress, completed, failed, canceled)
    assert received("seed-canceled") == expected(canceled)
    assert received("seed-progress") == expected(*progress)
    # Key order as the seed sends it: the event type last.
    assert all(list(p)[-1] == "eventType" for p in receiver.payloads("seed"))
    # No delivery at all for created, the plain log event and deleted.
    assert sorted(d["eventType"] for d in settled["seed"]) == [
        "canceled", "completed", "event", "failed", "progress",
    ]  # fmt: skip
    assert len({m for _p, m, _s in receiver.arrivals}) == len(receiver.arrivals)


async def test_retried_until_it_succeeds_and_received_once(tmp_path: Path) -> None:
    receiver = Receiver(answer=lambda _id, n: 503 if n <= 2 else 200)
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(tmp_path / "data", _env("0,0.3,0.3,0.3")) as (_server, http):
            webhook_id = await subscribe(http, receiver, "flaky")
            await post(http, "/tasks/create", {"taskId": "t1"})
            await until(lambda: len(receiver.payloads("flaky")) == 1)
            found = await until_settled(http, webhook_id)
        receiver.stop()
    assert receiver.bad == []
    [delivery] = found
    assert [s for _p, _m, s in receiver.arrivals] == [503, 503, 200]
    assert {m for _p, m, _s in receiver.arrivals} == {delivery["id"]}
    assert delivery["status"] == "delivered" and delivery["attempt"] == 3
    assert delivery["responseCode"] == 200 and delivery["nextRetryAt"] is None
    assert [(a["attempt"], a["responseCode"], a["error"]) for a in delivery["attempts"]] == [
        (1, 503, "HTTP 503"),
        (2, 503, "HTTP 503"),
        (3, 200, None),
    ]
    # Each retry waited for its turn in the schedule (no upper bound: the deadline of
    # until() is enough to tell 0.3 s from the default schedule's minutes).
    times = [datetime.fromisoformat(a["at"]).timestamp() for a in delivery["attempts"]]
    assert all(later - earlier >= 0.3 - 0.01 for earlier, later in itertools.pairwise(times))


async def test_dead_after_the_last_attempt_then_redelivered(tmp_path: Path) -> None:
    answers = {"status": 500}
    receiver = Receiver(answer=lambda _id, _n: answers["status"])
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(tmp_path / "data", _env()) as (_server, http):
            webhook_id = await subscribe(http, receiver, "down")
            await post(http, "/tasks/create", {"taskId": "t1"})

            async def dead() -> dict[str, Any]:
                return (await deliveries(http, webhook_id))[0]

            with trio.fail_after(60):
                while (await dead())["status"] != "dead":
                    await trio.sleep(0.1)
            delivery = await dead()
            assert delivery["attempt"] == 3 and delivery["nextRetryAt"] is None  # none planned
            assert delivery["error"] == "HTTP 500" and len(delivery["attempts"]) == 3
            assert len(receiver.arrivals) == 3
            metrics = (await http.get("/metrics")).text
            assert 'spectral_webhook_deliveries_total{result="dead"} 1.0' in metrics
            assert 'spectral_webhook_deliveries_total{result="failed"} 2.0' in metrics

            answers["status"] = 204
            again = await http.post(f"/webhooks/{webhook_id}/deliveries/{delivery['id']}/redeliver")
            assert again.status_code == 202
            await until(lambda: len(receiver.payloads("down")) == 1)
            [redelivered] = await until_settled(http, webhook_id)
            assert (redelivered["status"], redelivered["attempt"]) == ("delivered", 4)
            assert len(redelivered["attempts"]) == 4
            assert receiver.payloads("down")[0]["id"] == delivery["id"]
            metrics = (await http.get("/metrics")).text
            assert 'spectral_webhook_deliveries_total{result="delivered"} 1.0' in metrics
            assert 'spectral_webhook_deliveries_total{result="dead"} 1.0' in metrics
            assert 'spectral_webhook_deliveries_total{result="failed"} 2.0' in metrics
        receiver.stop()
    assert receiver.bad == []
    # Three attempts before it was dead, the redelivery, and nothing in between.
    assert [status for _path, _id, status in receiver.arrivals] == [500, 500, 500, 204]


async def test_receiver_down_during_1000_events_all_delivered_once_after_it_returns(
    tmp_path: Path,
) -> None:
    # Mutation latency during such an outage: bench/webhooks.py --scenario outage.
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(tmp_path / "data", _env("0,0.5,1,2,4,8,8,8")) as (_server, http):
            webhook_id = await subscribe(http, receiver, "outage", "progress")
            receiver.stop()
            down = trio.current_time()
            await post(http, "/tasks/create", {"taskId": "outage"})
            for i in range(1000):  # every mutation succeeds while deliveries fail
                await post(http, "/tasks/updateProgress", {"taskId": "outage", "progress": i % 101})
            with trio.fail_after(60):  # the outage was noticed
                while not failed_attempts((await http.get("/metrics")).text):
                    await trio.sleep(0.05)
            await receiver.start(nursery)
            outage = trio.current_time() - down
            await until(lambda: len(receiver.payloads("outage")) == 1000, seconds=180)
            found = await until_settled(http, webhook_id)
            failed = failed_attempts((await http.get("/metrics")).text)
        receiver.stop()
    assert receiver.bad == []
    seqs = sorted(p["seq"] for p in receiver.payloads("outage"))
    assert seqs == list(range(2, 1002))
    assert {d["status"] for d in found} == {"delivered"}
    # Each delivery was accepted once (its id never answered 2xx twice).
    accepted = [m for _p, m, status in receiver.arrivals if 200 <= status < 300]
    assert len(accepted) == len(set(accepted)) == 1000
    # A down receiver is probed, not hammered: after the first failures (one per worker at
    # most) the webhook pauses, and each pause (>= 0.2 s) lets one probe through. However
    # long the outage lasted, that is far fewer attempts than 1,000 deliveries' first ones.
    assert 1 <= failed <= 2 * WORKERS + outage / MIN_PAUSE, (failed, outage)


async def test_kill_9_with_deliveries_pending_all_delivered_after_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        # Many attempts 5 s apart: however long this server lives, nothing dies before the
        # kill (one probe per pause, and a delivery would need 20 failures in a row).
        async with serving(data_dir, _env(",".join(["0"] + ["5"] * 20))) as (server, http):
            await subscribe(http, receiver, "crash")
            receiver.stop()  # every attempt before the kill fails
            for n in range(3):
                await post(http, "/tasks/create", {"taskId": f"k{n}"})
                for i in range(100):
                    await post(http, "/tasks/updateProgress", {"taskId": f"k{n}", "progress": i})
            await post(http, "/tasks/create", {"taskId": "gone"})
            assert (await http.delete("/tasks/gone")).status_code == 200
            server.kill()  # at once after the last answer
            with trio.fail_after(60):
                await server.wait()
        await receiver.start(nursery)
        async with serving(data_dir, _env("0,0.2")) as (_server, http):
            await until(lambda: len({(p["taskId"], p["seq"]) for p in receiver.payloads("crash")})
                        == 3 * 101 + 2, seconds=120)  # fmt: skip
        receiver.stop()
    assert receiver.bad == []
    got = {(p["taskId"], p["seq"], p["eventType"]) for p in receiver.payloads("crash")}
    expected = {(f"k{n}", 1, "created") for n in range(3)}
    expected |= {(f"k{n}", s, "progress") for n in range(3) for s in range(2, 102)}
    expected |= {("gone", 1, "created"), ("gone", 2, "deleted")}
    assert got == expected


async def test_delivery_time_guard_and_update_refusal_without_the_flag(tmp_path: Path) -> None:
    receiver = Receiver()
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        await receiver.start(nursery)
        async with serving(data_dir, _env()) as (server, http):
            webhook_id = await subscribe(http, receiver, "local")
            server.terminate()
            with trio.fail_after(60):
                assert await server.wait() == 0
        # The same webhook, now on a server that refuses private addresses.
        async with serving(data_dir, _env(allow_private=False)) as (_server, http):
            refused = await http.put(f"/webhooks/{webhook_id}", json={"url": receiver.url("x")})
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "WEBHOOK_URL_FORBIDDEN"
            for url in ("http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/"):
                response = await http.put(f"/webhooks/{webhook_id}", json={"url": url})
                assert response.json()["error"]["code"] == "WEBHOOK_URL_FORBIDDEN"
            await post(http, "/tasks/create", {"taskId": "t1"})

            async def delivery() -> dict[str, Any]:
                answer = await http.get(f"/webhooks/{webhook_id}/deliveries")
                found = answer.json()["deliveries"]
                return found[0] if found else {"status": "none"}

            with trio.fail_after(60):
                while (await delivery())["status"] != "dead":
                    await trio.sleep(0.1)
            assert (await delivery())["error"].startswith(
                "forbidden address: 127.0.0.1 is a loopback"
            )
        receiver.stop()
    assert receiver.arrivals == []
