"""Security and fault handling of a real daemon running a provider CLI.

The CLI is tests/fakes/clis/scripted_cli.py behind a ``codex`` wrapper on the
daemon's PATH (it answers ``--version`` like Codex and otherwise runs the steps
the test wrote). The daemon's environment and key store hold canary secrets of
every kind; the test looks for them in the CLI's environment, on every
process's command line, in the logs and in the answers.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from takod import RemoteError
from tests.fakes.oauth_server import FakeOAuthServer
from tests.harness import REPO, DaemonProcess, clean_env, wait_for

SCRIPTED_CLI = REPO / "tests" / "fakes" / "clis" / "scripted_cli.py"

OWN_KEY = "sk-proj-CANARYcodexOWNkey0123456789abcdef"  # Codex's own: it must get this one
FOREIGN = {  # secrets that are none of Codex's business
    "AWS_SECRET_ACCESS_KEY": "CANARYawsSECRETaccessKEY0123456789abcdef",
    "AWS_ACCESS_KEY_ID": "AKIACANARYACCESSKEYID01",
    "ANTHROPIC_API_KEY": "sk-ant-api03-CANARYforeignANTHROPIC0123456789",
    "GEMINI_API_KEY": "AIzaCANARYforeignGEMINIkey0123456789abcd",
    "NPM_TOKEN": "npm_CANARYforeignNPMtoken0123456789abcdef",
}
STORED = ("GROQ_API_KEY", "gsk_CANARYstoredGROQkey0123456789abcdefgh")  # set through keys.set
CANARIES = [OWN_KEY, STORED[1], *FOREIGN.values()]

ANSWER_OK = [
    {"out": json.dumps({"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "ok"}})},
    {"out": json.dumps({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}})},
]


class FakeCodex:
    """A ``codex`` on PATH whose behaviour is whatever steps the test sets."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.script = root / "steps.json"
        self.set([])
        wrapper = self.bin / "codex"
        wrapper.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = "--version" ]; then echo "codex-cli 0.60.0"; exit 0; fi\n'
            f"FAKE_CLI_SCRIPT={shlex.quote(str(self.script))} exec {shlex.quote(sys.executable)} "
            f'{shlex.quote(str(SCRIPTED_CLI))} "$@"\n'
        )
        wrapper.chmod(0o755)

    def set(self, steps: list[dict[str, Any]]) -> None:
        self.script.write_text(json.dumps(steps))


@pytest.fixture
def tokens() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def world(home: Path, tmp_path: Path, tokens: FakeOAuthServer) -> Iterator[tuple[DaemonProcess, FakeCodex, Path]]:
    ws = home / "ws"
    ws.mkdir()
    (ws / "tako.toml").write_text("")
    codex = FakeCodex(tmp_path / "fake")
    env = clean_env(home, TAKO_WORKSPACE=str(ws), PATH=f"{codex.bin}:/usr/bin:/bin", OPENAI_API_KEY=OWN_KEY,
                    OLLAMA_HOST="http://127.0.0.1:9", **FOREIGN, **tokens.env())
    d = DaemonProcess(home, env).start()
    try:
        with d.client() as c:
            c.call("keys.set", {"name": STORED[0], "value": STORED[1]})
            wait_for(lambda: next(p for p in c.call("status")["providers"] if p["name"] == "codex")["ready"], 20)
        yield d, codex, ws
    finally:
        d.stop()
        seen = d.log_text() + d.stderr_text()
        assert not [c for c in CANARIES if c in seen], "a canary secret reached the daemon's log"


def _cmdlines() -> list[bytes]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes())
            except OSError:
                pass  # gone meanwhile
    return found


def test_a_cli_gets_only_its_own_secrets_and_no_secret_is_on_any_command_line(
    world: tuple[DaemonProcess, FakeCodex, Path], tmp_path: Path
) -> None:
    d, codex, _ws = world
    record, release = tmp_path / "env.json", tmp_path / "release"
    codex.set([{"save_env": str(record)}, {"wait_for_file": str(release)}, *ANSWER_OK])
    result: dict[str, Any] = {}
    run = threading.Thread(target=lambda: result.update(d.client(timeout=60).call(
        "infer", {"prompt": "hello", "provider": "codex", "timeout": 60})))
    run.start()
    try:
        wait_for(record.exists, 30)
        # The CLI is running (it waits for the release): look at every command line now.
        cmdlines = b"\n".join(_cmdlines())
        assert b"scripted_cli.py" in cmdlines  # the scan sees the CLI itself
        assert [c for c in CANARIES if c.encode() in cmdlines] == []
    finally:
        release.touch()
        run.join(60)
    assert result["provider"] == "codex" and result["text"] == "ok"
    env = json.loads(record.read_text())
    assert env["OPENAI_API_KEY"] == OWN_KEY
    leaked = sorted(name for name in [*FOREIGN, STORED[0]] if name in env)
    assert leaked == []
    assert env["PATH"].startswith(str(codex.bin)) and env["HOME"]  # the ordinary environment is kept
    assert [c for c in CANARIES if c in json.dumps(result)] == []


def test_a_hanging_cli_times_out_with_a_reason_while_the_daemon_keeps_answering(
    world: tuple[DaemonProcess, FakeCodex, Path], tmp_path: Path
) -> None:
    d, codex, _ws = world
    started = tmp_path / "started"
    codex.set([{"save_argv": str(started)}, {"hang": True}])
    error: list[RemoteError] = []

    def prompt() -> None:
        try:
            d.client(timeout=60).call("infer", {"prompt": "hello", "provider": "codex", "timeout": 3})
        except RemoteError as exc:
            error.append(exc)

    run = threading.Thread(target=prompt)
    run.start()
    wait_for(started.exists, 30)
    with d.client() as other:  # another client is served while the CLI hangs
        assert other.call("ping") == "pong"
        assert other.call("status")["providers"]
    run.join(60)
    assert error and error[0].code in ("provider_failed", "no_provider")
    assert "timeout" in error[0].message or "no answer" in error[0].message


def test_a_cli_flooding_stdout_is_cut_off_with_a_reason_and_memory_stays_bounded(
    world: tuple[DaemonProcess, FakeCodex, Path],
) -> None:
    d, codex, _ws = world
    codex.set([{"flood_line": 256 << 20}, {"hang": True}])  # 256 MiB without a newline
    with d.client(timeout=60) as c, pytest.raises(RemoteError) as err:
        c.call("infer", {"prompt": "hello", "provider": "codex", "timeout": 30})
    assert err.value.code in ("provider_failed", "no_provider")
    with open(f"/proc/{d.pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert rss_kib < 200 * 1024  # the 256 MiB line was never held
    with d.client() as c:
        assert c.call("ping") == "pong"


def test_core_dumps_are_off(world: tuple[DaemonProcess, FakeCodex, Path]) -> None:
    d, _codex, _ws = world
    limits = Path(f"/proc/{d.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert line.split()[4:6] == ["0", "0"], line  # soft and hard


def test_the_daemon_is_not_dumpable(tmp_path: Path) -> None:
    """prctl(PR_GET_DUMPABLE) can only be asked by the process itself: run the
    daemon's own hardening in a child and let it answer."""
    code = (
        "import ctypes, resource; from takod_daemon.main import _no_core_dumps; _no_core_dumps(); "
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))"
    )
    import subprocess

    env = clean_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(None, 1) == ["0", "(0, 0)\n"]
    env["TAKOD_DUMPABLE"] = "1"  # the documented escape hatch for debugging
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(None, 1)[0] == "1"


def test_every_file_and_directory_takod_creates_is_private(
    world: tuple[DaemonProcess, FakeCodex, Path], home: Path, tokens: FakeOAuthServer
) -> None:
    d, codex, ws = world
    ours = {home / "daemon.stderr", ws, ws / "tako.toml"}  # the test's own
    # A pi login about to expire: takod refreshes it and rewrites pi's file.
    agent = ws / ".tako" / "pi" / "agent"
    grant = tokens.add_grant("g", "anthropic", lifetime_s=3600)
    entry = {**grant.pi_entry(), "expires": (int(time.time()) + 60) * 1000}
    # The stored key's pi entry (for Takobot's pi) may have made these already: then they are takod's.
    ours |= {p for p in (ws / ".tako", ws / ".tako" / "pi", agent) if not p.exists()}  # as pi would make them
    agent.mkdir(parents=True, exist_ok=True)
    (agent / "auth.json").write_text(json.dumps({"anthropic": entry}))
    (agent / "auth.json").chmod(0o600)
    codex.set(ANSWER_OK)
    with d.client(timeout=60) as c:
        c.call("settings.set", {"field": "preferred_provider", "value": "codex"})
        c.call("infer", {"prompt": "hello", "provider": "codex"})
        codex.set([{"exit": 3}])
        with pytest.raises(RemoteError):
            c.call("infer", {"prompt": "hello", "provider": "codex"})  # writes the error log
        wait_for(lambda: json.loads((agent / "auth.json").read_text())["anthropic"]["refresh"]
                 == tokens.current_refresh("g"), 30)
    d.stop()
    loose = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            if path not in ours and stat.S_IMODE(st.st_mode) & 0o077 and not stat.S_ISLNK(st.st_mode):
                loose.append(f"{path.relative_to(home)} {stat.S_IMODE(st.st_mode):o}")
    assert loose == []
    written = [ws / ".tako" / "logs" / "error.log", ws / ".tako" / "state" / "inference-settings.json",
               agent / "auth.json", d.state_dir / "daemon.log"]
    assert [p for p in written if not p.is_file()] == []  # the walk saw what it should
