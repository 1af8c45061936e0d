"""What a Codex CLI run will use, beyond its login: the model, the provider and the
keys its configuration names, read once from ``$CODEX_HOME/config.toml``.

A top-level ``model_provider`` naming a ``[model_providers.ID]`` table is what
codex 0.160 really talks to (checked with the real codex against a loopback
server): with an ``env_key`` it sends that variable as its bearer token and fails
("Missing environment variable") without it, whatever login or
``OPENAI_API_KEY`` there is; without one it sends no key at all (a local server:
Ollama, LM Studio, vLLM), ``requires_openai_auth`` or not.

:func:`resolve_codex` is the one decision: readiness reports its model
(``detail.model``) and the credentials of :func:`run_credentials`, the engine
filters the child's environment by its keys and the runner
(``inference/codex_cli.py``) names its model when the request named none
(codex's events never do). Blocking (one tiny file); the rest is pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ..credentials.codex_auth import codex_home, config_path
from ..credentials.summary import CredentialSummary
from ..redact import mask_secret


class CustomProvider(NamedTuple):
    """The ``[model_providers.ID]`` table ``model_provider`` names, as far as auth goes."""

    id: str
    source: str  # config.toml, for status
    base_url: str | None
    env_key: str | None


class CodexPlan(NamedTuple):
    """``model``: the one codex runs when none is asked for (None: codex's own
    default, unknown here); ``env_keys``: the ``env_key`` of every
    ``[model_providers.*]``, the keys of custom providers codex was set up to use."""

    model: str | None
    env_keys: frozenset[str]
    custom: CustomProvider | None = None  # the custom provider a run talks to, if any


def configured_model(doc: Mapping[str, Any]) -> str | None:
    """``model`` of the active ``profile``, else the top-level ``model``."""
    profiles = doc.get("profiles")
    name = doc.get("profile")
    profile = profiles.get(name) if isinstance(profiles, dict) and isinstance(name, str) else None
    for table in (profile, doc):
        if isinstance(table, dict) and isinstance(table.get("model"), str) and table["model"].strip():
            return table["model"].strip()
    return None


def env_keys(doc: Mapping[str, Any]) -> frozenset[str]:
    providers = doc.get("model_providers")
    if not isinstance(providers, dict):
        return frozenset()
    return frozenset(
        p["env_key"] for p in providers.values() if isinstance(p, dict) and isinstance(p.get("env_key"), str)
    )


def custom_provider(doc: Mapping[str, Any], source: str) -> CustomProvider | None:
    """The custom provider the top-level ``model_provider`` names (built-in ids have no table)."""
    name = doc.get("model_provider")
    providers = doc.get("model_providers")
    table = providers.get(name) if isinstance(providers, dict) and isinstance(name, str) else None
    if not isinstance(table, dict):
        return None
    base_url, env_key = table.get("base_url"), table.get("env_key")
    return CustomProvider(
        name, source, base_url if isinstance(base_url, str) else None,
        env_key if isinstance(env_key, str) and env_key.strip() else None,
    )


def resolve_codex(env: Mapping[str, str]) -> CodexPlan:
    """What a codex run with ``env`` will use (blocking; tiny file). An unreadable
    ``config.toml`` adds nothing and fails nothing."""
    path = config_path(codex_home(env))
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = {}
    return CodexPlan(configured_model(doc), env_keys(doc), custom_provider(doc, str(path)))


def run_credentials(
    plan: CodexPlan | None, found: Iterable[CredentialSummary], pool: Mapping[str, str],
    *, sources: Mapping[str, str] | None = None, masked_pool: bool = False,
) -> list[CredentialSummary]:
    """The credentials a codex run can authenticate with: those ``found`` (its login, its
    keys) for OpenAI; for a custom provider, its ``env_key`` from ``pool`` only, or none
    needed at all (a keyless local server)."""
    custom = plan.custom if plan is not None else None
    if custom is None:
        return list(found)
    where = f"{custom.source} [model_providers.{custom.id}]"
    if custom.env_key is None:
        return [CredentialSummary("codex", where, "api_key", "",
                                  note=f"no key needed: codex sends none to {custom.base_url or 'this provider'}")]
    value = pool.get(custom.env_key)
    if not value:
        return []
    source = (sources or {}).get(custom.env_key, f"env:{custom.env_key}")
    return [CredentialSummary("codex", source, "api_key", value if masked_pool else mask_secret(value),
                              note=f"env_key of [model_providers.{custom.id}] in {custom.source}")]
