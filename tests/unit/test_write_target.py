"""The one write primitive: a symlink is followed only to a private file of
ours of the same kind, a dangling link's target is never created, and logs
never append through a symlink or a hard link."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from takod_daemon.credentials.codex_auth import CODEX_AUTH_KIND
from takod_daemon.credentials.files import FileProblem, atomic_write, check_dirs, open_private_append, write_target
from takod_daemon.credentials.pi_auth import PI_AUTH_KIND
from takod_daemon.credentials.settings import SETTINGS_KIND

PI_DOC = {"anthropic": {"type": "api_key", "key": "sk-ant-canary-write-target"}}
PACKAGE = json.dumps({"name": "repo", "version": "1.0.0", "scripts": {"test": "x"}}) + "\n"
NOBODY = 65534


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def link(at: Path, to: Path | str) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(to)
    return at


def test_a_plain_or_missing_path_is_its_own_target(tmp_path: Path) -> None:
    assert write_target(tmp_path / "auth.json", PI_AUTH_KIND) == tmp_path / "auth.json"
    private(tmp_path / "auth.json", "{}")
    assert write_target(tmp_path / "auth.json", None) == tmp_path / "auth.json"


def test_a_link_to_your_own_pi_auth_json_is_written_at_its_target(tmp_path: Path) -> None:
    home_auth = private(tmp_path / "home/.pi/agent/auth.json", json.dumps(PI_DOC))
    ws_auth = link(tmp_path / "ws/.tako/pi/agent/auth.json", home_auth)
    atomic_write(ws_auth, b'{"x": {"type": "api_key", "key": "k"}}\n', kind=PI_AUTH_KIND)
    assert ws_auth.is_symlink() and os.readlink(ws_auth) == str(home_auth)
    assert json.loads(home_auth.read_text()) == {"x": {"type": "api_key", "key": "k"}}
    assert stat.S_IMODE(home_auth.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", [PI_AUTH_KIND, CODEX_AUTH_KIND, SETTINGS_KIND])
def test_a_link_to_package_json_is_never_written(tmp_path: Path, kind: object) -> None:
    package = private(tmp_path / "repo/package.json", PACKAGE)  # even a private one of ours
    at = link(tmp_path / "repo/.tako/pi/agent/auth.json", "../../../package.json")
    with pytest.raises(FileProblem) as caught:
        atomic_write(at, b'{"openai-codex": {"type": "oauth"}}', kind=kind)  # type: ignore[arg-type]
    assert caught.value.reason == "unsafe_link" and "remove the link" in str(caught.value)
    assert package.read_text() == PACKAGE and stat.S_IMODE(package.stat().st_mode) == 0o600
    assert sorted(p.name for p in package.parent.iterdir()) == [".tako", "package.json"]  # no temp left


def test_a_dangling_link_never_creates_its_target(tmp_path: Path) -> None:
    at = link(tmp_path / "ws/.tako/pi/agent/auth.json", "../../../leaked.json")
    with pytest.raises(FileProblem) as caught:
        atomic_write(at, json.dumps(PI_DOC).encode(), kind=PI_AUTH_KIND)
    assert caught.value.reason == "unsafe_link"
    assert not (tmp_path / "ws/leaked.json").exists() and at.is_symlink()


@pytest.mark.parametrize("how", ["group_readable", "not_ours", "hard_linked", "a_directory", "empty_other_name"])
def test_a_link_to_a_pi_file_that_is_not_private_and_ours_is_never_written(tmp_path: Path, how: str) -> None:
    target = tmp_path / "other/auth.json"
    if how == "a_directory":
        target.mkdir(parents=True)
    elif how == "empty_other_name":
        target = private(tmp_path / "other/notes.txt", "")
    else:
        private(target, json.dumps(PI_DOC), 0o640 if how == "group_readable" else 0o600)
    if how == "not_ours":
        os.chown(target, NOBODY, NOBODY)
    if how == "hard_linked":
        os.link(target, tmp_path / "other/second-name")
    before = None if target.is_dir() else target.read_bytes()
    at = link(tmp_path / "ws/auth.json", target)
    with pytest.raises(FileProblem) as caught:
        atomic_write(at, b"{}", kind=PI_AUTH_KIND)
    assert caught.value.reason == "unsafe_link"
    assert before is None or target.read_bytes() == before


def test_an_empty_file_of_the_right_name_may_be_linked(tmp_path: Path) -> None:
    target = private(tmp_path / "shared/auth.json", "")
    atomic_write(link(tmp_path / "ws/auth.json", target), b"{}\n", kind=PI_AUTH_KIND)
    assert target.read_text() == "{}\n"


def test_files_without_a_kind_are_never_written_through_a_link(tmp_path: Path) -> None:
    target = private(tmp_path / "keys.json", '{"keys": {}}')
    at = link(tmp_path / "state/keys.json", target)
    with pytest.raises(FileProblem):
        atomic_write(at, b'{"keys": {"X": "secret"}}')
    assert target.read_text() == '{"keys": {}}'


def test_a_hard_link_at_the_path_is_broken_not_written_through(tmp_path: Path) -> None:
    package = private(tmp_path / "package.json", PACKAGE)
    at = tmp_path / "ws/auth.json"
    at.parent.mkdir()
    os.link(package, at)
    atomic_write(at, b"{}\n", kind=PI_AUTH_KIND)
    assert package.read_text() == PACKAGE and at.read_text() == "{}\n"


def test_logs_never_append_through_a_symlink_or_a_hard_link(tmp_path: Path) -> None:
    outside = private(tmp_path / "outside.txt", "mine\n", 0o644)
    sym = link(tmp_path / "state/daemon.log", outside)
    with pytest.raises(FileProblem) as caught:
        open_private_append(sym)
    assert caught.value.reason == "unsafe_link"
    hard = tmp_path / "state/error.log"
    os.link(outside, hard)
    with pytest.raises(FileProblem):
        open_private_append(hard)
    assert outside.read_text() == "mine\n"
    fd = open_private_append(tmp_path / "state/fresh.log")
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "state/fresh.log").stat().st_mode) == 0o600


def test_check_dirs_refuses_a_symlinked_directory_below_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".tako" / "pi").mkdir(parents=True)
    target = ws / ".tako" / "pi" / "agent" / "auth.json"
    check_dirs(ws, target)  # not made yet: fine
    (ws / ".tako" / "pi" / "agent").symlink_to("../..")
    with pytest.raises(FileProblem) as caught:
        check_dirs(ws, target)
    assert caught.value.reason == "unsafe_link" and ".tako/pi/agent" in caught.value.detail
    linked_root = tmp_path / "alias"
    linked_root.symlink_to(tmp_path / "real")
    (tmp_path / "real" / ".tako").mkdir(parents=True)
    check_dirs(linked_root, linked_root / ".tako" / "state" / "x.json")  # the root itself may be a link


def test_a_log_that_is_a_fifo_is_a_clear_problem_not_a_hang_or_a_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "daemon.log"
    os.mkfifo(fifo)
    with pytest.raises(FileProblem) as caught:
        open_private_append(fifo)  # O_NONBLOCK: no reader is ENXIO at once, never a wait
    assert caught.value.reason == "unwritable" and "remove it" in caught.value.detail


def test_check_dirs_leaves_a_file_in_the_way_to_the_write_itself(tmp_path: Path) -> None:
    (tmp_path / ".tako").write_text("not a directory")
    check_dirs(tmp_path, tmp_path / ".tako" / "pi" / "agent" / "auth.json")
