"""Warm readiness state: every fact readiness needs, kept current by file events.

Facts come in two scopes. Per user: the Codex, Claude and Gemini credential
files, the home pi auth files, the CLIs on PATH, stored API keys. Per
workspace: its settings file, its pi auth file, its pi runtime, and the Ollama
endpoint its settings name. Every watched file maps to the facts it feeds;
when a file changes, only those facts are re-read (in a worker thread), the
affected workspaces are re-evaluated, and subscribers get a ``status`` event
when the outcome changed. A file that cannot be parsed keeps the last good
facts and is reported; nothing here ever writes to it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import anyio
import msgspec
import structlog

from takod.schema import ProviderStatus

from . import links
from .credentials import claude_auth, codex_auth, gemini_auth, pi_auth
from .credentials.files import FileProblem
from .credentials.settings import InferenceSettings, load_settings, settings_path
from .credentials.summary import CredentialSummary
from .key_names import CATALOGUE, catalogue_entry
from .keystore import KeyInfo
from .providers.detect import BinaryInfo, detect_cli, detect_pi, workspace_pi_path
from .providers.ollama_probe import OllamaProbe, probe_ollama
from .readiness import Facts, evaluate
from .redact import mask_secret
from .watch import FileWatcher

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("takod.state")

CLI_NAMES = ("codex", "claude", "gemini")
BIN_NAMES = ("pi", "codex", "claude", "gemini", "ollama", "node")
KEYRING_START_WAIT = 3.0  # longest start-up delay a slow keyring may cause
OLLAMA_INTERVAL_OK = 60.0
OLLAMA_INTERVAL_MIN = 5.0
OLLAMA_INTERVAL_MAX = 300.0

# Which stored/env key names make which CLI provider usable (beyond pi, which reads them all).
KEY_PROVIDERS: dict[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("codex",),
    "CODEX_API_KEY": ("codex",),
    "ANTHROPIC_API_KEY": ("claude",),
    "ANTHROPIC_AUTH_TOKEN": ("claude",),
    "GEMINI_API_KEY": ("gemini",),
    "GOOGLE_API_KEY": ("gemini",),
}
PI_KEY_NAMES = frozenset(k.name for k in CATALOGUE)
# An environment key that the CLI prefers over its own login (research providers.md A4, B3).
SHADOWING_ENV = {"claude": "ANTHROPIC_API_KEY", "codex": "CODEX_API_KEY"}


def _problem_text(exc: FileProblem) -> str:
    return f"{exc.path}: {exc.detail}"


def _key_users(name: str) -> list[str]:
    """The providers an API key of this name makes usable."""
    return list(KEY_PROVIDERS.get(name, ())) + (["pi"] if name in PI_KEY_NAMES else [])


@dataclass
class UserFacts:
    """Per-user facts shared by every workspace."""

    credentials: dict[str, list[CredentialSummary]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    binaries: dict[str, BinaryInfo] = field(default_factory=dict)
    ollama_binary: str | None = None
    stored_keys: dict[str, KeyInfo] = field(default_factory=dict)  # name -> where, masked
    key_store_reason: str | None = None  # why keys are not going to the OS keyring now


@dataclass
class Workspace:
    """One workspace's facts and its last evaluated status."""

    root: Path
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    settings_problem: str | None = None
    pi_creds: list[CredentialSummary] = field(default_factory=list)
    pi_problem: str | None = None
    pi_binary: BinaryInfo | None = None
    ollama: OllamaProbe | None = None
    ollama_wakeup: anyio.Event = field(default_factory=anyio.Event)
    providers: list[ProviderStatus] = field(default_factory=list)
    # The status fields of this workspace, msgpack-encoded once per change, with
    # what they were encoded from (seq, key store state): methods/status.py.
    status_wire: tuple[int, Any, bytes] | None = None
    selected: str | None = None
    seq: int = 0
    updated_at: float = 0.0
    fingerprint: bytes = b""

    @property
    def settings_file(self) -> Path:
        return settings_path(self.root)

    @property
    def pi_auth_file(self) -> Path:
        return pi_auth.workspace_auth_path(self.root)


class StateManager:
    """Loads workspaces on first use, watches their files, keeps readiness warm."""

    def __init__(self, daemon: "Daemon", env: Mapping[str, str] | None = None):
        self.daemon = daemon
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.home = Path(self.env.get("HOME") or os.path.expanduser("~"))
        self.user = UserFacts()
        self.workspaces: dict[Path, Workspace] = {}
        self._loading: dict[Path, anyio.Event] = {}  # workspaces being loaded right now
        self._by_name: dict[str, Workspace] = {}  # as clients spell them -> loaded workspace
        self.watcher = FileWatcher()
        self._routes: dict[Path, dict[str, Callable[[], Awaitable[None]]]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()  # one reload/evaluate pass at a time
        self._auth_fingerprint = b""
        self.settings_lock = anyio.Lock()  # settings writes are read-modify-write
        self.auth_seq = 0

    # lifetime ---------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            # A locked Secret Service can take its whole timeout to answer: serve meanwhile,
            # but give a healthy keyring a moment so the first status already counts its keys.
            keys_open = anyio.Event()
            tg.start_soon(self._open_keys, keys_open)
            await self._load_user()
            await self.workspace(self.daemon.default_workspace)
            await tg.start(self.watcher.run, self._on_files_changed)
            with anyio.move_on_after(KEYRING_START_WAIT):
                await keys_open.wait()
            task_status.started()

    async def _open_keys(self, done: anyio.Event) -> None:
        await self.daemon.keys.open()
        await self.keys_changed()
        done.set()

    async def reload(self) -> None:
        """Re-read every fact (SIGHUP, or a client's ``providers.probe``)."""
        await self.daemon.keys.open()  # a keyring that came back is picked up
        await self._read_stored_keys()
        await self._load_user()
        for ws in list(self.workspaces.values()):
            await self._load_workspace(ws)
            # Probe now, so the caller's next status shows it (the loop only wakes later).
            await self._probe_ollama(ws)
        await self._evaluate_all()

    # workspaces -------------------------------------------------------------

    def loaded(self, root: str | Path) -> Workspace | None:
        """The workspace at ``root`` if it is loaded already (under this spelling
        of its root), else None. Memory only: no filesystem lookups, no waiting."""
        return self._by_name.get(str(root))

    async def workspace(self, root: str | Path) -> Workspace:
        """The workspace at ``root``, loaded (and watched) on first use."""
        known = self.loaded(root)
        if known is not None:  # the hot path of every status call
            return known
        path = Path(root).expanduser().resolve()
        # Requests arriving while another one loads this workspace wait for it:
        # only a fully loaded workspace is ever handed out (or evaluated).
        while (loading := self._loading.get(path)) is not None:
            await loading.wait()
        ws = self.workspaces.get(path)
        if ws is not None:
            self._by_name[str(root)] = ws
            return ws
        done = self._loading[path] = anyio.Event()
        try:
            ws = Workspace(path)
            await self._load_workspace(ws)
            await self._probe_ollama(ws)
            self.workspaces[path] = ws
            self._rewatch()
            async with self._lock:
                self._evaluate(ws, publish=False)
            if self._tg is not None:
                self._tg.start_soon(self._ollama_loop, ws)
        finally:
            del self._loading[path]
            done.set()
        await self.daemon.broker.rescan()  # its pi file may hold grants to keep fresh
        self._by_name[str(root)] = ws
        log.info("workspace loaded", workspace=str(path), selected=ws.selected)
        return ws

    async def _load_workspace(self, ws: Workspace) -> None:
        await self._sync_links(ws)
        await self._read_settings(ws)
        await self._read_ws_pi(ws)
        ws.pi_binary = await detect_pi(workspace=ws.root, path=self.env.get("PATH"))

    async def _sync_links(self, ws: Workspace) -> None:
        """Seed the workspace pi file and link the Codex login into it (writes go
        under pi's lock; the resulting file events re-read what changed)."""
        done = await anyio.to_thread.run_sync(links.sync_workspace, ws.root, self.env, self.home)
        for what in done:
            log.info("credentials linked", what=what)

    async def _read_settings(self, ws: Workspace) -> None:
        try:
            ws.settings = await anyio.to_thread.run_sync(load_settings, ws.settings_file)
            ws.settings_problem = None
        except FileProblem as exc:
            ws.settings_problem = _problem_text(exc)
            log.warning("settings file unusable; keeping the last good settings", problem=ws.settings_problem)

    async def _read_ws_pi(self, ws: Workspace) -> None:
        try:
            auth = await anyio.to_thread.run_sync(pi_auth.read_auth, ws.pi_auth_file)
            ws.pi_creds = pi_auth.summarize(auth, self.env) if auth is not None else []
            ws.pi_problem = None
        except FileProblem as exc:
            ws.pi_problem = _problem_text(exc)
            log.warning("pi auth file unusable; keeping the last good view", problem=ws.pi_problem)

    # user facts -------------------------------------------------------------

    async def _load_user(self) -> None:
        for name in ("codex", "claude", "gemini", "pi-home"):
            await self._read_user_credentials(name)
        await self._detect_binaries()

    async def _read_user_credentials(self, name: str) -> None:
        readers: dict[str, Callable[[], list[CredentialSummary]]] = {
            "codex": lambda: codex_auth.discover(self.env),
            "claude": lambda: claude_auth.discover(self.env),
            "gemini": lambda: gemini_auth.discover(self.env),
            "pi-home": self._read_home_pi,
        }
        try:
            creds = await anyio.to_thread.run_sync(readers[name])
        except FileProblem as exc:
            self.user.problems[name] = [_problem_text(exc)]
            log.warning("credential file unusable; keeping the last good view", source=name, problem=_problem_text(exc))
            return
        self.user.problems.pop(name, None)
        self.user.credentials[name] = creds

    def _read_home_pi(self) -> list[CredentialSummary]:
        found: list[CredentialSummary] = []
        problems: list[FileProblem] = []
        for path in pi_auth.home_auth_paths(self.env, self.home):
            try:
                auth = pi_auth.read_auth(path)
            except FileProblem as exc:
                problems.append(exc)
                continue
            if auth is not None:
                found.extend(pi_auth.summarize(auth, self.env))
        if problems and not found:
            raise problems[0]
        return found

    async def _detect_binaries(self) -> None:
        path = self.env.get("PATH")
        for name in CLI_NAMES:
            self.user.binaries[name] = await detect_cli(name, path=path)
        self.user.ollama_binary = shutil.which("ollama", path=path)

    async def _read_stored_keys(self) -> None:
        keys = self.daemon.keys
        try:
            infos = await keys.list()
        except Exception as exc:  # the store reports its own trouble in its status
            log.warning("could not list stored keys", error=type(exc).__name__)
            return
        self.user.stored_keys = {info.name: info for info in infos}
        self.user.key_store_reason = keys.status.reason

    async def settings_changed(self, ws: Workspace) -> None:
        """Re-read ``ws``'s settings now (after our own write) and re-evaluate."""
        async with self._lock:
            await self._settings_changed(ws)
            self._evaluate_all_locked(auth=True)

    def pi_files(self) -> list[Path]:
        """Every pi auth file takod knows: each workspace's (loaded or being
        loaded: its seed may already hold a login being refreshed) and the home ones."""
        files = [ws.pi_auth_file for ws in self.workspaces.values()]
        files += [pi_auth.workspace_auth_path(root) for root in self._loading]
        files += pi_auth.home_auth_paths(self.env, self.home)
        return list(dict.fromkeys(files))

    async def grants_changed(self) -> None:
        """The refresh broker marked a grant dead (or alive again): re-evaluate."""
        async with self._lock:
            self._evaluate_all_locked(auth=True)

    async def keys_changed(self) -> None:
        """Called after ``keys.set`` / ``keys.clear``."""
        async with self._lock:
            await self._read_stored_keys()
            self._evaluate_all_locked(auth=True)

    # facts -> readiness -----------------------------------------------------

    def _key_credentials(self, ws: Workspace, env: Mapping[str, str]) -> dict[str, list[CredentialSummary]]:
        """API keys from the keyring, the settings file and the environment, per provider."""
        out: dict[str, list[CredentialSummary]] = {}

        def add(name: str, source: str, masked: str, note: str | None = None) -> None:
            backend = catalogue_entry(name).providers[0] if name in PI_KEY_NAMES else name
            for provider in _key_users(name):
                out.setdefault(provider, []).append(
                    CredentialSummary(backend, source, "api_key", masked, read_only=False, note=note)
                )

        for name, info in self.user.stored_keys.items():
            if not info.available:
                continue  # in a keyring that cannot be read now: see _unavailable_keys
            note = None
            if info.backend == "file":
                why = self.user.key_store_reason or "no keyring"
                note = f"insecure storage: a plain 0600 file, not the OS keyring ({why})"
            add(name, f"{info.backend}:{name}", info.masked, note)
        for name, value in ws.settings.api_keys.items():
            add(name, f"{ws.settings_file}:{name}", mask_secret(value), "plaintext in settings; run `takod key migrate`")
        for name in PI_KEY_NAMES | KEY_PROVIDERS.keys():
            value = env.get(name)
            if value:
                add(name, f"env:{name}", mask_secret(value))
        return out

    def _unavailable_keys(self) -> dict[str, list[str]]:
        """Per provider, the stored keys it could use that sit in a keyring that cannot be read now."""
        out: dict[str, list[str]] = {}
        for name, info in self.user.stored_keys.items():
            if not info.available:
                for provider in _key_users(name):
                    out.setdefault(provider, []).append(name)
        return out

    def facts(self, ws: Workspace, env_overlay: Mapping[str, str] | None = None) -> Facts:
        """What readiness is decided from; ``env_overlay`` is a client's own environment
        (its API keys count as if the daemon had them)."""
        user = self.user
        env = {**self.env, **env_overlay} if env_overlay else self.env
        keyed = self._key_credentials(ws, env)
        creds: dict[str, list[CredentialSummary]] = {
            "pi": ws.pi_creds + user.credentials.get("pi-home", []) + keyed.get("pi", []),
        }
        for name in CLI_NAMES:
            creds[name] = user.credentials.get(name, []) + keyed.get(name, [])
        dead = self.daemon.broker.needs_login()
        if dead:
            # A grant the broker could not refresh is no longer renewable: once its
            # access token expires, that login is over.
            creds = {
                name: [msgspec.structs.replace(c, refreshable=False) if (c.source, c.provider) in dead else c for c in found]
                for name, found in creds.items()
            }
        problems: dict[str, list[str]] = {name: list(user.problems.get(name, [])) for name in CLI_NAMES}
        problems["pi"] = list(user.problems.get("pi-home", []))
        if ws.pi_problem:
            problems["pi"].append(ws.pi_problem)
        # A reader and the key scan may both report one environment variable.
        creds = {name: list({(c.source, c.provider, c.kind): c for c in found}.values()) for name, found in creds.items()}
        warnings: dict[str, list[str]] = {}
        for provider, var in SHADOWING_ENV.items():
            if env.get(var) and any(c.kind == "oauth" for c in creds.get(provider, [])):
                warnings.setdefault(provider, []).append(
                    f"env-shadowed: {var} in the environment is used instead of the {provider} login"
                )
        for provider, texts in self.daemon.broker.held_back().items():
            warnings.setdefault(provider, []).extend(texts)
        if ws.settings_problem:
            for name in ("pi", "ollama", "codex", "claude", "gemini"):
                warnings.setdefault(name, []).append(f"settings unusable, using the last good ones: {ws.settings_problem}")
        binaries = dict(user.binaries)
        if ws.pi_binary is not None:
            binaries["pi"] = ws.pi_binary
        return Facts(
            now=time.time(),
            binaries=binaries,
            credentials=creds,
            problems={k: v for k, v in problems.items() if v},
            ollama=ws.ollama,
            ollama_binary=user.ollama_binary,
            preferred=ws.settings.preferred_provider,
            warnings=warnings,
            unavailable_keys=self._unavailable_keys(),
            key_store_reason=user.key_store_reason,
        )

    def _evaluate(self, ws: Workspace, publish: bool = True) -> bool:
        providers, selected = evaluate(self.facts(ws))
        fingerprint = msgspec.msgpack.encode([selected, providers])
        if fingerprint == ws.fingerprint:
            return False
        ws.providers, ws.selected, ws.fingerprint = providers, selected, fingerprint
        ws.seq += 1
        ws.updated_at = time.time()
        if publish:
            self.daemon.bus.publish("status", self.status_payload(ws))
        return True

    def _evaluate_all_locked(self, auth: bool = False) -> None:
        for ws in list(self.workspaces.values()):
            self._evaluate(ws)
        if auth:
            fingerprint = msgspec.msgpack.encode(
                [self.user.credentials, self.user.problems, self.user.stored_keys,
                 [(str(ws.root), ws.pi_creds, ws.pi_problem, sorted(ws.settings.api_keys)) for ws in self.workspaces.values()]]
            )
            if fingerprint != self._auth_fingerprint:
                self._auth_fingerprint = fingerprint
                self.auth_seq += 1
                self.daemon.bus.publish("auth", {"kind": "credentials", "seq": self.auth_seq})

    async def _evaluate_all(self) -> None:
        async with self._lock:
            self._evaluate_all_locked(auth=True)

    def status_payload(self, ws: Workspace) -> dict[str, Any]:
        return {
            "workspace": str(ws.root),
            "selected": ws.selected,
            "providers": ws.providers,
            "seq": ws.seq,
            "updated_at": ws.updated_at,
        }

    # ollama -----------------------------------------------------------------

    async def _probe_ollama(self, ws: Workspace) -> None:
        ws.ollama = await probe_ollama(
            settings_host=ws.settings.ollama_host or None,
            settings_model=ws.settings.ollama_model or None,
            env=self.env,
        )

    async def _ollama_loop(self, ws: Workspace) -> None:
        """Re-probe periodically: every minute while reachable, backing off while not."""
        backoff = OLLAMA_INTERVAL_MIN
        while True:
            reachable = ws.ollama is not None and ws.ollama.reachable
            interval = OLLAMA_INTERVAL_OK if reachable else backoff
            backoff = OLLAMA_INTERVAL_MIN if reachable else min(backoff * 2, OLLAMA_INTERVAL_MAX)
            with anyio.move_on_after(interval):
                await ws.ollama_wakeup.wait()
            ws.ollama_wakeup = anyio.Event()
            await self._probe_ollama(ws)
            async with self._lock:
                self._evaluate(ws)

    # watching ---------------------------------------------------------------

    def _rewatch(self) -> None:
        """Recompute which files feed which facts, and watch them."""
        routes: dict[Path, dict[str, Callable[[], Awaitable[None]]]] = {}

        def route(path: Path, fact: str, reload: Callable[[], Awaitable[None]]) -> None:
            routes.setdefault(Path(os.path.abspath(path)), {})[fact] = reload

        def user(name: str) -> Callable[[], Awaitable[None]]:
            return lambda: self._read_user_credentials(name)

        async def codex_changed() -> None:
            await self._read_user_credentials("codex")
            for ws in list(self.workspaces.values()):
                await self._sync_links(ws)
                await self._read_ws_pi(ws)  # see our own write now, not one watch step later

        codex_home = codex_auth.codex_home(self.env)
        for path in (codex_auth.auth_path(codex_home), codex_auth.config_path(codex_home)):
            route(path, "codex", codex_changed)
        for path in (claude_auth.credentials_path(self.env), claude_auth.global_state_path(self.env)):
            route(path, "claude", user("claude"))
        for path in (gemini_auth.oauth_creds_path(self.env), gemini_auth.settings_path(self.env)):
            route(path, "gemini", user("gemini"))
        for path in pi_auth.home_auth_paths(self.env, self.home):
            route(path, "pi-home", user("pi-home"))
        for directory in self._path_dirs():
            for name in BIN_NAMES:
                route(directory / name, "binaries", self._binaries_changed)
        for ws in self.workspaces.values():
            route(ws.settings_file, f"settings:{ws.root}", lambda ws=ws: self._settings_changed(ws))
            route(ws.pi_auth_file, f"pi:{ws.root}", lambda ws=ws: self._ws_pi_changed(ws))
            route(workspace_pi_path(ws.root), f"pi-bin:{ws.root}", lambda ws=ws: self._pi_binary_changed(ws))
        self._routes = routes
        self.watcher.set_paths(routes)

    def _path_dirs(self) -> list[Path]:
        dirs = []
        for entry in self.env.get("PATH", "").split(os.pathsep):
            if entry and os.path.isabs(entry) and Path(entry) not in dirs:
                dirs.append(Path(entry))
        return dirs

    async def _settings_changed(self, ws: Workspace) -> None:
        before = (ws.settings.ollama_host, ws.settings.ollama_model)
        await self._read_settings(ws)
        if (ws.settings.ollama_host, ws.settings.ollama_model) != before:
            await self._probe_ollama(ws)

    async def _ws_pi_changed(self, ws: Workspace) -> None:
        await self._sync_links(ws)
        await self._read_ws_pi(ws)

    async def _binaries_changed(self) -> None:
        await self._detect_binaries()
        for ws in list(self.workspaces.values()):  # a workspace may load meanwhile
            await self._pi_binary_changed(ws)

    async def _pi_binary_changed(self, ws: Workspace) -> None:
        ws.pi_binary = await detect_pi(workspace=ws.root, path=self.env.get("PATH"))

    async def _on_files_changed(self, files: frozenset[Path]) -> None:
        # One burst may touch several files feeding one fact: reload each fact once.
        reloads: dict[str, Callable[[], Awaitable[None]]] = {}
        for path in files:
            reloads.update(self._routes.get(path, {}))
        async with self._lock:
            for reload in reloads.values():
                await reload()
            log.debug("files changed", files=sorted(str(f) for f in files), facts=sorted(reloads))
            self._evaluate_all_locked(auth=True)
        await self.daemon.broker.rescan()
