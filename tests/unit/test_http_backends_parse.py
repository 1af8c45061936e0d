"""Request building, stream parsing and failure classification of the HTTP
backends (Ollama, Anthropic Messages, OpenAI-compatible), without sockets."""

from __future__ import annotations

import email.utils
import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from takod_daemon.inference import anthropic_api, ollama, openai_api
from takod_daemon.inference.http_common import (
    failure_for_transport,
    kind_for_status,
    kind_for_text,
    parse_retry_after,
    scrub,
)
from takod_daemon.inference.sse import SSEEvent
from takod_daemon.inference.types import Chunk, InferRequest, Message, ProviderFailure, RunContext

CANARY = "canary-7f3a9c2e-do-not-leak-0042"


def request(**kwargs: Any) -> InferRequest:
    kwargs.setdefault("messages", [Message("user", "What is 2+2?")])
    return InferRequest(**kwargs)


def encoded(struct: msgspec.Struct) -> dict[str, Any]:
    return json.loads(msgspec.json.encode(struct))


def ctx(**kwargs: Any) -> RunContext:
    kwargs.setdefault("env", {})
    return RunContext(workspace=Path("/tmp"), **kwargs)


# --- shared: Retry-After, statuses, texts, scrubbing ------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "7", "retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (401, "", "auth"),
        (403, "forbidden", "auth"),
        (403, "You are not allowed to sample from this model: model not available", "model"),
        (429, "", "rate_limit"),
        (402, "insufficient credits", "rate_limit"),
        (404, "model 'x' not found", "model"),
        (404, "404 page not found", "unavailable"),
        (408, "", "timeout"),
        (400, "invalid JSON", "bad_request"),
        (400, "foo/bar is not a valid model ID", "model"),
        (500, "", "unavailable"),
        (502, "", "unavailable"),
        (529, "Overloaded", "unavailable"),
    ],
)
def test_kind_for_status(status: int, message: str, kind: str) -> None:
    assert kind_for_status(status, message) == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("model 'llama9' not found, try pulling it first", "model"),
        ("rate limit exceeded", "rate_limit"),
        ("unauthorized", "auth"),
        ("context deadline exceeded", "timeout"),
        ("an error was encountered while running the model: unexpected EOF", "unavailable"),
        ("prompt is too long for the context window", "bad_request"),
    ],
)
def test_kind_for_text(text: str, kind: str) -> None:
    assert kind_for_text(text) == kind


def test_scrub_masks_the_known_secret_anywhere_and_secret_shapes() -> None:
    text = f"bad key {CANARY}; also sk-proj-abcdefghijklmnop1234 and\n\nnewlines"
    out = scrub(text, [CANARY, None, ""])
    assert CANARY not in out and "sk-proj-abcdefghijklmnop1234" not in out
    assert out.endswith("and newlines")
    assert len(scrub("x" * 5000)) == 600


def test_transport_errors_map_to_kinds() -> None:
    assert failure_for_transport(httpx.ConnectError("refused"), "x").kind == "unavailable"
    assert failure_for_transport(httpx.ReadTimeout("slow"), "x").kind == "timeout"
    broken = failure_for_transport(httpx.RemoteProtocolError("incomplete chunked read"), "x")
    assert broken.kind == "unavailable" and "broke off" in broken.message


# --- Ollama -----------------------------------------------------------------------


def test_ollama_request_puts_system_first_and_sets_only_asked_options() -> None:
    body = encoded(ollama.build_chat_request(request(system="Be brief."), "llama3.2"))
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        "stream": True,
    }
    full = encoded(
        ollama.build_chat_request(request(temperature=0.2, max_tokens=64, format="json", thinking="high"), "m")
    )
    assert full["options"] == {"temperature": 0.2, "num_predict": 64}
    assert (full["format"], full["think"]) == ("json", True)


@pytest.mark.parametrize(("thinking", "think"), [(None, None), ("off", False), ("minimal", True), ("xhigh", True)])
def test_ollama_think_mapping(thinking: str | None, think: bool | None) -> None:
    body = encoded(ollama.build_chat_request(request(thinking=thinking), "m"))
    assert body.get("think", None) == think
    assert "think" not in encoded(ollama.build_chat_request(request(thinking=thinking), "m", think=False))


def ndjson(*values: dict[str, Any]) -> list[str]:
    return [json.dumps(v) for v in values]


FINAL = {
    "model": "llama3.2",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 2_000_000_000,
    "load_duration": 1,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 3,
    "eval_count": 4,
    "eval_duration": 500_000_000,
}


def test_ollama_stream_yields_thinking_then_text_and_final_metrics() -> None:
    stream = ollama.ChatStream()
    lines = ndjson(
        {"model": "llama3.2", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"model": "llama3.2", "message": {"role": "assistant", "content": "4"}, "done": False},
        {"model": "llama3.2", "message": {"role": "assistant", "content": "."}, "done": False},
        FINAL,
    )
    chunks = [c for line in ["", *lines] for c in stream.feed(line)]
    assert chunks == [Chunk("thinking", "hmm"), Chunk("text", "4"), Chunk("text", ".")]
    result = stream.result()
    assert (result.text, result.thinking, result.model, result.stop_reason) == ("4.", "hmm", "llama3.2", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 4)
    assert result.metrics is not None and result.metrics.total_duration == 2_000_000_000
    assert result.metrics.tokens_per_second == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('{"error": "model \'nope\' not found"}', "model"),
        ('{"error": "an error was encountered while running the model: unexpected EOF"}', "unavailable"),
        ('{"model": "x", "mess', "crashed"),
        ("<html>", "crashed"),
    ],
)
def test_ollama_bad_lines_fail_by_content(line: str, kind: str) -> None:
    with pytest.raises(ProviderFailure) as failed:
        ollama.ChatStream().feed(line)
    assert failed.value.kind == kind


def test_ollama_stream_without_final_line_was_cut_off() -> None:
    stream = ollama.ChatStream()
    stream.feed(ndjson({"message": {"role": "assistant", "content": "4"}, "done": False})[0])
    with pytest.raises(ProviderFailure) as failed:
        stream.result()
    assert failed.value.kind == "unavailable"


def test_ollama_empty_answer_and_lines_after_the_final() -> None:
    stream = ollama.ChatStream()
    stream.feed(json.dumps(FINAL))
    with pytest.raises(ProviderFailure) as failed:
        stream.result()
    assert failed.value.kind == "empty"
    with pytest.raises(ProviderFailure) as after:
        stream.feed(json.dumps(FINAL))
    assert after.value.kind == "crashed"


def test_ollama_error_bodies() -> None:
    missing = ollama.failure_from_body("o", 404, b'{"error":"model \'x\' not found"}')
    assert missing.kind == "model" and "model 'x' not found" in missing.message
    limited = ollama.failure_from_body("o", 429, b'{"error":"slow down"}', httpx.Headers({"Retry-After": "9"}))
    assert (limited.kind, limited.retry_after) == ("rate_limit", 9.0)
    assert ollama.failure_from_body("o", 500, b"boom").kind == "unavailable"
    assert ollama.failure_from_body("o", 404, b"404 page not found").kind == "unavailable"


# --- Anthropic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "url"),
    [
        (None, "https://api.anthropic.com/v1/messages"),
        ("http://127.0.0.1:9/", "http://127.0.0.1:9/v1/messages"),
        ("https://gw.example/anthropic/v1", "https://gw.example/anthropic/v1/messages"),
    ],
)
def test_anthropic_url(base: str | None, url: str) -> None:
    assert anthropic_api.messages_url(base) == url


def test_anthropic_body_merges_system_and_turns() -> None:
    req = request(
        system="Be brief.",
        messages=[
            Message("system", "You are Tako."),
            Message("user", "a"),
            Message("user", "b"),
            Message("assistant", "c"),
            Message("user", "d"),
        ],
        format="json",
        temperature=0.3,
        model="claude-haiku-4-5",
    )
    body = encoded(anthropic_api.build_body(req))
    assert body["system"] == f"Be brief.\n\nYou are Tako.\n\n{anthropic_api.JSON_INSTRUCTION}"
    assert body["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ]
    assert (body["model"], body["max_tokens"], body["temperature"], body["stream"]) == (
        "claude-haiku-4-5",
        anthropic_api.DEFAULT_MAX_TOKENS,
        0.3,
        True,
    )
    assert "thinking" not in body


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "budget", "expected_max"),
    [
        ("off", None, None, anthropic_api.DEFAULT_MAX_TOKENS),
        ("minimal", None, 1024, 1024 + anthropic_api.THINKING_HEADROOM),
        ("high", None, 16000, 16000 + anthropic_api.THINKING_HEADROOM),
        ("high", 3000, 2999, 3000),
        ("medium", 1000, None, 1000),
    ],
)
def test_anthropic_thinking_budget_fits_max_tokens(
    thinking: str, max_tokens: int | None, budget: int | None, expected_max: int
) -> None:
    body = encoded(anthropic_api.build_body(request(thinking=thinking, max_tokens=max_tokens, temperature=0.5)))
    assert body["max_tokens"] == expected_max
    if budget is None:
        assert "thinking" not in body and body["temperature"] == 0.5
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert "temperature" not in body  # the API takes only 1 with thinking
        assert body["max_tokens"] > body["thinking"]["budget_tokens"]


def test_anthropic_request_needs_a_turn_and_a_key_and_hides_the_key() -> None:
    with pytest.raises(ProviderFailure) as no_turn:
        anthropic_api.build_body(request(messages=[Message("system", "only system")]))
    assert no_turn.value.kind == "bad_request"
    with pytest.raises(ProviderFailure) as no_key:
        anthropic_api.build_request(request(), ctx())
    assert no_key.value.kind == "auth"
    built = anthropic_api.build_request(request(), ctx(api_key=CANARY))
    assert built.headers["x-api-key"] == CANARY and built.headers["anthropic-version"] == "2023-06-01"
    assert CANARY not in repr(built)


def anthropic_events(*values: dict[str, Any]) -> list[SSEEvent]:
    return [SSEEvent(v["type"], json.dumps(v)) for v in values]


MESSAGE_START = {
    "type": "message_start",
    "message": {"id": "msg_1", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 25, "output_tokens": 1}},
}


def test_anthropic_stream_text_thinking_usage_and_stop() -> None:
    stream = anthropic_api.MessagesStream()
    events = anthropic_events(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Four"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "."}},
        {"type": "some_future_event", "whatever": 1},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    )
    chunks = [c for e in events for c in stream.feed(e)]
    assert chunks == [Chunk("thinking", "Let me see."), Chunk("text", "Four"), Chunk("text", ".")]
    result = stream.result()
    assert (result.text, result.thinking, result.model, result.stop_reason) == (
        "Four.",
        "Let me see.",
        "claude-sonnet-4-5",
        "end_turn",
    )
    assert (result.usage.input_tokens, result.usage.output_tokens) == (25, 15)


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", "unavailable"),
        ("api_error", "unavailable"),
        ("rate_limit_error", "rate_limit"),
        ("authentication_error", "auth"),
        ("not_found_error", "model"),
        ("invalid_request_error", "bad_request"),
        ("brand_new_error", "unavailable"),
    ],
)
def test_anthropic_error_event_kinds(error_type: str, kind: str) -> None:
    stream = anthropic_api.MessagesStream(secrets=[CANARY])
    stream.feed(anthropic_events(MESSAGE_START)[0])
    error = {"type": "error", "error": {"type": error_type, "message": f"it broke for key {CANARY}"}}
    with pytest.raises(ProviderFailure) as failed:
        stream.feed(anthropic_events(error)[0])
    assert failed.value.kind == kind
    assert error_type in failed.value.message and CANARY not in str(failed.value)


def test_anthropic_stream_cut_off_or_garbled() -> None:
    stream = anthropic_api.MessagesStream()
    for event in anthropic_events(
        MESSAGE_START, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Fo"}}
    ):
        stream.feed(event)
    with pytest.raises(ProviderFailure) as cut:
        stream.result()
    assert cut.value.kind == "unavailable"
    with pytest.raises(ProviderFailure) as garbled:
        stream.feed(SSEEvent("content_block_delta", '{"type": "content_block_delta", "delta": '))
    assert garbled.value.kind == "crashed"


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (401, "authentication_error", "invalid x-api-key", "auth"),
        (404, "not_found_error", "model: claude-x", "model"),
        (404, "not_found_error", "Not found", "unavailable"),
        (400, "invalid_request_error", "max_tokens: required", "bad_request"),
        (529, "overloaded_error", "Overloaded", "unavailable"),
        (429, "rate_limit_error", "slow down", "rate_limit"),
    ],
)
def test_anthropic_error_bodies(status: int, error_type: str, message: str, kind: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
    failure = anthropic_api.failure_from_body("a", status, body, httpx.Headers({"retry-after": "3"}))
    assert failure.kind == kind and message in failure.message
    assert failure.retry_after == 3.0
    assert anthropic_api.failure_from_body("a", 502, b"<html>Bad gateway</html>").kind == "unavailable"


# --- OpenAI-compatible ------------------------------------------------------------


def test_backend_table_by_key_and_url() -> None:
    router = openai_api.backend_for_key("OPENROUTER_API_KEY")
    assert router is not None and router.base_url == "https://openrouter.ai/api/v1"
    groq = openai_api.backend_for_key("GROQ_API_KEY")
    assert groq is not None and groq.base_url == "https://api.groq.com/openai/v1"
    assert openai_api.backend_for_key("NOPE") is None
    assert openai_api.backend_for_url("https://openrouter.ai/api/v1/").name == "openrouter"
    local = openai_api.backend_for_url("http://127.0.0.1:1234/v1")
    assert (local.name, local.needs_key, local.default_model) == ("openai-compatible", False, None)
    assert len({b.key_env for b in openai_api.BACKENDS}) == len(openai_api.BACKENDS)


def test_base_url_from_context_then_env_then_openai() -> None:
    assert openai_api.resolve_base_url(ctx(base_url="http://h/v1/")) == "http://h/v1"
    assert openai_api.resolve_base_url(ctx(env={"OPENAI_BASE_URL": "http://e/v1"})) == "http://e/v1"
    assert openai_api.resolve_base_url(ctx()) == "https://api.openai.com/v1"


def backend(name: str) -> openai_api.OpenAIBackend:
    return next(b for b in openai_api.BACKENDS if b.name == name)


def test_openai_body_quirks_per_backend() -> None:
    req = request(system="Be brief.", max_tokens=50, temperature=0.1, thinking="minimal")
    body = encoded(openai_api.build_body(req, backend("openai")))
    assert body == {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.1,
        "max_completion_tokens": 50,
        "reasoning_effort": "low",
    }
    router = encoded(openai_api.build_body(req, backend("openrouter")))
    assert (router["max_tokens"], router["reasoning"]) == (50, {"effort": "low"})
    assert "reasoning_effort" not in router
    groq = encoded(openai_api.build_body(req, backend("groq")))
    assert "reasoning" not in groq and "reasoning_effort" not in groq
    assert "stream_options" not in encoded(openai_api.build_body(req, backend("mistral")))


def test_openai_json_format_and_dropped_params() -> None:
    body = encoded(openai_api.build_body(request(format="json", temperature=0.4), backend("openai")))
    assert body["response_format"] == {"type": "json_object"}
    assert "JSON" in body["messages"][0]["content"] and body["messages"][0]["role"] == "system"
    dropped = encoded(
        openai_api.build_body(request(temperature=0.4), backend("openai"), drop={"temperature", "stream_options"})
    )
    assert "temperature" not in dropped and "stream_options" not in dropped


def test_openai_no_model_anywhere_is_a_model_failure() -> None:
    with pytest.raises(ProviderFailure) as failed:
        openai_api.build_body(request(), openai_api.backend_for_url("http://127.0.0.1:9/v1"))
    assert failed.value.kind == "model"


def test_openai_known_backend_needs_a_key_local_does_not() -> None:
    with pytest.raises(ProviderFailure) as failed:
        openai_api.build_request(request(), ctx())
    assert failed.value.kind == "auth" and "OPENAI_API_KEY" in failed.value.message
    local = openai_api.build_request(request(model="m"), ctx(base_url="http://127.0.0.1:9/v1"))
    assert "Authorization" not in local.headers
    keyed = openai_api.build_request(request(), ctx(api_key=CANARY))
    assert keyed.headers["Authorization"] == f"Bearer {CANARY}" and CANARY not in repr(keyed)


def test_rejected_params_are_read_from_a_400() -> None:
    sent = openai_api.build_body(request(temperature=0.2, thinking="high"), backend("openai"))
    said = "Unsupported value: 'temperature' does not support 0.2 with this model."
    temperature = json.dumps({"error": {"message": said, "param": "temperature"}}).encode()
    assert openai_api.rejected_params(400, temperature, sent) == {"temperature"}
    options = b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
    assert openai_api.rejected_params(400, options, sent) == {"stream_options"}
    assert openai_api.rejected_params(401, temperature, sent) == set()
    unsent = openai_api.build_body(request(), backend("groq"))
    assert openai_api.rejected_params(400, b'{"error": {"message": "reasoning_effort bad"}}', unsent) == set()


def chunk_event(value: dict[str, Any] | str) -> SSEEvent:
    return SSEEvent("message", value if isinstance(value, str) else json.dumps(value))


def delta(content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "model": "gpt-4.1-mini", "choices": [{"index": 0, "delta": content, "finish_reason": finish}]}


def test_openai_stream_text_reasoning_usage_done() -> None:
    stream = openai_api.ChatStream()
    events = [
        delta({"role": "assistant", "content": "", "refusal": None}),
        delta({"reasoning_content": "thinking..."}),
        delta({"content": "Four"}),
        delta({"content": "."}),
        delta({}, "stop"),
        {"id": "c", "model": "gpt-4.1-mini", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
        "[DONE]",
        delta({"content": "ignored after DONE"}),
    ]
    chunks = [c for e in events for c in stream.feed(chunk_event(e))]
    assert chunks == [Chunk("thinking", "thinking..."), Chunk("text", "Four"), Chunk("text", ".")]
    result = stream.result()
    assert (result.text, result.thinking, result.model) == ("Four.", "thinking...", "gpt-4.1-mini")
    assert result.stop_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (9, 2)


def test_openai_stream_finish_without_done_is_complete_but_nothing_is_cut_off() -> None:
    finished = openai_api.ChatStream()
    for e in (delta({"content": "Hi"}), delta({}, "stop")):
        finished.feed(chunk_event(e))
    assert finished.result().text == "Hi"
    cut = openai_api.ChatStream()
    cut.feed(chunk_event(delta({"content": "Hi"})))
    with pytest.raises(ProviderFailure) as failed:
        cut.result()
    assert failed.value.kind == "unavailable"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "The server had an error", "type": "server_error", "code": None}, "unavailable"),
        ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit"),
        ({"message": "Provider returned error", "code": 502}, "unavailable"),
        ({"message": "No auth credentials found", "code": 401}, "auth"),
        ({"message": "model gone", "code": "model_not_found"}, "model"),
    ],
)
def test_openai_mid_stream_error_kinds(error: dict[str, Any], kind: str) -> None:
    stream = openai_api.ChatStream(secrets=[CANARY])
    stream.feed(chunk_event(delta({"content": "Hi"})))
    error = error | {"message": error["message"] + f" key={CANARY}"}
    with pytest.raises(ProviderFailure) as failed:
        stream.feed(chunk_event({"error": error}))
    assert failed.value.kind == kind and CANARY not in str(failed.value)


def test_openai_garbled_event_is_crashed() -> None:
    with pytest.raises(ProviderFailure) as failed:
        openai_api.ChatStream().feed(chunk_event('{"choices": [{"delta": {"content": "x"'))
    assert failed.value.kind == "crashed"


def test_openai_whole_completion_when_the_server_did_not_stream() -> None:
    body = json.dumps(
        {
            "model": "m",
            "choices": [{"message": {"role": "assistant", "content": "Four."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
    ).encode()
    result, chunks = openai_api.completion_result("o", body)
    assert chunks == [Chunk("text", "Four.")]
    assert (result.text, result.usage.output_tokens, result.stop_reason) == ("Four.", 2, "stop")
    with pytest.raises(ProviderFailure) as failed:
        openai_api.completion_result("o", b'{"error": {"message": "quota", "code": "insufficient_quota"}}')
    assert failed.value.kind == "rate_limit"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}, "auth"),
        (404, {"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}, "model"),
        (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}, "rate_limit"),
        (400, {"error": "plain text error"}, "bad_request"),
        (400, {"object": "error", "message": "bad", "code": 400}, "bad_request"),
        (503, {"error": {"message": "overloaded"}}, "unavailable"),
    ],
)
def test_openai_error_bodies(status: int, body: dict[str, Any], kind: str) -> None:
    headers = httpx.Headers({"retry-after-ms": "1500"})
    failure = openai_api.failure_from_body("o", status, json.dumps(body).encode(), headers)
    assert failure.kind == kind and failure.retry_after == 1.5
