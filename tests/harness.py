"""Run a real takod daemon in a temporary HOME and talk to it as clients do.

    def test_x(daemon):            # fixture from tests/conftest.py
        with daemon.client() as c:
            assert c.call("ping") == "pong"

The daemon is a real subprocess (``python -m takod_daemon``) on a real Unix
socket; its environment is a fresh temporary HOME with nothing of the host's
credentials in it.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from takod import Client

REPO = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO / ".tools" / "npm" / "node_modules" / ".bin"

# Variables from the host that could leak real credentials or settings into a test.
_SCRUB_PREFIXES = (
    "TAKOD_", "TAKO_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "OLLAMA_", "CODEX_", "CLAUDE_",
    "PI_", "OPENROUTER_", "GROQ_", "XAI_", "MISTRAL_", "DEEPSEEK_", "XDG_", "LISTEN_", "NOTIFY_", "WATCHDOG_",
    "DBUS_", "PYTHON_KEYRING", "JOURNAL_", "AWS_", "AZURE_", "CEREBRAS_", "FIREWORKS_", "HF_",
)


TOKEN_URL_VARS = (
    "TAKOD_OPENAI_TOKEN_URL", "TAKOD_ANTHROPIC_TOKEN_URL", "TAKOD_COPILOT_TOKEN_URL", "TAKOD_GOOGLE_TOKEN_URL",
    "CODEX_REFRESH_TOKEN_URL_OVERRIDE",
)


# `python -m takod ARGS` that takes Ctrl-C even when the test runner ignores SIGINT (nohup, a CI
# job): an ignored SIGINT is inherited, and Python then installs no KeyboardInterrupt handler.
_SIGINT_DEFAULT = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "runpy.run_module('takod', run_name='__main__', alter_sys=True)")


def takod_interruptible(*args: str) -> list[str]:
    """argv for the takod CLI as a child that a test will send SIGINT (Ctrl-C)."""
    return [sys.executable, "-c", _SIGINT_DEFAULT, *args]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment rooted at ``home`` (no host credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    # Nothing may leave this machine: token endpoints default to a closed loopback port,
    # so a test that forgets its fake server gets "connection refused", never the internet.
    env.update({var: "http://127.0.0.1:9/unreachable" for var in TOKEN_URL_VARS})
    env.update(
        HOME=str(home),
        TAKOD_SOCKET=str(home / "run" / "rpc.sock"),
        TAKOD_STATE_DIR=str(home / "state"),
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("client", "daemon")),
        PYTHONUNBUFFERED="1",
        # npm (doctor --fix, the CLIs' update checks) must never fetch from the registry.
        npm_config_offline="true",
    )
    if os.geteuid() != 0:
        # A non-dumpable daemon hides /proc/PID/{environ,fd} from its own uid; tests read them.
        env["TAKOD_DUMPABLE"] = "1"
    env.update(extra)
    return env


class DaemonProcess:
    """A takod daemon subprocess. ``start()`` returns once it listens."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home = home
        self.env = env if env is not None else clean_env(home)
        self.socket = Path(self.env["TAKOD_SOCKET"])
        self.state_dir = Path(self.env["TAKOD_STATE_DIR"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_line = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *args: str, timeout: float = 20.0) -> "DaemonProcess":
        read_fd, write_fd = os.pipe()
        self.home.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.home / "daemon.stderr"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "takod_daemon", "--ready-fd", str(write_fd), "--log", "json",
                 "--log-level", "debug", *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(write_fd,),
                cwd=self.home,
            )
        os.close(write_fd)
        try:
            self.ready_line = _read_line(read_fd, timeout)
        finally:
            os.close(read_fd)
        if not self.ready_line.startswith("ok"):
            code = self.proc.poll()
            raise RuntimeError(
                f"daemon not ready: {self.ready_line!r} (exit {code}); stderr:\n{self.stderr_text()}"
            )
        return self

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("spawn", False)
        kwargs.setdefault("timeout", 20.0)
        return Client(self.socket, **kwargs)

    def log_text(self) -> str:
        text = ""
        for name in ("daemon.log.1", "daemon.log"):
            path = self.state_dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def require_tool(path: Path, what: str) -> None:
    """Fail in CI, skip elsewhere, when a real tool the test needs is missing."""
    import pytest

    if path.exists():
        return
    message = f"{what} not found at {path}; run scripts/test.sh (or scripts/install-test-tools.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def line_queue(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """``proc``'s stdout lines as they come, read by a daemon thread (get with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def write_private(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to a new 0600 file, as the tools write their credential files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(doc, indent=2).encode())
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())
