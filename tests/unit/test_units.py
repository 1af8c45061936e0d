"""The unit files and the plist as ``takod service install`` renders them, checked by systemd's and Apple's own parsers."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from takod import paths, units

REPO = Path(__file__).resolve().parents[2]


def test_source_tree_templates_are_the_renderings() -> None:
    assert (REPO / "systemd" / units.SOCKET_UNIT).read_text() == units.render_socket_unit()
    assert (REPO / "systemd" / units.SERVICE_UNIT).read_text() == units.render_service_unit("@PYTHON@", "@PATH@")
    home = Path("@HOME@")
    assert (REPO / "launchd" / f"{units.LAUNCHD_LABEL}.plist").read_bytes() == units.render_launchd_plist(
        "@PYTHON@", units.launchd_socket_path(home), home / "Library" / "Logs" / "takod", "@PATH@"
    )


def _verify(tmp_path: Path, service: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify --user`` on the two units; it needs a runtime dir to stand up a user manager."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        message = "systemd-analyze not found (Debian package systemd); run scripts/test.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / units.SOCKET_UNIT).write_text(units.render_socket_unit())
    (unit_dir / units.SERVICE_UNIT).write_text(service)
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        [exe, "verify", "--user", "--man=no", str(unit_dir / units.SOCKET_UNIT), str(unit_dir / units.SERVICE_UNIT)],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_systemd_accepts_the_units_without_a_single_warning(tmp_path: Path) -> None:
    result = _verify(tmp_path, units.render_service_unit(sys.executable, "/usr/local/bin:/usr/bin:/bin"))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_interpreter_paths_with_spaces_and_specifier_characters_survive_systemd_parsing(tmp_path: Path) -> None:
    odd = tmp_path / "my venv %h $HOME" / "python"
    odd.parent.mkdir()
    odd.symlink_to(sys.executable)
    result = _verify(tmp_path, units.render_service_unit(str(odd), "/a b/%t:/usr/bin"))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_is_a_real_check_a_missing_interpreter_fails(tmp_path: Path) -> None:
    result = _verify(tmp_path, units.render_service_unit(str(tmp_path / "no-such-python"), "/usr/bin"))
    assert result.returncode != 0 and "no-such-python" in result.stderr


def test_socket_unit_listens_where_clients_look_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    monkeypatch.delenv("TAKOD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    if paths.IS_MACOS:
        pytest.skip("macOS clients look in Application Support (see the plist test)")
    assert paths.socket_path() == units.systemd_socket_path(runtime)
    text = units.render_socket_unit()
    assert "ListenStream=%t/takod/rpc.sock\n" in text
    assert "SocketMode=0600\n" in text and "DirectoryMode=0700\n" in text
    assert f"FileDescriptorName={units.FD_NAME}\n" in text


def test_service_unit_is_a_watchdogged_notify_service_logging_to_the_journal() -> None:
    text = units.render_service_unit("/opt/py/bin/python3", "/usr/bin")
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "WatchdogSec=30",
                 "StandardOutput=journal", "ExecStart=/opt/py/bin/python3 -m takod_daemon --log journal",
                 'Environment="PATH=/usr/bin"', "Requires=takod.socket"):
        assert f"\n{line}\n" in text, line


def test_launchd_plist_parses_and_has_a_0600_socket_keepalive_on_failure_and_logs(tmp_path: Path) -> None:
    sock = units.launchd_socket_path(tmp_path)
    data = plistlib.loads(units.render_launchd_plist("/opt/py/bin/python3", sock, tmp_path / "logs", "/usr/bin:/bin"))
    assert data["Label"] == "dev.tako.takod"
    assert data["ProgramArguments"] == ["/opt/py/bin/python3", "-m", "takod_daemon", "--log", "json"]
    assert data["Sockets"] == {units.FD_NAME: {"SockPathName": str(sock), "SockPathMode": 384}}
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["StandardOutPath"] == data["StandardErrorPath"] == str(tmp_path / "logs" / "daemon.stderr")
    assert data["EnvironmentVariables"] == {"PATH": "/usr/bin:/bin"}
    assert str(sock) == str(tmp_path / "Library" / "Application Support" / "takod" / "rpc.sock")
