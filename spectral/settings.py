"""Server settings: embedded defaults, overridden by environment, overridden by flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spectral.webhooks.schedule import DEFAULT_SCHEDULE, parse_schedule

if TYPE_CHECKING:
    from spectral.access.jwts import JwtVerifier

#: Environment variables that map onto settings fields.
ENVIRONMENT = {
    "SPECTRAL_DATA_DIR": "data_dir",
    "SPECTRAL_HOST": "host",
    "SPECTRAL_PORT": "port",
    "SPECTRAL_ADMIN_KEY": "admin_key",
    "SPECTRAL_LOG_LEVEL": "log_level",
    "SPECTRAL_RATE_LIMIT": "rate_limit",
    "SPECTRAL_RATE_BURST": "rate_burst",
    "SPECTRAL_WS_MAX_PER_KEY": "watchers_per_key",
    "SPECTRAL_WS_SEND_TIMEOUT": "ws_send_timeout",
    "SPECTRAL_WS_PING_INTERVAL": "ws_ping_interval",
    "SPECTRAL_CORS_ORIGINS": "cors_origins",
    "SPECTRAL_SOCKETIO_PING_INTERVAL": "socketio_ping_interval",
    "SPECTRAL_SOCKETIO_PING_TIMEOUT": "socketio_ping_timeout",
    "SPECTRAL_SOCKETIO_MAX_PENDING": "socketio_max_pending",
    "SPECTRAL_ROOM_HISTORY": "room_history",
    "SPECTRAL_WEBHOOK_RETRY_SCHEDULE": "webhook_retry_schedule",
    "SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "webhook_allow_private",
    "SPECTRAL_WEBHOOK_WORKERS": "webhook_workers",
    "SPECTRAL_CLUSTER": "cluster",
    "SPECTRAL_REDIS": "redis",
    "SPECTRAL_NODE_ID": "node_id",
    "SPECTRAL_INTERNAL_HOST": "internal_host",
    "SPECTRAL_INTERNAL_PORT": "internal_port",
    "SPECTRAL_CLUSTER_LEASE": "cluster_lease",
    "SPECTRAL_JWT_SECRET": "jwt_secret",
    "SPECTRAL_JWT_PUBLIC_KEY": "jwt_public_key",
    "SPECTRAL_JWT_OWNER_CLAIM": "jwt_owner_claim",
    "SPECTRAL_JWT_AUDIENCE": "jwt_audience",
    "SPECTRAL_JWT_ISSUER": "jwt_issuer",
}


class Settings(BaseModel):
    """Everything ``spectral serve`` needs to know (defaults: docs/operations.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(8094, ge=0, le=65535)
    #: Overrides the key in ``<data-dir>/admin.key`` (never written to disk).
    admin_key: str | None = Field(None, min_length=16)
    log_level: str = "INFO"
    #: Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    graceful_timeout: float = Field(5.0, ge=0)
    #: TCP accept backlog (a backlog of 100 stalled bursts of connects: 3,000 took 113 s).
    backlog: int = Field(4096, ge=1)
    #: Seconds an idle keep-alive connection is kept open.
    keep_alive_timeout: float = Field(75.0, gt=0)
    #: Messages a watcher may lag behind before it is closed with 4008 (docs/api.md, "Watching").
    watcher_queue: int = Field(1000, ge=1)
    #: Seconds one write to a watcher may take before the watcher is dropped.
    ws_send_timeout: float = Field(10.0, gt=0)
    #: Seconds between protocol pings to idle WebSocket peers.
    ws_ping_interval: float = Field(30.0, gt=0)

    #: Requests per second per key, sustained (0 disables rate limiting; admins exempt).
    rate_limit: float = Field(200.0, ge=0)
    #: Requests per key that may arrive at once.
    rate_burst: float = Field(400.0, ge=1)
    #: Open watch connections (WebSocket + SSE) per key (0 = no cap; admins exempt).
    watchers_per_key: int = Field(1000, ge=0)
    #: Messages each room keeps for subscribers resuming with ``since`` (docs/api.md, "Rooms").
    room_history: int = Field(1000, ge=1, le=1_000_000)
    #: Seconds between Engine.IO pings on ``/socket.io/`` (socket.io's default).
    socketio_ping_interval: float = Field(25.0, gt=0, le=3600)
    #: Seconds a Socket.IO client has to answer a ping (socket.io's default).
    socketio_ping_timeout: float = Field(20.0, gt=0, le=3600)
    #: Socket.IO sessions not yet connected to the namespace, at most (then 503, retry).
    socketio_max_pending: int = Field(2000, ge=1)
    #: Origins allowed to call the API from a browser (CORS); empty = same origin only.
    cors_origins: tuple[str, ...] = ()
    #: Seconds before each webhook delivery attempt, the first included (docs/api.md, "Webhooks").
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: Let webhooks reach loopback, private and link-local addresses (tests, trusted LANs).
    webhook_allow_private: bool = False
    #: Webhook delivery attempts in flight at once.
    webhook_workers: int = Field(8, ge=1, le=256)

    #: Cluster mode (docs/cluster.md): PostgreSQL for membership, placement and the registry.
    cluster: str | None = Field(None, pattern=r"^postgres(ql)?://")
    #: Cluster mode: Redis for watchers on other nodes than a task's home.
    redis: str | None = Field(None, pattern=r"^rediss?://")
    #: This node's name in the cluster (default: the one in ``<data-dir>/node.id``, made once).
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    #: Where other nodes reach this one (the internal transport); port 0 = any free port.
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(0, ge=0, le=65535)
    #: Seconds of a node's lease in PostgreSQL; it fences itself a fifth of it earlier.
    cluster_lease: float = Field(5.0, ge=0.5, le=600)

    #: JWTs (docs/api.md, "JWT"): the HS256 secret, or a PEM public key (RS256 or ES256).
    jwt_secret: str | None = Field(None, min_length=1, repr=False)
    jwt_public_key: Path | None = None
    #: The claim that names a JWT's owner.
    jwt_owner_claim: str = Field("sub", min_length=1)
    #: When set, a JWT's ``aud`` must contain it / its ``iss`` must equal it.
    jwt_audience: str | None = Field(None, min_length=1)
    jwt_issuer: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _cluster_needs_both(self) -> Settings:
        if (self.cluster is None) != (self.redis is None):
            raise ValueError("cluster mode needs both --cluster (PostgreSQL) and --redis")
        return self

    @field_validator("jwt_public_key")
    @classmethod
    def _usable_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            if info.data.get("jwt_secret") is not None:
                raise ValueError("set SPECTRAL_JWT_SECRET or SPECTRAL_JWT_PUBLIC_KEY, not both")
            # Imported only when configured: the JWT stack is not loaded otherwise.
            from spectral.access.jwts import JwtConfigError, load_public_key

            try:
                load_public_key(value)  # read again at start-up; checked here to fail early
            except JwtConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        return parse_schedule(value) if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from the environment and command-line flags (flags win).

        Raises:
            pydantic.ValidationError: a value is invalid; its message names the field.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            field: environ[name] for name, field in ENVIRONMENT.items() if environ.get(name)
        }
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        return cls(**values)

    def jwt_verifier(self) -> JwtVerifier | None:
        """The JWT verifier of these settings (reads the key file), or None: no JWTs."""
        from spectral.access.jwts import JwtVerifier

        return JwtVerifier.from_settings(
            secret=self.jwt_secret,
            public_key=self.jwt_public_key,
            owner_claim=self.jwt_owner_claim,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
        )

    @property
    def admin_key_path(self) -> Path:
        """Where the bootstrap admin key lives."""
        return self.data_dir / "admin.key"
