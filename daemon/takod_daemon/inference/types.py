"""What every inference backend takes and gives: the contract between routing and runners.

A *runner* turns one :class:`InferRequest` into text for one provider (a CLI
subprocess or an HTTP API). It streams :class:`Chunk`\\ s through ``emit`` as
they arrive and returns a :class:`RunResult`, or raises :class:`ProviderFailure`
saying what went wrong and whether another provider may be tried. Runners never
decide fallback; the router does. A runner that is cancelled must stop its work
at once: kill the child's process group, close the HTTP stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import msgspec

from ..credentials.summary import SecretStruct


class Message(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


class InferRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt, provider-neutral. ``messages`` is the conversation (the last is
    the user's turn); ``system`` is extra system text."""

    messages: list[Message]
    system: str | None = None
    model: str | None = None  # provider-specific name; None: the provider's default
    temperature: float | None = None
    format: Literal["text", "json"] = "text"
    thinking: str | None = None  # off | minimal | low | medium | high | xhigh
    max_tokens: int | None = None
    timeout: float = 180.0  # seconds for the whole run of one provider


ChunkKind = Literal["text", "thinking"]


class Chunk(msgspec.Struct, frozen=True):
    kind: ChunkKind
    text: str


Emit = Callable[[Chunk], Awaitable[None]]

# The whole answer (text and thinking) may be at most this many characters: the
# reply carrying it must fit a client's 16 MiB frame, and a provider that never
# stops must not fill the daemon's memory until the timeout.
MAX_ANSWER_CHARS = 8 * 1024 * 1024


def cap_answer(emit: Emit, who: str, limit: int = MAX_ANSWER_CHARS) -> Emit:
    """``emit``, failing the run (``crashed``) once ``who`` streamed more than
    ``limit`` characters."""
    size = 0

    async def capped(chunk: Chunk) -> None:
        nonlocal size
        size += len(chunk.text)
        if size > limit:
            raise ProviderFailure("crashed", f"{who} answered more than {limit} characters")
        await emit(chunk)

    return capped


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int | None = None
    output_tokens: int | None = None


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    model: str | None = None  # the model that actually answered, when the provider says
    usage: Usage = Usage()
    stop_reason: str | None = None
    thinking: str | None = None


FailureKind = Literal[
    "auth",  # credentials rejected or missing (needs login / key)
    "rate_limit",  # 429 / quota; retry_after when known
    "unavailable",  # cannot reach the provider, 5xx, overloaded
    "model",  # the model does not exist or is not available to this account
    "bad_request",  # the provider refused the request as malformed
    "timeout",  # no answer within the request's timeout
    "crashed",  # the CLI died or printed something we cannot read
    "empty",  # finished without any text
    "interactive",  # the CLI wanted to ask the user something
]


class ProviderFailure(Exception):
    """A provider could not answer. ``message`` is already redacted (no secrets);
    ``retry_after`` is seconds the provider asked us to wait."""

    def __init__(self, kind: FailureKind, message: str, *, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class RunContext(SecretStruct, frozen=True, kw_only=True):
    """Where and with what a runner runs.

    ``env`` is the complete environment for a child process (keys from the key
    store included; never put a key on a command line). ``binary`` is the CLI
    to run, when the provider is a CLI; ``base_url`` and ``api_key`` are for
    HTTP backends. ``auth_scope`` (gemini): the system settings scope in which
    the runner selects API-key auth (``resolve.gemini.resolve_gemini``);
    ``model`` (codex): the one it runs when the request names none
    (``resolve.codex.resolve_codex``).
    """

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"env", "api_key"})

    workspace: Path
    env: Mapping[str, str]
    binary: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    tmp_dir: Path | None = None
    auth_scope: str | None = None
    model: str | None = None
