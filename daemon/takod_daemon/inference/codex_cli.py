"""OpenAI Codex CLI (``@openai/codex``) as a takod runner.

Command (research/providers.md A7-A9, F "Running prompts")::

    codex exec --json --skip-git-repo-check --ephemeral -s read-only --color never
               [-m MODEL] [-c model_reasoning_effort="LEVEL"] -

- ``-`` reads the prompt from stdin; the system text is folded into that
  prompt (codex takes a system prompt only as ``-c developer_instructions=...``,
  which would put it on the command line, visible in ``ps``).
- ``-s read-only``: the agent may look, never write; ``--ephemeral``: no session
  files; ``--skip-git-repo-check``: the workspace need not be a git repository.
- Keys and ``CODEX_HOME`` come from ``ctx.env``. codex retries a lost network
  for ever, so the wall-clock timeout (``req.timeout``) is what ends it.

Output is JSON lines: ``thread.started``, ``turn.started``, ``item.started`` /
``item.updated`` / ``item.completed`` with ``item.type`` ``agent_message``
(``text``), ``reasoning`` (``text``), ``error`` (a warning, e.g. unknown model
metadata) and tool items; ``error`` (a retry notice, "Reconnecting... 2/5
(...)", or the final error); and the terminal ``turn.completed`` (``usage``) or
``turn.failed`` (``error.message``). codex 0.16x first tries the Responses API
over a WebSocket (``ws://``/``wss://`` in the retry notice's URL); a server
without WebSockets answers that with a 404, and after its retries codex falls
back to HTTPS by itself ("Falling back from WebSockets to HTTPS transport"), so
such notices never stop it. The events never name the model: it is the one
asked for (``-m``), else ``ctx.model`` (``model`` in ``$CODEX_HOME/config.toml``
or its active profile's, ``resolve/codex.py``), else the one codex's "Model metadata for `X` not found"
warning names. codex prints an agent message only once it
is complete, so "streaming" from codex is one chunk per message. Exit code 1
covers every failure, and sticks even when a later retry succeeded, so the
outcome is read from the events.
"""

from __future__ import annotations

import re

import msgspec

from takod_daemon.inference.subprocess_run import (
    CliExit,
    CliSpec,
    EventDecoder,
    classified_failure,
    classify,
    cli_binary,
    render_prompt,
    retry_notice_is_fatal,
    run_event_cli,
    summarize,
    workspace_cwd,
)
from takod_daemon.inference.types import (
    Chunk,
    Emit,
    InferRequest,
    ProviderFailure,
    RunContext,
    RunResult,
    Usage,
)

NAME = "codex"
BASE_ARGS = ("exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only", "--color", "never")
# takod's thinking levels -> codex's model_reasoning_effort; "off" leaves codex's default.
REASONING_EFFORT = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
MESSAGE_SEPARATOR = "\n\n"
_RECONNECT_RE = re.compile(r"^Reconnecting\.\.\.\s*(\d+)/(\d+)\s*\((.*)\)\s*$", re.DOTALL)
# A retry notice about the WebSocket transport, which codex gives up for HTTPS by itself.
_WEBSOCKET_URL_RE = re.compile(r"\burl: wss?://")
_MODEL_NAMED_RE = re.compile(r"^Model metadata for `([^`]+)` not found")


# --- events ------------------------------------------------------------------------


class CodexItem(msgspec.Struct, frozen=True):
    id: str = ""
    type: str = ""
    text: str | None = None
    message: str | None = None


class CodexUsage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None


class CodexErrorBody(msgspec.Struct, frozen=True):
    message: str = ""


class ThreadStarted(msgspec.Struct, frozen=True, tag="thread.started", tag_field="type"):
    thread_id: str = ""


class TurnStarted(msgspec.Struct, frozen=True, tag="turn.started", tag_field="type"):
    pass


class ItemStarted(msgspec.Struct, frozen=True, tag="item.started", tag_field="type"):
    item: CodexItem = CodexItem()


class ItemUpdated(msgspec.Struct, frozen=True, tag="item.updated", tag_field="type"):
    item: CodexItem = CodexItem()


class ItemCompleted(msgspec.Struct, frozen=True, tag="item.completed", tag_field="type"):
    item: CodexItem = CodexItem()


class TurnCompleted(msgspec.Struct, frozen=True, tag="turn.completed", tag_field="type"):
    usage: CodexUsage = CodexUsage()


class TurnFailed(msgspec.Struct, frozen=True, tag="turn.failed", tag_field="type"):
    error: CodexErrorBody = CodexErrorBody()


class StreamError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    message: str = ""


CodexEvent = (
    ThreadStarted | TurnStarted | ItemStarted | ItemUpdated | ItemCompleted | TurnCompleted | TurnFailed | StreamError
)


def parse_reconnect(message: str) -> tuple[int, int, str] | None:
    """``Reconnecting... 2/5 (why)`` -> (2, 5, why); None for any other message."""
    match = _RECONNECT_RE.match(message.strip())
    return (int(match[1]), int(match[2]), match[3]) if match else None


class CodexParser:
    """``codex exec --json`` events -> chunks and a result (pure)."""

    def __init__(self, model: str | None = None) -> None:
        self._decoder: EventDecoder[CodexEvent] = EventDecoder(CodexEvent)
        self._model = model
        self.last_error: str | None = None
        self._messages: list[str] = []
        self._thinking: list[str] = []
        self._usage: CodexUsage | None = None
        self._completed = False

    def feed(self, line: bytes) -> list[Chunk]:
        event = self._decoder.decode(line)
        if isinstance(event, ItemCompleted):
            item = event.item
            if item.type == "agent_message" and item.text:
                text = (MESSAGE_SEPARATOR if self._messages else "") + item.text
                self._messages.append(item.text)
                return [Chunk("text", text)]
            if item.type == "reasoning" and item.text:
                self._thinking.append(item.text)
                return [Chunk("thinking", item.text)]
            if item.type == "error" and item.message and self._model is None:
                named = _MODEL_NAMED_RE.match(item.message)
                if named:
                    self._model = named[1]
        elif isinstance(event, StreamError):
            reconnect = parse_reconnect(event.message)
            if reconnect is None:
                self.last_error = summarize(event.message)
                return []
            attempt, _, why = reconnect
            self.last_error = summarize(why)
            emitted = bool(self._messages or self._thinking)
            if _WEBSOCKET_URL_RE.search(why) and not emitted:
                return []  # codex falls back to HTTPS after these; let it
            if retry_notice_is_fatal(classify(why), attempt=attempt, emitted=emitted):
                context = "codex would retry after streaming part of the answer: " if emitted else ""
                raise classified_failure(why, context=context)
        elif isinstance(event, TurnFailed):
            raise classified_failure(event.error.message or self.last_error or "the turn failed")
        elif isinstance(event, TurnCompleted):
            self._completed = True
            self._usage = event.usage
        return []

    def feed_stderr(self, line: str) -> None:
        pass  # codex reports everything it needs to in its JSON events

    def finish(self, exit: CliExit) -> RunResult:
        if not self._completed:
            if self.last_error:
                raise classified_failure(self.last_error)
            why = exit.describe()
            if self._decoder.unreadable:
                why = f"{why}; {self._decoder.describe_unreadable()}"
            if exit.returncode == 0 and not exit.stderr_tail:
                raise ProviderFailure("crashed", f"codex ended without turn.completed ({why})")
            raise classified_failure(why, default="crashed", context="codex did not complete the turn: ")
        usage = self._usage or CodexUsage()
        return RunResult(
            text=MESSAGE_SEPARATOR.join(self._messages),
            model=self._model,
            usage=Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
            stop_reason="completed",
            thinking=MESSAGE_SEPARATOR.join(self._thinking) or None,
        )


# --- command -------------------------------------------------------------------------


def codex_argv(binary: str, req: InferRequest) -> list[str]:
    """codex's command line for ``req``; the prompt goes on stdin (the final ``-``)."""
    argv = [binary, *BASE_ARGS]
    if req.model and req.model != "auto":
        argv += ["-m", req.model]
    if req.thinking and req.thinking != "off":
        effort = REASONING_EFFORT.get(req.thinking)
        if effort is None:
            raise ProviderFailure("bad_request", f"unknown thinking level {req.thinking!r}")
        argv += ["-c", f'model_reasoning_effort="{effort}"']
    argv.append("-")
    return argv


def codex_stdin(req: InferRequest) -> bytes:
    return render_prompt(req, fold_system=True).encode()


async def run(req: InferRequest, ctx: RunContext, emit: Emit) -> RunResult:
    """Run ``req`` through ``codex exec``, streaming each finished agent message through ``emit``."""
    spec = CliSpec(
        name=NAME,
        argv=codex_argv(cli_binary(ctx, NAME), req),
        env=dict(ctx.env),
        cwd=workspace_cwd(ctx.workspace),
        stdin=codex_stdin(req),
        timeout=req.timeout,
    )
    model = req.model if req.model and req.model != "auto" else ctx.model  # resolve.codex: config.toml's
    return await run_event_cli(spec, CodexParser(model), emit)
