"""Codex CLI's login: ``$CODEX_HOME/auth.json`` and where ``config.toml`` says it lives.

Facts from research providers.md A1-A6: the home is ``$CODEX_HOME`` (empty
counts as unset), else ``~/.codex``. ``auth.json`` holds ``auth_mode``,
``OPENAI_API_KEY`` (null in ChatGPT mode), ``tokens`` (JWT ``id_token`` and
``access_token``, opaque ``refresh_token``, ``account_id``) and
``last_refresh`` (RFC 3339 UTC, rewritten on every refresh). The access
token's ``exp`` drives refresh. ``cli_auth_credentials_store`` in
``config.toml`` says whether that file is the store at all.

Codex writes the file by truncate-then-write, so a half-written file is
normal for a moment: it is reported as a :class:`FileProblem` and the caller
reads again later. Writing back keeps every key Codex (or a newer Codex) put
there and changes only what a refresh changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Mapping, cast

import msgspec

from takod_daemon.credentials.files import (
    FileKind,
    FileProblem,
    atomic_write,
    decode_json,
    encode_json,
    read_bytes,
    strip_bom,
)
from takod_daemon.credentials.jwt import JwtClaims, JwtError, decode_claims
from takod_daemon.credentials.summary import CredentialSummary, SecretStruct
from takod_daemon.redact import mask_secret

DEFAULT_STORE = "file"
KEYRING_SERVICE = "Codex Auth"
# ``CODEX_API_KEY`` wins over the stored login for ``codex exec`` (research A4).
API_KEY_ENV = "CODEX_API_KEY"


def _looks_like_codex_auth(doc: Any) -> bool:
    return isinstance(doc, dict) and any(name in doc for name in ("auth_mode", "tokens", "OPENAI_API_KEY"))


# ``auth.json`` may be a symlink (a dotfile manager's) to another Codex auth.json
# of the user's, never to anything else.
CODEX_AUTH_KIND = FileKind("Codex auth.json", "auth.json", _looks_like_codex_auth)


class CodexTokens(SecretStruct, frozen=True):
    """``auth.json`` ``tokens`` as Codex writes them."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"id_token", "access_token", "refresh_token"})

    id_token: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    account_id: str | None = None


class CodexAuthFile(SecretStruct, frozen=True):
    """The fields of ``auth.json`` takod reads; other keys are kept but not typed."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"openai_api_key"})

    auth_mode: str | None = None
    openai_api_key: str | None = msgspec.field(default=None, name="OPENAI_API_KEY")
    tokens: CodexTokens | None = None
    last_refresh: str | None = None


class CodexAuth(SecretStruct, frozen=True, kw_only=True):
    """What ``auth.json`` says, with the times decoded. Times are epoch seconds."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset(
        {"api_key", "id_token", "access_token", "refresh_token"}
    )

    path: str
    # Effective mode: the file's ``auth_mode``, else ``apikey`` when a key is
    # stored, else ``chatgpt`` (Codex's own default).
    auth_mode: str
    api_key: str | None = None
    id_token: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    account_id: str | None = None
    last_refresh: float | None = None
    expires_at: float | None = None  # access token ``exp``
    issued_at: float | None = None  # access token ``iat``
    email: str | None = None
    plan_type: str | None = None
    # Why the access token's expiry is unknown, when it is ("is not a usable JWT: ...").
    token_problem: str | None = None


class TokenRefresh(SecretStruct, frozen=True, kw_only=True):
    """A token endpoint's answer. Each field is optional; only those present are written."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"id_token", "access_token", "refresh_token"})

    id_token: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None


class _CodexConfig(msgspec.Struct):
    cli_auth_credentials_store: str = DEFAULT_STORE


def codex_home(env: Mapping[str, str]) -> Path:
    """``$CODEX_HOME`` when set and non-empty, else ``~/.codex``."""
    explicit = env.get("CODEX_HOME", "")
    if explicit:
        return Path(explicit)
    return Path(env.get("HOME") or Path.home()) / ".codex"


def auth_path(home: Path) -> Path:
    return home / "auth.json"


def config_path(home: Path) -> Path:
    return home / "config.toml"


def keyring_account(home: Path) -> str:
    """The keyring account Codex files its login under for ``home`` (service
    ``Codex Auth``): ``cli|`` + 16 hex of sha256 of the canonical path."""
    canonical = os.path.realpath(home)
    return "cli|" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


_TOML_WHERE_RE = re.compile(r"\(at (?:line \d+, column \d+|end of document)\)")


def read_store_mode(home: Path) -> str:
    """``cli_auth_credentials_store`` from ``config.toml``: ``file`` (the default,
    also when there is no config), ``keyring``, ``auto``, ``ephemeral``, or a
    newer value. Raises :class:`FileProblem` for an unreadable config."""
    raw = read_bytes(config_path(home))
    if raw is None:
        return DEFAULT_STORE
    try:
        text = strip_bom(raw.data).decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem(raw.path, "malformed", "is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Keep only the position: some messages quote the offending character.
        where = _TOML_WHERE_RE.search(str(exc))
        detail = f"is not valid TOML {where.group(0)}" if where else "is not valid TOML"
        raise FileProblem(raw.path, "malformed", detail) from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise FileProblem(raw.path, "too_deep", "is nested too deeply to be a Codex config") from None
    try:
        config = msgspec.convert(doc, _CodexConfig)
    except msgspec.ValidationError:
        raise FileProblem(raw.path, "invalid", "has a cli_auth_credentials_store that is not a string") from None
    return config.cli_auth_credentials_store


def file_is_writable(store_mode: str, keyring_has_entry: bool | None = None) -> bool:
    """Whether takod may write ``auth.json`` back.

    Only when the file is the store: mode ``file``, or ``auto`` when the caller
    checked that the keyring holds no Codex entry (``keyring_has_entry`` is
    False). Keyring, ephemeral and unknown modes are read-only.
    """
    if store_mode == "file":
        return True
    return store_mode == "auto" and keyring_has_entry is False


def _parse_rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _claims(token: str | None) -> tuple[JwtClaims | None, str | None]:
    if not token:
        return None, None
    try:
        return decode_claims(token), None
    except JwtError as exc:
        return None, f"is {exc}"


def parse_auth(doc: dict[str, Any], path: Path) -> CodexAuth:
    """Type a decoded ``auth.json``. Raises :class:`FileProblem` on wrong types."""
    try:
        file = msgspec.convert(doc, CodexAuthFile)
    except msgspec.ValidationError as exc:
        raise FileProblem(path, "invalid", f"has unexpected content ({exc})") from None
    tokens = file.tokens or CodexTokens()
    api_key = file.openai_api_key or None
    mode = file.auth_mode or ("apikey" if api_key else "chatgpt")
    access, access_problem = _claims(tokens.access_token)
    identity, _ = _claims(tokens.id_token)
    if access is not None and access.exp is None:
        access_problem = "has no exp claim"

    def claim(name: str) -> str | None:
        # The id token describes the account; the access token is the fallback.
        values = (getattr(c, name) for c in (identity, access) if c is not None)
        return next((v for v in values if v), None)

    return CodexAuth(
        path=str(path),
        auth_mode=mode,
        api_key=api_key,
        id_token=tokens.id_token or None,
        access_token=tokens.access_token or None,
        refresh_token=tokens.refresh_token or None,
        account_id=tokens.account_id or claim("account_id"),
        last_refresh=_parse_rfc3339(file.last_refresh),
        expires_at=access.exp if access else None,
        issued_at=access.iat if access else None,
        email=claim("email"),
        plan_type=claim("plan_type"),
        token_problem=access_problem,
    )


def read_auth(path: Path) -> CodexAuth | None:
    """``auth.json`` at ``path``; None when absent. Raises :class:`FileProblem`
    when it is unreadable, half-written or of the wrong shape."""
    raw = read_bytes(path)
    if raw is None:
        return None
    return parse_auth(cast(dict[str, Any], decode_json(raw, dict)), path)


def summarize(auth: CodexAuth, writable: bool) -> CredentialSummary | None:
    """The readiness view of ``auth``; None when it holds no credential."""
    if auth.auth_mode == "apikey":
        if not auth.api_key:
            return None
        # A stored API key is never refreshed, so takod has no reason to write it.
        return CredentialSummary("codex", auth.path, "api_key", mask_secret(auth.api_key))
    if not (auth.access_token or auth.refresh_token):
        return None
    notes = []
    unverified = False
    if auth.auth_mode != "chatgpt":
        notes.append(f"auth_mode {auth.auth_mode} is newer than takod; `codex login status` tells more")
        unverified = True
    if auth.plan_type:
        notes.append(f"ChatGPT {auth.plan_type} plan")
    if auth.last_refresh is None:
        # Codex refuses ChatGPT tokens without it ("Token data is not available").
        notes.append("no valid last_refresh, so Codex will not use these tokens; run `codex login`")
        unverified = True
    if auth.token_problem:
        notes.append(f"expiry unknown: the access token {auth.token_problem}")
    return CredentialSummary(
        "codex",
        auth.path,
        "oauth",
        mask_secret(auth.access_token or auth.refresh_token),
        expires_at=auth.expires_at,
        refreshable=bool(auth.refresh_token),
        read_only=not writable,
        account=auth.email or auth.account_id,
        note="; ".join(notes) or None,
        unverified=unverified,
    )


def env_credentials(env: Mapping[str, str]) -> list[CredentialSummary]:
    """Credentials Codex takes from the environment (only ``CODEX_API_KEY``)."""
    value = env.get(API_KEY_ENV, "").strip()
    if not value:
        return []
    note = "used by `codex exec` instead of the stored login"
    return [CredentialSummary("codex", API_KEY_ENV, "api_key", mask_secret(value), note=note)]


def _keyring_summary() -> CredentialSummary:
    return CredentialSummary(
        "codex",
        f"keyring:{KEYRING_SERVICE}",
        "oauth",
        "",
        note="Codex keeps its login in the OS keyring, which takod does not read; `codex login status` tells",
        unverified=True,
    )


def discover(env: Mapping[str, str], keyring_has_entry: bool | None = None) -> list[CredentialSummary]:
    """Every Codex credential, in the order Codex uses them.

    Raises :class:`FileProblem` when ``config.toml`` or ``auth.json`` exists
    but cannot be used (the caller keeps its last good view);
    :func:`env_credentials` alone never touches a file.
    """
    home = codex_home(env)
    store = read_store_mode(home)
    found = env_credentials(env)
    if store in ("file", "auto"):
        auth = read_auth(auth_path(home))
        if auth is not None:
            summary = summarize(auth, file_is_writable(store, keyring_has_entry))
            if summary is not None:
                found.append(summary)
        elif store == "auto":
            found.append(_keyring_summary())
    elif store == "keyring":
        found.append(_keyring_summary())
    return found


def format_last_refresh(now: datetime) -> str:
    """``last_refresh`` as Codex writes it: RFC 3339 UTC with microseconds and ``Z``."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def apply_refresh(doc: dict[str, Any], update: TokenRefresh, now: datetime) -> dict[str, Any]:
    """A copy of ``doc`` after a refresh, as Codex does it: overwrite only the
    tokens the answer carried, set ``last_refresh`` to ``now``, keep
    ``tokens.account_id`` and every other key."""
    tokens = doc.get("tokens")
    new_tokens = dict(tokens) if isinstance(tokens, dict) else {}
    for name in ("id_token", "access_token", "refresh_token"):
        value = getattr(update, name)
        if value:  # an empty token is never an improvement
            new_tokens[name] = value
    updated = dict(doc)
    updated["tokens"] = new_tokens
    updated["last_refresh"] = format_last_refresh(now)
    return updated


def write_refreshed_tokens(
    home: Path,
    update: TokenRefresh,
    posted_refresh_token: str,
    now: datetime | None = None,
    keyring_has_entry: bool | None = None,
) -> bool:
    """Write a refresh's result into ``auth.json``; True when written.

    Re-reads the file first. Returns False, writing nothing, when its refresh
    token is no longer ``posted_refresh_token``: someone else refreshed or
    logged in, and their tokens win. Raises :class:`FileProblem` when the
    store is not this file (reason ``read_only``), when it is gone
    (``missing``) or cannot be parsed; a file that cannot be parsed is
    never overwritten.
    """
    path = auth_path(home)
    if not file_is_writable(read_store_mode(home), keyring_has_entry):
        raise FileProblem(path, "read_only", "is not Codex's credential store here; takod leaves it alone")
    raw = read_bytes(path)
    if raw is None:
        raise FileProblem(path, "missing", "does not exist (logged out?)")
    doc = cast(dict[str, Any], decode_json(raw, dict))
    if parse_auth(doc, path).refresh_token != posted_refresh_token:
        return False
    atomic_write(path, encode_json(apply_refresh(doc, update, now or datetime.now(timezone.utc))), kind=CODEX_AUTH_KIND)
    return True
