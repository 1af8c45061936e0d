"""The method registry: each RPC method is one async function registered here.

A handler is ``async def handler(ctx: Call, params: SomeParams) -> Result``.
``params`` arrives on the wire as ``[]`` or ``[options-map]`` and is decoded
into the handler's Params Struct before the handler runs, so handlers only
ever see validated, typed input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import msgspec

from takod.protocol import invalid

if TYPE_CHECKING:
    from .connection import Connection
    from .daemon import Daemon

Handler = Callable[["Call", Any], Awaitable[Any]]

DEFAULT_TIMEOUT = 30.0


@dataclass
class Method:
    name: str
    params_type: type
    handler: Handler
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
    ) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` as RPC method ``name``."""

        def register(handler: Handler) -> Handler:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            self._methods[name] = Method(name, params, handler, timeout, secret_params)
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

