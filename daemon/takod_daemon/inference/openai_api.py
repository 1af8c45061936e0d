"""The OpenAI-compatible chat completions runner (OpenAI, OpenRouter, Groq, ...):
``POST {base}/chat/completions`` with ``"stream": true``, read as server-sent
events; plus :func:`list_models` (``GET {base}/models``) and :func:`embed`
(``POST {base}/embeddings``).

Stream: ``data: {chat.completion.chunk}`` events, text in
``choices[0].delta.content`` (``reasoning_content`` / ``reasoning``, sent by
DeepSeek, Groq, OpenRouter and others, is thinking), a last chunk with empty
``choices`` and the ``usage`` when ``stream_options.include_usage`` was asked
for, then ``data: [DONE]``. A ``data: {"error": {...}}`` event is a mid-stream
failure (OpenRouter sends an HTTP status as ``error.code``). A stream that ends
with neither ``[DONE]`` nor a ``finish_reason`` was cut off.

Pure pieces: :data:`BACKENDS` and :func:`backend_for_key` /
:func:`backend_for_url`, :func:`build_body`, :class:`ChatStream` (one
:class:`SSEEvent` at a time), :func:`completion_result` (a server that ignored
``stream`` and answered one JSON object), :func:`failure_from_body`.

Choices where the APIs leave room:

- Base URL: ``ctx.base_url``, else ``OPENAI_BASE_URL`` from the run's
  environment, else OpenAI's. :data:`BACKENDS` knows each service's quirks by
  its base URL (and by its key's environment variable, for the router to find
  the URL); an unknown base URL (vLLM, LM Studio, Ollama's ``/v1``) gets plain
  defaults and may go without a key.
- ``format: json`` is ``response_format: {"type": "json_object"}`` plus a system
  instruction (OpenAI refuses json_object unless the messages say "JSON").
- ``thinking``: ``reasoning_effort`` where the service takes it (OpenAI,
  Gemini's OpenAI endpoint), ``reasoning: {effort}`` on OpenRouter, nothing
  elsewhere; minimal and low are ``low``, xhigh is ``high`` (the values every
  reasoning model accepts).
- Optional parameters (``stream_options``, ``reasoning_effort``,
  ``reasoning``, ``temperature``) that a model or server rejects with a 400
  naming them are dropped and the request is sent once more: reasoning models
  take no ``temperature``, many servers no ``stream_options``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import httpx
import msgspec

from takod_daemon.inference.http_common import (
    MAX_EMBED_BODY,
    EmbedResult,
    failure_for_status,
    join_url,
    kind_for_status,
    kind_for_text,
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
from takod_daemon.peer_input import MAX_BODY, decode_json, fetch, read_body, read_capped

JSON_INSTRUCTION = "Answer with a single valid JSON object and nothing else: no prose, no code fences."
LIST_TIMEOUT = 15.0
EMBED_TIMEOUT = 120.0
OPTIONAL_PARAMS = ("stream_options", "reasoning_effort", "reasoning", "temperature")
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}

# --- backends -------------------------------------------------------------------


class OpenAIBackend(msgspec.Struct, frozen=True, kw_only=True):
    """One OpenAI-compatible service and its quirks."""

    name: str
    key_env: str | None
    base_url: str
    default_model: str | None = None
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    reasoning: Literal["reasoning_effort", "openrouter"] | None = None
    stream_usage: bool = True  # takes stream_options.include_usage
    needs_key: bool = True


def _b(name: str, key_env: str, base_url: str, default_model: str | None = None, **quirks: Any) -> OpenAIBackend:
    return OpenAIBackend(name=name, key_env=key_env, base_url=base_url, default_model=default_model, **quirks)


BACKENDS: tuple[OpenAIBackend, ...] = (
    _b(
        "openai",
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        "gpt-4.1-mini",
        max_tokens_field="max_completion_tokens",
        reasoning="reasoning_effort",
    ),
    _b("openrouter", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1", "openrouter/auto", reasoning="openrouter"),
    _b("groq", "GROQ_API_KEY", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile"),
    _b("xai", "XAI_API_KEY", "https://api.x.ai/v1"),
    _b("mistral", "MISTRAL_API_KEY", "https://api.mistral.ai/v1", "mistral-small-latest", stream_usage=False),
    _b("cerebras", "CEREBRAS_API_KEY", "https://api.cerebras.ai/v1"),
    _b("deepseek", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1", "deepseek-chat"),
    _b("fireworks", "FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1"),
    _b("together", "TOGETHER_API_KEY", "https://api.together.xyz/v1"),
    _b("vercel-ai-gateway", "AI_GATEWAY_API_KEY", "https://ai-gateway.vercel.sh/v1"),
    _b(
        "gemini",
        "GEMINI_API_KEY",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "gemini-2.5-flash",
        reasoning="reasoning_effort",
    ),
    _b("moonshot", "MOONSHOT_API_KEY", "https://api.moonshot.ai/v1"),
    _b("zai", "ZAI_API_KEY", "https://api.z.ai/api/paas/v4"),
    _b("venice", "VENICE_API_KEY", "https://api.venice.ai/api/v1"),
    _b("huggingface", "HF_TOKEN", "https://router.huggingface.co/v1"),
)
DEFAULT_BASE_URL = BACKENDS[0].base_url  # OpenAI's own


def backend_for_key(key_env: str) -> OpenAIBackend | None:
    """The service an API key's environment variable belongs to."""
    return next((b for b in BACKENDS if b.key_env == key_env), None)


def backend_for_url(base_url: str) -> OpenAIBackend:
    """The known service at ``base_url``, else a generic OpenAI-compatible server
    (no default model, no reasoning parameter, key optional)."""
    wanted = base_url.rstrip("/").lower()
    for backend in BACKENDS:
        if wanted == backend.base_url.lower():
            return backend
    return OpenAIBackend(name="openai-compatible", key_env=None, base_url=base_url.rstrip("/"), needs_key=False)


def resolve_base_url(ctx: RunContext) -> str:
    return (ctx.base_url or ctx.env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


# --- wire shapes ----------------------------------------------------------------


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = True


class ResponseFormat(msgspec.Struct, frozen=True):
    type: str = "json_object"


class ReasoningConfig(msgspec.Struct, frozen=True):
    effort: str


class ChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    model: str
    messages: list[ChatMessage]
    stream: bool
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    reasoning: ReasoningConfig | None = None


class ApiError(msgspec.Struct, frozen=True):
    message: str = ""
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """``{"error": {...}}``; some servers send ``{"error": "text"}`` or a bare
    ``{"message": ...}``."""

    error: ApiError | str | None = None
    message: str | None = None

    def as_error(self) -> ApiError:
        if isinstance(self.error, ApiError):
            return self.error
        return ApiError(message=self.error or self.message or "")


class ChunkDelta(msgspec.Struct, frozen=True):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None


class ChunkChoice(msgspec.Struct, frozen=True):
    index: int = 0
    delta: ChunkDelta = ChunkDelta()
    finish_reason: str | None = None


class ApiUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatChunk(msgspec.Struct, frozen=True):
    """One ``chat.completion.chunk`` (or an error event)."""

    model: str | None = None
    choices: list[ChunkChoice] = []
    usage: ApiUsage | None = None
    error: ApiError | None = None


class CompletionMessage(msgspec.Struct, frozen=True):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None


class CompletionChoice(msgspec.Struct, frozen=True):
    message: CompletionMessage = CompletionMessage()
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, frozen=True):
    """A whole ``chat.completion`` (a server that did not stream)."""

    choices: list[CompletionChoice]
    model: str | None = None
    usage: ApiUsage | None = None


class OpenAIModel(msgspec.Struct, frozen=True):
    id: str
    owned_by: str | None = None
    created: int | None = None


class ModelList(msgspec.Struct, frozen=True):
    data: list[OpenAIModel]


class EmbeddingsRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    model: str
    input: list[str]
    encoding_format: Literal["float"]  # always sent: some servers default to base64
    dimensions: int | None = None


class EmbeddingItem(msgspec.Struct, frozen=True):
    embedding: list[float]
    index: int = 0


class EmbeddingsReply(msgspec.Struct, frozen=True):
    data: list[EmbeddingItem]
    model: str = ""
    usage: ApiUsage | None = None


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request ready to send; ``headers`` hold the key: never log them."""

    url: str
    headers: dict[str, str]
    body: ChatRequest

    def __repr__(self) -> str:
        return f"HttpRequest(url={self.url!r}, model={self.body.model!r})"


# --- pure pieces ----------------------------------------------------------------


def build_body(req: InferRequest, backend: OpenAIBackend, *, drop: Iterable[str] = ()) -> ChatRequest:
    """The chat completions body for ``req`` on ``backend``, without the
    optional parameters named in ``drop``."""
    dropped = set(drop)
    model = req.model or backend.default_model
    if not model:
        raise ProviderFailure("model", f"no model given and {backend.name} at {backend.base_url} has no default")
    system = [req.system] if req.system else []
    if req.format == "json":
        system.append(JSON_INSTRUCTION)
    messages = [ChatMessage("system", "\n\n".join(system))] if system else []
    messages += [ChatMessage(m.role, m.content) for m in req.messages]
    effort = EFFORTS.get((req.thinking or "").strip().lower())
    return ChatRequest(
        model=model,
        messages=messages,
        stream=True,
        stream_options=StreamOptions() if backend.stream_usage and "stream_options" not in dropped else None,
        temperature=req.temperature if "temperature" not in dropped else None,
        max_tokens=req.max_tokens if backend.max_tokens_field == "max_tokens" else None,
        max_completion_tokens=req.max_tokens if backend.max_tokens_field == "max_completion_tokens" else None,
        response_format=ResponseFormat() if req.format == "json" else None,
        reasoning_effort=effort
        if effort and backend.reasoning == "reasoning_effort" and "reasoning_effort" not in dropped
        else None,
        reasoning=ReasoningConfig(effort)
        if effort and backend.reasoning == "openrouter" and "reasoning" not in dropped
        else None,
    )


def headers_for(api_key: str | None, *, stream: bool = True) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if stream:
        headers["Accept"] = "text/event-stream"
    return headers


def _check_key(ctx: RunContext, backend: OpenAIBackend) -> None:
    if backend.needs_key and not ctx.api_key:
        raise ProviderFailure("auth", f"no API key for {backend.name} (set {backend.key_env} with `takod key set`)")


def build_request(req: InferRequest, ctx: RunContext, *, drop: Iterable[str] = ()) -> HttpRequest:
    base = resolve_base_url(ctx)
    backend = backend_for_url(base)
    _check_key(ctx, backend)
    return HttpRequest(
        url=join_url(base, "chat/completions"),
        headers=headers_for(ctx.api_key),
        body=build_body(req, backend, drop=drop),
    )


ERROR_KINDS: dict[str, FailureKind] = {
    "invalid_api_key": "auth",
    "invalid_authentication": "auth",
    "authentication_error": "auth",
    "permission_denied": "auth",
    "insufficient_quota": "rate_limit",
    "rate_limit_exceeded": "rate_limit",
    "requests": "rate_limit",
    "tokens": "rate_limit",
    "model_not_found": "model",
    "server_error": "unavailable",
    "service_unavailable": "unavailable",
    "overloaded": "unavailable",
    "context_length_exceeded": "bad_request",
}


def kind_for_error(error: ApiError, status: int | None = None) -> FailureKind:
    """The failure kind of an OpenAI-style error object."""
    for word in (error.code, error.type):
        if isinstance(word, str) and word in ERROR_KINDS:
            return ERROR_KINDS[word]
    if isinstance(error.code, int) and 400 <= error.code < 600:
        return kind_for_status(error.code, error.message)  # OpenRouter: the status as the code
    if status is not None:
        return kind_for_status(status, error.message)
    return kind_for_text(error.message)


def _error_text(error: ApiError) -> str:
    label = error.code if isinstance(error.code, str) and error.code else error.type
    return f"{label}: {error.message}" if label else error.message


def decode_error(body: bytes) -> ApiError:
    try:
        return decode_json(body, ErrorBody).as_error()
    except msgspec.DecodeError:
        return ApiError(message=body.decode("utf-8", "replace"))


def failure_from_body(
    where: str, status: int, body: bytes, headers: httpx.Headers | None = None, secrets: Iterable[str | None] = ()
) -> ProviderFailure:
    """A failure for an HTTP error answer of an OpenAI-compatible API."""
    error = decode_error(body)
    return failure_for_status(
        where,
        status,
        _error_text(error),
        retry_after=parse_retry_after(headers or httpx.Headers()),
        secrets=secrets,
        kind=kind_for_error(error, status),
    )


def rejected_params(status: int, body: bytes, sent: ChatRequest) -> set[str]:
    """The optional parameters a 400 answer names, among those ``sent`` carries."""
    if status not in (400, 422):
        return set()
    error = decode_error(body)
    text = f"{error.param or ''} {error.message}".lower()
    return {name for name in OPTIONAL_PARAMS if getattr(sent, name) is not None and name in text}


_chunk_decoder = msgspec.json.Decoder(ChatChunk)


class ChatStream:
    """Consumes chat completion chunks; see the module docstring."""

    def __init__(self, where: str = "openai", secrets: Iterable[str | None] = ()) -> None:
        self.where = where
        self.secrets = tuple(secrets)
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.model: str | None = None
        self.usage: ApiUsage | None = None
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, sse: SSEEvent) -> list[Chunk]:
        """The chunks one event carries; raises for an error event or data that
        is not JSON."""
        data = sse.data.strip()
        if data == "[DONE]":
            self.done = True
            return []
        if self.done or not data:
            return []
        try:
            chunk = decode_json(data, _chunk_decoder)
        except msgspec.DecodeError as exc:
            raise unreadable(self.where, "a stream event", exc) from None
        if chunk.error is not None:
            said = scrub(_error_text(chunk.error), self.secrets)
            raise ProviderFailure(kind_for_error(chunk.error), f"{self.where} failed mid-answer: {said}")
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        out: list[Chunk] = []
        for choice in chunk.choices[:1]:  # n=1: only the first choice exists
            delta = choice.delta
            thinking = delta.reasoning_content or delta.reasoning
            if thinking:
                self.thinking.append(thinking)
                out.append(Chunk("thinking", thinking))
            for text in (delta.content, delta.refusal):
                if text:
                    self.text.append(text)
                    out.append(Chunk("text", text))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def result(self) -> RunResult:
        if not self.done and self.finish_reason is None:
            raise ProviderFailure("unavailable", f"{self.where} ended the stream before finishing the answer")
        text, thinking = "".join(self.text), "".join(self.thinking)
        return _result(self.where, text, thinking, self.model, self.usage, self.finish_reason)


def _result(
    where: str, text: str, thinking: str, model: str | None, usage: ApiUsage | None, finish: str | None
) -> RunResult:
    if not text:
        reason = f" (finish_reason {finish})" if finish else ""
        raise ProviderFailure("empty", f"{where} finished without any text{reason}")
    return RunResult(
        text=text,
        model=model,
        usage=Usage(
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
        ),
        stop_reason=finish,
        thinking=thinking or None,
    )


def completion_result(where: str, body: bytes) -> tuple[RunResult, list[Chunk]]:
    """A whole ``chat.completion`` (a server that ignored ``stream``): the
    result and the chunks to emit for it."""
    try:
        completion = decode_json(body, ChatCompletion)
    except msgspec.DecodeError as exc:
        try:  # a 200 that carries an error object; anything else is not read as text (it is no error message)
            error = decode_json(body, ErrorBody).as_error()
        except msgspec.DecodeError:
            raise unreadable(where, "a completion", exc) from None
        if error.message:
            raise ProviderFailure(kind_for_error(error), f"{where} failed: {scrub(_error_text(error))}") from None
        raise unreadable(where, "a completion", exc) from None
    if not completion.choices:
        raise ProviderFailure("empty", f"{where} answered no choices")
    choice = completion.choices[0]
    text = (choice.message.content or "") + (choice.message.refusal or "")
    thinking = choice.message.reasoning_content or choice.message.reasoning or ""
    result = _result(where, text, thinking, completion.model, completion.usage, choice.finish_reason)
    chunks = ([Chunk("thinking", thinking)] if thinking else []) + [Chunk("text", text)]
    return result, chunks


# --- the edge -------------------------------------------------------------------


def _where(base: str) -> str:
    return f"{backend_for_url(base).name} at {base}"


async def run(req: InferRequest, ctx: RunContext, emit: Emit, http: httpx.AsyncClient) -> RunResult:
    """Stream ``req`` through ``{base}/chat/completions``; see the module docstring."""
    where = _where(resolve_base_url(ctx))
    secrets = (ctx.api_key,)
    request = build_request(req, ctx)
    emit = cap_answer(emit, where)

    async def body() -> RunResult:
        dropped: set[str] = set()
        current = request
        while True:
            async with http.stream(
                "POST",
                current.url,
                content=msgspec.json.encode(current.body),
                headers=current.headers,
                timeout=request_timeout(req.timeout),
            ) as response:
                if response.status_code != 200:
                    error = await read_body(response)
                    rejected = rejected_params(response.status_code, error, current.body) - dropped
                    if rejected:
                        dropped |= rejected
                        current = build_request(req, ctx, drop=dropped)
                        continue
                    raise failure_from_body(where, response.status_code, error, response.headers, secrets)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # Cut short, a completion would read as "not JSON"; too large is said as such.
                    result, chunks = completion_result(where, await read_capped(response, MAX_BODY))
                    for chunk in chunks:
                        await emit(chunk)
                    return result
                stream = ChatStream(where, secrets)
                parser = SSEParser()
                async for text in response.aiter_text():
                    for event in parser.feed(text):
                        for chunk in stream.feed(event):
                            await emit(chunk)
                return stream.result()

    return await run_guarded(body, timeout=req.timeout, where=where, secrets=secrets)


async def list_models(ctx: RunContext, http: httpx.AsyncClient, *, timeout: float = LIST_TIMEOUT) -> list[OpenAIModel]:
    """The models the service lists (``GET {base}/models``)."""
    base = resolve_base_url(ctx)
    where = _where(base)
    secrets = (ctx.api_key,)
    _check_key(ctx, backend_for_url(base))

    async def body() -> list[OpenAIModel]:
        response = await fetch(
            http, "GET", join_url(base, "models"), headers=headers_for(ctx.api_key, stream=False),
            timeout=request_timeout(timeout),
        )
        if response.status_code != 200:
            raise failure_from_body(where, response.status_code, response.content, response.headers, secrets)
        try:
            return decode_json(response.content, ModelList).data
        except msgspec.DecodeError as exc:
            raise unreadable(where, "a model list", exc) from None

    return await run_guarded(body, timeout=timeout, where=where, secrets=secrets)


async def embed(
    texts: Sequence[str],
    model: str,
    ctx: RunContext,
    http: httpx.AsyncClient,
    *,
    timeout: float = EMBED_TIMEOUT,
    dimensions: int | None = None,
) -> EmbedResult:
    """One vector per text from ``POST {base}/embeddings`` on exactly ``model``."""
    base = resolve_base_url(ctx)
    where = _where(base)
    secrets = (ctx.api_key,)
    _check_key(ctx, backend_for_url(base))
    payload = EmbeddingsRequest(model=model, input=list(texts), encoding_format="float", dimensions=dimensions)
    if not payload.input:
        return EmbedResult(model=model, vectors=[])

    async def body() -> EmbedResult:
        response = await fetch(
            http,
            "POST",
            join_url(base, "embeddings"),
            limit=MAX_EMBED_BODY,
            content=msgspec.json.encode(payload),
            headers=headers_for(ctx.api_key, stream=False),
            timeout=request_timeout(timeout),
        )
        if response.status_code != 200:
            raise failure_from_body(where, response.status_code, response.content, response.headers, secrets)
        try:
            reply = decode_json(response.content, EmbeddingsReply)
        except msgspec.DecodeError as exc:
            raise unreadable(where, "embeddings", exc) from None
        items = sorted(reply.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(len(payload.input))):
            raise ProviderFailure("crashed", f"{where} returned {len(items)} vectors for {len(payload.input)} texts")
        return EmbedResult(
            model=reply.model or model,
            vectors=[item.embedding for item in items],
            input_tokens=reply.usage.prompt_tokens if reply.usage else None,
        )

    return await run_guarded(body, timeout=timeout, where=where, secrets=secrets)
