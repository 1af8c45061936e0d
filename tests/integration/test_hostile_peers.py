"""Every decoder of a network peer's answer, fed hostile bodies through the real
code path: the runners, the Ollama probe, the token refreshes and the login
flows each talk to a loopback fake that answers (with
:meth:`~tests.fakes.http_base.LoopbackServer.answer_with`) deeply nested JSON
(100 000 levels, at the top and under an ignored field), truncated JSON, every
wrong type, non-UTF-8, a BOM, 40 MiB bodies and lines, and streams that turn
bad midway.

Each answer is read or refused the way its caller classifies unknown answers:
a runner raises a ProviderFailure (``crashed`` for what it cannot read), the
probe reports ``bad-response``, a refresh is transient or permanent, a login
fails with a code. Nothing else escapes (before the fix, ``RecursionError``,
``OverflowError`` and ``httpx.DecodingError`` did, and an unbounded body was
read whole), and no message repeats a secret of ours or the answer's bytes.
tests/integration/test_hostile_peers_daemon.py shows the daemon living through
the same answers.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from takod_daemon.credentials import codex_auth
from takod_daemon.credentials.pi_auth import OAuthEntry, parse_entry
from takod_daemon.inference import anthropic_api, ollama, openai_api
from takod_daemon.inference.types import InferRequest, Message, ProviderFailure, RunContext
from takod_daemon.login import LoginManager
from takod_daemon.providers.ollama_probe import OllamaProbe, probe_ollama
from takod_daemon.refresh import RefreshPermanent, RefreshTransient, refresh_codex, refresh_pi_entry
from tests.fakes.http_base import Canned, LoopbackServer
from tests.fakes.login_server import FakeLoginServer
from tests.fakes.model_servers import FakeAnthropic, FakeOpenAI
from tests.fakes.oauth_server import FakeOAuthServer, make_jwt
from tests.fakes.ollama_server import FakeOllama, tag_entry
from tests.integration.test_refresh_endpoints import run
from tests.unit.test_credential_readers_hostile import deep, hostile

GUARD = 30  # every wait is bounded by this
KEY = "canary-key-5d1e8b7a-do-not-leak"  # shaped like no known key: only takod's own masking hides it
REFRESH = "canary-refresh-93c0f1-do-not-leak"
MiB = 1024 * 1024

# What a runner may say about an answer it cannot use (never internal, never a traceback).
RUNNER_KINDS = {"crashed", "unavailable", "empty", "model", "bad_request", "auth", "rate_limit", "timeout"}


def bodies(valid: Any) -> dict[str, list[bytes]]:
    """The hostile file catalogue of tests/unit/test_credential_readers_hostile.py,
    as answers: every case but its 4 MiB "huge" ones (a network answer gets its
    own, below), plus a 40 MiB body and an object nested 100 000 levels."""
    cases = {k: v for k, v in hostile(valid).items() if k not in ("huge", "big_but_allowed")}
    cases["deeply_nested"].append(b'{"a":' * 100_000)
    cases["huge"] = [b'{"pad": "' + b"x" * (40 * MiB) + b'"}']
    return cases


# Answers that must be refused whatever the endpoint (the rest may be read or refused:
# a wrong type under a field with a default, or a bad byte in an ignored key, is fine).
REFUSED = ("truncated", "deeply_nested", "huge", "nul_bytes", "empty", "non_utf8[1]", "non_utf8[2]")


def flat(cases: dict[str, list[bytes]]) -> Iterator[tuple[str, bytes]]:
    for case, datas in cases.items():
        for i, data in enumerate(datas):
            yield f"{case}[{i}]", data


def assert_masked(text: str, *extra: str, quotes: bool = False) -> None:
    """No secret of ours in ``text``, which is short; unless it may quote the
    peer (an error answer's text is shown, scrubbed), none of the hostile bytes either."""
    for secret in (KEY, REFRESH, *extra):
        assert secret not in text, f"a secret leaked: {text[:300]}"
    if not quotes:
        assert "[[[[[[[[" not in text and '{"a":{"a":' not in text and "xxxxxxxxxxxxxxxx" not in text, text[:300]
    assert len(text) < 2000, "a failure message is short"


# --- the HTTP runners -----------------------------------------------------------------


def attempt_runner(runner: Callable[..., Awaitable[Any]], ctx: RunContext, model: str) -> tuple[Any, ProviderFailure | None, int]:
    chunks: list[Any] = []

    async def emit(chunk: Any) -> None:
        chunks.append(chunk)

    req = InferRequest(messages=[Message("user", "hi")], model=model, timeout=GUARD - 5)

    async def go(http: httpx.AsyncClient) -> tuple[Any, ProviderFailure | None, int]:
        try:
            return await runner(req, ctx, emit, http), None, len(chunks)
        except ProviderFailure as exc:
            return None, exc, len(chunks)

    return run(go)


def check_failure(
    failure: ProviderFailure | None, label: str, *, kinds: set[str] = RUNNER_KINDS, quotes: bool = False
) -> ProviderFailure:
    assert failure is not None, f"{label}: read as an answer"
    assert failure.kind in kinds, f"{label}: {failure.kind}: {failure.message[:300]}"
    assert_masked(failure.message, quotes=quotes)
    return failure


def read_or_refused(
    fake: LoopbackServer, path: str, cases: dict[str, list[Any]], call: Callable[[httpx.AsyncClient], Awaitable[Any]]
) -> Iterator[tuple[str, Any]]:
    """Each case's body as ``fake``'s answer at ``path``, through ``call``:
    (label, what was read, None when refused). A refusal is a classified, masked
    ProviderFailure; the valid answers are read, the REFUSED ones never."""
    for label, data in flat(cases):
        fake.answer_with(Canned(data), path=path)
        try:
            result = run(call)
        except ProviderFailure as exc:
            failure = check_failure(exc, label)
            assert not label.startswith(("valid", "bom")), f"{label} must be read: {failure}"
            if label.startswith(("deeply_nested", "huge")):
                assert failure.kind == "crashed", label
            result = None
        else:
            assert not label.startswith(REFUSED), f"{label} was read: {result!r:.200}"
        fake.answer_with(None)
        yield label, result


def test_ollama_model_list_embeddings_and_default_model(tmp_path: Path) -> None:
    with FakeOllama() as fake:
        ctx = RunContext(workspace=tmp_path, env={}, base_url=fake.url)
        tags = bodies({"models": [tag_entry("llama3.2:latest")]})
        for label, models in read_or_refused(fake, "/api/tags", tags, lambda http: ollama.list_models(ctx, http)):
            if label.startswith(("valid", "bom")):
                assert [m.name for m in models] == ["llama3.2:latest"]
            if label.startswith(REFUSED):
                # No model in the request: the runner asks /api/tags first, with the same outcome.
                fake.answer_with(Canned(dict(flat(tags))[label]), path="/api/tags")
                _, failure, _ = attempt_runner(ollama.run, ctx, "")
                check_failure(failure, label)
                fake.answer_with(None)

        reply = {"model": "nomic-embed-text", "embeddings": [[0.25, -0.5]], "prompt_eval_count": 1}
        cases = bodies(reply)
        cases["huge"] = [lambda: (b" " * MiB for _ in range(70))]  # past the 64 MiB embeddings bound
        for label, result in read_or_refused(fake, "/api/embed", cases,
                                             lambda http: ollama.embed(["a"], "nomic-embed-text", ctx, http)):
            assert result is None or len(result.vectors) == 1


def ndjson(*docs: Any) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


OLLAMA_GOOD = ndjson({"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False},
                     {"model": "m", "message": {"role": "assistant", "content": "lo"}, "done": False})
OLLAMA_END = ndjson({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
                     "done_reason": "stop", "eval_count": 2})


def stream_cases(
    good: bytes, end: bytes, line: Callable[[bytes], bytes], *, wrong: bytes, piece: bytes, content_type: str
) -> dict[str, Canned]:
    """A stream that starts well and turns bad: each case's chunks, sent one at a
    time. ``wrong`` is a line of the wrong shape, ``piece`` one carrying 64 KiB of text."""

    def chunks(*parts: bytes | Callable[[], Iterable[bytes]]) -> Canned:
        def gen() -> Iterator[bytes]:
            for part in parts:
                if isinstance(part, bytes):
                    yield part
                else:
                    yield from part()
        return Canned(gen, content_type=content_type)

    return {
        "deeply_nested_line": chunks(good, line(b"[" * 100_000), end),
        "deeply_nested_under_a_field": chunks(good, line(b'{"x":' + deep(100_000).encode() + b"}"), end),
        "truncated_line": chunks(good, line(b'{"model": "m", "mess'), end),
        "wrong_types": chunks(good, line(wrong), end),
        "line_of_40_MiB": chunks(good, lambda: (b"x" * MiB for _ in range(40)), end),
        "endless_answer": chunks(good, lambda: (piece for _ in range(200)), end),  # 200 x 64 KiB of text: past 8 MiB
    }


def test_ollama_stream_turning_hostile_midway(tmp_path: Path) -> None:
    piece = ndjson({"model": "m", "message": {"role": "assistant", "content": "y" * 65536}, "done": False})
    with FakeOllama() as fake:
        ctx = RunContext(workspace=tmp_path, env={}, base_url=fake.url)
        cases = stream_cases(OLLAMA_GOOD, OLLAMA_END, lambda b: b + b"\n", wrong=b'{"message": "not an object"}',
                             piece=piece, content_type="application/x-ndjson")
        cases["non_utf8_line"] = Canned(OLLAMA_GOOD + b'{"model": "\xff\xfe"}\n' + OLLAMA_END)
        for label, answer in cases.items():
            fake.answer_with(answer, path="/api/chat")
            result, failure, streamed = attempt_runner(ollama.run, ctx, "m")
            check_failure(failure, label, kinds={"crashed"})
            assert streamed >= 2, f"{label}: the good start was streamed first"
            fake.answer_with(None)
        # A BOM before the first line is not a reason to fail.
        fake.answer_with(Canned(b"\xef\xbb\xbf" + OLLAMA_GOOD + OLLAMA_END), path="/api/chat")
        result, failure, _ = attempt_runner(ollama.run, ctx, "m")
        assert failure is None and result.text == "Hello"


def sse(value: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return head + b"data: " + data + b"\n\n"


OPENAI_GOOD = sse({"model": "gpt", "choices": [{"delta": {"content": "Hel"}}]}) + \
    sse({"model": "gpt", "choices": [{"delta": {"content": "lo"}}]})
OPENAI_END = sse({"model": "gpt", "choices": [{"delta": {}, "finish_reason": "stop"}]}) + sse(b"[DONE]")
ANTHROPIC_GOOD = sse({"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 1}}}) + \
    sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hel"}}) + \
    sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "lo"}})
ANTHROPIC_END = sse({"type": "message_stop"})


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_api_stream_turning_hostile_midway(api: str, tmp_path: Path) -> None:
    fake_type, runner, good, end, path, wrong = (
        (FakeOpenAI, openai_api.run, OPENAI_GOOD, OPENAI_END, "/chat/completions", b'{"choices": "none"}')
        if api == "openai"
        else (FakeAnthropic, anthropic_api.run, ANTHROPIC_GOOD, ANTHROPIC_END, "/v1/messages", b'{"type": 5}'))
    big = {"choices": [{"delta": {"content": "y" * 65536}}]} if api == "openai" else \
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "y" * 65536}}
    with fake_type() as fake:
        ctx = RunContext(workspace=tmp_path, env={}, base_url=fake.base_url, api_key=KEY)
        cases = stream_cases(good, end, lambda b: b"data: " + b + b"\n\n", wrong=wrong, piece=sse(big),
                             content_type="text/event-stream")
        # A stream of data lines that never ends its event.
        cases["event_without_end"] = Canned(lambda: iter([good] + [b"data: " + b"z" * 65535 + b"\n"] * 400),
                                            content_type="text/event-stream")
        for label, answer in cases.items():
            fake.answer_with(answer, path=path)
            _, failure, streamed = attempt_runner(runner, ctx, "m")
            check_failure(failure, label, kinds={"crashed"})
            assert streamed >= 2, f"{label}: the good start was streamed first"
            fake.answer_with(None)
        # Event streams are text: a byte that is not UTF-8 reads as U+FFFD, as in any
        # browser's EventSource; the answer goes on.
        bad_byte = sse(b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "\xff"}, '
                       b'"choices": [{"delta": {"content": "\xff"}}]}')
        fake.answer_with(Canned(good + bad_byte + end, content_type="text/event-stream"), path=path)
        result, failure, _ = attempt_runner(runner, ctx, "m")
        assert failure is None and result.text == "Hello\ufffd"
        fake.answer_with(None)
        fake.answer_with(Canned(b"\xef\xbb\xbf" + good + end, content_type="text/event-stream"), path=path)
        result, failure, _ = attempt_runner(runner, ctx, "m")
        assert failure is None and result.text == "Hello"


def test_openai_single_json_completion_models_and_embeddings(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        ctx = RunContext(workspace=tmp_path, env={}, base_url=fake.base_url, api_key=KEY)
        completion = {"model": "gpt", "choices": [{"message": {"content": "Hello"}, "finish_reason": "stop"}]}
        for label, data in flat(bodies(completion)):
            fake.answer_with(Canned(data), path="/chat/completions")
            result, failure, _ = attempt_runner(openai_api.run, ctx, "gpt")
            if label.startswith(("valid", "bom")):
                assert failure is None and result.text == "Hello", label
            elif failure is not None or label.startswith(REFUSED):
                check_failure(failure, label)
            fake.answer_with(None)

        listing = {"object": "list", "data": [{"id": "gpt-x", "owned_by": "o"}]}
        for label, models in read_or_refused(fake, "/models", bodies(listing),
                                             lambda http: openai_api.list_models(ctx, http)):
            if label.startswith(("valid", "bom")):
                assert [m.id for m in models] == ["gpt-x"]

        reply = {"data": [{"embedding": [0.5, 0.25], "index": 0}], "model": "e"}
        cases = bodies(reply)
        cases["huge"] = [lambda: (b" " * MiB for _ in range(70))]
        for _ in read_or_refused(fake, "/embeddings", cases, lambda http: openai_api.embed(["a"], "e", ctx, http)):
            pass


def test_anthropic_model_pages(tmp_path: Path) -> None:
    with FakeAnthropic() as fake:
        ctx = RunContext(workspace=tmp_path, env={}, base_url=fake.base_url, api_key=KEY)
        page = {"data": [{"id": "claude-x", "type": "model"}], "has_more": False}
        for label, models in read_or_refused(fake, "/v1/models", bodies(page),
                                             lambda http: anthropic_api.list_models(ctx, http)):
            if label.startswith(("valid", "bom")):
                assert [m.id for m in models] == ["claude-x"]


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
def test_error_answers_of_any_shape_are_classified_by_their_status(status: int, tmp_path: Path) -> None:
    """Error bodies are read to 64 KiB and only to classify; a body that is none of
    the API's error shapes falls back to the status."""
    hostile_errors = [b"[" * 100_000, b'{"error":' * 100_000, b'{"error": {"message": "\xff"}}',
                      b"x" * (40 * MiB), b'{"error": {"message": ' + b'"' + b"m" * (40 * MiB) + b'"}}']
    with FakeOllama() as ollama_fake, FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        runners = [
            (ollama.run, RunContext(workspace=tmp_path, env={}, base_url=ollama_fake.url), ollama_fake, "/api/chat"),
            (openai_api.run, RunContext(workspace=tmp_path, env={}, base_url=openai_fake.base_url, api_key=KEY),
             openai_fake, "/chat/completions"),
            (anthropic_api.run, RunContext(workspace=tmp_path, env={}, base_url=anthropic_fake.base_url, api_key=KEY),
             anthropic_fake, "/v1/messages"),
        ]
        for runner, ctx, fake, path in runners:
            for i, data in enumerate(hostile_errors):
                fake.answer_with(Canned(data, status=status), path=path)
                _, failure, _ = attempt_runner(runner, ctx, "m")
                failure = check_failure(failure, f"{path} {status} body {i}", quotes=True)
                assert f"HTTP {status}" in failure.message
                fake.answer_with(None)


# --- the Ollama probe ------------------------------------------------------------------


def probe(fake: FakeOllama) -> OllamaProbe:
    async def go() -> OllamaProbe:
        with anyio.fail_after(GUARD):
            return await probe_ollama(env={"OLLAMA_HOST": fake.host}, timeout=10)

    return anyio.run(go)


@pytest.mark.parametrize("path", ["/api/version", "/api/tags"])
def test_probe_reports_bad_answers_as_bad_response(path: str) -> None:
    valid = {"version": "0.12.6"} if path == "/api/version" else {"models": [tag_entry("llama3.2:latest")]}
    cases = bodies(valid)
    cases["bad_gzip"] = [b"this is not gzip"]
    with FakeOllama() as fake:
        for label, data in flat(cases):
            headers = {"Content-Encoding": "gzip"} if label.startswith("bad_gzip") else {}
            fake.answer_with(Canned(data, headers=headers), path=path)
            result = probe(fake)
            if label.startswith(("valid", "bom")):
                assert result.reachable and result.problem is None, f"{label}: {result.detail}"
            elif label.startswith((*REFUSED, "bad_gzip")):
                assert (result.reachable, result.problem) == (True, "bad-response"), f"{label}: {result!r:.300}"
            else:  # a wrong type under a field with a default may read as "no model"
                assert result.reachable and result.problem in (None, "bad-response", "model-not-pulled"), label
            assert_masked(result.detail or "")
            fake.answer_with(None)
        for data in (b"[" * 100_000, b'{"error":' * 100_000, b"x" * (40 * MiB)):
            fake.answer_with(Canned(data, status=500), path=path)
            result = probe(fake)
            assert (result.reachable, result.problem) == (True, "bad-response")
            assert_masked(result.detail or "", quotes=True)
            fake.answer_with(None)
        # Gzip that decodes to a valid answer is read (httpx decodes as it reads).
        fake.answer_with(Canned(gzip.compress(json.dumps(valid).encode()), headers={"Content-Encoding": "gzip"}),
                         path=path)
        assert probe(fake).problem is None


# --- token refreshes ---------------------------------------------------------------------


PI_GRANTS = [("openai-codex", "openai"), ("anthropic", "anthropic"), ("github-copilot", "copilot"),
             ("google-gemini-cli", "google")]


def valid_answer(endpoint: str) -> dict[str, Any]:
    if endpoint == "copilot":
        return {"token": "tid=new;exp=1", "expires_at": int(time.time()) + 1800, "refresh_in": 1500}
    answer: dict[str, Any] = {"access_token": make_jwt({"exp": int(time.time()) + 3600}), "expires_in": 3600,
                              "refresh_token": "rt-new", "token_type": "Bearer"}
    return answer


def refresh_outcome(make: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> tuple[str, Any]:
    try:
        return "ok", run(make)
    except RefreshPermanent as exc:
        assert exc.code in ("malformed_response", "unauthorized", "invalid_grant"), exc.code
        assert_masked(str(exc))
        return "permanent", exc.code
    except RefreshTransient as exc:
        assert_masked(str(exc))
        return "transient", exc.reason


def check_refresh(label: str, outcome: tuple[str, Any]) -> None:
    kind, detail = outcome
    if label.startswith(("valid", "bom")):
        assert kind == "ok", f"{label} must refresh: {detail}"
    elif label.startswith(REFUSED):
        assert kind != "ok", f"{label} was taken as new tokens"
    if label.startswith("deeply_nested"):
        # JSON from the endpoint itself that no token answer looks like: a retry would spend the token again.
        assert outcome == ("permanent", "malformed_response"), f"{label}: {outcome}"
    if label.startswith(("truncated", "huge")):
        assert kind == "transient", f"{label}: {outcome}"


@pytest.mark.parametrize(("provider", "endpoint"), PI_GRANTS, ids=[p for p, _ in PI_GRANTS])
def test_pi_refresh_of_hostile_success_answers(provider: str, endpoint: str) -> None:
    with FakeOAuthServer() as server:
        grant = server.add_grant(provider, endpoint, refresh_token=REFRESH)  # type: ignore[arg-type]
        entry = parse_entry(grant.pi_entry())
        assert isinstance(entry, OAuthEntry)
        cases = bodies(valid_answer(endpoint))
        # Lifetimes that would overflow the stored expiry, or have it refreshed again at once.
        key = "expires_at" if endpoint == "copilot" else "expires_in"
        cases["wrong_lifetimes"] = [json.dumps({**valid_answer(endpoint), key: value}).encode()
                                    for value in (1e308, -1, 0, 2**70)]
        for label, data in flat(cases):
            server.answer_with(Canned(data), path=server.url(endpoint).removeprefix(server.origin))
            outcome = refresh_outcome(
                lambda http: refresh_pi_entry(provider, entry, http, server.env(), int(time.time() * 1000)))
            check_refresh(label, outcome)
            if label.startswith("wrong_lifetimes"):
                assert outcome == ("permanent", "malformed_response"), f"{label}: {outcome}"
            server.answer_with(None)
        assert server.current_refresh(provider) == REFRESH  # a canned answer never rotated anything


def test_codex_refresh_of_hostile_success_answers(tmp_path: Path) -> None:
    with FakeOAuthServer() as server:
        grant = server.add_grant("codex", "openai", refresh_token=REFRESH)
        path = tmp_path / "auth.json"
        path.write_text(json.dumps(grant.codex_auth()))
        auth = codex_auth.read_auth(path)
        assert auth is not None
        for label, data in flat(bodies(valid_answer("openai"))):
            server.answer_with(Canned(data), path="/openai/oauth/token")
            check_refresh(label, refresh_outcome(lambda http: refresh_codex(auth, http, server.env(), time.time())))
            server.answer_with(None)


@pytest.mark.parametrize("status", [400, 401, 429, 503])
def test_refresh_error_answers_of_any_shape(status: int) -> None:
    errors = [b"[" * 100_000, b'{"error":' * 100_000, b'{"error": "\xff"}', b"x" * (40 * MiB),
              b'{"error": ' + deep(100_000).encode() + b"}", b'{"error": "' + REFRESH.encode() + b'"}']
    with FakeOAuthServer() as server:
        grant = server.add_grant("anthropic", "anthropic", refresh_token=REFRESH)
        entry = parse_entry(grant.pi_entry())
        assert isinstance(entry, OAuthEntry)
        for data in errors:
            server.answer_with(Canned(data, status=status), path="/anthropic/v1/oauth/token")
            kind, detail = refresh_outcome(
                lambda http: refresh_pi_entry("anthropic", entry, http, server.env(), int(time.time() * 1000)))
            # Classified by the status alone: 401 needs a login, the others are worth a retry.
            assert (kind, detail if kind == "permanent" else None) == (
                ("permanent", "unauthorized") if status == 401 else ("transient", None)), (status, kind, detail)
            server.answer_with(None)


# --- login flows ---------------------------------------------------------------------------


class _Bus:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.events.append(payload)


async def _nothing() -> None:
    return None


def login_once(
    server: FakeLoginServer, workspace: Path, provider: str, answer: Callable[[dict[str, Any]], str] | None
) -> dict[str, Any]:
    """One login against ``server`` in a LoginManager of its own, ``answer``
    giving the text for a prompt; the login's last event."""
    bus = _Bus()
    daemon = SimpleNamespace(bus=bus, broker=SimpleNamespace(rescan=_nothing))

    async def go() -> dict[str, Any]:
        manager = LoginManager(daemon)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            session = manager.start(provider, workspace, server.env(), timeout=GUARD - 5)
            with anyio.fail_after(GUARD):
                while session.state == "running":
                    if session.waiting and answer is not None:
                        manager.answer(session, answer(bus.events[-1]))
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        return bus.events[-1]

    return anyio.run(go)


def test_login_token_exchange_with_hostile_answers(tmp_path: Path) -> None:
    tokens = {"access_token": "sk-ant-oat01-new", "refresh_token": "sk-ant-ort01-new", "expires_in": 28800}
    cases = bodies(tokens)
    cases["wrong_lifetimes"] = [json.dumps({**tokens, "expires_in": v}).encode() for v in (1e308, -5, 2**70)]
    with FakeLoginServer() as server:
        for i, (label, data) in enumerate(flat(cases)):
            server.answer_with(Canned(data), path="/anthropic/v1/oauth/token")
            ws = tmp_path / str(i)
            # The code as pasted, with the state the authorize URL carried.
            last = login_once(server, ws, "anthropic",
                              lambda prompt: f"code-{REFRESH}#" + parse_qs(urlsplit(prompt["url"]).query)["state"][0])
            auth = ws / ".tako" / "pi" / "agent" / "auth.json"
            if label.startswith(("valid", "bom")):
                assert last["kind"] == "done", f"{label}: {last}"
                assert json.loads(auth.read_text())["anthropic"]["refresh"] == "sk-ant-ort01-new"
            else:
                if label.startswith((*REFUSED, "wrong_lifetimes")):
                    assert last["kind"] == "failed", f"{label}: {last}"
                if last["kind"] == "failed":
                    assert last["error"] in ("bad_token_response", "bad_response"), f"{label}: {last}"
                    assert not auth.exists(), f"{label}: a refused answer reached pi's file"
            assert_masked(json.dumps(last))
            server.answer_with(None)


@pytest.mark.parametrize("path", ["/github/login/device/code", "/copilot/token"])
def test_login_copilot_device_flow_with_hostile_answers(path: str, tmp_path: Path) -> None:
    cases = {"deeply_nested": [b"[" * 100_000, b'{"a":' * 100_000, b'{"x": ' + deep(100_000).encode() + b"}"],
             "non_utf8": [b'{"device_code": "\xff"}'], "huge": [b" " * (40 * MiB)],
             "wrong_types": [b'{"token": "t", "expires_at": 1e308}', b'{"device_code": 1, "user_code": []}']}
    with FakeLoginServer() as server:
        server.slow_downs = 0
        server.approved.set()  # the first poll gets the GitHub token
        for i, (label, data) in enumerate(flat(cases)):
            server.answer_with(Canned(data), path=path)
            last = login_once(server, tmp_path / str(i), "copilot", None)
            assert last["kind"] == "failed" and last["error"] in ("bad_token_response", "bad_response"), \
                f"{label}: {last}"
            assert_masked(json.dumps(last), server.github_token)
            server.answer_with(None)


def test_the_fakes_canned_answers_are_sent_as_given() -> None:
    """The fakes' hostile mode itself: bytes and chunks arrive as given, and ``times`` counts down."""
    fakes: list[tuple[LoopbackServer, str]] = [(FakeOllama(), "/api/tags"), (FakeOpenAI(), "/v1/models"),
                                               (FakeOAuthServer(), "/google/token"), (FakeLoginServer(), "/copilot/token")]
    for fake, path in fakes:
        with fake, httpx.Client(trust_env=False) as client:
            fake.answer_with(Canned(b"\xff[[", status=202, headers={"X-Hostile": "1"}), path=path, times=1)
            answer = client.get(fake.origin + path)
            assert (answer.status_code, answer.content, answer.headers["x-hostile"]) == (202, b"\xff[[", "1")
            assert client.get(fake.origin + path).status_code != 202  # once only
            fake.answer_with(Canned(lambda: iter([b"a", b"", b"bc"])), path=path)
            assert client.get(fake.origin + path).content == b"abc"
            assert fake.canned_sent == 2
