"""Running a provider CLI as a child process: the part the pi, codex, claude and gemini runners share.

A runner builds a :class:`CliSpec` (argv, environment, working directory, the
bytes for stdin, a wall-clock timeout) with pure functions, picks an
:class:`EventParser` for the CLI's JSON-lines output, and calls
:func:`run_event_cli`. Everything with a process in it happens here:

- the child starts in a new session (``start_new_session=True``), so it leads
  its own process group and every process it starts (codex.js runs a native
  binary, gemini relaunches itself, tools spawn shells) can be signalled at once;
- the prompt goes in on stdin, which is then closed: a CLI that wants to ask
  the user something reads end-of-file instead of hanging;
- stdout is read line by line. A line may be at most ``LINE_LIMIT`` bytes (a
  longer one fails the run: the CLI is not speaking JSON lines, and memory
  stays bounded); lines that start with ``{`` go to the parser, anything else
  is kept in a short tail as "noise" for error messages;
- stderr is read line by line too (long lines cut short) into a short tail,
  masked with :func:`takod_daemon.redact.redact_text` as it arrives;
- a line, or an unfinished line, on stderr or in stdout's noise that looks like
  an interactive question (Takobot's "press enter to continue" signals) fails
  the run at once as ``interactive``;
- a timeout, a failure, or the caller's cancellation stops the whole process
  group: SIGTERM, ``KILL_GRACE`` seconds, then SIGKILL. After the CLI exits on
  its own, whatever it left running in its group is killed too. No orphans.

Also here, because every runner needs them: turning an :class:`InferRequest`
into the one prompt a CLI takes (:func:`render_prompt`), private temporary
files for system prompts (:func:`private_dir`), classifying a provider's error
text into a :data:`FailureKind` (:func:`classify`), and failure messages that
are masked, short and free of the keys in the child's environment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
import msgspec
from anyio.abc import Process, TaskGroup

from takod_daemon.inference.types import (
    Chunk,
    Emit,
    FailureKind,
    InferRequest,
    ProviderFailure,
    RunContext,
    RunResult,
    cap_answer,
)
from takod_daemon.peer_input import LineSplitter, LineTooLong
from takod_daemon.redact import is_secret_key, mask_secret, redact_text

# A JSON line from a CLI may be this long. pi repeats the whole message so far
# in every message_update line (twice), so this bounds the answer pi can give
# at a few MiB; anything longer is not a CLI we understand.
LINE_LIMIT = 16 * 1024 * 1024
# stderr lines and noise lines are cut to this many bytes.
STDERR_LINE_LIMIT = 4096
# How many stderr lines / noise lines are kept for error messages.
TAIL_LINES = 40
# SIGTERM -> SIGKILL grace, and how long a CLI may take to exit after closing stdout.
KILL_GRACE = 2.0
# How many of its own retries of a transient error a CLI may make before takod stops it.
CLI_RETRIES = 2
# Failure messages are cut to this many characters.
SUMMARY_CHARS = 400
# Takobot's signals (research/takobot-inference.md §3.7), plus yes/no prompts.
INTERACTIVE_SIGNALS = (
    "press any key to continue",
    "press enter to continue",
    "press return to continue",
    "(y/n)",
    "[y/n]",
)
# An unfinished line is checked for a question only while it is this short
# (a question is short; re-scanning a growing line would cost O(n^2)).
_PARTIAL_SCAN_BYTES = 4096


# --- specs and results ----------------------------------------------------------


class CliSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One CLI run: what :func:`run_cli` starts and how long it may take."""

    name: str  # for messages: "pi", "codex", ...
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    stdin: bytes | None = None  # None: stdin is /dev/null
    timeout: float = 180.0


class CliExit(msgspec.Struct, frozen=True, kw_only=True):
    """How a CLI ended. ``returncode`` is None when it closed stdout but did not
    exit within the grace period (it was then killed)."""

    returncode: int | None
    stderr_tail: tuple[str, ...] = ()  # masked
    stdout_noise: tuple[str, ...] = ()  # masked non-JSON stdout lines

    def telling_line(self) -> str:
        """The stderr (else noise) line most worth quoting: the last one that
        reads like an error, else the last one."""
        for lines in (self.stderr_tail, self.stdout_noise):
            for line in reversed(lines):
                if _ERRORISH_RE.search(line):
                    return line
            if lines:
                return lines[-1]
        return ""

    def describe(self) -> str:
        """``exited N: <telling line>`` (or ``did not exit``)."""
        how = "did not exit after closing its output" if self.returncode is None else f"exited {self.returncode}"
        line = self.telling_line()
        return f"{how}: {line}" if line else how


_ERRORISH_RE = re.compile(r"error|fail|fatal|denied|invalid|not found|unauthori|refused|exceeded", re.IGNORECASE)


# --- reading lines --------------------------------------------------------------


class Tail:
    """The last few lines of a stream, decoded and masked."""

    def __init__(self, size: int = TAIL_LINES, line_chars: int = 1000):
        self._lines: deque[str] = deque(maxlen=size)
        self._line_chars = line_chars

    def add(self, raw: bytes) -> str:
        text = redact_text(raw[:8192].decode("utf-8", "replace").strip())[: self._line_chars]
        if text:
            self._lines.append(text)
        return text

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)


def interactive_signal(text: str) -> str | None:
    """The interactive-prompt signal ``text`` contains, if any."""
    lowered = text.lower()
    return next((signal_ for signal_ in INTERACTIVE_SIGNALS if signal_ in lowered), None)


# --- classifying provider errors -------------------------------------------------

_STATUS_KINDS: dict[int, FailureKind] = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "model",
    408: "unavailable",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limit",
}

# Checked in order: the first kind whose pattern matches wins.
_TEXT_KINDS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    (
        "model",
        re.compile(
            r"model not found|no model (?:found|matching)|unknown model|unsupported model|"
            r"model is not supported|invalid model|model_not_found|"
            r"does not exist or you do not have access|not available (?:for your account|to this user)|"
            r"does not have access to (?:the )?model|issue with the selected model|"
            r"is not found for api version|\bmodel\b[^\n]{0,120}?\bnot found\b",
            re.IGNORECASE,
        ),
    ),
    (
        "rate_limit",
        re.compile(
            r"rate[ _-]?limit|too many requests|resource[ _]exhausted|resource has been exhausted|"
            r"exceeded your current quota|quota exceeded|usage limit|\b429\b",
            re.IGNORECASE,
        ),
    ),
    (
        "auth",
        re.compile(
            r"\b40[13]\b|unauthori[sz]ed|forbidden|authenticat|invalid[ _-]?api[ _-]?key|api key not valid|"
            r"incorrect api key|invalid x-api-key|no api key|api key (?:is )?(?:missing|required)|"
            r"not logged in|/login\b|log ?in again|login required|token (?:has )?expired|invalid_grant|"
            r"refresh token|permission[ _]denied|ineligibletier|no longer supported for gemini code assist",
            re.IGNORECASE,
        ),
    ),
    (
        "bad_request",
        re.compile(
            r"\b(?:400|413|422)\b|invalid[ _]request|bad request|context (?:length|window)|"
            r"prompt is too long|too many tokens|maximum context",
            re.IGNORECASE,
        ),
    ),
    (
        "unavailable",
        re.compile(
            r"connection|econn|enotfound|eai_again|network|fetch failed|socket hang up|timed? ?out|"
            r"overloaded|unavailable|internal server error|server[ _]error|\b5\d\d\b|"
            r"stream (?:disconnected|closed|ended)",
            re.IGNORECASE,
        ),
    ),
)

_RETRY_AFTER_RE = re.compile(
    r"(?:retry(?:ing)?[ _-]?after|try again in|retry in|retrydelay)[\"':= ]*(\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?\b",
    re.IGNORECASE,
)


def kind_for_status(status: int | None) -> FailureKind | None:
    """The failure kind an HTTP status of a model API means, when it says one."""
    if status is None:
        return None
    if status in _STATUS_KINDS:
        return _STATUS_KINDS[status]
    return "unavailable" if 500 <= status < 600 else None


def classify(text: str, *, status: int | None = None, default: FailureKind = "unavailable") -> FailureKind:
    """What kind of failure a provider's error ``text`` (and HTTP ``status``,
    when known) describes."""
    by_status = kind_for_status(status)
    if by_status is not None:
        return by_status
    for kind, pattern in _TEXT_KINDS:
        if pattern.search(text):
            return kind
    return default


def retry_after_from(text: str) -> float | None:
    """Seconds to wait, when ``text`` says ("retry after 7s", "try again in 20ms")."""
    match = _RETRY_AFTER_RE.search(text)
    if match is None:
        return None
    value, unit = float(match[1]), (match[2] or "s").lower()
    if unit.startswith("ms") or unit.startswith("milli"):
        return value / 1000
    if unit.startswith("m"):
        return value * 60
    return value


def summarize(text: str, limit: int = SUMMARY_CHARS) -> str:
    """``text`` on one line, masked, at most ``limit`` characters."""
    one = redact_text(" ".join(text.split()))
    return one if len(one) <= limit else one[: limit - 1] + "…"


def classified_failure(
    text: str, *, status: int | None = None, default: FailureKind = "unavailable", context: str = ""
) -> ProviderFailure:
    """A :class:`ProviderFailure` for a provider's error ``text``: kind from
    :func:`classify`, retry-after from the text for rate limits."""
    kind = classify(text, status=status, default=default)
    retry_after = retry_after_from(text) if kind == "rate_limit" else None
    return ProviderFailure(kind, summarize(f"{context}{text}"), retry_after=retry_after)


def retry_notice_is_fatal(kind: FailureKind, *, attempt: int, emitted: bool) -> bool:
    """Whether to stop a CLI that announced it will retry after an error of
    ``kind`` (its ``attempt``-th retry), instead of letting it retry.

    - text already reached the caller: a retry would restart the answer, so stop;
    - a missing model or a malformed request: retrying cannot help;
    - a rate limit: the CLI would sit out the wait; better fall through to
      another provider and let the router cool this one down;
    - auth: stop from the second notice (the first retry may follow the CLI's
      own token refresh);
    - anything else (unreachable, 5xx): let the CLI retry ``CLI_RETRIES``
      times, then fall through rather than sit out its back-off (claude and
      gemini back off for minutes).
    """
    if emitted or kind in ("model", "bad_request", "rate_limit"):
        return True
    if kind == "auth":
        return attempt >= 2
    return attempt > CLI_RETRIES


# --- secrets in messages ---------------------------------------------------------

_SECRET_ENV_RE = re.compile(r"(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)


_URL_USERINFO_RE = re.compile(r"://([^/@\s]{4,})@")


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values of the secret-looking variables in ``env``, and credentials inside
    URLs (``http://user:pass@proxy``), longest first: to be masked wherever they
    might show up in a message."""
    found = {
        value
        for name, value in env.items()
        if len(value) >= 8 and (is_secret_key(name) or _SECRET_ENV_RE.search(name))
    }
    found.update(match for value in env.values() for match in _URL_USERINFO_RE.findall(value))
    return tuple(sorted(found, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask_secret(secret))
    return text


# --- the prompt a CLI gets ---------------------------------------------------------

_ROLE_LABELS = {"user": "User", "assistant": "Assistant"}
JSON_INSTRUCTION = "Respond with valid JSON only: no prose, no Markdown code fences."


def system_text(req: InferRequest) -> str | None:
    """``req.system`` plus any system messages, or None."""
    parts = [req.system or ""] + [m.content for m in req.messages if m.role == "system"]
    text = "\n\n".join(part.strip() for part in parts if part.strip())
    return text or None


def render_prompt(req: InferRequest, *, fold_system: bool = False) -> str:
    """The one prompt text a single-shot CLI gets for ``req``.

    One user message is sent as it is; a longer conversation becomes a
    ``User:`` / ``Assistant:`` transcript ending with the last turn. With
    ``format="json"`` an instruction to answer in JSON is appended. With
    ``fold_system`` the system text leads the prompt inside ``<system>`` tags
    (for CLIs that cannot take a system prompt without putting it on the
    command line). Raises ``bad_request`` when there is nothing to send.
    """
    turns = [m for m in req.messages if m.role != "system" and m.content.strip()]
    if not turns:
        raise ProviderFailure("bad_request", "the request has no message to send")
    if len(turns) == 1 and turns[0].role == "user":
        body = turns[0].content
    else:
        body = "\n\n".join(f"{_ROLE_LABELS[m.role]}: {m.content}" for m in turns)
    if req.format == "json":
        body = f"{body}\n\n{JSON_INSTRUCTION}"
    system = system_text(req) if fold_system else None
    return f"<system>\n{system}\n</system>\n\n{body}" if system else body


@contextmanager
def private_dir(parent: Path | None) -> Iterator[Path]:
    """A fresh 0700 directory (under ``parent`` when given), removed afterwards."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="takod-run-", dir=parent) as path:
        yield Path(path)


def write_private(path: Path, text: str) -> Path:
    """Create ``path`` with mode 0600 holding ``text``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def cli_binary(ctx: RunContext, name: str) -> str:
    """``ctx.binary``, else ``name`` on the child's PATH; ``unavailable`` when neither."""
    found = ctx.binary or shutil.which(name, path=ctx.env.get("PATH", ""))
    if not found:
        raise ProviderFailure("unavailable", f"{name} is not installed (not on PATH)")
    return found


def workspace_cwd(workspace: Path) -> str | None:
    """The directory a CLI runs in: the workspace, when it is one (else ours)."""
    return str(workspace) if workspace.is_dir() else None


def prepend_path(env: Mapping[str, str], directory: str | None) -> dict[str, str]:
    """A copy of ``env`` with ``directory`` first on PATH (once)."""
    out = dict(env)
    if directory:
        rest = [entry for entry in out.get("PATH", "").split(os.pathsep) if entry and entry != directory]
        out["PATH"] = os.pathsep.join([directory, *rest])
    return out


# --- decoding JSON event lines ---------------------------------------------------

E = TypeVar("E")


class _Envelope(msgspec.Struct):
    type: str = ""


class EventDecoder(Generic[E]):
    """Decodes one JSON line into one of a tagged union of event Structs.

    ``decode`` returns the event; None for a JSON object of a type the union
    does not model (skipped: CLIs add event types freely); and None, counting
    it in ``unreadable``, for a line that is not JSON or a known type with
    wrong fields.
    """

    def __init__(self, union: Any):
        self._decoder: msgspec.json.Decoder[E] = msgspec.json.Decoder(union)
        self._envelope = msgspec.json.Decoder(_Envelope)
        members = getattr(union, "__args__", (union,))
        self.known = frozenset(str(m.__struct_config__.tag) for m in members)
        self.unreadable = 0
        self.unreadable_sample: str | None = None

    def decode(self, line: bytes) -> E | None:
        try:
            return self._decoder.decode(line)
        except msgspec.ValidationError:
            try:
                kind = self._envelope.decode(line).type
            except (msgspec.ValidationError, msgspec.DecodeError):
                kind = None
            if kind is not None and kind not in self.known:
                return None
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        self.unreadable += 1
        if self.unreadable_sample is None:
            self.unreadable_sample = summarize(line[:300].decode("utf-8", "replace"), 200)
        return None

    def describe_unreadable(self) -> str:
        return f"{self.unreadable} unreadable line(s), e.g. {self.unreadable_sample!r}" if self.unreadable else ""


# --- running the process -----------------------------------------------------------

LineHandler = Callable[[bytes], Awaitable[None]]
StderrHandler = Callable[[str], None]


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@asynccontextmanager
async def _task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose failures come out as themselves, not wrapped in an
    exception group: the first :class:`ProviderFailure`, else the one
    exception that is not a cancellation (say, the caller's ``emit`` failing)."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        failure = next((exc for exc in leaves if isinstance(exc, ProviderFailure)), None)
        if failure is not None:
            raise failure from None
        cancelled = anyio.get_cancelled_exc_class()
        real = [exc for exc in leaves if not isinstance(exc, cancelled)]
        if len(real) == 1:
            raise real[0] from None
        raise


def signal_group(pgid: int, signum: int) -> None:
    """Signal every process in the group ``pgid``; a group that is gone is fine."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


async def stop_group(process: Process, grace: float = KILL_GRACE) -> None:
    """End ``process`` and everything in its process group: SIGTERM, up to
    ``grace`` seconds for the leader to exit, then SIGKILL for whatever is left.
    Closes the pipes and reaps the leader. Call it shielded from cancellation.

    The group id is the leader's pid (it started a new session). Once the
    leader is reaped that id could in theory be reused; the final SIGKILL
    follows the reap within microseconds, as in every process supervisor.
    """
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await process.wait()
    signal_group(process.pid, signal.SIGKILL)
    with anyio.move_on_after(grace):
        await process.aclose()  # closes the pipes, waits for the (killed) leader


class _Session:
    """The I/O of one running CLI (see :func:`run_cli`)."""

    def __init__(
        self,
        spec: CliSpec,
        process: Process,
        on_line: LineHandler,
        on_stderr: StderrHandler | None,
        line_limit: int,
        grace: float,
    ):
        self.spec = spec
        self.process = process
        self.on_line = on_line
        self.on_stderr = on_stderr
        self.line_limit = line_limit
        self.grace = grace
        self.stderr = Tail()
        self.noise = Tail()
        self.stdout_done = anyio.Event()
        self.stderr_done = anyio.Event()

    def _check_interactive(self, text: str) -> None:
        found = interactive_signal(text)
        if found is not None:
            line = summarize(text, 200)
            raise ProviderFailure("interactive", f"{self.spec.name} asked for input ({found!r}): {line}")

    async def communicate(self) -> CliExit:
        async with _task_group() as tg:
            tg.start_soon(self._sweep_after_exit)
            if self.spec.stdin is not None:
                tg.start_soon(self._feed_stdin, self.spec.stdin)
            tg.start_soon(self._pump_stderr)
            await self._pump_stdout()
            # stdout is closed: the CLI is done talking; let it exit and finish stderr.
            with anyio.move_on_after(self.grace):
                await self.process.wait()
                await self.stderr_done.wait()
            tg.cancel_scope.cancel()
        return CliExit(
            returncode=self.process.returncode,
            stderr_tail=self.stderr.lines(),
            stdout_noise=self.noise.lines(),
        )

    async def _sweep_after_exit(self) -> None:
        """The leader exited but stdout stays open: something it started holds
        the pipe. Give it ``grace``, then kill what is left of the group (its
        output already written is still read to the end)."""
        await self.process.wait()
        with anyio.move_on_after(self.grace):
            await self.stdout_done.wait()
            return
        signal_group(self.process.pid, signal.SIGKILL)

    async def _feed_stdin(self, data: bytes) -> None:
        stream = self.process.stdin
        assert stream is not None
        try:
            await stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the CLI exited or closed stdin without reading all of it; its output says why
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (anyio.BrokenResourceError, OSError):
                    pass

    async def _pump_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        splitter = LineSplitter(self.line_limit)
        try:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                try:
                    lines = splitter.feed(data)
                except LineTooLong as exc:
                    raise ProviderFailure(
                        "crashed", f"{self.spec.name} printed a line of more than {self.line_limit} bytes ({exc.size})"
                    ) from None
                for line in lines:
                    await self._stdout_line(line)
                if 0 < splitter.pending_size <= _PARTIAL_SCAN_BYTES and not splitter.pending.lstrip().startswith(b"{"):
                    self._check_interactive(splitter.pending.decode("utf-8", "replace"))
            rest = splitter.close()
            if rest:
                await self._stdout_line(rest)
        finally:
            self.stdout_done.set()

    async def _stdout_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        if line.startswith(b"{"):
            await self.on_line(line)
        else:
            self._check_interactive(self.noise.add(line))

    async def _pump_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        splitter = LineSplitter(STDERR_LINE_LIMIT, truncate=True)
        try:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                for line in splitter.feed(data):
                    self._stderr_line(line)
                if 0 < splitter.pending_size <= _PARTIAL_SCAN_BYTES:
                    self._check_interactive(splitter.pending.decode("utf-8", "replace"))
            rest = splitter.close()
            if rest:
                self._stderr_line(rest)
        finally:
            self.stderr_done.set()

    def _stderr_line(self, line: bytes) -> None:
        text = self.stderr.add(line)
        if text:
            self._check_interactive(text)
            if self.on_stderr is not None:
                self.on_stderr(text)


async def run_cli(
    spec: CliSpec,
    on_line: LineHandler,
    *,
    on_stderr: StderrHandler | None = None,
    line_limit: int = LINE_LIMIT,
    grace: float = KILL_GRACE,
) -> CliExit:
    """Run ``spec`` to the end, handing each JSON line of stdout to ``on_line``
    and each (masked) stderr line to ``on_stderr``.

    Raises :class:`ProviderFailure`: ``unavailable`` when the CLI cannot start,
    ``timeout`` after ``spec.timeout`` seconds, ``interactive`` when it asks a
    question, ``crashed`` for an over-long line; and whatever ``on_line``
    raises. However it ends (cancellation included), the CLI's process group is
    stopped before this returns.
    """
    try:
        process = await anyio.open_process(
            spec.argv,
            stdin=subprocess.PIPE if spec.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProviderFailure("unavailable", f"{spec.name} could not start: {exc.strerror or exc}") from None
    session = _Session(spec, process, on_line, on_stderr, line_limit, grace)
    try:
        with anyio.move_on_after(spec.timeout) as scope:
            return await session.communicate()
        assert scope.cancelled_caught
        raise ProviderFailure("timeout", f"no answer within {spec.timeout:g} s")
    finally:
        with anyio.CancelScope(shield=True):
            await stop_group(process, grace)


# --- JSON-lines CLIs ---------------------------------------------------------------


class EventParser(Protocol):
    """What a runner plugs into :func:`run_event_cli`: pure, no I/O.

    ``feed`` takes one JSON line and returns the chunks it adds to the answer,
    or raises :class:`ProviderFailure` to stop the CLI; ``feed_stderr`` sees
    each masked stderr line (some CLIs announce retries only there) and may
    raise too; ``finish`` turns the end of the run into a :class:`RunResult` or
    raises. ``last_error`` is the latest error the CLI reported, for a
    timeout's message.
    """

    last_error: str | None

    def feed(self, line: bytes) -> list[Chunk]: ...

    def feed_stderr(self, line: str) -> None: ...

    def finish(self, exit: CliExit) -> RunResult: ...


async def run_event_cli(
    spec: CliSpec,
    parser: EventParser,
    emit: Emit,
    *,
    line_limit: int = LINE_LIMIT,
    grace: float = KILL_GRACE,
) -> RunResult:
    """Run a JSON-lines CLI: stream its chunks through ``emit`` as they come,
    then return the parser's result.

    The result's text must continue what was streamed: when it is longer, the
    rest is emitted; when it differs (the CLI restarted its answer), the run
    fails as ``unavailable``. An empty answer fails as ``empty``; an answer
    over ``MAX_ANSWER_CHARS`` as ``crashed``. Failure messages never contain
    the values of secret variables in ``spec.env``.
    """
    streamed: list[str] = []
    emit_capped = cap_answer(emit, spec.name)

    async def on_line(line: bytes) -> None:
        for chunk in parser.feed(line):
            if not chunk.text:
                continue
            if chunk.kind == "text":
                streamed.append(chunk.text)
            await emit_capped(chunk)

    try:
        try:
            exit = await run_cli(spec, on_line, on_stderr=parser.feed_stderr, line_limit=line_limit, grace=grace)
        except ProviderFailure as exc:
            if exc.kind == "timeout" and parser.last_error:
                raise ProviderFailure("timeout", f"{exc.message}; last error: {parser.last_error}") from None
            raise
        result = parser.finish(exit)
        so_far = "".join(streamed)
        if result.text != so_far:
            if result.text.startswith(so_far):
                await emit(Chunk("text", result.text[len(so_far) :]))
            elif result.text.strip() == so_far.strip():
                result = msgspec.structs.replace(result, text=so_far)
            else:
                raise ProviderFailure(
                    "unavailable",
                    f"{spec.name} replaced the answer it had started to stream "
                    f"(streamed {len(so_far)} characters, final answer {len(result.text)})",
                )
        if not result.text.strip():
            raise ProviderFailure("empty", f"{spec.name} finished without any text ({exit.describe()})")
        return result
    except ProviderFailure as exc:
        secrets = secret_values(spec.env)
        raise ProviderFailure(exc.kind, scrub(exc.message, secrets), retry_after=exc.retry_after) from None
