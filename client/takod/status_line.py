"""The one-line status for shell prompts, kept in a file by the daemon.

A prompt or a status bar runs ``takod status --short`` all the time. Asking the
daemon means importing msgspec, which alone costs about 3x the interpreter's own
start (docs/performance.md §9). So the daemon writes, next to its socket, what
``status`` selects for each loaded workspace, and for each set of shell keys a
client recently sent with ``status``, each stamped with the count of the
workspace's evaluations; this module reads it with the standard library alone.

Whatever it cannot vouch for (a directory or file that is not ours and private,
no live daemon behind the file, no line for this workspace, an answer for these
keys older than the workspace's last evaluation) gives None, and the CLI asks the
daemon as usual, which brings the file up to date.

The format, UTF-8 lines with the workspace last (a path with a newline is never
written: that workspace always takes the slow road)::

    takod-status-line 1 <daemon pid> <nonce>
    w <evaluations> <selected or -> <workspace>
    k <evaluations> <selected or -> <key digest> <workspace>
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .paths import check_private_dir

MAGIC = "takod-status-line"
VERSION = "1"
NONE = "-"
MAX_BYTES = 1 << 20  # far beyond any real file (a line per workspace and recent key set)

# Variables a provider reads its key from, beyond *_API_KEY (pi-auth research §5.1).
KEY_VARS = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_OAUTH_TOKEN", "COPILOT_GITHUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN")


def prompt_line(selected: str | None) -> str:
    """`tako:codex`, `tako:none`: one word for a shell prompt or a status bar."""
    return f"tako:{selected or 'none'}"


def client_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """API keys in this shell's environment: a daemon started elsewhere (systemd,
    another terminal) does not have them, but they are usable from here, so the
    CLI sends them with ``status`` and ``infer``."""
    return {k: v for k, v in environ.items() if v and (k.endswith("_API_KEY") or k in KEY_VARS)}


def path_for(sock: Path) -> Path:
    """The status-line file of the daemon at ``sock``: beside it, in its private directory."""
    return sock.with_name(sock.name + ".status")


def key_digest(nonce: str, env: Mapping[str, str]) -> str:
    """Which keys a ``status`` answer was for, without the keys: a hash salted with
    the daemon's nonce, so it means nothing beyond this daemon's lifetime."""
    import hashlib  # only a shell with keys exported pays for it

    h = hashlib.sha256(nonce.encode())
    for name, value in sorted(env.items()):
        h.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"=" + value.encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def render(pid: int, nonce: str, workspaces: Mapping[str, tuple[int, str | None]],
           answers: Mapping[tuple[str, str], tuple[int, str | None]]) -> bytes:
    """The file's content: ``workspaces`` maps a root to (evaluations, selected),
    ``answers`` maps (root, key digest) to the same for a client's keys."""
    lines = [f"{MAGIC} {VERSION} {pid} {nonce}"]
    lines += [f"w {n} {sel or NONE} {root}" for root, (n, sel) in workspaces.items() if _writable(root)]
    lines += [f"k {n} {sel or NONE} {digest} {root}" for (root, digest), (n, sel) in answers.items() if _writable(root)]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _writable(root: str) -> bool:
    return "\n" not in root and "\r" not in root


def lookup(text: str, workspace: str, env: Mapping[str, str]) -> tuple[int, str | None] | None:
    """(daemon pid, what ``status`` selects in ``workspace`` for a client with ``env``)
    from the file's ``text``; None when the file does not know (not for this workspace,
    not for these keys, or not since the workspace's last evaluation)."""
    header, _, body = text.partition("\n")
    head = header.split(" ")
    if len(head) != 4 or head[0] != MAGIC or head[1] != VERSION or not head[2].isdigit():
        return None
    evaluations: str | None = None
    answers: dict[str, tuple[str, str]] = {}
    for line in body.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "w":
            n, sel, root = (rest.split(" ", 2) + ["", ""])[:3]
            if root == workspace:
                evaluations, selected = n, sel
        elif kind == "k":
            n, sel, digest, root = (rest.split(" ", 3) + ["", "", ""])[:4]
            if root == workspace:
                answers[digest] = (n, sel)
    if evaluations is None:
        return None
    if env:
        n, selected = answers.get(key_digest(head[3], env), ("", ""))
        if n != evaluations:
            return None
    return int(head[2]), None if selected == NONE else selected


def read(sock: Path, workspace: str, env: Mapping[str, str]) -> str | None:
    """The prompt line of what ``status`` would select, read from the file of the
    daemon at ``sock``; None when the file cannot vouch for it. Trusted only as the client
    trusts the socket: a private directory of ours, and a regular file of ours in it
    (never through a link), written by a daemon that is still running."""
    if check_private_dir(sock.parent) is not None:
        return None
    try:
        fd = os.open(path_for(sock), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        data = os.read(fd, MAX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        found = lookup(data.decode("utf-8", "surrogateescape"), workspace, env)
    except ValueError:
        return None
    if found is None:
        return None
    pid, selected = found
    try:
        os.kill(pid, 0)  # a daemon that died without removing the file (kill -9, a crash)
    except ProcessLookupError:
        return None
    except PermissionError:
        return None  # the pid was reused by someone else's process
    return prompt_line(selected)
