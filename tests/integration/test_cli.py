"""The ``takod`` command as users run it: a subprocess with a clean environment in a temporary HOME."""

from __future__ import annotations

import argparse
import json
import os
import pty
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import takod
from takod.cli import build_parser
from takod.schema import API_PROVIDERS
from tests.harness import DaemonProcess, clean_env, line_queue, wait_for
from tests.procfs import daemons_for
from tests.rawrpc import WAIT

TAKOD = shutil.which("takod")


def takod_cmd(*args: str) -> list[str]:
    assert TAKOD, "the takod console script is not on PATH (pip install -e .)"
    return [TAKOD, *args]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        takod_cmd(*args), env=env, cwd=env["HOME"], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command path the CLI defines, e.g. ("key", "set")."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += commands(sub, (*prefix, name))
    return found


@pytest.fixture
def env(daemon_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment: the test daemon's socket, and never a spawned daemon."""
    return dict(daemon_env, TAKOD_NO_SPAWN="1")


# help and version --------------------------------------------------------------


def test_version(env: dict[str, str]) -> None:
    result = run(env, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"takod {takod.__version__}")


def test_help_lists_the_public_commands(env: dict[str, str]) -> None:
    result = run(env, "--help")
    assert result.returncode == 0
    for name in ("status", "paths", "stop", "watch", "serve"):
        assert name in result.stdout


@pytest.mark.parametrize("command", commands(build_parser()), ids=" ".join)
def test_every_command_has_help(env: dict[str, str], command: tuple[str, ...]) -> None:
    result = run(env, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: takod " + " ".join(command))
    assert "--json" in result.stdout  # every command takes --json
    assert not list(Path(env["HOME"]).glob("run/*.sock"))  # help never starts a daemon


# status, paths ---------------------------------------------------------------------


STATUS_KEYS = {"daemon", "workspace", "selected", "providers", "seq", "updated_at"}
DAEMON_KEYS = {"pid", "version", "protocol", "started_at", "uptime_s", "socket", "state_dir", "activated", "connections"}
PROVIDER_KEYS = {"name", "ready", "level", "reason", "hint", "detail"}


def test_status_json_has_stable_keys(daemon: DaemonProcess, env: dict[str, str]) -> None:
    result = run(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert STATUS_KEYS <= set(status)
    assert DAEMON_KEYS <= set(status["daemon"])
    assert status["daemon"]["pid"] == daemon.pid and status["daemon"]["socket"] == str(daemon.socket)
    assert [p["name"] for p in status["providers"]] == ["pi", "ollama", "codex", "claude", "gemini", *API_PROVIDERS]
    for provider in status["providers"]:
        assert PROVIDER_KEYS <= set(provider)
        assert isinstance(provider["ready"], bool)


def test_status_for_people(daemon: DaemonProcess, env: dict[str, str]) -> None:
    result = run(env, "status")
    assert result.returncode == 0, result.stderr
    assert f"pid {daemon.pid}" in result.stdout and str(daemon.socket) in result.stdout
    for name in ("pi", "ollama", "codex", "claude", "gemini"):
        assert f"  {name} " in result.stdout
    assert "\033[" not in result.stdout  # not a terminal: no colour


def test_paths_json(env: dict[str, str]) -> None:
    result = run(env, "paths", "--json")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    sock = env["TAKOD_SOCKET"]
    assert paths == {
        "socket": sock,
        "lock": sock + ".lock",
        "state_dir": env["TAKOD_STATE_DIR"],
        "log": str(Path(env["TAKOD_STATE_DIR"]) / "daemon.log"),
        "workspace": env["HOME"],
    }


# stop and watch ---------------------------------------------------------------------


def reap_in_background(daemon: DaemonProcess) -> threading.Thread:
    """Reap the daemon when it exits, as the shell that started it would."""
    assert daemon.proc is not None
    reaper = threading.Thread(target=daemon.proc.wait, daemon=True)
    reaper.start()
    return reaper


def test_stop_then_stop_again(daemon: DaemonProcess, daemon_env: dict[str, str]) -> None:
    reaper = reap_in_background(daemon)
    result = run(daemon_env, "stop")  # spawning is allowed: stop must still never start one
    assert (result.returncode, result.stdout.strip()) == (0, f"takod stopped (pid {daemon.pid})"), result.stderr
    reaper.join(WAIT)
    assert daemon.wait() == 0 and not daemon.socket.exists()

    again = run(daemon_env, "stop")
    assert (again.returncode, again.stdout.strip()) == (0, "takod is not running")
    again_json = run(daemon_env, "stop", "--json")
    assert (again_json.returncode, json.loads(again_json.stdout)) == (0, {"stopped": False, "running": False})
    assert not daemon.socket.exists() and daemons_for(daemon.socket) == []


def test_watch_json_prints_the_stopping_event(daemon: DaemonProcess, env: dict[str, str]) -> None:
    watch = subprocess.Popen(
        takod_cmd("watch", "--json", "--topic", "daemon"), env=env, cwd=env["HOME"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = line_queue(watch)
    try:
        # Reload until the watcher shows it is subscribed (each SIGHUP publishes "reloaded").
        def subscribed() -> bool:
            daemon.signal(signal.SIGHUP)
            try:
                return json.loads(lines.get(timeout=0.5))["payload"] == {"state": "reloaded"}
            except queue.Empty:
                return False

        wait_for(subscribed, timeout=WAIT)
        reaper = reap_in_background(daemon)
        assert run(env, "stop").returncode == 0
        reaper.join(WAIT)
        while True:
            event = json.loads(lines.get(timeout=WAIT))
            if event["payload"]["state"] != "reloaded":
                break
        assert set(event) == {"sub_id", "seq", "topic", "payload"}
        assert event["topic"] == "daemon"
        assert event["payload"] == {"state": "stopping", "reason": "shutdown requested"}
        assert watch.wait(WAIT) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


# exit codes and colour ---------------------------------------------------------------


def test_unreachable_daemon_exits_3(env: dict[str, str]) -> None:
    result = run(env, "status")
    assert result.returncode == 3
    assert "takod is not running" in result.stderr and "Traceback" not in result.stderr
    as_json = run(env, "status", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["error"]["code"] == "unavailable"
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == []


@pytest.mark.parametrize("args", [["frobnicate"], ["status", "--bogus"], ["watch", "--topic", "weather"], []])
def test_bad_usage_exits_2(env: dict[str, str], args: list[str]) -> None:
    result = run(env, *args)
    assert result.returncode == 2
    assert "usage: takod" in result.stdout + result.stderr


def run_in_pty(env: dict[str, str], *args: str) -> str:
    """Run with stdout on a terminal, so colour would be used unless something forbids it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(takod_cmd(*args), env=env, cwd=env["HOME"], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        assert proc.wait(WAIT) == 0, proc.stderr.read() if proc.stderr else ""
    return output.decode()


def test_no_color_turns_off_escape_codes_on_a_terminal(daemon: DaemonProcess, env: dict[str, str]) -> None:
    env = dict(env, TERM="xterm")
    env.pop("NO_COLOR", None)
    assert "\033[" in run_in_pty(env, "status")  # colour on a terminal by default...
    plain = run_in_pty(dict(env, NO_COLOR="1"), "status")
    assert f"pid {daemon.pid}" in plain
    assert "\033" not in plain  # ...and none at all with NO_COLOR


# a thin client -----------------------------------------------------------------------


def test_cli_imports_only_stdlib_msgspec_and_takod(home: Path) -> None:
    # msgspec is imported first so what it pulls in itself (typing_extensions) is not blamed on us.
    script = """
import sys
start = set(sys.modules)
import msgspec
with_msgspec = set(sys.modules)
import takod.cli
print(" ".join(sorted(with_msgspec - start)))
print(" ".join(sorted(set(sys.modules) - with_msgspec)))
"""
    result = subprocess.run([sys.executable, "-c", script], env=clean_env(home), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    by_msgspec, by_cli = ({name.split(".")[0] for name in line.split()} for line in result.stdout.splitlines())
    for heavy in ("anyio", "structlog", "httpx", "keyring", "watchfiles", "takod_daemon", "msgpack"):
        assert heavy not in by_msgspec | by_cli
    assert by_cli - set(sys.stdlib_module_names) == {"takod"}
