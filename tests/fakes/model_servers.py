"""Loopback stand-ins for the model APIs takod's HTTP runners and the CLIs it
drives talk to: OpenAI (chat completions and the Responses API), Anthropic
Messages, and the Gemini API. Each is a threaded stdlib HTTP server on
``127.0.0.1:<free port>`` that speaks the real wire format closely enough for
the real clients (pi's OpenAI SDK, codex with ``wire_api = "responses"``,
Claude Code with ``ANTHROPIC_BASE_URL``, gemini-cli with
``GOOGLE_GEMINI_BASE_URL``) to be pointed at it. Ollama has its own fake
(``tests/fakes/ollama_server.py``).

- :class:`FakeOpenAI`, base URL ``fake.base_url`` (``.../v1``):
  ``POST */chat/completions`` and ``POST */responses`` (SSE, or one JSON
  object without ``stream``), ``GET */models``, ``POST */embeddings``.
- :class:`FakeAnthropic`, base URL ``fake.base_url`` (no ``/v1``: clients
  append ``/v1/messages``): ``POST /v1/messages`` (SSE or one JSON),
  ``POST /v1/messages/count_tokens``, ``GET /v1/models``.
- :class:`FakeGemini`, base URL ``fake.base_url`` (clients append
  ``/v1beta/models/...``): ``:streamGenerateContent?alt=sse``,
  ``:generateContent``, ``:countTokens``, ``:embedContent``,
  ``:batchEmbedContents``, ``GET models``.

Routes match on the path's end, so any prefix works (``/v1``, ``/api/v1``).

Every fake:

- answers with ``reply`` (a string, or a callable given the
  :class:`RecordedRequest` that returns one), split into word-sized deltas;
  ``thinking`` (when set, and when the request asks for it where the API has
  a switch) streams first as the API's reasoning deltas;
- records every request in ``fake.requests`` (method, path, query, lower-cased
  headers, decoded JSON body), so tests can assert the prompt, model and key
  that arrived; ``fake.api_key`` set makes a wrong key fail as the real API
  does; ``fake.models`` set makes other models 404 as the real API does;
- fails on demand with :meth:`FakeModelServer.set_mode` (optionally for the
  next ``times`` requests only):

  - ``http-401``, ``http-403``, ``http-429`` (with ``Retry-After:
    fake.retry_after``), ``http-500``: the API's own error body, before any
    stream;
  - ``drop-before-stream``: read the request, close the connection unanswered;
  - ``hang``: read the request, never answer;
  - ``error-event``: stream ``error_after`` text deltas, then the API's
    mid-stream error event (``stream_error`` picks its type/code), then end;
  - ``drop-mid-stream``: stream ``error_after`` deltas, then close the
    connection without finishing the chunked body;
  - ``stall-mid-stream``: stream ``error_after`` deltas, then go silent;
  - ``malformed``: after ``error_after`` deltas, one event whose data is not
    JSON, then carry on;
  - ``slow-stream``: ``chunk_delay`` seconds between events.

  ``error_after=0`` fails after HTTP 200 but before the first text delta;
  any bytes at all: :meth:`~tests.fakes.http_base.LoopbackServer.answer_with`.
- notices a client that goes away mid-answer (while waiting between events, or
  when a write fails): ``fake.disconnects`` lists the paths, and
  :meth:`FakeModelServer.wait_disconnect` waits for one (bounded).
- ``echo_secrets=True`` makes every error message quote the key the client
  sent, as a careless server might; for canary tests.

Use as a context manager (``with FakeOpenAI() as fake:``) or through the
``fake_openai`` / ``fake_anthropic`` / ``fake_gemini`` fixtures.

Notes for real clients: codex retries a ``response.failed`` stream
(``stream_max_retries``, default 5) and a 5xx (``request_max_retries``); set
both to 0 in its provider table for failure tests. The Gemini stream uses CRLF
event separators, as Google's servers do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.http_base import FakeHandler, LoopbackServer

Mode = Literal[
    "ok",
    "http-401",
    "http-403",
    "http-429",
    "http-500",
    "drop-before-stream",
    "hang",
    "error-event",
    "drop-mid-stream",
    "stall-mid-stream",
    "malformed",
    "slow-stream",
]
STREAM_FAULTS = ("error-event", "drop-mid-stream", "stall-mid-stream", "malformed")

DEFAULT_REPLY = "Hello from the fake model server, streamed one word at a time."
CREATED = 1_766_400_000  # a fixed epoch second, so answers are reproducible
Reply = str | Callable[["RecordedRequest"], str]
ErrorAnswer = tuple[int, Any, dict[str, str]]  # status, JSON body, headers


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # decoded JSON, or None
    raw: bytes = field(repr=False, default=b"")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def bearer(self) -> str | None:
        value = self.header("authorization") or ""
        return value[7:] if value[:7].lower() == "bearer " else None


@dataclass(frozen=True)
class Frame:
    """One event of a stream; ``text`` frames carry a piece of the answer."""

    data: bytes
    text: bool = False


def pieces(text: str) -> list[str]:
    """``text`` as word-sized deltas that join back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def sse(event: str | None, value: Any, *, eol: str = "\n") -> bytes:
    """One server-sent event: optional ``event:`` line, one ``data:`` line."""
    data = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {data}{eol}{eol}".encode()


def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [seed[i % len(seed)] - 127.5 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class FakeModelServer(LoopbackServer):
    """What every model API fake shares; subclasses implement :meth:`route`."""

    name: ClassVar[str] = "model"

    def __init__(
        self,
        *,
        reply: Reply = DEFAULT_REPLY,
        thinking: str | None = None,
        models: list[str] | None = None,
        api_key: str | None = None,
        mode: Mode = "ok",
        chunk_delay: float = 0.05,
        error_after: int = 2,
        retry_after: str = "7",
        stream_error: str | None = None,
        echo_secrets: bool = False,
        usage_input_tokens: int = 11,
        embedding_dims: int = 8,
    ) -> None:
        super().__init__(_Handler)
        self.reply = reply
        self.thinking = thinking
        self.models = models
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.error_after = error_after
        self.retry_after = retry_after
        self.stream_error = stream_error
        self.echo_secrets = echo_secrets
        self.usage_input_tokens = usage_input_tokens
        self.embedding_dims = embedding_dims
        self.requests: list[RecordedRequest] = []
        self.completed_streams = 0
        self._mode: Mode = mode
        self._mode_times: int | None = None
        self._ids = 0

    # --- control ---

    @property
    def url(self) -> str:
        return self.origin

    @property
    def base_url(self) -> str:
        """What a client is configured with (see the module table)."""
        return self.url

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode, *, times: int | None = None) -> None:
        """Fail this way from now on, or for the next ``times`` requests only."""
        with self._lock:
            self._mode, self._mode_times = mode, times

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # --- for the handler and subclasses ---

    def take_mode(self) -> Mode:
        with self._lock:
            mode = self._mode
            if self._mode_times is not None:
                self._mode_times -= 1
                if self._mode_times <= 0:
                    self._mode, self._mode_times = "ok", None
            return mode

    def note_completed(self) -> None:
        with self._lock:
            self.completed_streams += 1

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids:024x}"

    def reply_for(self, rec: RecordedRequest) -> str:
        return self.reply(rec) if callable(self.reply) else self.reply

    def sent_key(self, rec: RecordedRequest) -> str | None:
        """The key the client sent, wherever this API takes it."""
        return rec.bearer

    def said(self, rec: RecordedRequest, message: str) -> str:
        """An error message, quoting the client's key when ``echo_secrets``."""
        key = self.sent_key(rec)
        return f"{message} (request key: {key})" if self.echo_secrets and key else message

    def model_known(self, model: str | None) -> bool:
        return self.models is None or (model is not None and model in self.models)

    def error_answer(self, kind: str, rec: RecordedRequest, detail: str | None = None) -> ErrorAnswer:
        """(status, body, headers) of this API's error ``kind``: auth, forbidden,
        rate_limit, server, not_found_model, not_found, bad_request (``detail``
        replaces a bad request's message)."""
        raise NotImplementedError

    def route(self, h: _Handler, rec: RecordedRequest) -> None:
        raise NotImplementedError


_MODE_ERRORS = {"http-401": "auth", "http-403": "forbidden", "http-429": "rate_limit", "http-500": "server"}


class _Handler(FakeHandler[FakeModelServer]):
    server_version = "fake-model-server"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # --- request ---

    def _decoded_body(self) -> bytes:
        data = self.read_body()
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                return gzip.decompress(data)
            if encoding == "deflate":
                return zlib.decompress(data)
            if encoding == "zstd":
                import zstandard  # type: ignore[import-not-found]  # optional: codex may compress

                return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except Exception:  # undecodable: recorded raw, body None
            return data
        return data

    def _handle(self) -> None:
        fake = self.fake
        raw = self._decoded_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        split = urlsplit(self.path)
        rec = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        fake.requests.append(rec)
        if self.send_canned():
            return
        self.mode = fake.take_mode()
        if self.mode == "hang":
            self.wait(None)
            self.close_connection = True
            return
        if self.mode == "drop-before-stream":
            self.close_connection = True
            return
        if self.mode in _MODE_ERRORS:
            self.error(_MODE_ERRORS[self.mode], rec)
            return
        fake.route(self, rec)

    # --- answers ---

    def error(self, kind: str, rec: RecordedRequest, detail: str | None = None) -> None:
        status, body, headers = self.fake.error_answer(kind, rec, detail)
        self.send_json(status, body, headers)

    def play(self, frames: list[Frame], *, error: bytes, malformed: bytes, content_type: str) -> None:
        """Stream ``frames`` (chunked), applying the stream failure modes."""
        fake, mode = self.fake, self.mode
        if not self.start_chunked(content_type, {"Cache-Control": "no-cache"}):
            return
        text_at = [i for i, frame in enumerate(frames) if frame.text]
        if fake.error_after < len(text_at):
            fault_at = text_at[fake.error_after]
        else:
            fault_at = text_at[-1] + 1 if text_at else 0
        for i, frame in enumerate(frames):
            if i == fault_at and mode in STREAM_FAULTS:
                if mode == "error-event":
                    if self.write_chunk(error):
                        self.write_chunk(b"")
                    return
                if mode == "drop-mid-stream":
                    self.close_connection = True
                    return
                if mode == "stall-mid-stream":
                    self.wait(None)
                    self.close_connection = True
                    return
                if not self.write_chunk(malformed):
                    return
            if mode == "slow-stream" and i and not self.wait(fake.chunk_delay):
                self.close_connection = True
                return
            if not self.write_chunk(frame.data):
                return
        if self.write_chunk(b""):  # the zero-length chunk ends the body
            fake.note_completed()


# --- OpenAI ---------------------------------------------------------------------


OPENAI_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


class FakeOpenAI(FakeModelServer):
    """OpenAI's chat completions and Responses APIs (and models, embeddings).

    ``stream_error`` is the mid-stream error's ``code`` (default
    ``server_error``). Chat completion streams carry ``thinking`` as
    ``delta.reasoning_content`` (as DeepSeek, Groq and OpenRouter send it);
    Responses streams as a reasoning item with summary deltas.

    Server quirks to test clients against: ``reject_params`` (names of body
    parameters a chat completion request is refused with a 400 for, as OpenAI
    refuses ``temperature`` for reasoning models); ``ignore_stream`` (answer one
    JSON object even when asked to stream, as some compatible servers do).
    """

    name = "openai"

    def __init__(self, *, reject_params: tuple[str, ...] = (), ignore_stream: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reject_params = reject_params
        self.ignore_stream = ignore_stream

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def error_answer(self, kind: str, rec: RecordedRequest, detail: str | None = None) -> ErrorAnswer:
        model = rec.body.get("model") if isinstance(rec.body, dict) else None
        key = self.sent_key(rec) or ""
        table = {
            "auth": (
                401,
                f"Incorrect API key provided: {key[:3]}{'*' * 8}{key[-4:]}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            "forbidden": (403, "You are not allowed to sample from this model", "invalid_request_error", None),
            "rate_limit": (
                429,
                "Rate limit reached for requests. Please try again in 7s.",
                "requests",
                "rate_limit_exceeded",
            ),
            "server": (500, OPENAI_SERVER_ERROR, "server_error", None),
            "not_found_model": (
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
            "not_found": (404, f"Invalid URL ({rec.method} {rec.path})", "invalid_request_error", None),
            "bad_request": (400, detail or "you must provide a model parameter", "invalid_request_error", None),
        }
        status, message, type_, code = table[kind]
        headers = {"Retry-After": self.retry_after} if kind == "rate_limit" else {}
        if kind == "auth" and not self.echo_secrets:
            message = message if len(key) > 8 else "You didn't provide an API key."
        body = {"error": {"message": self.said(rec, message), "type": type_, "param": None, "code": code}}
        return status, body, headers

    def route(self, h: _Handler, rec: RecordedRequest) -> None:
        if self.api_key is not None and self.sent_key(rec) != self.api_key:
            h.error("auth", rec)
            return
        path, method = rec.path, rec.method
        if method == "POST" and path.endswith("/chat/completions"):
            self._chat(h, rec)
        elif method == "POST" and path.endswith("/responses"):
            self._responses(h, rec)
        elif method == "POST" and path.endswith("/embeddings"):
            self._embeddings(h, rec)
        elif method == "GET" and path.endswith("/models"):
            h.send_json(200, {"object": "list", "data": [self._model_entry(m) for m in self._listed()]})
        elif method == "GET" and "/models/" in path:
            model = path.rsplit("/models/", 1)[1]
            if self.model_known(model):
                h.send_json(200, self._model_entry(model))
            else:
                h.error("not_found_model", rec)
        else:
            h.error("not_found", rec)

    def _listed(self) -> list[str]:
        return self.models if self.models is not None else ["gpt-4.1-mini", "text-embedding-3-small"]

    @staticmethod
    def _model_entry(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": CREATED, "owned_by": "fake"}

    def _check_model(self, h: _Handler, rec: RecordedRequest) -> str | None:
        body = rec.body if isinstance(rec.body, dict) else {}
        model = body.get("model")
        if not model:
            h.error("bad_request", rec)
            return None
        if not self.model_known(model):
            h.error("not_found_model", rec)
            return None
        return model

    def _stream_error(self, rec: RecordedRequest) -> dict[str, Any]:
        code = self.stream_error or "server_error"
        return {
            "message": self.said(rec, OPENAI_SERVER_ERROR),
            "type": "server_error" if code == "server_error" else "invalid_request_error",
            "param": None,
            "code": code,
        }

    # chat completions

    def _chat(self, h: _Handler, rec: RecordedRequest) -> None:
        model = self._check_model(h, rec)
        if model is None:
            return
        body = rec.body
        rejected = next((name for name in self.reject_params if name in body), None)
        if rejected is not None:
            h.error("bad_request", rec, f"Unsupported parameter: '{rejected}' is not supported with this model.")
            return
        text = self.reply_for(rec)
        tokens = pieces(text)
        usage = {
            "prompt_tokens": self.usage_input_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": self.usage_input_tokens + len(tokens),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        cid = self.next_id("chatcmpl-")
        if not body.get("stream") or self.ignore_stream:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if self.thinking:
                message["reasoning_content"] = self.thinking
            h.send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            value: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                value["usage"] = None
            return sse(None, value)

        frames = [Frame(chunk({"role": "assistant", "content": "", "refusal": None}))]
        frames += [Frame(chunk({"reasoning_content": t})) for t in pieces(self.thinking or "")]
        frames += [Frame(chunk({"content": t}), text=True) for t in tokens]
        frames.append(Frame(chunk({}, "stop")))
        if include_usage:
            frames.append(
                Frame(
                    sse(
                        None,
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": CREATED,
                            "model": model,
                            "system_fingerprint": "fp_fake",
                            "choices": [],
                            "usage": usage,
                        },
                    )
                )
            )
        frames.append(Frame(sse(None, "[DONE]")))
        h.play(
            frames,
            error=sse(None, {"error": self._stream_error(rec)}),
            malformed=b'data: {"id":"' + cid.encode() + b'","choices":[{"delta":{"content":"x"\n\n',
            content_type="text/event-stream; charset=utf-8",
        )

    # Responses API

    def _response_object(
        self, rid: str, model: str, body: dict[str, Any], status: str, output: list[Any], usage: Any
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }

    def _responses(self, h: _Handler, rec: RecordedRequest) -> None:
        model = self._check_model(h, rec)
        if model is None:
            return
        body = rec.body
        text = self.reply_for(rec)
        tokens = pieces(text)
        thinking = pieces(self.thinking or "")
        rid, mid, rsid = self.next_id("resp_"), self.next_id("msg_"), self.next_id("rs_")
        usage = {
            "input_tokens": self.usage_input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(tokens) + len(thinking),
            "output_tokens_details": {"reasoning_tokens": len(thinking)},
            "total_tokens": self.usage_input_tokens + len(tokens) + len(thinking),
        }
        part_done = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        message_done = {
            "id": mid,
            "type": "message",
            "status": "completed",
            "content": [part_done],
            "role": "assistant",
        }
        reasoning_done = {
            "id": rsid,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": self.thinking}] if thinking else [],
        }
        output = ([reasoning_done] if thinking else []) + [message_done]
        if not body.get("stream"):
            h.send_json(200, self._response_object(rid, model, body, "completed", output, usage) | {"output_text": text})
            return

        seq = iter(range(1_000_000))

        def event(kind: str, value: dict[str, Any], *, text_frame: bool = False) -> Frame:
            return Frame(sse(kind, {"type": kind, "sequence_number": next(seq)} | value), text=text_frame)

        started = self._response_object(rid, model, body, "in_progress", [], None)
        frames = [
            event("response.created", {"response": started}),
            event("response.in_progress", {"response": started}),
        ]
        index = 0
        if thinking:
            ref = {"item_id": rsid, "output_index": 0, "summary_index": 0}
            frames.append(
                event("response.output_item.added", {"output_index": 0, "item": reasoning_done | {"summary": []}})
            )
            empty_part = {"type": "summary_text", "text": ""}
            frames.append(event("response.reasoning_summary_part.added", ref | {"part": empty_part}))
            frames += [event("response.reasoning_summary_text.delta", ref | {"delta": t}) for t in thinking]
            frames.append(event("response.reasoning_summary_text.done", ref | {"text": self.thinking}))
            whole_part = {"type": "summary_text", "text": self.thinking}
            frames.append(event("response.reasoning_summary_part.done", ref | {"part": whole_part}))
            frames.append(event("response.output_item.done", {"output_index": 0, "item": reasoning_done}))
            index = 1
        ref = {"item_id": mid, "output_index": index, "content_index": 0}
        frames.append(
            event(
                "response.output_item.added",
                {
                    "output_index": index,
                    "item": {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"},
                },
            )
        )
        frames.append(event("response.content_part.added", ref | {"part": part_done | {"text": ""}}))
        frames += [
            event("response.output_text.delta", ref | {"delta": t, "logprobs": []}, text_frame=True) for t in tokens
        ]
        frames.append(event("response.output_text.done", ref | {"text": text, "logprobs": []}))
        frames.append(event("response.content_part.done", ref | {"part": part_done}))
        frames.append(event("response.output_item.done", {"output_index": index, "item": message_done}))
        completed = self._response_object(rid, model, body, "completed", output, usage)
        frames.append(event("response.completed", {"response": completed}))
        error = self._stream_error(rec)
        failed = self._response_object(rid, model, body, "failed", [], None) | {
            "error": {"code": error["code"], "message": error["message"]}
        }
        h.play(
            frames,
            error=sse("response.failed", {"type": "response.failed", "sequence_number": 999_999, "response": failed}),
            malformed=b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":\n\n',
            content_type="text/event-stream; charset=utf-8",
        )

    def _embeddings(self, h: _Handler, rec: RecordedRequest) -> None:
        model = self._check_model(h, rec)
        if model is None:
            return
        texts = rec.body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        dims = int(rec.body.get("dimensions") or self.embedding_dims)
        h.send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector(str(t), dims)} for i, t in enumerate(texts)
                ],
                "model": model,
                "usage": {"prompt_tokens": sum(len(str(t).split()) for t in texts), "total_tokens": 0},
            },
        )


# --- Anthropic ------------------------------------------------------------------


class FakeAnthropic(FakeModelServer):
    """Anthropic's Messages API, checking requests as strictly as the real one
    on the points takod relies on: ``anthropic-version``, required fields, roles,
    and the thinking rules (budget >= 1024, ``max_tokens`` > budget, no
    temperature but 1). ``stream_error`` is the ``error`` event's type (default
    ``overloaded_error``). ``thinking`` streams only when the request enables it.
    """

    name = "anthropic"

    def sent_key(self, rec: RecordedRequest) -> str | None:
        return rec.header("x-api-key") or rec.bearer

    def error_answer(self, kind: str, rec: RecordedRequest, detail: str | None = None) -> ErrorAnswer:
        model = rec.body.get("model") if isinstance(rec.body, dict) else None
        table = {
            "auth": (401, "authentication_error", "invalid x-api-key"),
            "forbidden": (403, "permission_error", "Your API key does not have permission to use this resource."),
            "rate_limit": (
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute.",
            ),
            "server": (500, "api_error", "Internal server error"),
            "not_found_model": (404, "not_found_error", f"model: {model}"),
            "not_found": (404, "not_found_error", "Not found"),
            "bad_request": (400, "invalid_request_error", detail or "invalid request"),
        }
        status, type_, message = table[kind]
        headers = {"retry-after": self.retry_after} if kind == "rate_limit" else {}
        headers["request-id"] = "req_fake"
        body = {"type": "error", "error": {"type": type_, "message": self.said(rec, message)}, "request_id": "req_fake"}
        return status, body, headers

    def _bad(self, h: _Handler, rec: RecordedRequest, message: str) -> None:
        h.error("bad_request", rec, message)

    def route(self, h: _Handler, rec: RecordedRequest) -> None:
        if self.api_key is not None and self.sent_key(rec) != self.api_key:
            h.error("auth", rec)
            return
        path, method = rec.path, rec.method
        if method == "GET" and path.endswith("/v1/models"):
            listed = self.models if self.models is not None else ["claude-sonnet-4-5", "claude-haiku-4-5"]
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"} for m in listed
            ]
            first, last = (listed[0], listed[-1]) if listed else (None, None)
            h.send_json(200, {"data": data, "has_more": False, "first_id": first, "last_id": last})
        elif method == "POST" and path.endswith("/v1/messages/count_tokens"):
            h.send_json(200, {"input_tokens": self.usage_input_tokens})
        elif method == "POST" and path.endswith("/v1/messages"):
            self._messages(h, rec)
        else:
            h.error("not_found", rec)

    def _validate(self, h: _Handler, rec: RecordedRequest) -> bool:
        body = rec.body
        if not rec.header("anthropic-version"):
            self._bad(h, rec, "anthropic-version: header is required")
            return False
        if not isinstance(body, dict):
            self._bad(h, rec, "invalid JSON body")
            return False
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                self._bad(h, rec, f"{name}: Field required")
                return False
        for i, message in enumerate(body["messages"]):
            if message.get("role") not in ("user", "assistant"):
                self._bad(h, rec, f"messages.{i}.role: Input should be 'user' or 'assistant'")
                return False
        thinking = body.get("thinking") or {}
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens", 0)
            if budget < 1024:
                self._bad(h, rec, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
                return False
            if body["max_tokens"] <= budget:
                self._bad(h, rec, "`max_tokens` must be greater than `thinking.budget_tokens`.")
                return False
            if body.get("temperature", 1) != 1:
                self._bad(h, rec, "`temperature` may only be set to 1 when thinking is enabled.")
                return False
        if not self.model_known(body["model"]):
            h.error("not_found_model", rec)
            return False
        return True

    def _messages(self, h: _Handler, rec: RecordedRequest) -> None:
        if not self._validate(h, rec):
            return
        body = rec.body
        model = body["model"]
        text = self.reply_for(rec)
        tokens = pieces(text)
        thinking_on = (body.get("thinking") or {}).get("type") == "enabled"
        thinking = pieces(self.thinking or "") if thinking_on else []
        mid = self.next_id("msg_01")
        usage_start = {
            "input_tokens": self.usage_input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard",
        }
        output_tokens = len(tokens) + len(thinking)
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if thinking:
                content.append({"type": "thinking", "thinking": self.thinking, "signature": "ZmFrZQ=="})
            content.append({"type": "text", "text": text})
            h.send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage_start | {"output_tokens": output_tokens},
                },
                {"request-id": "req_fake"},
            )
            return

        def event(kind: str, value: dict[str, Any], *, text_frame: bool = False) -> Frame:
            return Frame(sse(kind, {"type": kind} | value), text=text_frame)

        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_start,
        }
        frames = [event("message_start", {"message": message})]
        index = 0
        if thinking:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            frames.append(event("content_block_start", {"index": 0, "content_block": block}))
            frames.append(event("ping", {}))
            frames += [
                event("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": t}})
                for t in thinking
            ]
            signature = {"type": "signature_delta", "signature": "ZmFrZQ=="}
            frames.append(event("content_block_delta", {"index": 0, "delta": signature}))
            frames.append(event("content_block_stop", {"index": 0}))
            index = 1
        frames.append(event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}))
        if not thinking:
            frames.append(event("ping", {}))
        frames += [
            event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": t}}, text_frame=True)
            for t in tokens
        ]
        frames.append(event("content_block_stop", {"index": index}))
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        frames.append(event("message_delta", {"delta": stop, "usage": {"output_tokens": output_tokens}}))
        frames.append(event("message_stop", {}))
        error_type = self.stream_error or "overloaded_error"
        said = {"overloaded_error": "Overloaded", "rate_limit_error": "Rate limited"}.get(error_type, "Internal error")
        h.play(
            frames,
            error=sse("error", {"type": "error", "error": {"type": error_type, "message": self.said(rec, said)}}),
            malformed=b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_del\n\n',
            content_type="text/event-stream; charset=utf-8",
        )


# --- Gemini ---------------------------------------------------------------------

_GEMINI_PATH = re.compile(r"/(?P<version>v1beta|v1alpha|v1)/models(?:/(?P<model>[^/:]+))?(?::(?P<method>\w+))?$")


class FakeGemini(FakeModelServer):
    """The Gemini API (``generativelanguage.googleapis.com``). Keys arrive as
    ``x-goog-api-key``, ``?key=`` or a Bearer token; a wrong key is the real
    API's 400 ``API_KEY_INVALID``. ``stream_error`` is the mid-stream error's
    status (default ``UNAVAILABLE``). ``thinking`` streams as ``thought`` parts
    only when ``thinkingConfig.includeThoughts`` is set.
    """

    name = "gemini"

    def sent_key(self, rec: RecordedRequest) -> str | None:
        return rec.header("x-goog-api-key") or (rec.query.get("key") or [None])[0] or rec.bearer

    def error_answer(self, kind: str, rec: RecordedRequest, detail: str | None = None) -> ErrorAnswer:
        match = _GEMINI_PATH.search(rec.path)
        model = match.group("model") if match else None
        version = match.group("version") if match else "v1beta"
        table: dict[str, tuple[int, str, str, list[Any]]] = {
            "auth": (401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", []),
            "bad_key": (
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            ),
            "forbidden": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.", []),
            "rate_limit": (
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{self.retry_after}s"}],
            ),
            "server": (500, "INTERNAL", "An internal error has occurred. Please retry or report it.", []),
            "not_found_model": (
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version {version}, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods.",
                [],
            ),
            "not_found": (404, "NOT_FOUND", f"Method not found: {rec.path}", []),
            "bad_request": (400, "INVALID_ARGUMENT", detail or "Invalid JSON payload received.", []),
        }
        status, code_status, message, details = table[kind]
        headers = {"Retry-After": self.retry_after} if kind == "rate_limit" else {}
        error: dict[str, Any] = {"code": status, "message": self.said(rec, message), "status": code_status}
        if details:
            error["details"] = details
        return status, {"error": error}, headers

    def route(self, h: _Handler, rec: RecordedRequest) -> None:
        if self.api_key is not None and self.sent_key(rec) != self.api_key:
            h.error("bad_key" if self.sent_key(rec) else "forbidden", rec)
            return
        match = _GEMINI_PATH.search(rec.path)
        if match is None:
            h.error("not_found", rec)
            return
        model, method = match.group("model"), match.group("method")
        if rec.method == "GET" and model is None:
            listed = self.models if self.models is not None else ["gemini-2.5-flash", "gemini-2.5-pro"]
            h.send_json(200, {"models": [self._model_entry(m) for m in listed]})
            return
        if model is not None and not self.model_known(model):
            h.error("not_found_model", rec)
            return
        if rec.method == "GET" and method is None:
            h.send_json(200, self._model_entry(model or ""))
        elif rec.method == "POST" and method in ("generateContent", "streamGenerateContent"):
            if not isinstance(rec.body, dict) or not rec.body.get("contents"):
                h.error("bad_request", rec)
                return
            self._generate(h, rec, model or "", stream=method == "streamGenerateContent")
        elif rec.method == "POST" and method == "countTokens":
            h.send_json(200, {"totalTokens": self.usage_input_tokens})
        elif rec.method == "POST" and method == "embedContent":
            h.send_json(200, {"embedding": {"values": vector(json.dumps(rec.body.get("content")), self.embedding_dims)}})
        elif rec.method == "POST" and method == "batchEmbedContents":
            requests = rec.body.get("requests", [])
            vectors = [vector(json.dumps(r.get("content")), self.embedding_dims) for r in requests]
            h.send_json(200, {"embeddings": [{"values": v} for v in vectors]})
        else:
            h.error("not_found", rec)

    @staticmethod
    def _model_entry(model: str) -> dict[str, Any]:
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    def _generate(self, h: _Handler, rec: RecordedRequest, model: str, *, stream: bool) -> None:
        body = rec.body
        text = self.reply_for(rec)
        tokens = pieces(text)
        config = body.get("generationConfig") or {}
        thoughts_on = bool((config.get("thinkingConfig") or {}).get("includeThoughts"))
        thinking = pieces(self.thinking or "") if thoughts_on else []
        response_id = self.next_id("fake")
        total = self.usage_input_tokens + len(tokens) + len(thinking)
        usage_final = {
            "promptTokenCount": self.usage_input_tokens,
            "candidatesTokenCount": len(tokens),
            "totalTokenCount": total,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.usage_input_tokens}],
        }
        if thinking:
            usage_final["thoughtsTokenCount"] = len(thinking)

        usage_partial = {"promptTokenCount": self.usage_input_tokens, "totalTokenCount": self.usage_input_tokens}

        def chunk(parts: list[dict[str, Any]], *, final: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if final:
                candidate["finishReason"] = "STOP"
            return {
                "candidates": [candidate],
                "usageMetadata": usage_final if final else usage_partial,
                "modelVersion": model,
                "responseId": response_id,
            }

        if not stream or rec.query.get("alt") != ["sse"]:
            parts = ([{"text": self.thinking, "thought": True}] if thinking else []) + [{"text": text}]
            whole = chunk(parts, final=True)
            h.send_json(200, whole if not stream else [whole])
            return
        frames = [Frame(sse(None, chunk([{"text": t, "thought": True}], final=False), eol="\r\n")) for t in thinking]
        frames += [
            Frame(sse(None, chunk([{"text": t}], final=i == len(tokens) - 1), eol="\r\n"), text=True)
            for i, t in enumerate(tokens)
        ]
        status = self.stream_error or "UNAVAILABLE"
        code = {"UNAVAILABLE": 503, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500}.get(status, 500)
        said = self.said(rec, "The model is overloaded. Please try again later.")
        error = {"error": {"code": code, "message": said, "status": status}}
        h.play(
            frames,
            error=sse(None, error, eol="\r\n"),
            malformed=b'data: {"candidates": [{"content": \r\n\r\n',
            content_type="text/event-stream",
        )


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server
