"""The daemon's method registry. Modules under ``methods/`` add to it with
``@registry.method("name", ParamsStruct)``; importing :mod:`takod_daemon.methods`
registers them all."""

from .rpc import Registry

registry = Registry()
