"""Inbound integrations (``/integrations``) and their callbacks (``/callbacks/{id}``).

The HTTP side only: parse, authorize, forward. What a callback does is in
:mod:`spectral.integrations.service`; roles and isolation mirror webhooks (a reader
may not manage them; another owner's integration is 404).
"""

from __future__ import annotations

import re
from collections.abc import Mapping as CollectionsMapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from spectral.access import keys
from spectral.api.call import Call, Result
from spectral.api.context import require_write
from spectral.api.models import Body, Query
from spectral.errors import ApiError
from spectral.integrations import paths
from spectral.integrations.mapping import Mapping, Step
from spectral.integrations.service import IntegrationService
from spectral.integrations.store import Integration
from spectral.integrations.verify import HMAC_SHA256, STANDARD

#: The HMAC header when none is named.
DEFAULT_HEADER = "X-Signature"
#: Most provider statuses one integration maps.
MAX_STATUSES = 100

_INTEGRATION_ID = re.compile(r"^int_[0-9a-f]{16}$")


def _path(value: str) -> str:
    try:
        paths.parse(value)
    except paths.PathSyntaxError as error:
        raise ValueError(str(error)) from None
    return value


DottedPath = Annotated[
    str,
    StringConstraints(max_length=paths.MAX_LENGTH, pattern=paths.PATTERN),
    AfterValidator(_path),
    Field(description="a dotted path into the payload, e.g. `data.object.id` or `items.0.id`"),
]
HeaderName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"),
    Field(description="an HTTP header name"),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ProviderStatus = Annotated[str, StringConstraints(min_length=1, max_length=100)]
StepName = Literal["initialized", "processing", "completed", "failed"]
StatusMap = Annotated[
    dict[ProviderStatus, StepName],
    Field(
        min_length=1,
        max_length=MAX_STATUSES,
        description="provider status → `initialized`, `processing`, `completed` or `failed`",
    ),
]
Owner = Annotated[str, StringConstraints(pattern=keys.OWNER_PATTERN)]


class CreateIntegration(Body):
    """``POST /integrations``."""

    name: Name
    signing: Literal["standard-webhooks", "hmac-sha256"]
    header: HeaderName | None = Field(
        None,
        description="hmac-sha256: the signature's header (default "
        f"{DEFAULT_HEADER}); ignored for standard-webhooks",
    )
    external_id_path: DottedPath = Field(alias="externalIdPath")
    status_path: DottedPath = Field(alias="statusPath")
    status_map: StatusMap = Field(alias="statusMap")
    progress_path: DottedPath | None = Field(None, alias="progressPath")
    error_path: DottedPath | None = Field(None, alias="errorPath")
    #: Admins only: whose tasks the integration drives (default: the key's owner).
    owner: Owner | None = None


class UpdateIntegration(Body):
    """``PUT /integrations/{id}``: any of the mapping's fields, ``name``, the headers.

    Only ``progressPath`` and ``errorPath`` may be null (which clears them); a field
    left out is left as it is.
    """

    # A default of None on a non-null type: absent is fine, an explicit null is a 400
    # naming the field, and the document says so (no null in the type).
    name: Name = None  # type: ignore[assignment]
    header: HeaderName = None  # type: ignore[assignment]
    external_id_path: DottedPath = Field(None, alias="externalIdPath")  # type: ignore[assignment]
    status_path: DottedPath = Field(None, alias="statusPath")  # type: ignore[assignment]
    status_map: StatusMap = Field(None, alias="statusMap")  # type: ignore[arg-type]
    progress_path: DottedPath | None = Field(None, alias="progressPath")
    error_path: DottedPath | None = Field(None, alias="errorPath")


class ListQuery(Query):
    """``GET /integrations``: admins may pick one owner."""

    owner: Owner | None = None


class CallbackBody(BaseModel):
    """``POST /callbacks/{integrationId}``: the provider's own JSON object, read as
    the integration maps it (its raw bytes are what the signature covers)."""

    model_config = ConfigDict(extra="allow")


#: Body field → column, for updates.
_COLUMNS = {
    "name": "name",
    "header": "header",
    "external_id_path": "external_id_path",
    "status_path": "status_path",
    "status_map": "status_map",
    "progress_path": "progress_path",
    "error_path": "error_path",
}
_HMAC_ONLY = ("header",)


def _service(call: Call) -> IntegrationService:
    if call.state.integrations is None:
        raise ApiError(503, "UNAVAILABLE", "integrations are not running")
    return call.state.integrations


async def _find(call: Call) -> Integration:
    integration_id = call.params["id"]
    integration = None
    if _INTEGRATION_ID.match(integration_id):
        integration = await _service(call).store.get(integration_id, call.who.owner_filter)
    if integration is None:
        raise ApiError(404, "INTEGRATION_NOT_FOUND", f"no integration with id {integration_id!r}")
    return integration


def _steps(status_map: CollectionsMapping[str, str]) -> dict[str, Step]:
    return {status: Step(step) for status, step in status_map.items()}


async def list_integrations(call: Call, query: ListQuery) -> dict[str, Any]:
    """The caller's integrations (an admin's: every owner's, or ``?owner=``)."""
    who = call.who
    require_write(who, "manage integrations")
    owner = query.owner if who.is_admin else who.owner
    return {"integrations": [i.public() for i in await _service(call).store.list(owner)]}


async def create_integration(call: Call, body: CreateIntegration) -> dict[str, Any]:
    """Register an integration; its secret is in this answer only."""
    who = call.who
    require_write(who, "manage integrations")
    owner = body.owner or who.owner
    if owner != who.owner and not who.is_admin:
        raise ApiError(403, "FORBIDDEN", "only an admin key may create another owner's integration")
    header = body.header
    if body.signing == STANDARD:
        header = None  # its headers are the standard's own
    else:
        assert body.signing == HMAC_SHA256
        header = header or DEFAULT_HEADER
    mapping = Mapping(
        body.external_id_path, body.status_path, _steps(body.status_map), body.progress_path,
        body.error_path,
    )  # fmt: skip
    integration = await _service(call).store.create(owner, body.name, body.signing, header, mapping)
    return {**integration.public(), "secret": integration.secret}


async def get_integration(call: Call, _: None) -> dict[str, Any]:
    """One integration (never its secret)."""
    require_write(call.who, "manage integrations")
    return (await _find(call)).public()


async def update_integration(call: Call, body: UpdateIntegration) -> dict[str, Any]:
    """Change an integration's name, mapping or (HMAC) headers."""
    require_write(call.who, "manage integrations")
    integration = await _find(call)
    changes: dict[str, Any] = {
        _COLUMNS[name]: getattr(body, name) for name in body.model_fields_set if name in _COLUMNS
    }
    if integration.signing == STANDARD:
        for name in _HMAC_ONLY:
            changes.pop(name, None)  # its headers are the standard's own
    if not changes:
        return integration.public()
    if "status_map" in changes:
        changes["status_map"] = _steps(changes["status_map"])
    updated = await _service(call).store.update(integration.id, changes)
    if updated is None:
        raise ApiError(404, "INTEGRATION_NOT_FOUND", f"no integration with id {integration.id!r}")
    return updated.public()


async def delete_integration(call: Call, _: None) -> dict[str, Any]:
    """Remove an integration (its callback URL answers 404 from now on)."""
    require_write(call.who, "manage integrations")
    integration = await _find(call)
    await _service(call).store.delete(integration.id)
    return {"success": True}


async def callback(call: Call, _: None) -> Result:
    """A provider's callback: no API key; the signature is checked by the service."""
    return await _service(call).receive(call, call.params["integrationId"])
