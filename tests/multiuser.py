"""Two real uids for trust tests: throwaway users and an interpreter they can run.

CI runs as root, and the project's ``.venv`` is built from an interpreter that may
live in root's private home (0700), so another uid cannot run it. This module
gives such tests:

- :func:`peer_python`: a venv made from Debian's own ``/usr/bin/python3`` in a
  world-readable place, holding takod's runtime dependencies (pinned by
  ``constraints.txt``), built once per constraints file and reused;
- :func:`peer_source`: a world-readable copy of this checkout's ``client/`` and
  ``daemon/`` (the checkout itself may sit under a private directory);
- :class:`User` / :func:`make_user`: a throwaway account (``useradd``) with its
  own home, removed with its processes afterwards, and :meth:`User.run` to run
  a command as it (``setpriv``), with the peer interpreter first on PATH.

    def test_x(two_users):
        victim, attacker = two_users
        attacker.run(["mkdir", "/tmp/x"])
        victim.run(victim.takod("status", "--json"), env={...})

Tests using it skip unless run as root on a system with useradd and setpriv.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
RUNTIME_DEPS = ("msgspec", "anyio", "watchfiles", "keyring", "structlog", "httpx", "uvloop", "msgpack")

can_switch_users = (
    os.geteuid() == 0
    and shutil.which("useradd") is not None
    and shutil.which("setpriv") is not None
    and SYSTEM_PYTHON.exists()
)
needs_two_users = pytest.mark.skipif(not can_switch_users, reason="needs root, useradd, setpriv and /usr/bin/python3")


def _world_readable_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644 if not os.access(os.path.join(root, name), os.X_OK) else 0o755)


def peer_python() -> Path:
    """A Python any uid can run, with takod's runtime dependencies installed.

    Built once per ``constraints.txt`` under ``/var/tmp`` (under a file lock, so
    parallel test runs share one build), then reused.
    """
    digest = hashlib.sha256((REPO / "constraints.txt").read_bytes()).hexdigest()[:12]
    venv = Path("/var/tmp") / f"takod-peer-venv-{digest}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if done.exists():
        return python
    lock_path = Path("/var/tmp") / f"takod-peer-venv-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "-c", str(REPO / "constraints.txt"), *RUNTIME_DEPS],
                check=True,
            )
            _world_readable_tree(venv)
            done.touch()
    return python


def peer_source(dest: Path) -> Path:
    """Copy this checkout's ``client/`` and ``daemon/`` under ``dest`` (world-readable)."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("client", "daemon"):
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    _world_readable_tree(dest)
    return dest


@dataclass
class User:
    """A throwaway local account."""

    name: str
    uid: int
    gid: int
    home: Path
    python: Path
    source: Path
    env_base: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        """A minimal environment for this user: its HOME, the peer interpreter, takod's source."""
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": f"{self.python.parent}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{self.source / 'client'}:{self.source / 'daemon'}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            # Nothing may leave this machine.
            "TAKOD_OPENAI_TOKEN_URL": "http://127.0.0.1:9/unreachable",
            "TAKOD_ANTHROPIC_TOKEN_URL": "http://127.0.0.1:9/unreachable",
            "TAKOD_COPILOT_TOKEN_URL": "http://127.0.0.1:9/unreachable",
            "TAKOD_GOOGLE_TOKEN_URL": "http://127.0.0.1:9/unreachable",
            "npm_config_offline": "true",
        }
        env.update(self.env_base)
        env.update(extra)
        return env

    def takod(self, *args: str) -> list[str]:
        """argv for the takod CLI from the peer source, run by the peer interpreter."""
        return [str(self.python), "-m", "takod", *args]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        timeout: float = 60,
        input: bytes | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` as this user (``setpriv``), capturing output."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]
        return subprocess.run(
            cmd, env=env if env is not None else self.env(), cwd=cwd or self.home,
            capture_output=True, timeout=timeout, input=input, check=check,
        )

    def popen(self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
              **kwargs) -> subprocess.Popen:
        """Start ``argv`` as this user; the caller waits for or kills it."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]
        return subprocess.Popen(cmd, env=env if env is not None else self.env(), cwd=cwd or self.home, **kwargs)


def _create_user(base: Path, python: Path, source: Path) -> User:
    name = "tkd" + secrets.token_hex(4)
    home = base / name
    # -U: a private group of its own (Debian's default); -M with our own home dir.
    subprocess.run(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/sh", name], check=True,
                   capture_output=True)
    entry = pwd.getpwnam(name)
    home.mkdir(mode=0o700)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return User(name, entry.pw_uid, entry.pw_gid, home, python, source)


def _remove_user(user: User) -> None:
    subprocess.run(["pkill", "-KILL", "-u", str(user.uid)], capture_output=True)
    subprocess.run(["userdel", "-f", user.name], capture_output=True)
    shutil.rmtree(user.home, ignore_errors=True)


@pytest.fixture(scope="session")
def peer_env() -> Iterator[tuple[Path, Path]]:
    """(interpreter, source) shared by every throwaway user of the session."""
    if not can_switch_users:
        pytest.skip("needs root, useradd, setpriv and /usr/bin/python3")
    python = peer_python()
    base = Path(tempfile.mkdtemp(prefix="takod-src-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield python, peer_source(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_user(peer_env: tuple[Path, Path]) -> Iterator:
    """A factory of throwaway users; every one is removed after the test."""
    python, source = peer_env
    base = Path(tempfile.mkdtemp(prefix="takod-users-", dir="/tmp"))
    os.chmod(base, 0o755)  # homes inside are 0700 each
    made: list[User] = []

    def make() -> User:
        user = _create_user(base, python, source)
        made.append(user)
        return user

    try:
        yield make
    finally:
        for user in made:
            _remove_user(user)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def two_users(make_user) -> tuple[User, User]:
    """(victim, attacker): two unprivileged throwaway users."""
    return make_user(), make_user()
