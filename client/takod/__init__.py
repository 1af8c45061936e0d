"""takod client: talk to the per-user inference daemon over its Unix socket.

>>> from takod import Client
>>> with Client() as c:
...     print(c.call("status")["selected"])
"""

__version__ = "0.1.0"

from .client import Client, ConnectError, DaemonStartError, RemoteError, TakodError, UntrustedSocket  # noqa: E402

__all__ = ["Client", "ConnectError", "DaemonStartError", "RemoteError", "TakodError", "UntrustedSocket", "__version__"]
