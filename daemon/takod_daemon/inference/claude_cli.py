"""Claude Code (``@anthropic-ai/claude-code``) as a takod runner.

Command (research/providers.md B6-B7)::

    claude -p --output-format stream-json --verbose --include-partial-messages
           --no-session-persistence --tools "" [--model M] [--effort LEVEL]
           [--system-prompt-file FILE]

- The prompt goes in on stdin (``-p`` with no prompt argument reads it).
  ``stream-json`` needs ``--verbose`` in print mode (without it claude exits 1);
  ``--include-partial-messages`` adds the token deltas (``stream_event`` lines
  wrapping the Messages API's SSE events); ``--tools ""`` gives the model no
  tools; ``--no-session-persistence`` writes no session.
- The system text is a 0600 file (``--system-prompt-file``), off the command line.
- Keys (``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_OAUTH_TOKEN``), ``CLAUDE_CONFIG_DIR``
  and ``ANTHROPIC_BASE_URL`` come from ``ctx.env``.

Events: ``system`` (``init`` with the model; ``api_retry`` with ``attempt``,
``error_status``, ``error`` and ``retry_delay_ms`` -- the server's Retry-After
when it sent one -- before each of claude's own retries),
``stream_event`` (``content_block_delta`` with ``text_delta`` / ``thinking_delta``),
``assistant`` (each finished content block of a message), and the final
``result``. Success is ``is_error: false`` on the result, never ``subtype``:
an auth failure reports ``subtype: "success", is_error: true``.

claude can restart an answer it had started to stream (it falls back to a
non-streaming request after a mid-stream error, or retries): the text of the
finished ``assistant`` messages is checked against the streamed deltas, and a
restart after text reached the caller fails the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from takod_daemon.inference.subprocess_run import (
    CliExit,
    CliSpec,
    EventDecoder,
    classified_failure,
    classify,
    cli_binary,
    kind_for_status,
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

NAME = "claude"
BASE_ARGS = (
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
    "--no-session-persistence",
    "--tools",
    "",
)
# takod's thinking levels -> claude's --effort; "off" leaves claude's default.
EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
SYNTHETIC_MODEL = "<synthetic>"  # claude's own error messages, not the model's


# --- events ------------------------------------------------------------------------


class ClaudeBlock(msgspec.Struct, frozen=True):
    type: str = ""
    text: str | None = None
    thinking: str | None = None


class ClaudeMessage(msgspec.Struct, frozen=True):
    id: str | None = None
    model: str | None = None
    content: list[ClaudeBlock] = []
    stop_reason: str | None = None


class ClaudeDelta(msgspec.Struct, frozen=True):
    type: str = ""
    text: str | None = None
    thinking: str | None = None


class ClaudeRawEvent(msgspec.Struct, frozen=True):
    """One Messages API stream event, as claude relays it."""

    type: str = ""
    delta: ClaudeDelta | None = None
    message: ClaudeMessage | None = None


class ClaudeSystem(msgspec.Struct, frozen=True, tag="system", tag_field="type"):
    subtype: str = ""
    model: Any = None
    attempt: Any = None
    max_retries: Any = None
    retry_delay_ms: Any = None
    error_status: Any = None
    error: Any = None


class ClaudeStreamEvent(msgspec.Struct, frozen=True, tag="stream_event", tag_field="type"):
    event: ClaudeRawEvent = ClaudeRawEvent()
    parent_tool_use_id: str | None = None


class ClaudeAssistant(msgspec.Struct, frozen=True, tag="assistant", tag_field="type"):
    message: ClaudeMessage = ClaudeMessage()
    parent_tool_use_id: str | None = None


class ClaudeUsage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None


class ClaudeResult(msgspec.Struct, frozen=True, tag="result", tag_field="type"):
    subtype: str = ""
    is_error: bool = False
    result: Any = None
    errors: Any = None
    terminal_reason: Any = None
    api_error_status: Any = None
    stop_reason: Any = None
    usage: ClaudeUsage | None = None


ClaudeEvent = ClaudeSystem | ClaudeStreamEvent | ClaudeAssistant | ClaudeResult


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class ClaudeParser:
    """``claude -p --output-format stream-json`` events -> chunks and a result (pure)."""

    def __init__(self) -> None:
        self._decoder: EventDecoder[ClaudeEvent] = EventDecoder(ClaudeEvent)
        self.last_error: str | None = None
        self._model: str | None = None
        self._streamed: list[str] = []  # text that reached the caller
        self._final: list[str] = []  # text of finished assistant blocks
        self._thinking: list[str] = []
        self._thinking_streamed = False
        self._result: ClaudeResult | None = None

    @property
    def _emitted(self) -> bool:
        return bool(self._streamed or self._thinking)

    def _text(self, text: str) -> list[Chunk]:
        self._streamed.append(text)
        return [Chunk("text", text)]

    def feed(self, line: bytes) -> list[Chunk]:
        event = self._decoder.decode(line)
        if isinstance(event, ClaudeStreamEvent) and event.parent_tool_use_id is None:
            return self._on_stream_event(event.event)
        if isinstance(event, ClaudeAssistant) and event.parent_tool_use_id is None:
            return self._on_assistant(event.message)
        if isinstance(event, ClaudeSystem):
            self._on_system(event)
        elif isinstance(event, ClaudeResult):
            self._result = event
        return []

    def _on_stream_event(self, raw: ClaudeRawEvent) -> list[Chunk]:
        if raw.type == "message_start" and raw.message is not None and raw.message.model:
            self._model = raw.message.model
        elif raw.type == "content_block_delta" and raw.delta is not None:
            if raw.delta.type == "text_delta" and raw.delta.text:
                return self._text(raw.delta.text)
            if raw.delta.type == "thinking_delta" and raw.delta.thinking:
                self._thinking_streamed = True
                self._thinking.append(raw.delta.thinking)
                return [Chunk("thinking", raw.delta.thinking)]
        return []

    def _on_assistant(self, message: ClaudeMessage) -> list[Chunk]:
        if message.model == SYNTHETIC_MODEL:
            return []  # claude's own error text; the result event says what failed
        if message.model:
            self._model = message.model
        chunks: list[Chunk] = []
        if not self._thinking_streamed:
            for block in message.content:
                if block.type == "thinking" and block.thinking:
                    self._thinking.append(block.thinking)
                    chunks.append(Chunk("thinking", block.thinking))
        self._final.extend(block.text or "" for block in message.content if block.type == "text")
        final, streamed = "".join(self._final), "".join(self._streamed)
        if len(final) > len(streamed):
            if not final.startswith(streamed):
                raise self._restarted(len(streamed), len(final))
            chunks += self._text(final[len(streamed) :])  # text that came without deltas
        elif not streamed.startswith(final):
            raise self._restarted(len(streamed), len(final))
        return chunks

    def _restarted(self, streamed: int, final: int) -> ProviderFailure:
        why = f" after: {self.last_error}" if self.last_error else ""
        return ProviderFailure(
            "unavailable",
            f"claude restarted its answer{why} (streamed {streamed} characters, then a message of {final})",
        )

    def _on_system(self, event: ClaudeSystem) -> None:
        if event.subtype == "init" and isinstance(event.model, str):
            self._model = self._model or event.model
        elif event.subtype == "api_retry":
            status = _int_or_none(event.error_status)
            error = str(event.error or "error")
            text = f"API error {status}: {error}" if status is not None else f"API error: {error}"
            self.last_error = summarize(text)
            kind = kind_for_status(status) or classify(error)
            attempt = _int_or_none(event.attempt) or 1
            if retry_notice_is_fatal(kind, attempt=attempt, emitted=self._emitted):
                context = "claude would retry after streaming part of the answer: " if self._emitted else ""
                failure = classified_failure(text, status=status, context=context)
                delay = event.retry_delay_ms
                if failure.kind == "rate_limit" and isinstance(delay, (int, float)) and delay > 0:
                    # claude waits what the server's Retry-After said
                    failure = ProviderFailure(failure.kind, failure.message, retry_after=delay / 1000)
                raise failure

    def feed_stderr(self, line: str) -> None:
        pass  # claude reports everything it needs to in its JSON events

    def finish(self, exit: CliExit) -> RunResult:
        result = self._result
        if result is None:
            why = exit.describe()
            if self._decoder.unreadable:
                why = f"{why}; {self._decoder.describe_unreadable()}"
            if exit.returncode == 0 and not exit.stderr_tail:
                raise ProviderFailure("crashed", f"claude ended without a result ({why})")
            raise classified_failure(why, default="crashed", context="claude gave no result: ")
        if result.is_error:
            errors = result.errors if isinstance(result.errors, list) else []
            text = _str_or_none(result.result) or "; ".join(map(str, errors)) or result.subtype or "error"
            reason = _str_or_none(result.terminal_reason)
            if reason and reason not in text:
                text = f"{text} ({reason})"
            raise classified_failure(text, status=_int_or_none(result.api_error_status))
        usage = result.usage or ClaudeUsage()
        text = "".join(self._final) or "".join(self._streamed) or _str_or_none(result.result) or ""
        return RunResult(
            text=text,
            model=self._model,
            usage=Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
            stop_reason=_str_or_none(result.stop_reason),
            thinking="".join(self._thinking) or None,
        )


# --- command -------------------------------------------------------------------------


def claude_argv(binary: str, req: InferRequest, *, system_file: Path | None = None) -> list[str]:
    """claude's command line for ``req``; the prompt goes on stdin."""
    argv = [binary, *BASE_ARGS]
    if req.model and req.model != "auto":
        argv += ["--model", req.model]
    if req.thinking and req.thinking != "off":
        effort = EFFORT.get(req.thinking)
        if effort is None:
            raise ProviderFailure("bad_request", f"unknown thinking level {req.thinking!r}")
        argv += ["--effort", effort]
    if system_file is not None:
        argv += ["--system-prompt-file", str(system_file)]
    return argv


def claude_stdin(req: InferRequest) -> bytes:
    return render_prompt(req).encode()


async def run(req: InferRequest, ctx: RunContext, emit: Emit) -> RunResult:
    """Run ``req`` through ``claude -p``, streaming text and thinking through ``emit``."""
    binary = cli_binary(ctx, NAME)
    stdin = claude_stdin(req)
    system = system_text(req)
    with private_dir(ctx.tmp_dir) as scratch:
        system_file = write_private(scratch / "system.md", system) if system else None
        spec = CliSpec(
            name=NAME,
            argv=claude_argv(binary, req, system_file=system_file),
            env=dict(ctx.env),
            cwd=workspace_cwd(ctx.workspace),
            stdin=stdin,
            timeout=req.timeout,
        )
        return await run_event_cli(spec, ClaudeParser(), emit)
