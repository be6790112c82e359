"""JWT principals: tokens signed by the deployment's own identity provider (docs/api.md, "JWT").

A deployment configures one verification key: an HS256 secret, or a PEM public key
whose type fixes the algorithm (RSA → RS256, EC P-256 → ES256). Exactly that one
algorithm is accepted: the header's ``alg`` is compared with it before PyJWT checks
the signature (with ``algorithms=[that one]``), so ``alg: none`` and the key-confusion
attack (an HS256 token "signed" with the public key's PEM text) are refused by name.
PyJWT does every cryptographic step and the ``exp``/``nbf`` checks (wall clock, with
:data:`LEEWAY_SECONDS`); this module maps its claims onto a principal: the owner from
the configured claim, the role from ``role`` (``reader`` or ``service``; never admin).

A JWT is told apart from an API key (``spk_…``) and a watch token (two segments) by
its shape alone: three base64url segments (:func:`looks_like_jwt`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from spectral.access.keys import KeyRequestError, check_owner
from spectral.access.roles import Role

log = logging.getLogger(__name__)

#: Seconds of clock skew allowed between the issuer and this server on ``exp`` and ``nbf``.
LEEWAY_SECONDS = 5
#: The key id of a JWT principal is this prefix and its owner (stored key ids are hex).
KEY_ID_PREFIX = "jwt:"
#: The role of a token whose ``role`` claim is missing or not one of :data:`JWT_ROLES`.
DEFAULT_ROLE: Role = "reader"
#: Tokens longer than this are refused unread (a bearer header, not a document).
MAX_JWT_LENGTH = 8192
#: RFC 7518 §3.2: an HS256 key should be at least as long as the hash (32 bytes).
MIN_SECRET_BYTES = 32
#: Smallest RSA key accepted (NIST SP 800-131A; PyJWT warns below it too).
MIN_RSA_BITS = 2048

# The signature may be empty: an unsigned (``alg: none``) token is refused by name.
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class JwtError(ValueError):
    """The JWT is refused: malformed, forged, of another algorithm, expired, not yet
    valid, for another audience or issuer, or without a usable owner (the reason says)."""


class JwtConfigError(ValueError):
    """The JWT settings cannot be used: unreadable key file, unsupported key type."""


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a valid JWT speaks for: its owner, its role and its expiry (None: no ``exp``)."""

    owner: str
    role: Role
    expires_at: float | None

    @property
    def key_id(self) -> str:
        """The principal's key id: rate limits and watcher caps count per owner."""
        return KEY_ID_PREFIX + self.owner


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    """Verifies JWTs against one key and one algorithm.

    Args:
        algorithm: ``HS256``, ``RS256`` or ``ES256``: the only one accepted.
        key: the HS256 secret, or the public key object.
        owner_claim: the claim naming the owner (``sub``; the seed's tokens use ``userId``).
        audience: when set, ``aud`` must contain it.
        issuer: when set, ``iss`` must equal it.
    """

    algorithm: str
    key: Any
    owner_claim: str = "sub"
    audience: str | None = None
    issuer: str | None = None

    @classmethod
    def from_settings(
        cls,
        *,
        secret: str | None,
        public_key: Path | None,
        owner_claim: str = "sub",
        audience: str | None = None,
        issuer: str | None = None,
    ) -> JwtVerifier | None:
        """The verifier for these settings, or None when neither a secret nor a key is set.

        Raises:
            JwtConfigError: both are set, or the key file is unreadable or unsupported.
        """
        if secret is not None and public_key is not None:
            raise JwtConfigError("set a JWT secret or a JWT public key, not both")
        if secret is not None:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                log.warning(
                    "the JWT secret is shorter than %d bytes (RFC 7518 §3.2)", MIN_SECRET_BYTES
                )
            return cls("HS256", secret, owner_claim, audience, issuer)
        if public_key is not None:
            algorithm, key = load_public_key(public_key)
            return cls(algorithm, key, owner_claim, audience, issuer)
        return None

    def verify(self, token: str) -> JwtIdentity:
        """The identity of a valid ``token``.

        Raises:
            JwtError: the token is refused; its message says why.
        """
        if len(token) > MAX_JWT_LENGTH or not looks_like_jwt(token):
            raise JwtError("malformed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise JwtError("malformed JWT (unreadable header)") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise JwtError("unsigned JWT (alg: none) refused")
        if alg != self.algorithm:
            raise JwtError(f"JWT signed with {alg}; this server accepts only {self.algorithm}")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": self._required()},
            )
        except jwt.InvalidTokenError as error:
            raise JwtError(_reason(error)) from None
        return JwtIdentity(self._owner(claims), _role(claims), _expiry(claims))

    def _required(self) -> list[str]:
        # Configured audience/issuer: a token without the claim is refused, not let through.
        return [name for name, value in (("aud", self.audience), ("iss", self.issuer)) if value]

    def _owner(self, claims: dict[str, Any]) -> str:
        name = self.owner_claim
        value = claims.get(name)
        if value is None or value == "":
            raise JwtError(f"the JWT has no owner claim {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise JwtError(f"the JWT's owner claim {name!r} is not a string or an integer")
        try:
            return check_owner(str(value))
        except KeyRequestError as error:
            message = f"the JWT's owner claim {name!r} is not a valid owner ({error})"
            raise JwtError(message) from None


def looks_like_jwt(text: str) -> bool:
    """True for three base64url segments joined by dots (a JWS compact token; the last,
    the signature, may be empty)."""
    return _JWT_SHAPE.match(text) is not None


def load_public_key(path: Path) -> tuple[str, Any]:
    """The algorithm and key of a PEM public key file: RSA → RS256, EC P-256 → ES256.

    Raises:
        JwtConfigError: unreadable, not a PEM public key, or another key type or curve.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as error:
        raise JwtConfigError(f"cannot read the JWT public key {path}: {error.strerror}") from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise JwtConfigError(f"{path} is not a PEM public key ({error})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise JwtConfigError(
                f"{path}: the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} needed"
            )
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise JwtConfigError(
                f"{path}: an EC key on {key.curve.name}; only P-256 (ES256) is supported"
            )
        return "ES256", key
    raise JwtConfigError(
        f"{path}: a {type(key).__name__}; use an RSA (RS256) or EC P-256 (ES256) public key"
    )


def _role(claims: dict[str, Any]) -> Role:
    # Only ``service`` raises a token above the default; ``admin`` (or anything else) does not.
    return "service" if claims.get("role") == "service" else DEFAULT_ROLE


def _expiry(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _reason(error: jwt.InvalidTokenError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the JWT has expired (exp)"
    if isinstance(error, jwt.ImmatureSignatureError):
        return f"the JWT is not yet valid ({error})"
    if isinstance(error, jwt.InvalidSignatureError):
        return "bad JWT signature"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the JWT is for another audience (aud)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the JWT is from another issuer (iss)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the JWT has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return f"JWT algorithm refused ({error})"
    return f"malformed JWT ({error})"
