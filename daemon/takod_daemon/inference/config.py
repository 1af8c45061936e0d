"""The Inference skill's environment configuration, resolved for one request: pure.

Every variable is read from the client's environment (the CLI sends them with
each prompt) over the daemon's, so a shell ``export`` works even for a daemon
that systemd started. Timeouts are milliseconds, as the skill writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from takod.schema import INFERENCE_ENV_VARS

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A variable holds something takod cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class InferenceConfig:
    """What the variables say. ``routing_var`` names the variable that decided ``routing``."""

    routing: bool = False
    routing_var: str | None = None
    default_backend: str | None = None
    ollama_url: str | None = None  # OLLAMA_BASE_URL, else OLLAMA_HOST (None: the workspace's)
    ollama_url_var: str | None = None
    ollama_timeout: float | None = None  # seconds
    ollama_model: str | None = None
    ollama_default_model: str | None = None
    ollama_chat_model: str | None = None
    ollama_code_model: str | None = None
    ollama_embed_model: str | None = None
    anthropic_default_model: str | None = None
    anthropic_timeout: float | None = None  # seconds


def merged(daemon_env: Mapping[str, str], client_env: Mapping[str, str] | None) -> dict[str, str]:
    """The configuration variables, the client's over the daemon's (a variable the
    client sets empty counts as set: it switches the daemon's value off)."""
    out = {k: daemon_env[k] for k in INFERENCE_ENV_VARS if k in daemon_env}
    out.update({k: v for k, v in (client_env or {}).items() if k in INFERENCE_ENV_VARS})
    return out


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    if name not in env:
        return None
    value = env[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r} is not true or false; set it to true, false, 1 or 0")


def _millis(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} is not a timeout in milliseconds; set it to e.g. 30000, or unset it")
    return value / 1000.0


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def resolve(daemon_env: Mapping[str, str], client_env: Mapping[str, str] | None = None) -> InferenceConfig:
    """The configuration for one request. Raises :class:`ConfigError` for a value
    that cannot be used (never silently ignores it)."""
    env = merged(daemon_env, client_env)
    routing, routing_var = False, None
    # INFERENCE_ENABLE_ROUTING is the skill's switch; OLLAMA_ENABLE_ROUTING its older name.
    for name in ("INFERENCE_ENABLE_ROUTING", "OLLAMA_ENABLE_ROUTING"):
        value = _flag(env, name)
        if value is not None:
            routing, routing_var = value, name
            break
    url_var = next((n for n in ("OLLAMA_BASE_URL", "OLLAMA_HOST") if _text(env, n)), None)
    backend = _text(env, "INFERENCE_DEFAULT_BACKEND")
    return InferenceConfig(
        routing=routing,
        routing_var=routing_var,
        default_backend=backend.lower() if backend else None,
        ollama_url=_text(env, url_var) if url_var else None,
        ollama_url_var=url_var,
        ollama_timeout=_millis(env, "OLLAMA_TIMEOUT"),
        ollama_model=_text(env, "OLLAMA_MODEL"),
        ollama_default_model=_text(env, "OLLAMA_DEFAULT_MODEL"),
        ollama_chat_model=_text(env, "OLLAMA_CHAT_MODEL"),
        ollama_code_model=_text(env, "OLLAMA_CODE_MODEL"),
        ollama_embed_model=_text(env, "OLLAMA_EMBED_MODEL"),
        anthropic_default_model=_text(env, "ANTHROPIC_DEFAULT_MODEL"),
        anthropic_timeout=_millis(env, "ANTHROPIC_TIMEOUT"),
    )


def client_ollama_url(cfg: InferenceConfig, daemon_env: Mapping[str, str]) -> str | None:
    """The Ollama address the *client* asked for, when it differs from what the
    daemon's own environment says (None: use the workspace's probed Ollama)."""
    if cfg.ollama_url is None:
        return None
    own = resolve(daemon_env)
    return None if (own.ollama_url_var, own.ollama_url) == (cfg.ollama_url_var, cfg.ollama_url) else cfg.ollama_url


def provider_timeout(cfg: InferenceConfig, provider: str) -> float | None:
    """The per-attempt timeout the variables give ``provider`` (None: the request's)."""
    if provider == "ollama":
        return cfg.ollama_timeout
    if provider == "anthropic":
        return cfg.anthropic_timeout
    return None
