"""Core methods: hello, ping, subscribe, unsubscribe, shutdown.

``hello``, ``ping`` and ``unsubscribe`` only touch memory, so they are plain
functions: answered inline, without a task (see :mod:`takod_daemon.rpc`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import structlog

from takod.protocol import RpcError, invalid
from takod.schema import (
    TOPICS,
    HelloParams,
    HelloResult,
    PingParams,
    ShutdownParams,
    ShutdownResult,
    SubscribeParams,
    SubscribeResult,
    UnsubscribeParams,
    UnsubscribeResult,
    workspace_problem,
)

from ..api import registry
from ..rpc import Call

if TYPE_CHECKING:
    from ..state import Workspace

log = structlog.get_logger("takod.methods")

CAPABILITIES = ["subscribe", "autocmd-events", "cancel", "pipelining"]
# Each subscription costs a queue of up to 256 events and a pump task (~6 KiB idle):
# without a cap one connection could hold any amount of the daemon's memory.
MAX_SUBSCRIPTIONS = 64


def workspace_of(call: Call, explicit: str | None) -> str:
    """The request's workspace: explicit, else the connection's (from hello), else the daemon's default.
    An impossible path is ``invalid_params`` (kind 1), never a failure inside a handler."""
    if explicit is not None and (problem := workspace_problem(explicit)) is not None:
        raise invalid("invalid_params", f"{problem}; pass the workspace's absolute path (or omit it)")
    return explicit or call.conn.workspace or str(call.daemon.default_workspace)


async def require_trusted(call: Call, ws: "Workspace", act: str) -> None:
    """Refuse ``act`` (it runs, writes or follows something in ``ws``) unless the
    workspace is the user's own, checked again now (trust.py): ``untrusted_workspace``."""
    verdict = await call.daemon.state.check_trust(ws)
    if not verdict.trusted:
        assert verdict.problem is not None
        why = verdict.hint if verdict.problem.foreign else f"{verdict.detail}; {verdict.hint}"
        raise RpcError("untrusted_workspace", f"takod will not {act} here: {why}")


async def autocmd_data_supported(call: Call) -> bool:
    """Whether the Neovim on this connection accepts autocmd ``data`` (0.8+; older
    ones get the payload in a global variable only). Neovim answers this nested
    request while it waits in rpcrequest(); asked once per connection."""
    if call.conn.nvim_data is None:
        try:
            call.conn.nvim_data = bool(await call.conn.call("nvim_call_function", ["has", ["nvim-0.8"]], timeout=2))
        except (RpcError, TimeoutError):
            call.conn.nvim_data = True
    return call.conn.nvim_data


@registry.method("hello", HelloParams)
def hello(call: Call, p: HelloParams) -> HelloResult:
    if p.client:
        call.conn.client_name = p.client[:100]
    if p.workspace:
        # Checked before it is kept: a bad one must not become every later call's workspace.
        call.conn.workspace = workspace_of(call, p.workspace)
    d = call.daemon
    return HelloResult(
        server="takod",
        version=d.version,
        protocol=d.protocol,
        pid=os.getpid(),
        capabilities=CAPABILITIES,
        methods=d.registry.names(),
        workspace=workspace_of(call, None),
    )


@registry.method("ping", PingParams)
def ping(call: Call, p: PingParams) -> str:
    return "pong"


@registry.method("subscribe", SubscribeParams)
async def subscribe(call: Call, p: SubscribeParams) -> SubscribeResult:
    topics = list(TOPICS) if p.topics is None else p.topics
    unknown = sorted(set(topics) - set(TOPICS))
    if not topics:
        raise invalid("invalid_params", f"no topics given; topics are {', '.join(TOPICS)} (omit topics for all)")
    if unknown:
        raise invalid("invalid_params", f"unknown topic(s) {', '.join(unknown)}; topics are {', '.join(TOPICS)}")
    nvim_data = await autocmd_data_supported(call) if p.deliver == "autocmd" else True
    # Checked after the await: nothing else can subscribe on this connection between here and add_subscription.
    if call.conn.subscription_count >= MAX_SUBSCRIPTIONS:
        raise invalid(
            "too_many_subscriptions",
            f"this connection already holds {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe one or subscribe to more topics at once",
        )
    sub = call.daemon.bus.subscribe(topics, p.deliver)
    call.conn.add_subscription(sub, nvim_data)
    return SubscribeResult(sub_id=sub.sub_id, topics=sorted(sub.topics), deliver=p.deliver)


@registry.method("unsubscribe", UnsubscribeParams)
def unsubscribe(call: Call, p: UnsubscribeParams) -> UnsubscribeResult:
    return UnsubscribeResult(removed=call.conn.remove_subscription(p.sub_id))


@registry.method("shutdown", ShutdownParams)
async def shutdown(call: Call, p: ShutdownParams) -> ShutdownResult:
    log.info("shutdown requested", client=call.conn.client_name)
    call.daemon.request_stop("shutdown requested")
    return ShutdownResult(stopping=True, pid=os.getpid())
