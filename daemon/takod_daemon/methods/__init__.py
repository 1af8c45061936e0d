"""RPC method implementations; importing this package registers them all."""

from . import auth, core, doctor, infer, login, settings, status  # noqa: F401
