"""JWT principals without a server: verification, key loading, settings, the authenticator.

Expiry is never waited for: tokens are minted an hour expired or an hour early.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from spectral.access.auth import Authenticator
from spectral.access.jwts import (
    JwtConfigError,
    JwtError,
    JwtVerifier,
    load_public_key,
    looks_like_jwt,
)
from spectral.access.keys import MIGRATIONS, STREAM, KeyStore
from spectral.access.ratelimit import RateLimiter
from spectral.api.context import Principal
from spectral.errors import ApiError
from spectral.settings import Settings
from spectral.sql import SqliteSql
from storage import Registry

SECRET = "a-test-secret-of-at-least-32-bytes!!"
NONE: dict[str, str] = {}  # no headers
HOUR = 3600


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 token."""
    return jwt.encode(claims, secret, algorithm="HS256")


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: HMAC-SHA256 with ``key``, or no signature (None)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def pem(public_key: Any) -> bytes:
    """The SubjectPublicKeyInfo PEM of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA-2048 private key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """An EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hs() -> JwtVerifier:
    """An HS256 verifier taking the owner from ``userId``."""
    verifier = JwtVerifier.from_settings(secret=SECRET, public_key=None, owner_claim="userId")
    assert verifier is not None
    return verifier


def verifier_for(path: Path, **options: Any) -> JwtVerifier:
    """A verifier over a PEM public key file."""
    verifier = JwtVerifier.from_settings(secret=None, public_key=path, **options)
    assert verifier is not None
    return verifier


@pytest.fixture
def rs(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> JwtVerifier:
    """An RS256 verifier (owner in ``sub``)."""
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa_key.public_key()))
    return verifier_for(path)


# -- accepted tokens -----------------------------------------------------------------


def test_the_owner_claim_and_role_make_the_identity(hs: JwtVerifier) -> None:
    exp = int(time.time()) + HOUR
    who = hs.verify(hs256({"userId": "alice", "role": "service", "exp": exp}))
    assert (who.owner, who.role, who.expires_at, who.key_id) == (
        "alice",
        "service",
        float(exp),
        "jwt:alice",
    )
    assert hs.verify(hs256({"userId": "alice", "role": "reader"})).role == "reader"


@pytest.mark.parametrize("role", ["admin", "Admin", "superuser", None, 1, ["service"]])
def test_a_role_other_than_reader_or_service_is_reader(hs: JwtVerifier, role: Any) -> None:
    claims = {"userId": "alice"} if role is None else {"userId": "alice", "role": role}
    assert hs.verify(hs256(claims)).role == "reader"


def test_a_numeric_owner_becomes_its_decimal_string(hs: JwtVerifier) -> None:
    assert hs.verify(hs256({"userId": 123})).owner == "123"


def test_a_token_without_exp_has_no_expiry(hs: JwtVerifier) -> None:
    assert hs.verify(hs256({"userId": "alice"})).expires_at is None


def test_rs256_and_es256_keys_verify_their_own_tokens(
    tmp_path: Path, rs: JwtVerifier, ec_key: ec.EllipticCurvePrivateKey, rsa_key: Any
) -> None:
    assert rs.algorithm == "RS256"
    assert rs.verify(jwt.encode({"sub": "acme"}, rsa_key, algorithm="RS256")).owner == "acme"
    path = tmp_path / "ec.pem"
    path.write_bytes(pem(ec_key.public_key()))
    es = verifier_for(path)
    assert es.algorithm == "ES256"
    assert es.verify(jwt.encode({"sub": "acme"}, ec_key, algorithm="ES256")).owner == "acme"


# -- refused tokens ------------------------------------------------------------------


def refused(verifier: JwtVerifier, token: str) -> str:
    """The reason ``token`` is refused."""
    with pytest.raises(JwtError) as info:
        verifier.verify(token)
    return str(info.value)


def test_a_bad_signature_is_refused(hs: JwtVerifier) -> None:
    assert refused(hs, hs256({"userId": "a"}, "another-secret-of-at-least-32-bytes!!")) == (
        "bad JWT signature"
    )
    head, _, signature = hs256({"userId": "a"}).split(".")
    forged_body = b64(json.dumps({"userId": "admin", "role": "service"}).encode())
    assert refused(hs, f"{head}.{forged_body}.{signature}") == "bad JWT signature"


def test_alg_none_is_refused(hs: JwtVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = handmade({"alg": alg, "typ": "JWT"}, {"userId": "a"}, None)
        assert refused(hs, token) == "unsigned JWT (alg: none) refused"
        assert refused(hs, token + "AAAA") == "unsigned JWT (alg: none) refused"


def test_an_hs256_token_signed_with_the_public_pem_is_refused(
    rs: JwtVerifier, tmp_path: Path
) -> None:
    public_pem = (tmp_path / "rsa.pem").read_bytes()
    token = handmade({"alg": "HS256", "typ": "JWT"}, {"sub": "admin"}, public_pem)
    assert refused(rs, token) == "JWT signed with HS256; this server accepts only RS256"


def test_a_token_of_another_asymmetric_algorithm_is_refused(
    rs: JwtVerifier, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    es_token = jwt.encode({"sub": "a"}, ec_key, algorithm="ES256")
    assert refused(rs, es_token) == "JWT signed with ES256; this server accepts only RS256"
    ps_token = jwt.encode({"sub": "a"}, rsa_key, algorithm="PS256")
    assert "accepts only RS256" in refused(rs, ps_token)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(rs, jwt.encode({"sub": "a"}, other, algorithm="RS256")) == "bad JWT signature"


def test_expired_and_not_yet_valid_tokens_are_refused(hs: JwtVerifier) -> None:
    now = int(time.time())
    assert refused(hs, hs256({"userId": "a", "exp": now - HOUR})) == "the JWT has expired (exp)"
    assert "not yet valid" in refused(hs, hs256({"userId": "a", "nbf": now + HOUR}))
    assert "malformed" in refused(hs, hs256({"userId": "a", "exp": "tomorrow"}))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "no owner claim 'userId'"),
        ({"sub": "alice"}, "no owner claim 'userId'"),
        ({"userId": ""}, "no owner claim 'userId'"),
        ({"userId": None}, "no owner claim 'userId'"),
        ({"userId": 1.5}, "not a string or an integer"),
        ({"userId": True}, "not a string or an integer"),
        ({"userId": ["alice"]}, "not a string or an integer"),
        ({"userId": {"id": 1}}, "not a string or an integer"),
        ({"userId": "a/b"}, "not a valid owner"),
        ({"userId": ".."}, "not a valid owner"),
        ({"userId": "x" * 129}, "not a valid owner"),
    ],
)
def test_a_missing_or_unusable_owner_is_refused(
    hs: JwtVerifier, claims: dict[str, Any], reason: str
) -> None:
    assert reason in refused(hs, hs256(claims))


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c", "a.b.c.d", "spk_0123456789abcdef_x", "é.é.é", "x" * 9000 + ".a.b"],
)
def test_malformed_tokens_are_refused(hs: JwtVerifier, token: str) -> None:
    assert refused(hs, token).startswith("malformed JWT")


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = JwtVerifier.from_settings(
        secret=SECRET, public_key=None, audience="spectral", issuer="https://id.example"
    )
    assert verifier is not None
    good = {"sub": "a", "aud": ["other", "spectral"], "iss": "https://id.example"}
    assert verifier.verify(hs256(good)).owner == "a"
    assert "another audience" in refused(verifier, hs256({**good, "aud": "other"}))
    assert "another issuer" in refused(verifier, hs256({**good, "iss": "https://evil"}))
    assert "'aud'" in refused(verifier, hs256({"sub": "a", "iss": "https://id.example"}))
    assert "'iss'" in refused(verifier, hs256({"sub": "a", "aud": "spectral"}))


def test_shapes_tell_jwts_from_keys_and_watch_tokens() -> None:
    assert looks_like_jwt(hs256({"sub": "a"}))
    assert not looks_like_jwt("eyJ2IjoxfQ.c2ln")  # a watch token: two segments
    assert not looks_like_jwt("spk_0123456789abcdef_" + "A" * 43)
    assert looks_like_jwt("a.b.")  # unsigned: refused by name, not taken for a key
    assert not looks_like_jwt("a..c")


# -- keys and settings ---------------------------------------------------------------


def test_only_rsa_and_p256_public_keys_are_accepted(tmp_path: Path) -> None:
    def load(name: str, public_key: Any) -> tuple[str, Any]:
        path = tmp_path / name
        path.write_bytes(pem(public_key))
        return load_public_key(path)

    with pytest.raises(JwtConfigError, match="only P-256"):
        load("p384.pem", ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(JwtConfigError, match="use an RSA"):
        load("ed.pem", ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(JwtConfigError, match="1024 bits"):
        load(
            "small.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        )
    with pytest.raises(JwtConfigError, match="cannot read"):
        load_public_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(JwtConfigError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")


def test_settings_take_the_jwt_environment(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    assert Settings.load({}, environ={}).jwt_verifier() is None
    environ = {"SPECTRAL_JWT_SECRET": SECRET, "SPECTRAL_JWT_OWNER_CLAIM": "userId"}
    verifier = Settings.load({}, environ=environ).jwt_verifier()
    assert verifier is not None
    assert (verifier.algorithm, verifier.owner_claim) == ("HS256", "userId")
    assert SECRET not in repr(Settings.load({}, environ=environ))
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa_key.public_key()))
    keyed = Settings.load(
        {}, environ={"SPECTRAL_JWT_PUBLIC_KEY": str(path), "SPECTRAL_JWT_AUDIENCE": "spectral"}
    ).jwt_verifier()
    assert keyed is not None
    assert (keyed.algorithm, keyed.owner_claim, keyed.audience) == ("RS256", "sub", "spectral")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SPECTRAL_JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "cannot read"),
        ({"SPECTRAL_JWT_PUBLIC_KEY": "/x.pem", "SPECTRAL_JWT_SECRET": SECRET}, "not both"),
    ],
)
def test_unusable_jwt_settings_name_the_field(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.load({}, environ=environ)
    (error,) = info.value.errors()
    assert error["loc"] == ("jwt_public_key",)
    assert message in error["msg"]


# -- the authenticator ---------------------------------------------------------------


@pytest.fixture
def auth(tmp_path: Path, hs: JwtVerifier) -> Authenticator:
    """An authenticator accepting HS256 JWTs (owner in ``userId``)."""
    registry = Registry(tmp_path / "registry.sqlite", migrations={STREAM: MIGRATIONS})
    store = KeyStore(SqliteSql(registry.conn), b"pepper" * 6)
    return Authenticator(store, "the-admin-secret-key", b"k" * 32, RateLimiter(0, 1), jwt=hs)


async def unauthenticated(call: Any) -> str:
    """The 401 message of an awaited call."""
    with pytest.raises(ApiError) as info:
        await call
    assert (info.value.status, info.value.code) == (401, "UNAUTHENTICATED")
    return info.value.message


async def test_a_jwt_is_a_bearer_credential_and_a_token_on_any_route(auth: Authenticator) -> None:
    token = hs256({"userId": 7, "role": "service"})
    expected = Principal("jwt:7", "7", "service")
    headers = {"authorization": f"Bearer {token}"}
    assert await auth.authenticate(headers.get) == expected
    assert await auth.authenticate(NONE.get, token=token) == expected
    assert await auth.authenticate(NONE.get, token=token, scope="task:t") == expected
    assert await auth.authenticate_secret(f"  {token} ") == expected
    expired = hs256({"userId": 7, "exp": int(time.time()) - HOUR})
    message = await unauthenticated(auth.authenticate(NONE.get, token=expired))
    assert message == "JWT refused: the JWT has expired (exp)"
    assert "expired" in await unauthenticated(auth.authenticate_secret(expired))


async def test_authenticate_secret_takes_keys_too(auth: Authenticator) -> None:
    _, secret = await auth.keys.create("alice", "reader")
    assert (await auth.authenticate_secret(secret)).owner == "alice"
    assert (await auth.authenticate_secret("the-admin-secret-key")).is_admin
    assert "not valid" in await unauthenticated(auth.authenticate_secret("spk_nope"))
    assert "JWT (Authorization: Bearer)" in await unauthenticated(auth.authenticate_secret(" "))


async def test_without_jwt_settings_a_jwt_is_an_invalid_key(auth: Authenticator) -> None:
    auth.jwt = None
    token = hs256({"userId": "alice", "role": "service"})
    headers = {"authorization": f"Bearer {token}"}
    message = await unauthenticated(auth.authenticate(headers.get))
    assert message == "the API key is not valid (unknown or revoked)"
    assert await unauthenticated(auth.authenticate(NONE.get, token=token)) == (
        "send a valid API key (X-API-Key)"
    )
    assert "malformed" in await unauthenticated(auth.authenticate(NONE.get, token=token, scope="t"))


async def test_watch_tokens_minted_with_a_jwt(auth: Authenticator) -> None:
    exp = int(time.time()) + 60
    who = await auth.authenticate_secret(hs256({"userId": "alice", "exp": exp}))
    token, expires_at = auth.mint(who, "task:t", 900)
    assert expires_at == exp  # no later than the JWT
    watcher = await auth.authenticate(NONE.get, token=token, scope="task:t")
    assert watcher == Principal("jwt:alice", "alice", "reader", scope="task:t")
    lasting = await auth.authenticate_secret(hs256({"userId": "alice"}))
    assert auth.mint(lasting, "task:t", 900)[1] > exp
    auth.jwt = None  # JWTs switched off: what they minted stops working too
    message = await unauthenticated(auth.authenticate(NONE.get, token=token, scope="task:t"))
    assert "no longer accepted" in message
