"""Webhook subscriptions and their deliveries (``/webhooks``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from spectral.access import keys
from spectral.api.call import Call
from spectral.api.context import require_write
from spectral.api.models import Body, Query
from spectral.errors import ApiError
from spectral.webhooks import guard
from spectral.webhooks.service import WebhookService
from spectral.webhooks.store import Webhook

Subscription = Literal["progress", "completed", "failed", "canceled", "all"]
#: The bodies' shape (spectral/webhooks/payload.py FORMATS; docs/api.md, "Webhooks").
Format = Literal["spectral", "seed-jobs"]
Description = Annotated[str, StringConstraints(max_length=500)]
Prefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Owner = Annotated[str, StringConstraints(pattern=keys.OWNER_PATTERN)]
#: Longest target URL accepted.
MAX_URL_LENGTH = 2048

_WEBHOOK_ID = re.compile(r"^wh_[0-9a-f]{16}$")
_DELIVERY_ID = re.compile(r"^msg_[0-9a-f]{24}$")


def _check_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    try:
        guard.url_host(value)
    except ValueError as error:
        raise ValueError(str(error)) from None
    return value


class CreateWebhook(Body):
    """``POST /webhooks``."""

    url: str
    event_type: Subscription = Field(alias="eventType")
    description: Description | None = None
    task_id_prefix: Prefix | None = Field(None, alias="taskIdPrefix")
    #: Admins only: whose tasks the webhook receives (default: the key's owner).
    owner: Owner | None = None
    format: Format = "spectral"

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _check_url(value)


class UpdateWebhook(Body):
    """``PUT /webhooks/{id}``: any of url, eventType, description, taskIdPrefix, active,
    format."""

    url: str | None = None
    event_type: Subscription | None = Field(None, alias="eventType")
    description: Description | None = None
    task_id_prefix: Prefix | None = Field(None, alias="taskIdPrefix")
    active: bool | None = None
    format: Format | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


class DeliveriesQuery(Query):
    """``GET /webhooks/{id}/deliveries``."""

    limit: int = Field(20, ge=1, le=100)


class ListQuery(Query):
    """``GET /webhooks``: admins may pick one owner."""

    owner: Owner | None = None


#: Body field → column, for updates.
_COLUMNS = {
    "url": "url",
    "event_type": "event_type",
    "description": "description",
    "task_id_prefix": "task_id_prefix",
    "active": "active",
    "format": "format",
}


def _service(call: Call) -> WebhookService:
    if call.state.webhooks is None:
        raise ApiError(503, "UNAVAILABLE", "webhooks are not running")
    return call.state.webhooks


async def _find(call: Call) -> Webhook:
    webhook_id = call.params["id"]
    webhook = None
    if _WEBHOOK_ID.match(webhook_id):
        webhook = await _service(call).store.get(webhook_id, call.who.owner_filter)
    if webhook is None:
        raise ApiError(404, "WEBHOOK_NOT_FOUND", f"no webhook with id {webhook_id!r}")
    return webhook


async def _vet(call: Call, url: str) -> None:
    try:
        await guard.vet(url, allow_private=call.state.settings.webhook_allow_private)
    except guard.ForbiddenUrlError as error:
        raise ApiError(
            400,
            "WEBHOOK_URL_FORBIDDEN",
            f"url: {error}",
            [{"field": "url", "message": str(error)}],
        ) from None
    except guard.UnresolvableUrlError as error:
        raise ApiError(
            400,
            "WEBHOOK_URL_UNRESOLVABLE",
            f"url: {error}",
            [{"field": "url", "message": str(error)}],
        ) from None


async def list_webhooks(call: Call, query: ListQuery) -> dict[str, Any]:
    """The caller's webhooks (an admin's: every owner's, or ``?owner=``)."""
    who = call.who
    require_write(who, "manage webhooks")
    owner = query.owner if who.is_admin else who.owner
    return {"webhooks": [w.public() for w in await _service(call).store.list(owner)]}


async def create_webhook(call: Call, body: CreateWebhook) -> dict[str, Any]:
    """Subscribe a URL; the signing secret is in this answer only."""
    who = call.who
    require_write(who, "manage webhooks")
    owner = body.owner or who.owner
    if owner != who.owner and not who.is_admin:
        raise ApiError(403, "FORBIDDEN", "only an admin key may create another owner's webhook")
    await _vet(call, body.url)
    webhook = await _service(call).store.create(
        owner, body.url, body.event_type, body.description, body.task_id_prefix, body.format
    )
    return {**webhook.public(), "secret": webhook.secret}


async def get_webhook(call: Call, _: None) -> dict[str, Any]:
    """One webhook (never its secret)."""
    require_write(call.who, "manage webhooks")
    return (await _find(call)).public()


async def update_webhook(call: Call, body: UpdateWebhook) -> dict[str, Any]:
    """Change a webhook's url, eventType, description, taskIdPrefix or active flag."""
    require_write(call.who, "manage webhooks")
    webhook = await _find(call)
    changes = {
        _COLUMNS[name]: getattr(body, name) for name in body.model_fields_set if name in _COLUMNS
    }
    for column in ("url", "event_type", "active", "format"):
        if column in changes and changes[column] is None:
            field = {"event_type": "eventType"}.get(column, column)
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"{field}: may not be null",
                [{"field": field, "message": "may not be null"}],
            )
    if not changes:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "body: send at least one of url, eventType, description, taskIdPrefix, active, format",
            [{"field": "body", "message": "nothing to change"}],
        )
    if "url" in changes:
        await _vet(call, changes["url"])
    service = _service(call)
    updated = await service.store.update(webhook.id, changes)
    if updated is None:
        raise ApiError(404, "WEBHOOK_NOT_FOUND", f"no webhook with id {webhook.id!r}")
    if changes.get("active"):
        service.deliverer.wake()
    return updated.public()


async def delete_webhook(call: Call, _: None) -> dict[str, Any]:
    """Remove a webhook and its deliveries."""
    require_write(call.who, "manage webhooks")
    webhook = await _find(call)
    await _service(call).store.delete(webhook.id)
    return {"success": True}


async def deliveries(call: Call, query: DeliveriesQuery) -> dict[str, Any]:
    """The webhook's latest deliveries, newest first, with every attempt."""
    require_write(call.who, "manage webhooks")
    webhook = await _find(call)
    return {"deliveries": await _service(call).store.deliveries(webhook.id, query.limit)}


async def redeliver(call: Call, _: None) -> dict[str, Any]:
    """Try a delivery again at once (a dead one included)."""
    require_write(call.who, "manage webhooks")
    webhook = await _find(call)
    delivery_id = call.params["deliveryId"]
    service = _service(call)
    if not _DELIVERY_ID.match(delivery_id) or not await service.store.redeliver(
        webhook.id, delivery_id
    ):
        raise ApiError(404, "DELIVERY_NOT_FOUND", f"no delivery with id {delivery_id!r}")
    service.deliverer.wake()
    return {"success": True, "deliveryId": delivery_id}
