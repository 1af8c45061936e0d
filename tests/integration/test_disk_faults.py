"""A full disk and a read-only credential directory under a real daemon.

Each uses a real small tmpfs mounted where the file lives (root only: skipped
elsewhere), so the errors are the kernel's own ENOSPC and EROFS. What must
hold: a clear reason in ``auth.inventory`` / the RPC error, every file still
whole, no refresh token spent for nothing, and a token the server already
rotated kept until it can be written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from takod import RemoteError
from tests.fakes.oauth_server import FakeOAuthServer
from tests.harness import DaemonProcess, clean_env, wait_for

WAIT = 30.0
RETRY_WAIT = 120.0


@contextmanager
def tmpfs(path: Path, size: str = "64k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def tokens() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as server:
        yield server


def workspace(home: Path) -> Path:
    ws = home / "ws"
    (ws / ".tako").mkdir(parents=True)
    (ws / "tako.toml").write_text("")
    return ws


def start(home: Path, ws: Path, tokens: FakeOAuthServer) -> DaemonProcess:
    env = clean_env(home, TAKO_WORKSPACE=str(ws), PATH="/usr/bin:/bin", OLLAMA_HOST="http://127.0.0.1:9",
                    **tokens.env())
    return DaemonProcess(home, env).start()


def grant_state(d: DaemonProcess) -> dict | None:
    with d.client() as c:
        grants = c.call("auth.inventory")["grants"]
    return grants[0] if grants else None


def plant_due_login(agent: Path, tokens: FakeOAuthServer) -> str:
    grant = tokens.add_grant("g", "anthropic", lifetime_s=3600)
    entry = {**grant.pi_entry(), "expires": int((time.time() + 60) * 1000)}
    path = agent / "auth.json"
    path.write_text(json.dumps({"anthropic": entry}, indent=2))
    path.chmod(0o600)
    return grant.refresh


def pi_login_on(pi: Path, tokens: FakeOAuthServer) -> tuple[Path, str, bytes]:
    """pi's agent dir under ``pi`` with a due login: (agent dir, its refresh token, the file's bytes)."""
    agent = pi / "agent"
    agent.mkdir(mode=0o700)
    original = plant_due_login(agent, tokens)
    return agent, original, (agent / "auth.json").read_bytes()


def test_a_full_disk_keeps_the_rotated_token_until_it_can_be_written(
    home: Path, tokens: FakeOAuthServer
) -> None:
    ws = workspace(home)
    with tmpfs(ws / ".tako" / "pi") as pi:
        agent, original, before = pi_login_on(pi, tokens)
        filler = fill(pi)
        d = start(home, ws, tokens)
        try:
            info = wait_for(lambda: (g := grant_state(d)) and g["state"] == "retrying" and g, WAIT)
            assert "No space left" in info["last_error"]
            # The server rotated (the request went out); the file is whole and as it was.
            assert tokens.count("g", outcome="ok") == 1 and tokens.current_refresh("g") != original
            assert (agent / "auth.json").read_bytes() == before
            filler.unlink()  # space again: the next retry writes the token it kept
            # Retries back off 5, 10, 20 s (each x0.5-1.5): one may have failed just before the unlink,
            # so the bound covers the next two and then some (a passing run does not wait for it).
            wait_for(lambda: json.loads((agent / "auth.json").read_text())["anthropic"]["refresh"]
                     == tokens.current_refresh("g"), RETRY_WAIT)
            assert tokens.count("g", outcome="ok") == 1  # the spent token was never sent again
            assert tokens.count("g", outcome="rejected") == 0
            wait_for(lambda: (g := grant_state(d)) and g["state"] == "scheduled", WAIT)
        finally:
            d.stop()
        assert list((d.state_dir / "refresh-journal").glob("*.json")) == []  # nothing left pending
        assert tokens.current_refresh("g") not in d.log_text()


def test_a_settings_write_on_a_full_disk_fails_clearly_and_keeps_the_old_file(
    home: Path, tokens: FakeOAuthServer
) -> None:
    ws = workspace(home)
    with tmpfs(ws / ".tako" / "state") as state:
        d = start(home, ws, tokens)
        try:
            with d.client() as c:
                c.call("settings.set", {"field": "ollama_model", "value": "before"})
                settings = state / "inference-settings.json"
                before = settings.read_bytes()
                fill(state)
                with pytest.raises(RemoteError) as err:
                    c.call("settings.set", {"field": "ollama_model", "value": "x" * 20000})
                assert "No space left" in err.value.message or "space" in err.value.message.lower(), err.value
                assert settings.read_bytes() == before
                assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []
                assert c.call("ping") == "pong"
                assert c.call("settings.get", {})["ollama_model"] == "before"
        finally:
            d.stop()


def test_a_read_only_credential_directory_is_reported_and_no_token_is_spent(
    home: Path, tokens: FakeOAuthServer
) -> None:
    ws = workspace(home)
    with tmpfs(ws / ".tako" / "pi") as pi:
        agent, _original, before = pi_login_on(pi, tokens)
        remount_read_only(pi)
        d = start(home, ws, tokens)
        try:
            with d.client() as c:
                inventory = wait_for(lambda: (inv := c.call("auth.inventory"))["credentials"] and inv, WAIT)
                cred = next(x for x in inventory["credentials"] if x["source"] == str(agent / "auth.json"))
                # Shown, marked read-only, and not taken for refreshing: a rotated token could not be saved.
                assert cred["read_only"] is True and cred["backend"] == "anthropic"
                assert inventory["grants"] == []
                assert c.call("ping") == "pong"
            assert tokens.count("g") == 0  # nothing was sent: the stored token still works
        finally:
            d.stop()
        assert (agent / "auth.json").read_bytes() == before
        assert not os.path.lexists(agent / "auth.json.lock")
