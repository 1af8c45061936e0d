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

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import anyio
import msgspec
import structlog

from takod.protocol import invalid
from takod.schema import ProviderStatus

from . import links
from .eviction import Bounds, to_evict
from .cooldowns import Cooldowns
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
from .trust import NOT_CHECKED, WorkspaceTrust, check_workspace
from .resolve import gemini as gemini_resolve
from .resolve.codex import CodexPlan, resolve_codex
from .resolve.codex import run_credentials as codex_run_credentials
from .resolve import claude as claude_resolve
from .resolve import ollama as ollama_resolve
from .resolve import pi as pi_resolve
from .resolve.api import resolve_api
from .inference.child_env import is_secret_name
from .inference.routing import API_BACKENDS
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

# Which stored/env key names make which CLI provider usable (pi: the names pi reads, resolve.pi).
KEY_PROVIDERS: dict[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("codex",),
    "CODEX_API_KEY": ("codex",),
    "ANTHROPIC_API_KEY": ("claude",),
    "ANTHROPIC_AUTH_TOKEN": ("claude",),
    "GEMINI_API_KEY": ("gemini",),
    "GOOGLE_API_KEY": ("gemini",),
}
# The key names pi really reads (pi-ai getEnvApiKey, Bedrock's AWS pair): not every catalogue
# name (VENICE_API_KEY, GOOGLE_API_KEY, CLAUDE_API_KEY, ... are Takobot's, pi never reads them).
PI_KEY_NAMES = frozenset(k.name for k in CATALOGUE) & (
    pi_resolve.PI_KEY_VARS | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_BEARER_TOKEN_BEDROCK"}
)
# API key variable -> the direct API backends that use it.
API_KEY_USERS: dict[str, tuple[str, ...]] = {}
for _name, (_var, _kind, _url) in API_BACKENDS.items():
    API_KEY_USERS[_var] = API_KEY_USERS.get(_var, ()) + (_name,)
# An environment key that the CLI prefers over its own login (research providers.md A4, B3).
SHADOWING_ENV = {"claude": "ANTHROPIC_API_KEY", "codex": "CODEX_API_KEY"}


def _return_memory() -> None:
    """Hand the heap the let-go workspaces used back to the OS (glibc keeps freed memory
    otherwise); elsewhere a no-op. Runs in a worker thread: ctypes releases the GIL."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _problem_text(exc: FileProblem) -> str:
    return f"{exc.path}: {exc.detail}"


def _file_stamps(paths: list[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    """(mtime_ns, size, inode) of each path, None where missing: what tells a real
    change from a watch's re-arm, which reports files that did not change."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _key_users(name: str) -> list[str]:
    """The providers an API key of this name makes usable."""
    return list(KEY_PROVIDERS.get(name, ())) + (["pi"] if name in PI_KEY_NAMES else []) + list(API_KEY_USERS.get(name, ()))


@dataclass
class UserFacts:
    """Per-user facts shared by every workspace."""

    credentials: dict[str, list[CredentialSummary]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    binaries: dict[str, BinaryInfo] = field(default_factory=dict)
    ollama_binary: str | None = None
    stored_keys: dict[str, KeyInfo] = field(default_factory=dict)  # name -> where, masked
    key_store_reason: str | None = None  # why keys are not going to the OS keyring now
    gemini_auth: gemini_resolve.AuthFacts | None = None  # what decides gemini's auth method (resolve/gemini.py)
    codex_plan: CodexPlan | None = None  # codex's model and configured keys (resolve/codex.py)


@dataclass
class Workspace:
    """One workspace's facts and its last evaluated status."""

    root: Path
    # Whether it is the user's own (trust.py): only then does takod run, write
    # or follow anything there. Checked at load, on its file events, before every act.
    trust: WorkspaceTrust = NOT_CHECKED
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    settings_problem: str | None = None
    pi_creds: list[CredentialSummary] = field(default_factory=list)
    pi_problem: str | None = None
    pi_binary: BinaryInfo | None = None
    # What pi reads from the agent directory a run uses (resolve.pi.agent_dir_for).
    pi_agent: pi_resolve.PiAgent | None = None
    # What claude's credential depends on, its project settings included (resolve.claude).
    claude: claude_resolve.ClaudeFacts | None = None
    ollama: OllamaProbe | None = None
    ollama_probed_at: float = 0.0  # monotonic
    ollama_wakeup: anyio.Event = field(default_factory=anyio.Event)
    providers: list[ProviderStatus] = field(default_factory=list)
    # The status fields of this workspace, msgpack-encoded once per change, with
    # what they were encoded from (seq, key store state): methods/status.py.
    status_wire: tuple[int, Any, bytes] | None = None
    selected: str | None = None
    seq: int = 0
    evaluations: int = 0  # every evaluation, changed or not: what stamps the status-line file
    updated_at: float = 0.0
    fingerprint: bytes = b""
    last_used: float = 0.0  # time.monotonic() when a client last named it (eviction.py)
    probe_scope: anyio.CancelScope | None = None  # its Ollama loop's, cancelled when it is let go

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
        self.bounds = Bounds.from_env(self.env)
        self._user_routes: dict[Path, dict[str, Callable[[], Awaitable[None]]]] | None = None
        # Counts of re-reads of what each provider's credentials come from ("*": all of them).
        self._generations: dict[str, int] = {"*": 0}
        self._stamps: dict[str, tuple[tuple[int, int, int] | None, ...]] = {}  # user source -> its files' stat
        self.cooldowns = Cooldowns(self.generation)
        self._cooldown_changed = anyio.Event()
        # Per workspace, kept here rather than on it: its reloads refer to it, and a cycle
        # would keep a let-go workspace in memory until the cyclic collector came by.
        self._ws_routes: dict[Path, list[tuple[Path, str, Callable[[], Awaitable[None]]]]] = {}

    # lifetime ---------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            # A locked Secret Service can take its whole timeout to answer: serve meanwhile,
            # but give a healthy keyring a moment so the first status already counts its keys.
            keys_open = anyio.Event()
            tg.start_soon(self._open_keys, keys_open)
            tg.start_soon(self._cooldown_loop)
            await self._load_user()
            await self.workspace(self.daemon.default_workspace)
            await tg.start(self.watcher.run, self._on_files_changed)
            tg.start_soon(self._evict_idle)
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
        self._credentials_changed()  # a re-check on request ends every cooldown
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
        ws = self._by_name.get(str(root))
        if ws is not None:
            ws.last_used = time.monotonic()
        return ws

    async def workspace(self, root: str | Path) -> Workspace:
        """The workspace at ``root``, loaded (and watched) on first use."""
        known = self.loaded(root)
        if known is not None:  # the hot path of every status call
            return known
        try:
            path = Path(root).expanduser().resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise invalid("invalid_params", f"workspace {root} cannot be resolved ({getattr(exc, 'strerror', None) or exc}); "
                          "pass an existing directory") from None
        # Requests arriving while another one loads this workspace wait for it:
        # only a fully loaded workspace is ever handed out (or evaluated).
        while (loading := self._loading.get(path)) is not None:
            await loading.wait()
        ws = self.workspaces.get(path)
        if ws is not None:
            self._remember_spelling(str(root), ws)
            ws.last_used = time.monotonic()
            return ws
        done = self._loading[path] = anyio.Event()
        try:
            ws = Workspace(path)
            await self._load_workspace(ws)
            await self._probe_ollama(ws)
            self.workspaces[path] = ws
            ws.last_used = time.monotonic()
            self._evict(keep=path, rewatch=False)  # the cap: the least recently used go now
            self._rewatch()
            async with self._lock:
                self._evaluate(ws, publish=False)
            if self._tg is not None:
                ws.probe_scope = anyio.CancelScope()
                self._tg.start_soon(self._ollama_loop, ws, ws.probe_scope)
        finally:
            del self._loading[path]
            done.set()
        self._remember_spelling(str(root), ws)
        await self.daemon.broker.rescan()  # its pi file may hold grants to keep fresh
        log.info("workspace loaded", workspace=str(path), selected=ws.selected)
        return ws

    # bounds -------------------------------------------------------------------

    def _pinned_names(self) -> list[str]:
        """The default workspace, and each an open connection said hello with, as spelt."""
        names = [str(self.daemon.default_workspace)]
        return names + [conn.workspace for conn in self.daemon.connections if conn.workspace]

    def _pinned(self) -> set[Path]:
        """Workspaces never let go: the default one, and each an open connection said hello with."""
        return {ws.root for name in self._pinned_names() if (ws := self._by_name.get(name)) is not None}

    def _remember_spelling(self, name: str, ws: Workspace) -> None:
        """Remember ``name`` as a spelling of ``ws`` for the warm path (:meth:`loaded`). A
        client can spell one root endlessly many ways (``/a/./b``, ``/a//b``): beyond a
        bound, forget every spelling but the roots' own and the pinned ones."""
        if len(self._by_name) >= 4 * self.bounds.max_workspaces + 64:
            keep = {n: w for n in self._pinned_names() if (w := self._by_name.get(n)) is not None}
            log.debug("workspace spellings forgotten", count=len(self._by_name))
            self._by_name = {**{str(w.root): w for w in self.workspaces.values()}, **keep}
        self._by_name[name] = ws

    def _evict(self, keep: Path | None = None, rewatch: bool = True) -> bool:
        """Let go of the idle workspaces and those beyond the cap (eviction.py), never
        ``keep`` (the one being loaded): unwatch them (unless the caller rewatches
        anyway) and stop their Ollama loops. True if any went."""
        last_used = {path: ws.last_used for path, ws in self.workspaces.items()}
        pinned = self._pinned() | ({keep} if keep is not None else set())
        gone = set(to_evict(last_used, pinned, time.monotonic(), self.bounds))
        if not gone:
            return False
        for path in gone:
            self._ws_routes.pop(path, None)
            scope = self.workspaces.pop(path).probe_scope
            if scope is not None:
                scope.cancel()
        self._by_name = {name: ws for name, ws in self._by_name.items() if ws.root not in gone}
        self.daemon.status_file.dropped({str(path) for path in gone})
        if rewatch:
            self._rewatch()
        log.debug("workspaces let go", workspaces=sorted(map(str, gone)), loaded=len(self.workspaces))
        return True

    async def _evict_idle(self) -> None:
        """Look for idle workspaces twice per idle period (one wake-up per 15 minutes by default)."""
        while True:
            await anyio.sleep(self.bounds.idle_s / 2)
            if self._evict():
                await self.daemon.broker.rescan()  # their pi files are no longer ours to refresh
                await anyio.to_thread.run_sync(_return_memory)

    async def _load_workspace(self, ws: Workspace) -> None:
        await self._sync_links(ws)  # checks trust first
        await self._read_settings(ws)
        await self._read_ws_pi(ws)
        await self._read_ws_claude(ws)
        await self._pi_binary_changed(ws)

    async def _read_ws_claude(self, ws: Workspace) -> None:
        """What a claude run in ``ws`` authenticates with, beyond the environment (files only)."""
        facts = await anyio.to_thread.run_sync(claude_resolve.claude_facts, self.env, ws.root)
        if facts != ws.claude:
            ws.claude = facts
            self._credentials_changed("claude")

    async def check_trust(self, ws: Workspace) -> WorkspaceTrust:
        """Check (again) whether ``ws`` is the user's own; call before every act
        that runs, writes or follows anything there. Logs a change of verdict."""
        return self._set_trust(ws, await anyio.to_thread.run_sync(check_workspace, ws.root))

    def _set_trust(self, ws: Workspace, verdict: WorkspaceTrust) -> WorkspaceTrust:
        if verdict != ws.trust and not verdict.trusted:
            log.warning("workspace not trusted: takod only reads it", workspace=str(ws.root), problem=verdict.detail)
        ws.trust = verdict
        return verdict

    async def _sync_links(self, ws: Workspace) -> None:
        """Seed the workspace pi file and link the Codex login into it (writes go
        under pi's lock; the resulting file events re-read what changed). Never in
        a workspace that is not the user's own: nothing is written there, and no
        credential is copied out of it."""

        def check_then_sync() -> tuple[WorkspaceTrust, list[str]]:  # one worker-thread hop for both
            verdict = check_workspace(ws.root)
            return verdict, links.sync_workspace(ws.root, self.env, self.home) if verdict.trusted else []

        verdict, done = await anyio.to_thread.run_sync(check_then_sync)
        self._set_trust(ws, verdict)
        for what in done:
            log.info("credentials linked", what=what)

    async def _read_settings(self, ws: Workspace) -> None:
        try:
            before = ws.settings
            ws.settings = await anyio.to_thread.run_sync(load_settings, ws.settings_file)
            ws.settings_problem = None
            if ws.settings.api_keys != before.api_keys:
                self._credentials_changed()  # its api_keys may be any provider's
            if (ws.settings.ollama_host, ws.settings.ollama_model) != (before.ollama_host, before.ollama_model):
                self._credentials_changed("ollama")
        except FileProblem as exc:
            ws.settings_problem = _problem_text(exc)
            log.warning("settings file unusable; keeping the last good settings", problem=ws.settings_problem)

    def pi_agent_dir(self, ws: Workspace) -> Path:
        """The agent directory a pi run in ``ws`` uses."""
        return pi_resolve.agent_dir_for(ws.root, self.env, self.home)

    async def _read_ws_pi(self, ws: Workspace) -> None:
        try:
            auth = await anyio.to_thread.run_sync(pi_auth.read_auth, ws.pi_auth_file)
            before, ws.pi_creds = ws.pi_creds, pi_auth.summarize(auth, self.env) if auth is not None else []
            ws.pi_problem = None
            if ws.pi_creds != before:
                self._credentials_changed("pi")
        except FileProblem as exc:
            ws.pi_problem = _problem_text(exc)
            log.warning("pi auth file unusable; keeping the last good view", problem=ws.pi_problem)
        agent = await anyio.to_thread.run_sync(pi_resolve.read_agent, self.pi_agent_dir(ws), self.env, self.home)
        if agent.auth_problem and ws.pi_agent is not None and ws.pi_agent.agent_dir == agent.agent_dir:
            # A half-written auth.json: keep the last good entries, report the problem.
            agent = msgspec.structs.replace(agent, auth=ws.pi_agent.auth)
        ws.pi_agent = agent

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
        if name == "gemini":
            self.user.gemini_auth = await anyio.to_thread.run_sync(gemini_resolve.auth_facts, self.env)
        elif name == "claude":
            for ws in list(self.workspaces.values()):
                await self._read_ws_claude(ws)
        elif name == "codex":
            self.user.codex_plan = await anyio.to_thread.run_sync(resolve_codex, self.env)
        # A changed file counts even when the summary does not show it (gemini's selectedType).
        stamp = await anyio.to_thread.run_sync(_file_stamps, self._credential_files(name))
        if self.user.credentials.get(name) != creds or self._stamps.get(name) != stamp:
            self._credentials_changed("pi" if name == "pi-home" else name)
        self.user.credentials[name] = creds
        self._stamps[name] = stamp

    def _credential_files(self, name: str) -> list[Path]:
        """The files a user credential source is read from (as watched)."""
        if name == "codex":
            home = codex_auth.codex_home(self.env)
            return [codex_auth.auth_path(home), codex_auth.config_path(home)]
        if name == "claude":
            return [claude_auth.credentials_path(self.env), claude_auth.global_state_path(self.env),
                    *claude_resolve.user_files(self.env)]
        if name == "gemini":
            return [gemini_auth.oauth_creds_path(self.env), gemini_auth.settings_path(self.env)]
        return pi_auth.home_auth_paths(self.env, self.home)

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
        before, self.user.stored_keys = self.user.stored_keys, {info.name: info for info in infos}
        self.user.key_store_reason = keys.status.reason
        if self.user.stored_keys != before:
            self._credentials_changed()

    async def settings_changed(self, ws: Workspace) -> None:
        """Re-read ``ws``'s settings now (after our own write) and re-evaluate."""
        async with self._lock:
            await self._settings_changed(ws)
            self._evaluate_all_locked(auth=True)

    def pi_files(self) -> list[Path]:
        """Every pi auth file takod may refresh and write: each trusted workspace's
        (loaded or being loaded: its seed may already hold a login being refreshed)
        and the home ones."""
        files = [ws.pi_auth_file for ws in self.workspaces.values() if ws.trust.trusted]
        files += [pi_auth.workspace_auth_path(root) for root in self._loading if check_workspace(root).trusted]
        files += pi_auth.home_auth_paths(self.env, self.home)
        return list(dict.fromkeys(files))

    async def grants_changed(self) -> None:
        """The refresh broker marked a grant dead (or alive again): re-evaluate."""
        async with self._lock:
            self._evaluate_all_locked(auth=True)

    async def keys_changed(self) -> None:
        """Called after ``keys.set`` / ``keys.clear``."""
        async with self._lock:
            self._credentials_changed()  # even a same-looking value (masks show only its ends) is a new key
            await self._read_stored_keys()
            self._evaluate_all_locked(auth=True)

    # cooldowns --------------------------------------------------------------

    def generation(self, provider: str) -> int:
        """How often what ``provider``'s credentials come from has changed."""
        return self._generations["*"] + self._generations.get(provider, 0)

    def _credentials_changed(self, provider: str = "*") -> None:
        self._generations[provider] = self._generations.get(provider, 0) + 1

    async def cool(self, provider: str, until: float, after: str) -> None:
        """Put ``provider`` on a cooldown (the engine, after a failure), and show it in status."""
        self.cooldowns.begin(provider, until, after)
        self._cooldown_changed.set()
        await self._evaluate_all()

    async def _cooldown_loop(self) -> None:
        """Re-evaluate when a cooldown ends, so status stops showing it."""
        while True:
            self._cooldown_changed = changed = anyio.Event()
            self.cooldowns.active(time.time())  # forget the ones over
            end = self.cooldowns.next_end()
            with anyio.move_on_after(max(end - time.time(), 0) + 0.05 if end is not None else math.inf):
                await changed.wait()
            if not changed.is_set():
                await self._evaluate_all()

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

    def key_pool(
        self, ws: Workspace, env_overlay: Mapping[str, str] | None = None
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """Every variable a run could get, values masked, where each came from, and notes:
        the daemon's environment, plaintext settings keys (the environment wins), stored
        keys (they win), the client's overlay (it wins): the engine's order (Engine.child_env)."""
        pool = dict(self.env)
        sources = {name: f"env:{name}" for name in pool}
        notes: dict[str, str] = {}
        for name, value in ws.settings.api_keys.items():
            if name not in pool:
                pool[name], sources[name] = mask_secret(value) or "****", f"{ws.settings_file}:{name}"
                notes[name] = "plaintext in settings; run `takod key migrate`"
        for name, info in self.user.stored_keys.items():
            if info.available:
                pool[name], sources[name] = info.masked or "****", f"{info.backend}:{name}"
                notes.pop(name, None)
                if info.backend == "file":
                    why = self.user.key_store_reason or "no keyring"
                    notes[name] = f"insecure storage: a plain 0600 file, not the OS keyring ({why})"
        for name, value in (env_overlay or {}).items():
            pool[name], sources[name] = value, f"client-env:{name}"
            notes.pop(name, None)
        # Readiness needs only whether a variable is set and its masked form; empty stays empty.
        masked = {n: v and (mask_secret(v) if sources[n].startswith(("env:", "client-env:")) else v) for n, v in pool.items()}
        return masked, sources, notes

    def pi_plan(
        self, ws: Workspace, pool: Mapping[str, str], *, masked: bool, model: str | None = None,
        sources: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None,
    ) -> pi_resolve.PiPlan:
        """What a pi run in ``ws`` will use (the one decision readiness and the engine share)."""
        agent = ws.pi_agent or pi_resolve.PiAgent(self.pi_agent_dir(ws))
        auth = str(agent.auth_path)
        dead = {provider for source, provider in self.daemon.broker.needs_login() if source == auth}
        return pi_resolve.resolve_pi(
            agent, pool, now=time.time(), dead=dead, model=model, masked_pool=masked, sources=sources, notes=notes
        )

    def facts(self, ws: Workspace, env_overlay: Mapping[str, str] | None = None) -> Facts:
        """What readiness is decided from; ``env_overlay`` is a client's own environment
        (its API keys count as if the daemon had them)."""
        user = self.user
        env = {**self.env, **env_overlay} if env_overlay else self.env
        keyed = self._key_credentials(ws, env)
        pool, sources, notes = self.key_pool(ws, env_overlay)
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
        # What a gemini run will authenticate with (the runner decides the same way).
        gemini_auth = user.gemini_auth or gemini_resolve.AuthFacts(None, False, frozenset())
        # The pool's values are masked; gemini's choice also reads switches ("true", a base URL).
        switches = {name: value for name, value in env.items() if not is_secret_name(name)}
        gemini_plan = gemini_resolve.resolve_gemini(creds["gemini"], {**pool, **switches}, gemini_auth)
        creds["codex"] = codex_run_credentials(user.codex_plan, creds["codex"], pool, sources=sources, masked_pool=True)
        claude_plan = claude_resolve.resolve_claude(
            creds["claude"], {**pool, **switches}, ws.claude or claude_resolve.ClaudeFacts(), masked_pool=True
        )
        warnings: dict[str, list[str]] = {}
        for provider, var in SHADOWING_ENV.items():
            if provider == "claude" and claude_plan.backend != "anthropic":
                continue  # on a cloud claude uses neither the key nor the login
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
            # The chat model a run will use (a client's environment may name another).
            ollama=ollama_resolve.resolve_ollama(ws.ollama, ws.settings.ollama_model, env)
            if ws.ollama is not None and env_overlay else ws.ollama,
            ollama_binary=user.ollama_binary,
            preferred=ws.settings.preferred_provider,
            warnings=warnings,
            unavailable_keys=self._unavailable_keys(),
            key_store_reason=user.key_store_reason,
            untrusted=ws.trust if not ws.trust.trusted else None,
            pi_plan=self.pi_plan(ws, pool, masked=True, sources=sources, notes=notes),
            gemini_plan=gemini_plan,
            claude_plan=claude_plan,
            codex_plan=user.codex_plan,
            api_plans={name: resolve_api(name, pool, sources=sources, masked_pool=True) for name in API_BACKENDS},
            cooling={p: (c.until, c.after) for p, c in self.cooldowns.active(time.time()).items()},
        )

    def _evaluate(self, ws: Workspace, publish: bool = True) -> bool:
        providers, selected = evaluate(self.facts(ws))
        ws.evaluations += 1
        self.daemon.status_file.evaluated(str(ws.root), ws.evaluations, selected)
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

    async def _probe_ollama(self, ws: Workspace, timeout: float | None = None) -> None:
        if not ws.trust.trusted:
            ws.ollama = None  # its settings name no host takod will call
            return
        ws.ollama = await probe_ollama(
            settings_host=ws.settings.ollama_host or None,
            settings_model=ws.settings.ollama_model or None,
            env=self.env,
            **({} if timeout is None else {"timeout": timeout}),
        )
        ws.ollama_probed_at = time.monotonic()

    async def reprobe_ollama(self, ws: Workspace, *, refusing: bool) -> bool:
        """Probe Ollama again now, within REPROBE_TIMEOUT, for a prompt that would
        otherwise be refused (``refusing``), or sent elsewhere, on an old probe
        (Ollama may have started since). Unless refusing, a probe younger than
        REPROBE_MIN_AGE is not repeated (False): resolve.ollama.reprobe_due."""
        if not ollama_resolve.reprobe_due(refusing=refusing, age=time.monotonic() - ws.ollama_probed_at):
            return False
        await self._probe_ollama(ws, ollama_resolve.REPROBE_TIMEOUT)
        async with self._lock:
            self._evaluate(ws)
        return True

    async def _ollama_loop(self, ws: Workspace, scope: anyio.CancelScope) -> None:
        """Re-probe periodically: every minute while reachable, backing off while not."""
        backoff = OLLAMA_INTERVAL_MIN
        with scope:  # cancelled when the workspace is let go
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
        log.debug("ollama probe loop stopped", workspace=str(ws.root))

    # watching ---------------------------------------------------------------

    def _rewatch(self) -> None:
        """Recompute which files feed which facts, and watch them. Runs on every load
        and eviction, so each part's routes are built once and merged here."""
        if self._user_routes is None:
            self._user_routes = self._build_user_routes()
        routes = {path: dict(facts) for path, facts in self._user_routes.items()}
        for root, ws in self.workspaces.items():
            if root not in self._ws_routes:
                self._ws_routes[root] = self._workspace_routes(ws)
            for path, fact, reload in self._ws_routes[root]:
                routes.setdefault(path, {})[fact] = reload
        self._routes = routes
        self.watcher.set_paths(routes)

    def _build_user_routes(self) -> dict[Path, dict[str, Callable[[], Awaitable[None]]]]:
        """The user's files (credentials, the CLIs on PATH) and the facts they feed."""
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
        for path in self._credential_files("claude"):
            route(path, "claude", user("claude"))
        for path in (gemini_auth.oauth_creds_path(self.env), gemini_auth.settings_path(self.env)):
            route(path, "gemini", user("gemini"))
        async def pi_home_changed() -> None:
            await self._read_user_credentials("pi-home")
            for ws in list(self.workspaces.values()):  # a login at home seeds an entry-less workspace file
                await self._ws_pi_changed(ws)

        for path in pi_auth.home_auth_paths(self.env, self.home):
            route(path, "pi-home", pi_home_changed)
        for directory in self._path_dirs():
            for name in BIN_NAMES:
                route(directory / name, "binaries", self._binaries_changed)
        return routes

    def _workspace_routes(self, ws: Workspace) -> list[tuple[Path, str, Callable[[], Awaitable[None]]]]:
        """``ws``'s own files (and the pi agent directory a run uses) and the facts they feed."""
        agent_dir = self.pi_agent_dir(ws)
        pi_files = [(agent_dir / name, f"pi:{ws.root}", lambda: self._ws_pi_changed(ws))
                    for name in (pi_auth.AUTH_FILENAME, "models.json", "settings.json")]
        return [
            (Path(os.path.abspath(path)), fact, reload)
            for path, fact, reload in (
                (ws.settings_file, f"settings:{ws.root}", lambda: self._settings_changed(ws)),
                (ws.pi_auth_file, f"pi:{ws.root}", lambda: self._ws_pi_changed(ws)),
                *pi_files,
                *((path, f"claude:{ws.root}", lambda: self._read_ws_claude(ws))
                  for path in claude_resolve.project_files(ws.root)),
                (workspace_pi_path(ws.root), f"pi-bin:{ws.root}", lambda: self._pi_binary_changed(ws)),
            )
        ]

    def _path_dirs(self) -> list[Path]:
        dirs = []
        for entry in self.env.get("PATH", "").split(os.pathsep):
            if entry and os.path.isabs(entry) and Path(entry) not in dirs:
                dirs.append(Path(entry))
        return dirs

    async def _settings_changed(self, ws: Workspace) -> None:
        before = (ws.settings.ollama_host, ws.settings.ollama_model, ws.trust.trusted)
        await self.check_trust(ws)
        await self._read_settings(ws)
        if (ws.settings.ollama_host, ws.settings.ollama_model, ws.trust.trusted) != before:
            await self._probe_ollama(ws)

    async def _ws_pi_changed(self, ws: Workspace) -> None:
        await self._sync_links(ws)
        await self._read_ws_pi(ws)

    async def _binaries_changed(self) -> None:
        await self._detect_binaries()
        for ws in list(self.workspaces.values()):  # a workspace may load meanwhile
            await self._pi_binary_changed(ws)

    async def _pi_binary_changed(self, ws: Workspace) -> None:
        # Read from files only: loading and file events never run a workspace's program.
        ws.pi_binary = await detect_pi(workspace=ws.root, path=self.env.get("PATH"), mode="manifest")

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
