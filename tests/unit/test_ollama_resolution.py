"""resolve/ollama.py: the address, chat model and re-probe rule a run and readiness share."""

from __future__ import annotations

from takod_daemon.providers.ollama_probe import OllamaModel, OllamaModelDetails, OllamaProbe
from takod_daemon.resolve.ollama import DEFAULT_URL, REPROBE_MIN_AGE, reprobe_due, resolve_ollama, run_url

LLAMA = OllamaModel("llama3.2:latest", details=OllamaModelDetails(family="llama"))
QWEN = OllamaModel("qwen3:8b", details=OllamaModelDetails(family="qwen3"))
NOMIC = OllamaModel("nomic-embed-text:latest", capabilities=["embedding"])
PROBE = OllamaProbe(url="http://127.0.0.1:11434", host_source="default", reachable=True, version="0.12.6",
                    models=[NOMIC, LLAMA, QWEN], model=LLAMA.name, model_source="first-listed")


def test_the_model_chain_is_settings_env_default_then_first_chat_model() -> None:
    assert resolve_ollama(PROBE, None, {}).model == LLAMA.name  # skips the embedding model listed first
    assert resolve_ollama(PROBE, None, {"OLLAMA_DEFAULT_MODEL": "qwen3:8b"}).model_source == "default"
    assert resolve_ollama(PROBE, None, {"OLLAMA_MODEL": "llama3.2", "OLLAMA_DEFAULT_MODEL": "qwen3:8b"}).model == LLAMA.name
    assert resolve_ollama(PROBE, "qwen3:8b", {"OLLAMA_MODEL": "llama3.2"}).model == QWEN.name


def test_a_default_model_that_is_not_pulled_is_not_ready_rather_than_replaced() -> None:
    plan = resolve_ollama(PROBE, None, {"OLLAMA_DEFAULT_MODEL": "mistral:7b"})
    assert (plan.model, plan.problem) == ("mistral:7b", "model-not-pulled")


def test_an_ollama_that_did_not_answer_is_left_alone() -> None:
    down = OllamaProbe(url="http://127.0.0.1:9", host_source="env", problem="unreachable")
    assert resolve_ollama(down, None, {"OLLAMA_MODEL": "x"}) is down


def test_the_client_url_counts_unless_the_workspace_pins_a_host() -> None:
    assert run_url(PROBE, settings_host=None, client_url="http://10.0.0.2:11434") == "http://10.0.0.2:11434"
    assert run_url(PROBE, settings_host="10.0.0.3", client_url="http://10.0.0.2:11434") == PROBE.url
    assert run_url(None, settings_host=None, client_url=None) == DEFAULT_URL


def test_reprobe_when_refusing_else_not_more_often_than_the_minimum_age() -> None:
    assert reprobe_due(refusing=True, age=0.0)
    assert not reprobe_due(refusing=False, age=REPROBE_MIN_AGE / 2)
    assert reprobe_due(refusing=False, age=REPROBE_MIN_AGE)
