"""The Ollama probe against a real loopback HTTP server standing in for Ollama,
and the stand-in's own streaming contract (providers.md D2-D6)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from takod_daemon.providers.ollama_probe import OllamaProbe, probe_ollama
from tests.fakes.ollama_server import STREAM_ERROR, FakeOllama, fake_ollama, tag_entry  # noqa: F401 - fixture

# Every wait in these tests is bounded by this, far above any probe timeout used.
GUARD = 20


def probe(ollama: FakeOllama, **kwargs: Any) -> OllamaProbe:
    """Probe with ``OLLAMA_HOST`` pointing at ``ollama`` unless ``env`` says otherwise."""
    kwargs.setdefault("env", {"OLLAMA_HOST": ollama.host})

    async def run() -> OllamaProbe:
        with anyio.fail_after(GUARD):
            return await probe_ollama(**kwargs)

    return anyio.run(run)


def test_reachable_server_reports_version_and_models(fake_ollama: FakeOllama) -> None:
    result = probe(fake_ollama)
    assert result.reachable and result.problem is None
    assert result.url == fake_ollama.url
    assert result.host_source == "env"
    assert result.version == fake_ollama.version
    assert [m.name for m in result.models] == ["llama3.2:latest", "nomic-embed-text:latest"]
    first = result.models[0]
    assert first.size == 2_019_393_189
    assert (first.details.family, first.details.parameter_size, first.details.quantization_level) == (
        "llama",
        "3.2B",
        "Q4_K_M",
    )
    assert (result.model, result.model_source) == ("llama3.2:latest", "first-listed")


def test_probe_only_reads_never_loads_a_model(fake_ollama: FakeOllama) -> None:
    probe(fake_ollama, settings_model="llama3.2")
    assert fake_ollama.paths() == ["/api/version", "/api/tags"]
    assert all(r.method == "GET" for r in fake_ollama.requests)


def test_settings_host_wins_over_env(fake_ollama: FakeOllama) -> None:
    # The env points at a port nothing listens on; the setting at the server.
    with FakeOllama(mode="refuse") as dead:
        result = probe(fake_ollama, settings_host=fake_ollama.url, env={"OLLAMA_HOST": dead.host})
    assert result.reachable and result.host_source == "settings"


def test_model_precedence_settings_then_env_then_first(fake_ollama: FakeOllama) -> None:
    env = {"OLLAMA_HOST": fake_ollama.host, "OLLAMA_MODEL": "nomic-embed-text"}
    by_env = probe(fake_ollama, env=env)
    # An embedding model cannot chat: named, it is still the one, and the problem is said.
    assert (by_env.model, by_env.model_source, by_env.problem) == ("nomic-embed-text:latest", "env", "embedding-model")
    by_settings = probe(fake_ollama, env=env, settings_model="LLAMA3.2:latest")
    assert (by_settings.model, by_settings.model_source) == ("llama3.2:latest", "settings")


def test_named_model_missing_is_model_not_pulled(fake_ollama: FakeOllama) -> None:
    result = probe(fake_ollama, settings_model="qwen3:8b")
    assert result.reachable
    assert (result.problem, result.model, result.model_source) == ("model-not-pulled", "qwen3:8b", "settings")
    assert "ollama pull qwen3:8b" in (result.detail or "")


def test_other_tag_of_a_pulled_model_is_not_pulled(fake_ollama: FakeOllama) -> None:
    assert probe(fake_ollama, settings_model="llama3.2:1b").problem == "model-not-pulled"


def test_no_models_at_all_is_model_not_pulled() -> None:
    with FakeOllama(models=[]) as ollama:
        result = probe(ollama)
    assert result.reachable and result.models == []
    assert (result.problem, result.model) == ("model-not-pulled", None)


def test_namespaced_model_matches_without_latest() -> None:
    with FakeOllama(models=[tag_entry("hf.co/org/model-gguf:Q4_K_M"), tag_entry("someone/tool:latest")]) as ollama:
        env = {"OLLAMA_HOST": ollama.host}
        assert probe(ollama, env=env, settings_model="someone/tool").model == "someone/tool:latest"
        assert probe(ollama, env=env, settings_model="hf.co/org/model-gguf:q4_k_m").problem is None
        assert probe(ollama, env=env, settings_model="org/model-gguf:Q4_K_M").problem == "model-not-pulled"


def test_refused_connection_is_unreachable() -> None:
    with FakeOllama(mode="refuse") as ollama:
        result = probe(ollama)
    assert not result.reachable
    assert result.problem == "unreachable"
    assert ollama.requests == []


def test_server_that_never_answers_times_out(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("hang")
    result = probe(fake_ollama, timeout=0.5)
    assert (result.reachable, result.problem) == (False, "unreachable")
    assert "did not answer within 0.5s" in (result.detail or "")
    assert fake_ollama.paths() == ["/api/version"]


def test_http_500_is_a_bad_response(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("http-500")
    result = probe(fake_ollama)
    assert (result.reachable, result.problem) == (True, "bad-response")
    assert "HTTP 500" in (result.detail or "") and "internal server error" in (result.detail or "")


def test_something_else_on_the_port_is_a_bad_response() -> None:
    with FakeOllama(version="x") as ollama:
        ollama.models = [{"name": 42}]  # not a model entry
        result = probe(ollama)
    assert (result.reachable, result.problem) == (True, "bad-response")


def test_mode_switch_back_from_refuse_serves_on_the_same_port(fake_ollama: FakeOllama) -> None:
    port = fake_ollama.port
    fake_ollama.set_mode("refuse")
    assert probe(fake_ollama).problem == "unreachable"
    fake_ollama.set_mode("ok")
    assert fake_ollama.port == port
    assert probe(fake_ollama).reachable


# --- the stand-in's own contract, which later inference tests rely on ----------


def post_lines(ollama: FakeOllama, path: str, body: dict[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
    with httpx.Client(base_url=ollama.url, timeout=GUARD) as client:
        with client.stream("POST", path, json=body) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
            return response.status_code, response.headers["content-type"], lines


@pytest.mark.parametrize(("path", "field"), [("/api/chat", "message"), ("/api/generate", "response")])
def test_fake_streams_ndjson_ending_in_done(fake_ollama: FakeOllama, path: str, field: str) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    status, content_type, lines = post_lines(fake_ollama, path, body)
    assert (status, content_type) == (200, "application/x-ndjson")
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    text = "".join(line[field]["content"] if field == "message" else line[field] for line in lines)
    assert text == fake_ollama.reply
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["eval_count"] == len(lines) - 1
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)


def test_fake_non_streaming_chat_is_one_object(fake_ollama: FakeOllama) -> None:
    status, _, lines = post_lines(fake_ollama, "/api/chat", {"model": "llama3.2", "messages": [], "stream": False})
    assert status == 200 and len(lines) == 1
    assert lines[0]["message"] == {"role": "assistant", "content": fake_ollama.reply}


def test_fake_mid_stream_error_line_after_200(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("stream-error")
    status, _, lines = post_lines(fake_ollama, "/api/generate", {"model": "llama3.2", "prompt": "hi"})
    assert status == 200
    assert lines[-1] == {"error": STREAM_ERROR}
    assert all("response" in line for line in lines[:-1]) and len(lines) > 1


def test_fake_unknown_model_is_404_with_ollama_text(fake_ollama: FakeOllama) -> None:
    status, _, lines = post_lines(fake_ollama, "/api/chat", {"model": "nope", "messages": []})
    assert (status, lines) == (404, [{"error": "model 'nope' not found"}])


def test_fake_embed_returns_one_vector_per_input(fake_ollama: FakeOllama) -> None:
    status, _, lines = post_lines(fake_ollama, "/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]})
    assert status == 200
    vectors = lines[0]["embeddings"]
    assert len(vectors) == 2 and all(len(v) == fake_ollama.embedding_dims for v in vectors)
    assert vectors[0] != vectors[1]
    _, _, again = post_lines(fake_ollama, "/api/embed", {"model": "nomic-embed-text", "input": "a"})
    assert again[0]["embeddings"] == [vectors[0]]


def test_fake_slow_stream_still_completes(fake_ollama: FakeOllama) -> None:
    fake_ollama.chunk_delay = 0.01
    fake_ollama.set_mode("slow-stream")
    _, _, lines = post_lines(fake_ollama, "/api/chat", {"model": "llama3.2", "messages": []})
    assert lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines) == fake_ollama.reply
