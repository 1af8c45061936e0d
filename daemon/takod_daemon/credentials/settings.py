"""The workspace's ``.tako/state/inference-settings.json``, shared with Takobot.

Reading applies Takobot's normalisation (research takobot-inference.md §2.1)
so both programs see the same settings; ``preferred_provider`` also accepts
every takod provider. A missing file means defaults. A file that cannot be
parsed is reported as :class:`FileProblem` and never written over: the caller
keeps its last good settings.

Every change re-reads the file, changes one thing in the raw document (so keys
this code does not know survive), and replaces the file atomically, 0600, in
Takobot's layout (2-space indent, sorted keys, trailing newline).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable, cast
from urllib.parse import urlsplit

import msgspec

from takod.schema import API_PROVIDERS, PROVIDERS
from takod_daemon.credentials.files import FileKind, atomic_write, decode_json, read_bytes
from takod_daemon.credentials.summary import SecretStruct

# Takobot itself knows only auto and pi, and reads any other value as auto (research §2).
PROVIDER_PREFERENCES = ("auto", *PROVIDERS, *API_PROVIDERS)

# Takobot's PI_KEY_ENV_VARS plus CLAUDE_API_KEY, sorted (research §2.2).
CONFIGURABLE_API_KEY_VARS = (
    "AI_GATEWAY_API_KEY",
    "ALI_BAILIAN_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AZURE_OPENAI_API_KEY",
    "CEREBRAS_API_KEY",
    "CLAUDE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GROQ_API_KEY",
    "KIMI_API_KEY",
    "MIDDLEWARE_API_KEY",
    "MINIMAX_API_KEY",
    "MISTRAL_API_KEY",
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "VENICE_API_KEY",
    "XAI_API_KEY",
    "ZAI_API_KEY",
)

LANE_MODEL_MAX_CHARS = 180

# The fields ``set_field`` changes; api_keys has its own functions.
SETTABLE_FIELDS = ("preferred_provider", "ollama_model", "ollama_host", "type1_model", "type2_model")


class SettingsError(ValueError):
    """A requested change is not valid. The message never repeats the value."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class InferenceSettings(SecretStruct, frozen=True, kw_only=True):
    """The settings, normalised. ``api_keys`` maps env var name to key (masked in repr)."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"api_keys"})

    preferred_provider: str = "auto"
    ollama_model: str = ""
    ollama_host: str = ""
    type1_model: str = ""
    type2_model: str = ""
    api_keys: dict[str, str] = msgspec.field(default_factory=dict)


def _looks_like_settings(doc: Any) -> bool:
    return isinstance(doc, dict) and (not doc or any(name in doc for name in (*SETTABLE_FIELDS, "api_keys")))


# The settings file may be a symlink to another workspace's settings file of the
# user's (shared settings), never to anything else.
SETTINGS_KIND = FileKind("inference-settings.json", "inference-settings.json", _looks_like_settings)


def settings_path(workspace: Path) -> Path:
    """Where a workspace keeps its inference settings."""
    return workspace / ".tako" / "state" / "inference-settings.json"


def _collapse(value: Any) -> str:
    # Takobot's ``" ".join(str(value or "").split())``: non-strings are stringified.
    return " ".join(str(value or "").split())


def clean_lane_model(value: Any) -> str:
    """Takobot's lane-model rule: collapse whitespace, ``auto``/``default``/``none``
    mean ``auto``, at most 180 characters; ``""`` when empty."""
    cleaned = _collapse(value)
    if cleaned.lower() in {"auto", "default", "none"}:
        return "auto"
    if len(cleaned) > LANE_MODEL_MAX_CHARS:
        cleaned = cleaned[:LANE_MODEL_MAX_CHARS].rstrip()
    return cleaned


def normalise_api_key_name(name: str) -> str:
    """``" openai_api_key "`` -> ``OPENAI_API_KEY``, as Takobot matches names."""
    return name.strip().upper()


def normalise(doc: dict[str, Any]) -> InferenceSettings:
    """Settings from a decoded file, with Takobot's load rules: unknown providers
    become ``auto``, unusable api_keys entries are left out."""
    preferred = str(doc.get("preferred_provider") or "").strip().lower()
    api_keys: dict[str, str] = {}
    raw_keys = doc.get("api_keys")
    if isinstance(raw_keys, dict):
        for name, value in raw_keys.items():
            if not isinstance(name, str) or not isinstance(value, str):
                continue
            env_var = normalise_api_key_name(name)
            if env_var in CONFIGURABLE_API_KEY_VARS and value.strip():
                api_keys[env_var] = value.strip()
    return InferenceSettings(
        preferred_provider=preferred if preferred in PROVIDER_PREFERENCES else "auto",
        ollama_model=_collapse(doc.get("ollama_model")),
        ollama_host=_collapse(doc.get("ollama_host")),
        type1_model=clean_lane_model(doc.get("type1_model")),
        type2_model=clean_lane_model(doc.get("type2_model")),
        api_keys=api_keys,
    )


def _read_doc(path: Path) -> dict[str, Any] | None:
    raw = read_bytes(path)
    if raw is None:
        return None
    return cast(dict[str, Any], decode_json(raw, dict))


def load_settings(path: Path) -> InferenceSettings:
    """The settings at ``path``; defaults when missing. Raises :class:`FileProblem`
    when the file exists but is not a JSON object."""
    doc = _read_doc(path)
    return InferenceSettings() if doc is None else normalise(doc)


def clean_field(field: str, value: object) -> str:
    """The value ``set_field`` stores for ``field``, validated like Takobot's setters.

    Raises :class:`SettingsError` with a message fit for the user.
    """
    if field not in SETTABLE_FIELDS:
        raise SettingsError(field, f"unknown setting (expected one of: {', '.join(SETTABLE_FIELDS)})")
    if not isinstance(value, str):
        raise SettingsError(field, f"{field} must be a string")
    if any((ord(c) < 0x20 and not c.isspace()) or ord(c) == 0x7F for c in value):
        # NUL and friends: no host, model or provider has them; a file holding one breaks its readers.
        raise SettingsError(field, f"{field} must not contain control characters")
    if field == "preferred_provider":
        candidate = _collapse(value).lower() or "auto"
        if candidate not in PROVIDER_PREFERENCES:
            raise SettingsError(field, f"unsupported provider (expected: {', '.join(PROVIDER_PREFERENCES)})")
        return candidate
    if field in ("type1_model", "type2_model"):
        cleaned = clean_lane_model(value)
        if not cleaned:
            lane = field.removesuffix("_model")
            raise SettingsError(field, f"{lane} model cannot be empty (use `auto` to clear override).")
        return cleaned
    # ollama_model / ollama_host: empty clears the preference.
    cleaned = _collapse(value)
    if field == "ollama_host" and cleaned:
        check_ollama_host(cleaned)
    return cleaned


_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def check_ollama_host(value: str) -> None:
    """Raise :class:`SettingsError` unless ``value`` is an address Ollama could answer at:
    ``http(s)://HOST[:PORT][/path]``, or OLLAMA_HOST's short ``HOST[:PORT]`` form where
    HOST is an IP address, ``localhost`` or a dotted name, or a port is given (so a
    stray word such as ``not-a-url`` is refused rather than probed for ever)."""
    bad = SettingsError("ollama_host", "not an address Ollama answers at: give http://HOST:PORT, "
                        "e.g. `takod ollama host http://127.0.0.1:11434` (or \"\" for OLLAMA_HOST or the default)")
    has_scheme = "://" in value
    try:
        parts = urlsplit(value if has_scheme else "http://" + value)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise bad from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or port == 0:
        raise bad
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(host):
        raise bad
    if not has_scheme and port is None and "." not in host and host != "localhost":
        raise bad


def drop_api_keys(doc: dict[str, Any], names: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``doc`` without the api_keys entries whose normalised name is in
    ``names``, and the normalised names actually removed (sorted)."""
    wanted = {normalise_api_key_name(n) for n in names}
    raw_keys = doc.get("api_keys")
    if not isinstance(raw_keys, dict):
        return dict(doc), []
    kept: dict[str, Any] = {}
    removed: set[str] = set()
    for name, value in raw_keys.items():
        if isinstance(name, str) and normalise_api_key_name(name) in wanted:
            removed.add(normalise_api_key_name(name))
        else:
            kept[name] = value
    updated = dict(doc)
    updated["api_keys"] = kept
    return updated, sorted(removed)


def _write_doc(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = msgspec.json.format(msgspec.json.encode(doc, order="sorted"), indent=2) + b"\n"
    atomic_write(path, data, kind=SETTINGS_KIND)


def set_field(path: Path, field: str, value: object) -> InferenceSettings:
    """Set one field in the file at ``path`` (created if missing) and return the
    new settings. Raises :class:`SettingsError` for a bad value and
    :class:`FileProblem` (writing nothing) when the current file is unusable."""
    cleaned = clean_field(field, value)  # reject bad input before touching the file
    updated = {**(_read_doc(path) or {}), field: cleaned}
    _write_doc(path, updated)
    return normalise(updated)


def remove_api_keys(path: Path, names: Iterable[str]) -> list[str]:
    """Remove the named keys from ``api_keys`` (once they live in the keyring).

    Returns the names removed; writes only when something was removed.
    Raises :class:`FileProblem` (writing nothing) when the file is unusable.
    """
    doc = _read_doc(path)
    if doc is None:
        return []
    updated, removed = drop_api_keys(doc, names)
    if removed:
        _write_doc(path, updated)
    return removed

