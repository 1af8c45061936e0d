"""pi (``@mariozechner/pi-coding-agent``) as a takod runner.

Command (research/pi-auth.md §6, takobot-inference.md §3.2)::

    pi --print --mode json --no-session --no-tools --no-extensions --no-skills
       [--offline] [--model M] [--thinking LEVEL] [--system-prompt FILE]

- The prompt goes in on stdin (pi prepends piped stdin to the first message;
  with no message argument it *is* the message), after Takobot's prompt guard
  (:mod:`takod_daemon.inference.prompt_limits`). Nothing of the prompt or the
  system text is on the command line: the system text is a 0600 file whose
  path pi reads (``--system-prompt`` takes text or a file).
- ``--model`` takes what pi accepts: ``id``, ``provider/id``, ``id:thinking``;
  so there is no separate ``--provider``.
- ``--offline`` is added when the caller's environment sets ``PI_OFFLINE`` (pi
  reads the variable itself too; the flag makes the run's intent visible).
- Environment: the caller's ``ctx.env`` (keys included, never argv), with
  ``PI_CODING_AGENT_DIR`` defaulting to ``<workspace>/.tako/pi/agent``, ``CI=1``
  unless set (as Takobot runs pi non-interactively), and the Node that runs pi
  (the workspace's own, else PATH's) first on PATH.

Output is JSON lines: a ``session`` header, then agent events. Text comes as
``message_update`` with ``assistantMessageEvent.type == "text_delta"``, thinking
as ``thinking_delta``; ``message_end`` / ``agent_end`` carry the finished
assistant message with ``stopReason`` (``stop``, ``length``, ``toolUse``,
``error``, ``aborted``) and ``errorMessage``. **JSON mode exits 0 even when the
request failed**, so the outcome is the last assistant message's stopReason.
pi retries retryable errors itself (``auto_retry_start`` ... another
``agent_start`` ...); see :func:`retry_notice_is_fatal` for when takod stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from takod_daemon.inference.prompt_limits import prepare_prompt
from takod_daemon.inference.subprocess_run import (
    CliExit,
    CliSpec,
    EventDecoder,
    classified_failure,
    classify,
    prepend_path,
    private_dir,
    render_prompt,
    retry_notice_is_fatal,
    run_event_cli,
    summarize,
    system_text,
    workspace_cwd,
    write_private,
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
from takod_daemon.providers.detect import find_node, locate_cli

NAME = "pi"
BASE_ARGS = ("--print", "--mode", "json", "--no-session", "--no-tools", "--no-extensions", "--no-skills")
THINKING_LEVELS = ("off", "minimal", "low", "medium", "high", "xhigh")


# --- events ------------------------------------------------------------------------


class PiContent(msgspec.Struct, frozen=True):
    type: str = ""
    text: str | None = None
    thinking: str | None = None


class PiUsage(msgspec.Struct, frozen=True):
    input: int | None = None
    output: int | None = None


class PiMessage(msgspec.Struct, frozen=True, rename="camel"):
    role: str = ""
    content: str | list[PiContent] = ""
    provider: str | None = None
    model: str | None = None
    response_model: str | None = None
    usage: PiUsage | None = None
    stop_reason: str | None = None
    error_message: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class PiAssistantEvent(msgspec.Struct, frozen=True):
    type: str = ""
    delta: str | None = None


class PiMessageUpdate(msgspec.Struct, frozen=True, tag="message_update", tag_field="type", rename="camel"):
    assistant_message_event: PiAssistantEvent = PiAssistantEvent()


class PiMessageEnd(msgspec.Struct, frozen=True, tag="message_end", tag_field="type"):
    message: PiMessage = PiMessage()


class PiAgentEnd(msgspec.Struct, frozen=True, tag="agent_end", tag_field="type"):
    messages: list[PiMessage] = []


class PiAutoRetryStart(msgspec.Struct, frozen=True, tag="auto_retry_start", tag_field="type", rename="camel"):
    attempt: int = 0
    max_attempts: int | None = None
    delay_ms: float | None = None
    error_message: str = ""


class PiAutoRetryEnd(msgspec.Struct, frozen=True, tag="auto_retry_end", tag_field="type", rename="camel"):
    success: bool = False
    attempt: int = 0
    final_error: str | None = None


PiEvent = PiMessageUpdate | PiMessageEnd | PiAgentEnd | PiAutoRetryStart | PiAutoRetryEnd


class PiParser:
    """pi's ``--mode json`` stream -> chunks and a result (pure)."""

    def __init__(self) -> None:
        self._decoder: EventDecoder[PiEvent] = EventDecoder(PiEvent)
        self.last_error: str | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._emitted = False
        self._ended: list[PiMessage] = []  # assistant message_ends of the current attempt
        self._agent_end: list[PiMessage] | None = None  # assistant messages of the attempt's agent_end

    def feed(self, line: bytes) -> list[Chunk]:
        event = self._decoder.decode(line)
        if isinstance(event, PiMessageUpdate):
            update = event.assistant_message_event
            if update.delta and update.type in ("text_delta", "thinking_delta"):
                self._emitted = True
                if update.type == "text_delta":
                    self._text.append(update.delta)
                    return [Chunk("text", update.delta)]
                self._thinking.append(update.delta)
                return [Chunk("thinking", update.delta)]
        elif isinstance(event, PiMessageEnd):
            if event.message.role == "assistant":
                self._ended.append(event.message)
                if event.message.error_message:
                    self.last_error = summarize(event.message.error_message)
        elif isinstance(event, PiAgentEnd):
            self._agent_end = [m for m in event.messages if m.role == "assistant"]
        elif isinstance(event, PiAutoRetryStart):
            error = event.error_message or "unknown error"
            self.last_error = summarize(error)
            kind = classify(error)
            if retry_notice_is_fatal(kind, attempt=event.attempt, emitted=self._emitted):
                context = "pi would retry after streaming part of the answer: " if self._emitted else ""
                raise classified_failure(error, context=context)
            self._ended, self._agent_end = [], None  # the next attempt answers afresh
        elif isinstance(event, PiAutoRetryEnd) and event.final_error:
            self.last_error = summarize(event.final_error)
        return []

    def feed_stderr(self, line: str) -> None:
        pass  # pi reports everything it needs to in its JSON events

    def finish(self, exit: CliExit) -> RunResult:
        messages = self._agent_end if self._agent_end is not None else self._ended
        last = messages[-1] if messages else None
        if last is None:
            # pi stopped before the agent answered: no model, no key, a bad flag, or not pi at all.
            why = exit.describe()
            if self._decoder.unreadable:
                why = f"{why}; {self._decoder.describe_unreadable()}"
            if exit.returncode == 0 and not exit.stderr_tail:
                raise ProviderFailure("crashed", f"pi ended without an answer ({why})")
            raise classified_failure(why, default="crashed", context="pi gave no answer: ")
        if last.stop_reason in ("error", "aborted"):
            raise classified_failure(last.error_message or f"the request ended with stopReason {last.stop_reason}")
        final = "".join(m.text() for m in messages)
        model = last.response_model or last.model
        if model and last.provider:
            model = f"{last.provider}/{model}"
        inputs = [m.usage.input for m in messages if m.usage and m.usage.input is not None]
        outputs = [m.usage.output for m in messages if m.usage and m.usage.output is not None]
        return RunResult(
            text=final or "".join(self._text),
            model=model,
            usage=Usage(input_tokens=sum(inputs) if inputs else None, output_tokens=sum(outputs) if outputs else None),
            stop_reason=last.stop_reason,
            thinking="".join(self._thinking) or None,
        )


# --- command -------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def pi_argv(binary: str, req: InferRequest, *, system_file: Path | None = None, offline: bool = False) -> list[str]:
    """pi's command line for ``req`` (no prompt on it: that goes on stdin)."""
    argv = [binary, *BASE_ARGS]
    if offline:
        argv.append("--offline")
    if req.model and req.model != "auto":
        argv += ["--model", req.model]
    if req.thinking:
        if req.thinking not in THINKING_LEVELS:
            raise ProviderFailure("bad_request", f"unknown thinking level {req.thinking!r} (one of {', '.join(THINKING_LEVELS)})")
        argv += ["--thinking", req.thinking]
    if system_file is not None:
        argv += ["--system-prompt", str(system_file)]
    return argv


def pi_env(ctx: RunContext, node: str | None) -> dict[str, str]:
    """The child's environment: ``ctx.env`` plus pi's agent dir, ``CI`` and ``node``'s directory first on PATH."""
    env = prepend_path(ctx.env, os.path.dirname(node) if node else None)
    env.setdefault("PI_CODING_AGENT_DIR", str(ctx.workspace / ".tako" / "pi" / "agent"))
    env.setdefault("CI", "1")
    return env


def pi_stdin(req: InferRequest) -> bytes:
    """The prompt pi reads from stdin: the rendered request after the prompt guard."""
    return prepare_prompt(render_prompt(req)).text.encode()


def _binary(ctx: RunContext) -> str:
    if ctx.binary:
        return ctx.binary
    found = locate_cli(NAME, path=ctx.env.get("PATH", ""), workspace=ctx.workspace)
    if found is None:
        raise ProviderFailure("unavailable", "pi is not installed (neither in the workspace nor on PATH)")
    return found[0]


async def run(req: InferRequest, ctx: RunContext, emit: Emit) -> RunResult:
    """Run ``req`` through pi, streaming text and thinking through ``emit``."""
    binary = _binary(ctx)
    stdin = pi_stdin(req)
    node = find_node(workspace=ctx.workspace, path=ctx.env.get("PATH", ""))
    system = system_text(req)
    with private_dir(ctx.tmp_dir) as scratch:
        system_file = write_private(scratch / "system.md", system) if system else None
        spec = CliSpec(
            name=NAME,
            argv=pi_argv(binary, req, system_file=system_file, offline=_truthy(ctx.env.get("PI_OFFLINE"))),
            env=pi_env(ctx, node),
            cwd=workspace_cwd(ctx.workspace),
            stdin=stdin,
            timeout=req.timeout,
        )
        return await run_event_cli(spec, PiParser(), emit)
