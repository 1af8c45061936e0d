"""Inference methods: infer (streaming, fallback), embed, models.list, health."""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import structlog

from takod.protocol import STREAM_METHOD, RpcError, invalid
from takod.schema import (
    EmbedParams,
    EmbedResult,
    HealthParams,
    HealthResult,
    InferParams,
    InferResult,
    InferStarted,
    ModelEntry,
    ModelsParams,
    ModelsResult,
    RouteStep,
)

from ..api import registry
from ..credentials.settings import InferenceSettings
from ..inference import routing
from ..inference.engine import Attempt, NoProvider, Sink
from ..inference.types import InferRequest, Message, ProviderFailure
from ..readiness import evaluate
from ..rpc import Call
from ..state import Workspace
from .core import autocmd_data_supported, workspace_of

log = structlog.get_logger("takod.infer")


def _request(p: InferParams) -> InferRequest:
    if (p.prompt is None) == (p.messages is None):
        raise invalid("invalid_params", "give exactly one of prompt or messages")
    if p.prompt is not None:
        if not p.prompt.strip():
            raise invalid("invalid_params", "prompt is empty")
        messages = [Message("user", p.prompt)]
    else:
        assert p.messages is not None
        messages = [Message(m.role, m.content) for m in p.messages]
        if not messages or messages[-1].role != "user":
            raise invalid("invalid_params", "messages must end with a user turn")
    if p.timeout <= 0:
        raise invalid("invalid_params", "timeout must be positive")
    return InferRequest(
        messages=messages,
        system=p.system,
        model=p.model,
        temperature=p.temperature,
        format=p.format,
        thinking=p.thinking,
        max_tokens=p.max_tokens,
        timeout=p.timeout,
    )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_keys(call: Call, ws: Workspace, overlay: dict[str, str] | None) -> dict[str, bool]:
    state = call.daemon.state
    have = set(state.user.stored_keys) | set(ws.settings.api_keys) | {k for k, v in state.env.items() if v}
    have |= set(overlay or {})
    return {name: var in have for name, (var, _kind, _url) in routing.API_BACKENDS.items()}


def _steps(trace: list[Attempt]) -> list[RouteStep]:
    return [
        RouteStep(provider=a.provider, outcome=a.outcome, reason=a.reason, model=a.model,
                  elapsed_ms=a.elapsed_ms, first_token_ms=a.first_token_ms)
        for a in trace
    ]


async def _make_sink(call: Call, p: InferParams) -> Sink:
    """Where chunks go: ``takod.stream`` notifications, or autocmds for a stock Neovim."""
    conn, stream_id = call.conn, call.msgid
    seq = 0
    if p.deliver == "autocmd":
        with_data = await autocmd_data_supported(call)

        async def autocmd(kind: str, payload: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            data = {"stream_id": stream_id, "seq": seq, "kind": kind, "payload": payload}
            await conn.notify("nvim_set_var", ["takod_stream", data])
            opts: dict[str, Any] = {"pattern": "TakodStream", "modeline": False}
            if with_data:
                opts["data"] = data
            await conn.notify("nvim_exec_autocmds", ["User", opts])

        return autocmd

    async def notify(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        await conn.notify(STREAM_METHOD, [stream_id, seq, kind, payload])

    return notify


# Ollama reasons that come from its last probe, and may no longer hold.
_PROBED_REASONS = frozenset(
    {"unreachable", "bad-response", "no-models", "no-chat-model", "model-not-pulled", "embedding-model"}
)


def _plan(call: Call, p: InferParams, ws: Workspace, text: str) -> routing.Plan:
    providers, selected = ws.providers, ws.selected
    if p.env:  # the client's own keys may make more providers ready for this prompt
        providers, selected = evaluate(call.daemon.state.facts(ws, p.env))
    return routing.plan(
        providers,
        selected,
        provider=p.provider,
        model=p.model,
        local_only=p.local_only,
        ollama_is_local=ws.ollama is None or _is_loopback(ws.ollama.url),
        api_keys=_api_keys(call, ws, p.env),
        cooling=call.daemon.engine.cooling(),
        prompt_text=text,
        env=call.daemon.state.env,
    )


def _ollama_probe_decides(p: InferParams, ws: Workspace, route: routing.Plan) -> bool:
    """Whether Ollama's last probe keeps it out of a prompt that wants it: nothing
    else can take the prompt, or it is asked for, or preferred."""
    ollama = next((s for s in ws.providers if s.name == "ollama"), None)
    if ollama is None or ollama.ready or ollama.reason not in _PROBED_REASONS:
        return False
    if not any(s.provider == "ollama" for s in route.skipped):
        return False
    return not route.candidates or p.provider == "ollama" or ws.settings.preferred_provider == "ollama"


def lane_model(settings: InferenceSettings, lane: str) -> str | None:
    """The model the workspace settings give pi for Takobot's ``lane``; None: pi's own default."""
    model = settings.type2_model if lane == "type2" else settings.type1_model
    return model if model and model != "auto" else None


def _with_lane_model(route: routing.Plan, model: str | None) -> routing.Plan:
    """pi, when no model was asked for, runs with the lane's model (as Takobot runs it)."""
    if model is None:
        return route
    candidates = [routing.Candidate("pi", model) if c.provider == "pi" and c.model is None else c for c in route.candidates]
    return routing.Plan(candidates, route.skipped, route.local_only)


async def _run(call: Call, p: InferParams, ws: Workspace, request: InferRequest, sink: Sink) -> InferResult:
    engine = call.daemon.engine
    text = "\n".join(m.content for m in request.messages) + (request.system or "")
    route = _plan(call, p, ws, text)
    refusing = not route.candidates or p.provider == "ollama"
    if _ollama_probe_decides(p, ws, route) and await call.daemon.state.reprobe_ollama(ws, refusing=refusing):
        route = _plan(call, p, ws, text)  # it may have started since: look again rather than refuse
    if p.model is None:
        route = _with_lane_model(route, lane_model(ws.settings, p.lane))
    started = time.monotonic()
    try:
        outcome = await engine.execute(ws, request, route, sink, p.env)
    except NoProvider as exc:
        raise RpcError("no_provider", str(exc)) from None
    if outcome.result is None:
        failure = outcome.failure or ProviderFailure("crashed", "unknown failure")
        raise RpcError("provider_failed", f"{outcome.provider} failed after it started answering: {failure}")
    result = outcome.result
    assert outcome.provider is not None
    return InferResult(
        text=result.text,
        provider=outcome.provider,
        model=result.model or next((a.model for a in reversed(outcome.trace) if a.outcome == "answered"), None),
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        stop_reason=result.stop_reason,
        elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        route=_steps(outcome.trace),
        thinking=result.thinking,
    )


@registry.method("infer", InferParams, timeout=None, secret_params=True)
async def infer(call: Call, p: InferParams) -> InferResult | InferStarted:
    """Run a prompt on the first ready provider, falling through before the first token.

    ``stream: true`` sends ``takod.stream`` chunks (stream id = this request's
    msgid) before the answer; ``stream: "async"`` answers at once with the
    stream id and delivers everything, ending with an ``end`` chunk, by
    notification: what a Neovim ``rpcrequest`` needs so the editor never blocks.
    """
    request = _request(p)
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    if p.stream == "async":
        sink = await _make_sink(call, p)

        async def work() -> None:
            try:
                result = await _run(call, p, ws, request, sink)
            except RpcError as exc:
                await sink("end", {"error": exc.to_wire()[1]})
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await sink("end", {"error": "cancelled: stream cancelled"})
                raise
            except Exception:  # a bug must end this stream, not the client's connection
                log.exception("stream failed", stream_id=call.msgid)
                await sink("end", {"error": "internal: the stream failed unexpectedly; see the daemon log"})
            else:
                await sink("end", {"result": msgspec.to_builtins(result)})

        call.conn.start_stream(call.msgid, work)
        return InferStarted(stream_id=call.msgid)

    async def silent(kind: str, payload: dict[str, Any]) -> None:
        return None

    return await _run(call, p, ws, request, await _make_sink(call, p) if p.stream else silent)


@registry.method("health", HealthParams)
async def health(call: Call, p: HealthParams) -> HealthResult:
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    ready = [s.name for s in ws.providers if s.ready]
    return HealthResult(ok=bool(ready), selected=ws.selected, ready=ready)


@registry.method("embed", EmbedParams, timeout=120, secret_params=True)
async def embed(call: Call, p: EmbedParams) -> EmbedResult:
    """Embeddings from one provider and model; never falls back to another model
    (vectors from different models are not comparable)."""
    if not p.texts:
        raise invalid("invalid_params", "texts is empty")
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    engine = call.daemon.engine
    env = await engine.child_env(ws, None)
    provider = p.provider
    ctx = engine.context(ws, provider, env)
    assert engine.http is not None
    try:
        if provider == "ollama":
            from ..inference import ollama

            result = await ollama.embed(p.texts, p.model or "nomic-embed-text", ctx, engine.http)
        else:
            from ..inference import openai_api

            result = await openai_api.embed(p.texts, p.model or "text-embedding-3-small", ctx, engine.http)
    except ProviderFailure as exc:
        raise RpcError("provider_failed", f"{provider}: {exc}") from None
    vectors = result.vectors
    return EmbedResult(
        provider=provider, model=result.model, embeddings=vectors, dimensions=len(vectors[0]) if vectors else 0
    )


@registry.method("models.list", ModelsParams, timeout=60)
async def models_list(call: Call, p: ModelsParams) -> ModelsResult:
    """Models each provider offers (Ollama's pulled models, the API backends' lists)."""
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    engine = call.daemon.engine
    found: list[ModelEntry] = []
    errors: dict[str, str] = {}
    if p.provider is not None and p.provider != "ollama" and p.provider not in routing.API_BACKENDS:
        known = ", ".join(["ollama", *routing.API_BACKENDS])
        raise invalid("invalid_params", f"models can be listed for {known}; not for {p.provider!r}")
    wanted = [p.provider] if p.provider else ["ollama", *routing.API_BACKENDS]
    keys = _api_keys(call, ws, None)
    env = await engine.child_env(ws, None)
    assert engine.http is not None
    for provider in wanted:
        if provider in routing.API_BACKENDS and not keys.get(provider):
            if p.provider:
                errors[provider] = f"no {routing.API_BACKENDS[provider][0]}"
            continue
        ctx = engine.context(ws, provider, env)
        try:
            if provider == "ollama":
                from ..inference import ollama

                names = [m.name for m in await ollama.list_models(ctx, engine.http)]
            elif provider in routing.API_BACKENDS and routing.API_BACKENDS[provider][1] == "openai":
                from ..inference import openai_api

                names = [m.id for m in await openai_api.list_models(ctx, engine.http)]
            else:
                errors[provider] = "listing models is not supported for this provider"
                continue
        except ProviderFailure as exc:
            errors[provider] = str(exc)
            continue
        found += [ModelEntry(provider=provider, name=name) for name in names]
    return ModelsResult(models=found, errors=errors)
