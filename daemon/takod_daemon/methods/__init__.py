"""RPC method implementations; importing this package registers them all."""

from . import auth, core, settings, status  # noqa: F401
