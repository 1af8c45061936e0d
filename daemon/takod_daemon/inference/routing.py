"""Which providers a prompt goes to, in which order: pure rules, no I/O.

Default order: the selected provider, then every other ready provider in
priority order (pi, ollama, codex, claude, gemini), then the direct HTTP
backends that have an API key. An explicit ``provider`` or a ``model`` whose
name implies a backend narrows that down; ``local_only`` keeps the prompt on
this machine (Ollama on a loopback address only). Providers cooling down after
a rate limit or an auth failure are skipped until their time is up.

Optional smart routing (``INFERENCE_ENABLE_ROUTING=1``): prompts that mention
private material go local only, and ``INFERENCE_DEFAULT_BACKEND`` names the
provider to try first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from takod.schema import PROVIDERS, ProviderStatus
from takod_daemon.inference import anthropic_api, openai_api

# The OpenAI-compatible services routing offers, in fallback order; their key
# variables and URLs are the runner's (openai_api.BACKENDS).
_OPENAI_ROUTED = ("openai", "openrouter", "groq", "xai", "mistral", "deepseek", "cerebras")


def _openai_entry(name: str) -> tuple[str, str, str]:
    backend = next(b for b in openai_api.BACKENDS if b.name == name)
    assert backend.key_env is not None  # every listed service takes a key
    return backend.key_env, "openai", backend.base_url


# Direct HTTP backends: name -> (API key env var, kind of API, default base URL).
API_BACKENDS: dict[str, tuple[str, str, str]] = {
    "anthropic": (anthropic_api.KEY_ENV, "anthropic", anthropic_api.DEFAULT_BASE_URL),
    **{name: _openai_entry(name) for name in _OPENAI_ROUTED},
}
LOCAL_PROVIDERS = ("ollama",)

# Model name -> the backend it implies (first match wins).
_MODEL_RULES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"^claude-", re.I), ("anthropic", "claude", "pi")),
    (re.compile(r"^(gpt-|o[134](-|$)|codex-|chatgpt-)", re.I), ("openai", "codex", "pi")),
    (re.compile(r"^gemini-", re.I), ("gemini", "pi")),
    (re.compile(r"^(llama|qwen|mistral|mixtral|phi|gemma|deepseek-r1|codellama|nomic|mxbai|all-minilm|smollm|granite)", re.I), ("ollama",)),
]

_PRIVATE_RE = re.compile(
    r"\b(password|passphrase|secret|private key|ssn|social security|credit card|medical|diagnosis|"
    r"confidential|salary|bank account|api key|token)\b",
    re.I,
)


@dataclass(frozen=True)
class Candidate:
    """One provider to try. ``model`` overrides the request's model for it (None: as asked)."""

    provider: str
    model: str | None = None


@dataclass(frozen=True)
class Skip:
    provider: str
    reason: str


@dataclass(frozen=True)
class Plan:
    candidates: list[Candidate]
    skipped: list[Skip]
    local_only: bool


def backends_for_model(model: str) -> tuple[str, ...] | None:
    """The backends a model name implies, best first; None when the name says nothing.

    ``provider/model`` is pi's form (pi resolves the provider itself), and an
    ``ollama/``-prefixed name means Ollama.
    """
    if "/" in model:
        prefix = model.split("/", 1)[0].lower()
        if prefix == "ollama":
            return ("ollama",)
        if prefix in API_BACKENDS:
            return (prefix, "pi")
        return ("pi",)
    for pattern, backends in _MODEL_RULES:
        if pattern.search(model):
            return backends
    if ":" in model:  # name:tag is Ollama's spelling
        return ("ollama",)
    return None


def strip_model_prefix(provider: str, model: str | None) -> str | None:
    """``ollama/llama3.2`` -> ``llama3.2`` for Ollama; ``openrouter/x/y`` -> ``x/y`` for that API."""
    if model and "/" in model:
        prefix, rest = model.split("/", 1)
        if prefix.lower() == provider or (provider == "ollama" and prefix.lower() == "ollama"):
            return rest
    return model


def looks_private(text: str) -> bool:
    return bool(_PRIVATE_RE.search(text))


def plan(
    statuses: Sequence[ProviderStatus],
    selected: str | None,
    *,
    provider: str | None = None,
    model: str | None = None,
    local_only: bool = False,
    ollama_is_local: bool = True,
    api_keys: Mapping[str, bool] | None = None,
    cooling: Mapping[str, str] | None = None,
    prompt_text: str = "",
    env: Mapping[str, str] | None = None,
) -> Plan:
    """The ordered providers to try, and why the others are not tried.

    ``api_keys`` maps API backend names to whether a key is available;
    ``cooling`` maps providers to the reason they are cooling down.
    """
    env = env or {}
    api_keys = api_keys or {}
    cooling = cooling or {}
    ready = {s.name: s for s in statuses if s.ready}
    by_name = {s.name: s for s in statuses}
    skipped: list[Skip] = []

    if env.get("INFERENCE_ENABLE_ROUTING", "").lower() in ("1", "true", "yes") and looks_private(prompt_text):
        local_only = True

    if provider is not None:
        order = [provider]
    elif local_only:
        order = list(LOCAL_PROVIDERS)
    elif model and (implied := backends_for_model(model)):
        order = list(implied)
    else:
        order = []
        preferred = env.get("INFERENCE_DEFAULT_BACKEND", "").strip().lower()
        if env.get("INFERENCE_ENABLE_ROUTING", "").lower() in ("1", "true", "yes") and preferred:
            order.append(preferred)
        if selected:
            order.append(selected)
        # Not-ready providers stay in the order so the trace says why each was skipped.
        order += list(PROVIDERS)
        # The API backends after them, as readiness lists them (only those with a key: the trace stays short).
        order += [s.name for s in statuses if s.name in API_BACKENDS and s.ready]
        order += [name for name, has_key in api_keys.items() if has_key]
    order = list(dict.fromkeys(order))

    candidates: list[Candidate] = []
    for name in order:
        if local_only and not (name in LOCAL_PROVIDERS and ollama_is_local):
            why = "Ollama is not on this machine" if name in LOCAL_PROVIDERS else "the prompt must not leave this machine"
            skipped.append(Skip(name, f"local-only: {why}"))
            continue
        if name in cooling:
            skipped.append(Skip(name, cooling[name]))
            continue
        if name in by_name:  # readiness decided (the API backends too, from the same pool)
            if name not in ready:
                status = by_name[name]
                skipped.append(Skip(name, f"not ready: {status.reason}"))
                continue
        elif name in API_BACKENDS:
            if not api_keys.get(name):
                skipped.append(Skip(name, f"no {API_BACKENDS[name][0]}"))
                continue
        else:
            skipped.append(Skip(name, "unknown provider"))
            continue
        candidates.append(Candidate(name, strip_model_prefix(name, model)))
    return Plan(candidates, skipped, local_only)
