"""Settings precedence and the admin key file (pure parts of serve)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from spectral.access.adminkey import ensure_admin_key
from spectral.settings import Settings


def test_the_embedded_defaults() -> None:
    settings = Settings.load({}, environ={})
    assert settings.data_dir == Path("data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8094)
    assert settings.admin_key is None
    assert settings.admin_key_path == Path("data/admin.key")


def test_flags_override_environment_which_overrides_defaults() -> None:
    environ = {"SPECTRAL_DATA_DIR": "/env/dir", "SPECTRAL_PORT": "9000", "SPECTRAL_HOST": "::1"}
    from_env = Settings.load({}, environ=environ)
    assert (from_env.data_dir, from_env.port, from_env.host) == (Path("/env/dir"), 9000, "::1")
    flagged = Settings.load({"data_dir": "/flag/dir", "port": None}, environ=environ)
    assert (flagged.data_dir, flagged.port) == (Path("/flag/dir"), 9000)


def test_watcher_timing_comes_from_the_environment() -> None:
    environ = {"SPECTRAL_WS_SEND_TIMEOUT": "2.5", "SPECTRAL_WS_PING_INTERVAL": "60"}
    settings = Settings.load({}, environ=environ)
    assert (settings.ws_send_timeout, settings.ws_ping_interval) == (2.5, 60.0)
    with pytest.raises(ValidationError, match="ws_send_timeout"):
        Settings.load({}, environ={"SPECTRAL_WS_SEND_TIMEOUT": "0"})


def test_empty_environment_values_are_ignored() -> None:
    assert Settings.load({}, environ={"SPECTRAL_PORT": ""}).port == 8094


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"port": 65536}, "port"),
        ({"port": "eighty"}, "port"),
        ({"log_level": "chatty"}, "log_level"),
        ({"admin_key": "short"}, "admin_key"),
    ],
)
def test_invalid_values_name_their_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.load(values, environ={})
    assert [error["loc"] for error in info.value.errors()] == [(field,)]


def test_admin_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "admin.key"
    first = ensure_admin_key(path)
    assert first.source == "created"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ensure_admin_key(path)
    assert (again.secret, again.source) == (first.secret, "file")
    assert ensure_admin_key(tmp_path / "other").secret != first.secret


def test_admin_key_override_wins_and_writes_nothing(tmp_path: Path) -> None:
    key = ensure_admin_key(tmp_path / "admin.key", "from-the-environment-123")
    assert (key.secret, key.source) == ("from-the-environment-123", "environment")
    assert not (tmp_path / "admin.key").exists()


def test_empty_admin_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        ensure_admin_key(tmp_path / "admin.key")


def test_live_actor_cap_leaves_half_the_descriptors_for_sockets() -> None:
    from spectral.server import live_actor_cap

    assert live_actor_cap(20_000) == 4_872
    assert live_actor_cap(1_024) == 128
    assert live_actor_cap(256) == 64  # a floor, even on a tiny limit
    assert live_actor_cap(1_000_000) == 10_000
