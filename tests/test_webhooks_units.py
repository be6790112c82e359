"""The pure parts of webhooks: signing, schedule, address checks, filters, payloads; the
outbox's handling of database errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import sqlite3
import time
from typing import Any

import pytest
import trio
import trio.testing
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from spectral.sql import SqlError, SqliteSql, SqlUnavailableError
from spectral.tasks.state import Event, EventType
from spectral.webhooks import guard, payload, schedule, signing
from spectral.webhooks.delivery import target
from spectral.webhooks.outbox import REFUSALS, Outbox
from spectral.webhooks.store import WebhookStore


def test_secret_is_whsec_and_base64_of_enough_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert signing.new_secret() != secret


def test_standardwebhooks_verifies_our_signature() -> None:
    secret = signing.new_secret()
    body = b'{"id":"msg_1","eventType":"progress"}'
    now = int(time.time())
    headers = signing.headers(secret, "msg_1", now, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_signature_is_hmac_over_id_timestamp_body() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    expected = hmac.new(b"k" * 24, b"msg_x.1700000000.{}", hashlib.sha256).digest()
    assert signing.sign(secret, "msg_x", 1700000000, b"{}") == (
        "v1," + base64.b64encode(expected).decode()
    )


def test_schedule_parses_and_rejects() -> None:
    assert schedule.parse_schedule("0, 1,2.5") == (0.0, 1.0, 2.5)
    for bad in ("", " , ", "1,-1", "a", "1,inf", "nan"):
        with pytest.raises(ValueError):
            schedule.parse_schedule(bad)


def test_next_delay_follows_the_schedule_with_jitter_then_dead() -> None:
    plan = schedule.DEFAULT_SCHEDULE
    assert sum(plan) == pytest.approx(67 * 60 + 35)
    assert schedule.next_delay(1, plan, rand=lambda: 0.0) == 5
    assert schedule.next_delay(1, plan, rand=lambda: 1.0) == pytest.approx(5.5)
    assert schedule.next_delay(7, plan, rand=lambda: 0.0) == 1800
    assert schedule.next_delay(8, plan) is None
    assert schedule.next_delay(3, (0, 1, 2)) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "169.254.1.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1",
        "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::", "2002:7f00:1::",
        "64:ff9b::a00:1", "192.0.2.1", "240.0.0.1",
    ],
)  # fmt: skip
def test_forbidden_addresses(address: str) -> None:
    assert guard.forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert guard.forbidden_reason(ipaddress.ip_address(address)) is None


def test_metadata_address_is_named() -> None:
    reason = guard.forbidden_reason(ipaddress.ip_address("169.254.169.254"))
    assert reason == "a cloud metadata address"


def test_url_host() -> None:
    assert guard.url_host("https://example.com/x") == ("example.com", 443)
    assert guard.url_host("http://[::1]:8080/") == ("::1", 8080)
    for bad in ("ftp://example.com/", "http:///path", "example.com", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            guard.url_host(bad)


async def test_vet_refuses_literals_and_localhost_without_the_flag() -> None:
    for url in ("http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/", "http://localhost/"):
        with pytest.raises(guard.ForbiddenUrlError):
            await guard.vet(url, allow_private=False)
        assert await guard.vet(url, allow_private=True)


async def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_name(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(trio.socket, "getaddrinfo", no_such_name)
    with pytest.raises(guard.UnresolvableUrlError):
        await guard.vet("http://hooks.example.com/in", allow_private=True)


def test_target_pins_the_vetted_address_and_keeps_host_and_sni() -> None:
    pinned = target("https://hooks.example.com:8443/in?a=1", ipaddress.ip_address("93.184.216.34"))
    assert pinned.url == "https://93.184.216.34:8443/in?a=1"
    assert pinned.headers == {"Host": "hooks.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}
    six = target("http://hooks.example.com/in", ipaddress.ip_address("2606:4700::1111"))
    assert six.url == "http://[2606:4700::1111]/in"
    assert six.extensions == {}
    assert target("http://x/", None).url == "http://x/"


@pytest.mark.parametrize(
    ("subscription", "prefix", "event_type", "task_id", "expected"),
    [
        ("all", None, "created", "a", True),
        ("all", None, "deleted", "a", True),
        ("progress", None, "progress", "a", True),
        ("progress", None, "event", "a", False),
        ("completed", None, "failed", "a", False),
        ("failed", None, "failed", "a", True),
        ("canceled", None, "canceled", "a", True),
        ("all", "job-", "progress", "job-1", True),
        ("all", "job-", "progress", "jo-1", False),
        ("progress", "job-", "completed", "job-1", False),
    ],
)
def test_matches(
    subscription: str, prefix: str | None, event_type: str, task_id: str, expected: bool
) -> None:
    assert payload.matches(subscription, prefix, event_type, task_id) is expected


def _task(**changes: object) -> dict[str, object]:
    task: dict[str, object] = {"taskId": "t", "progress": 40, "metadata": {"r": 1}, "error": None}
    return {**task, **changes}


def test_body_fields_per_event_type() -> None:
    progress = payload.Outgoing("o", "t", 3, "progress", 0.0, _task(), {"progress": 40})
    body = json.loads(payload.body("msg_1", progress))
    assert body == {
        "id": "msg_1", "eventType": "progress", "taskId": "t", "seq": 3, "owner": "o",
        "progress": 40, "task": _task(), "timestamp": "1970-01-01T00:00:00.000Z",
    }  # fmt: skip
    done = payload.Outgoing("o", "t", 4, "completed", 0.0, _task(progress=100), {})
    assert json.loads(payload.body("m", done))["result"] == {"r": 1}
    failed = payload.Outgoing("o", "t", 4, "failed", 0.0, _task(error="timed out"), {})
    assert json.loads(payload.body("m", failed))["error"] == "timed out"
    gone = json.loads(payload.body("m", payload.Outgoing("o", "t", 5, "deleted", 0.0, None, None)))
    assert gone["task"] is None and "progress" not in gone


def _seed_task(**changes: object) -> dict[str, object]:
    return _task(**{"status": "in-progress", **changes})


@pytest.mark.parametrize(
    ("subscription", "event_type", "task", "event", "spectral", "seed"),
    [
        ("all", "created", _seed_task(status="pending"), {}, True, False),
        ("all", "progress", _seed_task(), {"progress": 40}, True, True),
        ("progress", "event", _seed_task(), {"progress": 50}, False, True),
        ("all", "event", _seed_task(), {"progress": None}, True, False),
        ("completed", "completed", _seed_task(status="success"), {}, True, True),
        ("failed", "canceled", _seed_task(status="canceled"), {}, False, False),
        ("canceled", "canceled", _seed_task(status="canceled"), {}, True, True),
        ("all", "deleted", None, None, True, False),
    ],
)
def test_which_webhooks_take_an_event_by_format(
    subscription: str,
    event_type: str,
    task: dict[str, object] | None,
    event: dict[str, object] | None,
    spectral: bool,
    seed: bool,
) -> None:
    """A seed-jobs webhook takes only what the seed has a form of, with the same filters
    (a log event that moved progress counting as progress)."""
    outgoing = payload.Outgoing("o", "t", 2, event_type, 0.0, task, event)
    assert payload.takes(payload.SPECTRAL, subscription, None, outgoing) is spectral
    assert payload.takes(payload.SEED_JOBS, subscription, None, outgoing) is seed
    assert payload.takes(payload.SEED_JOBS, subscription, "x-", outgoing) is False


def test_render_by_format() -> None:
    done = payload.Outgoing(
        "u1", "t", 4, "canceled", 0.0, _seed_task(status="canceled", progress=40), {}
    )
    seed = json.loads(payload.render(payload.SEED_JOBS, "msg_1", done))
    assert seed == {
        "id": "t", "jobname": "t", "userId": "u1", "error": "canceled", "eventType": "failed",
    }  # fmt: skip
    assert json.loads(payload.render(payload.SPECTRAL, "msg_1", done)) == json.loads(
        payload.body("msg_1", done)
    )


def test_history_events_map_onto_webhook_types() -> None:
    def event(kind: EventType) -> Event:
        return Event(
            seq=2, event_type=kind, message="m", progress=None, metadata=None, timestamp=1.0
        )

    mapped = {k: payload.from_history("o", "t", event(k), _task()).event_type for k in EventType}
    assert mapped == {
        EventType.CREATED: "created", EventType.LOG: "event", EventType.PROGRESS: "progress",
        EventType.SUCCESS: "completed", EventType.ERROR: "failed", EventType.TIMEOUT: "failed",
        EventType.CANCELED: "canceled",
    }  # fmt: skip
    assert set(mapped.values()) <= set(payload.EVENT_TYPES)


async def test_the_outbox_waits_out_an_unavailable_database_and_drops_a_refused_batch(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unavailable: retried until it works. Refused otherwise: dropped after REFUSALS tries
    (its tasks' cursors did not move, so history fills the gap later), never a wedge."""
    sql = SqliteSql(sqlite3.connect(":memory:", isolation_level=None))
    box = Outbox(WebhookStore(sql), router=None)  # type: ignore[arg-type]
    failures: list[Exception] = [SqlUnavailableError("down")] * 5
    tries: list[float] = []

    async def write(outgoing: list[Any], *, recovered: bool = False) -> None:
        tries.append(trio.current_time())
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(box, "_write", write)
    await box._write_retrying([])
    assert len(tries) == 6 and tries[-1] - tries[0] == pytest.approx(5.0)
    tries.clear()
    failures[:] = [SqlError("refused")] * 10
    await box._write_retrying([])
    assert len(tries) == REFUSALS and len(failures) == 10 - REFUSALS
