"""Verifying a provider's signature over the raw body bytes. Pure: ``now`` is an argument.

Two schemes:

- **Standard Webhooks** (standardwebhooks.com): headers ``webhook-id``,
  ``webhook-timestamp`` (unix seconds) and ``webhook-signature``, a space-separated
  list of ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (a provider
  rotating its secret sends several); the key is the base64 part of the
  ``whsec_`` secret. A timestamp more than :data:`TOLERANCE_SECONDS` away from now,
  either way, is refused, so a captured request cannot be replayed later.
- **HMAC-SHA256**: the hex digest of the raw body, keyed with the secret's UTF-8
  bytes, in one named header, optionally prefixed ``sha256=`` (GitHub's form).

Every comparison is :func:`hmac.compare_digest`. A failure raises
:class:`SignatureError` with a reason safe to show the caller (it never holds the
expected value).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable

from spectral.webhooks.signing import new_secret as new_standard_secret
from spectral.webhooks.signing import secret_key

STANDARD = "standard-webhooks"
HMAC_SHA256 = "hmac-sha256"
#: Standard Webhooks' own default: five minutes either way.
TOLERANCE_SECONDS = 5 * 60
#: Signatures looked at in one header at most (a provider rotating keys sends two).
MAX_SIGNATURES = 8

Headers = Callable[[str], str | None]


class SignatureError(Exception):
    """The request is not signed with the integration's secret (answered 401)."""


def new_secret(signing: str) -> str:
    """A fresh secret: ``whsec_<base64 of 32 bytes>`` or, for HMAC, 64 hex digits."""
    if signing == STANDARD:
        return new_standard_secret()
    return secrets.token_hex(32)


def verify_standard(secret: str, headers: Headers, body: bytes, now: float) -> str:
    """Check a Standard Webhooks signature; return the message id (``webhook-id``).

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside the
            tolerance, or no ``v1`` signature matches.
    """
    message_id = _required(headers, "webhook-id")
    stamp = _required(headers, "webhook-timestamp")
    signatures = _required(headers, "webhook-signature")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("webhook-timestamp: not unix seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp: outside the 5 minute tolerance")
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    # Space-separated; two headers arrive joined by ", " (the front's rule).
    for candidate in signatures.split()[:MAX_SIGNATURES]:
        version, _, encoded = candidate.rstrip(",").partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, expected):
            return message_id
    raise SignatureError("webhook-signature: no v1 signature matches")


def sign_hmac(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` under ``secret`` (what a provider sends)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_hmac(secret: str, header: str, headers: Headers, body: bytes) -> None:
    """Check the hex HMAC-SHA256 of ``body`` in ``header`` (``sha256=`` prefix optional).

    Raises:
        SignatureError: the header is missing or its digest does not match.
    """
    given = _required(headers, header).strip()
    given = given.removeprefix("sha256=").lower()
    if not hmac.compare_digest(given.encode(), sign_hmac(secret, body).encode()):
        raise SignatureError(f"{header}: the HMAC-SHA256 of the body does not match")


def body_digest(body: bytes) -> str:
    """A delivery key for a provider that sends no delivery id: the body's SHA-256."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _required(headers: Headers, name: str) -> str:
    value = headers(name.lower())
    if not value:
        raise SignatureError(f"{name}: missing")
    return value
