"""Watch tokens: short-lived, HMAC-signed grants to watch one task or one room.

A token is ``<payload>.<signature>``, both base64url without padding. The payload is
compact JSON: ``{"v": 1, "k": key id, "o": owner or null (admin), "s": scope,
"exp": unix seconds}`` where the scope is ``"task:<id>"`` or ``"room:<id>"``. The
signature is HMAC-SHA256 over the payload's base64 text with a key derived from the
server secret. Pure functions: the clock is an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

#: Longest lifetime a caller may ask for, and the default.
MAX_TTL_SECONDS = 86_400
DEFAULT_TTL_SECONDS = 900
#: Tokens longer than this are refused unread.
MAX_TOKEN_LENGTH = 2048
_VERSION = 1


class TokenError(ValueError):
    """The token is malformed, forged, tampered with or expired (the reason says which)."""


@dataclass(frozen=True, slots=True)
class WatchGrant:
    """What a valid token allows: watching ``scope`` as ``owner`` (None: any owner)."""

    key_id: str
    owner: str | None
    scope: str
    expires_at: float


def task_scope(task_id: str) -> str:
    """The scope string of a task."""
    return f"task:{task_id}"


def room_scope(room_id: str) -> str:
    """The scope string of a room."""
    return f"room:{room_id}"


def sign(grant: WatchGrant, key: bytes) -> str:
    """Encode and sign ``grant``."""
    claims = {
        "v": _VERSION,
        "k": grant.key_id,
        "o": grant.owner,
        "s": grant.scope,
        "exp": int(grant.expires_at),
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(payload, key))}"


def verify(token: str, key: bytes, now: float) -> WatchGrant:
    """Check the signature and expiry of ``token`` and return its grant.

    Raises:
        TokenError: malformed, bad signature, or expired.
    """
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise TokenError("malformed token")
    payload, signature = token.split(".")
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(payload, key)):
        raise TokenError("bad token signature")
    try:
        claims: Any = json.loads(_unb64(payload))
    except ValueError:
        raise TokenError("malformed token") from None
    if not (
        isinstance(claims, dict)
        and claims.get("v") == _VERSION
        and isinstance(claims.get("k"), str)
        and (claims.get("o") is None or isinstance(claims.get("o"), str))
        and isinstance(claims.get("s"), str)
        and isinstance(claims.get("exp"), int)
    ):
        raise TokenError("malformed token")
    if claims["exp"] <= now:
        raise TokenError("token expired")
    return WatchGrant(claims["k"], claims["o"], claims["s"], float(claims["exp"]))


def _mac(payload: str, key: bytes) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not base64url") from exc
