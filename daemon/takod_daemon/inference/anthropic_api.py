"""The Anthropic Messages API runner: ``POST {base}/v1/messages`` with
``"stream": true``, read as server-sent events.

Events (``type`` in each ``data`` object): ``message_start`` (model, input
tokens), ``content_block_start``, ``content_block_delta`` with ``text_delta``
or ``thinking_delta`` (``signature_delta`` and tool deltas are ignored),
``content_block_stop``, ``message_delta`` (``stop_reason`` and cumulative
``usage``), ``message_stop``, ``ping``, and ``error`` (``{"error": {"type",
"message"}}``, classified by its type). Unknown events are ignored, as the API
asks of clients. A stream that ends before ``message_stop`` was cut off.

Pure pieces: :func:`build_request` (URL, headers, body), :class:`MessagesStream`
(one :class:`SSEEvent` at a time), :func:`failure_from_body`.

Choices where the API leaves room:

- ``format: json`` is a system instruction (the Messages API has no JSON mode).
- ``system`` messages inside ``messages`` join the top-level ``system`` (the API
  takes only ``user`` and ``assistant`` turns); consecutive turns of one role
  are merged.
- ``thinking`` levels are budgets: minimal 1024, low 2048, medium 8192, high
  16000, xhigh 24000 tokens (1024 is the API's minimum). ``max_tokens`` must
  exceed the budget: unset, it is the budget + 4096; set, the budget shrinks to
  fit and thinking is dropped if under 1024. ``temperature`` is left out with
  thinking (the API accepts only 1 then).
- Authentication is ``x-api-key`` only: subscription OAuth tokens belong to
  Claude Code, which takod runs as a CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import httpx
import msgspec

from takod_daemon.inference.http_common import (
    failure_for_status,
    join_url,
    kind_for_status,
    parse_retry_after,
    request_timeout,
    run_guarded,
    scrub,
    unreadable,
)
from takod_daemon.inference.sse import SSEEvent, SSEParser
from takod_daemon.inference.types import (
    Chunk,
    Emit,
    FailureKind,
    InferRequest,
    ProviderFailure,
    RunContext,
    RunResult,
    Usage,
    cap_answer,
)
from takod_daemon.peer_input import decode_json, fetch, read_body

DEFAULT_BASE_URL = "https://api.anthropic.com"
KEY_ENV = "ANTHROPIC_API_KEY"
API_VERSION = "2023-06-01"
DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_MAX_TOKENS = 8192
THINKING_HEADROOM = 4096  # output tokens left for the answer after a thinking budget
MIN_THINKING_BUDGET = 1024
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16000, "xhigh": 24000}
JSON_INSTRUCTION = (
    "Answer with a single valid JSON value and nothing else: no prose before or after it, no code fences."
)
LIST_TIMEOUT = 15.0

# --- wire shapes ----------------------------------------------------------------


class AnthropicMessage(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str


class AnthropicThinking(msgspec.Struct, frozen=True):
    budget_tokens: int
    type: Literal["enabled"] = "enabled"


class MessagesRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    model: str
    max_tokens: int
    messages: list[AnthropicMessage]
    stream: bool
    system: str | None = None
    temperature: float | None = None
    thinking: AnthropicThinking | None = None


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request ready to send; ``headers`` hold the key: never log them."""

    url: str
    headers: dict[str, str]
    body: MessagesRequest

    def __repr__(self) -> str:  # the key must not reach a log through a repr
        return f"HttpRequest(url={self.url!r}, model={self.body.model!r})"


class ApiError(msgspec.Struct, frozen=True):
    type: str = ""
    message: str = ""


class ErrorBody(msgspec.Struct, frozen=True):
    """``{"type": "error", "error": {...}}``: an HTTP error body and the ``error`` event."""

    error: ApiError = ApiError()


class ApiUsage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None


class StartedMessage(msgspec.Struct, frozen=True):
    model: str | None = None
    usage: ApiUsage = ApiUsage()


class ContentBlock(msgspec.Struct, frozen=True):
    type: str = ""
    text: str | None = None
    thinking: str | None = None


class Delta(msgspec.Struct, frozen=True):
    """A ``content_block_delta``'s or ``message_delta``'s ``delta``."""

    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    stop_reason: str | None = None


class StreamEvent(msgspec.Struct, frozen=True):
    """Every field any event type carries; each type fills its own."""

    type: str
    message: StartedMessage | None = None
    content_block: ContentBlock | None = None
    delta: Delta | None = None
    usage: ApiUsage | None = None
    error: ApiError | None = None


class AnthropicModel(msgspec.Struct, frozen=True):
    id: str
    display_name: str | None = None
    created_at: str | None = None
    type: str = "model"


class ModelPage(msgspec.Struct, frozen=True):
    data: list[AnthropicModel]
    has_more: bool = False
    last_id: str | None = None


# --- pure pieces ----------------------------------------------------------------


def messages_url(base_url: str | None) -> str:
    """``{base}/v1/messages``; a base that already ends in ``/v1`` is not doubled."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return join_url(base, "messages" if base.endswith("/v1") else "v1/messages")


def _merge_turns(req: InferRequest) -> list[AnthropicMessage]:
    merged: list[AnthropicMessage] = []
    for message in req.messages:
        if message.role == "system":
            continue
        if merged and merged[-1].role == message.role:
            merged[-1] = AnthropicMessage(message.role, merged[-1].content + "\n\n" + message.content)
        else:
            merged.append(AnthropicMessage(message.role, message.content))
    return merged


def _system_text(req: InferRequest) -> str | None:
    parts = [req.system] if req.system else []
    parts += [m.content for m in req.messages if m.role == "system" and m.content]
    if req.format == "json":
        parts.append(JSON_INSTRUCTION)
    return "\n\n".join(parts) or None


def _thinking_plan(req: InferRequest) -> tuple[int, AnthropicThinking | None]:
    """``max_tokens`` and the thinking block for ``req``."""
    level = (req.thinking or "off").strip().lower()
    budget = THINKING_BUDGETS.get(level)
    if budget is None:
        return req.max_tokens or DEFAULT_MAX_TOKENS, None
    if req.max_tokens is None:
        return budget + THINKING_HEADROOM, AnthropicThinking(budget)
    budget = min(budget, req.max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return req.max_tokens, None
    return req.max_tokens, AnthropicThinking(budget)


def build_body(req: InferRequest) -> MessagesRequest:
    """The Messages API body for ``req``; see the module docstring for the mapping."""
    messages = _merge_turns(req)
    if not messages:
        raise ProviderFailure("bad_request", "nothing to send: the request has no user or assistant turn")
    max_tokens, thinking = _thinking_plan(req)
    return MessagesRequest(
        model=req.model or DEFAULT_MODEL,
        max_tokens=max_tokens,
        messages=messages,
        stream=True,
        system=_system_text(req),
        temperature=None if thinking else req.temperature,
        thinking=thinking,
    )


def headers_for(api_key: str, *, stream: bool = True) -> dict[str, str]:
    headers = {"x-api-key": api_key, "anthropic-version": API_VERSION, "content-type": "application/json"}
    if stream:
        headers["accept"] = "text/event-stream"
    return headers


def build_request(req: InferRequest, ctx: RunContext) -> HttpRequest:
    """URL, headers and body for ``req``; ``auth`` failure without a key."""
    if not ctx.api_key:
        raise ProviderFailure("auth", f"no Anthropic API key (set {KEY_ENV} with `takod key set`)")
    return HttpRequest(url=messages_url(ctx.base_url), headers=headers_for(ctx.api_key), body=build_body(req))


ERROR_KINDS: dict[str, FailureKind] = {
    "invalid_request_error": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "not_found_error": "model",
    "request_too_large": "bad_request",
    "rate_limit_error": "rate_limit",
    "billing_error": "rate_limit",
    "api_error": "unavailable",
    "overloaded_error": "unavailable",
    "timeout_error": "timeout",
}


def kind_for_error(error: ApiError, status: int | None = None) -> FailureKind:
    """The failure kind of an Anthropic error object (HTTP status as a fallback)."""
    kind = ERROR_KINDS.get(error.type)
    if kind == "model" and "model" not in error.message.lower() and status is not None:
        return kind_for_status(status, error.message)  # a 404 for a path, not a model
    if kind == "bad_request" and status is not None:
        return kind_for_status(status, error.message)  # refines "model: x not found" etc.
    if kind is not None:
        return kind
    return kind_for_status(status, error.message) if status is not None else "unavailable"


def failure_from_body(
    where: str, status: int, body: bytes, headers: httpx.Headers | None = None, secrets: Iterable[str | None] = ()
) -> ProviderFailure:
    """A failure for an HTTP error answer of the Messages API."""
    try:
        error = decode_json(body, ErrorBody).error
    except msgspec.DecodeError:
        error = ApiError(message=body.decode("utf-8", "replace"))
    message = f"{error.type}: {error.message}" if error.type else error.message
    return failure_for_status(
        where,
        status,
        message,
        retry_after=parse_retry_after(headers or httpx.Headers()),
        secrets=secrets,
        kind=kind_for_error(error, status),
    )


_event_decoder = msgspec.json.Decoder(StreamEvent)


class MessagesStream:
    """Consumes the Messages API's events; see the module docstring."""

    def __init__(self, where: str = "anthropic", secrets: Iterable[str | None] = ()) -> None:
        self.where = where
        self.secrets = tuple(secrets)
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.done = False

    def feed(self, sse: SSEEvent) -> list[Chunk]:
        """The chunks one event carries; raises for an ``error`` event or an
        event that is not JSON."""
        try:
            event = decode_json(sse.data, _event_decoder)
        except msgspec.DecodeError as exc:
            raise unreadable(self.where, "a stream event", exc) from None
        kind = event.type
        if kind == "error":
            error = event.error or ApiError()
            said = scrub(f"{error.type}: {error.message}", self.secrets)
            raise ProviderFailure(kind_for_error(error), f"{self.where} failed mid-answer: {said}")
        if self.done:
            return []
        if kind == "message_start" and event.message is not None:
            self.model = event.message.model
            self.input_tokens = event.message.usage.input_tokens
            self.output_tokens = event.message.usage.output_tokens
        elif kind == "content_block_start" and event.content_block is not None:
            block = event.content_block
            return self._piece("text", block.text) if block.type == "text" else self._piece("thinking", block.thinking)
        elif kind == "content_block_delta" and event.delta is not None:
            if event.delta.type == "text_delta":
                return self._piece("text", event.delta.text)
            if event.delta.type == "thinking_delta":
                return self._piece("thinking", event.delta.thinking)
        elif kind == "message_delta":
            if event.delta is not None and event.delta.stop_reason is not None:
                self.stop_reason = event.delta.stop_reason
            if event.usage is not None:
                self.output_tokens = event.usage.output_tokens or self.output_tokens
                self.input_tokens = event.usage.input_tokens or self.input_tokens
        elif kind == "message_stop":
            self.done = True
        return []

    def _piece(self, kind: Literal["text", "thinking"], text: str | None) -> list[Chunk]:
        if not text:
            return []
        (self.text if kind == "text" else self.thinking).append(text)
        return [Chunk(kind, text)]

    def result(self) -> RunResult:
        if not self.done:
            raise ProviderFailure("unavailable", f"{self.where} ended the stream before message_stop")
        text = "".join(self.text)
        if not text:
            reason = f" (stop_reason {self.stop_reason})" if self.stop_reason else ""
            raise ProviderFailure("empty", f"{self.where} finished without any text{reason}")
        return RunResult(
            text=text,
            model=self.model,
            usage=Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens),
            stop_reason=self.stop_reason,
            thinking="".join(self.thinking) or None,
        )


# --- the edge -------------------------------------------------------------------


def _where(ctx: RunContext) -> str:
    return f"anthropic at {(ctx.base_url or DEFAULT_BASE_URL).rstrip('/')}"


async def run(req: InferRequest, ctx: RunContext, emit: Emit, http: httpx.AsyncClient) -> RunResult:
    """Stream ``req`` through the Messages API; see the module docstring."""
    where = _where(ctx)
    secrets = (ctx.api_key,)
    request = build_request(req, ctx)
    emit = cap_answer(emit, where)

    async def body() -> RunResult:
        async with http.stream(
            "POST",
            request.url,
            content=msgspec.json.encode(request.body),
            headers=request.headers,
            timeout=request_timeout(req.timeout),
        ) as response:
            if response.status_code != 200:
                error = await read_body(response)
                raise failure_from_body(where, response.status_code, error, response.headers, secrets)
            stream = MessagesStream(where, secrets)
            parser = SSEParser()
            async for text in response.aiter_text():
                for event in parser.feed(text):
                    for chunk in stream.feed(event):
                        await emit(chunk)
            return stream.result()

    return await run_guarded(body, timeout=req.timeout, where=where, secrets=secrets)


async def list_models(
    ctx: RunContext, http: httpx.AsyncClient, *, timeout: float = LIST_TIMEOUT
) -> list[AnthropicModel]:
    """The models this key may use (``GET /v1/models``, every page)."""
    where = _where(ctx)
    secrets = (ctx.api_key,)
    if not ctx.api_key:
        raise ProviderFailure("auth", "no Anthropic API key")
    url = join_url(messages_url(ctx.base_url).rpartition("/")[0], "models")
    headers = headers_for(ctx.api_key, stream=False)

    async def body() -> list[AnthropicModel]:
        models: list[AnthropicModel] = []
        params: dict[str, str | int] = {"limit": 1000}
        for _ in range(20):  # bounded: a server that always says has_more cannot loop us forever
            response = await fetch(http, "GET", url, params=params, headers=headers, timeout=request_timeout(timeout))
            if response.status_code != 200:
                raise failure_from_body(where, response.status_code, response.content, response.headers, secrets)
            try:
                page = decode_json(response.content, ModelPage)
            except msgspec.DecodeError as exc:
                raise unreadable(where, "a model list", exc) from None
            models += page.data
            if not page.has_more or not page.last_id:
                break
            params["after_id"] = page.last_id
        return models

    return await run_guarded(body, timeout=timeout, where=where, secrets=secrets)
