"""Which providers a prompt goes to, in which order: pure rules, no I/O.

Default order: the selected provider, then every other ready provider in
priority order (pi, ollama, codex, claude, gemini), then the direct HTTP
backends that have an API key. An explicit ``provider`` or a ``model`` whose
name implies a backend narrows that down; ``local_only`` keeps the prompt on
this machine (Ollama on a loopback address only). Providers cooling down after
a rate limit or an auth failure are skipped until their time is up, unless the
prompt names the provider: then it is tried anyway.

``INFERENCE_DEFAULT_BACKEND`` names the provider to try first. Smart routing
(``INFERENCE_ENABLE_ROUTING``, or its older name ``OLLAMA_ENABLE_ROUTING``) adds
the prompt rules of :mod:`.prompt_rules`: private material and "locally" keep a
prompt on this machine, "with Claude" keeps it off Ollama, and a complex prompt
tries Ollama last. Every candidate and every skip carries the rule that put it
there, for the route trace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from takod.schema import PROVIDERS, ProviderStatus
from takod_daemon.inference import anthropic_api, openai_api, prompt_rules
from takod_daemon.inference.config import InferenceConfig, provider_timeout

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

@dataclass(frozen=True)
class Candidate:
    """One provider to try. ``model`` overrides the request's model for it (None: as
    asked); ``timeout`` the request's per-attempt timeout (None: as asked); ``rule``
    says why this provider is in the plan, where it is."""

    provider: str
    model: str | None = None
    rule: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Skip:
    provider: str
    reason: str
    rule: str | None = None


@dataclass(frozen=True)
class Plan:
    candidates: list[Candidate]
    skipped: list[Skip]
    local_only: bool
    # Why the prompt must stay on this machine, when a rule (not the caller) said so.
    kept_local: str | None = None

    def refusal(self, headline: str) -> str:
        """What to tell the caller when nothing could take the prompt."""
        if self.kept_local is None:
            return headline
        return (f"{self.kept_local}, so only Ollama on this machine may answer it, and it could not ({headline}); "
                "start Ollama (`ollama serve`, `takod status` shows it), or pass --provider NAME "
                "to send this prompt off the machine anyway")


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
    conversation: bool = False,
    config: InferenceConfig | None = None,
    timeout_given: bool = False,
) -> Plan:
    """The ordered providers to try, and why the others are not tried.

    Precedence: an explicit ``provider``; ``local_only``; a ``model`` that implies
    a backend other than Ollama; with smart routing, a prompt that looks private
    or asks to stay local, then one that asks for Claude or is complex;
    ``INFERENCE_DEFAULT_BACKEND``; the selected provider; priority order.
    ``api_keys`` maps API backend names to whether a key is available;
    ``cooling`` maps providers to the reason they are cooling down.
    """
    cfg = config or InferenceConfig()
    api_keys = api_keys or {}
    cooling = cooling or {}
    # A provider the prompt names is tried even while it cools down: the user asks for it.
    ready = {s.name: s for s in statuses if s.ready or (s.name == provider and s.reason == "cooling-down")}
    by_name = {s.name: s for s in statuses}
    skipped: list[Skip] = []
    rules: dict[str, str] = {}  # provider -> why it is where it is
    kept_local: str | None = None
    avoid_local: str | None = None  # why Ollama is not tried at all
    last_local: str | None = None  # why Ollama goes last

    def rule_for(names: Sequence[str], why: str) -> list[str]:
        for name in names:
            rules.setdefault(name, why)
        return list(names)

    implied = backends_for_model(model) if model else None
    # An explicit provider or model is the caller's choice: the prompt rules pick only when it made none.
    if cfg.routing and provider is None and not local_only and implied in (None, LOCAL_PROVIDERS):
        if hit := prompt_rules.private_match(prompt_text):
            kept_local = f"kept local: the prompt matched {hit!r} (private material)"
        elif hit := prompt_rules.local_request(prompt_text):
            kept_local = f"kept local: the prompt asked for {hit!r}"
        if kept_local:
            local_only = True

    # The CLIs, then the API backends as readiness lists them, then any other with a key
    # (only those with a key: the trace stays short).
    default_order = [*PROVIDERS, *(s.name for s in statuses if s.name in API_BACKENDS and s.ready),
                     *(name for name, has_key in api_keys.items() if has_key)]
    if provider is not None:
        order = rule_for([provider], f"asked for provider {provider}")
    elif local_only:
        order = rule_for(list(LOCAL_PROVIDERS), kept_local or "local only: asked not to leave this machine")
    elif model and implied:
        order = rule_for(list(implied), f"the model {model!r} implies {', '.join(implied)}")
    else:
        order = []
        if cfg.routing:
            if hit := prompt_rules.cloud_request(prompt_text):
                avoid_local = f"not local: the prompt asked for {hit!r}"
                order += rule_for(["anthropic", "claude"], avoid_local)
            elif (score := prompt_rules.complexity(prompt_text)).complex:
                last_local = f"complex prompt ({score.explain()}): Ollama last"
        if cfg.default_backend:
            order += rule_for([cfg.default_backend], f"INFERENCE_DEFAULT_BACKEND={cfg.default_backend}")
        if selected:
            order += rule_for([selected], "the selected provider")
        # Not-ready providers stay in the order so the trace says why each was skipped.
        order += rule_for(default_order, "priority order")
        if last_local:
            order = [n for n in order if n not in LOCAL_PROVIDERS] + [n for n in order if n in LOCAL_PROVIDERS]
            for name in order:
                rules[name] = last_local if name in LOCAL_PROVIDERS else f"{last_local}; {rules[name]}"
    order = list(dict.fromkeys(order))

    candidates: list[Candidate] = []
    for name in order:
        rule = rules.get(name)
        if local_only and not (name in LOCAL_PROVIDERS and ollama_is_local):
            why = "Ollama is not on this machine" if name in LOCAL_PROVIDERS else "the prompt must not leave this machine"
            skipped.append(Skip(name, f"local-only: {why}", rule))
            continue
        if avoid_local and name in LOCAL_PROVIDERS:
            skipped.append(Skip(name, "the prompt asked not to use Ollama", avoid_local))
            continue
        if name in cooling and name != provider:
            skipped.append(Skip(name, cooling[name], rule))
            continue
        if name in by_name:  # readiness decided (the API backends too, from the same pool)
            if name not in ready:
                status = by_name[name]
                skipped.append(Skip(name, f"not ready: {status.reason}", rule))
                continue
        elif name in API_BACKENDS:
            if not api_keys.get(name):
                skipped.append(Skip(name, f"no {API_BACKENDS[name][0]}", rule))
                continue
        else:
            known = ", ".join([*PROVIDERS, *API_BACKENDS])
            skipped.append(Skip(name, f"unknown provider (known: {known})", rule))
            continue
        chosen = strip_model_prefix(name, model)
        if chosen is None:
            chosen = _configured_model(name, cfg, prompt_text, conversation)
        timeout = None if timeout_given else provider_timeout(cfg, name)
        candidates.append(Candidate(name, chosen, rule, timeout))
    return Plan(candidates, skipped, local_only, kept_local)


def _configured_model(provider: str, cfg: InferenceConfig, text: str, conversation: bool) -> str | None:
    """The model the variables name for this provider and this kind of prompt (None: its default)."""
    if provider == "anthropic":
        return cfg.anthropic_default_model
    if provider != "ollama":
        return None
    if cfg.ollama_code_model and prompt_rules.looks_like_code(text):
        return cfg.ollama_code_model
    if cfg.ollama_chat_model and conversation:
        return cfg.ollama_chat_model
    return None
