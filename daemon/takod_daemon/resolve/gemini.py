"""What a Gemini CLI run will use: the credential gemini will take, and the auth
setting takod supplies so that it takes the one readiness counted.

gemini takes ``security.auth.selectedType`` from its settings, else guesses from
the environment (``getAuthTypeFromEnv``: ``GOOGLE_GENAI_USE_GCA``,
``GOOGLE_GENAI_USE_VERTEXAI``, then ``GOOGLE_GEMINI_BASE_URL`` -> "gateway",
which its own validation rejects with exit 41 "Invalid auth method selected",
then ``GEMINI_API_KEY``). With a ``GEMINI_API_KEY`` (and no Google login or
Vertex asked for in the environment) takod makes gemini use it when gemini would
not: with nothing selected, as a *system default* (a private file named by
``GEMINI_CLI_SYSTEM_DEFAULTS_PATH``, the lowest settings scope); when the user's
settings select an auth type whose credential is missing or expired, as *system
settings* (``GEMINI_CLI_SYSTEM_SETTINGS_PATH``, the highest scope). A system file
of that scope that exists is left in charge. A working selection is never
overridden.

:func:`resolve_gemini` is the one decision: readiness reports its credentials,
the runner (``inference/gemini_cli.py``) writes the auth file it names. Pure,
except :func:`auth_facts` (blocking; small files).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from ..credentials import gemini_auth
from ..credentials.files import FileProblem
from ..credentials.summary import CredentialSummary

SYSTEM_DEFAULTS_ENV = "GEMINI_CLI_SYSTEM_DEFAULTS_PATH"
SYSTEM_SETTINGS_ENV = "GEMINI_CLI_SYSTEM_SETTINGS_PATH"
# gemini's system scopes on Linux, unless the variables above name others.
DEFAULT_SYSTEM_FILES = {
    SYSTEM_DEFAULTS_ENV: Path("/etc/gemini-cli/system-defaults.json"),
    SYSTEM_SETTINGS_ENV: Path("/etc/gemini-cli/settings.json"),
}
API_KEY_AUTH = {"security": {"auth": {"selectedType": gemini_auth.GEMINI_API_KEY_AUTH}}}
API_KEY_TYPES = (gemini_auth.GEMINI_API_KEY_AUTH,)
_FORCING_VARS = ("GOOGLE_GENAI_USE_GCA", "GOOGLE_GENAI_USE_VERTEXAI")


class AuthFacts(NamedTuple):
    """What decides gemini's auth method for a run (gathered by :func:`auth_facts`)."""

    selected: str | None  # security.auth.selectedType in the user's settings
    selected_usable: bool  # that type's own credential is there and not expired
    system_files: frozenset[str]  # the SYSTEM_*_ENV scopes that already have a file


class GeminiPlan(NamedTuple):
    """What a gemini run will use.

    ``credentials``: those the run can authenticate with, best first (readiness
    reports the first usable one); ``auth_scope``: the system scope
    (SYSTEM_DEFAULTS_ENV or SYSTEM_SETTINGS_ENV) in which the runner selects
    ``gemini-api-key``, or None to leave gemini's choice alone."""

    credentials: tuple[CredentialSummary, ...]
    auth_scope: str | None


def auth_facts(env: Mapping[str, str]) -> AuthFacts:
    """Read what gemini's auth choice depends on (blocking; small files). An
    unreadable settings file counts as no selection: gemini would fail on it alike."""
    try:
        selected = gemini_auth.read_selected_auth_type(gemini_auth.settings_path(env))
        now = time.time()
        own = [c for c in gemini_auth.discover(env) if c.source != "GEMINI_API_KEY" or selected in API_KEY_TYPES]
        usable = any(not c.needs_login(now) for c in own)
    except FileProblem:
        selected, usable = None, False
    present = frozenset(
        name for name, default in DEFAULT_SYSTEM_FILES.items() if env.get(name) or os.path.exists(default)
    )
    return AuthFacts(selected, usable, present)


def _forced(env: Mapping[str, str]) -> bool:
    """A Google login or Vertex asked for in so many words."""
    return any(env.get(name, "").strip().lower() == "true" for name in _FORCING_VARS)


def api_key_auth_scope(env: Mapping[str, str], facts: AuthFacts) -> str | None:
    """The system scope in which to select ``gemini-api-key`` so that gemini uses
    the ``GEMINI_API_KEY`` readiness counted, or None to leave gemini's choice alone."""
    if not env.get("GEMINI_API_KEY") or _forced(env):
        return None
    if facts.selected is None:
        scope = SYSTEM_DEFAULTS_ENV  # the environment decides, maybe as "gateway": select below the user
    elif facts.selected in API_KEY_TYPES or facts.selected_usable:
        return None
    else:
        scope = SYSTEM_SETTINGS_ENV  # the user's choice cannot work: select above it
    return None if scope in facts.system_files else scope


def _key_name(cred: CredentialSummary) -> str | None:
    # discover() names the variable ("GEMINI_API_KEY"); the key scan "env:NAME", "keyring:NAME", "FILE:NAME".
    if cred.kind != "api_key":
        return None
    return cred.source.rsplit(":", 1)[-1]


def resolve_gemini(creds: Iterable[CredentialSummary], pool: Mapping[str, str], facts: AuthFacts) -> GeminiPlan:
    """What a gemini run with the environment ``pool`` will use, of the credentials
    found (``creds``: gemini's own files and every key counted for gemini).

    A ``GEMINI_API_KEY`` counts when gemini is set to it or takod can set it (not
    when the environment asks for a Google login or Vertex and the settings do not
    select the key); a ``GOOGLE_API_KEY`` only when gemini runs on Vertex AI, the
    one auth type that reads it."""
    scope = api_key_auth_scope(pool, facts)
    key_used = facts.selected in API_KEY_TYPES or not _forced(pool)
    method = facts.selected or gemini_auth.auth_type_from_env(pool)

    def counts(cred: CredentialSummary) -> bool:
        name = _key_name(cred)
        if name == "GEMINI_API_KEY":
            return key_used
        if name == "GOOGLE_API_KEY":
            return method == gemini_auth.VERTEX_AI
        return True

    return GeminiPlan(tuple(c for c in creds if counts(c)), scope)
