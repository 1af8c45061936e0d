"""Whom takod trusts: the one place that decides whether a workspace, or a path
in it, is the user's own.

A path is **ours** when it, and every directory above it, is owned by us or by
root and cannot be written by anyone else:

- no other-write bit;
- no group-write bit, unless the group is our private group, with us as its
  only member (Debian's OpenSSH rule, for umask 002 systems);
- a directory *above the workspace root* may be other-writable when it is
  sticky and root's (``/tmp``): nobody else can then rename or replace the
  entry of ours below it (tmux and OpenSSH's ``safe_path`` make the same walk).

A symlink is judged by its target: every component of the resolved path.

A workspace is trusted when its root and every path takod reads, runs or
writes under it (:data:`WORKSPACE_PATHS`, the Node runtimes under
``.tako/nvm``) are ours. An untrusted workspace is only read and reported:
takod runs nothing from it, writes nothing into it, copies no credential out
of it, and follows none of its settings. docs/security.md is the full model.

The rules are pure functions of ``os.stat`` results (:func:`judge`); the
walkers (:func:`check_path`, :func:`check_workspace`) do the ``lstat`` calls
and block: the daemon runs them in a worker thread.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Container

import msgspec

from takod.schema import UNTRUSTED_WORKSPACE as REASON

# Every path under a workspace root that takod reads, runs or writes (when it exists).
WORKSPACE_PATHS = (
    "tako.toml",
    ".tako/state/inference-settings.json",
    ".tako/pi/agent/auth.json",
    ".tako/pi/agent/models.json",
    ".tako/pi/agent/settings.json",
    ".tako/pi/node/node_modules/.bin/pi",
    ".tako/pi/node/package.json",
    ".tako/logs",
    ".tako/tmp",
    ".tako/npm-cache",
)
NODE_VERSIONS = ".tako/nvm/versions/node"


class Untrusted(msgspec.Struct, frozen=True):
    """Why one path is not ours: ``path`` is the first component that failed."""

    path: str
    why: str  # for people: "is owned by alice (uid 1001)", "is writable by others"
    owner_uid: int
    foreign: bool  # owned by someone else: only its owner (or a copy) can fix it


class WorkspaceTrust(msgspec.Struct, frozen=True):
    """The verdict on one workspace; ``problem`` is None when it is trusted."""

    root: str
    problem: Untrusted | None = None

    @property
    def trusted(self) -> bool:
        return self.problem is None

    @property
    def reason(self) -> str | None:
        """The stable reason code (``untrusted-workspace``), None when trusted."""
        return None if self.problem is None else REASON

    @property
    def detail(self) -> str | None:
        """What is wrong, for people."""
        if self.problem is None:
            return None
        return f"{self.problem.path} {self.problem.why}"

    @property
    def hint(self) -> str | None:
        """The next step. Never "take ownership of" a directory someone else made."""
        p = self.problem
        if p is None:
            return None
        if p.foreign:
            return (
                f"{self.root} is not yours ({p.path} {p.why}): takod only reads and reports it. "
                "Work in a directory of your own (copy the workspace there), or set TAKO_WORKSPACE "
                "to your own workspace"
            )
        return f"make it private to you: chmod go-w '{p.path}'"


# What a workspace is until its first check: nothing is trusted unseen.
NOT_CHECKED = WorkspaceTrust(root="", problem=Untrusted("", "has not been checked yet", -1, False))


# --- the rule -------------------------------------------------------------------


def judge(
    st: os.stat_result,
    *,
    uid: int,
    private_gids: Callable[[], Container[int]],
    sticky_ok: bool,
) -> tuple[str, bool] | None:
    """Why ``st`` is not ours, and whether it belongs to someone else; None when it is.

    ``private_gids`` is called only for a group-writable path (listing groups
    can be slow). ``sticky_ok``: this is a directory above the workspace root,
    where a sticky root-owned directory such as ``/tmp`` is fine.
    """
    if st.st_uid not in (uid, 0):
        return f"is owned by {_user_name(st.st_uid)}", True
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return None  # a link's own mode means nothing; its target is judged
    if mode & stat.S_IWOTH and not (sticky_ok and _sticky_dir(st)):
        return "is writable by others", False
    if mode & stat.S_IWGRP and not (sticky_ok and _sticky_dir(st)):
        if st.st_uid != uid or st.st_gid not in private_gids():
            return f"is writable by group {_group_name(st.st_gid)}", False
    return None


def _sticky_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX) and st.st_uid == 0


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def private_gids(uid: int) -> frozenset[int]:
    """The groups whose only member is ``uid`` (primary or supplementary), as
    Debian's OpenSSH counts them; a group with no member at all is not one."""
    try:
        me = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    candidates = {me.pw_gid} | {g.gr_gid for g in grp.getgrall() if me.pw_name in g.gr_mem}
    users = pwd.getpwall()
    out = set()
    for gid in candidates:
        members = {p.pw_name for p in users if p.pw_gid == gid}
        try:
            members |= set(grp.getgrgid(gid).gr_mem)
        except KeyError:
            continue
        if members == {me.pw_name}:
            out.add(gid)
    return frozenset(out)


# --- walking paths ----------------------------------------------------------------


class _Walker:
    """One trust walk over absolute path strings: caches every component's
    verdict and link target, and the private groups."""

    def __init__(self, uid: int, root: str | None):
        self.uid = uid
        self.root = root
        self._gids: frozenset[int] | None = None
        self._seen: dict[str, tuple[Untrusted | None, str | None]] = {}  # verdict, link target

    def gids(self) -> frozenset[int]:
        if self._gids is None:
            self._gids = private_gids(self.uid)
        return self._gids

    def inside_root(self, path: str) -> bool:
        root = self.root
        return root is not None and (path == root or path.startswith(root.rstrip(os.sep) + os.sep))

    def component(self, path: str) -> tuple[Untrusted | None, str | None]:
        """The verdict on one component (``path``'s parents are real directories),
        and where it leads when it is a symlink."""
        if path in self._seen:
            return self._seen[path]
        verdict: Untrusted | None = None
        target: str | None = None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None  # nothing there yet: what we create there is ours
        except OSError as exc:  # ENOTDIR, EACCES, ELOOP, ENAMETOOLONG ...
            verdict = Untrusted(path, f"cannot be checked ({exc.strerror or exc})", self.uid, False)
            st = None
        if st is not None:
            found = judge(st, uid=self.uid, private_gids=self.gids, sticky_ok=not self.inside_root(path))
            if found is not None:
                verdict = Untrusted(path, found[0], st.st_uid, found[1])
            elif stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(path)
                verdict = self.path(target)
        self._seen[path] = (verdict, target)
        return verdict, target

    def path(self, path: str) -> Untrusted | None:
        """Every component of normalised absolute ``path`` from ``/`` down; a symlink by its target."""
        current = os.sep
        problem, _ = self.component(current)
        for name in path.split(os.sep):
            if not name:
                continue
            if problem is not None:
                return problem
            current = os.path.join(current, name)
            problem, target = self.component(current)
            if target is not None:
                current = target  # go on below the link's target, as the kernel does
        return problem


def check_path(path: str | os.PathLike[str], *, uid: int | None = None) -> Untrusted | None:
    """None when ``path`` (absolute) and every directory above it is ours; else the
    first component that is not. Symlinks are judged by their targets; a missing
    tail is fine (what takod creates there is its own). Blocking."""
    me = os.getuid() if uid is None else uid
    absolute = os.path.abspath(path)
    if "\0" in absolute:
        return Untrusted(absolute, "is not a valid path", me, False)
    return _Walker(me, None).path(absolute)


def check_workspace(root: str | os.PathLike[str], *, uid: int | None = None) -> WorkspaceTrust:
    """Whether the workspace at ``root`` is ours: its root, the directories above
    it, and every path takod reads, runs or writes under it. Blocking (a few
    dozen ``lstat`` calls, well under a millisecond); the daemon calls it in a worker thread."""
    me = os.getuid() if uid is None else uid
    absolute = os.path.abspath(root)
    if "\0" in absolute:  # no such path can exist; requests reject it before (invalid_params)
        return WorkspaceTrust(root=absolute, problem=Untrusted(absolute, "is not a valid path", me, False))
    real = os.path.realpath(absolute)
    walker = _Walker(me, real)
    problem = walker.path(absolute)
    if problem is None:
        for relative in (*WORKSPACE_PATHS, *_node_runtimes(real)):
            problem = walker.path(os.path.join(real, relative))
            if problem is not None:
                break
    return WorkspaceTrust(root=absolute, problem=problem)


def _node_runtimes(root: str) -> list[str]:
    """``.tako/nvm/versions/node/v*/bin/node`` for every version directory present."""
    try:
        names = sorted(os.listdir(os.path.join(root, NODE_VERSIONS)))
    except OSError:
        return [NODE_VERSIONS]
    return [f"{NODE_VERSIONS}/{name}/bin/node" for name in names] or [NODE_VERSIONS]
