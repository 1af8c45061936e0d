"""Run one prompt along a routing plan: stream, fall through, say exactly what happened.

For each candidate provider the engine builds the runner's context (binary,
child environment with stored keys, base URL), runs it, and relays its chunks.
A provider that fails *before* its first chunk reached the caller is recorded
in the route trace and the next one is tried; after the first chunk, a failure
is reported as it is (the caller already has part of an answer). Rate-limit and
auth failures put a provider on a cooldown so the next prompts skip it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import structlog

from .. import cooldowns
from ..links import is_tako_workspace
from ..redact import redact_text
from ..resolve import gemini as gemini_resolve
from ..resolve.codex import CodexPlan, resolve_codex
from ..resolve import ollama as ollama_resolve
from ..resolve import pi as pi_resolve
from ..resolve.api import default_model as default_api_model
from ..resolve.api import resolve_api
from . import child_env, errorlog
from .config import InferenceConfig
from .routing import API_BACKENDS, Candidate, Plan
from .types import Chunk, InferRequest, ProviderFailure, RunContext, RunResult

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..state import Workspace

log = structlog.get_logger("takod.infer")

Sink = Callable[[str, dict[str, Any]], Awaitable[None]]

COOLDOWN_RATE_LIMIT = 60.0
COOLDOWN_AUTH = 300.0


@dataclass
class Attempt:
    provider: str
    outcome: str  # answered | failed | skipped
    reason: str | None = None
    model: str | None = None
    elapsed_ms: float | None = None
    first_token_ms: float | None = None
    rule: str | None = None  # the routing rule that put this provider here


@dataclass
class Outcome:
    provider: str | None
    result: RunResult | None
    trace: list[Attempt] = field(default_factory=list)
    failure: ProviderFailure | None = None


class NoProvider(Exception):
    """Nothing could answer; ``trace`` says why for each provider."""

    def __init__(self, message: str, trace: list[Attempt]):
        super().__init__(message)
        self.trace = trace


def _runner(provider: str) -> Callable[..., Awaitable[RunResult]]:
    """The runner module for ``provider`` (imported on first use: the CLI runners are heavy)."""
    if provider == "pi":
        from . import pi_cli as module
    elif provider == "codex":
        from . import codex_cli as module
    elif provider == "claude":
        from . import claude_cli as module
    elif provider == "gemini":
        from . import gemini_cli as module
    elif provider == "ollama":
        from . import ollama as module
    elif API_BACKENDS.get(provider, ("", "", ""))[1] == "anthropic":
        from . import anthropic_api as module
    else:
        from . import openai_api as module
    return module.run


class Engine:
    """Shared by every prompt: the HTTP client. (Cooldowns live in the state manager,
    since status shows them and credential changes end them.)"""

    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon
        self.http: httpx.AsyncClient | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the shared HTTP client for the daemon's lifetime."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0)) as http:
            self.http = http
            task_status.started()
            await anyio.sleep_forever()

    def cooling(self) -> dict[str, str]:
        """Providers sitting out a failure, and the routing trace's words for it."""
        now = time.time()
        return {p: cooldowns.describe(c, now) for p, c in self.daemon.state.cooldowns.active(now).items()}

    async def child_env(self, ws: "Workspace", overlay: Mapping[str, str] | None) -> dict[str, str]:
        """The environment a provider runs with: the daemon's, plus stored keys and
        plaintext settings keys, plus what the client sent. Keys never go on a command line."""
        env = dict(self.daemon.state.env)
        for name, value in ws.settings.api_keys.items():
            env.setdefault(name, value)
        # The names the daemon already knows (re-read after every key change; routing
        # went by them too): listing the store again would read every value once more,
        # one keyring round trip each, before the provider starts; and a store that
        # cannot be listed (an unreadable key file) would fail the prompt.
        for name in self.daemon.state.user.stored_keys:
            try:
                value = await self.daemon.keys.get(name)
            except Exception:  # a keyring that stopped answering, an unreadable key file: run without that key
                continue
            if value:
                env[name] = value
        if overlay:
            env.update(overlay)
        if is_tako_workspace(ws.root):
            tmp = ws.root / ".tako" / "tmp"
            tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            env.update(TMPDIR=str(tmp), TMP=str(tmp), TEMP=str(tmp))
        return env

    def context(
        self, ws: "Workspace", provider: str, env: dict[str, str], model: str | None = None,
        *, ollama_url: str | None = None, gemini_auth: gemini_resolve.AuthFacts | None = None,
        codex: CodexPlan | None = None,
    ) -> RunContext:
        """What ``provider`` runs with. pi, gemini and the API backends run their
        resolution (``resolve/``), the one readiness reports; ``env`` is the whole
        pool (gemini: from ``gemini_auth``; codex: ``codex``; both read for this run). ``ollama_url`` is an
        Ollama address the client asked for (a workspace's own `takod ollama host`
        still wins)."""
        user = self.daemon.state.user
        if provider == "pi":
            info = ws.pi_binary
            plan = self.daemon.state.pi_plan(ws, env, masked=False, model=model)
            env = pi_resolve.child_env(plan, env)
            if info is not None and info.node_path:
                env["PATH"] = str(Path(info.node_path).parent) + ":" + env.get("PATH", "")
            return RunContext(workspace=ws.root, env=env, binary=info.path if info else None)
        if provider in ("codex", "claude", "gemini"):
            info = user.binaries.get(provider)
            scope = None
            if provider == "gemini" and gemini_auth is not None:
                scope = gemini_resolve.resolve_gemini((), env, gemini_auth).auth_scope
            return RunContext(workspace=ws.root, env=env, binary=info.path if info else None, auth_scope=scope,
                              model=codex.model if codex is not None else None)
        if provider == "ollama":
            url = ollama_resolve.run_url(ws.ollama, settings_host=ws.settings.ollama_host, client_url=ollama_url)
            return RunContext(workspace=ws.root, env=env, base_url=url)
        api = resolve_api(provider, env)
        return RunContext(workspace=ws.root, env=env, base_url=api.base_url, api_key=env.get(api.key_var))

    def default_model(self, ws: "Workspace", provider: str, config: InferenceConfig | None = None) -> str | None:
        """The model a provider runs when neither the request nor a rule named one.
        Ollama: the one readiness reports (``resolve.ollama``), for the client's
        environment when it sent one (``config``); an API backend: its service's default."""
        if provider in API_BACKENDS:
            return default_api_model(provider)
        if provider != "ollama" or ws.ollama is None:
            return None
        env: Mapping[str, str] = self.daemon.state.env
        if config is not None:
            env = {"OLLAMA_MODEL": config.ollama_model or "", "OLLAMA_DEFAULT_MODEL": config.ollama_default_model or ""}
        return ollama_resolve.resolve_ollama(ws.ollama, ws.settings.ollama_model, env).model

    async def execute(
        self,
        ws: "Workspace",
        request: InferRequest,
        route: Plan,
        sink: Sink,
        env_overlay: Mapping[str, str] | None = None,
        config: InferenceConfig | None = None,
        ollama_url: str | None = None,
    ) -> Outcome:
        """Try each candidate in order; raise :class:`NoProvider` when none answered."""
        trace = [Attempt(s.provider, "skipped", s.reason, rule=s.rule) for s in route.skipped]
        if not route.candidates:
            raise NoProvider(route.refusal(_summary("no provider can take this prompt", trace)), trace)
        env = await self.child_env(ws, env_overlay)
        for candidate in route.candidates:
            outcome = await self._attempt(ws, request, candidate, env, sink, trace, config, ollama_url)
            if outcome is not None:
                return outcome
        raise NoProvider(route.refusal(_summary("every provider failed", trace)), trace)

    async def _attempt(
        self,
        ws: "Workspace",
        request: InferRequest,
        candidate: Candidate,
        env: dict[str, str],
        sink: Sink,
        trace: list[Attempt],
        config: InferenceConfig | None = None,
        ollama_url: str | None = None,
    ) -> Outcome | None:
        provider = candidate.provider
        model = candidate.model or request.model or self.default_model(ws, provider, config)
        req = request if model == request.model else _with_model(request, model)
        if candidate.timeout is not None:
            req = msgspec.structs.replace(req, timeout=candidate.timeout)
        attempt = Attempt(provider, "failed", model=model, rule=candidate.rule)
        trace.append(attempt)
        started = time.monotonic()
        sent = False

        async def emit(chunk: Chunk) -> None:
            nonlocal sent
            if not sent:
                attempt.first_token_ms = round((time.monotonic() - started) * 1000, 1)
            sent = True
            await sink(chunk.kind, {"text": chunk.text})

        await sink("route", {"provider": provider, "model": model, "attempt": len([a for a in trace if a.outcome != "skipped"]),
                             "rule": candidate.rule})
        auth = codex = None
        if provider == "codex":
            # A CLI gets only the secrets of the services it talks to (codex: and the keys its config names);
            # pi gets exactly what its resolution needs (Engine.context).
            codex = await anyio.to_thread.run_sync(resolve_codex, env)
            env = child_env.filter_env(provider, env, codex.env_keys)
        elif provider in child_env.CLI_PROVIDERS:
            env = child_env.filter_env(provider, env)
        if provider == "gemini":
            auth = await anyio.to_thread.run_sync(gemini_resolve.auth_facts, env)
        ctx = self.context(ws, provider, env, model, ollama_url=ollama_url, gemini_auth=auth, codex=codex)
        try:
            runner = _runner(provider)
            with anyio.fail_after(req.timeout):
                if provider == "ollama" or provider in API_BACKENDS:
                    assert self.http is not None
                    result = await runner(req, ctx, emit, self.http)
                else:
                    result = await runner(req, ctx, emit)
        except TimeoutError:
            failure = ProviderFailure("timeout", f"no answer within {req.timeout:g} s")
        except ProviderFailure as exc:
            failure = exc
        except (ImportError, ModuleNotFoundError) as exc:
            failure = ProviderFailure("unavailable", f"runner not available: {exc}")
        else:
            attempt.outcome = "answered"
            attempt.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            attempt.model = result.model or model
            return Outcome(provider, result, trace)
        attempt.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        attempt.reason = f"{failure.kind}: {redact_text(failure.message)}"
        await self._cool(provider, failure)
        await anyio.to_thread.run_sync(
            errorlog.append, ws.root,
            {"provider": provider, "model": model, "kind": failure.kind, "error": failure.message,
             "after_first_token": sent},
        )
        log.warning("provider failed", provider=provider, kind=failure.kind, error=failure.message, streamed=sent)
        if sent:
            # Part of an answer already reached the caller: do not splice another provider's in.
            return Outcome(provider, None, trace, failure)
        await sink("fallback", {"provider": provider, "error": attempt.reason})
        return None

    async def _cool(self, provider: str, failure: ProviderFailure) -> None:
        if failure.kind == "rate_limit":
            wait = failure.retry_after or COOLDOWN_RATE_LIMIT
        elif failure.kind == "auth":
            wait = COOLDOWN_AUTH
        else:
            return
        await self.daemon.state.cool(provider, time.time() + wait, failure.kind.replace("_", " "))


def _with_model(request: InferRequest, model: str | None) -> InferRequest:
    return msgspec.structs.replace(request, model=model)


def _summary(headline: str, trace: list[Attempt]) -> str:
    parts = [f"{a.provider}: {a.reason}" for a in trace if a.reason]
    return headline + (" (" + "; ".join(parts) + ")" if parts else "")
