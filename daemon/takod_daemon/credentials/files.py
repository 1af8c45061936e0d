"""Careful reading and writing of small JSON files that other tools may share.

Reads are bounded (size cap), tolerate a UTF-8 BOM, refuse non-regular files,
and report *why* a file is unusable without ever echoing its content (it may
hold secrets). Writes are atomic (temp file in the same directory, fsync,
rename, fsync of the directory) and keep the file private (0600).

Writes never go where a planted link points (docs/security.md, "Writes"):
:func:`write_target` follows a symlink only to an existing private file of
ours that is already a file of the kind being written, and
:func:`open_private_append` (logs) follows none and refuses hard links.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

MAX_FILE_BYTES = 4 * 1024 * 1024


class FileProblem(Exception):
    """A file exists but cannot be used. ``reason`` is a stable snake_case word.

    The message never contains file content.
    """

    def __init__(self, path: Path, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RawFile:
    """Bytes of a file as read, with what is needed to notice a later change."""

    path: Path
    data: bytes
    digest: str
    mode: int
    mtime_ns: int


def read_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES) -> RawFile | None:
    """Read ``path``; None if it does not exist. Symlinks are followed (tools and
    dotfile managers link these files) but the target must be a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise FileProblem(path, "unreadable", "permission denied") from None
    except OSError as exc:
        raise FileProblem(path, "unreadable", exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(path, "not_a_file", "is not a regular file")
        if st.st_size > max_bytes:
            raise FileProblem(path, "too_large", f"is {st.st_size} bytes, more than {max_bytes}")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:  # grew while we read
                raise FileProblem(path, "too_large", f"is more than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return RawFile(path, data, hashlib.sha256(data).hexdigest(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)


def strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def decode_json(raw: RawFile, type_: type | object = object) -> object:
    """Decode ``raw`` as JSON into ``type_``. Empty or whitespace-only files are
    a ``FileProblem("empty")``; a parse error says where, never what."""
    data = strip_bom(raw.data)
    if not data.strip():
        raise FileProblem(raw.path, "empty", "is empty")
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise FileProblem(raw.path, "invalid", f"has unexpected content ({_where(exc)})") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for invalid UTF-8
        raise FileProblem(raw.path, "malformed", f"is not valid JSON ({_where(exc)})") from None
    except RecursionError:  # nesting deeper than the interpreter's recursion limit (~1000 levels)
        raise FileProblem(raw.path, "too_deep", "is nested too deeply to be a credential or settings file") from None


def _where(exc: Exception) -> str:
    # msgspec messages look like "Expected `str`, got `int` - at `$.tokens.access_token`"
    # or "JSON is malformed: invalid character (byte 12)". Neither quotes content.
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


@dataclass(frozen=True)
class FileKind:
    """A kind of private file takod writes (pi's ``auth.json``, Codex's, the
    workspace settings). A symlink is followed only to a file of the same kind:
    content (decoded JSON) that ``looks_like`` accepts, or an empty file named
    ``name``."""

    label: str  # for messages, e.g. "pi auth.json"
    name: str
    looks_like: Callable[[Any], bool]


def write_target(path: Path, kind: FileKind | None) -> Path:
    """The file a write of ``path`` may replace: ``path`` itself when it is not
    a symlink, else the link's final target when that is safe to write.

    Safe means: the target exists, is a regular file owned by us with no group
    or other permission bits, has a single hard link, and already is a file of
    ``kind`` (its content says so, or it is empty and named ``kind.name``). Anything else (a dangling link, a
    link to ``package.json``, to someone else's file, or any link when
    ``kind`` is None) raises :class:`FileProblem` with reason ``unsafe_link``
    and nothing is written: a link planted in a workspace or the state
    directory never redirects a write.
    """
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
    except FileNotFoundError:
        return path
    if kind is None:
        raise FileProblem(path, "unsafe_link", "is a symlink, and takod writes this file only in place: remove the link")
    try:
        target = Path(os.path.realpath(path, strict=True))
    except OSError:  # dangling, or a loop: never create a link's target
        raise FileProblem(
            path, "unsafe_link",
            "is a symlink to a file that does not exist, and takod never creates a link's target: "
            f"remove the link, or point it at your own {kind.label}",
        ) from None
    problem = _link_target_problem(target, kind)
    if problem is not None:
        raise FileProblem(
            path, "unsafe_link",
            f"is a symlink to {target}, which {problem}; takod writes through a link only to your own private "
            f"{kind.label}: remove the link",
        )
    return target


def _link_target_problem(target: Path, kind: FileKind) -> str | None:
    """Why ``target`` (a resolved path) may not be written as ``kind``; None when it may."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or exc})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        if st.st_uid != os.getuid():
            return "is not yours"
        if st.st_mode & 0o077:
            return f"is not private (mode {stat.S_IMODE(st.st_mode):04o}, not 0600)"
        if st.st_nlink != 1:
            return f"has {st.st_nlink} hard links"
        if st.st_size > MAX_FILE_BYTES:
            return "is too large"
        data = strip_bom(os.read(fd, MAX_FILE_BYTES + 1))
    finally:
        os.close(fd)
    if not data.strip():
        # Nothing in it says what it is: only its name can (dotfile managers may rename a full one).
        return None if target.name == kind.name else f"is empty and not named {kind.name}"
    try:
        doc = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return f"is not a {kind.label}"
    return None if kind.looks_like(doc) else f"is not a {kind.label}"


def check_dirs(root: Path, path: Path) -> None:
    """Raise :class:`FileProblem` (``unsafe_link``) when a directory between
    ``root`` (a workspace) and ``path`` is a symlink: ``.tako/pi -> ..`` in a
    repository would otherwise put a new ``auth.json`` wherever it points
    (its own tree, one ``git add`` from published). Directories not made yet
    are fine: takod makes them, as real directories."""
    directory = root
    for part in path.relative_to(root).parts[:-1]:
        directory = directory / part
        try:
            if stat.S_ISLNK(os.lstat(directory).st_mode):
                raise FileProblem(
                    path, "unsafe_link",
                    f"is under {directory}, a symlink; takod writes in a workspace only through real directories: "
                    "remove the link",
                )
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing below exists (or a file is in the way): the write itself will say so


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, kind: FileKind | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, keeping it private.

    A crash at any point leaves either the old file or the new one, whole.
    When ``path`` is a symlink, the link's target is replaced (so one pi login
    can be shared between workspaces by a link) only when :func:`write_target`
    allows it for ``kind``; otherwise :class:`FileProblem` (``unsafe_link``)
    and nothing is written. A hard link at ``path`` is broken, never written
    through: the rename gives ``path`` a new inode.
    """
    target = write_target(path, kind)
    directory = target.parent
    _remove_dead_temps(directory, target.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


DEAD_TEMP_AGE_S = 60.0  # a write takes milliseconds: an older temp file's writer is gone


def _remove_dead_temps(directory: Path, name: str) -> None:
    """Remove temp files of earlier writes of ``name`` that were killed before
    their rename (each holds a copy of the file, secrets included)."""
    prefix = f".{name}."
    try:
        entries = os.scandir(directory)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and \
                        st.st_mtime < time.time() - DEAD_TEMP_AGE_S:
                    os.unlink(entry.path)
            except OSError:
                pass


def encode_json(value: object) -> bytes:
    """JSON as tools write it for people: 2-space indent, trailing newline."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"


def open_private_append(path: Path) -> int:
    """Open ``path`` for appending (created 0600 if missing) and return the fd.

    For logs, which are written in place: a symlink is never followed
    (``O_NOFOLLOW``), and the file must be a regular file of ours with a single
    hard link, else :class:`FileProblem` (``unsafe_link``) and nothing is
    written: a hard link to another file would append into that file.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise FileProblem(path, "unsafe_link", "is a symlink; takod writes logs only in place: remove the link") from None
        # e.g. a FIFO with no reader (ENXIO), or no permission: a clear reason, not a traceback
        raise FileProblem(path, "unwritable", f"cannot be opened for writing ({exc.strerror or exc}): remove it") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.getuid():
        problem = "is not yours"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links (it may be another file)"
    if problem is not None:
        os.close(fd)
        raise FileProblem(path, "unsafe_link", f"{problem}; takod appends only to its own log file: remove it")
    return fd
