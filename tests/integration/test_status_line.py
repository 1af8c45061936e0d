"""`takod status --short` from the daemon's status-line file (takod.status_line):
it says what `status` says, in every state a sequence of changes reaches, and it is
answered without the codec only when the file can vouch for it. A real daemon in a
temporary HOME, the real CLI entry point in a child process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from takod.status_line import path_for
from tests.harness import DaemonProcess, wait_for

# The CLI's own entry point; it then says on stderr which road it took: the file
# (no takod.cli, hence no msgspec) or the daemon.
PROBE = """
import sys
from takod.__main__ import main
code = main(["status", "--short"])
road = "daemon" if "takod.cli" in sys.modules else "file" if "msgspec" not in sys.modules else "file+msgspec"
sys.stderr.write("\\nROAD " + road + "\\n")
sys.exit(code)
"""
KEYS = ("OPENAI_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY")
SECRET = "sk-statusline-CANARY-0123456789abcdef"


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "takod", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def short(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """(exit code, the line, the road taken)."""
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    road = p.stderr.rsplit("ROAD ", 1)[-1].strip()
    return p.returncode, p.stdout.strip(), road


def from_file(env: dict[str, str], cwd: Path) -> str:
    """The line, once the file answers it: a background evaluation (an Ollama probe)
    between two asks may send one more to the daemon, never a wrong line."""
    lines = set()
    for _ in range(5):
        code, line, road = short(env, cwd)
        lines.add((code, line))
        if road == "file":
            assert len(lines) == 1, lines
            return line
    raise AssertionError(f"never answered from the file: {lines}")


def status(env: dict[str, str], cwd: Path) -> tuple[str, int]:
    st = json.loads(cli(env, cwd, "status", "--json").stdout)
    return f"tako:{st['selected'] or 'none'}", st["seq"]


def agreed(env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """The line, checked against `status` taken around it with no change in between
    (the same ``seq`` before and after), and the road: "file" once the file can vouch
    for it (a background evaluation, e.g. an Ollama probe, may make it ask once more)."""
    for _ in range(20):
        want, seq = status(env, cwd)  # also what makes the daemon write this shell's answer
        code, line, road = short(env, cwd)
        again, seq_after = status(env, cwd)
        if seq == seq_after and want == again:
            assert (code, line) == (0, want), f"status --short said {line!r}, status said {want!r} ({road})"
            if road == "file":
                return line, road
    raise AssertionError("status --short never answered from the file")


@pytest.fixture
def env(daemon: DaemonProcess, daemon_env: dict[str, str]) -> dict[str, str]:
    return dict(daemon_env, TAKOD_NO_SPAWN="1")


def test_status_short_reads_the_file_and_matches_status(env: dict[str, str], home: Path) -> None:
    assert agreed(env, home) == ("tako:none", "file")
    assert path_for(Path(env["TAKOD_SOCKET"])).stat().st_mode & 0o777 == 0o600


def test_a_differential_over_generated_changes(env: dict[str, str], home: Path, workspace: Path) -> None:
    """Keys stored and cleared, preferences, keys exported in the shell, two workspaces:
    after each change the prompt line is what `status` says, and from the file
    whenever the daemon has answered this shell in this workspace since its last
    evaluation (`agreed` asks `status` first)."""
    rng = random.Random(1507)
    for step in range(24):
        action = rng.choice(["set", "clear", "prefer", "shell"])
        name = rng.choice(KEYS)
        if action == "set":
            assert cli(env, home, "key", "set", name, f"{SECRET}-{step}").returncode == 0
        elif action == "clear":
            cli(env, home, "key", "clear", name)
        elif action == "prefer":
            cwd = rng.choice([home, workspace])
            assert cli(env, cwd, "prefer", rng.choice(["auto", "openai", "groq", "mistral"])).returncode == 0
        shell = {k: f"{SECRET}-shell-{k}" for k in KEYS if rng.random() < 0.3}
        for cwd in (home, workspace):
            agreed({**env, **shell}, cwd)
    log = (Path(env["TAKOD_STATE_DIR"]) / "takod.log")
    assert SECRET not in path_for(Path(env["TAKOD_SOCKET"])).read_text()
    assert not log.exists() or SECRET not in log.read_text()


def test_keys_in_the_shell_count_and_are_never_written(env: dict[str, str], home: Path) -> None:
    shell = {**env, "OPENAI_API_KEY": SECRET}
    assert short(shell, home)[1:] == ("tako:openai", "daemon")  # first with these keys: asked
    assert from_file(shell, home) == "tako:openai"
    assert from_file(env, home) == "tako:none"
    other = {**env, "OPENAI_API_KEY": SECRET + "x"}  # another value is another answer
    assert short(other, home)[1:] == ("tako:openai", "daemon")
    assert SECRET not in path_for(Path(env["TAKOD_SOCKET"])).read_text()


def test_an_answer_for_keys_expires_with_the_next_evaluation(env: dict[str, str], home: Path) -> None:
    shell = {**env, "GROQ_API_KEY": SECRET}
    assert short(shell, home)[1:] == ("tako:groq", "daemon")
    assert cli(env, home, "key", "set", "MISTRAL_API_KEY", SECRET).returncode == 0
    wait_for(lambda: status(env, home)[0] == "tako:mistral")
    assert short(shell, home)[1:] == ("tako:groq", "daemon")  # the file cannot vouch for it any more
    assert from_file(shell, home) == "tako:groq"


def test_a_dead_daemon_file_is_never_shown(env: dict[str, str], home: Path, daemon: DaemonProcess) -> None:
    assert agreed(env, home)[1] == "file"
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    assert path_for(Path(env["TAKOD_SOCKET"])).exists()  # left behind by kill -9
    assert short(env, home) == (3, "tako:down", "daemon")


def test_a_stopped_daemon_removes_the_file(env: dict[str, str], home: Path, daemon: DaemonProcess) -> None:
    assert agreed(env, home)[1] == "file"
    daemon.stop()
    assert not path_for(Path(env["TAKOD_SOCKET"])).exists()
    assert short(env, home)[:2] == (3, "tako:down")


def forge(env: dict[str, str], home: Path, selected: str) -> Path:
    """Rewrite the file to claim ``selected`` for ``home``, pid and nonce kept."""
    path = path_for(Path(env["TAKOD_SOCKET"]))
    head = path.read_text().splitlines()[0]
    path.write_text(f"{head}\nw 999999 {selected} {home}\n")
    return path


@pytest.mark.parametrize("how", ["mode", "symlink", "directory-mode"])
def test_a_file_that_is_not_private_is_not_believed(env: dict[str, str], home: Path, how: str) -> None:
    """A file someone else could have written, or one reached through a link, never
    answers: the daemon is asked (and it says the truth)."""
    assert agreed(env, home)[1] == "file"
    path = forge(env, home, "codex")
    if how == "mode":
        path.chmod(0o644)
    elif how == "symlink":
        real = home / "forged"
        path.rename(real)
        path.symlink_to(real)
    else:
        path.parent.chmod(0o755)  # the directory: the client then refuses the socket too
    code, line, road = short(env, home)
    assert line != "tako:codex" and road.startswith("daemon")
    if how == "directory-mode":
        assert code == 3
    else:
        assert (code, line) == (0, "tako:none")


def test_a_file_naming_a_dead_pid_is_not_believed(env: dict[str, str], home: Path) -> None:
    """A file left by a daemon that died (its pid gone) never answers."""
    assert agreed(env, home)[1] == "file"
    path = path_for(Path(env["TAKOD_SOCKET"]))
    lines = path.read_text().splitlines()
    magic, version, _, nonce = lines[0].split(" ")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text("\n".join([f"{magic} {version} {dead.pid} {nonce}", *lines[1:]]) + "\n")
    assert short(env, home)[1:] == ("tako:none", "daemon")
