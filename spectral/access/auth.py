"""Who is asking, and may they: API keys, JWTs, watch tokens, rate limits, watch-connection caps.

The HTTP layer calls :meth:`Authenticator.authenticate` once per request (and the
WebSocket front door once per connection) and gets a
:class:`~spectral.api.context.Principal` or an :class:`~spectral.errors.ApiError`
(401, or 429 with ``Retry-After``); a layer that receives a bare credential (Socket.IO's
``auth.token``) calls :meth:`Authenticator.authenticate_secret`. A JWT (when configured,
:mod:`spectral.access.jwts`) is accepted wherever a key is, and as ``?token=`` anywhere.
What each role may do is decided where the operation is (``context.require_write`` /
``require_admin``), so REST and RPC share it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spectral.access import tokens
from spectral.access.jwts import KEY_ID_PREFIX, JwtError, JwtVerifier, looks_like_jwt
from spectral.access.keys import KeyStore
from spectral.access.ratelimit import RateLimiter, retry_after_header
from spectral.api.context import ADMIN_OWNER, Principal
from spectral.errors import ApiError

#: Key id of the bootstrap admin key (``admin.key`` / ``SPECTRAL_ADMIN_KEY``).
BOOTSTRAP_KEY_ID = "bootstrap"


def credential(headers: Callable[[str], str | None]) -> str | None:
    """The API key sent as ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = headers("x-api-key")
    if key:
        return key.strip()
    authorization = headers("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def unauthenticated(message: str = "send a valid API key (X-API-Key)") -> ApiError:
    """The 401 answer."""
    return ApiError(401, "UNAUTHENTICATED", message)


@dataclass
class Authenticator:
    """Checks credentials against the bootstrap admin key and the key store.

    Args:
        keys: the stored API keys.
        admin_secret: the bootstrap admin key.
        token_key: the watch-token signing key.
        limiter: the per-key rate limiter (admins are never limited).
        watchers_per_key: open watch connections (WebSocket and SSE) per key; 0 = no cap.
        clock: wall-clock seconds.
        jwt: the JWT verifier, or None when JWTs are not accepted.
    """

    keys: KeyStore
    admin_secret: str
    token_key: bytes
    limiter: RateLimiter
    watchers_per_key: int = 1000
    clock: Callable[[], float] = time.time
    jwt: JwtVerifier | None = None
    _watching: dict[str, int] = field(default_factory=dict)

    async def authenticate(
        self,
        headers: Callable[[str], str | None],
        *,
        token: str | None = None,
        scope: str | None = None,
    ) -> Principal:
        """The principal of a request, rate limit applied.

        Args:
            headers: looks up a request header by lower-case name.
            token: a ``?token=`` value: a JWT on any route (when JWTs are configured), a
                watch token only where ``scope`` is given (watch routes).
            scope: the watch scope of the route (``task:<id>``), for watch tokens.

        Raises:
            ApiError: 401 (no, bad, revoked or out-of-scope credential), 429 (rate limited).
        """
        secret = credential(headers)
        if secret is not None:
            who = await self._from_secret(secret)
        elif token and self._is_jwt(token):
            who = self._from_jwt(token)
        elif token and scope is not None:
            who = await self._from_token(token, scope)
        else:
            raise unauthenticated(self._ask())
        self.check_rate(who)
        return who

    async def authenticate_secret(self, secret: str) -> Principal:
        """The principal of a bare credential (an API key or a JWT), rate limit applied.

        For transports that carry the credential outside HTTP headers, such as
        Socket.IO's ``auth.token``. Watch tokens are not accepted here: they are
        scoped to one route's task or room.

        Raises:
            ApiError: 401 (empty, bad, revoked or expired credential), 429 (rate limited).
        """
        secret = secret.strip()
        if not secret:
            raise unauthenticated(self._ask())
        who = await self._from_secret(secret)
        self.check_rate(who)
        return who

    def check_rate(self, who: Principal) -> None:
        """Take one request from the key's bucket; 429 when it is empty (admins exempt)."""
        if who.is_admin and who.scope is None:
            return
        wait = self.limiter.acquire(who.key_id, time.monotonic())
        if wait > 0:
            raise ApiError(
                429,
                "RATE_LIMITED",
                "too many requests for this key; slow down",
                headers={"Retry-After": retry_after_header(wait)},
            )

    def mint(self, who: Principal, scope: str, ttl_seconds: float) -> tuple[str, float]:
        """A watch token for ``scope`` on behalf of ``who``; returns it and its expiry.

        A token minted with a JWT expires no later than that JWT.
        """
        expires_at = float(int(self.clock() + ttl_seconds))
        if who.expires_at is not None:
            expires_at = min(expires_at, float(int(who.expires_at)))
        grant = tokens.WatchGrant(who.key_id, who.owner_filter, scope, expires_at)
        return tokens.sign(grant, self.token_key), expires_at

    def open_watch(self, who: Principal) -> bool:
        """Count one more watch connection for the key; False if it is at its cap."""
        capped = self.watchers_per_key and not who.is_admin
        if capped and self._watching.get(who.key_id, 0) >= self.watchers_per_key:
            return False
        self._watching[who.key_id] = self._watching.get(who.key_id, 0) + 1
        return True

    def close_watch(self, who: Principal) -> None:
        """A watch connection of the key ended."""
        left = self._watching.get(who.key_id, 0) - 1
        if left > 0:
            self._watching[who.key_id] = left
        else:
            self._watching.pop(who.key_id, None)

    def _is_jwt(self, secret: str) -> bool:
        return self.jwt is not None and looks_like_jwt(secret)

    def _ask(self) -> str:
        if self.jwt is None:
            return "send a valid API key (X-API-Key)"
        return "send a valid API key (X-API-Key) or JWT (Authorization: Bearer)"

    async def _from_secret(self, secret: str) -> Principal:
        # Shapes never overlap: keys are ``spk_…`` (no dot), JWTs three dotted segments.
        if self._is_jwt(secret):
            return self._from_jwt(secret)
        return await self._from_key(secret)

    def _from_jwt(self, token: str) -> Principal:
        assert self.jwt is not None
        try:
            identity = self.jwt.verify(token)
        except JwtError as error:
            raise unauthenticated(f"JWT refused: {error}") from None
        return Principal(
            identity.key_id, identity.owner, identity.role, expires_at=identity.expires_at
        )

    async def _from_key(self, secret: str) -> Principal:
        if hmac.compare_digest(secret.encode(), self.admin_secret.encode()):
            return Principal(BOOTSTRAP_KEY_ID, ADMIN_OWNER, "admin")
        key = await self.keys.authenticate(secret)
        if key is None:
            raise unauthenticated("the API key is not valid (unknown or revoked)")
        return Principal(key.id, key.owner, key.role)

    async def _from_token(self, token: str, scope: str) -> Principal:
        try:
            grant = tokens.verify(token, self.token_key, self.clock())
        except tokens.TokenError as error:
            raise unauthenticated(f"watch token refused: {error}") from None
        if grant.scope != scope:
            raise unauthenticated("watch token refused: it is for another task or room")
        if grant.key_id.startswith(KEY_ID_PREFIX):
            # Minted with a JWT: no stored key to revoke; valid until its own expiry (no
            # later than the JWT's), and only while this server accepts JWTs.
            if self.jwt is None:
                raise unauthenticated("watch token refused: JWTs are no longer accepted")
        elif grant.key_id != BOOTSTRAP_KEY_ID and not await self.keys.is_live(grant.key_id):
            raise unauthenticated("watch token refused: its key was revoked")
        if grant.owner is None:
            return Principal(grant.key_id, ADMIN_OWNER, "admin", scope=grant.scope)
        return Principal(grant.key_id, grant.owner, "reader", scope=grant.scope)
