"""Keyring backends that misbehave the way real ones do, for the fallback tests.

Select one with ``PYTHON_KEYRING_BACKEND=tests.fakes.hanging_keyring.<Class>``.
keyring registers every backend subclass process-wide, so each class here is
viable only while it is the one selected: otherwise automatic resolution in
other tests could pick it.

* ``HangingKeyring``: every call blocks, like a locked Secret Service whose
  unlock prompt never appears (keyring PR #735).
* ``HangingPriorityKeyring``: blocks already while being chosen, like a Secret
  Service that D-Bus is still trying to activate (keyring #581).
* ``LockableKeyring``: an in-memory keyring that can be locked mid-session.

Blocked calls wait on :data:`RELEASE`; tests set it at teardown so no thread
outlives them, then call :func:`reset`, which starts a fresh event: a released
thread carries on with the old, set one and never blocks again.
"""

from __future__ import annotations

import os
import threading

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import KeyringLocked, PasswordDeleteError

RELEASE = threading.Event()
# Generous: a blocked call must outlast any timeout a test uses, yet never
# keep a thread alive for ever if a test forgets to release it.
_MAX_BLOCK_SECONDS = 120.0


def _selected(cls: type) -> bool:
    return os.environ.get("PYTHON_KEYRING_BACKEND") == f"{cls.__module__}.{cls.__qualname__}"


def _require_selected(cls: type) -> None:
    if not _selected(cls):
        raise RuntimeError(f"{cls.__qualname__} is a test fake; select it with PYTHON_KEYRING_BACKEND")


def reset() -> None:
    """Forget all fake state; blocked calls from now on wait on a new RELEASE."""
    global RELEASE
    RELEASE = threading.Event()
    HangingKeyring.calls = 0
    LockableKeyring.items.clear()
    LockableKeyring.locked = False


class HangingKeyring(KeyringBackend):
    """Recommended priority, but every call blocks until RELEASE is set."""

    calls = 0  # calls that blocked: proves no second thread is spent

    def __init__(self) -> None:
        super().__init__()
        self._release = RELEASE

    @properties.classproperty
    def priority(cls) -> float:
        _require_selected(cls)
        return 5

    def _hang(self) -> None:
        if not self._release.is_set():  # a released leftover from an earlier test does not count
            type(self).calls += 1
        self._release.wait(_MAX_BLOCK_SECONDS)

    def get_password(self, service: str, username: str) -> str | None:
        self._hang()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self._hang()

    def delete_password(self, service: str, username: str) -> None:
        self._hang()


class HangingPriorityKeyring(KeyringBackend):
    """Blocks in ``priority``, which keyring evaluates while choosing it."""

    @properties.classproperty
    def priority(cls) -> float:
        _require_selected(cls)
        RELEASE.wait(_MAX_BLOCK_SECONDS)
        return 5

    def get_password(self, service: str, username: str) -> str | None:
        raise AssertionError("never reached: choosing this backend hangs")

    set_password = delete_password = get_password  # type: ignore[assignment]


class LockableKeyring(KeyringBackend):
    """A working in-memory keyring; set ``locked`` to make every call raise
    ``KeyringLocked`` as the Secret Service backend does on a locked collection."""

    items: dict[tuple[str, str], str] = {}
    locked = False

    @properties.classproperty
    def priority(cls) -> float:
        _require_selected(cls)
        return 5

    def _check(self) -> None:
        if type(self).locked:
            raise KeyringLocked("Failed to unlock the collection!")

    def get_password(self, service: str, username: str) -> str | None:
        self._check()
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._check()
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self._check()
        if self.items.pop((service, username), None) is None:
            raise PasswordDeleteError("No such password!")
