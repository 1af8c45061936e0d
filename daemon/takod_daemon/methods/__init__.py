"""RPC method implementations; importing this package registers them all."""

from . import auth, core, infer, settings, status  # noqa: F401
