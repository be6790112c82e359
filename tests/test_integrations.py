"""Provider callbacks over a real server: signatures (the ``standardwebhooks`` package and
plain ``hmac``), every mapped step, replays applied once, errors that change nothing,
registration input, roles and per-owner isolation."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from standardwebhooks import Webhook

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import running

STATUS_MAP = {
    "created": "initialized",
    "running": "processing",
    "paid": "completed",
    "declined": "failed",
}
STANDARD = {
    "name": "payments",
    "signing": "standard-webhooks",
    "externalIdPath": "data.object.id",
    "statusPath": "type",
    "statusMap": STATUS_MAP,
    "progressPath": "data.object.progress",
    "errorPath": "data.object.failure.message",
}
HMAC = {
    "name": "transcoder",
    "signing": "hmac-sha256",
    "header": "X-Hub-Signature-256",
    "externalIdPath": "items.0.job",
    "statusPath": "items.0.state",
    "statusMap": STATUS_MAP,
    "errorPath": "items.0.reason",
}


def event(external_id: str, status: str, **object_fields: Any) -> bytes:
    """A payment provider's payload."""
    return json.dumps({"type": status, "data": {"object": {"id": external_id, **object_fields}}})\
        .encode()  # fmt: skip


def standard_headers(
    secret: str, body: bytes, message_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """Signed by the standardwebhooks package, as a provider's SDK would."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, at, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def hmac_headers(secret: str, body: bytes, delivery: str | None = None) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "content-type": "application/json"}
    if delivery is not None:
        headers["X-Delivery-Id"] = delivery
    return headers


async def key(http: httpx.AsyncClient, owner: str, role: str = "service") -> dict[str, str]:
    response = await http.post("/admin/keys", json={"owner": owner, "role": role})
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def register(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await http.post("/integrations", json=body, headers=headers or None)
    assert response.status_code == 201, response.text
    return response.json()


async def post(
    server_url: str, integration: dict[str, Any], body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """A provider's POST: no API key."""
    async with httpx.AsyncClient(base_url=server_url, timeout=60) as provider:
        return await provider.post(integration["callbackPath"], content=body, headers=headers)


async def by_external_id(http: httpx.AsyncClient, external_id: str, owner: str) -> httpx.Response:
    return await http.get(f"/tasks/by-external-id/{external_id}", params={"owner": owner})


# -- the sequence ---------------------------------------------------------------------------


async def test_standard_webhooks_drive_a_task_through_every_step(
    server: Any, client: httpx.AsyncClient
) -> None:
    acme = await key(client, "acme")
    integration = await register(client, STANDARD, **acme)
    secret = integration["secret"]
    assert secret.startswith("whsec_")
    assert integration["callbackPath"] == f"/callbacks/{integration['id']}"
    assert integration["owner"] == "acme" and integration["header"] is None
    assert integration["statusMap"] == STATUS_MAP

    created_body = event("pay_1", "created")
    created_headers = standard_headers(secret, created_body)
    first = await post(server.url, integration, created_body, created_headers)
    assert first.status_code == 200, first.text
    outcome = first.json()
    assert outcome["step"] == "initialized" and outcome["applied"] is True
    assert outcome["replayed"] is False and outcome["deliveryId"] == created_headers["webhook-id"]
    task = outcome["task"]
    assert (task["status"], task["owner"], task["externalId"]) == ("pending", "acme", "pay_1")
    task_id = outcome["taskId"]

    running_body = event("pay_1", "running", progress=40)
    running_headers = standard_headers(secret, running_body)
    running = await post(server.url, integration, running_body, running_headers)
    assert running.status_code == 200, running.text
    assert (running.json()["task"]["status"], running.json()["task"]["progress"]) == (
        "in-progress", 40,
    )  # fmt: skip

    paid = await post(server.url, integration, event("pay_1", "paid"),
                      standard_headers(secret, event("pay_1", "paid")))  # fmt: skip
    assert paid.status_code == 200, paid.text
    assert paid.json()["task"]["status"] == "success"
    assert paid.json()["task"]["progress"] == 100

    # The provider retries the processing delivery (same id, signed again later): it is
    # answered as the first time, not applied to the finished task (no 409).
    retry = standard_headers(secret, running_body, message_id=running_headers["webhook-id"])
    replayed = await post(server.url, integration, running_body, retry)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {**running.json(), "replayed": True}
    # A replayed initialized creates nothing more.
    again = await post(server.url, integration, created_body, created_headers)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["taskId"] == task_id
    listed = (await client.get("/tasks", params={"owner": "acme"})).json()
    assert [t["taskId"] for t in listed["tasks"]] == [task_id]

    # A new processing delivery after the end is the REST API's 409.
    late = await post(server.url, integration, running_body, standard_headers(secret, running_body))
    assert late.status_code == 409 and late.json()["error"]["code"] == "TASK_TERMINAL"
    # The same end under a new id is not a conflict, and changes nothing.
    twice = await post(server.url, integration, event("pay_1", "paid"),
                       standard_headers(secret, event("pay_1", "paid")))  # fmt: skip
    assert twice.status_code == 200 and twice.json()["applied"] is False
    final = (await client.get(f"/tasks/{task_id}")).json()
    assert (final["status"], final["seq"]) == ("success", paid.json()["task"]["seq"])
    # An initialized for an existing task is a no-op (applied false).
    present = await post(
        server.url, integration, created_body, standard_headers(secret, created_body)
    )
    assert present.status_code == 200, present.text
    assert (present.json()["applied"], present.json()["taskId"]) == (False, task_id)


async def test_processing_without_progress_and_failed_with_the_mapped_error(
    server: Any, client: httpx.AsyncClient
) -> None:
    integration = await register(client, {**STANDARD, "progressPath": None})
    secret = integration["secret"]

    async def send(body: bytes) -> httpx.Response:
        return await post(server.url, integration, body, standard_headers(secret, body))

    assert (await send(event("o-1", "created"))).status_code == 200
    moved = await send(event("o-1", "running", progress=300))  # not mapped: ignored
    assert moved.status_code == 200, moved.text
    assert (moved.json()["task"]["status"], moved.json()["task"]["progress"]) == (
        "in-progress", 0,
    )  # fmt: skip
    failed = await send(event("o-1", "declined", failure={"message": "card declined"}))
    assert failed.status_code == 200, failed.text
    assert (failed.json()["task"]["status"], failed.json()["task"]["error"]) == (
        "failed", "card declined",
    )  # fmt: skip
    # Without an error in the payload: a default message.
    assert (await send(event("o-2", "created"))).status_code == 200
    plain = await send(event("o-2", "declined"))
    assert plain.status_code == 200, plain.text
    assert plain.json()["task"]["error"] == "the provider reported a failure"


async def test_hmac_signatures_and_replays_by_body(server: Any, client: httpx.AsyncClient) -> None:
    integration = await register(client, HMAC)
    secret = integration["secret"]
    assert integration["header"] == "X-Hub-Signature-256"
    assert "deliveryIdHeader" not in integration

    def job(state: str, **fields: Any) -> bytes:
        return json.dumps({"items": [{"job": 42, "state": state, **fields}]}).encode()

    created = await post(
        server.url, integration, job("created"), hmac_headers(secret, job("created"))
    )
    assert created.status_code == 200, created.text
    assert created.json()["externalId"] == "42"  # an integer id is its decimal text
    assert created.json()["deliveryId"].startswith("sha256:")
    # No prefix is fine too.
    bare = hmac.new(secret.encode(), job("running"), hashlib.sha256).hexdigest()
    running = await post(server.url, integration, job("running"),
                         {"X-Hub-Signature-256": bare, "X-Delivery-Id": "d-1"})  # fmt: skip
    assert running.status_code == 200, running.text
    # Only the body is signed: a delivery id header is not what names the delivery.
    assert running.json()["deliveryId"].startswith("sha256:")
    failed_body = job("declined", reason={"code": 7})
    failed = await post(server.url, integration, failed_body, hmac_headers(secret, failed_body))
    assert failed.status_code == 200, failed.text
    assert failed.json()["task"]["error"] == '{"code":7}'
    # Replays: by body digest, whatever delivery id header comes with them (a captured
    # body sent again under a new id is still the same delivery).
    again = await post(server.url, integration, job("running"),
                       hmac_headers(secret, job("running"), delivery="d-2"))  # fmt: skip
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["task"]["status"] == "in-progress"  # the answer it got then
    same = await post(server.url, integration, failed_body, hmac_headers(secret, failed_body))
    assert same.status_code == 200 and same.json()["replayed"] is True
    task = (await by_external_id(client, "42", "admin")).json()
    assert task["status"] == "failed"


# -- refusals -------------------------------------------------------------------------------


async def test_bad_or_missing_signatures_are_401_and_change_nothing(
    server: Any, client: httpx.AsyncClient
) -> None:
    integration = await register(client, STANDARD)
    secret = integration["secret"]
    created = event("pay_9", "created")
    assert (await post(server.url, integration, created,
                       standard_headers(secret, created))).status_code == 200  # fmt: skip
    before = (await by_external_id(client, "pay_9", "admin")).json()

    body = event("pay_9", "running", progress=50)
    good = standard_headers(secret, body)
    other_secret = (await register(client, STANDARD))["secret"]
    stale = datetime.fromtimestamp(time.time() - 400, UTC)
    future = datetime.fromtimestamp(time.time() + 400, UTC)
    cases = {
        "wrong secret": (body, standard_headers(other_secret, body)),
        "tampered body": (event("pay_9", "paid"), good),
        "no webhook-id": (body, {k: v for k, v in good.items() if k != "webhook-id"}),
        "no timestamp": (body, {k: v for k, v in good.items() if k != "webhook-timestamp"}),
        "no signature": (body, {k: v for k, v in good.items() if k != "webhook-signature"}),
        "garbage signature": (body, {**good, "webhook-signature": "v1,bm90IGl0"}),
        "v2 only": (
            body,
            {**good, "webhook-signature": good["webhook-signature"].replace("v1", "v2")},
        ),
        "stale": (body, standard_headers(secret, body, at=stale)),
        "future": (body, standard_headers(secret, body, at=future)),
        "id changed": (body, {**good, "webhook-id": "msg_other"}),
    }
    for name, (sent, headers) in cases.items():
        answer = await post(server.url, integration, sent, headers)
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json()["error"]["code"] == "SIGNATURE_INVALID", name
    # Nothing changed, and the signed one still works (its id was not burnt by the failures).
    assert (await by_external_id(client, "pay_9", "admin")).json() == before
    # Several signatures (a secret being rotated): any one matching is enough.
    rotated = {**good, "webhook-signature": f"v1,bm90IGl0 {good['webhook-signature']}"}
    assert (await post(server.url, integration, body, rotated)).status_code == 200

    hmac_integration = await register(client, HMAC)
    job = json.dumps({"items": [{"job": "j", "state": "created"}]}).encode()
    for headers in ({}, {"X-Hub-Signature-256": "sha256=" + "0" * 64},
                    hmac_headers(hmac_integration["secret"], job + b" ")):  # fmt: skip
        answer = await post(server.url, hmac_integration, job, headers)
        assert answer.status_code == 401, answer.text
    assert (await by_external_id(client, "j", "admin")).status_code == 404


async def test_errors_name_what_is_wrong(server: Any, client: httpx.AsyncClient) -> None:
    integration = await register(client, STANDARD)
    secret = integration["secret"]

    async def send(body: bytes) -> httpx.Response:
        return await post(server.url, integration, body, standard_headers(secret, body))

    missing = {**integration, "callbackPath": "/callbacks/int_0000000000000000"}
    unknown = await post(server.url, missing, event("x", "created"), {})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
    gone = await send(event("never-created", "running", progress=5))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "TASK_NOT_FOUND"
    unmapped = await send(event("x", "refunded"))
    assert unmapped.status_code == 422, unmapped.text
    assert unmapped.json()["error"]["details"][0]["field"] == "type"
    assert "statusPath" in unmapped.json()["error"]["message"]
    no_id = await send(json.dumps({"type": "created", "data": {}}).encode())
    assert no_id.status_code == 400, no_id.text
    assert no_id.json()["error"]["details"][0]["field"] == "data.object.id"
    not_json = await send(b"{nope")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "INVALID_JSON"
    array = await send(b"[1, 2]")
    assert array.status_code == 400, array.text
    assert (await send(event("p", "created"))).status_code == 200
    for progress in (101, -1, "50", True):
        bad = await send(event("p", "running", progress=progress))
        assert bad.status_code == 400, (progress, bad.text)
        assert bad.json()["error"]["details"][0]["field"] == "data.object.progress"
    assert (await by_external_id(client, "p", "admin")).json()["status"] == "pending"
    huge = event("p", "running", padding="x" * (1024 * 1024 + 10))
    too_big = await send(huge)
    assert too_big.status_code == 413
    assert (await by_external_id(client, "p", "admin")).json()["status"] == "pending"


async def test_registration_input_is_checked_field_by_field(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in STANDARD.items() if k != "name"}, "name"),
        ({**STANDARD, "name": ""}, "name"),
        ({**STANDARD, "signing": "md5"}, "signing"),
        ({**HMAC, "header": "bad header"}, "header"),
        ({**STANDARD, "externalIdPath": "data..id"}, "externalIdPath"),
        ({**STANDARD, "externalIdPath": ""}, "externalIdPath"),
        ({k: v for k, v in STANDARD.items() if k != "externalIdPath"}, "externalIdPath"),
        ({**STANDARD, "statusPath": "a b"}, "statusPath"),
        ({**STANDARD, "statusMap": {}}, "statusMap"),
        ({**STANDARD, "statusMap": {"x": "done"}}, "statusMap.x"),
        ({**STANDARD, "statusMap": ["created"]}, "statusMap"),
        ({**STANDARD, "progressPath": "." * 3}, "progressPath"),
        ({**STANDARD, "errorPath": 5}, "errorPath"),
        ({**STANDARD, "owner": "not an owner"}, "owner"),
    ]
    for body, field in cases:
        response = await client.post("/integrations", json=body)
        assert response.status_code == 400, (body, response.text)
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert field in fields, (body, fields)
    assert (await client.get("/integrations")).json() == {"integrations": []}


# -- roles, isolation, changes --------------------------------------------------------------


async def test_owners_are_isolated_and_readers_may_not_manage(
    server: Any, client: httpx.AsyncClient
) -> None:
    a, b = await key(client, "owner-a"), await key(client, "owner-b")
    reader = await key(client, "owner-a", "reader")
    mine = await register(client, STANDARD, **a)
    assert (
        await client.post("/tasks/create", headers=b, json={"id": "b-task", "externalId": "shared"})
    ).status_code == 201
    # B sees nothing of A's integration.
    path = f"/integrations/{mine['id']}"
    assert (await client.get(path, headers=b)).status_code == 404
    assert (await client.put(path, headers=b, json={"name": "x"})).status_code == 404
    assert (await client.delete(path, headers=b)).status_code == 404
    assert (await client.get("/integrations", headers=b)).json() == {"integrations": []}
    listed = (await client.get("/integrations", headers=a)).json()["integrations"]
    assert [i["id"] for i in listed] == [mine["id"]]
    assert len((await client.get("/integrations")).json()["integrations"]) == 1  # admin: all
    # A reader may not manage integrations; nor create another owner's.
    assert (await client.get("/integrations", headers=reader)).status_code == 403
    assert (await client.post("/integrations", json=STANDARD, headers=reader)).status_code == 403
    foreign = await client.post("/integrations", json={**STANDARD, "owner": "owner-b"}, headers=a)
    assert foreign.status_code == 403
    # A's integration touches A's tasks only: B's task with the same external id is untouched.
    secret = mine["secret"]
    running = event("shared", "running", progress=10)
    assert (await post(server.url, mine, running, standard_headers(secret, running))).status_code \
        == 404  # fmt: skip
    created = event("shared", "created")
    made = await post(server.url, mine, created, standard_headers(secret, created))
    assert made.status_code == 200 and made.json()["task"]["owner"] == "owner-a"
    assert made.json()["taskId"] != "b-task"
    paid = event("shared", "paid")
    assert (await post(server.url, mine, paid, standard_headers(secret, paid))).status_code == 200
    b_task = (await client.get("/tasks/b-task", headers=b)).json()
    assert (b_task["status"], b_task["seq"]) == ("pending", 1)
    assert (await client.get(f"/tasks/{made.json()['taskId']}", headers=b)).status_code == 404


async def test_update_the_mapping_and_delete(server: Any, client: httpx.AsyncClient) -> None:
    integration = await register(client, STANDARD)
    path = f"/integrations/{integration['id']}"
    updated = await client.put(path, json={"statusMap": {"new": "initialized"}, "errorPath": None})
    assert updated.status_code == 200, updated.text
    assert updated.json()["statusMap"] == {"new": "initialized"}
    assert updated.json()["errorPath"] is None and "secret" not in updated.json()
    assert (await client.get(path)).json() == updated.json()
    refusals = [
        ({"statusPath": None}, "statusPath"),
        ({"name": None}, "name"),
        ({"statusMap": {"x": "y"}}, "statusMap.x"),
        ({"statusPath": "a..b"}, "statusPath"),
    ]
    for body, field in refusals:
        refused = await client.put(path, json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"][0]["field"] == field
    # Nothing to change (a standard-webhooks integration has no header of its own) is a no-op.
    for body in ({}, {"header": "X-Sig"}):
        same = await client.put(path, json=body)
        assert same.status_code == 200 and same.json() == updated.json(), same.text
    body = event("n-1", "new")
    secret = integration["secret"]
    assert (await post(server.url, integration, body, standard_headers(secret, body))).status_code \
        == 200  # fmt: skip
    assert (await client.delete(path)).json() == {"success": True}
    assert (await client.get(path)).status_code == 404
    body = event("n-2", "new")
    after = await post(server.url, integration, body, standard_headers(secret, body))
    assert after.status_code == 404
    assert (await client.get("/tasks/by-external-id/n-2")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_the_callback_route_takes_only_post(
    server: Any, client: httpx.AsyncClient, method: str
) -> None:
    integration = await register(client, STANDARD)
    answer = await client.request(method, integration["callbackPath"])
    assert answer.status_code == 405


async def test_the_sdk_manages_integrations(server: Any, client: httpx.AsyncClient) -> None:
    from spectral.client import AsyncClient, NotFoundError

    acme = (await key(client, "acme"))["X-API-Key"]
    async with AsyncClient(server.url, acme) as sdk:
        made = await sdk.create_integration(
            "payments", "standard-webhooks", "data.object.id", "type", STATUS_MAP,
            progressPath="data.object.progress",
        )  # fmt: skip
        assert made.secret.startswith("whsec_") and made.owner == "acme"
        assert made.callback_path == f"/callbacks/{made.id}"
        assert [i.id for i in (await sdk.list_integrations()).integrations] == [made.id]
        assert (await sdk.get_integration(made.id)).progress_path == "data.object.progress"
        changed = await sdk.update_integration(made.id, progressPath=None)
        assert changed.progress_path is None
        await sdk.delete_integration(made.id)
        with pytest.raises(NotFoundError):
            await sdk.get_integration(made.id)


async def test_a_delivery_whose_registry_record_was_lost_is_still_applied_once(
    tmp_path: Path,
) -> None:
    """The task records the delivery with the change: a retry after a crash between that
    commit and the registry's record (simulated by deleting the record while the server
    is down) is answered from the task's file, not applied again."""
    data = tmp_path / "data"
    async with running(serve_argv(data), env=SERVE_ENV) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
            integration = await register(http, STANDARD)
        secret = integration["secret"]
        created = event("pay_c", "created")
        assert (await post(server.url, integration, created,
                           standard_headers(secret, created))).status_code == 200  # fmt: skip
        running_body = event("pay_c", "running", progress=30)
        running_headers = standard_headers(secret, running_body)
        first = await post(server.url, integration, running_body, running_headers)
        paid = event("pay_c", "paid")
        paid_headers = standard_headers(secret, paid)
        done = await post(server.url, integration, paid, paid_headers)
        assert first.status_code == 200 and done.status_code == 200
        server.terminate()
        with trio.fail_after(30):
            assert await server.wait() == 0
    registry = sqlite3.connect(data / "registry.sqlite")
    with registry:
        assert registry.execute("DELETE FROM integration_deliveries").rowcount == 3
    registry.close()
    async with running(serve_argv(data), env=SERVE_ENV) as server:
        for body, headers, answer in ((running_body, running_headers, first),
                                      (paid, paid_headers, done)):  # fmt: skip
            retry = {**headers, **standard_headers(secret, body, headers["webhook-id"])}
            again = await post(server.url, integration, body, retry)
            assert again.status_code == 200, again.text  # not a 409 for the processing one
            assert again.json()["task"]["seq"] == answer.json()["task"]["seq"]
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
            task = (await by_external_id(http, "pay_c", "admin")).json()
        assert (task["status"], task["seq"]) == ("success", done.json()["task"]["seq"])


async def test_concurrent_copies_of_one_delivery_are_applied_once(
    server: Any, client: httpx.AsyncClient
) -> None:
    integration = await register(client, STANDARD)
    secret = integration["secret"]
    created = event("pay_x", "created")
    assert (await post(server.url, integration, created,
                       standard_headers(secret, created))).status_code == 200  # fmt: skip
    body = event("pay_x", "running", progress=20)
    headers = standard_headers(secret, body)
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await post(server.url, integration, body, headers))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(send)
    assert [a.status_code for a in answers] == [200] * 8
    assert sorted(a.json()["replayed"] for a in answers) == [False] + [True] * 7
    assert {a.json()["task"]["seq"] for a in answers} == {2}
    task = (await by_external_id(client, "pay_x", "admin")).json()
    assert (task["seq"], task["progress"]) == (2, 20)
