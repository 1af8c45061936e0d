"""Gemini CLI (``@google/gemini-cli``) as a takod runner.

Command (research/providers.md C7)::

    gemini -p "" -o stream-json --skip-trust [-m MODEL]

- The prompt goes in on stdin: gemini appends ``-p``'s text to piped stdin, so
  an empty ``-p`` keeps the prompt off the command line while still selecting
  headless mode. (gemini waits only 500 ms for the first stdin bytes, so the
  prompt is written at once; the pipe holds 64 KiB, the rest follows as gemini
  reads.)
- ``--skip-trust`` keeps gemini 0.41+ from exiting 55 in an untrusted directory.
- The system text is a 0600 file named by ``GEMINI_SYSTEM_MD`` (gemini's own
  override of its system prompt), off the command line.
- Keys (``GEMINI_API_KEY``, Vertex variables), ``GEMINI_CLI_HOME`` and
  ``GOOGLE_GEMINI_BASE_URL`` come from ``ctx.env``.
- The auth method: ``ctx.auth_scope``, decided by ``resolve/gemini.py`` (the
  decision readiness reports): when set, a private file selecting
  ``gemini-api-key`` is named by that system-scope variable.

Events: ``init`` (``model``), ``message`` (``role``, ``content``, ``delta: true``
for an increment), ``tool_use`` / ``tool_result``, ``error`` (``severity``,
``message``), newer ``retry``, and the final ``result`` (``status``,
``error.message``, ``stats`` with token counts). Exit codes: 0 ok, 1 API
error, 41 auth, 42 input, 44 sandbox, 52 config, 53 turn limit, 55 untrusted.

gemini 0.58 retries a broken stream silently and streams the answer again from
the start; nothing in its output tells the two attempts apart, so a retry that
then succeeds repeats text. Newer builds say ``retry``; that is handled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

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
    FailureKind,
    InferRequest,
    ProviderFailure,
    RunContext,
    RunResult,
    Usage,
)
from takod_daemon.resolve.gemini import API_KEY_AUTH

NAME = "gemini"
BASE_ARGS = ("-p", "", "-o", "stream-json", "--skip-trust")
SYSTEM_ENV = "GEMINI_SYSTEM_MD"
EXIT_KINDS: dict[int, FailureKind] = {41: "auth", 42: "bad_request", 44: "crashed", 52: "crashed", 53: "bad_request"}
# gemini's retry notices on stderr (its stream-json output has none):
#   Attempt 2 failed with status 429. Retrying with backoff... <error>
#   Attempt 1 failed: <message>. Retrying after 7000ms...
#   Attempt 3 failed with 5xx error. Retrying with backoff...
#   Attempt 1 failed: <message, possibly continued on the next lines>
_ATTEMPT_RE = re.compile(
    r"^Attempt (?P<attempt>\d+) failed"
    r"(?: with status (?P<status>\d{3})| with (?P<class>429|5xx) error[^.]*)?"
    r"(?::\s*(?P<message>.*?))?(?:\.\s*(?:Retrying|Max attempts)(?P<rest>.*))?$"
)


# --- events ------------------------------------------------------------------------


class GeminiInit(msgspec.Struct, frozen=True, tag="init", tag_field="type"):
    session_id: str | None = None
    model: str | None = None


class GeminiMessage(msgspec.Struct, frozen=True, tag="message", tag_field="type"):
    role: str = ""
    content: str = ""
    delta: bool = False


class GeminiError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    severity: str = "error"
    message: str = ""


class GeminiRetry(msgspec.Struct, frozen=True, tag="retry", tag_field="type"):
    attempt: Any = None
    message: Any = None


class GeminiResultError(msgspec.Struct, frozen=True):
    type: Any = None
    message: str = ""
    code: Any = None


class GeminiStats(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    models: dict[str, Any] = {}


class GeminiResult(msgspec.Struct, frozen=True, tag="result", tag_field="type"):
    status: str = ""
    error: GeminiResultError | None = None
    stats: GeminiStats | None = None


GeminiEvent = GeminiInit | GeminiMessage | GeminiError | GeminiRetry | GeminiResult


class GeminiParser:
    """``gemini -o stream-json`` events -> chunks and a result (pure)."""

    def __init__(self) -> None:
        self._decoder: EventDecoder[GeminiEvent] = EventDecoder(GeminiEvent)
        self.last_error: str | None = None
        self._model: str | None = None
        self._parts: list[str] = []  # the answer so far, in the pieces that were emitted
        self._result: GeminiResult | None = None
        self._pending: RetryNotice | None = None

    def feed(self, line: bytes) -> list[Chunk]:
        event = self._decoder.decode(line)
        if isinstance(event, GeminiMessage) and event.role == "assistant" and event.content:
            so_far = "" if event.delta else "".join(self._parts)
            if not event.delta and not event.content.startswith(so_far):
                raise ProviderFailure("unavailable", "gemini replaced the answer it had started to stream")
            new = event.content[len(so_far) :]  # a whole message repeats what came so far
            if not new:
                return []
            self._parts.append(new)
            return [Chunk("text", new)]
        if isinstance(event, GeminiInit):
            self._model = event.model
        elif isinstance(event, GeminiError) and event.severity != "warning":
            self.last_error = summarize(event.message)
        elif isinstance(event, GeminiRetry):
            why = event.message if isinstance(event.message, str) else "gemini retried the request"
            self.last_error = summarize(why)
            if self._parts:
                raise classified_failure(why, context="gemini would retry after streaming part of the answer: ")
        elif isinstance(event, GeminiResult):
            self._result = event
        return []

    def feed_stderr(self, line: str) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:  # the notice's message went on onto this line
            self._judge(pending._replace(message=f"{pending.message} {line}"))
        notice = parse_retry_notice(line)
        if notice is not None:
            if notice.complete:
                self._judge(notice)
            else:
                self.last_error, self._pending = summarize(notice.message), notice

    def _judge(self, notice: RetryNotice) -> None:
        self.last_error = summarize(notice.message)
        kind = kind_for_status(notice.status) or classify(notice.message)
        if retry_notice_is_fatal(kind, attempt=notice.attempt, emitted=bool(self._parts)):
            context = "gemini would retry after streaming part of the answer: " if self._parts else ""
            raise classified_failure(notice.message, status=notice.status, context=context)

    def finish(self, exit: CliExit) -> RunResult:
        result = self._result
        if result is None:
            why = exit.describe()
            if self._decoder.unreadable:
                why = f"{why}; {self._decoder.describe_unreadable()}"
            if exit.returncode == 0 and not exit.stderr_tail:
                raise ProviderFailure("crashed", f"gemini ended without a result ({why})")
            text = f"gemini gave no result: {self.last_error or why}"
            if exit.returncode in EXIT_KINDS:  # gemini's own exit codes say what failed
                raise ProviderFailure(EXIT_KINDS[exit.returncode], summarize(f"{text} (exit {exit.returncode})"))
            raise classified_failure(text, default="crashed")
        if result.status != "success":
            message = (result.error.message if result.error else "") or self.last_error or f"status {result.status!r}"
            raise classified_failure(message)
        stats = result.stats or GeminiStats()
        return RunResult(
            text="".join(self._parts),
            model=answering_model(stats) or self._model,
            usage=Usage(input_tokens=stats.input_tokens, output_tokens=stats.output_tokens),
            stop_reason=result.status,
        )


class RetryNotice(NamedTuple):
    attempt: int
    status: int | None  # HTTP status, when gemini says
    message: str  # what failed
    complete: bool  # False: the message goes on on the next stderr line


def parse_retry_notice(line: str) -> RetryNotice | None:
    """gemini's stderr retry notice ("Attempt 2 failed with status 429. Retrying ..."), or None."""
    match = _ATTEMPT_RE.search(line)
    if match is None:
        return None
    status = int(match["status"]) if match["status"] else (429 if match["class"] == "429" else None)
    if match["class"] == "5xx":
        status = 500
    message = match["message"] or line[match.start() :]
    if match["message"] and " after " in (match["rest"] or ""):
        message = f"{message} (retrying {match['rest'].strip().removesuffix('...')})"
    return RetryNotice(int(match["attempt"]), status, message, complete=match["rest"] is not None or not match["message"])


def answering_model(stats: GeminiStats) -> str | None:
    """The model that did the answering: the last one in ``stats.models`` that
    produced output. gemini lists models in the order it first called them, and
    calls its helpers first: with ``auto`` its router asks a classifier model
    (flash-lite, often with more output tokens than a short answer) which model
    to use, and a failed model's fallback comes after it. (``init`` names only
    the requested model, e.g. ``gemini-2.5-flash`` that gemini routed to
    ``gemini-3.5-flash``.)"""

    def produced(name: str) -> bool:
        entry = stats.models.get(name)
        value = entry.get("output_tokens") if isinstance(entry, dict) else None
        return isinstance(value, int) and value > 0

    names = list(stats.models)
    return next((name for name in reversed(names) if produced(name)), names[-1] if names else None)


# --- command -------------------------------------------------------------------------


def gemini_argv(binary: str, req: InferRequest) -> list[str]:
    """gemini's command line for ``req``; the prompt goes on stdin."""
    argv = [binary, *BASE_ARGS]
    if req.model and req.model != "auto":
        argv += ["-m", req.model]
    return argv


def gemini_env(ctx: RunContext, system_file: Path | None, auth_file: tuple[str, Path] | None = None) -> dict[str, str]:
    env = dict(ctx.env)
    if system_file is not None:
        env[SYSTEM_ENV] = str(system_file)
    if auth_file is not None:
        env[auth_file[0]] = str(auth_file[1])
    return env


def gemini_stdin(req: InferRequest) -> bytes:
    return render_prompt(req).encode()


async def run(req: InferRequest, ctx: RunContext, emit: Emit) -> RunResult:
    """Run ``req`` through ``gemini -p``, streaming text through ``emit``."""
    binary = cli_binary(ctx, NAME)
    stdin = gemini_stdin(req)
    system = system_text(req)
    with private_dir(ctx.tmp_dir) as scratch:
        system_file = write_private(scratch / "system.md", system) if system else None
        auth_file = None
        if ctx.auth_scope is not None:
            auth_file = (ctx.auth_scope, write_private(scratch / "auth-settings.json", json.dumps(API_KEY_AUTH)))
        spec = CliSpec(
            name=NAME,
            argv=gemini_argv(binary, req),
            env=gemini_env(ctx, system_file, auth_file),
            cwd=workspace_cwd(ctx.workspace),
            stdin=stdin,
            timeout=req.timeout,
        )
        return await run_event_cli(spec, GeminiParser(), emit)
