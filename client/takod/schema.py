"""Typed parameters and results of every RPC method (the daemon's public API).

Every method takes ``params`` = ``[]`` or ``[options]`` where ``options`` is a
map decoded into the method's ``*Params`` Struct (unknown keys are an error,
so typos surface). Results are maps. docs/PROTOCOL.md describes each one.

Standard library and msgspec only: the CLI loads it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PROVIDERS = ("pi", "ollama", "codex", "claude", "gemini")
TOPICS = ("status", "auth", "daemon", "login")


class Params(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every method's options map."""


class Result(msgspec.Struct, omit_defaults=False):
    """Base of every method's result map."""


# hello ---------------------------------------------------------------------


class HelloParams(Params):
    client: str | None = None  # a name for logs, e.g. "takod-cli/0.1.0"
    workspace: str | None = None  # default workspace for this connection's requests
    protocol: int | None = None  # the protocol version the client speaks


class HelloResult(Result):
    server: str
    version: str
    protocol: int
    pid: int
    capabilities: list[str]
    methods: list[str]
    workspace: str


# ping ----------------------------------------------------------------------


class PingParams(Params):
    pass


# status --------------------------------------------------------------------


class StatusParams(Params):
    workspace: str | None = None


class ProviderStatus(Result):
    """One provider's readiness: ``level`` is how far it got, ``reason`` why not further."""

    name: str
    ready: bool
    level: str  # not-installed | installed | credentials | reachable | ready | unknown
    reason: str | None  # stable reason code, None when ready
    hint: str | None  # one-line fix
    detail: dict[str, object] = msgspec.field(default_factory=dict)


class DaemonInfo(Result):
    pid: int
    version: str
    protocol: int
    started_at: float
    uptime_s: float
    socket: str
    state_dir: str
    activated: bool
    connections: int


class StatusResult(Result):
    daemon: DaemonInfo
    workspace: str
    selected: str | None
    providers: list[ProviderStatus]
    seq: int
    updated_at: float


# subscribe / unsubscribe ---------------------------------------------------


class SubscribeParams(Params):
    topics: list[str] | None = None  # None: every topic
    deliver: Literal["notify", "autocmd"] = "notify"


class SubscribeResult(Result):
    sub_id: int
    topics: list[str]
    deliver: str


class UnsubscribeParams(Params):
    sub_id: int


class UnsubscribeResult(Result):
    removed: bool


# shutdown ------------------------------------------------------------------


class ShutdownParams(Params):
    pass


class ShutdownResult(Result):
    stopping: bool
    pid: int
