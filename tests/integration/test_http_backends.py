"""The HTTP runners (Ollama, Anthropic Messages, OpenAI-compatible) end to end
against the loopback fakes: text streamed in order, usage, every failure kind,
cancellation closing the connection, the key never in an error; and the fakes'
own wire contracts that real CLIs (codex, gemini-cli, Claude Code, pi) rely on."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from takod_daemon.inference import anthropic_api, ollama, openai_api
from takod_daemon.inference.sse import SSEEvent, SSEParser
from takod_daemon.inference.types import Chunk, InferRequest, Message, ProviderFailure, RunContext, RunResult
from tests.fakes.model_servers import FakeAnthropic, FakeGemini, FakeModelServer, FakeOpenAI, Mode, pieces
from tests.fakes.model_servers import fake_anthropic, fake_gemini, fake_openai  # noqa: F401 (fixtures)
from tests.fakes.ollama_server import FakeOllama, fake_ollama, tag_entry  # noqa: F401 (fixture)

GUARD = 20  # every wait in these tests is bounded by this
KEY = "sk-test-abcdefghijklmnopqrstuvwx"
# Not shaped like any known key, so only the runner's own scrubbing can hide it.
CANARY = "canary-7f3a9c2e-do-not-leak-0042"
PROMPT = "What is the capital of France?"

Runner = Callable[..., Awaitable[RunResult]]


@dataclass
class Outcome:
    result: RunResult | None
    failure: ProviderFailure | None
    chunks: list[Chunk]
    cancelled: bool = False

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks if c.kind == "text")


def attempt(
    runner: Runner,
    req: InferRequest,
    ctx: RunContext,
    *,
    cancel_after: int | None = None,
    disconnect_seen: Callable[[float], bool] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Outcome:
    """Run ``runner`` once; with ``cancel_after``, cancel it from outside once
    that many chunks arrived, then (client still open) wait for the server to
    see the disconnect."""
    chunks: list[Chunk] = []
    outcome = Outcome(None, None, chunks)

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False, transport=transport) as http:
            with anyio.fail_after(GUARD):
                with anyio.CancelScope() as scope:

                    async def emit(chunk: Chunk) -> None:
                        chunks.append(chunk)
                        if cancel_after is not None and len(chunks) >= cancel_after:
                            scope.cancel()

                    try:
                        outcome.result = await runner(req, ctx, emit, http)
                    except ProviderFailure as exc:
                        outcome.failure = exc
                outcome.cancelled = scope.cancelled_caught
                if disconnect_seen is not None:
                    # The client is still open here: only the runner can have closed the stream.
                    assert await anyio.to_thread.run_sync(disconnect_seen, GUARD)

    anyio.run(main)
    return outcome


def ask(**kwargs: Any) -> InferRequest:
    kwargs.setdefault("messages", [Message("user", PROMPT)])
    return InferRequest(**kwargs)


# --- the two API backends, side by side ------------------------------------------


@dataclass(frozen=True)
class Api:
    name: str
    module: ModuleType
    fake: type[FakeModelServer]
    model: str
    rate_error: str  # the fake's mid-stream error meaning "rate limited"

    def ctx(self, fake: FakeModelServer, key: str | None = KEY) -> RunContext:
        return RunContext(workspace=Path("/tmp"), env={}, base_url=fake.base_url, api_key=key)

    def run(self, fake: FakeModelServer, req: InferRequest | None = None, **kwargs: Any) -> Outcome:
        key = kwargs.pop("key", KEY)
        return attempt(self.module.run, req or ask(model=self.model), self.ctx(fake, key), **kwargs)

    def sent_key(self, fake: FakeModelServer) -> str | None:
        return fake.sent_key(fake.last)

    def prompt_of(self, body: dict[str, Any]) -> str:
        return body["messages"][-1]["content"]


APIS = [
    Api("anthropic", anthropic_api, FakeAnthropic, "claude-haiku-4-5", "rate_limit_error"),
    Api("openai", openai_api, FakeOpenAI, "gpt-4.1-mini", "rate_limit_exceeded"),
]


@pytest.fixture(params=APIS, ids=lambda api: api.name)
def api(request: pytest.FixtureRequest) -> Api:
    return request.param


@pytest.fixture
def server(api: Api) -> Iterator[FakeModelServer]:
    with api.fake() as fake:
        yield fake


def test_streams_text_in_order_with_usage(api: Api, server: FakeModelServer) -> None:
    out = attempt(api.module.run, ask(model=api.model), api.ctx(server))
    assert out.failure is None and out.result is not None
    assert [c.text for c in out.chunks] == pieces(server.reply)  # every delta, in order, nothing merged
    assert out.result.text == server.reply
    assert out.result.model == api.model
    assert (out.result.usage.input_tokens, out.result.usage.output_tokens) == (11, len(pieces(server.reply)))
    assert out.result.stop_reason in ("end_turn", "stop")
    assert server.completed_streams == 1


def test_request_carries_prompt_model_system_and_key(api: Api, server: FakeModelServer) -> None:
    api.run(server, ask(model=api.model, system="Answer in one word."))
    body = server.last.body
    assert (body["model"], body["stream"]) == (api.model, True)
    assert api.prompt_of(body) == PROMPT
    assert "Answer in one word." in json.dumps(body)
    assert api.sent_key(server) == KEY


def test_thinking_streams_before_text(api: Api) -> None:
    with api.fake(thinking="Paris is the capital.") as fake:
        out = api.run(fake, ask(model=api.model, thinking="high", temperature=0.2))
    assert out.failure is None and out.result is not None, out.failure
    kinds = [c.kind for c in out.chunks]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking") and "thinking" in kinds
    assert out.result.thinking == "Paris is the capital." and out.result.text == fake.reply


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("http-401", "auth"),
        ("http-403", "auth"),
        ("http-429", "rate_limit"),
        ("http-500", "unavailable"),
        ("drop-before-stream", "unavailable"),
    ],
)
def test_failures_before_the_stream(api: Api, server: FakeModelServer, mode: Mode, kind: str) -> None:
    server.set_mode(mode)
    out = api.run(server)
    assert out.failure is not None and out.failure.kind == kind, out.failure
    assert out.chunks == []
    if mode == "http-429":
        assert out.failure.retry_after == 7.0
    if mode.startswith("http-"):
        assert f"HTTP {mode[5:]}" in out.failure.message


def test_unknown_model_is_a_model_failure(api: Api) -> None:
    with api.fake(models=[api.model]) as fake:
        out = api.run(fake, ask(model="no-such-model"))
    assert out.failure is not None and out.failure.kind == "model"
    assert "no-such-model" in out.failure.message


def test_error_event_mid_stream_after_some_text(api: Api, server: FakeModelServer) -> None:
    server.set_mode("error-event")
    out = api.run(server)
    assert out.failure is not None and out.failure.kind == "unavailable"
    assert "mid-answer" in out.failure.message
    assert [c.text for c in out.chunks] == pieces(server.reply)[:2]


def test_error_event_kind_comes_from_its_content(api: Api) -> None:
    with api.fake(mode="error-event", stream_error=api.rate_error) as fake:
        out = api.run(fake)
    assert out.failure is not None and out.failure.kind == "rate_limit"


def test_error_after_200_before_the_first_token(api: Api) -> None:
    with api.fake(mode="error-event", error_after=0) as fake:
        out = api.run(fake)
    assert out.failure is not None and out.failure.kind == "unavailable"
    assert out.chunks == []  # the router may still fall through


@pytest.mark.parametrize(("mode", "kind"), [("drop-mid-stream", "unavailable"), ("malformed", "crashed")])
def test_broken_streams(api: Api, server: FakeModelServer, mode: Mode, kind: str) -> None:
    server.set_mode(mode)
    out = api.run(server)
    assert out.failure is not None and out.failure.kind == kind, out.failure
    assert [c.text for c in out.chunks] == pieces(server.reply)[:2]


@pytest.mark.parametrize("mode", ["hang", "stall-mid-stream"])
def test_silence_is_a_timeout(api: Api, server: FakeModelServer, mode: Mode) -> None:
    server.set_mode(mode)
    out = api.run(server, ask(model=api.model, timeout=1.5))  # loopback chunks arrive in milliseconds
    assert out.failure is not None and out.failure.kind == "timeout"
    assert len(out.chunks) == (2 if mode == "stall-mid-stream" else 0)


def test_nothing_listening_is_unavailable(api: Api) -> None:
    with api.fake() as fake:
        pass  # stopped: its port now refuses connections
    out = api.run(fake)
    assert out.failure is not None and out.failure.kind == "unavailable"
    assert "cannot connect" in out.failure.message


def test_cancellation_mid_stream_closes_the_connection(api: Api) -> None:
    with api.fake(mode="slow-stream", chunk_delay=0.3) as fake:
        out = api.run(fake, cancel_after=1, disconnect_seen=fake.wait_disconnect)
    assert out.cancelled and out.result is None and out.failure is None
    assert len(out.chunks) == 1
    assert fake.disconnects and fake.completed_streams == 0


@pytest.mark.parametrize("mode", ["http-401", "http-429", "http-500", "error-event"])
def test_canary_key_never_reaches_an_error(api: Api, mode: Mode) -> None:
    with api.fake(echo_secrets=True, mode=mode) as fake:
        out = api.run(fake, key=CANARY)
    assert api.sent_key(fake) == CANARY  # the server saw it, and quoted it back
    failure = out.failure
    assert failure is not None
    for shown in (str(failure), repr(failure), failure.message, repr(failure.args)):
        assert CANARY not in shown
    assert CANARY not in "".join(c.text for c in out.chunks)


def test_wrong_key_is_auth_without_the_key(api: Api) -> None:
    with api.fake(api_key="the-right-key-123456", echo_secrets=True) as fake:
        out = api.run(fake, key=CANARY)
        ok = api.run(fake, key="the-right-key-123456")
    assert out.failure is not None and out.failure.kind == "auth" and CANARY not in str(out.failure)
    assert ok.failure is None


def test_no_key_fails_before_any_request(api: Api) -> None:
    sent: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:  # nothing may leave the machine
        sent.append(request)
        return httpx.Response(599)

    ctx = RunContext(workspace=Path("/tmp"), env={}, base_url=api.module.DEFAULT_BASE_URL, api_key=None)
    out = attempt(api.module.run, ask(model=api.model), ctx, transport=httpx.MockTransport(refuse))
    assert out.failure is not None and out.failure.kind == "auth"
    assert sent == []


def test_json_format_reaches_the_server(api: Api, server: FakeModelServer) -> None:
    server.reply = '{"capital": "Paris"}'
    out = api.run(server, ask(model=api.model, format="json"))
    assert out.result is not None and json.loads(out.result.text) == {"capital": "Paris"}
    body = server.last.body
    if api.name == "openai":
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert "JSON" in body["system"]


# --- Anthropic specifics -----------------------------------------------------------


def test_anthropic_headers_and_thinking_rules_pass_the_strict_fake(fake_anthropic: FakeAnthropic) -> None:
    api = APIS[0]
    out = api.run(fake_anthropic, ask(model=api.model, thinking="medium", temperature=0.7, max_tokens=4000))
    assert out.failure is None, out.failure
    rec = fake_anthropic.last
    assert rec.path == "/v1/messages" and rec.header("anthropic-version") == "2023-06-01"
    assert rec.header("x-api-key") == KEY and rec.header("authorization") is None
    assert rec.body["thinking"] == {"type": "enabled", "budget_tokens": 3999} and "temperature" not in rec.body


def test_anthropic_list_models(fake_anthropic: FakeAnthropic) -> None:
    async def main() -> list[anthropic_api.AnthropicModel]:
        async with httpx.AsyncClient(trust_env=False) as http:
            return await anthropic_api.list_models(APIS[0].ctx(fake_anthropic), http)

    models = anyio.run(main)
    assert [m.id for m in models] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert fake_anthropic.last.path == "/v1/models" and fake_anthropic.last.header("x-api-key") == KEY


# --- OpenAI specifics --------------------------------------------------------------


def test_openai_retries_once_without_a_rejected_parameter() -> None:
    api = APIS[1]
    with FakeOpenAI(reject_params=("temperature",)) as fake:
        out = api.run(fake, ask(model=api.model, temperature=0.2))
    assert out.failure is None and out.result is not None
    assert ["temperature" in r.body for r in fake.requests] == [True, False]


def test_openai_rejection_of_a_required_thing_is_not_retried() -> None:
    api = APIS[1]
    with FakeOpenAI(reject_params=("messages",)) as fake:
        out = api.run(fake)
    assert out.failure is not None and out.failure.kind == "bad_request"
    assert len(fake.requests) == 1


def test_openai_server_that_ignores_stream_still_answers() -> None:
    api = APIS[1]
    with FakeOpenAI(ignore_stream=True) as fake:
        out = api.run(fake)
    assert out.result is not None and out.result.text == fake.reply
    assert out.chunks == [Chunk("text", fake.reply)]


def test_openai_models_and_embeddings(fake_openai: FakeOpenAI) -> None:
    ctx = APIS[1].ctx(fake_openai)

    async def main() -> tuple[list[openai_api.OpenAIModel], Any]:
        async with httpx.AsyncClient(trust_env=False) as http:
            models = await openai_api.list_models(ctx, http)
            vectors = await openai_api.embed(["a", "b", "a"], "text-embedding-3-small", ctx, http)
            return models, vectors

    models, result = anyio.run(main)
    assert [m.id for m in models] == ["gpt-4.1-mini", "text-embedding-3-small"]
    assert result.model == "text-embedding-3-small" and len(result.vectors) == 3
    assert result.vectors[0] == result.vectors[2] != result.vectors[1]
    sent = fake_openai.last.body
    assert sent == {"model": "text-embedding-3-small", "input": ["a", "b", "a"], "encoding_format": "float"}
    assert fake_openai.last.bearer == KEY


def test_openai_embed_unknown_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.models = ["gpt-4.1-mini"]

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False) as http:
            await openai_api.embed(["a"], "nope", APIS[1].ctx(fake_openai), http)

    with pytest.raises(ProviderFailure) as failed:
        anyio.run(main)
    assert failed.value.kind == "model"


# --- Ollama -------------------------------------------------------------------------


def ollama_ctx(fake: FakeOllama, **env: str) -> RunContext:
    return RunContext(workspace=Path("/tmp"), env={"OLLAMA_HOST": fake.host, **env})


def run_ollama(fake: FakeOllama, req: InferRequest | None = None, **kwargs: Any) -> Outcome:
    env = kwargs.pop("env", {})
    return attempt(ollama.run, req or ask(model="llama3.2"), ollama_ctx(fake, **env), **kwargs)


def test_ollama_streams_in_order_with_metrics(fake_ollama: FakeOllama) -> None:
    out = run_ollama(fake_ollama, ask(model="llama3.2", system="Be brief.", temperature=0.1))
    assert out.failure is None and isinstance(out.result, ollama.OllamaRunResult)
    assert out.text == fake_ollama.reply and len(out.chunks) > 1
    assert out.result.usage.input_tokens == 12 and out.result.usage.output_tokens == len(out.chunks)
    assert out.result.metrics is not None and out.result.metrics.total_duration == 1_250_000_000
    body = fake_ollama.requests[-1].body
    assert fake_ollama.paths()[-1] == "/api/chat"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1] == {"role": "user", "content": PROMPT}
    assert body["options"] == {"temperature": 0.1} and body["stream"] is True


def test_ollama_without_a_model_uses_env_then_the_first_listed(fake_ollama: FakeOllama) -> None:
    out = run_ollama(fake_ollama, ask())
    assert out.result is not None and fake_ollama.requests[-1].body["model"] == "llama3.2:latest"
    assert fake_ollama.paths()[-2:] == ["/api/tags", "/api/chat"]
    run_ollama(fake_ollama, ask(), env={"OLLAMA_MODEL": "llama3.2"})
    assert fake_ollama.requests[-1].body["model"] == "llama3.2:latest"
    chats = len([r for r in fake_ollama.requests if r.path == "/api/chat"])
    named = run_ollama(fake_ollama, ask(), env={"OLLAMA_MODEL": "nomic-embed-text"})  # named, but it only embeds
    assert named.failure is not None and named.failure.kind == "model" and "embedding model" in named.failure.message
    assert len([r for r in fake_ollama.requests if r.path == "/api/chat"]) == chats  # never asked to chat
    embedder_first = [tag_entry("nomic-embed-text:latest", family="nomic-bert"), tag_entry("llama3.2:latest")]
    with FakeOllama(models=embedder_first) as fake:
        run_ollama(fake, ask())
        assert fake.requests[-1].body["model"] == "llama3.2:latest"  # the first listed that can chat


def test_ollama_missing_model(fake_ollama: FakeOllama) -> None:
    named = run_ollama(fake_ollama, ask(model="qwen3:8b"))
    assert named.failure is not None and named.failure.kind == "model" and "qwen3:8b" in named.failure.message
    with FakeOllama(models=[]) as empty:
        unnamed = run_ollama(empty, ask())
    assert unnamed.failure is not None and unnamed.failure.kind == "model"


def test_ollama_think_on_a_model_without_it_retries_without(fake_ollama: FakeOllama) -> None:
    out = run_ollama(fake_ollama, ask(model="llama3.2", thinking="high"))
    assert out.failure is None and out.result is not None
    chats = [r.body for r in fake_ollama.requests if r.path == "/api/chat"]
    assert [b.get("think") for b in chats] == [True, None]


def test_ollama_thinking_model_streams_thinking_first() -> None:
    with FakeOllama(models=[tag_entry("qwen3:8b", capabilities=["completion", "thinking"])]) as fake:
        out = run_ollama(fake, ask(model="qwen3:8b", thinking="medium"))
    assert out.result is not None and out.result.thinking == fake.thinking
    assert [c.kind for c in out.chunks][0] == "thinking" and out.text == fake.reply
    assert [r.body.get("think") for r in fake.requests] == [True]


@pytest.mark.parametrize(
    ("mode", "kind", "chunks"),
    [
        ("http-500", "unavailable", 0),
        ("http-401", "auth", 0),
        ("http-429", "rate_limit", 0),
        ("stream-error", "unavailable", 2),
        ("drop-mid-stream", "unavailable", 2),
        ("malformed", "crashed", 2),
        ("refuse", "unavailable", 0),
    ],
)
def test_ollama_failures(fake_ollama: FakeOllama, mode: Any, kind: str, chunks: int) -> None:
    fake_ollama.set_mode(mode)
    out = run_ollama(fake_ollama)
    assert out.failure is not None and out.failure.kind == kind, out.failure
    assert len(out.chunks) == chunks
    if mode == "http-429":
        assert out.failure.retry_after == 7.0


def test_ollama_hang_is_a_timeout(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("hang")
    out = run_ollama(fake_ollama, ask(model="llama3.2", timeout=0.5))
    assert out.failure is not None and out.failure.kind == "timeout"


def test_ollama_cancellation_mid_stream_closes_the_connection(fake_ollama: FakeOllama) -> None:
    fake_ollama.chunk_delay = 0.3
    fake_ollama.set_mode("slow-stream")
    out = run_ollama(fake_ollama, cancel_after=1, disconnect_seen=fake_ollama.wait_disconnect)
    assert out.cancelled and out.result is None and len(out.chunks) == 1
    assert fake_ollama.disconnects == ["/api/chat"]


def test_ollama_embed_and_models(fake_ollama: FakeOllama) -> None:
    ctx = ollama_ctx(fake_ollama)

    async def main() -> tuple[Any, Any, Any]:
        async with httpx.AsyncClient(trust_env=False) as http:
            result = await ollama.embed(["one", "two"], "nomic-embed-text", ctx, http)
            nothing = await ollama.embed([], "nomic-embed-text", ctx, http)
            models = await ollama.list_models(ctx, http)
            return result, nothing, models

    result, nothing, models = anyio.run(main)
    assert len(result.vectors) == 2 and all(len(v) == fake_ollama.embedding_dims for v in result.vectors)
    assert result.model == "nomic-embed-text" and result.input_tokens == 2
    assert nothing.vectors == [] and fake_ollama.paths().count("/api/embed") == 1
    assert [m.name for m in models] == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert fake_ollama.requests[-2].body == {"model": "nomic-embed-text", "input": ["one", "two"]}


def test_ollama_embed_unknown_model_does_not_fall_back(fake_ollama: FakeOllama) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False) as http:
            await ollama.embed(["x"], "mxbai-embed-large", ollama_ctx(fake_ollama), http)

    with pytest.raises(ProviderFailure) as failed:
        anyio.run(main)
    assert failed.value.kind == "model"
    assert [r.body["model"] for r in fake_ollama.requests if r.path == "/api/embed"] == ["mxbai-embed-large"]


# --- the fakes' own contracts (what real CLIs read) -------------------------------


def sse_events(response: httpx.Response) -> list[SSEEvent]:
    parser = SSEParser()
    return [e for line in response.iter_lines() if (e := parser.feed_line(line)) is not None]


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(timeout=GUARD, trust_env=False) as client:
        response = client.post(url, json=body, headers=headers or {})
        response.read()
        return response


def responses_events(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """A streamed Responses API call shaped like codex's, as parsed events."""
    body = {
        "model": "gpt-5-codex",
        "instructions": "You are codex.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        "stream": True,
    }
    response = post(fake.base_url + "/responses", body, {"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    values = [json.loads(e.data) for e in events]
    assert all(e.event == v["type"] for e, v in zip(events, values))  # event: names its data's type
    return values


def test_responses_stream_is_the_sequence_codex_reads(fake_openai: FakeOpenAI) -> None:
    values = responses_events(fake_openai)
    types = [v["type"] for v in values]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [v["sequence_number"] for v in values]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    deltas = "".join(v["delta"] for v in values if v["type"] == "response.output_text.delta")
    done_item = next(v["item"] for v in values if v["type"] == "response.output_item.done")
    completed = values[-1]["response"]
    assert deltas == fake_openai.reply
    assert done_item["type"] == "message" and done_item["role"] == "assistant"
    assert done_item["content"] == [{"type": "output_text", "annotations": [], "logprobs": [], "text": deltas}]
    assert completed["id"] == values[0]["response"]["id"] and completed["status"] == "completed"
    usage = completed["usage"]
    for name in ("input_tokens", "output_tokens", "total_tokens", "input_tokens_details", "output_tokens_details"):
        assert name in usage  # codex's ResponseCompletedUsage requires the counts
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert fake_openai.last.path == "/v1/responses" and fake_openai.last.bearer == KEY
    assert fake_openai.last.body["input"][0]["content"][0]["text"] == PROMPT


def test_responses_stream_with_reasoning_and_failure(fake_openai: FakeOpenAI) -> None:
    fake_openai.thinking = "Think first."
    values = responses_events(fake_openai)
    added = [v["item"]["type"] for v in values if v["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message"]
    summary = "".join(v["delta"] for v in values if v["type"] == "response.reasoning_summary_text.delta")
    assert summary == "Think first." and all(
        v["summary_index"] == 0 for v in values if v["type"] == "response.reasoning_summary_text.delta"
    )
    fake_openai.set_mode("error-event", times=1)
    failed = responses_events(fake_openai)
    assert failed[-1]["type"] == "response.failed"
    assert failed[-1]["response"]["error"]["code"] == "server_error"
    assert "response.completed" not in [v["type"] for v in failed]
    assert fake_openai.mode == "ok"  # times=1 used up


def test_responses_non_streaming_and_429(fake_openai: FakeOpenAI) -> None:
    whole = post(fake_openai.base_url + "/responses", {"model": "m", "input": "hi"}).json()
    assert whole["object"] == "response" and whole["output"][0]["content"][0]["text"] == fake_openai.reply
    fake_openai.set_mode("http-429")
    limited = post(fake_openai.base_url + "/responses", {"model": "m", "input": "hi", "stream": True})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_chat_completions_usage_only_when_asked(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url + "/chat/completions"
    plain = post(url, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    chunks = [e.data for e in sse_events(plain)]
    assert chunks[-1] == "[DONE]" and all("usage" not in json.loads(c) for c in chunks[:-1])
    asked = post(url, {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    last = json.loads([e.data for e in sse_events(asked)][-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(pieces(fake_openai.reply))
    whole = post(url, {"model": "m", "messages": []}).json()
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["content"] == fake_openai.reply


def test_anthropic_fake_checks_like_the_real_api(fake_anthropic: FakeAnthropic) -> None:
    url = fake_anthropic.url + "/v1/messages?beta=true"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    missing = post(url, body, {"x-api-key": KEY})
    assert missing.status_code == 400 and "anthropic-version" in missing.json()["error"]["message"]
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    system_role = post(url, body | {"messages": [{"role": "system", "content": "x"}]}, headers)
    assert system_role.status_code == 400
    small_budget = post(url, body | {"thinking": {"type": "enabled", "budget_tokens": 500}}, headers)
    assert small_budget.status_code == 400
    whole = post(url, body, headers).json()
    assert whole["type"] == "message" and whole["content"] == [{"type": "text", "text": fake_anthropic.reply}]
    assert fake_anthropic.last.query == {"beta": ["true"]} and fake_anthropic.last.path == "/v1/messages"


def test_gemini_stream_as_the_genai_sdk_reads_it(fake_gemini: FakeGemini) -> None:
    url = fake_gemini.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "generationConfig": {"temperature": 0}}
    with httpx.Client(timeout=GUARD, trust_env=False) as client:
        response = client.post(url, json=body, headers={"x-goog-api-key": KEY})
        raw = response.read().decode()
    # @google/genai matches /^data: (.*)(?:\n\n|\r\r|\r\n\r\n)/ on the raw text.
    assert raw.startswith("data: {") and raw.endswith("\r\n\r\n") and "\r\n\r\n" in raw
    values = [json.loads(block[len("data: "):]) for block in raw.split("\r\n\r\n") if block]
    text = "".join(p["text"] for v in values for p in v["candidates"][0]["content"]["parts"])
    assert text == fake_gemini.reply
    assert values[-1]["candidates"][0]["finishReason"] == "STOP"
    assert values[-1]["usageMetadata"]["candidatesTokenCount"] == len(pieces(fake_gemini.reply))
    assert fake_gemini.last.header("x-goog-api-key") == KEY and fake_gemini.last.body == body


def test_gemini_keys_models_errors_and_thoughts(fake_gemini: FakeGemini) -> None:
    base = fake_gemini.url + "/v1beta/models/"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    fake_gemini.api_key = KEY
    bad = post(base + "gemini-2.5-flash:generateContent", body, {"x-goog-api-key": "wrong-key-1234"})
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    by_query = post(base + f"gemini-2.5-flash:generateContent?key={KEY}", body)
    assert by_query.status_code == 200
    fake_gemini.models = ["gemini-2.5-flash"]
    missing = post(base + "gemini-9:generateContent", body, {"x-goog-api-key": KEY})
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    fake_gemini.thinking = "Pondering."
    thoughts = body | {"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    parts = post(base + "gemini-2.5-flash:generateContent", thoughts, {"x-goog-api-key": KEY}).json()
    assert parts["candidates"][0]["content"]["parts"][0] == {"text": "Pondering.", "thought": True}
    fake_gemini.set_mode("error-event", times=1)
    stream_url = base + "gemini-2.5-flash:streamGenerateContent?alt=sse"
    with httpx.Client(timeout=GUARD, trust_env=False) as client:
        raw = client.post(stream_url, json=body, headers={"x-goog-api-key": KEY}).read().decode()
    last = json.loads([b for b in raw.split("\r\n\r\n") if b][-1][len("data: "):])
    assert last["error"]["status"] == "UNAVAILABLE"
