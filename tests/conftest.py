"""Shared fixtures: a real daemon in a temporary HOME."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

# A noisy 2-core machine: no per-example deadline, slow generation is not a failure.
settings.register_profile(
    "takod",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.load_profile("takod")

from tests.harness import DaemonProcess, clean_env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for one test (short path: socket paths are limited to ~100 bytes)."""
    path = tmp_path / "h"
    path.mkdir()
    return path


@pytest.fixture
def workspace(home: Path) -> Path:
    """A Tako workspace (a folder with ``tako.toml``) inside ``home``."""
    ws = home / "ws"
    ws.mkdir()
    (ws / "tako.toml").write_text("")
    return ws


@pytest.fixture
def daemon_env(home: Path) -> dict[str, str]:
    return clean_env(home)


@pytest.fixture
def daemon(home: Path, daemon_env: dict[str, str]) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(home, daemon_env).start()
    try:
        yield proc
    finally:
        proc.stop()


# Two real uids (throwaway users, an interpreter they can run): tests/multiuser.py.
from tests.multiuser import make_user, peer_env, two_users  # noqa: E402,F401
