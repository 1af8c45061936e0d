"""API keys in the OS keyring, with an honest plaintext fallback.

Each key is one keyring item: service ``takod``, username the key name
(``OPENAI_API_KEY``), so ``secret-tool lookup service takod username NAME``
and ``keyring get takod NAME`` find it too.

Keyring calls can hang forever (a locked Secret Service waiting on an unlock
prompt nobody sees, D-Bus activation), so every one runs in a worker thread
under a dedicated ``CapacityLimiter(1)`` and a timeout, abandoned on timeout.
While an abandoned call is still stuck no new keyring call starts, so at most
one thread leaks.

The backend is resolved freshly at :meth:`KeyStore.open` (keyring caches its
choice process-wide): ``PYTHON_KEYRING_BACKEND``, else ``keyringrc.cfg``, else
the highest-priority recommended backend. It is used only if it is not the
fail, null or keyrings.alt backends, its priority is at least 1 and a canary
round trip (``takod/__probe__``) passes. Otherwise keys go to ``keys.json``
(0600, atomic) in the state directory and :attr:`KeyStore.status` says so,
with a reason code and a fix hint. keyrings.alt is never imported: installed,
it silently makes plaintext storage the "best" backend.

Keys written to the file while the keyring was unavailable move into the
keyring at the next successful :meth:`KeyStore.open`, so plaintext lasts only
as long as the keyring is missing. The keyring cannot list items, so the names
(never values) of keys held there are kept in ``key-index.json``; the index may
name more keys than exist (it is updated before the keyring) and is pruned by
:meth:`KeyStore.list`.

One daemon per user owns these files, so there is no cross-process lock.
"""

from __future__ import annotations

import builtins
import configparser
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal, TypeVar, cast

import anyio
import msgspec
import structlog
from keyring import backend as keyring_backend
from keyring import errors as keyring_errors
from keyring.backends import chainer, fail, null
from keyring.util import platform_ as keyring_platform

from takod_daemon.credentials.files import FileProblem, atomic_write, decode_json, encode_json, read_bytes
from takod_daemon.key_names import CATALOGUE, normalise_key_name
from takod_daemon.redact import mask_secret, redact_text

log = structlog.get_logger(__name__)

SERVICE = "takod"
PROBE_NAME = "__probe__"
KEYS_FILE = "keys.json"
INDEX_FILE = "key-index.json"
DEFAULT_TIMEOUT = 10.0
MAX_VALUE_CHARS = 8192

_ENV_VAR = "PYTHON_KEYRING_BACKEND"
_FORBIDDEN_PREFIX = "keyrings.alt"
_CHAINER = f"{chainer.ChainerBackend.__module__}.{chainer.ChainerBackend.__qualname__}"

Backend = Literal["keyring", "file"]
T = TypeVar("T")


class StoreStatus(msgspec.Struct, frozen=True):
    """Where keys go now. ``reason`` (None when secure) is a stable code:
    ``no-keyring``, ``keyring-locked``, ``keyring-timeout``, ``keyring-disabled``,
    ``keyring-insecure``, ``keyring-misconfigured`` or ``keyring-error``."""

    backend: Backend
    secure: bool
    reason: str | None
    hint: str | None
    keyring: str | None  # the keyring backend class chosen or refused
    detail: str | None  # what went wrong, for doctor; never a secret
    path: str  # the fallback file


class KeyInfo(msgspec.Struct, frozen=True):
    """A stored key as anyone may see it. ``available`` is False when the key
    is in a keyring that cannot be read right now (``masked`` is then empty)."""

    name: str
    backend: Backend
    masked: str
    available: bool = True


class MigrationResult(msgspec.Struct, frozen=True):
    """Outcome of :meth:`KeyStore.migrate`, keyed by the names as given.
    ``failed`` maps a name to ``"code: message"``; values never appear."""

    stored: list[str]
    failed: dict[str, str]


class KeyStoreError(Exception):
    """A key operation that could not be done. ``code`` is a stable snake_case
    word; ``reason`` the store reason code when the keyring is to blame. The
    message never contains a key value."""

    def __init__(self, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason


class _Unusable(Exception):
    """The keyring cannot be used: ``reason`` code plus a value-free detail,
    and, when known, the backend refused and the setting that chose it."""

    def __init__(self, reason: str, detail: str, *, keyring: str | None = None, source: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.keyring = keyring
        self.source = source


class _KeyFile(msgspec.Struct):
    version: int = 1
    keys: dict[str, str] = {}


class _IndexFile(msgspec.Struct):
    version: int = 1
    names: list[str] = []


# --- backend resolution and probing (blocking; run in the keyring thread) ---


@dataclass(frozen=True)
class _Resolution:
    backend: keyring_backend.KeyringBackend
    name: str
    source: str  # what chose it, for hints


def _qualname(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _configured_name(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The backend named by the environment or keyringrc.cfg, as keyring reads them."""
    name = environ.get(_ENV_VAR, "").strip()
    if name:
        return name, _ENV_VAR
    path = keyring_platform.config_root() / "keyringrc.cfg"
    config = configparser.RawConfigParser()
    try:
        if not config.read(path, encoding="utf-8"):
            return None
        name = config.get("backend", "default-keyring").strip()
    except (configparser.Error, UnicodeDecodeError):
        return None
    return (name, str(path)) if name else None


def _load_named(name: str, source: str) -> keyring_backend.KeyringBackend:
    if name.startswith(_FORBIDDEN_PREFIX):
        raise _Unusable(
            "keyring-insecure", f"{source} names {name}; takod never uses keyrings.alt", keyring=name, source=source
        )
    module_name, _, class_name = name.rpartition(".")
    try:
        module = __import__(module_name, fromlist=[class_name])
        cls = getattr(module, class_name)
        if not (isinstance(cls, type) and issubclass(cls, keyring_backend.KeyringBackend)):
            raise TypeError("not a keyring backend class")
    except Exception as exc:  # any import-time failure means a bad setting
        detail = f"{source} names {name}, which cannot be loaded ({_describe(exc, with_text=True)})"
        raise _Unusable("keyring-misconfigured", detail, keyring=name, source=source) from None
    return cls()


def _auto_backend() -> keyring_backend.KeyringBackend:
    """The highest-priority recommended backend, skipping the chainer (its
    priority check loads every plugin, keyrings.alt included) and keyrings.alt."""
    for entry_point in metadata.entry_points(group="keyring.backends"):
        if entry_point.value.startswith(_FORBIDDEN_PREFIX):
            continue
        try:
            loaded = entry_point.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # a broken plugin must not stop the others
            log.debug("keystore.plugin_failed", plugin=entry_point.name, error=type(exc).__name__)
    candidates: list[tuple[float, str, type[keyring_backend.KeyringBackend]]] = []
    for cls in keyring_backend.KeyringBackend.get_viable_backends():
        if issubclass(cls, (chainer.ChainerBackend, fail.Keyring, null.Keyring)):
            continue
        if cls.__module__.startswith(_FORBIDDEN_PREFIX):
            continue
        try:
            priority = float(cls.priority)
        except Exception:  # priority raises when the backend cannot work here
            continue
        if priority >= 1:
            candidates.append((priority, _qualname(cls), cls))
    if not candidates:
        raise _Unusable("no-keyring", "no recommended keyring backend is available")
    return max(candidates, key=lambda c: c[:2])[2]()


def _resolve(given: keyring_backend.KeyringBackend | None, environ: Mapping[str, str]) -> _Resolution:
    """Pick the backend the way keyring would, minus its cache and keyrings.alt."""
    if given is not None and not isinstance(given, chainer.ChainerBackend):
        return _Resolution(given, _qualname(given), "the caller")
    configured = None if given is not None else _configured_name(environ)
    if configured is None or configured[0] == _CHAINER:
        # The chainer is only as good as the best backend it would chain.
        chosen = _auto_backend()
        return _Resolution(chosen, _qualname(chosen), "auto")
    name, source = configured
    return _Resolution(_load_named(name, source), name, source)


def _check_usable(resolution: _Resolution) -> None:
    name, source = resolution.name, resolution.source

    def refuse(reason: str, detail: str) -> _Unusable:
        return _Unusable(reason, detail, keyring=name, source=source)

    backend = resolution.backend
    if isinstance(backend, fail.Keyring):
        raise refuse("no-keyring", f"{source} selects {name}, which stores nothing")
    if isinstance(backend, null.Keyring):
        raise refuse("keyring-disabled", f"{source} selects {name}, which stores nothing")
    if type(backend).__module__.startswith(_FORBIDDEN_PREFIX):
        raise refuse("keyring-insecure", f"{name} is from keyrings.alt; takod never uses it")
    try:
        priority = float(type(backend).priority)
    except Exception as exc:  # the backend's own "cannot work here" signal
        raise refuse("no-keyring", f"{name}: {_describe(exc, with_text=True)}") from None
    if priority < 1:
        raise refuse("keyring-insecure", f"{name} has priority {priority:g}, below the recommended 1")


def _canary(backend: keyring_backend.KeyringBackend) -> None:
    """Set, read back and delete a throwaway item: reachability is not enough,
    the keyring must also be unlocked and keep what it is given."""
    token = secrets.token_urlsafe(16)
    backend.set_password(SERVICE, PROBE_NAME, token)
    try:
        echoed = backend.get_password(SERVICE, PROBE_NAME)
    finally:
        backend.delete_password(SERVICE, PROBE_NAME)
    if echoed != token:
        raise _Unusable("keyring-error", "the keyring returned something else for its test item")


def _resolve_and_probe(
    given: keyring_backend.KeyringBackend | None, environ: Mapping[str, str]
) -> _Resolution:
    resolution = _resolve(given, environ)
    _check_usable(resolution)
    try:
        _canary(resolution.backend)
    except Exception as exc:
        problem = _classify(exc, with_text=True)
        raise _Unusable(problem.reason, problem.detail, keyring=resolution.name, source=resolution.source) from None
    return resolution


def _describe(exc: BaseException, *, with_text: bool) -> str:
    """Value-free text for an exception. Text is included only where no user
    secret was involved (resolution, probe); otherwise just the type."""
    if not with_text:
        return type(exc).__name__
    text = redact_text(str(exc)).strip()
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _classify(exc: BaseException, *, with_text: bool) -> _Unusable:
    if isinstance(exc, _Unusable):
        return exc
    detail = _describe(exc, with_text=with_text)
    if isinstance(exc, keyring_errors.KeyringLocked):
        return _Unusable("keyring-locked", detail)
    if isinstance(exc, keyring_errors.NoKeyringError):
        return _Unusable("no-keyring", detail)
    if isinstance(exc, TimeoutError):
        return _Unusable("keyring-timeout", detail)
    return _Unusable("keyring-error", detail)


def _hint(reason: str, source: str, timeout: float, path: Path) -> str:
    meanwhile = f"until then keys are kept in {path} (mode 0600, not encrypted)"
    if reason == "no-keyring":
        return (
            "No OS keyring answered (on Linux: a Secret Service such as gnome-keyring on the session D-Bus). "
            f"Start one and run `takod doctor`; {meanwhile}."
        )
    if reason == "keyring-locked":
        return (
            "The OS keyring is locked. Unlock it (log in to the desktop session, or "
            f"`gnome-keyring-daemon --unlock`) and run `takod doctor`; {meanwhile}."
        )
    if reason == "keyring-timeout":
        return (
            f"The OS keyring did not answer within {timeout:g}s (a locked keyring waiting on an unlock prompt "
            f"nobody can see does this). Unlock it and run `takod doctor`; {meanwhile}."
        )
    if reason == "keyring-disabled":
        return f"The keyring is disabled by {source}; remove that setting to use the OS keyring; {meanwhile}."
    if reason == "keyring-insecure":
        return (
            f"takod does not store keys in a plaintext or low-priority keyring; fix {source} "
            f"(and uninstall keyrings.alt); {meanwhile}."
        )
    if reason == "keyring-misconfigured":
        return f"Fix or remove the keyring backend named by {source}; {meanwhile}."
    return f"The OS keyring failed (see detail); run `takod doctor`; {meanwhile}."


def check_value(name: str, value: object) -> str:
    """Return ``value`` trimmed, or raise if it cannot be an API key. The
    error names the key, never the value."""
    if not isinstance(value, str):
        raise KeyStoreError("invalid_key_value", f"the value for {name} must be text")
    value = value.strip()
    if not value:
        raise KeyStoreError("invalid_key_value", f"the value for {name} is empty")
    if len(value) > MAX_VALUE_CHARS:
        raise KeyStoreError("invalid_key_value", f"the value for {name} is longer than {MAX_VALUE_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise KeyStoreError("invalid_key_value", f"the value for {name} contains spaces or control characters")
    return value


# --- the fallback file and the name index (blocking; run in worker threads) ---


class _Files:
    """``keys.json`` and ``key-index.json`` in a private state directory."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.keys_path = state_dir / KEYS_FILE
        self.index_path = state_dir / INDEX_FILE

    def ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # mkdir leaves an existing dir as it was

    def read_keys(self) -> dict[str, str]:
        raw = read_bytes(self.keys_path)
        if raw is None:
            return {}
        if raw.mode & 0o077 and not self.keys_path.is_symlink():  # never chmod a link's target
            os.chmod(self.keys_path, 0o600)
            log.warning("keystore.file_mode_fixed", path=str(self.keys_path), mode=oct(raw.mode))
        return cast(_KeyFile, decode_json(raw, _KeyFile)).keys

    def write_keys(self, keys: dict[str, str]) -> None:
        if keys:
            atomic_write(self.keys_path, encode_json(_KeyFile(keys=dict(sorted(keys.items())))))
        else:  # no plaintext file at all once nothing needs one
            self.keys_path.unlink(missing_ok=True)

    def read_index(self) -> set[str] | None:
        """The indexed names; None when the index is unusable (then rebuilt)."""
        try:
            raw = read_bytes(self.index_path)
            return set() if raw is None else set(cast(_IndexFile, decode_json(raw, _IndexFile)).names)
        except FileProblem as problem:
            log.warning("keystore.index_unusable", path=str(problem.path), reason=problem.reason)
            return None

    def write_index(self, names: set[str]) -> None:
        atomic_write(self.index_path, encode_json(_IndexFile(names=sorted(names))))


# --- the store ---


class KeyStore:
    """API keys for takod: OS keyring when one works, else a 0600 file.

    Call :meth:`open` once before anything else (and again to re-probe, e.g.
    from ``doctor``). Operations are serialised; each keyring call is bounded
    by ``timeout`` seconds. ``backend`` forces a keyring backend instance
    (tests, or a caller that resolved one); by default it is resolved afresh.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        backend: keyring_backend.KeyringBackend | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self._files = _Files(Path(state_dir))
        self._given = backend
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(1)
        self._lock = anyio.Lock()
        self._keyring: keyring_backend.KeyringBackend | None = None
        self._status: StoreStatus | None = None
        self._stuck: threading.Event | None = None  # set when the last keyring call returned

    def __repr__(self) -> str:
        status = self._status
        state = "unopened" if status is None else f"{status.backend}, reason={status.reason}"
        return f"<KeyStore {self._files.dir} ({state})>"

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has finished once (it may take its whole timeout on a hung keyring)."""
        return self._status is not None

    @property
    def status(self) -> StoreStatus:
        """Where keys go now and, when that is the file, why and how to fix it."""
        return self._opened()

    async def open(self) -> StoreStatus:
        """Resolve and probe the keyring; fall back to the file if it fails.
        Safe to call again: a keyring that came back is picked up and keys
        kept in the file meanwhile move into it."""
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._files.ensure_dir)
            except OSError as exc:
                raise _io_error(self._files.dir, exc) from None
            try:
                resolution = await self._keyring_call(_resolve_and_probe, self._given, dict(os.environ))
            except Exception as exc:
                self._keyring = None
                problem = _classify(exc, with_text=True)
                self._set_fallback(problem, problem.keyring)
            else:
                self._keyring = resolution.backend
                self._status = StoreStatus(
                    backend="keyring",
                    secure=True,
                    reason=None,
                    hint=None,
                    keyring=resolution.name,
                    detail=None,
                    path=str(self._files.keys_path),
                )
                log.info("keystore.opened", backend="keyring", keyring=resolution.name, source=resolution.source)
                await self._promote_file_keys()
            return self._opened()

    async def get(self, name: str) -> str | None:
        """The value stored for ``name``, or None if there is none.

        Raises :class:`KeyStoreError` (``key_unavailable``) when the key is in a
        keyring that cannot be read now: "absent" would be a lie.
        """
        name = normalise_key_name(name)
        async with self._lock:
            self._opened()
            file_keys = await self._read_keys()
            if name in file_keys:  # written while the keyring was out: newest
                return file_keys[name]
            if self._keyring is not None:
                try:
                    return await self._keyring_call(self._keyring.get_password, SERVICE, name)
                except Exception as exc:
                    self._degrade(exc)
            if name in await self._read_index():
                raise self._unavailable(name)
            return None

    async def set(self, name: str, value: str) -> KeyInfo:
        """Store ``value`` under ``name``; the result says where it went."""
        name = normalise_key_name(name)
        value = check_value(name, value)
        async with self._lock:
            self._opened()
            return await self._set_locked(name, value)

    async def delete(self, name: str) -> bool:
        """Remove ``name`` wherever it is stored; False if it was nowhere."""
        name = normalise_key_name(name)
        async with self._lock:
            self._opened()
            index = await self._read_index()
            removed = False
            if self._keyring is not None:
                try:
                    removed = await self._keyring_call(_delete_item, self._keyring, name)
                except Exception as exc:
                    self._degrade(exc)
            if self._keyring is None and name in index:
                raise self._unavailable(name)  # before touching the file: all or nothing
            if name in index:
                await self._write_index(index - {name})
            file_keys = await self._read_keys()
            if name in file_keys:
                del file_keys[name]
                await self._write_keys(file_keys)
                removed = True
            if removed:
                log.info("keystore.key_deleted", name=name)
            return removed

    async def migrate(self, keys: Mapping[str, str]) -> MigrationResult:
        """Store each of ``keys`` (e.g. plaintext ``api_keys`` from a settings
        file) and report which succeeded, so the caller can remove exactly
        those from where they came from."""
        stored: list[str] = []
        failed: dict[str, str] = {}
        async with self._lock:
            self._opened()
            for given_name, value in keys.items():
                try:
                    name = normalise_key_name(given_name)
                    await self._set_locked(name, check_value(name, value))
                except (KeyStoreError, ValueError) as exc:
                    failed[given_name] = f"{getattr(exc, 'code', 'invalid')}: {exc}"
                else:
                    stored.append(given_name)
        return MigrationResult(stored=stored, failed=failed)

    async def list(self) -> builtins.list[KeyInfo]:
        """Every stored key, masked, sorted by name."""
        async with self._lock:
            self._opened()
            file_keys = await self._read_keys()
            index = await self._read_index()
            found = {name: KeyInfo(name, "file", mask_secret(value)) for name, value in file_keys.items()}
            stale: set[str] = set()
            for name in sorted(index - set(file_keys)):
                if self._keyring is not None:
                    try:
                        value = await self._keyring_call(self._keyring.get_password, SERVICE, name)
                    except Exception as exc:
                        self._degrade(exc)
                    else:
                        if value is None:
                            stale.add(name)
                        else:
                            found[name] = KeyInfo(name, "keyring", mask_secret(value))
                        continue
                found[name] = KeyInfo(name, "keyring", "", available=False)
            if stale:
                await self._write_index(index - stale)
            return [found[name] for name in sorted(found)]

    # -- internals (called with self._lock held) --

    def _opened(self) -> StoreStatus:
        if self._status is None:
            raise RuntimeError("KeyStore.open() must be awaited first")
        return self._status

    async def _keyring_call(self, fn: Callable[..., T], *args: object) -> T:
        """Run one blocking keyring call in the keyring thread, bounded by the timeout."""
        if self._stuck is not None and not self._stuck.is_set():
            raise _Unusable("keyring-timeout", "an earlier keyring call has still not returned")
        done = threading.Event()

        def run() -> T:
            try:
                return fn(*args)
            finally:
                done.set()

        self._stuck = done
        with anyio.move_on_after(self._timeout):
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=self._limiter)
        # Only the timeout leaves the block without returning or raising.
        raise _Unusable("keyring-timeout", f"no answer within {self._timeout:g}s")

    async def _set_locked(self, name: str, value: str) -> KeyInfo:
        if self._keyring is not None:
            index = await self._read_index()
            if name not in index:  # index first: it may over-report, never under-report
                await self._write_index(index | {name})
            try:
                await self._keyring_call(self._keyring.set_password, SERVICE, name, value)
            except Exception as exc:
                self._degrade(exc)
            else:
                file_keys = await self._read_keys()
                if name in file_keys:
                    del file_keys[name]
                    await self._write_keys(file_keys)
                log.info("keystore.key_set", name=name, backend="keyring")
                return KeyInfo(name, "keyring", mask_secret(value))
        file_keys = await self._read_keys()
        file_keys[name] = value
        await self._write_keys(file_keys)
        log.info("keystore.key_set", name=name, backend="file", reason=self._opened().reason)
        return KeyInfo(name, "file", mask_secret(value))

    async def _promote_file_keys(self) -> None:
        """Move keys kept in the file while the keyring was out into it. At
        open a bad file must not cost us the keyring: log and carry on; the
        operations that need the file report it."""
        promoted = []
        try:
            for name, value in sorted((await self._read_keys()).items()):
                if (await self._set_locked(name, value)).backend != "keyring":
                    break  # the keyring failed again; the rest stay in the file
                promoted.append(name)
        except KeyStoreError as exc:
            log.warning("keystore.promote_failed", code=exc.code, error=str(exc))
        if promoted:
            log.info("keystore.promoted", names=promoted)

    def _degrade(self, exc: BaseException) -> None:
        """A keyring call failed after a good probe: use the file from now on.
        Only the exception type is kept: a user's value was in play."""
        self._keyring = None
        self._set_fallback(_classify(exc, with_text=False), self._opened().keyring)

    def _set_fallback(self, problem: _Unusable, keyring_name: str | None) -> None:
        self._status = StoreStatus(
            backend="file",
            secure=False,
            reason=problem.reason,
            hint=_hint(problem.reason, problem.source or "the keyring setting", self._timeout, self._files.keys_path),
            keyring=keyring_name,
            detail=problem.detail,
            path=str(self._files.keys_path),
        )
        log.warning("keystore.fallback", reason=problem.reason, detail=problem.detail, path=str(self._files.keys_path))

    def _unavailable(self, name: str) -> KeyStoreError:
        status = self._opened()
        return KeyStoreError(
            "key_unavailable",
            f"{name} is stored in the OS keyring, which cannot be used now ({status.reason})",
            reason=status.reason,
        )

    async def _read_keys(self) -> dict[str, str]:
        try:
            return await anyio.to_thread.run_sync(self._files.read_keys)
        except FileProblem as problem:
            raise KeyStoreError(
                "keystore_file_unusable", f"{problem}; move it aside to start a new one", reason=problem.reason
            ) from None
        except OSError as exc:
            raise _io_error(self._files.keys_path, exc) from None

    async def _write_keys(self, keys: dict[str, str]) -> None:
        try:
            await anyio.to_thread.run_sync(self._files.write_keys, keys)
        except OSError as exc:
            raise _io_error(self._files.keys_path, exc) from None
        except FileProblem as exc:  # a link planted where the file goes: never written through
            raise KeyStoreError("keystore_io", str(exc)) from None

    async def _read_index(self) -> set[str]:
        index = await anyio.to_thread.run_sync(self._files.read_index)
        if index is None:
            index = await self._rebuild_index()
        return index

    async def _rebuild_index(self) -> set[str]:
        """Recreate a lost index by asking the keyring for every catalogue name;
        written back only when complete, so a partial answer is not kept."""
        names: set[str] = set()
        for entry in CATALOGUE:
            if self._keyring is None:
                return names
            try:
                if await self._keyring_call(self._keyring.get_password, SERVICE, entry.name) is not None:
                    names.add(entry.name)
            except Exception as exc:
                self._degrade(exc)
        if self._keyring is not None:
            await self._write_index(names)
        return names

    async def _write_index(self, names: set[str]) -> None:
        try:
            await anyio.to_thread.run_sync(self._files.write_index, names)
        except OSError as exc:
            raise _io_error(self._files.index_path, exc) from None
        except FileProblem as exc:
            raise KeyStoreError("keystore_io", str(exc)) from None


def _io_error(path: Path, exc: OSError) -> KeyStoreError:
    return KeyStoreError("keystore_io", f"{path}: {exc.strerror or type(exc).__name__}")


def _delete_item(backend: keyring_backend.KeyringBackend, name: str) -> bool:
    try:
        backend.delete_password(SERVICE, name)
    except keyring_errors.PasswordDeleteError:
        return False  # keyring's way of saying "no such item"
    return True
