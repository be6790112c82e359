"""Webhook CRUD over a real server: validation, roles, isolation, the SSRF guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import running

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
async def private_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of a server that lets webhooks reach 127.0.0.1."""
    env = {**SERVE_ENV, "SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "1"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        yield http


async def _key(http: httpx.AsyncClient, owner: str, role: str) -> dict[str, str]:
    response = await http.post("/admin/keys", json={"owner": owner, "role": role})
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def test_crud_roundtrip(private_client: httpx.AsyncClient) -> None:
    http = private_client
    created = await http.post(
        "/webhooks",
        json={"url": HOOK, "eventType": "progress", "description": "d", "taskIdPrefix": "job-"},
    )
    assert created.status_code == 201, created.text
    webhook = created.json()
    assert webhook["secret"].startswith("whsec_")
    assert webhook["eventType"] == "progress" and webhook["taskIdPrefix"] == "job-"
    assert webhook["active"] is True and webhook["owner"] == "admin"
    webhook_id = webhook["id"]

    listed = (await http.get("/webhooks")).json()["webhooks"]
    assert [w["id"] for w in listed] == [webhook_id]
    assert "secret" not in listed[0]

    updated = await http.put(
        f"/webhooks/{webhook_id}", json={"eventType": "all", "active": False, "description": None}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["eventType"] == "all"
    assert updated.json()["active"] is False and updated.json()["description"] is None
    assert updated.json()["url"] == HOOK
    assert (await http.get(f"/webhooks/{webhook_id}")).json()["active"] is False

    deliveries = await http.get(f"/webhooks/{webhook_id}/deliveries?limit=5")
    assert deliveries.status_code == 200 and deliveries.json() == {"deliveries": []}

    assert (await http.delete(f"/webhooks/{webhook_id}")).json() == {"success": True}
    assert (await http.get(f"/webhooks/{webhook_id}")).status_code == 404
    assert (await http.delete(f"/webhooks/{webhook_id}")).status_code == 404
    assert (await http.get("/webhooks")).json() == {"webhooks": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eventType": "all"}, "url"),
        ({"url": "ftp://example.com/", "eventType": "all"}, "url"),
        ({"url": "http:///nohost", "eventType": "all"}, "url"),
        ({"url": "not a url", "eventType": "all"}, "url"),
        ({"url": 5, "eventType": "all"}, "url"),
        ({"url": "http://127.0.0.1/" + "a" * 2100, "eventType": "all"}, "url"),
        ({"url": HOOK}, "eventType"),
        ({"url": HOOK, "eventType": "created"}, "eventType"),
        ({"url": HOOK, "eventType": "all", "taskIdPrefix": "a b"}, "taskIdPrefix"),
        ({"url": HOOK, "eventType": "all", "description": "x" * 501}, "description"),
        ({"url": HOOK, "eventType": "all", "owner": "no spaces"}, "owner"),
        ({"url": HOOK, "eventType": "all", "description": "a\x00b"}, "description"),
        ({"url": HOOK + "\x00", "eventType": "all"}, "url"),
        ({"url": HOOK, "eventType": "all", "taskIdPrefix": "a\x00"}, "taskIdPrefix"),
        ({"url": HOOK, "eventType": "all", "format": "bullmq"}, "format"),
        ({"url": HOOK, "eventType": "all", "format": None}, "format"),
        ({"url": HOOK, "eventType": "all", "format": 1}, "format"),
    ],
)
async def test_create_rejects_bad_input(
    private_client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await private_client.post("/webhooks", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["field"] == field


async def test_update_rejects_bad_input(private_client: httpx.AsyncClient) -> None:
    http = private_client
    webhook_id = (await http.post("/webhooks", json={"url": HOOK, "eventType": "all"})).json()["id"]
    for body, field in (
        ({"active": "yes"}, "active"),
        ({"active": None}, "active"),
        ({"eventType": "nope"}, "eventType"),
        ({"url": "gopher://x/"}, "url"),
        ({}, "body"),
        ({"description": "\x00"}, "description"),
        ({"format": "seed"}, "format"),
        ({"format": None}, "format"),
    ):
        response = await http.put(f"/webhooks/{webhook_id}", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["details"][0]["field"] == field
    bad_limit = await http.get(f"/webhooks/{webhook_id}/deliveries?limit=0")
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["details"][0]["field"] == "limit"
    assert (await http.post("/webhooks", content=b"{")).json()["error"]["code"] == "INVALID_JSON"


async def test_format_is_spectral_unless_seed_jobs_is_asked_and_may_change(
    private_client: httpx.AsyncClient,
) -> None:
    http = private_client
    plain = await http.post("/webhooks", json={"url": HOOK, "eventType": "all"})
    assert plain.status_code == 201 and plain.json()["format"] == "spectral"
    seed = await http.post(
        "/webhooks", json={"url": HOOK, "eventType": "completed", "format": "seed-jobs"}
    )
    assert seed.status_code == 201, seed.text
    assert seed.json()["format"] == "seed-jobs" and seed.json()["secret"].startswith("whsec_")
    seed_id = seed.json()["id"]
    assert (await http.get(f"/webhooks/{seed_id}")).json()["format"] == "seed-jobs"
    back = await http.put(f"/webhooks/{seed_id}", json={"format": "spectral"})
    assert back.status_code == 200 and back.json()["format"] == "spectral"
    assert back.json()["eventType"] == "completed"
    listed = (await http.get("/webhooks")).json()["webhooks"]
    assert [w["format"] for w in listed] == ["spectral", "spectral"]


async def test_roles_and_isolation(private_client: httpx.AsyncClient) -> None:
    http = private_client
    acme = await _key(http, "acme", "service")
    other = await _key(http, "other", "service")
    reader = await _key(http, "acme", "reader")

    mine = await http.post("/webhooks", headers=acme, json={"url": HOOK, "eventType": "all"})
    assert mine.status_code == 201 and mine.json()["owner"] == "acme"
    mine_id = mine.json()["id"]
    theirs = await http.post("/webhooks", headers=other, json={"url": HOOK, "eventType": "failed"})
    theirs_id = theirs.json()["id"]

    # A service key sees and manages its own owner's webhooks only; others are 404.
    assert [w["id"] for w in (await http.get("/webhooks", headers=acme)).json()["webhooks"]] == [
        mine_id
    ]
    for method, path in (
        ("GET", f"/webhooks/{theirs_id}"),
        ("PUT", f"/webhooks/{theirs_id}"),
        ("DELETE", f"/webhooks/{theirs_id}"),
        ("GET", f"/webhooks/{theirs_id}/deliveries"),
        ("POST", f"/webhooks/{theirs_id}/deliveries/msg_{'0' * 24}/redeliver"),
    ):
        response = await http.request(method, path, headers=acme, json={"active": False})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"
    assert (await http.get(f"/webhooks/{theirs_id}", headers=other)).json()["active"] is True
    # Not another owner's either by naming it in the body.
    stolen = await http.post(
        "/webhooks", headers=acme, json={"url": HOOK, "eventType": "all", "owner": "other"}
    )
    assert stolen.status_code == 403

    # A reader may not manage webhooks at all; no key is 401.
    assert (await http.get("/webhooks", headers=reader)).status_code == 403
    assert (await http.get(f"/webhooks/{mine_id}", headers=reader)).status_code == 403
    created = await http.post("/webhooks", headers=reader, json={"url": HOOK, "eventType": "all"})
    assert created.status_code == 403
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as anonymous:
        assert (await anonymous.get("/webhooks")).status_code == 401
        assert (await anonymous.post("/webhooks", json={})).status_code == 401

    # The admin sees every owner's, or one owner's, and may create for any owner.
    everyone = (await http.get("/webhooks")).json()["webhooks"]
    assert {w["id"] for w in everyone} == {mine_id, theirs_id}
    only = (await http.get("/webhooks?owner=other")).json()["webhooks"]
    assert [w["id"] for w in only] == [theirs_id]
    for_acme = await http.post("/webhooks", json={"url": HOOK, "eventType": "all", "owner": "acme"})
    assert for_acme.json()["owner"] == "acme"
    assert (await http.delete(f"/webhooks/{theirs_id}")).status_code == 200
    assert (await http.get("/webhooks/not-an-id")).status_code == 404
    unknown = await http.post(f"/webhooks/{mine_id}/deliveries/msg_{'0' * 24}/redeliver")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "DELIVERY_NOT_FOUND"


FORBIDDEN = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8094/hook",
    "http://10.0.0.1/",
    "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[fd00:ec2::254]/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://localhost:8080/",
]


async def test_ssrf_refusals_without_the_flag(client: httpx.AsyncClient) -> None:
    # The default server (no SPECTRAL_WEBHOOK_ALLOW_PRIVATE): nothing is ever sent.
    for url in FORBIDDEN:
        response = await client.post("/webhooks", json={"url": url, "eventType": "all"})
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "WEBHOOK_URL_FORBIDDEN", url
        assert error["details"][0]["field"] == "url"
    assert (await client.get("/webhooks")).json() == {"webhooks": []}
    # (A name that does not resolve is tested in test_webhooks_units.py with a stand-in
    # resolver: a real lookup would send a DNS query off this machine.)
