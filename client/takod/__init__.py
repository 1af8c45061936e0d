"""takod client: talk to the per-user inference daemon over its Unix socket.

>>> from takod import Client
>>> with Client() as c:
...     print(c.call("status")["selected"])
"""

__version__ = "0.1.0"

__all__ = ["Client", "ConnectError", "DaemonStartError", "RemoteError", "TakodError", "UntrustedSocket", "__version__"]


def __getattr__(name: str) -> object:
    # Loaded on first use (PEP 562): the client imports msgspec, which a shell
    # prompt's `takod status --short` does without (status_line.py).
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
