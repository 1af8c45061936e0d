"""The Ollama runner: ``POST /api/chat`` streamed as NDJSON (providers.md D3-D6),
plus :func:`embed` (``POST /api/embed``) and :func:`list_models` (``GET /api/tags``).

Pure pieces, testable without a socket: :func:`build_chat_request` turns an
:class:`InferRequest` into Ollama's body; :class:`ChatStream` consumes the
NDJSON lines one at a time, yielding :class:`Chunk`\\ s and raising
:class:`ProviderFailure` for an ``{"error": ...}`` line or a line that is not
Ollama's; :func:`failure_from_body` classifies an error answer.

Choices where the API leaves room:

- ``thinking`` maps to ``think``: ``off`` is ``false``, every level is
  ``true``. Named levels (``"low"``...) are only understood by some models and
  some Ollama versions answer 400 for them elsewhere; on/off works everywhere.
  A model without the thinking capability answers 400 "does not support
  thinking" even to ``think:true``: the runner then retries once without
  ``think`` (thinking is a preference, not a requirement).
- No model in the request (the engine names the one readiness reports,
  ``resolve/ollama.py``; this is for direct callers): ``OLLAMA_MODEL`` from the
  run's environment, else ``OLLAMA_DEFAULT_MODEL``, else the first listed model
  that can chat, as readiness chooses it.
- The final ``done:true`` line carries the metrics; :class:`OllamaRunResult`
  (a :class:`RunResult`) keeps them, durations in nanoseconds as Ollama sends
  them. A stream that ends without that line was cut off: ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import httpx
import msgspec

from takod_daemon.inference.http_common import (
    MAX_EMBED_BODY,
    EmbedResult,
    failure_for_status,
    kind_for_text,
    parse_retry_after,
    request_timeout,
    run_guarded,
    scrub,
    unreadable,
)
from takod_daemon.inference.types import (
    Chunk,
    Emit,
    InferRequest,
    ProviderFailure,
    RunContext,
    RunResult,
    Usage,
    cap_answer,
)
from takod_daemon.peer_input import aiter_lines, decode_json, fetch, read_body
from takod_daemon.providers.ollama_probe import OllamaModel, choose_model, resolve_endpoint

LIST_TIMEOUT = 10.0
EMBED_TIMEOUT = 120.0

# --- wire shapes ----------------------------------------------------------------


class OllamaMessage(msgspec.Struct, frozen=True):
    role: str
    content: str


class OllamaOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """The Modelfile parameters takod sets; everything else stays the model's."""

    temperature: float | None = None
    num_predict: int | None = None


class OllamaChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    model: str
    messages: list[OllamaMessage]
    stream: bool  # no default: always sent (Ollama's default is true, say so anyway)
    format: Literal["json"] | None = None
    options: OllamaOptions | None = None
    think: bool | None = None


class OllamaChunkMessage(msgspec.Struct, frozen=True):
    role: str = "assistant"
    content: str = ""
    thinking: str | None = None


class OllamaMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """The final chunk's metrics; durations are nanoseconds (0 when Ollama omits them)."""

    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0

    @property
    def tokens_per_second(self) -> float | None:
        if not self.eval_count or not self.eval_duration:
            return None
        return self.eval_count / self.eval_duration * 1e9


class OllamaChatChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One NDJSON line of ``/api/chat`` (an ``error`` line has only ``error``)."""

    model: str | None = None
    message: OllamaChunkMessage | None = None
    done: bool = False
    done_reason: str | None = None
    error: str | None = None
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0


class OllamaRunResult(RunResult, frozen=True, kw_only=True):
    """A :class:`RunResult` that also carries Ollama's timing metrics."""

    metrics: OllamaMetrics | None = None


class OllamaError(msgspec.Struct, frozen=True):
    error: str = ""


class OllamaEmbedRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    model: str
    input: list[str]
    truncate: bool | None = None
    dimensions: int | None = None


class OllamaEmbedReply(msgspec.Struct, frozen=True):
    embeddings: list[list[float]]
    model: str = ""
    prompt_eval_count: int | None = None


class OllamaTags(msgspec.Struct, frozen=True):
    models: list[OllamaModel] | None = None  # a nil Go slice encodes as null


# --- pure pieces ----------------------------------------------------------------


def think_value(thinking: str | None) -> bool | None:
    """``InferRequest.thinking`` as Ollama's ``think``: None leaves it unsent."""
    if thinking is None:
        return None
    return thinking.strip().lower() not in ("off", "none", "false", "")


def build_chat_request(req: InferRequest, model: str, *, think: bool = True) -> OllamaChatRequest:
    """The ``/api/chat`` body for ``req`` on ``model``; ``think=False`` leaves
    ``think`` out whatever the request asks (the retry for models without it)."""
    messages = [OllamaMessage("system", req.system)] if req.system else []
    messages += [OllamaMessage(m.role, m.content) for m in req.messages]
    options = OllamaOptions(temperature=req.temperature, num_predict=req.max_tokens)
    return OllamaChatRequest(
        model=model,
        messages=messages,
        stream=True,
        format="json" if req.format == "json" else None,
        options=options if options != OllamaOptions() else None,
        think=think_value(req.thinking) if think else None,
    )


_chunk_decoder = msgspec.json.Decoder(OllamaChatChunk)


class ChatStream:
    """Consumes ``/api/chat`` NDJSON lines; see the module docstring."""

    def __init__(self, where: str = "ollama") -> None:
        self.where = where
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.final: OllamaChatChunk | None = None
        self.model: str | None = None

    def feed(self, line: str | bytes) -> list[Chunk]:
        """The chunks one line carries; raises :class:`ProviderFailure` for an
        error line or a line that is not Ollama's."""
        if not line.strip():
            return []
        try:
            chunk = decode_json(line, _chunk_decoder)
        except msgspec.DecodeError as exc:
            raise unreadable(self.where, "a stream line", exc) from None
        if chunk.error is not None:
            said = scrub(chunk.error)
            raise ProviderFailure(kind_for_text(chunk.error), f"{self.where} failed mid-answer: {said}")
        if self.final is not None:
            raise ProviderFailure("crashed", f"{self.where} sent more after its final line")
        self.model = chunk.model or self.model
        out: list[Chunk] = []
        if chunk.message is not None:
            if chunk.message.thinking:
                self.thinking.append(chunk.message.thinking)
                out.append(Chunk("thinking", chunk.message.thinking))
            if chunk.message.content:
                self.text.append(chunk.message.content)
                out.append(Chunk("text", chunk.message.content))
        if chunk.done:
            self.final = chunk
        return out

    def result(self) -> OllamaRunResult:
        """The run's result once the stream ended; raises if it was cut off or empty."""
        final = self.final
        if final is None:
            raise ProviderFailure("unavailable", f"{self.where} ended the stream before its final line")
        text = "".join(self.text)
        if not text:
            raise ProviderFailure("empty", f"{self.where} finished without any text")
        metrics = OllamaMetrics(
            total_duration=final.total_duration,
            load_duration=final.load_duration,
            prompt_eval_count=final.prompt_eval_count,
            prompt_eval_duration=final.prompt_eval_duration,
            eval_count=final.eval_count,
            eval_duration=final.eval_duration,
        )
        return OllamaRunResult(
            text=text,
            model=self.model,
            usage=Usage(
                input_tokens=final.prompt_eval_count or None,
                output_tokens=final.eval_count or None,
            ),
            stop_reason=final.done_reason,
            thinking="".join(self.thinking) or None,
            metrics=metrics,
        )


def error_text(body: bytes) -> str:
    """What an Ollama error body says (``{"error": "..."}``, else the raw text)."""
    try:
        said = decode_json(body, OllamaError).error
    except msgspec.DecodeError:
        said = ""
    return said or body.decode("utf-8", "replace").strip()


def failure_from_body(where: str, status: int, body: bytes, headers: httpx.Headers | None = None) -> ProviderFailure:
    """A failure for an Ollama error answer (``Retry-After`` honoured for a 429)."""
    return failure_for_status(
        where, status, error_text(body), retry_after=parse_retry_after(headers or httpx.Headers())
    )


def _refuses_think(status: int, body: bytes) -> bool:
    text = error_text(body).lower()
    return status == 400 and ("does not support thinking" in text or "think value" in text)


# --- the edge -------------------------------------------------------------------


def base_url(ctx: RunContext) -> str:
    """``ctx.base_url``, else ``OLLAMA_HOST`` from the run's environment parsed as Ollama does."""
    if ctx.base_url:
        return ctx.base_url.rstrip("/")
    return resolve_endpoint(None, ctx.env)[0].url


async def run(req: InferRequest, ctx: RunContext, emit: Emit, http: httpx.AsyncClient) -> RunResult:
    """Stream ``req`` through Ollama's ``/api/chat``; see the module docstring."""
    url = base_url(ctx)
    where = f"ollama at {url}"
    emit = cap_answer(emit, where)

    async def body() -> RunResult:
        model = req.model or await _default_model(http, url, ctx, where)
        think_allowed = True
        while True:
            payload = msgspec.json.encode(build_chat_request(req, model, think=think_allowed))
            async with http.stream(
                "POST",
                url + "/api/chat",
                content=payload,
                headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"},
                timeout=request_timeout(req.timeout),
            ) as response:
                if response.status_code != 200:
                    error = await read_body(response)
                    if think_allowed and req.thinking is not None and _refuses_think(response.status_code, error):
                        think_allowed = False
                        continue
                    raise failure_from_body(where, response.status_code, error, response.headers)
                stream = ChatStream(where)
                async for line in aiter_lines(response):
                    for chunk in stream.feed(line):
                        await emit(chunk)
                return stream.result()

    return await run_guarded(body, timeout=req.timeout, where=where)


async def _default_model(http: httpx.AsyncClient, url: str, ctx: RunContext, where: str) -> str:
    models = await _tags(http, url, where, LIST_TIMEOUT)
    choice = choose_model(models, settings_model=None, env_model=ctx.env.get("OLLAMA_MODEL"),
                          default_model=ctx.env.get("OLLAMA_DEFAULT_MODEL"))
    if choice.problem or not choice.model:
        raise ProviderFailure("model", f"{where}: {choice.detail or 'no model to use'}")
    return choice.model


async def _tags(http: httpx.AsyncClient, url: str, where: str, timeout: float) -> list[OllamaModel]:
    response = await fetch(http, "GET", url + "/api/tags", timeout=request_timeout(timeout))
    if response.status_code != 200:
        raise failure_from_body(where, response.status_code, response.content, response.headers)
    try:
        return decode_json(response.content, OllamaTags).models or []
    except msgspec.DecodeError as exc:
        raise unreadable(where, "a model list", exc) from None


async def list_models(ctx: RunContext, http: httpx.AsyncClient, *, timeout: float = LIST_TIMEOUT) -> list[OllamaModel]:
    """The models Ollama has pulled (``GET /api/tags``)."""
    url = base_url(ctx)
    where = f"ollama at {url}"
    return await run_guarded(lambda: _tags(http, url, where, timeout), timeout=timeout, where=where)


class OllamaShow(msgspec.Struct, frozen=True):
    """What ``POST /api/show`` says about a model that ``/api/tags`` does not."""

    model_info: dict[str, object] | None = None
    capabilities: list[str] | None = None

    @property
    def parameter_count(self) -> int | None:
        value = (self.model_info or {}).get("general.parameter_count")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def context_length(self) -> int | None:
        arch = (self.model_info or {}).get("general.architecture")
        value = (self.model_info or {}).get(f"{arch}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


async def show(name: str, ctx: RunContext, http: httpx.AsyncClient, *, timeout: float = LIST_TIMEOUT) -> OllamaShow:
    """A model's metadata (``POST /api/show``; reads the model file, never loads the model)."""
    url = base_url(ctx)
    where = f"ollama at {url}"

    async def body() -> OllamaShow:
        response = await fetch(
            http, "POST", url + "/api/show", content=msgspec.json.encode({"model": name}),
            headers={"Content-Type": "application/json"}, timeout=request_timeout(timeout),
        )
        if response.status_code != 200:
            raise failure_from_body(where, response.status_code, response.content, response.headers)
        try:
            return decode_json(response.content, OllamaShow)
        except msgspec.DecodeError as exc:
            raise unreadable(where, "a model's details", exc) from None

    return await run_guarded(body, timeout=timeout, where=where)


async def embed(
    texts: Sequence[str],
    model: str,
    ctx: RunContext,
    http: httpx.AsyncClient,
    *,
    timeout: float = EMBED_TIMEOUT,
    dimensions: int | None = None,
    truncate: bool | None = None,
) -> EmbedResult:
    """One vector per text from ``POST /api/embed`` on exactly ``model``."""
    url = base_url(ctx)
    where = f"ollama at {url}"
    payload = OllamaEmbedRequest(model=model, input=list(texts), truncate=truncate, dimensions=dimensions)
    if not payload.input:
        return EmbedResult(model=model, vectors=[])  # an empty input would only load the model

    async def body() -> EmbedResult:
        response = await fetch(
            http,
            "POST",
            url + "/api/embed",
            limit=MAX_EMBED_BODY,
            content=msgspec.json.encode(payload),
            headers={"Content-Type": "application/json"},
            timeout=request_timeout(timeout),
        )
        if response.status_code != 200:
            raise failure_from_body(where, response.status_code, response.content, response.headers)
        try:
            reply = decode_json(response.content, OllamaEmbedReply)
        except msgspec.DecodeError as exc:
            raise unreadable(where, "embeddings", exc) from None
        if len(reply.embeddings) != len(payload.input):
            raise ProviderFailure(
                "crashed", f"{where} returned {len(reply.embeddings)} vectors for {len(payload.input)} texts"
            )
        return EmbedResult(model=reply.model or model, vectors=reply.embeddings, input_tokens=reply.prompt_eval_count)

    return await run_guarded(body, timeout=timeout, where=where)
