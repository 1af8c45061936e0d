"""OLLAMA_HOST parsing, made connectable, and host precedence (providers.md D1)."""

from __future__ import annotations

import pytest

from takod_daemon.providers.ollama_probe import (
    OllamaEndpoint,
    OllamaModel,
    OllamaModelDetails,
    choose_model,
    connectable,
    embedding_only,
    parse_ollama_host,
    resolve_endpoint,
)

# Ollama's own envconfig test table, then edge cases of the same rules.
HOST_TABLE = [
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":1234", "http://:1234"),
    ("example.com", "http://example.com:11434"),
    ("example.com:1234", "http://example.com:1234"),
    (":66000", "http://:11434"),
    ("::1", "http://[::1]:11434"),
    ("[::1]", "http://[::1]:11434"),
    ("[::1]:1337", "http://[::1]:1337"),
    ("[::]", "http://[::]:11434"),
    (' " 1.2.3.4 " ', "http://1.2.3.4:11434"),  # Go's literal " \" 1.2.3.4 \" "
    (" ' 1.2.3.4 ' ", "http://1.2.3.4:11434"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("http://1.2.3.4:8080", "http://1.2.3.4:8080"),
    ("https://example.com/ollama", "https://example.com:443/ollama"),
    ("example.com/proxy/ollama", "http://example.com:11434/proxy/ollama"),
    ("ollama.com", "https://ollama.com:443"),
    ("http://ollama.com", "http://ollama.com:80"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    ("0.0.0.0:8000", "http://0.0.0.0:8000"),
    ("  'localhost:9999'  ", "http://localhost:9999"),
    ("example.com:", "http://example.com:11434"),
    ("example.com:http", "http://example.com:11434"),
    ("example.com:-1", "http://example.com:11434"),
    ("example.com:65535", "http://example.com:65535"),
    ("::ffff:10.0.0.1", "http://10.0.0.1:11434"),
    ("tcp://example.com", "tcp://example.com:11434"),
]


@pytest.mark.parametrize(("raw", "url"), HOST_TABLE)
def test_parse_matches_ollama(raw: str, url: str) -> None:
    assert parse_ollama_host(raw).url == url


def test_parse_splits_parts() -> None:
    assert parse_ollama_host("https://[::1]:8443/base/path") == OllamaEndpoint("https", "::1", 8443, "base/path")


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8000", "http://127.0.0.1:8000"),
        ("[::]", "http://[::1]:11434"),
        ("::", "http://[::1]:11434"),
        (":1234", "http://127.0.0.1:1234"),
        ("https://0.0.0.0/ollama", "https://127.0.0.1:443/ollama"),
        ("10.0.0.1", "http://10.0.0.1:11434"),
        ("example.com", "http://example.com:11434"),
    ],
)
def test_connectable_replaces_bind_all_addresses(raw: str, url: str) -> None:
    assert connectable(parse_ollama_host(raw)).url == url


def test_precedence_settings_then_env_then_default() -> None:
    env = {"OLLAMA_HOST": "10.0.0.2:1111"}
    endpoint, source = resolve_endpoint("10.0.0.1:2222", env)
    assert (endpoint.url, source) == ("http://10.0.0.1:2222", "settings")
    endpoint, source = resolve_endpoint(None, env)
    assert (endpoint.url, source) == ("http://10.0.0.2:1111", "env")
    endpoint, source = resolve_endpoint("   ", {"OLLAMA_HOST": ""})
    assert (endpoint.url, source) == ("http://127.0.0.1:11434", "default")


def test_env_bind_all_address_is_connectable() -> None:
    endpoint, source = resolve_endpoint(None, {"OLLAMA_HOST": "0.0.0.0"})
    assert (endpoint.url, source) == ("http://127.0.0.1:11434", "env")


# --- the chat model ------------------------------------------------------------------


def _tag(name: str, family: str = "", capabilities: list[str] | None = None) -> OllamaModel:
    return OllamaModel(name=name, details=OllamaModelDetails(family=family, families=[family] if family else None),
                       capabilities=capabilities)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "embeds_only"),
    [
        (_tag("nomic-embed-text:latest", capabilities=["embedding"]), True),
        (_tag("qwen3-embedding:0.6b", "qwen3", ["embedding"]), True),  # capabilities decide over the family
        (_tag("llama3.2:latest", "llama", ["completion", "tools"]), False),
        (_tag("nomic-embed-text:latest", "nomic-bert"), True),  # older Ollama: no capabilities, the family says
        (_tag("mxbai-embed-large:latest", "bert"), True),
        (_tag("bge-m3:latest", "bert"), True),
        (_tag("llama3.2:latest", "llama"), False),
        (_tag("my-embedder:latest"), True),  # nothing but the name
        (_tag("mystery:latest"), False),
    ],
)
def test_embedding_only_models(model: OllamaModel, embeds_only: bool) -> None:
    assert embedding_only(model) is embeds_only


def test_the_first_model_that_can_chat_is_chosen_and_why_is_said() -> None:
    models = [_tag("nomic-embed-text:latest", "nomic-bert"), _tag("all-minilm:latest", "bert"), _tag("llama3.2:latest", "llama")]
    choice = choose_model(models, settings_model=None, env_model=None)
    assert (choice.model, choice.source, choice.problem) == ("llama3.2:latest", "first-listed", None)
    assert "nomic-embed-text:latest, all-minilm:latest" in (choice.why or "") and "embedding" in (choice.why or "")
    assert choose_model(models[2:], settings_model=None, env_model=None).why == "the first listed model"


def test_only_embedding_models_is_no_chat_model() -> None:
    choice = choose_model([_tag("nomic-embed-text:latest", "nomic-bert")], settings_model=None, env_model=None)
    assert (choice.model, choice.problem) == (None, "no-chat-model")
    assert "nomic-embed-text:latest" in (choice.detail or "") and "ollama pull" in (choice.detail or "")


def test_a_named_embedding_model_cannot_chat() -> None:
    models = [_tag("llama3.2:latest", "llama"), _tag("nomic-embed-text:latest", "nomic-bert")]
    choice = choose_model(models, settings_model="nomic-embed-text", env_model=None)
    assert (choice.model, choice.source, choice.problem) == ("nomic-embed-text:latest", "settings", "embedding-model")
    assert "takod ollama model" in (choice.detail or "")
