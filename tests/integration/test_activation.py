"""Socket activation and sd_notify, exactly as systemd does them, with no systemd.

The test plays the service manager: it creates the listening socket (0600 in a
0700 directory under a runtime dir, as takod.socket says), and starts the real
daemon through a tiny wrapper that moves the socket to fd 3, sets LISTEN_PID
(and WATCHDOG_PID) to its own pid and execs, so the daemon sees what a
systemd-started one sees. The manager's NOTIFY_SOCKET is a datagram socket
the test reads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import clean_env
from tests.rawrpc import WAIT, RawConn

# What systemd does between fork and exec: the listener at fd 3, LISTEN_PID = the pid that will exec.
WRAPPER = r"""
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = os.environ["WATCHDOG_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class Manager:
    """The far side of sd_notify: reads datagrams the daemon sends."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(WAIT)
        self.messages: list[dict[str, str]] = []

    def until(self, key: str) -> dict[str, str]:
        """Read messages until one carries ``key``; return it."""
        while True:
            data = self.sock.recv(4096).decode()
            message = dict(line.split("=", 1) for line in data.split("\n") if line)
            self.messages.append(message)
            if key in message:
                return message


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, home: Path) -> Iterator[Manager]:
    address = str(home / "notify") if request.param == "path" else f"@takod-test-{uuid.uuid4().hex}"
    m = Manager(address)
    yield m
    m.sock.close()


def activation_env(home: Path, **extra: str) -> dict[str, str]:
    runtime = home / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = clean_env(home, XDG_RUNTIME_DIR=str(runtime), LISTEN_FDS="1", LISTEN_FDNAMES="takod", **extra)
    del env["TAKOD_SOCKET"]  # found the way a systemd-started daemon finds it
    return env


def listening_socket(home: Path) -> tuple[socket.socket, Path]:
    """What takod.socket makes: %t/takod/rpc.sock, DirectoryMode=0700, SocketMode=0600."""
    path = home / "rt" / "takod" / "rpc.sock"
    path.parent.mkdir(mode=0o700, parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock, path


def start_activated(home: Path, listener: socket.socket, env: dict[str, str]) -> subprocess.Popen[bytes]:
    fd = listener.fileno()
    with open(home / "daemon.stderr", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(fd), "-m", "takod_daemon", "--log", "json"],
            env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(fd,), cwd=home,
        )
    listener.close()  # the manager keeps its copy in real life; the daemon's copy is enough here
    return proc


def test_activated_daemon_serves_the_socket_it_was_given_and_talks_to_the_manager(home: Path, manager: Manager) -> None:
    listener, path = listening_socket(home)
    # Reachable before the daemon even runs: this request waits in the backlog.
    early = RawConn(path)
    early.request(1, "ping")
    env = activation_env(home, NOTIFY_SOCKET=manager.address, WATCHDOG_USEC="200000")
    proc = start_activated(home, listener, env)
    try:
        ready = manager.until("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith(f"serving {path}; ")
        assert early.recv() == [1, 1, None, "pong"]
        with RawConn(path) as c:
            c.request(2, "status")
            daemon = c.recv()[3]["daemon"]
        assert daemon["activated"] is True and daemon["socket"] == str(path) and daemon["pid"] == proc.pid
        # Watchdog pings keep coming from the event loop, at half of WATCHDOG_USEC.
        manager.until("WATCHDOG")
        assert manager.until("WATCHDOG")["WATCHDOG"] == "1"
        # The lock sits beside the socket the manager made, and this daemon holds it.
        lock = path.with_name("rpc.sock.lock")
        assert lock.read_text().strip() == str(proc.pid)
        # fd 3 is close-on-exec now, so provider CLIs the daemon runs never inherit the listener.
        flags = int(Path(f"/proc/{proc.pid}/fdinfo/3").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_CLOEXEC
        assert os.readlink(f"/proc/{proc.pid}/fd/3").startswith("socket:")

        proc.send_signal(signal.SIGTERM)
        stopping = manager.until("STOPPING")
        assert stopping["STOPPING"] == "1" and stopping["STATUS"] == "stopping: SIGTERM"
        assert proc.wait(WAIT) == 0
    finally:
        early.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert path.exists()  # the manager's socket file: never unlinked by the daemon


def test_inherited_variables_are_ignored_and_never_passed_on(home: Path) -> None:
    env = activation_env(home, LISTEN_PID="1", TAKOD_SOCKET=str(home / "run" / "rpc.sock"),
                         NOTIFY_SOCKET=str(home / "notify"), WATCHDOG_USEC="1000000", WATCHDOG_PID="1")
    code = ("import os\nfrom takod_daemon.activation import activated_listener\nfrom takod_daemon.notify import Notifier\n"
            "n = Notifier.from_env()\nprint(activated_listener(), n.watchdog)\n"
            "print(sorted(k for k in os.environ if k.startswith(('LISTEN_', 'NOTIFY_', 'WATCHDOG_'))))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Not ours (LISTEN_PID, WATCHDOG_PID name another process), and gone before anything copies the environment.
    assert proc.stdout.splitlines() == ["None None", "[]"]


@pytest.mark.parametrize("fd_name", ["takod.socket", "packager.socket"])
def test_the_one_socket_passed_is_served_whatever_systemd_named_it(home: Path, manager: Manager, fd_name: str) -> None:
    # A unit without FileDescriptorName=takod: systemd names the fd after the unit.
    listener, path = listening_socket(home)
    env = activation_env(home, NOTIFY_SOCKET=manager.address)
    env["LISTEN_FDNAMES"] = fd_name
    proc = start_activated(home, listener, env)
    try:
        assert manager.until("READY")["STATUS"].startswith(f"serving {path}; ")
        with RawConn(path) as c:
            c.request(1, "status")
            assert c.recv()[3]["daemon"]["activated"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_activated_daemon_that_finds_the_lock_held_says_who_holds_it(home: Path, manager: Manager) -> None:
    listener, path = listening_socket(home)
    lock = path.with_name("rpc.sock.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        proc = start_activated(home, listener, activation_env(home, NOTIFY_SOCKET=manager.address))
        assert proc.wait(60) == 1  # a failure for the manager to see, after waiting in case it was stopping
    finally:
        os.close(fd)
    stderr = (home / "daemon.stderr").read_text()
    assert f"takod (pid {os.getpid()}) holds the instance lock, but systemd owns {path} now" in stderr
    assert f"`kill {os.getpid()}`" in stderr
    # The manager hears why too (systemctl status shows STATUS=; ERRNO= goes to the journal).
    failed = manager.until("ERRNO")
    assert failed["ERRNO"] == str(errno.EADDRINUSE)
    assert f"holds the instance lock, but systemd owns {path} now" in failed["STATUS"]


def test_a_daemon_started_by_hand_never_steals_a_socket_someone_listens_on(home: Path) -> None:
    listener, path = listening_socket(home)  # the service manager's, with no daemon behind it yet
    inode = path.stat().st_ino
    env = clean_env(home, TAKOD_SOCKET=str(path))
    try:
        result = subprocess.run([sys.executable, "-m", "takod_daemon", "--log", "json"], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert f"cannot listen on {path}: something else listens on {path}" in result.stderr
        assert path.stat().st_ino == inode
        with RawConn(path):  # still the manager's: a client's connection waits in its backlog
            pass
    finally:
        listener.close()
