"""What an Ollama run will use: the address, the chat model and why, and when an
old probe must be checked again before a prompt is refused or sent elsewhere.

- **Address** (:func:`run_url`): the workspace settings' ``ollama_host``, else
  ``OLLAMA_BASE_URL``, else ``OLLAMA_HOST``, else ``127.0.0.1:11434``, parsed as
  Ollama parses it (``providers/ollama_probe.resolve_endpoint``: the probe goes
  there). A client whose own environment names another Ollama gets that one,
  unless the workspace pins its own. A workspace that is not the user's own has
  none: nothing there is called (the state manager does not probe it).
- **Chat model** (:func:`resolve_ollama`): the settings' ``ollama_model``, else
  ``OLLAMA_MODEL``, else ``OLLAMA_DEFAULT_MODEL``, else the first listed model that
  can chat (``choose_model``), from the models the last probe listed. Readiness
  reports it; the engine runs it.
- **Re-probe** (:func:`reprobe_due`): a prompt kept from Ollama by its last probe
  (:data:`PROBED_REASONS`) probes again, within :data:`REPROBE_TIMEOUT`; unless the
  prompt would otherwise be refused, not more often than :data:`REPROBE_MIN_AGE`.

Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..providers.ollama_probe import OllamaProbe, choose_model

# The reasons an old probe may have gone stale about (Ollama started, a model was pulled).
PROBED_REASONS = frozenset({"unreachable", "bad-response", "no-models", "no-chat-model", "model-not-pulled",
                            "embedding-model"})
REPROBE_TIMEOUT = 1.5
REPROBE_MIN_AGE = 2.0
DEFAULT_URL = "http://127.0.0.1:11434"


def resolve_ollama(probe: OllamaProbe, settings_model: str | None, env: Mapping[str, str]) -> OllamaProbe:
    """``probe`` with the chat model a run with ``env`` will use (the probe chose with the
    daemon's environment; a client's may name another). An Ollama that did not answer
    like Ollama is left as it is."""
    if not probe.reachable or probe.problem == "bad-response":
        return probe
    choice = choose_model(probe.models, settings_model=settings_model or None, env_model=env.get("OLLAMA_MODEL"),
                          default_model=env.get("OLLAMA_DEFAULT_MODEL"))
    return msgspec.structs.replace(probe, model=choice.model, model_source=choice.source, model_why=choice.why,
                                   problem=choice.problem, detail=choice.detail)


def run_url(probe: OllamaProbe | None, *, settings_host: str | None, client_url: str | None) -> str:
    """The Ollama a run goes to: the client's when it asked for one and the workspace
    pins none, else the probed one."""
    if client_url and not settings_host:
        return client_url
    return probe.url if probe is not None else DEFAULT_URL


def reprobe_due(*, refusing: bool, age: float) -> bool:
    """Whether to probe again before acting on a probe ``age`` seconds old that keeps
    Ollama out of a prompt: always when the prompt would be refused, else when it is
    old enough that Ollama may have changed."""
    return refusing or age >= REPROBE_MIN_AGE
