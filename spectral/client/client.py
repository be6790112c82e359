"""``Client`` (blocking) and ``AsyncClient`` (coroutines; asyncio or trio): the server's
operations as methods, with exactly-once retries and a circuit breaker (docs/sdk.md).

Both send the requests that :mod:`spectral.client.calls` builds and apply the same rules
(:mod:`spectral.client.retry`); only the I/O differs (httpx's ``Client`` and
``AsyncClient``; waits with ``time.sleep`` and ``anyio.sleep``).
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from types import GenericAlias, MethodType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, get_args, overload

import anyio
import httpx

from spectral.api import schemas
from spectral.client import calls
from spectral.client.calls import Call
from spectral.client.errors import RateLimitedError, SpectralError, UnavailableError, error_for
from spectral.client.retry import RETRY_STATUSES, CircuitBreaker, RetryPolicy
from spectral.client.tracking import (
    DEFAULT_INTERVAL,
    AsyncTracker,
    Pending,
    Tracker,
    failure_text,
    outcome_of,
)
from spectral.client.watching import (
    asubscribe_room,
    awatch_task,
    credentials,
    subscribe_room,
    watch_task,
)

DEFAULT_URL = "http://127.0.0.1:8094"
#: Statuses after which a call that is not repeatable was surely not applied.
_NOT_APPLIED = frozenset({429, 503})

P = ParamSpec("P")
T = TypeVar("T")


class _Attempts(Generic[T]):
    """The retry loop's state for one logical call (shared by both clients)."""

    def __init__(self, owner: _Base, call: Call[T]) -> None:
        self.owner = owner
        self.call = call
        self.started = time.monotonic()
        self.attempt = 0

    def answer(self, response: httpx.Response) -> T | SpectralError:
        """The value of a 2xx answer; else the error to raise or retry on."""
        status = response.status_code
        if status in (502, 503, 504):
            self.owner.breaker.failure()
        else:
            self.owner.breaker.success()
        body = _json(response)
        if response.is_success:
            return self.call.read(body)
        error = error_for(status, body)
        if isinstance(error, RateLimitedError):
            error.retry_after = _retry_after(response)
        return error

    def lost(self, exc: httpx.TransportError) -> SpectralError:
        """The error for an attempt that got no answer."""
        self.owner.breaker.failure()
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return UnavailableError(0, "UNREACHABLE", f"no answer from {self.owner.base_url} ({why})")

    def wait(self, error: SpectralError, sent: bool) -> float | None:
        """Seconds before the next attempt, or None: give up and raise ``error``."""
        if error.status and error.status not in RETRY_STATUSES:
            return None
        if not self.call.repeatable:
            maybe_applied = sent and (error.status == 0 or error.status not in _NOT_APPLIED)
            if maybe_applied:
                return None
        retry_after = getattr(error, "retry_after", None)
        wait = self.owner.retry.next_delay(
            self.attempt, self.started, time.monotonic(), self.owner.rng, retry_after
        )
        self.attempt += 1
        return wait


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _sent(exc: httpx.TransportError) -> bool:
    """False when the request surely never reached the server."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class _Base:
    """Settings shared by both clients (see :class:`Client`)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("SPECTRAL_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SPECTRAL_API_KEY")
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.rng = rng or random.Random()

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": "spectral-client", **credentials(self.api_key, self.token)[0]}

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        headers = {"Idempotency-Key": call.idempotency_key} if call.mutating else {}
        params = dict(call.params or {})
        query_token = credentials(self.api_key, self.token)[1]
        if query_token:
            params["token"] = query_token
        return {
            "method": call.method,
            "url": call.path,
            "json": call.json,
            "params": params or None,
            "headers": headers,
        }


def _method(build: Callable[..., Call[Any]], owner: str, asynchronous: bool) -> Any:
    """``owner``'s method from a :mod:`calls` builder: same parameters, sent by ``_send``.

    Its signature and docstring are the builder's (``inspect.signature``, ``help()``),
    with ``self`` and the answer's type (a coroutine's for ``AsyncClient``).
    """

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._send(build(*args, **kwargs))

    functools.update_wrapper(method, build)
    method.__module__ = __name__
    method.__qualname__ = f"{owner}.{build.__name__}"
    signature = inspect.signature(build, eval_str=True)
    (answer,) = get_args(signature.return_annotation)  # Call[answer]
    answer = None if answer is type(None) else answer
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]  # read by inspect
        parameters=[self_, *signature.parameters.values()],
        return_annotation=GenericAlias(Coroutine, (Any, Any, answer)) if asynchronous else answer,
    )
    return method


class _Operation(Generic[P, T]):
    """A method of both clients from a :mod:`calls` builder (``Callable[P, Call[T]]``).

    ``Client().name(...)`` sends the builder's call and returns its answer (a ``T``);
    ``AsyncClient().name(...)`` returns a coroutine of it. At run time it is a plain
    function per client; for type checkers ``__get__`` gives the builder's exact
    parameters and the answer's type.
    """

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._sync = _method(build, "Client", asynchronous=False)
        self._async = _method(build, "AsyncClient", asynchronous=True)

    @overload
    def __get__(
        self, obj: None, owner: type[AsyncClient]
    ) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, obj: None, owner: type[Client]) -> Callable[Concatenate[Client, P], T]: ...
    @overload
    def __get__(
        self, obj: AsyncClient, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any] | None = None) -> Callable[P, T]: ...
    def __get__(self, obj: _Base | None, owner: type[Any] | None = None) -> Any:
        cls = owner if owner is not None else type(obj)
        function = self._async if issubclass(cls, AsyncClient) else self._sync
        return function if obj is None else MethodType(function, obj)


class _Operations:
    """Every operation, once, for both clients (``calls.OPERATIONS`` lists them)."""

    create_task = _Operation(calls.create_task)
    get_task = _Operation(calls.get_task)
    get_task_by_external_id = _Operation(calls.get_task_by_external_id)
    update_progress = _Operation(calls.update_progress)
    add_event = _Operation(calls.add_event)
    complete = _Operation(calls.complete)
    fail = _Operation(calls.fail)
    cancel = _Operation(calls.cancel)
    delete_task = _Operation(calls.delete_task)
    history = _Operation(calls.history)
    list_tasks = _Operation(calls.list_tasks)
    children = _Operation(calls.children)
    batch_update_progress = _Operation(calls.batch_update_progress)
    broadcast = _Operation(calls.broadcast)
    room_health = _Operation(calls.room_health)
    list_webhooks = _Operation(calls.list_webhooks)
    create_webhook = _Operation(calls.create_webhook)
    get_webhook = _Operation(calls.get_webhook)
    update_webhook = _Operation(calls.update_webhook)
    delete_webhook = _Operation(calls.delete_webhook)
    deliveries = _Operation(calls.deliveries)
    redeliver = _Operation(calls.redeliver)
    list_integrations = _Operation(calls.list_integrations)
    create_integration = _Operation(calls.create_integration)
    get_integration = _Operation(calls.get_integration)
    update_integration = _Operation(calls.update_integration)
    delete_integration = _Operation(calls.delete_integration)
    create_watch_token = _Operation(calls.create_watch_token)
    create_key = _Operation(calls.create_key)
    list_keys = _Operation(calls.list_keys)
    revoke_key = _Operation(calls.revoke_key)
    health = _Operation(calls.health)
    whoami = _Operation(calls.whoami)


class _Flusher(threading.Thread):
    """The blocking client's background sender of coalesced progress (see ``track``)."""

    def __init__(self, client: Client, interval: float) -> None:
        super().__init__(name="spectral-progress", daemon=True)
        self.client = client
        self.interval = interval
        self.wakeup = threading.Event()
        #: Held while sending, so a task's progress, log lines and end keep their order.
        self.send_lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        """Flush whenever progress is pending, at most every ``interval`` seconds."""
        last = 0.0
        while True:
            self.wakeup.wait()
            delay = last + self.interval - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            if self._stopping.is_set():
                return  # stop() sends what is left
            self.wakeup.clear()
            self.flush()
            last = time.monotonic()

    def flush(self) -> None:
        """Send everything pending now, in batches; keep what could not be sent."""
        with self.send_lock:
            for _ in range(self.client._pending.batches()):
                if not (items := self.client._pending.take()):
                    return
                try:
                    self.client.batch_update_progress(items)
                except SpectralError:
                    self.client._pending.restore(items)  # tried again at the next flush
                    return

    def stop(self) -> None:
        """End the thread, then send what is pending."""
        self._stopping.set()
        self.wakeup.set()
        self.join()
        self.flush()


class Client(_Base, _Operations):
    """A blocking client of one spectral server.

    Args:
        base_url: the server (default ``$SPECTRAL_URL``, else http://127.0.0.1:8094).
        api_key: sent as ``X-API-Key`` (default ``$SPECTRAL_API_KEY``).
        token: instead of a key, a JWT (sent as ``Authorization: Bearer``; every call its
            role allows, when the server accepts JWTs) or a watch token (sent as
            ``?token=``; reads of its one task).
        timeout: seconds per attempt.
        retry: the retry budget (:class:`RetryPolicy`: 30 s, full jitter).
        breaker: the circuit breaker (:class:`CircuitBreaker`: opens after 5 failures).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, headers=self._headers()
        )
        self._pending = Pending()
        self._flusher_lock = threading.Lock()
        self._flusher_thread: _Flusher | None = None

    def _send(self, call: Call[T]) -> T:
        attempts = _Attempts(self, call)
        while True:
            if attempts.attempt == 0:  # the breaker refuses new calls, not retries
                self.breaker.before()
            try:
                response = self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                error, sent = attempts.lost(exc), _sent(exc)
            else:
                answer = attempts.answer(response)
                if not isinstance(answer, SpectralError):
                    return answer
                error, sent = answer, True
            wait = attempts.wait(error, sent)
            if wait is None:
                raise error
            time.sleep(wait)

    def iter_tasks(self, **filters: Any) -> Iterator[schemas.Task]:
        """Every task matching ``filters`` (as :meth:`list_tasks`), page after page."""
        page = 1
        while True:
            answer = self.list_tasks(page=page, **filters)
            yield from answer.tasks
            if page >= answer.pagination.pages:
                return
            page += 1

    def watch(
        self, task_id: str, since: int | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """The task's messages (snapshot, then every change), resuming by itself after any
        disconnect, until its terminal message or deletion (docs/sdk.md, "Watching")."""
        return watch_task(
            self.base_url,
            task_id=task_id,
            api_key=self.api_key,
            token=self.token,
            since=since,
            **options,
        )

    def subscribe(
        self, room: str, since: int | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """A room's messages, resuming by itself after any disconnect (never ends)."""
        return subscribe_room(
            self.base_url,
            room_id=room,
            api_key=self.api_key,
            token=self.token,
            since=since,
            **options,
        )

    @contextmanager
    def track(
        self, task_id: str | None = None, *, interval: float = DEFAULT_INTERVAL, **create: Any
    ) -> Generator[Tracker, None, None]:
        """Create a task and report the ``with`` block's work as it (docs/sdk.md, "track").

        ``.progress()`` calls are coalesced (the latest value per task, sent at most
        every ``interval`` seconds by a background thread, many tasks in one batch). On
        leaving, pending progress is sent, then the task completes, fails with the
        exception's text, or is canceled (KeyboardInterrupt).
        """
        task = self.create_task(task_id, **create)
        flusher = self._flusher(interval)
        send_now = functools.partial(self._send_now, flusher, task.task_id)
        tracker = Tracker(task.task_id, self._pending, flusher.wakeup.set, send_now)
        try:
            yield tracker
        except BaseException as exc:
            self._finish(flusher, task.task_id, outcome_of(exc), failure_text(exc))
            raise
        self._finish(flusher, task.task_id, "complete", "")

    def _flusher(self, interval: float) -> _Flusher:
        with self._flusher_lock:
            if self._flusher_thread is None or not self._flusher_thread.is_alive():
                self._flusher_thread = _Flusher(self, interval)
                self._flusher_thread.start()
            return self._flusher_thread

    def _send_now(
        self, flusher: _Flusher, task_id: str, kind: str, values: Mapping[str, Any]
    ) -> schemas.Task:
        with flusher.send_lock:
            self._send_pending(task_id)
            if kind == "log":
                return self.add_event(task_id, values["message"])
            return self.add_event(task_id, "metadata updated", metadata=values)

    def _send_pending(self, task_id: str) -> None:
        for item in self._pending.take(task_id):
            self.update_progress(task_id, item["progress"], item.get("message"))

    def _finish(self, flusher: _Flusher, task_id: str, outcome: str, text: str) -> None:
        with flusher.send_lock:
            self._send_pending(task_id)
            if outcome == "complete":
                self.complete(task_id)
            elif outcome == "cancel":
                self.cancel(task_id)
            else:
                self.fail(task_id, text)

    def close(self) -> None:
        """Send pending progress, stop the background flusher, close the connections."""
        thread = self._flusher_thread
        if thread is not None:
            thread.stop()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Wakeups:
    """A re-armable event: ``set`` from plain code, ``wait`` from a task (anyio)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        """Wake the waiter (idempotent until it wakes)."""
        self._event.set()

    async def wait(self) -> None:
        """Wait until set, then re-arm."""
        await self._event.wait()
        self._event = anyio.Event()


class AsyncClient(_Base, _Operations):
    """:class:`Client`'s methods as coroutines, under asyncio or trio (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=self._headers()
        )
        self._pending = Pending()
        #: Held while sending progress, so a task's progress, logs and end keep their order.
        self._send_lock = anyio.Lock()

    async def _send(self, call: Call[T]) -> T:
        attempts = _Attempts(self, call)
        while True:
            if attempts.attempt == 0:  # the breaker refuses new calls, not retries
                self.breaker.before()
            try:
                response = await self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                error, sent = attempts.lost(exc), _sent(exc)
            else:
                answer = attempts.answer(response)
                if not isinstance(answer, SpectralError):
                    return answer
                error, sent = answer, True
            wait = attempts.wait(error, sent)
            if wait is None:
                raise error
            await anyio.sleep(wait)

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[schemas.Task]:
        """Every task matching ``filters`` (as :meth:`list_tasks`), page after page."""
        page = 1
        while True:
            answer = await self.list_tasks(page=page, **filters)
            for task in answer.tasks:
                yield task
            if page >= answer.pagination.pages:
                return
            page += 1

    def watch(
        self, task_id: str, since: int | None = None, **options: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`Client.watch` as an async iterator (asyncio or trio); close it with
        ``contextlib.aclosing`` if you leave the loop early."""
        return awatch_task(
            self.base_url,
            task_id=task_id,
            api_key=self.api_key,
            token=self.token,
            since=since,
            **options,
        )

    def subscribe(
        self, room: str, since: int | None = None, **options: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`Client.subscribe` as an async iterator (asyncio or trio)."""
        return asubscribe_room(
            self.base_url,
            room_id=room,
            api_key=self.api_key,
            token=self.token,
            since=since,
            **options,
        )

    @asynccontextmanager
    async def track(
        self, task_id: str | None = None, *, interval: float = DEFAULT_INTERVAL, **create: Any
    ) -> AsyncGenerator[AsyncTracker, None]:
        """:meth:`Client.track` for coroutines: the flusher is a task of this block, and a
        cancelled block cancels the task (asyncio or trio)."""
        task = await self.create_task(task_id, **create)
        wakeups = _Wakeups()
        send_now = functools.partial(self._send_now, task.task_id)
        tracker = AsyncTracker(task.task_id, self._pending, wakeups.set, send_now)
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._flush_loop, wakeups, interval)
            try:
                yield tracker
            except BaseException as exc:
                error = exc
            outcome = outcome_of(error, anyio.get_cancelled_exc_class())
            text = "" if error is None else failure_text(error)
            with anyio.CancelScope(shield=True):
                await self._finish(task.task_id, outcome, text)
            group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _flush_loop(self, wakeups: _Wakeups, interval: float) -> None:
        while True:
            await wakeups.wait()
            await anyio.sleep(interval)
            await self._flush()

    async def _flush(self) -> None:
        async with self._send_lock:
            for _ in range(self._pending.batches()):
                if not (items := self._pending.take()):
                    return
                try:
                    await self.batch_update_progress(items)
                except SpectralError:
                    self._pending.restore(items)  # tried again at the next flush
                    return

    async def _send_pending(self, task_id: str) -> None:
        for item in self._pending.take(task_id):
            await self.update_progress(task_id, item["progress"], item.get("message"))

    async def _send_now(self, task_id: str, kind: str, values: Mapping[str, Any]) -> schemas.Task:
        async with self._send_lock:
            await self._send_pending(task_id)
            if kind == "log":
                return await self.add_event(task_id, values["message"])
            return await self.add_event(task_id, "metadata updated", metadata=values)

    async def _finish(self, task_id: str, outcome: str, text: str) -> None:
        async with self._send_lock:
            await self._send_pending(task_id)
            if outcome == "complete":
                await self.complete(task_id)
            elif outcome == "cancel":
                await self.cancel(task_id)
            else:
                await self.fail(task_id, text)

    async def aclose(self) -> None:
        """Send pending progress and close the connections."""
        await self._flush()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
