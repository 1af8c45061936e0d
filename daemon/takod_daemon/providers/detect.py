"""Finding the provider CLIs (pi, codex, claude, gemini) and the Node that runs pi.

A CLI's version can be learnt two ways:

- from the ``package.json`` of the npm package that owns the binary: no process,
  a fraction of a millisecond; this is what the daemon's warm status uses;
- by running ``<cli> --version``: proves the CLI really starts (codex's launcher
  needs a platform binary from an optional dependency), but costs a process
  (pi and gemini take a second or more, and gemini writes under ``~/.gemini``
  even for ``--version``).

pi is a Node script (``#!/usr/bin/env node``), so whether it can run depends on
the Node found first: the workspace's own (Takobot's nvm layout,
``.tako/nvm/versions/node/v*/bin/node``), else ``node`` on PATH. That Node's
version is checked against the installed pi package's own ``engines.node``
(``>=20.6.0`` for pi 0.73.1; Takobot hard-coded 22, wrongly). Node's version
comes from its files (its ``node_version.h``, else its ``vX.Y.Z`` directory);
nothing in a workspace is ever run to learn a version (docs/security.md).

``satisfies`` is a small npm-semver range check for the forms packages put in
``engines``.
"""

from __future__ import annotations

import operator
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple, cast

import anyio
import msgspec
from anyio.abc import ByteReceiveStream

from takod_daemon.inference.child_env import without_secrets
from takod_daemon.credentials.files import FileProblem, decode_json, read_bytes
from takod_daemon.redact import redact_text

Source = Literal["workspace", "path"]
# "manifest": never spawn; "auto": package.json, else run; "run": always run --version.
VersionMode = Literal["manifest", "auto", "run"]

CLI_NAMES = ("pi", "codex", "claude", "gemini")
# pi and gemini cold-start Node and load large bundles (1-2 s on a warm disk).
VERSION_TIMEOUT = 10.0
# pi 0.73.1's engines.node; used when the installed pi's own range can't be read.
PI_FALLBACK_NODE_RANGE = ">=20.6.0"

_OUTPUT_LIMIT = 64 * 1024
# "Error: ...", "TypeError: ...", "fatal: ...": the line of a failure output worth quoting.
_ERROR_LINE_RE = re.compile(r"[A-Za-z]*(?:error|fatal)\b", re.IGNORECASE)
# bin/cli.js, dist/cli.js, bundle/gemini.js sit one level down; leave room for deeper layouts.
_MANIFEST_SEARCH_DEPTH = 4


class BinaryInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What takod knows about one provider CLI.

    ``problem`` is a stable code (``not-installed``, ``node-missing``,
    ``node-incompatible``, ``version-failed``) or None; ``detail`` says it for
    people. The ``node_*`` fields are only filled for pi.
    """

    name: str
    path: str | None = None
    version: str | None = None
    source: Source | None = None
    node_path: str | None = None
    node_version: str | None = None
    node_ok: bool | None = None
    problem: str | None = None
    detail: str | None = None


class PackageManifest(msgspec.Struct):
    """The parts of an npm ``package.json`` detection reads."""

    name: str = ""
    version: str = ""
    bin: str | dict[str, str] | None = None
    engines: dict[str, str] = {}


class VersionProbeError(Exception):
    """``--version`` gave no version; the message says why (output redacted)."""


# --- npm semver ranges --------------------------------------------------------

# (major, minor, patch, 1 for a release / 0 for a prerelease, prerelease ids):
# tuple order is semver precedence.
_VersionKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]
_Comparator = tuple[str, _VersionKey]

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?", re.ASCII)
_PARTIAL_RE = re.compile(
    r"v?(\d+|[xX*])(?:\.(\d+|[xX*])(?:\.(\d+|[xX*])(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?)?)?",
    re.ASCII,
)
_OPERATOR_SPACE_RE = re.compile(r"(>=|<=|~>|[<>=~^])\s+")
_TOKEN_RE = re.compile(r"(>=|<=|~>|[<>=~^])?(.+)")
_HYPHEN_RE = re.compile(r"(\S+)\s+-\s+(\S+)")
_COMPARE: dict[str, Callable[[_VersionKey, _VersionKey], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
}


def _key(major: int, minor: int, patch: int, pre: str | None) -> _VersionKey:
    if pre is None:
        return (major, minor, patch, 1, ())
    ids = pre.split(".")
    if "" in ids:
        raise ValueError(f"empty prerelease identifier in {pre!r}")
    return (major, minor, patch, 0, tuple((0, int(i)) if i.isdigit() else (1, i) for i in ids))


def _floor(major: int, minor: int, patch: int) -> _VersionKey:
    """``M.m.p-0``: below every prerelease of ``M.m.p``. npm checks engines with
    ``includePrerelease``, so bounds built from partial versions use it."""
    return (major, minor, patch, 0, ((0, 0),))


def _version_key(text: str) -> _VersionKey:
    match = _VERSION_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a semver version: {text!r}")
    return _key(int(match[1]), int(match[2]), int(match[3]), match[4])


def _desugar(op: str, text: str) -> list[_Comparator]:
    """One range token (``^20.6``, ``>=18``, ``1.x``, ``~1.2.3``) as plain comparators."""
    match = _PARTIAL_RE.fullmatch(text)
    if not match:
        raise ValueError(f"not a version or partial version: {text!r}")
    parts = [None if g is None or g in "xX*" else int(g) for g in match.group(1, 2, 3)]
    wild = parts.index(None) if None in parts else 3
    if any(p is not None for p in parts[wild:]) or (match[4] and wild < 3):  # "1.x.3", "1.x-rc"
        raise ValueError(f"a wildcard must end a version: {text!r}")
    major, minor, patch = parts
    if major is None:  # "*": everything, except "<*" and ">*" which match nothing
        return [("<", _floor(0, 0, 0))] if op in ("<", ">") else [(">=", _floor(0, 0, 0))]
    if minor is not None and patch is not None:
        exact = _key(major, minor, patch, match[4])
        if op in _COMPARE:
            return [(op, exact)]
        if op in ("", "="):
            return [("=", exact)]
        if op in ("~", "~>"):
            return [(">=", exact), ("<", _floor(major, minor + 1, 0))]
        # "^": the leftmost non-zero part may not change.
        if major:
            upper = _floor(major + 1, 0, 0)
        elif minor:
            upper = _floor(0, minor + 1, 0)
        else:
            upper = _floor(0, 0, patch + 1)
        return [(">=", exact), ("<", upper)]
    low = _floor(major, minor or 0, 0)
    # The first version past the partial: "1" -> 2.0.0, "1.2" -> 1.3.0 (and "^1.2" -> 2.0.0).
    if minor is None or (op == "^" and major):
        past = _floor(major + 1, 0, 0)
    else:
        past = _floor(major, minor + 1, 0)
    if op == ">=":
        return [(">=", low)]
    if op == ">":
        return [(">=", past)]
    if op == "<":
        return [("<", low)]
    if op == "<=":
        return [("<", past)]
    return [(">=", low), ("<", past)]  # "", "=", "~", "~>", "^"


def _parse_range(text: str) -> list[list[_Comparator]]:
    alternatives = []
    for part in text.split("||"):
        part = part.strip()
        hyphen = _HYPHEN_RE.fullmatch(part)
        if hyphen:
            alternatives.append(_desugar(">=", hyphen[1]) + _desugar("<=", hyphen[2]))
            continue
        comparators: list[_Comparator] = []
        for token in _OPERATOR_SPACE_RE.sub(r"\1", part).split():
            token_match = _TOKEN_RE.fullmatch(token)
            assert token_match is not None  # ".+" matches every token split() yields
            comparators += _desugar(token_match[1] or "", token_match[2])
        alternatives.append(comparators)  # an empty part means "*", as in npm
    return alternatives


def satisfies(version: str, range_text: str) -> bool:
    """Whether ``version`` (``20.6.0``, ``v22.1.0``) is in the npm range ``range_text``.

    Handles comparators, x-ranges, ``~``, ``^``, hyphen ranges and ``||``, with npm's
    ``includePrerelease`` semantics (what npm uses for ``engines``). Raises
    ``ValueError`` for a version or range it cannot parse.
    """
    key = _version_key(version)
    return any(
        all(_COMPARE[op](key, bound) for op, bound in alternative) for alternative in _parse_range(range_text)
    )


# --- locating binaries and reading package.json -------------------------------


def workspace_pi_path(workspace: Path) -> Path:
    """Where a workspace's own pi runtime puts its CLI."""
    return workspace / ".tako" / "pi" / "node" / "node_modules" / ".bin" / "pi"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate_cli(name: str, *, path: str | None, workspace: Path | None = None) -> tuple[str, Source] | None:
    """The CLI takod would run, and where it came from; None when there is none.

    pi: the workspace CLI first, then PATH. Others: PATH only. ``path`` is a PATH
    string (None: this process's PATH; "": nothing).
    """
    if name == "pi" and workspace is not None:
        candidate = workspace_pi_path(workspace)
        if _is_executable(candidate):
            return str(candidate), "workspace"
    found = shutil.which(name, path=path)
    return (found, "path") if found else None


def in_workspace(path: str | os.PathLike[str], workspace: Path | None) -> bool:
    """Whether ``path`` lies under ``workspace`` (as named, or resolved)."""
    if workspace is None:
        return False
    for candidate in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
        for root in {Path(os.path.abspath(workspace)), Path(os.path.realpath(workspace))}:
            if candidate == root or root in candidate.parents:
                return True
    return False


_NODE_HEADER_RE = re.compile(rb"#define\s+NODE_(MAJOR|MINOR|PATCH)_VERSION\s+(\d+)")


def node_version_from_files(node: str | os.PathLike[str]) -> str | None:
    """Node's version without running it: ``<prefix>/include/node/node_version.h``
    (shipped by official builds, nvm, Homebrew and Debian's nodejs), else an
    nvm-style ``vX.Y.Z/bin/node`` directory name; None when neither says."""
    real = Path(os.path.realpath(node))
    header = real.parent.parent / "include" / "node" / "node_version.h"
    try:
        raw = read_bytes(header, max_bytes=64 * 1024)
    except FileProblem:
        raw = None
    if raw is not None:
        parts = dict(_NODE_HEADER_RE.findall(raw.data))
        if {b"MAJOR", b"MINOR", b"PATCH"} <= parts.keys():
            return ".".join(parts[k].decode() for k in (b"MAJOR", b"MINOR", b"PATCH"))
    for binary in (Path(os.path.abspath(node)), real):
        if binary.parent.name == "bin" and _VERSION_RE.fullmatch(binary.parent.parent.name):
            return binary.parent.parent.name.removeprefix("v")
    return None


def find_node(*, workspace: Path | None, path: str | None) -> str | None:
    """The Node that will run pi: the newest workspace Node, else ``node`` on ``path``."""
    if workspace is not None:
        newest: tuple[_VersionKey, Path] | None = None
        for bin_dir in (workspace / ".tako" / "nvm" / "versions" / "node").glob("v*/bin"):
            node = bin_dir / "node"
            try:
                key = _version_key(bin_dir.parent.name)
            except ValueError:
                continue
            if _is_executable(node) and (newest is None or key > newest[0]):
                newest = (key, node)
        if newest is not None:
            return str(newest[1])
    return shutil.which("node", path=path)


def _load_manifest(path: Path) -> PackageManifest | None:
    try:
        raw = read_bytes(path)
        return cast(PackageManifest, decode_json(raw, PackageManifest)) if raw is not None else None
    except FileProblem:
        return None


def _bin_targets(manifest: PackageManifest, package_dir: Path) -> list[str]:
    if isinstance(manifest.bin, str):
        entries = [manifest.bin]
    elif isinstance(manifest.bin, dict):
        entries = list(manifest.bin.values())
    else:
        entries = []
    return [os.path.realpath(package_dir / entry) for entry in entries]


def read_manifest(binary: str | os.PathLike[str]) -> PackageManifest | None:
    """The ``package.json`` of the npm package that provides ``binary``, or None.

    npm links ``node_modules/.bin/<cli>`` (or ``<prefix>/bin/<cli>``) to a file in
    the package. The owner is the nearest ancestor whose package.json lists that
    same file under ``bin``; requiring the match keeps an unrelated package.json
    further up from being taken for the CLI's. A native install (no package) gives None.
    """
    real = os.path.realpath(binary)
    for directory in Path(real).parents[:_MANIFEST_SEARCH_DEPTH]:
        manifest = _load_manifest(directory / "package.json")
        if manifest is not None and real in _bin_targets(manifest, directory):
            return manifest
    return None


# --- running --version --------------------------------------------------------


class _Output(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


async def _drain(stream: ByteReceiveStream | None, sink: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        sink += chunk[: max(0, _OUTPUT_LIMIT - len(sink))]  # keep reading so the child never blocks


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _capture(argv: list[str], *, env: Mapping[str, str] | None, timeout: float) -> _Output | None:
    """Run ``argv`` with no stdin; None if it outlives ``timeout``.

    The child gets its own session so a timeout kills it *and* its children
    (codex.js runs a native binary that would otherwise linger holding the pipes).
    """
    out, err = bytearray(), bytearray()
    finished = False
    async with await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    ) as process:
        try:
            with anyio.move_on_after(timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, process.stdout, out)
                    tg.start_soon(_drain, process.stderr, err)
                    await process.wait()
                finished = True
        finally:
            if not finished:
                _kill_session(process.pid)
    if not finished:
        return None
    assert process.returncode is not None  # wait() returned
    return _Output(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _telling_line(text: str) -> str:
    """The line most worth showing: the first that starts like an error message
    (Node prints the source location and code before it), else the first non-blank one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((line for line in lines if _ERROR_LINE_RE.match(line)), lines[0] if lines else "")
    return redact_text(line)[:200]


async def run_version(
    binary: str, *, env: Mapping[str, str] | None = None, timeout: float = VERSION_TIMEOUT
) -> str:
    """Run ``binary --version`` and return the first version number it prints.

    stdout is searched before stderr (pi prints its version on stderr; codex may
    print warnings there). Raises ``VersionProbeError`` on a spawn failure, a
    timeout (the process and its children are killed), a non-zero exit, or
    output without a version.
    """
    name = os.path.basename(binary)
    try:
        output = await _capture([binary, "--version"], env=env, timeout=timeout)
    except OSError as exc:
        raise VersionProbeError(f"`{name} --version` could not start: {exc.strerror or exc}") from None
    if output is None:
        raise VersionProbeError(f"`{name} --version` timed out after {timeout:g}s")
    if output.returncode != 0:
        said = _telling_line(output.stderr) or _telling_line(output.stdout)
        raise VersionProbeError(f"`{name} --version` exited {output.returncode}" + (f": {said}" if said else ""))
    for text in (output.stdout, output.stderr):
        found = _VERSION_RE.search(text)
        if found:
            return found[0].removeprefix("v")
    raise VersionProbeError(f"`{name} --version` printed no version: {_telling_line(output.stdout)!r}")


# --- detection ----------------------------------------------------------------


def _env_with_path(path: str) -> dict[str, str]:
    env = without_secrets(os.environ)  # `--version` needs no key
    env["PATH"] = path
    return env


def _search_path(path: str | None) -> str:
    return os.environ.get("PATH", os.defpath) if path is None else path


def _manifest_version(manifest: PackageManifest | None) -> str | None:
    return manifest.version if manifest is not None and manifest.version else None


async def _version(
    binary: str, manifest: PackageManifest | None, mode: VersionMode, env: Mapping[str, str], timeout: float
) -> tuple[str | None, str | None]:
    """(version, why running ``--version`` failed)."""
    known = _manifest_version(manifest)
    if mode == "manifest" or (mode == "auto" and known):
        return known, None
    try:
        return await run_version(binary, env=env, timeout=timeout), None
    except VersionProbeError as exc:
        return known, str(exc)


async def detect_cli(
    name: str, *, path: str | None = None, mode: VersionMode = "auto", timeout: float = VERSION_TIMEOUT
) -> BinaryInfo:
    """Find ``name`` (codex, claude, gemini) on ``path`` and read its version.

    ``path`` is a PATH string (None: this process's PATH); a spawned ``--version``
    runs with that PATH, so a Node launcher finds the Node it would really get.
    """
    located = locate_cli(name, path=path)
    if located is None:
        return BinaryInfo(name=name, problem="not-installed", detail=f"{name} not found on PATH")
    binary, source = located
    version, failure = await _version(
        binary, read_manifest(binary), mode, _env_with_path(_search_path(path)), timeout
    )
    return BinaryInfo(
        name=name,
        path=binary,
        version=version,
        source=source,
        problem="version-failed" if failure else None,
        detail=failure,
    )


def _pi_node_range(manifest: PackageManifest | None) -> tuple[str, str | None]:
    """pi's own ``engines.node`` range, else the fallback with a note saying so."""
    declared = manifest.engines.get("node") if manifest is not None else None
    assumed = f"assuming {PI_FALLBACK_NODE_RANGE}"
    if not declared:
        return PI_FALLBACK_NODE_RANGE, f"pi's package.json gives no engines.node; {assumed}"
    try:
        _parse_range(declared)
    except ValueError:
        return PI_FALLBACK_NODE_RANGE, f"pi's engines.node {declared!r} is not understood; {assumed}"
    return declared, None


class _NodeCheck(NamedTuple):
    version: str | None
    problem: str | None
    detail: str | None
    ok: bool | None  # None: its version is not known without running it, so not checked


async def _check_node(
    node: str | None, wanted: str, env: Mapping[str, str], timeout: float, *, may_run: bool
) -> _NodeCheck:
    if node is None:
        return _NodeCheck(None, "node-missing", f"pi needs Node {wanted}; none in the workspace or on PATH", False)
    version = node_version_from_files(node)
    if version is None and not may_run:
        return _NodeCheck(None, None, f"{node}'s version is not known from its files; not checked against {wanted}", None)
    if version is None:
        try:
            version = await run_version(node, env=env, timeout=timeout)
        except VersionProbeError as exc:
            return _NodeCheck(None, "node-missing", f"pi needs Node {wanted}; {exc}", False)
    try:
        compatible = satisfies(version, wanted)
    except ValueError:
        compatible = False
    if not compatible:
        return _NodeCheck(version, "node-incompatible", f"pi needs Node {wanted}; {node} is {version}", False)
    return _NodeCheck(version, None, None, True)


async def detect_pi(
    *,
    workspace: Path | None,
    path: str | None = None,
    mode: VersionMode = "auto",
    timeout: float = VERSION_TIMEOUT,
) -> BinaryInfo:
    """Find pi (workspace CLI first, then ``path``), the Node that will run it, and
    whether that Node satisfies the installed pi's ``engines.node``.

    Node's version comes from its files; ``node --version`` runs only when they
    do not say, never for a workspace's Node, and never in ``manifest`` mode.
    pi itself runs only as ``mode`` says (never a workspace's pi in ``manifest``
    mode), with the chosen Node first on PATH, as takod will run it.
    """
    located = locate_cli("pi", path=path, workspace=workspace)
    if located is None:
        where = f"in {workspace_pi_path(workspace).parent} or " if workspace is not None else ""
        return BinaryInfo(name="pi", problem="not-installed", detail=f"pi not found {where}on PATH")
    binary, source = located
    manifest = read_manifest(binary)
    wanted, range_note = _pi_node_range(manifest)
    node = find_node(workspace=workspace, path=path)
    entries = (os.path.dirname(node) if node else "", _search_path(path))
    # The chosen Node first, as takod runs pi; no empty entry (that would mean the cwd).
    env = _env_with_path(os.pathsep.join(entry for entry in entries if entry))
    may_run = mode != "manifest" and not (node is not None and in_workspace(node, workspace))
    node_check = await _check_node(node, wanted, env, timeout, may_run=may_run)
    version, problem, detail = _manifest_version(manifest), node_check.problem, node_check.detail
    if problem is None:  # a pi without a usable Node cannot answer --version either
        version, failure = await _version(binary, manifest, mode, env, timeout)
        problem, detail = ("version-failed", failure) if failure else (None, detail or range_note)
    return BinaryInfo(
        name="pi",
        path=binary,
        version=version,
        source=source,
        node_path=node,
        node_version=node_check.version,
        node_ok=node_check.ok,
        problem=problem,
        detail=detail,
    )


async def detect_all(
    *,
    workspace: Path | None,
    path: str | None = None,
    mode: VersionMode = "auto",
    timeout: float = VERSION_TIMEOUT,
) -> dict[str, BinaryInfo]:
    """Every provider CLI (``CLI_NAMES``), detected concurrently."""
    results: dict[str, BinaryInfo] = {}

    async def one(name: str) -> None:
        if name == "pi":
            results[name] = await detect_pi(workspace=workspace, path=path, mode=mode, timeout=timeout)
        else:
            results[name] = await detect_cli(name, path=path, mode=mode, timeout=timeout)

    async with anyio.create_task_group() as tg:
        for name in CLI_NAMES:
            tg.start_soon(one, name)
    return {name: results[name] for name in CLI_NAMES}
