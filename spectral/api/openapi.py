"""The OpenAPI 3.1 document of every HTTP route, built from the pydantic models.

Pure: :func:`build_document` reads only the operation table of
:mod:`spectral.api.operations` (its routes, their request models in
``mode="validation"`` and answer models in ``mode="serialization"``); every schema
lands in ``components/schemas`` and is referenced by ``$ref``. The application
routes requests from the same table, so what is served is what is described.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from pydantic import AliasChoices, BaseModel

from spectral.api import schemas
from spectral.api.operations import ERROR_TEXT, REQUEST_MODELS, TAGS, Route, routes

REF = "#/components/schemas/{model}"

Mode = Literal["validation", "serialization"]


def build_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server at ``version``."""
    documented = routes()
    components: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        _add_model(components, model, "validation")
    for answer in _answer_models(documented):
        _add_model(components, answer, "serialization")
    components.update(_manual_schemas())
    for model in _with_nested(REQUEST_MODELS):
        _alias_choices(model, components[model.__name__])
    # The items are validated one by one (a bad one fails alone), each as this body.
    updates = components["BatchUpdateProgress"]["properties"]["updates"]
    updates["items"] = {"$ref": REF.format(model="UpdateProgress")}
    paths: dict[str, dict[str, Any]] = {}
    for route in documented:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    # What the server takes, not what it answers (an error may quote a refused NUL).
    components[JSON_VALUE] = _json_value()
    for model in _with_nested(REQUEST_MODELS):
        _refuse_nul(components[model.__name__])
    for operations in paths.values():
        for operation in operations.values():
            _refuse_nul(operation.get("parameters"))
            _refuse_nul(operation.get("requestBody"))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "spectral",
            "version": version,
            "summary": "Self-hosted real-time task tracker",
            "description": (
                "Every route of the HTTP API. Send `X-API-Key: <key>` (or "
                "`Authorization: Bearer <key>`) on every route but `/health`, "
                "`/openapi.json` and `/api-reference`; where the server accepts JWTs, "
                "`Authorization: Bearer <jwt>` or `?token=<jwt>` instead (docs/api.md, "
                '"JWT"). Errors are '
                '`{"error": {"code", "message", "details"?}}` (under `/rpc`: oRPC\'s '
                "error body). Watching over WebSocket (`/ws/task/{taskId}`) is described "
                "in docs/api.md: it is served before the HTTP application."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "security": [{"apiKey": []}, {"bearer": []}, {"jwt": []}, {"jwtQuery": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": _security_schemes(),
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": _error_responses(),
        },
    }


def _answer_models(documented: list[Route]) -> list[type[BaseModel]]:
    """Every answer model of the routes, and the error envelopes."""
    found: dict[type[BaseModel], None] = {}
    for route in documented:
        if isinstance(route.answer, type):
            found[route.answer] = None
    found[schemas.ErrorEnvelope] = None
    found[schemas.RpcErrorEnvelope] = None
    return list(found)


def _with_nested(models: tuple[type[BaseModel], ...]) -> list[type[BaseModel]]:
    """``models`` and every model their fields hold, each once."""
    found: dict[type[BaseModel], None] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found[annotation] = None
                for field in annotation.model_fields.values():
                    visit(field.annotation)
        elif get_origin(annotation) is not None:
            for argument in get_args(annotation):
                visit(argument)

    for model in models:
        visit(model)
    return list(found)


def described_operations(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every ``(METHOD, path)`` of ``document``."""
    for path, item in document["paths"].items():
        for method in item:
            yield method.upper(), path


# -- schemas ---------------------------------------------------------------------------------


def _add_model(components: dict[str, Any], model: type[BaseModel], mode: Mode) -> None:
    schema = model.model_json_schema(ref_template=REF, mode=mode)
    for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        sub = _tidy(sub)
        if name in components and components[name] != sub:
            raise ValueError(f"two different schemas are named {name!r}")
        components[name] = sub


def _tidy(schema: Any) -> Any:
    """Drop pydantic's per-field titles; docstring ``code`` becomes markdown `code`."""
    if isinstance(schema, list):
        return [_tidy(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tidy = {}
    for key, value in schema.items():
        if key == "properties":
            tidy[key] = {
                name: {k: _tidy(v) for k, v in prop.items() if k != "title"}
                for name, prop in value.items()
            }
        elif key == "description" and isinstance(value, str):
            tidy[key] = value.replace("``", "`")
        else:
            tidy[key] = _tidy(value)
    return tidy


def _alias_choices(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """A field with several accepted names (``id`` or ``taskId``): each is a property."""
    for field in model.model_fields.values():
        alias = field.validation_alias
        if not isinstance(alias, AliasChoices):
            continue
        primary, *others = [choice for choice in alias.choices if isinstance(choice, str)]
        for other in others:
            schema["properties"][other] = {
                **schema["properties"][primary],
                "description": f"another name for `{primary}`",
            }
        if primary in schema.get("required", []):
            schema["required"].remove(primary)
            if not schema["required"]:
                del schema["required"]
            schema["anyOf"] = [{"required": [name]} for name in (primary, *others)]


def _manual_schemas() -> dict[str, Any]:
    """Schemas no model gives: the oRPC meta list and the watch messages of SSE."""
    ref = REF.format
    return {
        "RpcMeta": {
            "type": "array",
            "description": (
                "values JSON cannot carry, each as `[type, ...path]`: 0 bigint, 1 Date, "
                "2 not-a-number, 3 an array's missing item, 4 URL, 5 RegExp, 6 Set, 7 Map "
                '(docs/api.md, "Wire format")'
            ),
            "items": {
                "type": "array",
                "minItems": 1,
                "prefixItems": [{"type": "integer"}],
                "items": {"type": ["string", "integer"]},
            },
        },
        "Snapshot": {
            "type": "object",
            "description": "first message of a watch (after any replayed events)",
            "properties": {
                "type": {"const": "snapshot"},
                "taskId": {"type": "string"},
                "task": {"$ref": ref(model="Task")},
                "seq": {"type": "integer"},
                "epoch": {"type": "string"},
                "recovered": {"type": "boolean"},
            },
            "required": ["type", "taskId", "task", "seq", "epoch", "recovered"],
        },
        "Change": {
            "type": "object",
            "description": "a committed change; replayed ones carry `replayed` and no `task`",
            "properties": {
                "type": {"enum": ["progress", "event", "complete", "fail", "cancel", "timeout"]},
                "taskId": {"type": "string"},
                "task": {"$ref": ref(model="Task")},
                "event": {"$ref": ref(model="Event")},
                "seq": {"type": "integer"},
                "timestamp": {"type": "string", "format": "date-time"},
                "replayed": {"const": True},
            },
            "required": ["type", "taskId", "event", "seq", "timestamp"],
        },
        "DeletedMessage": {
            "type": "object",
            "description": "the last message: the task was deleted",
            "properties": {
                "type": {"const": "deleted"},
                "taskId": {"type": "string"},
                "seq": {"type": "integer"},
                "timestamp": {"type": "string", "format": "date-time"},
            },
            "required": ["type", "taskId", "seq", "timestamp"],
        },
        "WatchMessage": {
            "description": "the `data:` of one SSE record (the WebSocket's messages)",
            "oneOf": [
                {"$ref": ref(model="Snapshot")},
                {"$ref": ref(model="Change")},
                {"$ref": ref(model="DeletedMessage")},
            ],
        },
    }


def _query_parameters(
    model: type[BaseModel], components: dict[str, Any], exclude: set[str]
) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, _tidy(sub))
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in _tidy(schema)["properties"].items():
        if name in exclude:
            continue
        prop = _without_null(prop)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameters.append(parameter)
    return parameters


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query value is never null: ``anyOf [X, null]`` (default null) becomes X."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", "") is None:
        del rest["default"]
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


# -- operations ------------------------------------------------------------------------------


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    operation = route.operation
    item: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": operation.summary.replace("``", "`"),
    }
    if operation.description and not route.rpc_get:
        item["description"] = operation.description
    elif route.rpc_get:
        item["description"] = 'oRPC\'s GET form of a read (an `RPCLink` with `method: "GET"`).'
    if operation.access in ("public", "signed"):
        item["security"] = []
    elif operation.access == "token":
        item["security"] = [
            {"apiKey": []},
            {"bearer": []},
            {"jwt": []},
            {"jwtQuery": []},
            {"watchToken": []},
        ]
    parameters: list[dict[str, Any]] = [copy.deepcopy(p) for p in route.parameters]
    if route.query is not None:
        # A watch token is the watchToken security scheme, not a parameter; path fields
        # are the path's parameters.
        exclude = {p["name"] for p in route.parameters if p["in"] == "path"}
        if operation.access == "token":
            exclude.add("token")
        parameters += _query_parameters(route.query, components, exclude)
    if operation.mutating:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if parameters:
        item["parameters"] = parameters
    if route.body is not None:
        item["requestBody"] = _request_body(route)
    responses: dict[str, Any] = {str(route.status): _success(route)}
    prefix = "Rpc" if route.rpc else ""
    own = operation.error_text or {}
    for status in sorted(route.errors):
        if status in own:
            envelope = {"$ref": REF.format(model="ErrorEnvelope")}
            responses[str(status)] = {
                "description": own[status],
                "content": {"application/json": {"schema": envelope}},
            }
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/{prefix}Error{status}"}
    item["responses"] = responses
    return item


def _schema_of(answer: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(answer, type):
        return {"$ref": REF.format(model=answer.__name__)}
    return answer


def _request_body(route: Route) -> dict[str, Any]:
    assert route.body is not None
    schema: dict[str, Any] = {"$ref": REF.format(model=route.body.__name__)}
    if route.rpc:
        schema = {
            "type": "object",
            "description": "oRPC's RPC framing: the input in `json`, special values in `meta`",
            "properties": {"json": schema, "meta": {"$ref": REF.format(model="RpcMeta")}},
        }
        if route.rpc_input_required:
            schema["required"] = ["json"]
    return {"required": route.body_required, "content": {"application/json": {"schema": schema}}}


def _success(route: Route) -> dict[str, Any]:
    operation = route.operation
    answer: dict[str, Any] = {"description": operation.answer_text}
    schema = _schema_of(route.answer)
    if route.rpc:
        schema = {
            "type": "object",
            "properties": {"json": schema, "meta": {"$ref": REF.format(model="RpcMeta")}},
            "required": ["json"],
        }
        answer["content"] = {"application/json": {"schema": schema}}
    else:
        answer["content"] = {operation.media_type: {"schema": schema}}
    if operation.links and not route.rpc and route.method == "POST":
        answer["links"] = copy.deepcopy(operation.links)
    if operation.mutating:
        answer["headers"] = {"Idempotent-Replayed": {"$ref": "#/components/headers/Replayed"}}
    return answer


# -- shared components -----------------------------------------------------------------------


def _security_schemes() -> dict[str, Any]:
    return {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "the API key as a token"},
        "jwt": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "a JWT, where the server accepts them (`SPECTRAL_JWT_SECRET` or "
            '`SPECTRAL_JWT_PUBLIC_KEY`; docs/api.md, "JWT")',
        },
        "jwtQuery": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "a JWT as `?token=`, on every route (where the server accepts JWTs)",
        },
        "watchToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "a watch token from `POST /tokens/watch` (SSE and WebSocket only)",
        },
    }


def _parameters() -> dict[str, Any]:
    return {
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": (
                "1-255 printable characters. The first answer for (owner, key) is kept "
                "24 h; a repeat with the same body gets it again (with "
                "`Idempotent-Replayed: true`), another body is 422 `IDEMPOTENCY_KEY_REUSED`"
            ),
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    }


def _headers() -> dict[str, Any]:
    return {
        "Replayed": {
            "description": "`true` when this answer is the stored one of an earlier request",
            "schema": {"type": "string", "enum": ["true"]},
        },
        "RetryAfter": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 1},
        },
    }


def _error_responses() -> dict[str, Any]:
    responses = {}
    for status, text in ERROR_TEXT.items():
        for prefix, model in (("", "ErrorEnvelope"), ("Rpc", "RpcErrorEnvelope")):
            response: dict[str, Any] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
            }
            if status == 429:
                response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
            responses[f"{prefix}Error{status}"] = response
    return responses


#: The free-form JSON value the API takes in metadata: any JSON without NUL in a string.
JSON_VALUE = "JsonValue"
#: Strings the server takes: none may hold U+0000 (spectral/nul.py; PostgreSQL cannot).
NO_NUL = "^[^\\u0000]*$"


def _json_value() -> dict[str, Any]:
    """Any JSON value whose strings (object keys included) hold no NUL."""
    ref = {"$ref": REF.format(model=JSON_VALUE)}
    return {
        "description": "any JSON value; no string in it (keys included) holds U+0000",
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": ref},
            {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": ref},
        ],
    }


def _refuse_nul(node: Any) -> None:
    """Say in every schema under ``node`` what the server refuses: NUL in any string.

    A string gets the NUL-free pattern (next to its own, through ``allOf``, when that one
    would let a NUL through); an object's keys too; a free-form object's values become
    :data:`JSON_VALUE`.
    """
    if isinstance(node, list):
        for item in node:
            _refuse_nul(item)
        return
    if not isinstance(node, dict):
        return
    for value in list(node.values()):
        _refuse_nul(value)
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        _no_nul(node)
    if node.get("type") == "object" and "additionalProperties" in node:
        _no_nul(node.setdefault("propertyNames", {}))
        if node["additionalProperties"] is True:
            node["additionalProperties"] = {"$ref": REF.format(model=JSON_VALUE)}


def _no_nul(string_schema: dict[str, Any]) -> None:
    """Give a string schema the NUL-free pattern, beside its own if that admits NUL."""
    own = string_schema.get("pattern")
    if own is None:
        string_schema["pattern"] = NO_NUL
    elif _admits_nul(own):
        string_schema.setdefault("allOf", []).append({"pattern": NO_NUL})


def _admits_nul(pattern: str) -> bool:
    """Whether a string holding NUL can match ``pattern`` (tried on a few shapes)."""
    compiled = re.compile(pattern)
    return any(compiled.search(text) for text in ("\x00", "a\x00", "\x00a", "a\x00a"))
