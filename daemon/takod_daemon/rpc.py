"""The method registry: each RPC method is one function registered here.

A handler is ``handler(ctx: Call, params: SomeParams) -> Result``. ``params``
arrives on the wire as ``[]`` or ``[options-map]`` and is decoded into the
handler's Params Struct before the handler runs, so handlers only ever see
validated, typed input.

Two kinds of handler:

- ``async def``: the request runs in its own task, with a cancel scope
  (``$/cancel``, hang-up, shutdown) and the method's time limit. Anything that
  may wait (files, threads, the network, the peer) must be one of these.
- plain ``def``: answered *inline*, synchronously inside the connection's read
  callback: no task, scope or timer, which is most of what a request costs.
  Only for handlers that read warm state in memory and return in microseconds,
  because nothing else on the event loop runs meanwhile. It answers every
  request (it never returns :data:`SLOW`: there is nothing to fall back to).

An async method may also have an inline fast path (``inline=``): a plain
function that answers from warm state when it can and returns :data:`SLOW`
when the request needs the async handler (e.g. ``status`` of a workspace that
is not loaded yet). Both must produce the same result for the same request.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Final

import msgspec

from takod.protocol import invalid

if TYPE_CHECKING:
    from .connection import Connection
    from .daemon import Daemon

Handler = Callable[["Call", Any], Awaitable[Any]]
InlineHandler = Callable[["Call", Any], Any]

DEFAULT_TIMEOUT = 30.0


class Slow:
    """Type of :data:`SLOW`."""

    def __repr__(self) -> str:
        return "SLOW"


SLOW: Final = Slow()
"""What an inline fast path returns when it cannot answer from warm state."""


@dataclass
class Method:
    name: str
    params_type: type
    handler: Handler | None  # None: inline only
    inline: InlineHandler | None  # answers synchronously, or returns SLOW to use ``handler``
    timeout: float | None  # None: the handler bounds itself (streams)
    secret_params: bool  # never log this method's params
    decoder: msgspec.msgpack.Decoder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.decoder = msgspec.msgpack.Decoder(self.params_type)


@dataclass
class Call:
    """What a handler knows about the request it is answering."""

    daemon: "Daemon"
    conn: "Connection"
    msgid: int
    method: str


class Registry:
    """Method name -> :class:`Method`."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def method(
        self,
        name: str,
        params: type,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        secret_params: bool = False,
        inline: InlineHandler | None = None,
    ) -> Callable[[Any], Any]:
        """Decorator registering ``handler`` as RPC method ``name``: an
        ``async def``, optionally with an ``inline`` fast path, or a plain
        ``def`` that always answers inline (see the module docstring)."""

        def register(handler: Any) -> Any:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            if inspect.iscoroutinefunction(handler):
                self._methods[name] = Method(name, params, handler, inline, timeout, secret_params)
            elif inline is None:
                self._methods[name] = Method(name, params, None, handler, timeout, secret_params)
            else:
                raise TypeError(f"method {name!r}: inline= is a fast path for an async handler")
            return handler

        return register

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)


_params_list = msgspec.msgpack.Decoder(list[msgspec.Raw])


def decode_params(method: Method, raw: msgspec.Raw) -> Any:
    """Decode ``[]`` or ``[options]`` into the method's Params Struct.

    An empty array as options is accepted as an empty map, because Neovim
    sends Lua's ``{}`` as an array.
    """
    items = _params_list.decode(raw)
    if len(items) > 1:
        raise invalid("invalid_params", f"{method.name} takes at most one argument (an options map), got {len(items)}")
    data = bytes(items[0]) if items else b"\x80"
    if data == b"\x90":
        data = b"\x80"
    try:
        return method.decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise invalid("invalid_params", f"{method.name}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for a non-UTF-8 str
        raise invalid("invalid_params", f"{method.name}: {exc}") from None

