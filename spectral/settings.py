"""Server settings: embedded defaults, overridden by environment, overridden by flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Environment variables that map onto settings fields.
ENVIRONMENT = {
    "SPECTRAL_DATA_DIR": "data_dir",
    "SPECTRAL_HOST": "host",
    "SPECTRAL_PORT": "port",
    "SPECTRAL_ADMIN_KEY": "admin_key",
    "SPECTRAL_LOG_LEVEL": "log_level",
}


class Settings(BaseModel):
    """Everything ``spectral serve`` needs to know; defaults are SPEC §1's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(8094, ge=0, le=65535)
    #: Overrides the key in ``<data-dir>/admin.key`` (never written to disk).
    admin_key: str | None = Field(None, min_length=16)
    log_level: str = "INFO"
    #: Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    graceful_timeout: float = Field(5.0, ge=0)
    #: TCP accept backlog (hypercorn's default of 100 stalls bursts of connects).
    backlog: int = Field(4096, ge=1)
    #: Messages a watcher may lag behind before it is closed with 4008 (SPEC §7).
    watcher_queue: int = Field(1000, ge=1)
    #: Seconds one write to a watcher may take before the watcher is dropped.
    ws_send_timeout: float = Field(10.0, gt=0)
    #: Seconds between protocol pings to idle WebSocket peers.
    ws_ping_interval: float = Field(30.0, gt=0)

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

    @property
    def admin_key_path(self) -> Path:
        """Where the bootstrap admin key lives."""
        return self.data_dir / "admin.key"
