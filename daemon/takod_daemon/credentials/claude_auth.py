"""Claude Code's credentials, read-only: environment variables and the
``.credentials.json`` file in its config directory.

Facts from research providers.md B1-B5: the config dir is
``$CLAUDE_CONFIG_DIR``, else ``~/.claude``; on Linux the login is the
plaintext ``<config dir>/.credentials.json`` under key ``claudeAiOauth``
(``accessToken``, ``refreshToken``, ``expiresAt`` in *milliseconds*,
``subscriptionType``, ...); macOS keeps it in the Keychain instead. After a
failed refresh Claude blanks both tokens and sets ``expiresAt`` to 0, which
means the login is dead. For the auth header Claude prefers
``ANTHROPIC_AUTH_TOKEN``, then ``ANTHROPIC_API_KEY`` (which also overrides the
subscription in ``-p`` mode), then ``CLAUDE_CODE_OAUTH_TOKEN`` (long-lived,
from ``claude setup-token``), then the stored login.

takod never writes any of this: Claude rotates its refresh tokens under its
own locks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar, Mapping, cast

import msgspec

from takod_daemon.credentials.files import FileProblem, decode_json, read_bytes
from takod_daemon.credentials.summary import CredentialKind, CredentialSummary, SecretStruct
from takod_daemon.redact import mask_secret

KEYCHAIN_SERVICE = "Claude Code-credentials"
INFERENCE_SCOPE = "user:inference"  # a login without it cannot make model calls

# (variable, kind, note) in Claude's order of precedence.
ENV_CREDENTIALS: tuple[tuple[str, CredentialKind, str], ...] = (
    ("ANTHROPIC_AUTH_TOKEN", "api_key", "sent as a bearer token; wins over every other credential"),
    ("ANTHROPIC_API_KEY", "api_key", "used instead of the subscription login by `claude -p`"),
    ("CLAUDE_CODE_OAUTH_TOKEN", "oauth", "long-lived token from `claude setup-token`; not refreshed"),
)


class ClaudeOAuth(SecretStruct, frozen=True, rename="camel"):
    """``claudeAiOauth`` in ``.credentials.json`` (the fields takod reads)."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"access_token", "refresh_token"})

    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: float | None = None  # milliseconds since the epoch
    subscription_type: str | None = None
    scopes: list[str] | None = None


class _CredentialsFile(msgspec.Struct, rename="camel"):
    claude_ai_oauth: ClaudeOAuth | None = None


class _OAuthAccount(msgspec.Struct, rename="camel"):
    email_address: str | None = None


class _GlobalState(msgspec.Struct, rename="camel"):
    oauth_account: _OAuthAccount | None = None


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def config_dir(env: Mapping[str, str]) -> Path:
    """``$CLAUDE_CONFIG_DIR`` when set, else ``~/.claude``."""
    explicit = env.get("CLAUDE_CONFIG_DIR", "")
    return Path(explicit) if explicit else _home(env) / ".claude"


def credentials_path(env: Mapping[str, str]) -> Path:
    """``.credentials.json`` in the secure-storage dir
    (``$CLAUDE_SECURESTORAGE_CONFIG_DIR``, else the config dir)."""
    secure = env.get("CLAUDE_SECURESTORAGE_CONFIG_DIR", "")
    return (Path(secure) if secure else config_dir(env)) / ".credentials.json"


def global_state_path(env: Mapping[str, str]) -> Path:
    """Claude's global state file, which names the logged-in account: a legacy
    ``<config dir>/.config.json`` if present, else ``.claude.json`` in
    ``$CLAUDE_CONFIG_DIR`` or the home directory."""
    legacy = config_dir(env) / ".config.json"
    if legacy.exists():
        return legacy
    explicit = env.get("CLAUDE_CONFIG_DIR", "")
    return (Path(explicit) if explicit else _home(env)) / ".claude.json"


def read_credentials(path: Path) -> ClaudeOAuth | None:
    """``claudeAiOauth`` from ``path``; None when the file or the key is absent.
    Raises :class:`FileProblem` when the file cannot be used."""
    raw = read_bytes(path)
    if raw is None:
        return None
    return cast(_CredentialsFile, decode_json(raw, _CredentialsFile)).claude_ai_oauth


def read_account(path: Path) -> str | None:
    """The logged-in email from the global state file, or None.

    Only a label: the file is large and Claude's own, so any problem with it
    just means no label.
    """
    try:
        raw = read_bytes(path)
        state = decode_json(raw, _GlobalState) if raw is not None else None
    except FileProblem:
        return None
    if not isinstance(state, _GlobalState) or state.oauth_account is None:
        return None
    return state.oauth_account.email_address or None


def summarize(oauth: ClaudeOAuth, source: str, account: str | None = None) -> CredentialSummary:
    """The readiness view of a stored login."""
    if not oauth.access_token and not oauth.refresh_token:
        # Claude blanks the tokens after an invalid_grant: the login is over.
        return CredentialSummary(
            "claude",
            source,
            "oauth",
            "",
            expires_at=0.0,
            account=account,
            note="Claude ended this login after a failed refresh; run `claude` and /login",
        )
    if INFERENCE_SCOPE not in (oauth.scopes or []):
        # Claude Code 2.1.289 says "Not logged in" and sends nothing with such a login.
        return CredentialSummary(
            "claude", source, "oauth", mask_secret(oauth.access_token or oauth.refresh_token), expires_at=0.0,
            account=account, note=f"this login lacks the {INFERENCE_SCOPE} scope, so Claude Code treats it as "
            "logged out: run `claude` and /login",
        )
    expires_at = oauth.expires_at / 1000 if oauth.expires_at is not None else None
    note = f"Claude {oauth.subscription_type} subscription" if oauth.subscription_type else None
    return CredentialSummary(
        "claude",
        source,
        "oauth",
        mask_secret(oauth.access_token or oauth.refresh_token),
        expires_at=expires_at,
        refreshable=bool(oauth.refresh_token),
        account=account,
        note=note,
    )


def env_credentials(env: Mapping[str, str]) -> list[CredentialSummary]:
    """Credentials Claude takes from the environment, in its order of precedence."""
    found = []
    for name, kind, note in ENV_CREDENTIALS:
        value = env.get(name, "").strip()
        if value:
            found.append(CredentialSummary("claude", name, kind, mask_secret(value), note=note))
    return found


def discover(env: Mapping[str, str], platform: str = sys.platform) -> list[CredentialSummary]:
    """Every Claude Code credential, in the order Claude uses them.

    Raises :class:`FileProblem` when ``.credentials.json`` exists but cannot be
    used (the caller keeps its last good view); :func:`env_credentials` alone
    never touches a file.
    """
    found = env_credentials(env)
    path = credentials_path(env)
    oauth = read_credentials(path)
    if oauth is not None:
        found.append(summarize(oauth, str(path), read_account(global_state_path(env))))
    elif platform == "darwin":
        found.append(
            CredentialSummary(
                "claude",
                f"keychain:{KEYCHAIN_SERVICE}",
                "oauth",
                "",
                note="on macOS Claude keeps its login in the Keychain, which takod does not read",
                unverified=True,
            )
        )
    return found
