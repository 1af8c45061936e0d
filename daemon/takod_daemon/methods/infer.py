"""Inference methods: infer (streaming, fallback), embed, models.list, health."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import structlog

from takod.protocol import STREAM_METHOD, RpcError, invalid
from takod.schema import (
    PROVIDERS,
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
from ..inference import config as inference_config
from ..inference import routing
from ..inference.engine import Attempt, NoProvider, Sink
from ..inference.types import InferRequest, Message, ProviderFailure
from ..providers.ollama_probe import connectable, parse_ollama_host, probe_ollama
from ..readiness import evaluate
from ..resolve import ollama as ollama_resolve
from ..rpc import Call
from ..state import Workspace
from .core import autocmd_data_supported, require_trusted, workspace_of

log = structlog.get_logger("takod.infer")

DEFAULT_TIMEOUT = 180.0  # seconds per provider attempt


def _config(call: Call, client_env: dict[str, str] | None) -> inference_config.InferenceConfig:
    try:
        return inference_config.resolve(call.daemon.state.env, client_env)
    except inference_config.ConfigError as exc:
        raise invalid("invalid_config", str(exc)) from None


def _timeout(seconds: float | None) -> dict[str, float]:
    return {"timeout": seconds} if seconds is not None else {}


def _client_ollama_url(call: Call, ws: Workspace, cfg: inference_config.InferenceConfig) -> str | None:
    """The Ollama the client's environment names, when the workspace does not pin
    one and it is not the daemon's own (None: the workspace's probed Ollama)."""
    wanted = inference_config.client_ollama_url(cfg, call.daemon.state.env)
    if wanted is None or ws.settings.ollama_host:
        return None
    url = connectable(parse_ollama_host(wanted)).url
    return None if ws.ollama is not None and ws.ollama.url == url else url


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
    if p.timeout is not None and not p.timeout > 0:
        raise invalid("invalid_params", "timeout must be positive")
    if p.provider is not None and p.provider not in (*PROVIDERS, *routing.API_BACKENDS):
        # Not echoed: a key pasted into the wrong argument must not come back.
        raise invalid("unknown_provider", "unknown provider; use one of " + ", ".join((*PROVIDERS, *routing.API_BACKENDS)))
    return InferRequest(
        messages=messages,
        system=p.system,
        model=p.model,
        temperature=p.temperature,
        format=p.format,
        thinking=p.thinking,
        max_tokens=p.max_tokens,
        timeout=p.timeout or DEFAULT_TIMEOUT,
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
                  elapsed_ms=a.elapsed_ms, first_token_ms=a.first_token_ms, rule=a.rule)
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
            await conn.notify_autocmd("takod_stream", "TakodStream", data, with_data)

        return autocmd

    async def notify(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        await conn.notify(STREAM_METHOD, [stream_id, seq, kind, payload])

    return notify


# Ollama reasons that come from its last probe, and may no longer hold.


async def _plan(
    call: Call, p: InferParams, ws: Workspace, text: str, cfg: inference_config.InferenceConfig, ollama_url: str | None
) -> routing.Plan:
    state = call.daemon.state
    providers, selected = ws.providers, ws.selected
    if p.env:  # the client's own keys (and Ollama) may make more providers ready for this prompt
        facts = state.facts(ws, p.env)
        if ollama_url is not None:
            merged = inference_config.merged(state.env, p.env)
            probe_env = {"OLLAMA_HOST": ollama_url}
            for name in ("OLLAMA_MODEL", "OLLAMA_DEFAULT_MODEL"):  # the chat model as resolve.ollama chooses it
                if merged.get(name):
                    probe_env[name] = merged[name]
            probe = await probe_ollama(settings_model=ws.settings.ollama_model or None, env=probe_env)
            facts = dataclasses.replace(facts, ollama=probe)
        providers, selected = evaluate(facts)
    ollama_at = ollama_url or (ws.ollama.url if ws.ollama is not None else None)
    return routing.plan(
        providers,
        selected,
        provider=p.provider,
        model=p.model,
        local_only=p.local_only,
        ollama_is_local=ollama_at is None or _is_loopback(ollama_at),
        api_keys=_api_keys(call, ws, p.env),
        cooling=call.daemon.engine.cooling(),
        prompt_text=text,
        conversation=p.messages is not None,  # `takod chat` from its first turn: one model throughout
        config=cfg,
        timeout_given=p.timeout is not None,
    )


def _ollama_probe_decides(p: InferParams, ws: Workspace, route: routing.Plan) -> bool:
    """Whether Ollama's last probe keeps it out of a prompt that wants it: nothing
    else can take the prompt, or it is asked for, or preferred."""
    ollama = next((s for s in ws.providers if s.name == "ollama"), None)
    if ollama is None or ollama.ready or ollama.reason not in ollama_resolve.PROBED_REASONS:
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
    return dataclasses.replace(route, candidates=candidates)


async def _run(call: Call, p: InferParams, ws: Workspace, request: InferRequest, sink: Sink) -> InferResult:
    engine = call.daemon.engine
    # Routing reads the prompt, not the system text: a system prompt about secrets
    # says nothing about what this prompt carries.
    text = "\n".join(m.content for m in request.messages)
    cfg = _config(call, p.env)
    ollama_url = _client_ollama_url(call, ws, cfg)
    route = await _plan(call, p, ws, text, cfg, ollama_url)
    refusing = not route.candidates or p.provider == "ollama"
    if _ollama_probe_decides(p, ws, route) and await call.daemon.state.reprobe_ollama(ws, refusing=refusing):
        route = await _plan(call, p, ws, text, cfg, ollama_url)  # it may have started since: look again rather than refuse
    if p.model is None:
        route = _with_lane_model(route, lane_model(ws.settings, p.lane))
    started = time.monotonic()
    try:
        outcome = await engine.execute(ws, request, route, sink, p.env, config=cfg, ollama_url=ollama_url)
    except NoProvider as exc:
        raise RpcError("no_provider", f"{exc}; `takod status` says why, `takod doctor` how to fix it") from None
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
    await require_trusted(call, ws, "run a prompt")
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
    await require_trusted(call, ws, "embed")
    engine = call.daemon.engine
    cfg = _config(call, p.env)
    env = await engine.child_env(ws, p.env)
    provider = p.provider
    ctx = engine.context(ws, provider, env, ollama_url=_client_ollama_url(call, ws, cfg))
    assert engine.http is not None
    try:
        if provider == "ollama":
            from ..inference import ollama

            model = p.model or cfg.ollama_embed_model or "nomic-embed-text"
            result = await ollama.embed(p.texts, model, ctx, engine.http, **_timeout(cfg.ollama_timeout))
        else:
            from ..inference import openai_api

            result = await openai_api.embed(p.texts, p.model or "text-embedding-3-small", ctx, engine.http)
    except ProviderFailure as exc:
        raise RpcError("provider_failed", f"{provider}: {exc}") from None
    vectors = result.vectors
    return EmbedResult(
        provider=provider, model=result.model, embeddings=vectors, dimensions=len(vectors[0]) if vectors else 0
    )


@registry.method("models.list", ModelsParams, timeout=60, secret_params=True)
async def models_list(call: Call, p: ModelsParams) -> ModelsResult:
    """Models each provider offers, with detail: Ollama's pulled models (size,
    modified date, parameters, quantization, context length), the API backends' lists."""
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await require_trusted(call, ws, "list models")
    engine = call.daemon.engine
    found: list[ModelEntry] = []
    errors: dict[str, str] = {}
    if p.provider is not None and p.provider != "ollama" and p.provider not in routing.API_BACKENDS:
        known = ", ".join(["ollama", *routing.API_BACKENDS])
        raise invalid("invalid_params", f"models can be listed for {known}; not for {p.provider!r}")
    wanted = [p.provider] if p.provider else ["ollama", *routing.API_BACKENDS]
    keys = _api_keys(call, ws, p.env)
    cfg = _config(call, p.env)
    env = await engine.child_env(ws, p.env)
    assert engine.http is not None
    http = engine.http
    for provider in wanted:
        if provider in routing.API_BACKENDS and not keys.get(provider):
            if p.provider:
                errors[provider] = f"no {routing.API_BACKENDS[provider][0]}: set it with `takod key set` or export it"
            continue
        ctx = engine.context(ws, provider, env, ollama_url=_client_ollama_url(call, ws, cfg))
        try:
            if provider == "ollama":
                found += await _ollama_models(ctx, http)
            elif routing.API_BACKENDS[provider][1] == "anthropic":
                from ..inference import anthropic_api

                found += [ModelEntry(provider, m.id, _present(display_name=m.display_name, created_at=m.created_at))
                          for m in await anthropic_api.list_models(ctx, http)]
            else:
                from ..inference import openai_api

                found += [ModelEntry(provider, m.id, _present(owned_by=m.owned_by, created_at=_iso(m.created)))
                          for m in await openai_api.list_models(ctx, http)]
        except ProviderFailure as exc:
            errors[provider] = str(exc)
    return ModelsResult(models=found, errors=errors)


def _present(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v not in (None, "", [])}


def _iso(stamp: int | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


SHOW_CONCURRENCY = 4  # /api/show reads a model file each: a few at a time


async def _ollama_models(ctx: Any, http: Any) -> list[ModelEntry]:
    """``/api/tags``, each entry completed by ``/api/show`` (parameter count,
    context length, capabilities); a model whose show fails keeps its tags detail."""
    from ..inference import ollama

    tags = await ollama.list_models(ctx, http)
    shown: dict[str, ollama.OllamaShow] = {}
    limit = anyio.Semaphore(SHOW_CONCURRENCY)

    async def one(name: str) -> None:
        async with limit:
            try:
                shown[name] = await ollama.show(name, ctx, http)
            except ProviderFailure as exc:
                log.debug("ollama show failed", model=name, error=str(exc))

    async with anyio.create_task_group() as tg:
        for m in tags:
            tg.start_soon(one, m.name)
    entries = []
    for m in tags:
        extra = shown.get(m.name)
        entries.append(ModelEntry("ollama", m.name, _present(
            size=m.size or None,
            modified_at=m.modified_at,
            parameter_size=m.details.parameter_size,
            parameter_count=extra.parameter_count if extra else None,
            quantization=m.details.quantization_level,
            family=m.details.family,
            format=m.details.format,
            context_length=extra.context_length if extra else None,
            capabilities=(extra.capabilities if extra else None) or m.capabilities,
        )))
    return entries
