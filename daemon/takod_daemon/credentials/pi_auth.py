"""pi's ``auth.json``: where it lives, what its entries mean, and how to change one.

Facts from research pi-auth.md: a JSON object keyed by pi provider id, one
entry per provider (§1.3). ``{"type": "api_key", "key": ...}`` entries hold a
key *value* that pi resolves as a ``!command``, an environment variable's name,
or a literal (§4, legacy rules of pi <= 0.73, the generation takod installs).
``{"type": "oauth", "access", "refresh", "expires" (epoch ms), ...}`` entries
carry provider-specific extras (``accountId``, ``enterpriseUrl``, ...). Entries
and keys we do not understand are kept verbatim whenever we write.

Writers re-read the file under pi's lock (:mod:`pi_lock`), change one entry,
and write the whole file back atomically with mode 0600. A file that cannot be
parsed is never overwritten.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import msgspec

from takod_daemon.credentials.files import (
    FileKind,
    FileProblem,
    RawFile,
    atomic_write,
    decode_json,
    encode_json,
    read_bytes,
    strip_bom,
    write_target,
)
from takod_daemon.credentials.pi_lock import DEFAULT_TIMEOUT_S, HeldPiLock, pi_lock, pi_locks
from takod_daemon.credentials.summary import CredentialSummary, SecretStruct
from takod_daemon.redact import mask_secret

AUTH_FILENAME = "auth.json"
AGENT_DIR_ENV = "PI_CODING_AGENT_DIR"
# pi runs ``!command`` values with a 10 s timeout (execSync).
COMMAND_TIMEOUT_S = 10.0
# JavaScript's Number.MAX_SAFE_INTEGER: pi's "never expires" (OpenRouter).
NEVER_EXPIRES_MS = 9007199254740991
# A literal key shaped like OPENAI_API_KEY is almost surely an unset variable's name.
_ENV_NAME_LIKE_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")

KeyKind = Literal["command", "env", "literal"]


def _looks_like_pi_auth(doc: Any) -> bool:
    # Every value of a pi auth.json is an entry object with a "type" (§1.3).
    return isinstance(doc, dict) and all(isinstance(v, dict) and isinstance(v.get("type"), str) for v in doc.values())


# A workspace auth.json may be a symlink to another pi auth.json of the user's
# (one login shared between workspaces), never to anything else.
PI_AUTH_KIND = FileKind("pi auth.json", AUTH_FILENAME, _looks_like_pi_auth)


class ApiKeyEntry(SecretStruct, frozen=True, kw_only=True):
    """An ``api_key`` entry. ``key`` is pi's key *value* (see :func:`key_kind`);
    1.x pi may omit it. ``extra`` holds every other field verbatim (1.x ``env``)."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"key", "extra"})

    key: str | None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class OAuthEntry(SecretStruct, frozen=True, kw_only=True):
    """An ``oauth`` entry. ``expires`` is epoch milliseconds with pi's safety margin
    already subtracted; ``extra`` holds provider-specific fields verbatim."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"access", "refresh", "extra"})

    access: str
    refresh: str
    expires: int
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def extra_str(self, name: str) -> str | None:
        """A string extra such as ``accountId``; None when absent or not a string."""
        value = self.extra.get(name)
        return value if isinstance(value, str) and value else None


class UnknownEntry(msgspec.Struct, frozen=True):
    """An entry pi has but takod cannot use: another type, or a malformed one.
    ``problem`` says why, without quoting content."""

    declared_type: str | None
    problem: str


PiEntry = ApiKeyEntry | OAuthEntry | UnknownEntry
_Written = TypeVar("_Written", ApiKeyEntry, OAuthEntry)


class PiAuthFile(msgspec.Struct, frozen=True):
    """One ``auth.json`` as read.

    ``trusted``: owned by us and not writable by group or others, so its
    ``!command`` values may be run. ``writable``: we may write it back.
    """

    path: Path
    entries: dict[str, PiEntry]
    trusted: bool
    writable: bool


class ResolvedKey(SecretStruct, frozen=True, kw_only=True):
    """An api_key entry resolved for use. ``value`` is None when it could not be;
    ``reason`` (snake_case) and ``detail`` then say why, never quoting output."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"value"})

    value: str | None
    kind: KeyKind
    reason: str | None = None
    detail: str | None = None


class SeedResult(msgspec.Struct, frozen=True):
    """What :func:`seed_workspace_auth` did. ``outcome``: ``seeded``,
    ``workspace_has_auth`` or ``no_home_auth``."""

    outcome: Literal["seeded", "workspace_has_auth", "no_home_auth"]
    source: Path | None = None


# --- locations -------------------------------------------------------------------------


def workspace_auth_path(workspace: Path) -> Path:
    """The workspace's pi credentials: ``<ws>/.tako/pi/agent/auth.json``."""
    return workspace / ".tako" / "pi" / "agent" / AUTH_FILENAME


def home_auth_paths(env: Mapping[str, str], home: Path) -> list[Path]:
    """The user's own pi credentials, most specific first:
    ``$PI_CODING_AGENT_DIR/auth.json`` (else ``~/.pi/agent/auth.json``), then
    the pre-agent-dir ``~/.pi/auth.json``."""
    agent_dir = env.get(AGENT_DIR_ENV, "")
    if agent_dir == "~" or agent_dir.startswith("~/"):
        agent = home / agent_dir[2:]
    elif agent_dir:
        agent = Path(agent_dir)
    else:
        agent = home / ".pi" / "agent"
    return [agent / AUTH_FILENAME, home / ".pi" / AUTH_FILENAME]


def auth_locations(workspace: Path, env: Mapping[str, str], home: Path) -> list[Path]:
    """Every pi ``auth.json`` takod looks at, in order: workspace, then home.
    A path reached twice (a workspace that is the home) is listed once."""
    found: list[Path] = []
    for path in (workspace_auth_path(workspace), *home_auth_paths(env, home)):
        if path not in found:
            found.append(path)
    return found


# --- parsing ---------------------------------------------------------------------------


# Fields each entry type has; everything else in an entry is an extra, kept verbatim.
_KNOWN_FIELDS: dict[str, tuple[str, ...]] = {
    "api_key": ("type", "key"),
    "oauth": ("type", "access", "refresh", "expires"),
}


def parse_entry(value: Any) -> PiEntry:
    """Type one decoded entry. Anything takod cannot use becomes an UnknownEntry."""
    if not isinstance(value, dict):
        return UnknownEntry(None, "entry is not a JSON object")
    declared = value.get("type")
    if not isinstance(declared, str):
        return UnknownEntry(None, "entry has no type")
    extra = {k: v for k, v in value.items() if k not in _KNOWN_FIELDS.get(declared, ())}
    if declared == "api_key":
        key = value.get("key")
        if key is not None and not isinstance(key, str):
            return UnknownEntry(declared, "key is not a string")
        return ApiKeyEntry(key=key, extra=extra)
    if declared == "oauth":
        access, refresh, expires = value.get("access"), value.get("refresh"), value.get("expires")
        if not isinstance(access, str) or not isinstance(refresh, str):
            return UnknownEntry(declared, "access or refresh is missing or not a string")
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
            return UnknownEntry(declared, "expires is missing or not a number")
        return OAuthEntry(access=access, refresh=refresh, expires=int(expires), extra=extra)
    return UnknownEntry(declared, f"entry type {declared!r} is not one takod knows")


def parse_entries(doc: Mapping[str, Any]) -> dict[str, PiEntry]:
    """Type every entry of a decoded ``auth.json``, keeping pi's order."""
    return {provider: parse_entry(value) for provider, value in doc.items()}


def read_auth(path: Path) -> PiAuthFile | None:
    """``auth.json`` at ``path``; None when absent. Raises :class:`FileProblem`
    when it is unreadable, half-written or not a JSON object. An empty file
    (pi has not written it yet) has no entries."""
    raw = read_bytes(path)
    if raw is None:
        return None
    doc = _decode_doc(raw)
    try:
        owner = os.stat(path).st_uid
    except OSError as exc:
        raise FileProblem(path, "unreadable", exc.strerror or str(exc)) from None
    return PiAuthFile(
        path=path,
        entries=parse_entries(doc),
        trusted=owner == os.getuid() and not raw.mode & 0o022,
        writable=os.access(path, os.W_OK),
    )


def _decode_doc(raw: RawFile) -> dict[str, Any]:
    if not strip_bom(raw.data).strip():
        return {}
    return cast(dict[str, Any], decode_json(raw, dict[str, Any]))


# --- api_key values --------------------------------------------------------------------


def key_kind(value: str, env: Mapping[str, str]) -> KeyKind:
    """How pi (<= 0.73) reads a key value: ``!cmd`` runs a shell command; a value
    naming a non-empty environment variable means that variable; anything else
    is the key itself."""
    if value.startswith("!"):
        return "command"
    if env.get(value):
        return "env"
    return "literal"


def resolve_api_key(
    auth: PiAuthFile,
    provider: str,
    env: Mapping[str, str],
    timeout: float = COMMAND_TIMEOUT_S,
) -> ResolvedKey | None:
    """The usable key of ``provider``'s api_key entry; None when it has none.

    ``!command`` values run through ``/bin/sh -c`` with stdin closed, stderr
    discarded, ``env`` as the environment and ``timeout`` seconds, as pi does;
    the key is trimmed stdout. They run only when the file is ``trusted``.
    Nothing is cached: a command may hand out rotating keys.
    """
    entry = auth.entries.get(provider)
    if not isinstance(entry, ApiKeyEntry) or entry.key is None:
        return None
    value = entry.key
    kind = key_kind(value, env)
    if kind == "env":
        return ResolvedKey(value=env[value], kind=kind)
    if kind == "literal":
        return ResolvedKey(value=value, kind=kind)
    if not auth.trusted:
        return ResolvedKey(
            value=None,
            kind=kind,
            reason="command_untrusted",
            detail=f"{auth.path} is not ours alone (owner or group/other write), so its command is not run",
        )
    return _run_key_command(value[1:], env, timeout)


def _run_key_command(command: str, env: Mapping[str, str], timeout: float) -> ResolvedKey:
    # Own session, so a timeout kills the whole pipeline, not just the shell
    # (a surviving grandchild would keep stdout open forever).
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(env),
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _command_problem("command_timeout", f"command ran longer than {timeout:g} s")
    if proc.returncode != 0:
        return _command_problem("command_failed", f"command exited with status {proc.returncode}")
    key = out.decode("utf-8", errors="replace").strip()
    if not key:
        return _command_problem("command_empty", "command printed nothing")
    return ResolvedKey(value=key, kind="command")


def _command_problem(reason: str, detail: str) -> ResolvedKey:
    return ResolvedKey(value=None, kind="command", reason=reason, detail=detail)


# --- readiness -------------------------------------------------------------------------


def summarize(auth: PiAuthFile, env: Mapping[str, str]) -> list[CredentialSummary]:
    """One summary per usable entry, in file order; ``provider`` is pi's provider
    id. Never runs a ``!command`` (such keys are reported as unverified).
    Entries takod cannot use are left out; :attr:`PiAuthFile.entries` has them."""
    found = []
    for provider, entry in auth.entries.items():
        if isinstance(entry, OAuthEntry):
            found.append(_oauth_summary(auth, provider, entry))
        elif isinstance(entry, ApiKeyEntry):
            found.append(_api_key_summary(auth, provider, entry, env))
    return found


def _oauth_summary(auth: PiAuthFile, provider: str, entry: OAuthEntry) -> CredentialSummary:
    return CredentialSummary(
        provider,
        str(auth.path),
        "oauth",
        mask_secret(entry.access),
        expires_at=None if entry.expires >= NEVER_EXPIRES_MS else entry.expires / 1000,
        refreshable=bool(entry.refresh),
        read_only=not auth.writable,
        account=entry.extra_str("email") or entry.extra_str("accountId"),
    )


def _api_key_summary(
    auth: PiAuthFile, provider: str, entry: ApiKeyEntry, env: Mapping[str, str]
) -> CredentialSummary:
    masked, note, unverified = "", None, False
    kind = key_kind(entry.key, env) if entry.key is not None else None
    if entry.key is None:
        note = "entry stores no key"
        unverified = True
    elif kind == "command":
        note = "command: the key comes from a shell command, run only when the key is used"
        unverified = True
    elif kind == "env":
        masked = mask_secret(env[entry.key])
        note = f"from environment variable {entry.key}"
    else:
        masked = mask_secret(entry.key)
        if _ENV_NAME_LIKE_RE.fullmatch(entry.key):
            note = f"no environment variable {entry.key} is set, so pi sends this name itself as the key"
            unverified = True
    return CredentialSummary(
        provider,
        str(auth.path),
        "api_key",
        masked,
        read_only=not auth.writable,
        note=note,
        unverified=unverified,
    )


# --- writing ---------------------------------------------------------------------------


def entry_json(entry: ApiKeyEntry | OAuthEntry) -> dict[str, Any]:
    """``entry`` as pi writes it: ``type`` first, then its fields, then extras."""
    if isinstance(entry, OAuthEntry):
        known: dict[str, Any] = {
            "type": "oauth",
            "access": entry.access,
            "refresh": entry.refresh,
            "expires": entry.expires,
        }
    else:
        known = {"type": "api_key"} if entry.key is None else {"type": "api_key", "key": entry.key}
    return {**known, **{k: v for k, v in entry.extra.items() if k not in known and k != "type"}}


def merge_entry(current: RawFile | None, provider: str, entry: ApiKeyEntry | OAuthEntry) -> bytes:
    """The bytes of ``auth.json`` after putting ``entry`` under ``provider``.

    ``current`` is the file as freshly read (None or empty: a new file). Every
    other entry and key is kept byte for byte (only re-indented). Raises
    :class:`FileProblem` when ``current`` cannot be parsed: never overwrite that.
    """
    doc: dict[str, msgspec.Raw] = {}
    if current is not None and strip_bom(current.data).strip():
        doc = cast(dict[str, msgspec.Raw], decode_json(current, dict[str, msgspec.Raw]))
    doc[provider] = msgspec.Raw(msgspec.json.encode(entry_json(entry)))
    return encode_json(doc)


def replace_entry(
    path: Path,
    provider: str,
    choose: Callable[[PiEntry | None], _Written | None],
    *,
    lock_timeout: float = DEFAULT_TIMEOUT_S,
    held: HeldPiLock | None = None,
) -> _Written | None:
    """Under pi's lock, re-read ``path``, ask ``choose`` what ``provider``'s entry
    should become given its current one (None: leave the file alone), and write
    that atomically with mode 0600. Returns what was written. ``held``: the
    caller already holds ``path``'s lock (checked just before the write).

    The parent directory is created (0700) when missing, as pi does. Raises
    :class:`FileProblem` for a file that cannot be parsed, and the
    :mod:`pi_lock` errors when the lock cannot be had or was lost.
    ``choose`` runs under the lock: keep it quick and free of I/O.
    """
    write_target(path, PI_AUTH_KIND)  # a link that may not be written: stop before reading or locking
    _ensure_parent(path)
    with nullcontext(held) if held is not None else pi_lock(path, timeout=lock_timeout) as lock:
        raw = read_bytes(path)
        current = parse_entries(_decode_doc(raw)).get(provider) if raw is not None else None
        new = choose(current)
        if new is None:
            return None
        data = merge_entry(raw, provider, new)
        lock.ensure_held()
        atomic_write(path, data, 0o600, kind=PI_AUTH_KIND)
        return new


def seed_workspace_auth(
    workspace_auth: Path,
    candidates: Sequence[Path],
    *,
    lock_timeout: float = DEFAULT_TIMEOUT_S,
) -> SeedResult:
    """Create the workspace ``auth.json`` as a byte-for-byte copy (mode 0600) of
    the first candidate that parses and holds at least one entry, but only when
    the workspace file is missing, empty or ``{}`` (no entry: pi would have no
    credential there): a file with an entry, or one that cannot be parsed, is
    never overwritten. Candidates that are unreadable or malformed are skipped.

    The copy is made holding pi's lock on the workspace file *and* on the
    source, re-read under it: a refresh holds the source's lock from its
    re-read to its write, so a seed never copies a token being spent (it waits
    and copies the new one).
    A dangling link at ``workspace_auth`` is :class:`FileProblem`
    (``unsafe_link``): its target is never created."""
    write_target(workspace_auth, PI_AUTH_KIND)
    if _has_content(read_bytes(workspace_auth)):
        return SeedResult("workspace_has_auth")
    path = _seed_source(workspace_auth, candidates)
    if path is None:
        return SeedResult("no_home_auth")
    _ensure_parent(workspace_auth)
    with pi_locks([workspace_auth, path], timeout=lock_timeout) as held:
        if _has_content(read_bytes(workspace_auth)):  # pi or a user got there first
            return SeedResult("workspace_has_auth")
        source = _seedable(path)  # as it is now, under its lock
        if source is None:
            return SeedResult("no_home_auth")
        held[workspace_auth].ensure_held()
        held[source.path].ensure_held()
        atomic_write(workspace_auth, source.data, 0o600, kind=PI_AUTH_KIND)
    return SeedResult("seeded", source.path)


def _seedable(path: Path) -> RawFile | None:
    """``path``'s content if it parses with an entry: a file worth copying."""
    try:
        raw = read_bytes(path)
        return raw if raw is not None and _decode_doc(raw) else None
    except FileProblem:
        return None  # half-written or unreadable: never copy it


def _seed_source(target: Path, candidates: Sequence[Path]) -> Path | None:
    """The candidate to lock and copy: the first that parses with an entry, read without
    its lock. A source pi is writing right now (in place, under that lock) reads empty or
    half written: if no candidate parses, the first that reads so is looked at again
    under its lock before there is said to be nothing to copy."""
    busy = None
    for candidate in candidates:
        if os.path.realpath(candidate) == os.path.realpath(target):
            continue
        try:
            raw = read_bytes(candidate)
            if raw is not None and _decode_doc(raw):
                return candidate
        except FileProblem:  # half written, or junk: only a read under its lock can tell
            busy = busy or candidate
            continue
        if raw is not None and not raw.data.strip():  # emptied by a write in progress, or empty
            busy = busy or candidate
    return busy


def _has_content(raw: RawFile | None) -> bool:
    """Whether the workspace file holds an entry; one that cannot be parsed counts
    (it is never overwritten). ``{}`` (what pi and ``doctor --fix`` create) does not."""
    if raw is None:
        return False
    try:
        return bool(_decode_doc(raw))
    except FileProblem:
        return True


def _ensure_parent(path: Path) -> None:
    """Make the directories missing above ``path``, each private (0700): mkdir's
    ``parents`` would give the upper ones the umask's mode (a 0755 ``.tako``)."""
    missing = []
    parent = path.parent
    while not parent.is_dir():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
