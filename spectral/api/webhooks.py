"""Webhook subscriptions and their deliveries (``/webhooks``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator
from quart import Quart

from spectral import keys
from spectral.api.context import Principal, principal, require_write
from spectral.api.models import Body, Query
from spectral.api.rest import parse_body, parse_query
from spectral.errors import ApiError
from spectral.state import ServerState
from spectral.webhooks import guard
from spectral.webhooks.service import WebhookService
from spectral.webhooks.store import Webhook

Subscription = Literal["progress", "completed", "failed", "canceled", "all"]
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

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _check_url(value)


class UpdateWebhook(Body):
    """``PUT /webhooks/{id}``: any of url, eventType, description, taskIdPrefix, active."""

    url: str | None = None
    event_type: Subscription | None = Field(None, alias="eventType")
    description: Description | None = None
    task_id_prefix: Prefix | None = Field(None, alias="taskIdPrefix")
    active: bool | None = None

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
}


def register(app: Quart, state: ServerState) -> None:
    """Add the webhook endpoints to ``app``."""

    def service() -> WebhookService:
        if state.webhooks is None:
            raise ApiError(503, "UNAVAILABLE", "webhooks are not running")
        return state.webhooks

    def find(who: Principal, webhook_id: str) -> Webhook:
        webhook = None
        if _WEBHOOK_ID.match(webhook_id):
            webhook = service().store.get(webhook_id, who.owner_filter)
        if webhook is None:
            raise ApiError(404, "WEBHOOK_NOT_FOUND", f"no webhook with id {webhook_id!r}")
        return webhook

    async def vet(url: str) -> None:
        try:
            await guard.vet(url, allow_private=state.settings.webhook_allow_private)
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

    @app.get("/webhooks")
    async def list_webhooks() -> dict[str, Any]:
        """The caller's webhooks (an admin's: every owner's, or ``?owner=``)."""
        who = principal()
        require_write(who, "manage webhooks")
        owner = parse_query(ListQuery).owner if who.is_admin else who.owner
        return {"webhooks": [w.public() for w in service().store.list(owner)]}

    @app.post("/webhooks")
    async def create_webhook() -> tuple[dict[str, Any], int]:
        """Subscribe a URL; the signing secret is in this answer only."""
        who = principal()
        require_write(who, "manage webhooks")
        body = await parse_body(CreateWebhook)
        owner = body.owner or who.owner
        if owner != who.owner and not who.is_admin:
            raise ApiError(403, "FORBIDDEN", "only an admin key may create another owner's webhook")
        await vet(body.url)
        webhook = service().store.create(
            owner, body.url, body.event_type, body.description, body.task_id_prefix
        )
        return {**webhook.public(), "secret": webhook.secret}, 201

    @app.get("/webhooks/<webhook_id>")
    async def get_webhook(webhook_id: str) -> dict[str, Any]:
        """One webhook (never its secret)."""
        who = principal()
        require_write(who, "manage webhooks")
        return find(who, webhook_id).public()

    @app.put("/webhooks/<webhook_id>")
    async def update_webhook(webhook_id: str) -> dict[str, Any]:
        """Change a webhook's url, eventType, description, taskIdPrefix or active flag."""
        who = principal()
        require_write(who, "manage webhooks")
        webhook = find(who, webhook_id)
        body = await parse_body(UpdateWebhook)
        changes = {
            _COLUMNS[name]: getattr(body, name)
            for name in body.model_fields_set
            if name in _COLUMNS
        }
        for column in ("url", "event_type", "active"):
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
                "body: send at least one of url, eventType, description, taskIdPrefix, active",
                [{"field": "body", "message": "nothing to change"}],
            )
        if "url" in changes:
            await vet(changes["url"])
        updated = service().store.update(webhook.id, changes)
        if updated is None:
            raise ApiError(404, "WEBHOOK_NOT_FOUND", f"no webhook with id {webhook_id!r}")
        if changes.get("active"):
            service().deliverer.wake()
        return updated.public()

    @app.delete("/webhooks/<webhook_id>")
    async def delete_webhook(webhook_id: str) -> dict[str, Any]:
        """Remove a webhook and its deliveries."""
        who = principal()
        require_write(who, "manage webhooks")
        service().store.delete(find(who, webhook_id).id)
        return {"success": True}

    @app.get("/webhooks/<webhook_id>/deliveries")
    async def deliveries(webhook_id: str) -> dict[str, Any]:
        """The webhook's latest deliveries, newest first, with every attempt."""
        who = principal()
        require_write(who, "manage webhooks")
        webhook = find(who, webhook_id)
        limit = parse_query(DeliveriesQuery).limit
        return {"deliveries": service().store.deliveries(webhook.id, limit)}

    @app.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver")
    async def redeliver(webhook_id: str, delivery_id: str) -> tuple[dict[str, Any], int]:
        """Try a delivery again at once (a dead one included)."""
        who = principal()
        require_write(who, "manage webhooks")
        webhook = find(who, webhook_id)
        if not _DELIVERY_ID.match(delivery_id) or not service().store.redeliver(
            webhook.id, delivery_id
        ):
            raise ApiError(404, "DELIVERY_NOT_FOUND", f"no delivery with id {delivery_id!r}")
        service().deliverer.wake()
        return {"success": True, "deliveryId": delivery_id}, 202
