"""Shared fixtures: a real daemon in a temporary HOME."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import DaemonProcess, clean_env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for one test (short path: socket paths are limited to ~100 bytes)."""
    path = tmp_path / "h"
    path.mkdir()
    return path


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
