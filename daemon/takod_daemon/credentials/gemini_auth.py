"""Gemini CLI's credentials, read-only: which auth type it is set to, and the
credential that type uses.

Facts from research providers.md C0-C6: everything lives in ``~/.gemini``
(``$GEMINI_CLI_HOME/.gemini`` when set). ``settings.json`` (JSON with
comments) selects the auth type in ``security.auth.selectedType`` (v1:
top-level ``selectedAuthType``); that choice wins over the environment, which
only decides when nothing is selected. Personal OAuth tokens are in
``oauth_creds.json`` (``expiry_date`` in *milliseconds*), or in the keychain
when ``GEMINI_FORCE_ENCRYPTED_FILE_STORAGE=true``. Since 2026-06-18 Google
refuses personal accounts even though their tokens still refresh, so a
personal login is always reported ``unverified``.

takod never writes any of this: Google's refresh answer omits the refresh
token and the CLI rewrites the whole file, so an outside writer only adds risk.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import ClassVar, Mapping, cast

import msgspec

from takod_daemon.credentials.files import FileProblem, decode_json, read_bytes, strip_bom
from takod_daemon.credentials.jwt import JwtError, decode_claims
from takod_daemon.credentials.summary import CredentialSummary, SecretStruct
from takod_daemon.redact import mask_secret

OAUTH_PERSONAL = "oauth-personal"
GEMINI_API_KEY_AUTH = "gemini-api-key"
VERTEX_AI = "vertex-ai"
GATEWAY = "gateway"
COMPUTE_ADC = "compute-default-credentials"
CLOUD_SHELL = "cloud-shell"

KEYCHAIN_SERVICE = "gemini-cli-oauth"

PERSONAL_OAUTH_NOTE = (
    "personal Google login: Google stopped serving personal accounts in Gemini CLI on 2026-06-18, "
    "so only a real request tells whether this one still works"
)


class GeminiOAuthCreds(SecretStruct, frozen=True):
    """``oauth_creds.json`` (google-auth-library credentials) fields takod reads."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"access_token", "refresh_token", "id_token"})

    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    expiry_date: float | None = None  # milliseconds since the epoch
    type: str | None = None


class _AuthSettings(msgspec.Struct):
    selected_type: str | None = msgspec.field(default=None, name="selectedType")


class _SecuritySettings(msgspec.Struct):
    auth: _AuthSettings | None = None


class _GeminiSettings(msgspec.Struct):
    security: _SecuritySettings | None = None
    selected_auth_type: str | None = msgspec.field(default=None, name="selectedAuthType")


def gemini_dir(env: Mapping[str, str]) -> Path:
    """``$GEMINI_CLI_HOME/.gemini`` when set, else ``~/.gemini``."""
    root = env.get("GEMINI_CLI_HOME", "") or env.get("HOME", "") or str(Path.home())
    return Path(root) / ".gemini"


def settings_path(env: Mapping[str, str]) -> Path:
    return gemini_dir(env) / "settings.json"


def oauth_creds_path(env: Mapping[str, str]) -> Path:
    return gemini_dir(env) / "oauth_creds.json"


# A JSON string (kept) or a comment (blanked), scanned left to right so that
# "//" inside a string is never taken for a comment.
_JSONC_TOKEN_RE = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL)


def strip_json_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments turned into spaces (newlines
    kept, so parse errors still point at the right line)."""

    def blank(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else re.sub(r"[^\n]", " ", token)

    return _JSONC_TOKEN_RE.sub(blank, text)


def read_selected_auth_type(path: Path) -> str | None:
    """The auth type ``settings.json`` at ``path`` selects, or None.

    Raises :class:`FileProblem` when the file exists but cannot be parsed.
    """
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        text = strip_bom(raw.data).decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem(raw.path, "malformed", "is not UTF-8 text") from None
    uncommented = dataclasses.replace(raw, data=strip_json_comments(text).encode())
    settings = cast(_GeminiSettings, decode_json(uncommented, _GeminiSettings))
    auth = settings.security.auth if settings.security else None
    return (auth.selected_type if auth else None) or settings.selected_auth_type or None


def _true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def auth_type_from_env(env: Mapping[str, str]) -> str | None:
    """The auth type Gemini CLI picks from the environment when settings select none."""
    if _true(env, "GOOGLE_GENAI_USE_GCA"):
        return OAUTH_PERSONAL
    if _true(env, "GOOGLE_GENAI_USE_VERTEXAI"):
        return VERTEX_AI
    if env.get("GOOGLE_GEMINI_BASE_URL"):
        return GATEWAY
    if env.get("GEMINI_API_KEY"):
        return GEMINI_API_KEY_AUTH
    if _true(env, "CLOUD_SHELL") or _true(env, "GEMINI_CLI_USE_COMPUTE_ADC"):
        return COMPUTE_ADC
    return None


def read_oauth_creds(path: Path) -> GeminiOAuthCreds | None:
    """``oauth_creds.json`` at ``path``; None when absent. Raises
    :class:`FileProblem` when it cannot be used."""
    raw = read_bytes(path)
    if raw is None:
        return None
    return cast(GeminiOAuthCreds, decode_json(raw, GeminiOAuthCreds))


def summarize_oauth(creds: GeminiOAuthCreds, source: str) -> CredentialSummary | None:
    """The readiness view of a personal login; None when it holds no token."""
    if not creds.access_token and not creds.refresh_token:
        return None
    account = None
    if creds.id_token:
        try:
            account = decode_claims(creds.id_token).email
        except JwtError:
            pass  # the account is only a label
    note = PERSONAL_OAUTH_NOTE
    if creds.type == "external_account_authorized_user":
        note = "workforce identity (BYOID) login; only a real request tells whether it works"
    return CredentialSummary(
        "gemini",
        source,
        "oauth",
        mask_secret(creds.access_token or creds.refresh_token),
        expires_at=creds.expiry_date / 1000 if creds.expiry_date is not None else None,
        refreshable=bool(creds.refresh_token),
        account=account,
        note=note,
        unverified=True,
    )


def _env_key(env: Mapping[str, str], name: str, note: str | None = None) -> list[CredentialSummary]:
    value = env.get(name, "").strip()
    return [CredentialSummary("gemini", name, "api_key", mask_secret(value), note=note)] if value else []


def _ambient(source: str, note: str, account: str | None = None) -> CredentialSummary:
    # Credentials Google's libraries fetch and renew themselves; takod sees none of them.
    return CredentialSummary(
        "gemini", source, "oauth", "", refreshable=True, account=account, note=note, unverified=True
    )


def _personal(env: Mapping[str, str]) -> list[CredentialSummary]:
    if _true(env, "GOOGLE_GENAI_USE_GCA") and env.get("GOOGLE_CLOUD_ACCESS_TOKEN", "").strip():
        token = env["GOOGLE_CLOUD_ACCESS_TOKEN"].strip()
        note = "static Code Assist access token; nothing renews it"
        return [CredentialSummary("gemini", "GOOGLE_CLOUD_ACCESS_TOKEN", "oauth", mask_secret(token), note=note)]
    path = oauth_creds_path(env)
    creds = read_oauth_creds(path)
    summary = summarize_oauth(creds, str(path)) if creds is not None else None
    if summary is not None:
        return [summary]
    if creds is None and _true(env, "GEMINI_FORCE_ENCRYPTED_FILE_STORAGE"):
        note = f"{PERSONAL_OAUTH_NOTE}; the tokens are in the OS keychain, which takod does not read"
        return [_ambient(f"keyring:{KEYCHAIN_SERVICE}", note)]
    return []


def _vertex(env: Mapping[str, str]) -> list[CredentialSummary]:
    keyed = _env_key(env, "GOOGLE_API_KEY", "Vertex AI API key")
    if keyed:
        return keyed
    project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT_ID")
    location = env.get("GOOGLE_CLOUD_LOCATION")
    if project and location:
        note = f"Vertex AI in {location} through application default credentials"
        return [_ambient("GOOGLE_CLOUD_PROJECT", note, account=project)]
    return []


def discover(env: Mapping[str, str]) -> list[CredentialSummary]:
    """The credential of the auth type Gemini CLI is set to, then a
    ``GEMINI_API_KEY`` it would ignore (takod can still run Gemini in API-key
    mode with it).

    Raises :class:`FileProblem` when ``settings.json`` or ``oauth_creds.json``
    exists but cannot be used (the caller keeps its last good view).
    """
    selected = read_selected_auth_type(settings_path(env)) or auth_type_from_env(env)
    if selected == OAUTH_PERSONAL:
        found = _personal(env)
    elif selected in (GEMINI_API_KEY_AUTH, GATEWAY):
        found = _env_key(env, "GEMINI_API_KEY")
    elif selected == VERTEX_AI:
        found = _vertex(env)
    elif selected in (COMPUTE_ADC, CLOUD_SHELL):
        found = [_ambient("metadata server", "Google Cloud compute credentials")]
    elif selected:
        found = [_ambient(str(settings_path(env)), f"auth type {selected} is newer than takod")]
    else:
        found = []
    if not any(s.source == "GEMINI_API_KEY" for s in found):
        found += _env_key(env, "GEMINI_API_KEY", f"Gemini CLI ignores it while set to {selected}")
    return found
