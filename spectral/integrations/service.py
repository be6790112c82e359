"""Applying a provider's callback: verify, read, and drive the task through its operations.

Theory of operation
-------------------
A callback names its integration in the path. The signature is checked against the
raw body before anything else is looked at (401 otherwise, and nothing changes).
The delivery's key is then the Standard Webhooks message id, or for HMAC the
body's SHA-256 (only the body is signed). Under a lock of
(integration, delivery key), a delivery processed before is answered from its
record (``replayed: true``) and not applied again; otherwise its payload is read
(:mod:`spectral.integrations.mapping`), applied through the same task operations as
the REST API (:mod:`spectral.api.procedures`: the task's actor, the external id
reservation) acting as a service key of the integration's owner, and its answer
recorded. The task's actor also records the delivery in the task's file with the
change itself (the ``Idempotency-Key`` mechanism), so that a crash between the two
commits cannot make a retry apply it twice. Only applied (200) deliveries are
recorded: a refused one changed nothing, so the provider's retry is judged afresh.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from spectral.api import idempotency, models, procedures
from spectral.api.call import Call, Once, Result
from spectral.api.context import Principal
from spectral.errors import ApiError
from spectral.integrations import mapping, verify
from spectral.integrations.mapping import Delivery, PayloadError, Step
from spectral.integrations.store import Integration, IntegrationStore
from spectral.locks import KeyedLocks
from spectral.tasks.actor import Read

#: Longest delivery key kept as sent; a longer one is kept as its digest.
MAX_DELIVERY_ID = 255
#: A task's status once a ``completed`` or ``failed`` delivery has been applied.
_TERMINAL = {Step.COMPLETED: "success", Step.FAILED: "failed"}


class IntegrationService:
    """The integrations' store and the callback path.

    Args:
        store: the integration tables.
        clock: wall-clock seconds (signature timestamps).
    """

    def __init__(self, store: IntegrationStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        #: Concurrent copies of one delivery run one after another.
        self._locks = KeyedLocks()

    def delivery_id(self, integration: Integration, header: verify.Headers, body: bytes) -> str:
        """Verify the request's signature; its delivery key.

        Raises:
            ApiError: 401 ``SIGNATURE_INVALID`` naming the header at fault.
        """
        try:
            if integration.signing == verify.STANDARD:
                found = verify.verify_standard(integration.secret, header, body, self.clock())
            else:
                assert integration.header is not None
                verify.verify_hmac(integration.secret, integration.header, header, body)
                # Only the body is signed: a delivery id header could be changed by whoever
                # captured a signed body, so the body itself identifies the delivery.
                found = verify.body_digest(body)
        except verify.SignatureError as error:
            raise ApiError(401, "SIGNATURE_INVALID", str(error)) from None
        if len(found) > MAX_DELIVERY_ID:
            found = verify.body_digest(found.encode())
        return found

    async def receive(self, call: Call, integration_id: str) -> Result:
        """Verify, then apply once, the callback in ``call.request``."""
        integration = await self.store.get(integration_id)
        if integration is None:
            raise ApiError(
                404, "INTEGRATION_NOT_FOUND", f"no integration with id {integration_id!r}"
            )
        body = call.request.body
        delivery_id = self.delivery_id(integration, call.request.header, body)
        async with self._locks.hold((integration.id, delivery_id)):
            recorded = await self.store.recorded(integration.id, delivery_id)
            if recorded is not None:
                return Result({**recorded.answer, "replayed": True}, status=recorded.status)
            delivery = _read(integration, body)
            once = Once(
                idempotency.task_key(integration.owner, f"callback:{integration.id}:{delivery_id}"),
                verify.body_digest(body),
            )
            answer = await self._apply(call, integration, delivery, once)
            answer = {"deliveryId": delivery_id, **answer, "replayed": False}
            await self.store.record(integration.id, delivery_id, 200, answer)
            return Result(answer)

    async def _apply(
        self, call: Call, integration: Integration, delivery: Delivery, once: Once
    ) -> dict[str, Any]:
        owner = integration.owner
        # The task records the delivery with the change (as it does an Idempotency-Key),
        # so a retry after a crash between that commit and the registry's record is
        # answered from the task's file, not applied twice.
        acting = replace(
            call, who=Principal(f"integration:{integration.id}", owner, "service"), once=once
        )
        ids = call.state.external_ids
        assert ids is not None, "the server sets external_ids"
        found = await ids.find(delivery.external_id, owner)
        task_id = found[0][1] if found else None
        applied = True
        if delivery.step is Step.INITIALIZED:
            if task_id is None:
                task_id, task, applied = await _create(acting, delivery, integration)
            else:
                task, applied = await _read_task(acting, task_id), False
        else:
            if task_id is None:
                raise ApiError(
                    404,
                    "TASK_NOT_FOUND",
                    f"no task of this owner has externalId {delivery.external_id!r}",
                )
            command = mapping.command(delivery, integration.name)
            assert command is not None
            try:
                result = await procedures.call_task(
                    acting, task_id, procedures.mutate(command, acting)
                )
                task = result.task
            except ApiError as error:
                # The same end twice (a provider resending "completed" under a new id)
                # is not a conflict; anything else on a finished task is.
                if error.code != "TASK_TERMINAL" or delivery.step not in _TERMINAL:
                    raise
                task = await _read_task(acting, task_id)
                if task["status"] != _TERMINAL[delivery.step]:
                    raise
                applied = False
        return {
            "success": True,
            "integrationId": integration.id,
            "externalId": delivery.external_id,
            "providerStatus": delivery.provider_status,
            "step": str(delivery.step),
            "applied": applied,
            "taskId": task_id,
            "task": task,
        }


def _read(integration: Integration, body: bytes) -> Delivery:
    try:
        payload = json.loads(body)
    except ValueError:
        raise ApiError(400, "INVALID_JSON", "the body is not valid JSON") from None
    try:
        return mapping.read(integration.mapping, payload)
    except PayloadError as error:
        details = [{"field": error.field, "message": error.message}]
        raise ApiError(error.status, error.code, str(error), details) from None


async def _read_task(call: Call, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = await procedures.call_task(call, task_id, Read(call.who.owner))
    return task


async def _create(
    call: Call, delivery: Delivery, integration: Integration
) -> tuple[str, dict[str, Any], bool]:
    """Create the task of ``delivery`` (pending): (task id, task, whether it was created)."""
    task_id = "cb_" + secrets.token_hex(12)
    try:
        body = models.CreateTask.model_validate(
            {"taskId": task_id, "externalId": delivery.external_id}, strict=True
        )
    except ValidationError:
        path = integration.mapping.external_id_path
        raise ApiError(
            400, "CALLBACK_PATH_INVALID", f"{path}: not a valid external id (externalIdPath)",
            [{"field": path, "message": "not a valid external id"}],
        ) from None  # fmt: skip
    try:
        result = await procedures.create(call, body)
    except ApiError as error:
        if error.code != "EXTERNAL_ID_EXISTS":
            raise
        # A concurrent delivery of another id created it first: the same outcome.
        ids = call.state.external_ids
        assert ids is not None
        found = await ids.find(delivery.external_id, call.who.owner)
        if not found:
            raise
        existing = found[0][1]
        return existing, await _read_task(call, existing), False
    return task_id, result.payload["task"], True
