"""What a Codex CLI run will use, beyond its login: the model and the keys its
configuration names, read once from ``$CODEX_HOME/config.toml``.

:func:`resolve_codex` is the one decision: readiness reports its model
(``detail.model``), the engine filters the child's environment by its keys and
the runner (``inference/codex_cli.py``) names its model when the request named
none (codex's events never do). Blocking (one tiny file); the rest is pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..credentials.codex_auth import codex_home, config_path


class CodexPlan(NamedTuple):
    """``model``: the one codex runs when none is asked for (None: codex's own
    default, unknown here); ``env_keys``: the ``env_key`` of every
    ``[model_providers.*]``, the keys of custom providers codex was set up to use."""

    model: str | None
    env_keys: frozenset[str]


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


def resolve_codex(env: Mapping[str, str]) -> CodexPlan:
    """What a codex run with ``env`` will use (blocking; tiny file). An unreadable
    ``config.toml`` adds nothing and fails nothing."""
    try:
        doc = tomllib.loads(config_path(codex_home(env)).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = {}
    return CodexPlan(configured_model(doc), env_keys(doc))
