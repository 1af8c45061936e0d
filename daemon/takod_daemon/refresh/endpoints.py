"""What takod sends to each OAuth token endpoint to refresh a grant.

Pure request building: endpoint URLs (real by default, overridable from the
environment so tests can use a loopback server), client ids, body encodings
and headers, exactly as the tools that own the grants send them (research
pi-auth.md §2.1, providers.md A5):

- pi ``openai-codex``: form ``grant_type, refresh_token, client_id``.
- pi ``anthropic``: JSON ``grant_type, client_id, refresh_token``; never a
  ``scope`` (Anthropic answers ``invalid_scope``, pi #2169).
- pi ``github-copilot``: not a refresh at all but a GET of a short-lived
  Copilot token, authorised by the long-lived GitHub token.
- pi ``google-gemini-cli`` / ``google-antigravity``: form with the tool's
  public installed-app ``client_id`` and ``client_secret``.
- Codex ``auth.json``: JSON ``client_id, grant_type, refresh_token`` to the
  same OpenAI endpoint as pi's ``openai-codex``.

Copilot's URL: ``TAKOD_COPILOT_TOKEN_URL`` when set, for every GitHub domain
(it exists so tests never reach a real host). Otherwise github.com uses
``https://api.github.com/copilot_internal/v2/token`` and a GitHub Enterprise
entry (pi's ``enterpriseUrl``) derives its own, ``https://api.<domain>/...``,
as pi does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlencode, urlsplit

import msgspec

from takod_daemon.credentials.summary import SecretStruct


class Endpoint(msgspec.Struct, frozen=True):
    """A token endpoint: its real URL and the variable that overrides it."""

    env_var: str
    default_url: str

    def url(self, env: Mapping[str, str]) -> str:
        """The override from ``env`` when set and non-empty, else the real URL."""
        return env.get(self.env_var, "").strip() or self.default_url


OPENAI = Endpoint("TAKOD_OPENAI_TOKEN_URL", "https://auth.openai.com/oauth/token")
ANTHROPIC = Endpoint("TAKOD_ANTHROPIC_TOKEN_URL", "https://platform.claude.com/v1/oauth/token")
COPILOT = Endpoint("TAKOD_COPILOT_TOKEN_URL", "https://api.github.com/copilot_internal/v2/token")
GOOGLE = Endpoint("TAKOD_GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token")

# One OpenAI client serves pi's openai-codex and Codex itself.
OPENAI_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
ANTHROPIC_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


class GoogleClient(msgspec.Struct, frozen=True):
    """A Google installed-app OAuth client. Google treats such secrets as
    public (they ship inside the CLIs); they are constants, not credentials."""

    client_id: str
    client_secret: str


GOOGLE_CLIENTS: Mapping[str, GoogleClient] = {
    "google-gemini-cli": GoogleClient(
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
        "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",
    ),
    "google-antigravity": GoogleClient(
        "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
        "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",
    ),
}

# pi 0.58-1.5 send these with the Copilot token request (pi-auth.md §2.1).
COPILOT_HEADERS: Mapping[str, str] = {
    "User-Agent": "GitHubCopilotChat/0.35.0",
    "Editor-Version": "vscode/1.107.0",
    "Editor-Plugin-Version": "copilot-chat/0.35.0",
    "Copilot-Integration-Id": "vscode-chat",
}
COPILOT_PATH = "/copilot_internal/v2/token"

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class TokenRequest(SecretStruct, frozen=True):
    """One HTTP request to a token endpoint. ``headers`` and ``body`` carry
    secrets and are masked in ``repr`` (``body`` is text so that it can be)."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"headers", "body"})

    method: str
    url: str
    headers: dict[str, str]
    body: str | None = None


class AnthropicRefreshBody(msgspec.Struct, frozen=True):
    """pi's Anthropic refresh body, in pi's key order; deliberately no ``scope``."""

    grant_type: str
    client_id: str
    refresh_token: str


class CodexRefreshBody(msgspec.Struct, frozen=True):
    """Codex's ``RefreshRequest``, in Codex's key order."""

    client_id: str
    grant_type: str
    refresh_token: str


def _form(url: str, fields: list[tuple[str, str]]) -> TokenRequest:
    # URLSearchParams and urlencode agree: spaces as "+", everything else %-escaped.
    return TokenRequest("POST", url, {"Content-Type": FORM}, urlencode(fields))


def _json(url: str, body: msgspec.Struct) -> TokenRequest:
    headers = {"Content-Type": JSON, "Accept": JSON}
    return TokenRequest("POST", url, headers, msgspec.json.encode(body).decode())


def openai_codex_request(refresh_token: str, env: Mapping[str, str]) -> TokenRequest:
    """pi's ``openai-codex`` refresh: form-encoded, pi's field order."""
    fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", OPENAI_CLIENT_ID)]
    return _form(OPENAI.url(env), fields)


def anthropic_request(refresh_token: str, env: Mapping[str, str]) -> TokenRequest:
    """pi's ``anthropic`` refresh: JSON, no scope."""
    body = AnthropicRefreshBody("refresh_token", ANTHROPIC_CLIENT_ID, refresh_token)
    return _json(ANTHROPIC.url(env), body)


def google_request(provider: str, refresh_token: str, env: Mapping[str, str]) -> TokenRequest:
    """pi's ``google-gemini-cli`` / ``google-antigravity`` refresh: form with the
    provider's own client. Raises KeyError for another provider."""
    client = GOOGLE_CLIENTS[provider]
    fields = [
        ("client_id", client.client_id),
        ("client_secret", client.client_secret),
        ("refresh_token", refresh_token),
        ("grant_type", "refresh_token"),
    ]
    return _form(GOOGLE.url(env), fields)


def copilot_domain(enterprise_url: str | None) -> str | None:
    """The GitHub Enterprise host named by pi's ``enterpriseUrl`` (pi stores a
    bare host; a URL is reduced to its host as pi's ``normalizeDomain`` does).
    None for github.com (absent or blank)."""
    text = (enterprise_url or "").strip()
    if not text:
        return None
    host = urlsplit(text if "://" in text else f"https://{text}").hostname
    return host or None


def copilot_token_url(enterprise_url: str | None, env: Mapping[str, str]) -> str:
    """Where the Copilot token comes from: the override when set, else
    ``api.<domain>`` of the entry's GitHub (Enterprise) domain."""
    override = env.get(COPILOT.env_var, "").strip()
    if override:
        return override
    domain = copilot_domain(enterprise_url)
    return f"https://api.{domain}{COPILOT_PATH}" if domain else COPILOT.default_url


def copilot_request(github_token: str, enterprise_url: str | None, env: Mapping[str, str]) -> TokenRequest:
    """pi's ``github-copilot`` "refresh": GET with the GitHub token as Bearer."""
    headers = {"Accept": JSON, "Authorization": f"Bearer {github_token}", **COPILOT_HEADERS}
    return TokenRequest("GET", copilot_token_url(enterprise_url, env), headers)


def codex_request(refresh_token: str, env: Mapping[str, str]) -> TokenRequest:
    """Codex's own refresh of ``$CODEX_HOME/auth.json``: JSON, three fields."""
    return _json(OPENAI.url(env), CodexRefreshBody(OPENAI_CLIENT_ID, "refresh_token", refresh_token))
