"""Pure rules of activation and sd_notify: whose fds, which name, what launchd's answer means."""

from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

from takod_daemon.activation import choose_fd, launchd_verdict, systemd_fds, take_launchd
from takod_daemon.notify import Notifier, notify_address, watchdog_interval


def test_systemd_fds_are_ours_only_when_listen_pid_is_our_pid() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "takod:other"}
    assert systemd_fds(env, 42) == [(3, "takod"), (4, "other")]
    assert systemd_fds(env, 43) == []
    assert systemd_fds({**env, "LISTEN_PID": ""}, 42) == []


@pytest.mark.parametrize("fds", ["", "x", "-1", "0"])
def test_systemd_fds_with_a_bad_or_empty_count_are_none(fds: str) -> None:
    assert systemd_fds({"LISTEN_PID": "7", "LISTEN_FDS": fds}, 7) == []


def test_unnamed_fds_count_as_ours() -> None:
    assert systemd_fds({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, 7) == [(3, "takod")]
    assert systemd_fds({"LISTEN_PID": "7", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "x"}, 7) == [(3, "x"), (4, "takod")]


@pytest.mark.parametrize("name", ["takod", "takod.socket", "my-own.socket", ""])
def test_the_one_socket_passed_is_ours_whatever_its_name(name: str) -> None:
    assert choose_fd([(3, name)]) == 3


def test_among_several_sockets_ours_is_the_one_named_takod() -> None:
    assert choose_fd([(3, "other"), (4, "takod"), (5, "takod")]) == 4
    assert choose_fd([(3, "other"), (4, "takod.socket")]) is None
    assert choose_fd([]) is None


def test_launchd_answers_decide_between_its_socket_and_binding_our_own() -> None:
    assert launchd_verdict(0) == "activated"
    assert launchd_verdict(errno.ESRCH) == "by-hand"
    assert launchd_verdict(errno.ENOENT) == "no-socket"
    assert launchd_verdict(errno.EALREADY) == "claimed"
    assert launchd_verdict(errno.EPERM) == "failed"


@pytest.mark.parametrize("code", [errno.ESRCH, errno.ENOENT, errno.EALREADY])
def test_started_by_hand_or_misconfigured_launchd_falls_back_to_binding(code: int) -> None:
    assert take_launchd("takod", activate=lambda name: (code, [])) is None


def test_launchd_socket_is_wrapped_and_extra_fds_closed() -> None:
    a, b = socket.socketpair()
    extra = os.dup(b.fileno())
    try:
        got = take_launchd("takod", activate=lambda name: (0, [os.dup(a.fileno()), extra]))
        assert got is not None and got.family == socket.AF_UNIX and not got.get_inheritable()
        got.close()
        with pytest.raises(OSError):
            os.fstat(extra)
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(sys.platform != "darwin", reason="launch_activate_socket exists only in macOS libSystem")
def test_real_launch_activate_socket_says_we_are_not_a_launchd_job() -> None:
    from takod_daemon.activation import _launch_activate_socket

    code, fds = _launch_activate_socket("takod")
    assert (launchd_verdict(code), fds) == ("by-hand", [])


def test_notify_addresses() -> None:
    assert notify_address("/run/user/1000/systemd/notify") == "/run/user/1000/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/1") == b"\0/org/freedesktop/systemd1/notify/1"
    assert notify_address("") is None
    assert notify_address("@") is None
    assert notify_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_the_usec_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 5) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "5"}, 5) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "6"}, 5) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 5) is None
    assert watchdog_interval({}, 5) is None


def test_notifier_without_a_manager_does_nothing_and_one_sends_a_datagram(tmp_path) -> None:  # type: ignore[no-untyped-def]
    idle = Notifier(None, 1.0)
    assert not idle.enabled and idle.watchdog is None
    idle.send(READY="1")
    path = str(tmp_path / "n")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(path)
    try:
        n = Notifier(path, None)
        n.send(READY="1", STATUS="two\nlines")
        assert manager.recv(100) == b"READY=1\nSTATUS=two lines"
        n.close()
    finally:
        manager.close()
