"""Careful reading and writing of small JSON files that other tools may share.

Reads are bounded (size cap), tolerate a UTF-8 BOM, refuse non-regular files,
and report *why* a file is unusable without ever echoing its content (it may
hold secrets). Writes are atomic (temp file in the same directory, fsync,
rename, fsync of the directory) and keep the file private (0600).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically, keeping it private.

    A crash at any point leaves either the old file or the new one, whole.
    When ``path`` is a symlink the link's target is replaced, so dotfile links
    keep working.
    """
    target = Path(os.path.realpath(path))
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
