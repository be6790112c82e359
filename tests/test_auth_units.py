"""The pure parts of authentication: watch tokens, the rate limiter, credentials, key storage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spectral.access import secret, tokens
from spectral.access.auth import Authenticator, credential
from spectral.access.keys import MIGRATIONS, STREAM, KeyRequestError, KeyStore
from spectral.access.ratelimit import RateLimiter, retry_after_header
from spectral.api.context import Principal, require_admin, require_write
from spectral.errors import ApiError
from spectral.sql import SqliteSql
from storage import Registry

KEY = b"k" * 32


def grant(**fields: object) -> tokens.WatchGrant:
    """A grant with defaults."""
    values: dict[str, object] = {
        "key_id": "0123456789abcdef",
        "owner": "alice",
        "scope": "task:t1",
        "expires_at": 1000.0,
    }
    values.update(fields)
    return tokens.WatchGrant(**values)  # type: ignore[arg-type]


def test_a_token_round_trips_until_it_expires() -> None:
    token = tokens.sign(grant(), KEY)
    assert tokens.verify(token, KEY, now=999.0) == grant()
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(token, KEY, now=1000.0)


def test_admin_grants_carry_no_owner() -> None:
    token = tokens.sign(grant(owner=None), KEY)
    assert tokens.verify(token, KEY, now=0).owner is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: t.replace(".", ".A", 1),
        lambda t: "A" + t,
        lambda t: t.split(".")[0],
        lambda t: t + ".more",
        lambda t: "x" * 3000,
        lambda t: "not base64!.also not",
    ],
)
def test_tampered_or_malformed_tokens_are_refused(mangle) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.verify(mangle(tokens.sign(grant(), KEY)), KEY, now=0)


def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(tokens.sign(grant(), b"other" * 8), KEY, now=0)


def test_a_well_signed_token_with_bad_claims_is_refused() -> None:
    payload = tokens._b64(b'{"v":1,"k":5,"o":null,"s":"task:t","exp":10}')
    token = f"{payload}.{tokens._b64(tokens._mac(payload, KEY))}"
    with pytest.raises(tokens.TokenError, match="malformed"):
        tokens.verify(token, KEY, now=0)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.acquire("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k", 0.0) == pytest.approx(0.5)
    assert limiter.acquire("other", 0.0) == 0.0  # buckets are per key
    assert limiter.acquire("k", 0.5) == 0.0  # half a second refills one
    assert limiter.acquire("k", 0.5) > 0
    assert limiter.acquire("k", 100.0) == 0.0  # refill is capped at the burst
    assert [limiter.acquire("k", 100.0) for _ in range(3)][-1] > 0


def test_a_zero_rate_disables_limiting() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.acquire("k", 0.0) == 0.0 for _ in range(1000))


def test_bucket_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=10)
    for n in range(100):
        limiter.acquire(f"k{n}", 0.0)
    assert len(limiter._buckets) == 10


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2)] == ["1", "1", "2"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": "abc"}, "abc"),
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
        ({"x-api-key": "first", "authorization": "Bearer second"}, "first"),
    ],
)
def test_credential_header_forms(headers: dict[str, str], expected: str | None) -> None:
    assert credential(headers.get) == expected


def test_roles() -> None:
    admin = Principal("a", "admin", "admin")
    service = Principal("s", "alice", "service")
    reader = Principal("r", "alice", "reader")
    token = Principal("s", "alice", "reader", scope="task:t")
    admin_token = Principal("a", "admin", "admin", scope="task:t")
    require_write(admin)
    require_write(service)
    require_admin(admin)
    for who in (reader, token, admin_token):
        with pytest.raises(ApiError) as info:
            require_write(who)
        assert info.value.status == 403
    for who in (service, reader, admin_token):
        with pytest.raises(ApiError):
            require_admin(who)
    assert (admin.owner_filter, service.owner_filter) == (None, "alice")


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    """A key store on a fresh registry."""
    registry = Registry(tmp_path / "registry.sqlite", migrations={STREAM: MIGRATIONS})
    return KeyStore(SqliteSql(registry.conn), b"pepper" * 6)


def _other(tmp_path: Path, pepper: bytes) -> KeyStore:
    """A key store on another connection to the same registry (as the CLI's)."""
    return KeyStore(SqliteSql(sqlite3.connect(tmp_path / "registry.sqlite")), pepper)


async def test_keys_are_stored_hashed_and_checked(store: KeyStore, tmp_path: Path) -> None:
    api_key, secret_text = await store.create("alice", "service", "ci")
    assert secret_text.startswith(f"spk_{api_key.id}_")
    assert await store.authenticate(secret_text) == api_key
    forged = secret_text[:-1] + ("A" if secret_text[-1] != "A" else "B")
    assert await store.authenticate(forged) is None
    assert await store.authenticate("spk_0123456789abcdef_" + "A" * 43) is None
    assert await store.authenticate("anything") is None
    raw = sqlite3.connect(tmp_path / "registry.sqlite").execute("SELECT * FROM api_keys")
    assert all(secret_text not in repr(row) for row in raw.fetchall())
    found = await store.get(api_key.id)
    assert found is not None and found.last_used_at is not None  # authenticate touched it
    assert await store.list("bob") == [] and await store.list() == [found]


async def test_another_connections_revocation_is_seen_at_once(
    store: KeyStore, tmp_path: Path
) -> None:
    api_key, secret_text = await store.create("alice", "reader")
    assert await store.authenticate(secret_text) is not None  # now cached
    other = _other(tmp_path, store.pepper)
    revoked = await other.revoke(api_key.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert await other.revoke("0123456789abcdef") is None
    assert await store.authenticate(secret_text) is None
    assert await store.is_live(api_key.id) is False
    made, new_secret = await other.create("bob", "service")
    assert await store.authenticate(new_secret) == made


class _Shared(SqliteSql):
    """SQLite standing in for a shared database whose commits cannot be detected."""

    dialect = "postgresql"


async def test_on_a_shared_database_the_cache_lives_cache_ttl_seconds(tmp_path: Path) -> None:
    """Another node's revocation (or new key) is seen once the cached entry is 1 s old."""
    registry = Registry(tmp_path / "registry.sqlite", migrations={STREAM: MIGRATIONS})
    now = [100.0]
    store = KeyStore(_Shared(registry.conn), b"pepper" * 6, monotonic=lambda: now[0])
    other = _other(tmp_path, store.pepper)
    api_key, secret_text = await other.create("alice", "reader")
    assert await store.authenticate(secret_text) == api_key
    absent = "spk_0123456789abcdef_" + "A" * 43
    assert await store.authenticate(absent) is None  # cached as unknown
    await other.revoke(api_key.id)
    now[0] += 0.99
    assert await store.authenticate(secret_text) == api_key  # still cached
    assert await store.is_live(api_key.id)
    now[0] += 0.01
    assert await store.authenticate(secret_text) is None
    assert not await store.is_live(api_key.id)
    # The revocation is cached as long, and a local revocation is seen at once.
    made, made_secret = await other.create("bob", "reader")
    assert await store.authenticate(made_secret) == made
    await store.revoke(made.id)
    assert await store.authenticate(made_secret) is None


async def test_a_store_with_another_pepper_accepts_no_key(store: KeyStore, tmp_path: Path) -> None:
    _, secret_text = await store.create("alice", "reader")
    other = _other(tmp_path, b"another pepper" * 3)
    assert await other.authenticate(secret_text) is None


@pytest.mark.parametrize(
    ("owner", "role", "field"),
    [("a/b", "reader", "owner"), ("...", "reader", "owner"), ("", "reader", "owner"),
     ("alice", "root", "role")],
)  # fmt: skip
async def test_bad_key_requests(store: KeyStore, owner: str, role: str, field: str) -> None:
    with pytest.raises(KeyRequestError, match=field):
        await store.create(owner, role)


async def test_the_bootstrap_admin_and_stored_keys_authenticate(store: KeyStore) -> None:
    auth = Authenticator(store, "the-admin-secret-key", KEY, RateLimiter(0, 1))
    admin = await auth.authenticate({"x-api-key": "the-admin-secret-key"}.get)
    assert admin.key_id == "bootstrap"
    api_key, secret_text = await store.create("alice", "reader")
    assert (await auth.authenticate({"x-api-key": secret_text}.get)).owner == "alice"
    with pytest.raises(ApiError) as info:
        await auth.authenticate({"x-api-key": "the-admin-secret-kez"}.get)
    assert info.value.status == 401
    token, _ = auth.mint(Principal("bootstrap", "admin", "admin"), "task:t", 60)
    with pytest.raises(ApiError):  # tokens only where the route names a scope
        await auth.authenticate({}.get, token=token)
    who = await auth.authenticate({}.get, token=token, scope="task:t")
    assert (who.is_admin, who.scope) == (True, "task:t")
    reader = Principal(api_key.id, "alice", "reader")
    token, _ = auth.mint(reader, "task:t", 60)
    assert (await auth.authenticate({}.get, token=token, scope="task:t")).owner == "alice"
    await store.revoke(api_key.id)
    with pytest.raises(ApiError, match="revoked"):
        await auth.authenticate({}.get, token=token, scope="task:t")


def test_the_server_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = secret.load_or_create(tmp_path)
    assert secret.load_or_create(tmp_path) == first
    assert (tmp_path / secret.FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert secret.derive(first, "a") != secret.derive(first, "b")
    (tmp_path / secret.FILE_NAME).write_text("garbage\n")
    with pytest.raises(ValueError):
        secret.load_or_create(tmp_path)
