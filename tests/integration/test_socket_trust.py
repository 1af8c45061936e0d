"""The client trusts only its own daemon: two real uids, the attacker listening where the victim connects.

The attacker squats the victim's ``/tmp/takod-<uid>/`` fallback (the socket
path a long ``XDG_STATE_HOME`` and no runtime dir lead to), or gets its own
listening socket hard-linked into the victim's private directory, and records
every byte that arrives. The victim's CLI must send nothing, fail with a clear
message (exit 3), and never claim a key was stored; the victim's own daemon
must refuse the squatted directory without telling anyone to chown it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import wait_for
from tests.multiuser import User, needs_two_users
from tests.rawrpc import WAIT

pytestmark = needs_two_users

CANARY = "sk-canary-socket-trust-6f1c0d2e9a"

# Listens on argv[1] (made 0777 so anyone may connect), writes one JSON line per
# connection to argv[2]: the bytes it received before the peer closed (or 5 s passed).
LISTENER = r"""
import json, os, socket, sys
path, record = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    conn.settimeout(5)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except (socket.timeout, OSError):
        pass
    conn.close()
    with open(record, "a") as f:
        f.write(json.dumps({"received": data.decode("latin-1")}) + "\n")
"""


class Listener:
    """The attacker's recording listener, running as the attacker."""

    def __init__(self, attacker: User, path: Path):
        self.record = attacker.home / "received.jsonl"
        script = attacker.home / "listener.py"
        script.write_text(LISTENER)
        os.chown(script, attacker.uid, attacker.gid)
        self.proc = attacker.popen(
            [str(attacker.python), str(script), str(path), str(self.record)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "listening", self.proc.stderr.read() if self.proc.stderr else line

    def connections(self) -> list[str]:
        """What each connection that ended so far sent."""
        if not self.record.exists():
            return []
        return [json.loads(line)["received"] for line in self.record.read_text().splitlines()]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(WAIT)


def fallback_env(victim: User, **extra: str) -> dict[str, str]:
    """No runtime dir and an XDG_STATE_HOME too long for a socket path: the /tmp fallback."""
    long_state = victim.home / ("s" * 120)
    return victim.env(XDG_STATE_HOME=str(long_state), **extra)


@pytest.fixture
def squatted(two_users: tuple[User, User]) -> Iterator[tuple[User, User, Path, Listener]]:
    """The attacker made ``/tmp/takod-<victim uid>/`` first and listens on its rpc.sock."""
    victim, attacker = two_users
    squat = Path(f"/tmp/takod-{victim.uid}")
    shutil.rmtree(squat, ignore_errors=True)
    attacker.run(["mkdir", "-m", "777", str(squat)], check=True)
    attacker.run(["chmod", "777", str(squat)], check=True)  # past the attacker's umask
    listener = Listener(attacker, squat / "rpc.sock")
    try:
        yield victim, attacker, squat, listener
    finally:
        listener.stop()
        shutil.rmtree(squat, ignore_errors=True)


def test_victim_resolves_the_tmp_fallback(two_users: tuple[User, User]) -> None:
    victim, _ = two_users
    if Path(f"/run/user/{victim.uid}").exists():
        pytest.skip("this machine gives the throwaway user a runtime dir")
    paths = victim.run(victim.takod("paths", "--json"), env=fallback_env(victim, TAKOD_NO_SPAWN="1"))
    assert json.loads(paths.stdout)["socket"] == f"/tmp/takod-{victim.uid}/rpc.sock"


@pytest.mark.parametrize("argv", [["key", "set", "OPENAI_API_KEY", CANARY], ["status"], ["status", "--json"]])
def test_squatted_fallback_gets_nothing_and_the_cli_says_why(squatted, argv: list[str]) -> None:
    victim, attacker, squat, listener = squatted
    result = victim.run(victim.takod(*argv), env=fallback_env(victim))
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 3, out
    assert f"refusing to talk to takod at {squat / 'rpc.sock'}" in out
    assert f"is owned by uid {attacker.uid}, not {victim.uid}" in out and "nothing was sent" in out
    assert "stored" not in out and CANARY not in out
    assert "sudo chown" not in out and "TAKOD_SOCKET" in out
    assert listener.connections() == []  # not even a connect, let alone hello
    # And no daemon of the victim's was started into the squatted directory.
    assert subprocess.run(["pgrep", "-u", str(victim.uid), "-f", "takod_daemon"], capture_output=True).returncode == 1


def test_a_forged_status_line_in_the_squatted_directory_is_never_shown(squatted) -> None:
    """`takod status --short` reads a file beside the socket instead of asking (status_line.py): one the
    attacker planted there, naming the victim's workspace and a live pid, is never believed."""
    victim, attacker, squat, listener = squatted
    forged = squat / "rpc.sock.status"
    forged.write_text(f"takod-status-line 1 {listener.proc.pid} n\nw 1 forgedprovider {victim.home}\n")
    os.chown(forged, attacker.uid, attacker.gid)
    forged.chmod(0o644)
    result = victim.run(victim.takod("status", "--short"), env=fallback_env(victim))
    out = (result.stdout + result.stderr).decode()
    assert (result.returncode, result.stdout.decode()) == (3, "tako:down\n"), out
    assert "forgedprovider" not in out and "nothing was sent" in out
    assert listener.connections() == []


def test_victims_own_daemon_refuses_the_squatted_directory_without_saying_chown(squatted) -> None:
    victim, attacker, squat, listener = squatted
    result = victim.run(victim.takod("serve", "--log", "json"), env=fallback_env(victim), timeout=WAIT)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"socket directory {squat}: is owned by uid {attacker.uid}" in err
    assert "chown" not in err.replace("do not chown", "")
    assert "TAKOD_SOCKET" in err
    assert listener.connections() == []
    assert (squat / "rpc.sock").exists()  # the attacker's socket: not ours to remove


def test_a_listener_of_another_uid_hard_linked_into_our_private_directory_gets_nothing(
    two_users: tuple[User, User],
) -> None:
    """Directory checks pass (ours, 0700); only the peer's uid tells it is not our daemon."""
    victim, attacker = two_users
    run_dir = victim.home / "run"
    victim.run(["mkdir", "-m", "700", str(run_dir)], check=True)
    theirs = attacker.home / "evil.sock"
    listener = Listener(attacker, theirs)
    try:
        ours = run_dir / "rpc.sock"
        os.link(theirs, ours)  # as root: the link an attacker could not make is the test's stand-in
        env = victim.env(TAKOD_SOCKET=str(ours))
        result = victim.run(victim.takod("key", "set", "OPENAI_API_KEY", CANARY), env=env)
        out = (result.stdout + result.stderr).decode()
        assert result.returncode == 3, out
        assert f"runs as uid {attacker.uid}, not as you (uid {victim.uid})" in out and "nothing was sent" in out
        assert "stored" not in out and CANARY not in out
        # The client did connect (that is how it learnt the peer's uid), then closed without a byte.
        wait_for(lambda: listener.connections(), timeout=WAIT)
        assert listener.connections() == [""]
    finally:
        listener.stop()


@pytest.mark.parametrize("mode", [0o755, 0o770])
def test_a_loose_socket_directory_of_our_own_is_refused(two_users: tuple[User, User], mode: int) -> None:
    victim, _ = two_users
    run_dir = victim.home / "run"
    victim.run(["mkdir", str(run_dir)], check=True)
    victim.run(["chmod", f"{mode:o}", str(run_dir)], check=True)
    result = victim.run(victim.takod("status"), env=victim.env(TAKOD_SOCKET=str(run_dir / "rpc.sock")))
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 3, out
    assert f"has mode {mode:04o}, must be 0700" in out and f"chmod 700 '{run_dir}'" in out
    assert sorted(p.name for p in run_dir.iterdir()) == []  # no daemon was started into it


def test_a_socket_directory_symlinked_to_another_users_directory_is_refused(two_users: tuple[User, User]) -> None:
    victim, attacker = two_users
    theirs = attacker.home / "shared"
    attacker.run(["mkdir", "-m", "777", str(theirs)], check=True)
    attacker.run(["chmod", "777", str(theirs)], check=True)
    os.chmod(attacker.home, 0o711)  # the victim can pass through to the shared dir
    listener = Listener(attacker, theirs / "rpc.sock")
    try:
        link = victim.home / "run"
        victim.run(["ln", "-s", str(theirs), str(link)], check=True)
        result = victim.run(victim.takod("key", "set", "OPENAI_API_KEY", CANARY),
                            env=victim.env(TAKOD_SOCKET=str(link / "rpc.sock")))
        out = (result.stdout + result.stderr).decode()
        assert result.returncode == 3, out
        assert f"socket directory {link}: is a symlink" in out and CANARY not in out
        assert listener.connections() == []
    finally:
        listener.stop()


def test_a_runtime_dir_of_another_user_is_never_used(two_users: tuple[User, User]) -> None:
    victim, attacker = two_users
    theirs = attacker.home / "runtime"
    attacker.run(["mkdir", "-m", "700", str(theirs)], check=True)
    paths = victim.run(victim.takod("paths", "--json"),
                       env=victim.env(XDG_RUNTIME_DIR=str(theirs), TAKOD_NO_SPAWN="1"))
    socket = json.loads(paths.stdout)["socket"]
    assert not socket.startswith(str(theirs)) and socket.startswith(str(victim.home))


@pytest.mark.parametrize("command", ["stop", "version"])
def test_stop_and_version_do_not_call_a_squatted_socket_not_running(squatted, command: str) -> None:
    victim, attacker, squat, listener = squatted
    result = victim.run(victim.takod(command), env=fallback_env(victim))
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 3, out
    assert "not running" not in out and f"uid {attacker.uid}" in out
    assert listener.connections() == []
