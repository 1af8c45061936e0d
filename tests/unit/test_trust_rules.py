"""The trust rule (takod_daemon/trust.py): pure verdicts on stat results, and the
walks over real directories (run as root here, judged for a made-up uid that owns them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from takod_daemon.trust import REASON, check_path, check_workspace, judge

ME, OTHER, MYGROUP, SHARED = 4242, 4343, 4242, 100


def st(mode: int, uid: int = ME, gid: int = MYGROUP) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def verdict(s: os.stat_result, sticky_ok: bool = False) -> tuple[str, bool] | None:
    return judge(s, uid=ME, private_gids=lambda: {MYGROUP}, sticky_ok=sticky_ok)


DIR, FILE, LINK = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK


def test_own_and_roots_private_paths_are_trusted() -> None:
    assert verdict(st(DIR | 0o755)) is None
    assert verdict(st(FILE | 0o600)) is None
    assert verdict(st(DIR | 0o755, uid=0, gid=0)) is None


def test_a_path_of_another_user_is_foreign_whatever_its_mode() -> None:
    for mode in (DIR | 0o700, FILE | 0o644, DIR | 0o1777):
        found = verdict(st(mode, uid=OTHER), sticky_ok=True)
        assert found is not None and found[1] is True and "is owned by" in found[0]


def test_other_writable_is_untrusted_but_ours_to_fix() -> None:
    assert verdict(st(FILE | 0o602)) == ("is writable by others", False)
    assert verdict(st(DIR | 0o777)) == ("is writable by others", False)


def test_group_writable_only_when_the_group_is_our_private_one() -> None:
    assert verdict(st(DIR | 0o775, gid=MYGROUP)) is None  # Debian's umask 002 layout
    found = verdict(st(DIR | 0o775, gid=SHARED))
    assert found is not None and "writable by group" in found[0] and found[1] is False
    # root's group-writable path, even in our group: someone else made it that way.
    assert verdict(st(DIR | 0o775, uid=0, gid=MYGROUP)) is not None


def test_private_groups_are_looked_up_only_for_group_writable_paths() -> None:
    def boom() -> set[int]:
        raise AssertionError("looked up")

    assert judge(st(DIR | 0o755), uid=ME, private_gids=boom, sticky_ok=False) is None


def test_sticky_root_directory_is_fine_only_above_the_workspace() -> None:
    tmp = st(DIR | 0o1777, uid=0, gid=0)
    assert verdict(tmp, sticky_ok=True) is None
    assert verdict(tmp, sticky_ok=False) == ("is writable by others", False)
    # Sticky but not root's: its owner can replace what is in it.
    assert verdict(st(DIR | 0o1777, uid=OTHER), sticky_ok=True) is not None
    assert verdict(st(FILE | 0o1777, uid=0), sticky_ok=True) is not None


def test_a_links_own_mode_is_ignored() -> None:
    assert verdict(st(LINK | 0o777)) is None
    assert verdict(st(LINK | 0o777, uid=OTHER)) is not None


# --- walks over real trees (chowned to ME; the test runs as root) --------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def make_workspace(root: Path) -> Path:
    for d in (".tako/state", ".tako/pi/agent", ".tako/nvm/versions/node/v22.1.0/bin"):
        (root / d).mkdir(parents=True)
    (root / "tako.toml").write_text("")
    (root / ".tako/state/inference-settings.json").write_text("{}")
    (root / ".tako/pi/agent/auth.json").write_text("{}")
    node = root / ".tako/nvm/versions/node/v22.1.0/bin/node"
    node.write_text("#!/bin/sh\n")
    node.chmod(0o755)
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(dirpath, name), ME, MYGROUP)
            if name in dirs:
                os.chmod(os.path.join(dirpath, name), 0o755)
    os.chown(root, ME, MYGROUP)
    os.chmod(root, 0o755)
    return root


@needs_root
def test_own_workspace_is_trusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    verdict = check_workspace(ws, uid=ME)
    assert verdict.trusted and verdict.reason is None and verdict.hint is None


@needs_root
def test_another_users_subdirectory_makes_the_workspace_untrusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    os.chown(ws / ".tako/pi", OTHER, OTHER)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.reason == REASON
    assert verdict.problem is not None and verdict.problem.path == str(ws / ".tako/pi") and verdict.problem.foreign
    assert "chown" not in (verdict.hint or "") and "TAKO_WORKSPACE" in (verdict.hint or "")


@needs_root
def test_a_foreign_workspace_root_is_untrusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    os.chown(ws, OTHER, OTHER)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.problem is not None and verdict.problem.path == str(ws)
    assert "uid 4343" in (verdict.detail or "")


@needs_root
def test_a_foreign_node_runtime_is_untrusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    planted = ws / ".tako/nvm/versions/node/v99.0.0/bin"
    planted.mkdir(parents=True)
    os.chown(ws / ".tako/nvm/versions/node/v99.0.0", OTHER, OTHER)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.problem is not None and verdict.problem.path.endswith("v99.0.0")


@needs_root
def test_a_loose_mode_below_the_root_is_ours_to_fix(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    os.chmod(ws / ".tako/state/inference-settings.json", 0o666)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.problem is not None and not verdict.problem.foreign
    assert verdict.hint == f"make it private to you: chmod go-w '{ws / '.tako/state/inference-settings.json'}'"


@needs_root
def test_a_sticky_workspace_root_is_untrusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    os.chown(ws, 0, 0)
    os.chmod(ws, 0o1777)
    problem = check_workspace(ws, uid=ME).problem
    assert problem is not None and problem.path == str(ws) and problem.why == "is writable by others"


@needs_root
def test_links_are_judged_by_their_target(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    mine = tmp_path / "shared-login.json"
    mine.write_text("{}")
    os.chown(mine, ME, MYGROUP)
    auth = ws / ".tako/pi/agent/auth.json"
    auth.unlink()
    auth.symlink_to(mine)
    os.lchown(auth, ME, MYGROUP)
    assert check_workspace(ws, uid=ME).trusted  # one pi login shared between workspaces
    os.chown(mine, OTHER, OTHER)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.problem is not None and verdict.problem.path == str(mine)


@needs_root
def test_a_linked_directory_is_walked_below_its_target(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "agent").mkdir(parents=True)
    (elsewhere / "agent" / "auth.json").write_text("{}")
    for p in (elsewhere, elsewhere / "agent", elsewhere / "agent" / "auth.json"):
        os.chown(p, ME, MYGROUP)
    os.chmod(elsewhere / "agent", 0o777)
    pi = ws / ".tako/pi"
    for p in sorted(pi.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    pi.rmdir()
    pi.symlink_to(elsewhere)
    verdict = check_workspace(ws, uid=ME)
    assert verdict.problem is not None and verdict.problem.path == str(elsewhere / "agent")


@needs_root
def test_missing_paths_are_fine_and_a_missing_root_is_too(tmp_path: Path) -> None:
    os.chown(tmp_path, ME, MYGROUP)
    assert check_workspace(tmp_path / "not-yet", uid=ME).trusted
    assert check_path(tmp_path / "a" / "b", uid=ME) is None


@needs_root
def test_a_workspace_root_linked_to_another_users_directory_is_untrusted(tmp_path: Path) -> None:
    theirs = make_workspace(tmp_path / "theirs")
    give = [theirs, *theirs.rglob("*")]
    for p in give:
        os.lchown(p, OTHER, OTHER)
    link = tmp_path / "my-ws"
    link.symlink_to(theirs)
    verdict = check_workspace(link, uid=ME)
    assert verdict.problem is not None and verdict.problem.path == str(theirs) and verdict.problem.foreign


def test_an_impossible_path_is_untrusted_not_an_error() -> None:
    assert check_workspace("/tmp/a\0b").problem is not None
    assert check_path("/tmp/a\0b") is not None
