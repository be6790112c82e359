"""The OpenAPI document and the reference page: every route described, schemas that
match what a real server answers, and a page that renders without the internet."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import httpx
import jsonschema_rs

from spectral import __version__
from spectral.api.openapi import build_document, described_operations
from spectral.api.operations import OPERATIONS
from spectral.api.reference import SCALAR_PATH, accepts_gzip, reference_page
from spectral.api.routing import Routes
from spectral.api.rpc import Procedures
from tests.procs import ROOT, Server

DOCUMENT = build_document(__version__)
ERRORS = ("400", "401", "403", "404", "409", "413", "422", "429", "503")


def _served() -> set[tuple[str, str]]:
    """Every (METHOD, path) the application serves: its REST routes and procedures."""
    served = {(method, path) for method, path, _ in Routes.from_operations(OPERATIONS)}
    for path, operation in Procedures.from_operations(OPERATIONS).by_path.items():
        served.add(("POST", "/rpc" + path))
        if operation.rpc is not None and operation.rpc.get:
            served.add(("GET", "/rpc" + path))
    return served


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, DOCUMENT["paths"][path][method.lower()])
        for method, path in described_operations(DOCUMENT)
    ]


def _validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for ``schema`` whose ``$ref`` resolve into the document's components."""
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": DOCUMENT["components"],
        **schema,
    }
    return jsonschema_rs.validator_for(root)


def _resolve(value: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in value:
        target: Any = DOCUMENT
        for part in value["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        value = target
    return value


def _answer_schema(method: str, path: str, status: int) -> dict[str, Any]:
    response = _resolve(DOCUMENT["paths"][path][method.lower()]["responses"][str(status)])
    return response["content"]["application/json"]["schema"]


def assert_conforms(answer: httpx.Response, method: str, path: str) -> Any:
    """The answer's status is declared for the operation and its body fits the schema."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(answer.status_code) in responses, (method, path, answer.status_code, answer.text)
    body = answer.json()
    errors = [e.message for e in _validator(_answer_schema(method, path, answer.status_code))
              .iter_errors(body)]  # fmt: skip
    assert errors == [], (method, path, body)
    return body


# -- the document --------------------------------------------------------------------------------


def test_the_document_describes_exactly_what_is_served() -> None:
    described = {(method, path) for method, path in described_operations(DOCUMENT)}
    assert described == _served()


def test_operation_ids_are_unique_and_every_ref_resolves() -> None:
    ids = [operation["operationId"] for _, _, operation in _operations()]
    assert len(ids) == len(set(ids))
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(DOCUMENT))
    assert refs
    for ref in set(refs):
        _resolve({"$ref": ref})  # KeyError if it points nowhere


def test_every_component_schema_is_valid_json_schema_2020_12() -> None:
    for name, schema in DOCUMENT["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        ), name


def test_security_public_routes_and_schemes() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["jwt"] == {**schemes["jwt"], "type": "http", "bearerFormat": "JWT"}
    assert schemes["jwtQuery"] == {**schemes["jwtQuery"], "in": "query", "name": "token"}
    assert DOCUMENT["security"] == [{"apiKey": []}, {"bearer": []}, {"jwt": []}, {"jwtQuery": []}]
    public = {path for _, path, operation in _operations() if operation.get("security") == []}
    served_publicly = {
        rest.path for o in OPERATIONS if o.access in ("public", "signed") for rest in o.rest
    }  # fmt: skip
    assert (
        public
        == served_publicly
        == {
            "/",
            "/health",
            "/openapi.json",
            "/api-reference",
            "/api-reference/{file}",
            # socket.io-client's bundle, where Socket.IO servers serve it.
            "/socket.io/socket.io.js",
            "/socket.io/socket.io.min.js",
            # No API key: the provider's own signature (401 without one).
            "/callbacks/{integrationId}",
        }
    )


def test_error_responses_use_the_envelope_and_429_has_retry_after() -> None:
    responses = DOCUMENT["components"]["responses"]
    for status in ERRORS:
        rest, rpc = responses[f"Error{status}"], responses[f"RpcError{status}"]
        assert rest["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"
        }
        assert rpc["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/RpcErrorEnvelope"
        }
    assert "Retry-After" in responses["Error429"]["headers"]
    create = DOCUMENT["paths"]["/tasks/create"]["post"]["responses"]
    assert set(ERRORS) - {"404"} <= set(create)
    for _, path, operation in _operations():
        if operation.get("security") != []:
            assert "401" in operation["responses"], path


def test_mutating_operations_take_an_idempotency_key() -> None:
    key = {"$ref": "#/components/parameters/IdempotencyKey"}
    parameter = DOCUMENT["components"]["parameters"]["IdempotencyKey"]
    assert parameter["in"] == "header" and parameter["schema"]["maxLength"] == 255
    mutating = {
        f"{method} {path}" for method, path, op in _operations() if key in op.get("parameters", [])
    }
    assert {
        "POST /tasks/create", "POST /tasks/updateProgress", "POST /tasks/addEvent",
        "POST /tasks/complete", "POST /tasks/fail", "POST /tasks/cancel",
        "POST /tasks/batchUpdateProgress", "DELETE /tasks/{taskId}", "POST /tasks/delete",
        "POST /rpc/tasks/create", "POST /rpc/tasks/updateProgress", "POST /rpc/tasks/delete",
    } <= mutating  # fmt: skip
    assert not any(method == "GET" for method, _ in (m.split(" ", 1) for m in mutating))
    ok = DOCUMENT["paths"]["/tasks/complete"]["post"]["responses"]["200"]
    assert "Idempotent-Replayed" in ok["headers"]


def test_request_schemas_come_from_the_models() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    create = schemas["CreateTask"]
    assert {"taskId", "id", "status", "progress", "metadata"} <= set(create["properties"])
    assert create["anyOf"] == [{"required": ["taskId"]}, {"required": ["id"]}]
    assert create["properties"]["progress"]["maximum"] == 100
    assert schemas["NewEvent"]["anyOf"] == [{"required": ["eventType"]}, {"required": ["type"]}]
    rpc = DOCUMENT["paths"]["/rpc/tasks/updateProgress"]["post"]
    body = rpc["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["json"] == {"$ref": "#/components/schemas/UpdateProgress"}
    assert body["required"] == ["json"]
    answer = rpc["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["json"] == {"$ref": "#/components/schemas/RpcMutation"}
    sse = DOCUMENT["paths"]["/tasks/{taskId}/events"]["get"]["responses"]["200"]["content"]
    metrics = DOCUMENT["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(sse) == ["text/event-stream"] and list(metrics) == ["text/plain"]


# -- the reference page --------------------------------------------------------------------------


def test_the_page_loads_only_its_vendored_script_and_hashed_inline_code() -> None:
    page = reference_page()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.html)
    assert not re.search(r"@import|url\(|https?://", page.html)
    assert re.findall(r'<script src="([^"]+)">', page.html) == [SCALAR_PATH]
    inline = re.findall(r"<script>(.*?)</script>", page.html, re.S)
    assert len(inline) == 2
    policy = dict(part.strip().split(" ", 1) for part in page.policy.split(";"))
    assert page.policy.startswith("default-src 'none'")
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"
        for code in inline
    ]
    # Scripts: this server and the two inline ones by hash; no eval, no inline script else.
    assert policy["script-src"] == " ".join(["'self'", *hashes])
    assert policy["connect-src"] == "'self'"
    # Scalar writes <style> elements and style attributes at run time.
    assert policy["style-src"] == "'self' 'unsafe-inline'"
    # Scalar's configuration keeps it from scalar.com: no fonts, proxy, telemetry, agent.
    for setting in ('"withDefaultFonts": false', '"telemetry": false', '"proxyUrl": ""'):
        assert setting in page.html
    bundle = ROOT / "spectral" / "static" / "vendor" / SCALAR_PATH.rsplit("/", 1)[1]
    assert bundle.stat().st_size > 1_000_000
    assert (bundle.parent / "LICENSE-scalar-api-reference").read_text().count("MIT") >= 2


def test_accept_encoding_is_read_with_its_qualities() -> None:
    for value, gzipped in [
        ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True),
        ("*", True), ("identity", False), ("gzip;q=0", False), ("gzip;q=0.0, br", False),
        ("", False), (None, False), ("GZIP", True), ("gzip;q=x", False),
    ]:  # fmt: skip
        assert accepts_gzip(value) is gzipped, value


# -- against a real server -----------------------------------------------------------------------


async def test_document_and_page_are_served_without_a_key(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as anonymous:
        document = await anonymous.get("/openapi.json")
        page = await anonymous.get("/api-reference")
        script = await anonymous.get(SCALAR_PATH)  # httpx asks for gzip and inflates
        plain = await anonymous.get(SCALAR_PATH, headers={"accept-encoding": "identity"})
        refused = await anonymous.get(SCALAR_PATH, headers={"accept-encoding": "gzip;q=0"})
        elsewhere = await anonymous.get("/api-reference/other.js")
        tasks = await anonymous.get("/tasks")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json"
    assert document.json() == json.loads(json.dumps(DOCUMENT))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == reference_page().html
    assert page.headers["content-security-policy"] == reference_page().policy
    assert script.status_code == 200 and script.content.startswith(b"(function(){")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "immutable" in script.headers["cache-control"]
    # Gzipped for clients that take it (a quarter of the size), as is for the others.
    assert script.headers["content-encoding"] == "gzip"
    assert int(script.headers["content-length"]) < len(script.content) / 3
    assert "content-encoding" not in plain.headers and plain.content == script.content
    assert "content-encoding" not in refused.headers
    assert script.headers["vary"] == "accept-encoding"
    assert elsewhere.status_code == 404
    assert tasks.status_code == 401
    assert_conforms(tasks, "GET", "/tasks")


async def test_real_answers_match_the_document(client: httpx.AsyncClient) -> None:
    async def call(method: str, path: str, route: str | None = None, **kwargs: Any) -> Any:
        answer = await client.request(method, path, **kwargs)
        return assert_conforms(answer, method, route or path)

    created = await call("POST", "/tasks/create", json={"id": "doc-1", "metadata": {"a": 1}})
    assert created["task"]["seq"] == 1
    once = {"json": {"taskId": "doc-1", "progress": 40.5}, "headers": {"Idempotency-Key": "doc-k1"}}
    for _ in range(2):
        replayed = await client.post("/tasks/updateProgress", **once)  # type: ignore[arg-type]
        assert_conforms(replayed, "POST", "/tasks/updateProgress")
    header = _resolve(DOCUMENT["components"]["headers"]["Replayed"])["schema"]
    assert replayed.headers["Idempotent-Replayed"] in header["enum"]
    event = {"type": "log", "message": "m"}
    await call("POST", "/tasks/addEvent", json={"taskId": "doc-1", "event": event})
    batch = await call(
        "POST", "/tasks/batchUpdateProgress",
        json={"updates": [{"taskId": "doc-1", "progress": 50}, {"taskId": "nope", "progress": 1},
                          {"progress": "x"}]},
    )  # fmt: skip
    assert [item["ok"] for item in batch["results"]] == [True, False, False]
    await call("GET", "/tasks/doc-1", "/tasks/{taskId}")
    await call("GET", "/tasks/doc-1/history?limit=2", "/tasks/{taskId}/history")
    await call("GET", "/tasks?limit=5", "/tasks")
    await call("POST", "/tasks/getById", json={"taskId": "doc-1"})
    await call("POST", "/tasks/getHistory", json={"taskId": "doc-1", "limit": 3})
    await call("POST", "/tasks/listAll")
    await call("POST", "/tasks/complete", json={"taskId": "doc-1"})
    terminal = await call("POST", "/tasks/fail", json={"taskId": "doc-1", "error": "late"})
    assert terminal["error"]["code"] == "TASK_TERMINAL"
    invalid = await call("POST", "/tasks/updateProgress", json={"taskId": "..", "progress": 101})
    assert invalid["error"]["details"]
    await call("GET", "/tasks/nope", "/tasks/{taskId}")
    await call("POST", "/tokens/watch", json={"taskId": "doc-1"})
    key = await call("POST", "/admin/keys", json={"owner": "acme", "role": "reader"})
    await call("GET", "/admin/keys")
    await call("DELETE", f"/admin/keys/{key['id']}", "/admin/keys/{id}")
    await call("GET", "/health")
    await call("POST", "/tasks/delete", json={"taskId": "doc-1"})
    await call("DELETE", "/tasks/doc-1", "/tasks/{taskId}")


async def test_real_rpc_answers_match_the_document(client: httpx.AsyncClient) -> None:
    async def rpc(name: str, value: Any = None, method: str = "POST", key: str = "") -> Any:
        path = f"/rpc/tasks/{name}"
        if method == "GET":
            answer = await client.get(path, params={"data": json.dumps({"json": value})})
        else:
            headers = {"Idempotency-Key": key} if key else {}
            body = {} if value is None else {"json": value}
            answer = await client.post(path, json=body, headers=headers)
        return assert_conforms(answer, method, path)

    await rpc("create", {"taskId": "doc-rpc", "timeoutSeconds": 600})
    mutation = await rpc("updateProgress", {"taskId": "doc-rpc", "progress": 10})
    assert mutation["meta"]
    await rpc("addEvent", {"taskId": "doc-rpc", "event": {"eventType": "progress", "message": "p"}})
    await rpc("getById", {"taskId": "doc-rpc"}, method="GET")
    await rpc("getHistory", {"taskId": "doc-rpc"})
    await rpc("listAll")
    batch = {"updates": [{"taskId": "doc-rpc", "progress": 20}]}
    for _ in range(2):
        replay = await rpc("batchUpdateProgress", batch, key="doc-rpc-batch-1")
    assert replay["json"]["__idempotency"]["cached"] is True
    await rpc("cancel", {"taskId": "doc-rpc"})
    error = await rpc("complete", {"taskId": "doc-rpc"})
    assert error["json"]["data"]["code"] == "TASK_TERMINAL"
    await rpc("getById", {"taskId": "nope"})
    deleted = await rpc("delete", {"taskId": "doc-rpc"}, key="doc-rpc-delete-1")
    assert deleted["json"]["__idempotency"]["cached"] is False
    bare = await client.post("/rpc/tasks/getById", content=b"{}", headers={"X-API-Key": "bad"})
    assert_conforms(bare, "POST", "/rpc/tasks/getById")


async def test_metrics_and_the_event_stream_have_their_media_types(
    client: httpx.AsyncClient,
) -> None:
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    await client.post("/tasks/create", json={"id": "doc-sse"})
    first = ""
    async with client.stream("GET", "/tasks/doc-sse/events") as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                first = line.removeprefix("data: ")
                break
    message = json.loads(first)
    validator = _validator({"$ref": "#/components/schemas/WatchMessage"})
    assert [e.message for e in validator.iter_errors(message)] == []
    assert message["type"] == "snapshot"
    missing = await client.get("/tasks/nope/events")
    assert_conforms(missing, "GET", "/tasks/{taskId}/events")
