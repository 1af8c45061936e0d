"""Pure rules behind ``takod service`` and the client's choice between an installed service and self-spawn."""

from __future__ import annotations

from pathlib import Path

from takod import units
from takod.autostart import service_start_command
from takod.cli_service import environment_problems, socket_problem
from takod.paths import DirProblem

HOME = Path("/home/u")


def _install(tmp_path: Path, path: Path, marked: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {units.MARKER}\n" if marked else "[Socket]\n")


def test_systemd_route_only_for_our_unit_and_its_socket(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    sock = tmp_path / "rt" / "takod" / "rpc.sock"
    assert service_start_command(sock, env, 1000, tmp_path, macos=False) is None  # nothing installed
    _install(tmp_path, tmp_path / ".config" / "systemd" / "user" / "takod.socket")
    assert service_start_command(sock, env, 1000, tmp_path, macos=False) == ["systemctl", "--user", "start", "takod.socket"]
    # A client pointed elsewhere (TAKOD_SOCKET) is not served by the unit: it spawns its own.
    assert service_start_command(tmp_path / "other.sock", env, 1000, tmp_path, macos=False) is None
    # Without XDG_RUNTIME_DIR the unit's %t is /run/user/<uid>, which is where such a client looks too.
    assert service_start_command(Path("/run/user/1000/takod/rpc.sock"), {}, 1000, tmp_path, macos=False) is not None


def test_a_hand_written_unit_is_not_taken_for_ours(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_RUNTIME_DIR": "/run/user/5"}
    _install(tmp_path, tmp_path / "cfg" / "systemd" / "user" / "takod.socket", marked=False)
    assert service_start_command(Path("/run/user/5/takod/rpc.sock"), env, 5, tmp_path, macos=False) is None


def test_launchd_route(tmp_path: Path) -> None:
    sock = units.launchd_socket_path(tmp_path)
    assert service_start_command(sock, {}, 501, tmp_path, macos=True) is None
    plist = units.launchd_plist_path(tmp_path)
    _install(tmp_path, plist)
    assert service_start_command(sock, {}, 501, tmp_path, macos=True) == ["launchctl", "bootstrap", "gui/501", str(plist)]


def test_environment_problems() -> None:
    assert environment_problems({"XDG_RUNTIME_DIR": "/run/user/7"}, 7, "u", None, True) == []
    assert environment_problems({"XDG_RUNTIME_DIR": "/run/user/7"}, 7, "u", None, None) == []  # unknowable: silent
    unset = environment_problems({}, 7, "u", None, False)
    assert [p.code for p in unset] == ["xdg_runtime_dir_unset", "linger_off"]
    assert unset[0].fix.endswith("`export XDG_RUNTIME_DIR=/run/user/7`") and unset[1].fix == "loginctl enable-linger u"
    dir_problem = DirProblem(Path("/run/user/7"), "has mode 0755, must be 0700", "chmod 700 '/run/user/7'")
    bad = environment_problems({"XDG_RUNTIME_DIR": "/run/user/7"}, 7, "u", dir_problem, True)
    assert [(p.code, p.message, p.fix) for p in bad] == [
        ("xdg_runtime_dir_unusable", "XDG_RUNTIME_DIR /run/user/7 has mode 0755, must be 0700", "chmod 700 '/run/user/7'")]


def test_socket_problem_names_the_variable_to_fix() -> None:
    service = Path("/run/user/7/takod/rpc.sock")
    assert socket_problem(service, service, {}) is None
    p = socket_problem(Path("/x.sock"), service, {"TAKOD_SOCKET": "/x.sock"})
    assert p is not None and p.fix == f"unset TAKOD_SOCKET (or set it to {service})"
    p = socket_problem(Path("/home/u/.local/state/takod/s.1.sock"), service, {})
    assert p is not None and "XDG_RUNTIME_DIR" in p.fix
