"""The refresh broker: one process refreshes each OAuth grant, ahead of expiry, once.

A *grant* is one refresh-token lineage. The same grant may be mirrored in
several stores (the home and workspace pi files after seeding; Codex's file
and pi's ``openai-codex`` entry once linked): grants are found by grouping
every refreshable entry by its refresh token, so each is refreshed once and
written to every mirror.

Schedule: a grant is refreshed ``lead`` seconds before its stored expiry
(default 10 minutes; pi refreshes at its stored ``expires`` and Codex 5 minutes
before the JWT ``exp``, so neither ever needs to). Deadlines are wall-clock
times re-checked at least every minute, so a suspend/resume or a clock jump is
noticed; every file change rescans.

One refresh is one critical section, shielded from cancellation (the
provider rotates the refresh token as it answers, so a rotated token must
reach the files even if takod is stopping):
1. Take the lock of every store holding the grant, the way its own tool
   honours it (Codex's flocks first, then pi's directory locks in one global
   order), found again under the locks so that a copy seeded meanwhile is
   among them; pi's locks are kept fresh all along.
2. Re-read the primary store. If someone else already refreshed, adopt
   theirs: no request.
3. The token request, its timeout well inside pi's lock wait.
4. Write the new tokens to every mirror, still under the locks, merging only
   that entry and only where it still holds the old refresh token.
A tool that wakes meanwhile waits on its lock and then reads the new token.
Transient failures retry with exponential backoff and jitter; permanent ones
(``invalid_grant``, ``refresh_token_reused``, ...) mark the grant
``needs-login``, leave every file untouched and stop until a file changes.
Whatever a token endpoint answers, :mod:`.budget` bounds the refreshes per
grant (state ``backing-off`` with a reason code meanwhile).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import httpx
import msgspec
import structlog

from takod.schema import GrantInfo

from ..credentials import codex_auth, codex_link, pi_auth
from ..credentials.files import FileProblem, atomic_write, check_dirs
from ..credentials.pi_auth import OAuthEntry
from ..credentials.codex_lock import codex_lock
from ..credentials.pi_lock import HeldPiLock, LockError, LockLost, pi_lock, pi_locks
from . import budget
from .grants import (
    LOCKED_REQUEST_TIMEOUT_S,
    REFRESHABLE_PI_PROVIDERS,
    RefreshPermanent,
    RefreshTransient,
    refresh_codex,
    refresh_pi_entry,
)

if TYPE_CHECKING:
    from ..daemon import Daemon

log = structlog.get_logger("takod.refresh")

DEFAULT_LEAD = 600.0
# Sleeps run on the monotonic clock, which stands still while the machine is
# suspended and ignores changes of the wall clock: wake at least this often to
# compare the deadlines (wall-clock times) with the wall clock again.
MAX_SLEEP = 60.0
CLOCK_JUMP = 5.0  # wall minus monotonic moving this much in one sleep is a jump
BACKOFF_MIN = 5.0
BACKOFF_MAX = 600.0
LOCK_TIMEOUT = 5.0  # checking before a request: nothing is lost by trying again later
# Taking every store's lock for a refresh: a tool may hold its own for its whole
# refresh (pi: up to its 30 s lock wait plus its request); nothing is spent yet.
CRITICAL_LOCK_TIMEOUT = 35.0
# Saving a rotated token: the old one is spent, so wait out any live holder. pi holds
# its lock at most for one refresh (30 s timeout); a dead holder's goes stale after 30 s.
PERSIST_LOCK_TIMEOUT = 40.0
# Completing a journalled refresh at start: the daemon is not ready meanwhile, and
# a lock that is busy now is tried again at the next start.
STARTUP_LOCK_TIMEOUT = 1.0
REQUEST_BUDGET = 90.0  # token request + persisting, shielded from cancellation
SPENT_KEPT = 64  # rotated-away pi tokens remembered with their successors

GrantState = Literal["scheduled", "refreshing", "retrying", "backing-off", "needs-login"]


class _JournalEntry(msgspec.Struct, array_like=True):
    """A rotated pi token on its way to the files: the provider, the sha256 of
    the refresh token it replaces, and the new entry."""

    provider: str
    old: str
    entry: OAuthEntry


@dataclass(frozen=True)
class Mirror:
    """One store holding a copy of a grant."""

    kind: Literal["pi", "codex"]
    path: Path
    provider: str  # pi provider id; "openai-codex" for Codex's own file

    def describe(self) -> str:
        return f"{self.path}#{self.provider}" if self.kind == "pi" else str(self.path)


@dataclass
class Grant:
    key: str
    provider: str
    refresh_token: str = field(repr=False)
    mirrors: list[Mirror]
    expires_at: float  # the earliest stored expiry among the mirrors, epoch seconds
    signature: tuple[tuple[str, int, int], ...]  # (path, mtime_ns, size) of the mirrors when seen
    state: GrantState = "scheduled"
    attempts: int = 0
    retry_at: float | None = None
    last_refresh: float | None = None
    last_error: str | None = None
    guidance: str | None = None
    hold: budget.Hold | None = None  # the request budget's wait, when it delays the next refresh
    codex_noticed: float | None = None  # when takod first found this Codex login inside Codex's own window

    def due_at(self, lead: float) -> float:
        due = self._natural_due(lead)
        return max(due, self.hold.until) if self.hold is not None else due

    def _natural_due(self, lead: float) -> float:
        if self.state == "retrying" and self.retry_at is not None:
            return self.retry_at
        due = self.expires_at - lead
        if self.last_refresh is not None and self.expires_at > self.last_refresh:
            # A token that lives less than the lead would be refreshed in a loop:
            # never refresh before half of a fresh token's life has passed.
            due = max(due, self.last_refresh + (self.expires_at - self.last_refresh) / 2)
        return due

    def apply_budget(self, hold: budget.Hold | None, lead: float) -> None:
        """Keep ``hold`` when it delays the refresh the expiry asks for (state
        ``backing-off``); drop it otherwise."""
        self.hold = hold if hold is not None and hold.until > self._natural_due(lead) else None
        if self.hold is not None and self.state in ("scheduled", "backing-off"):
            self.state = "backing-off"
        elif self.hold is None and self.state == "backing-off":
            self.state = "scheduled"


def plan(grants: Iterable[Grant], lead: float, now: float) -> tuple[list[str], float | None]:
    """The keys of the grants due at wall-clock time ``now``, and the seconds
    until the next one is due (None when no grant is waiting for a time)."""
    due: list[str] = []
    until_next: float | None = None
    for grant in grants:
        if grant.state in ("needs-login", "refreshing"):
            continue  # woken by a file change / the refresh's end, not by a time
        delay = grant.due_at(lead) - now
        if delay <= 0:
            due.append(grant.key)
        else:
            until_next = delay if until_next is None else min(until_next, delay)
    return due, until_next


def sleep_for(until_next: float | None) -> float:
    """How long the scheduler sleeps: until the next deadline, but never longer
    than MAX_SLEEP, so a suspend or clock change is noticed within it."""
    return MAX_SLEEP if until_next is None else max(0.0, min(until_next, MAX_SLEEP))


def shift_retries(grants: Iterable[Grant], drift: float) -> None:
    """After the wall clock jumped by ``drift`` seconds (beyond the time slept),
    keep each retry's wait as long as it was meant to be when the clock went back
    (it would otherwise wait for the jump too); a jump forward, or a resume, brings
    retries due sooner, which is what a machine that slept through them wants."""
    if drift >= 0:
        return
    for grant in grants:
        if grant.state == "retrying" and grant.retry_at is not None:
            grant.retry_at += drift


def _key(provider: str, refresh_token: str) -> str:
    return f"{provider}:{hashlib.sha256(refresh_token.encode()).hexdigest()[:12]}"


def _signature(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in sorted(set(paths)):
        try:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(path), 0, -1))
    return tuple(out)


@dataclass
class _Found:
    provider: str
    refresh: str
    expires_at: float
    mirrors: list[Mirror]


def scan(pi_files: list[Path], env: Mapping[str, str]) -> list[_Found]:
    """Every refreshable grant in the given pi files and Codex's file, grouped by
    refresh token (blocking: run in a worker thread)."""
    found: dict[str, _Found] = {}

    def add(provider: str, refresh: str, expires_at: float, mirror: Mirror) -> None:
        entry = found.get(refresh)
        if entry is None:
            found[refresh] = _Found(provider, refresh, expires_at, [mirror])
        else:
            entry.expires_at = min(entry.expires_at, expires_at)
            entry.mirrors.append(mirror)

    for path in pi_files:
        try:
            auth = pi_auth.read_auth(path)
        except FileProblem:
            continue  # reported by the state manager; never refreshed from a file we cannot parse
        if auth is None or not auth.writable:
            continue
        for provider, entry in auth.entries.items():
            if isinstance(entry, OAuthEntry) and entry.refresh and provider in REFRESHABLE_PI_PROVIDERS:
                add(provider, entry.refresh, entry.expires / 1000, Mirror("pi", path, provider))
    home = codex_auth.codex_home(env)
    try:
        if codex_auth.file_is_writable(codex_auth.read_store_mode(home)):
            codex = codex_auth.read_auth(codex_auth.auth_path(home))
            if codex is not None and codex.auth_mode == "chatgpt" and codex.refresh_token:
                # Codex refreshes 5 min before exp; an unknown exp means refresh now.
                expires = codex.expires_at if codex.expires_at is not None else time.time()
                add(codex_link.PI_PROVIDER, codex.refresh_token, expires, Mirror("codex", Path(codex.path), "openai-codex"))
    except FileProblem:
        pass
    return list(found.values())


class RefreshBroker:
    """Schedules and performs refreshes; one task group for its lifetime."""

    def __init__(self, daemon: "Daemon", env: Mapping[str, str], lead: float = DEFAULT_LEAD):
        self.daemon = daemon
        self.env = env
        self.lead = lead
        self.grants: dict[str, Grant] = {}
        self._inflight: dict[str, anyio.Event] = {}
        self._successor: dict[str, str] = {}  # old grant key -> key after its token rotated
        self._last_refresh: dict[str, float] = {}  # grant key -> when takod last refreshed it
        # Mirror (its describe()) -> when takod refreshed the grant it held: the request
        # budget follows the stores, not the token, which changes with every refresh.
        self._history: dict[str, list[float]] = {}
        # sha256 of a rotated-away pi refresh token -> (provider, the entry that replaced it):
        # a store found holding a spent token gets its successor instead of a request.
        self._spent: dict[str, tuple[str, OAuthEntry]] = {}
        self._wakeup = anyio.Event()
        self._http: httpx.AsyncClient | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        # Deadlines are wall-clock times (expiries are); sleeps run on the monotonic
        # clock. Both injectable, for tests of clock jumps.
        self.wall = time.time
        self.mono = time.monotonic

    # lifetime ---------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=30.0) as http, anyio.create_task_group() as tg:
            self._http, self._tg = http, tg
            await anyio.to_thread.run_sync(self._finish_interrupted)
            await self.rescan()
            task_status.started()
            await self._schedule()

    async def _schedule(self) -> None:
        while True:
            wall, mono = self.wall(), self.mono()
            due, until_next = plan(self.grants.values(), self.lead, wall)
            for key in due:
                assert self._tg is not None
                self._tg.start_soon(self.refresh, key, False)
            with anyio.move_on_after(sleep_for(until_next)):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            drift = (self.wall() - wall) - (self.mono() - mono)
            if abs(drift) > CLOCK_JUMP:
                log.info("wall clock jumped (suspend/resume?); re-evaluating refresh deadlines", drift_s=round(drift, 1))
                shift_retries(self.grants.values(), drift)
                # Another tool may have refreshed while we slept: look at the stores again
                # before any deadline is acted on (each refresh re-reads under the locks too).
                await self.rescan()

    def poke(self) -> None:
        self._wakeup.set()

    # grants -----------------------------------------------------------------

    async def rescan(self) -> None:
        """Re-read every store; keep what we know about grants that still exist."""
        files = self.daemon.state.pi_files()
        found = await anyio.to_thread.run_sync(scan, files, self.env)
        grants: dict[str, Grant] = {}
        for f in found:
            key = _key(f.provider, f.refresh)
            signature = _signature([m.path for m in f.mirrors])
            grant = self.grants.get(key)
            if grant is None:
                grant = Grant(key, f.provider, f.refresh, f.mirrors, f.expires_at, signature)
                grant.last_refresh = self._last_refresh.get(key)
            else:
                # Update the known grant in place: a refresh in flight holds this very
                # object and records its outcome (retrying, needs-login) on it.
                if grant.state == "needs-login" and grant.signature != signature:
                    # One of its files changed (a new login?): try again, with a fresh budget.
                    grant.state, grant.attempts, grant.retry_at, grant.guidance = "scheduled", 0, None, None
                    for m in grant.mirrors:
                        self._history.pop(m.describe(), None)
                grant.mirrors, grant.expires_at, grant.signature = f.mirrors, f.expires_at, signature
            now = self.wall()
            grant.apply_budget(budget.later(budget.hold(self._times(grant.mirrors), now), self._codex_wait(grant, now)),
                               self.lead)
            grants[key] = grant
        self.grants = grants
        # Forget rotated-away lineages so months of refreshes do not pile up.
        # (A refresh still writing its files keeps its entry.)
        recent = time.time() - REQUEST_BUDGET
        self._last_refresh = {k: v for k, v in self._last_refresh.items() if k in grants or v > recent}
        self._successor = {k: v for k, v in self._successor.items() if v in grants}
        now = self.wall()
        self._history = {m: kept for m, times in self._history.items() if (kept := budget.prune(times, now))}
        self.poke()

    def _times(self, mirrors: Iterable[Mirror]) -> list[float]:
        """When takod refreshed the grant held in any of ``mirrors`` (each refresh once)."""
        return sorted({t for m in mirrors for t in self._history.get(m.describe(), ())})

    @staticmethod
    def _codex_wait(grant: Grant, now: float) -> budget.Hold | None:
        """Codex's first move on a login of its own that takod first finds already
        in Codex's refresh window (budget.codex_first_move): noticed once per grant."""
        if not any(m.kind == "codex" for m in grant.mirrors):
            return None  # pi re-reads under its lock before refreshing: no race to avoid
        if grant.codex_noticed is None and budget.in_codex_window(grant.expires_at, now):
            grant.codex_noticed = now
        return budget.codex_first_move(grant.codex_noticed, now) if grant.codex_noticed is not None else None

    def _note_request(self, mirrors: Iterable[Mirror], when: float) -> None:
        for m in mirrors:
            self._history.setdefault(m.describe(), []).append(when)

    def needs_login(self) -> set[tuple[str, str]]:
        """(file path, provider) of every mirror whose grant can no longer be refreshed."""
        return {
            (str(m.path), "codex" if m.kind == "codex" else m.provider)
            for g in self.grants.values()
            if g.state == "needs-login"
            for m in g.mirrors
        }

    def held_back(self) -> dict[str, list[str]]:
        """Per provider name (``pi``, ``codex``): a warning for each grant whose next
        refresh the request budget delays, with the reason code and the time."""
        out: dict[str, list[str]] = {}
        for g in self.grants.values():
            if g.hold is None:
                continue
            when = datetime.fromtimestamp(g.due_at(self.lead), timezone.utc).strftime("%H:%M:%S UTC")
            if g.hold.reason == budget.WAITING_FOR_CODEX:
                text = (f"refresh-backing-off: {g.hold.reason}: the Codex login expired while takod was not "
                        f"watching; a starting codex refreshes it itself; takod refreshes it at {when} if not")
            else:
                text = (f"refresh-backing-off: {g.hold.reason}: takod limits token requests per login; "
                        f"next {g.provider} refresh attempt at {when}")
            for name in dict.fromkeys("codex" if m.kind == "codex" else "pi" for m in g.mirrors):
                out.setdefault(name, []).append(text)
        return out

    def info(self, grant: Grant) -> GrantInfo:
        return GrantInfo(
            id=grant.key,
            provider=grant.provider,
            mirrors=[m.describe() for m in grant.mirrors],
            expires_at=grant.expires_at,
            refresh_at=None if grant.state == "needs-login" else grant.due_at(self.lead),
            last_refresh=grant.last_refresh,
            last_error=grant.last_error,
            state=grant.state,
            guidance=grant.guidance,
            wait_reason=grant.hold.reason if grant.hold is not None else None,
        )

    # refreshing ---------------------------------------------------------------

    async def refresh(self, key: str, force: bool = True) -> Grant | None:
        """Refresh grant ``key`` (single flight: concurrent callers share one refresh)."""
        waiting = self._inflight.get(key)
        if waiting is not None:
            await waiting.wait()
            return self._current(key)
        grant = self.grants.get(key)
        if grant is None:
            return None
        done = self._inflight[key] = anyio.Event()
        grant.state = "refreshing"
        try:
            await self._refresh(grant, force)
        finally:
            del self._inflight[key]
            done.set()
            self.poke()
        return self._current(key)

    def _current(self, key: str) -> Grant | None:
        """The grant as it is now, following rotations of its refresh token."""
        seen = set()
        while key in self._successor and key not in seen:
            seen.add(key)
            key = self._successor[key]
        return self.grants.get(key)

    async def _refresh(self, grant: Grant, force: bool) -> None:
        log_ = log.bind(grant=grant.key, provider=grant.provider)
        primary = grant.mirrors[0]
        pending = self._journal_path(grant.refresh_token)
        if pending is not None and await anyio.to_thread.run_sync(pending.exists):
            # This token was already spent: its successor waits in the journal (a
            # full disk, a lock, a kill kept it from the files). Never send it again.
            new_refresh, written, failed = await anyio.to_thread.run_sync(self._apply_journal, pending, LOCK_TIMEOUT)
            if failed is not None:
                self._retry(grant, f"cannot save the refreshed token (takod keeps it meanwhile): {failed}")
                log_.warning("refreshed token still not saved; will retry", error=grant.last_error)
                return
            log_.info("saved a refreshed token kept in the journal", mirrors=written)
            await self._adopt(grant, new_refresh)
            return
        successor = self._successor_of(grant)
        if successor is not None:
            # A store still holds a token takod already spent (copied from an old file):
            # give it the token that replaced it instead of sending the spent one.
            written, failed = await anyio.to_thread.run_sync(
                self._write_pi_mirrors, grant.mirrors, grant.refresh_token, successor, LOCK_TIMEOUT
            )
            if failed is not None:
                self._retry(grant, f"cannot save the refreshed token: {failed}")
                return
            log_.info("a copy held an already spent token; gave it the current one", mirrors=written)
            await self._adopt(grant, successor.refresh)
            return
        now = self.wall()
        hold = budget.hold(self._times(grant.mirrors), now)
        if not force:  # `takod auth refresh` is the user's call: it does not wait for Codex
            hold = budget.later(hold, self._codex_wait(grant, now))
        if hold is not None:
            # A login already known dead stays reported as such (with its guidance).
            grant.state, grant.hold = ("needs-login" if grant.guidance else "backing-off"), hold
            if hold.reason == budget.WAITING_FOR_CODEX:
                log_.info("Codex login already expired: leaving the first move to a starting codex",
                          next_attempt_in_s=round(hold.until - now))
            else:
                log_.warning("refresh held back by the request budget", reason=hold.reason,
                             next_attempt_in_s=round(hold.until - now))
            return
        assert self._http is not None
        try:
            # Shielded: once the request is sent the provider may rotate the token,
            # and the rotated token must be written even if we are being stopped.
            with anyio.CancelScope(shield=True):
                outcome = await self._critical_section(grant, force)
        except RefreshTransient as exc:
            self._retry(grant, exc.reason, exc.retry_after)
            log_.warning("refresh failed; will retry", error=exc.reason, attempts=grant.attempts)
            return
        except RefreshPermanent as exc:
            # The endpoint answered: count it (a 200 with an unusable token may have rotated
            # the refresh token), so neither the scheduler nor a client can repeat it at will.
            self._note_request(grant.mirrors, self.wall())
            try:
                adopted = await anyio.to_thread.run_sync(self._someone_else_refreshed, grant, True, False)
            except (FileProblem, LockError) as check:
                # Whether another process refreshed first cannot be told now: look again later.
                self._retry(grant, f"refresh rejected ({exc.code}); cannot check {primary.path}: {check}")
                log_.warning("refresh rejected; will check the stored token again", error=grant.last_error)
                return
            if adopted:
                log_.info("refresh rejected because another process refreshed first; adopted theirs")
                await self._adopt(grant, adopted[1])
                return
            grant.state, grant.last_error, grant.guidance = "needs-login", exc.code, exc.guidance
            log_.warning("refresh rejected; login needed", error=exc.code)
            self.daemon.bus.publish(
                "auth", {"kind": "needs-login", "grant": grant.key, "provider": grant.provider,
                         "error": exc.code, "guidance": exc.guidance}
            )
            await self.daemon.state.grants_changed()
            return
        except (TimeoutError, FileProblem, LockError, OSError) as exc:
            self._retry(grant, f"{type(exc).__name__}: {exc}")
            log_.warning("refresh failed; will retry", error=grant.last_error)
            return
        except Exception as exc:  # a bug (or an answer nobody foresaw) must not end the broker, and the daemon with it
            self._retry(grant, f"unexpected error ({type(exc).__name__}); see the daemon log")
            log_.exception("refresh failed unexpectedly; will retry")
            return
        if outcome[0] == "adopted":
            log_.info("refresh not needed: the stored token is already fresh", reason=outcome[1])
            await self._adopt(grant, outcome[2])
            return
        _, written, new_refresh = outcome
        grant.state, grant.attempts, grant.retry_at = "scheduled", 0, None
        new_key = _key(grant.provider, new_refresh)
        grant.last_refresh, grant.last_error, grant.guidance = self._last_refresh.get(new_key, time.time()), None, None
        if new_key != grant.key:
            self._successor[grant.key] = new_key
        log_.info("refreshed", mirrors=written)
        self.daemon.bus.publish("auth", {"kind": "refreshed", "grant": grant.key, "provider": grant.provider,
                                          "mirrors": written})
        await self._after_change()

    async def _critical_section(self, grant: Grant, force: bool) -> tuple:
        """Steps 1-4 of a refresh (module docstring), under every store's lock:
        ("adopted", why, refresh token stored now) or ("refreshed", mirrors written,
        refresh token now)."""
        stack = ExitStack()
        try:
            files = self.daemon.state.pi_files()
            mirrors, held = await anyio.to_thread.run_sync(self._lock_stores, grant, files, stack)
            adopted = await anyio.to_thread.run_sync(self._someone_else_refreshed, grant, force, True)
            if adopted:
                return ("adopted", *adopted)
            with anyio.fail_after(REQUEST_BUDGET):
                written, new_refresh = await self._request_and_persist(grant, mirrors, held)
            return ("refreshed", written, new_refresh)
        finally:
            await anyio.to_thread.run_sync(stack.close)

    def _lock_stores(
        self, grant: Grant, files: list[Path], stack: ExitStack
    ) -> tuple[list[Mirror], dict[Path, HeldPiLock]]:
        """Take the lock of every store holding ``grant``'s token (blocking: a worker
        thread), entered on ``stack``; the stores and pi's held locks. The stores
        are found again under the locks: a copy made before we held them (a seed)
        is then locked and written too; none can be made after (the copier needs
        its source's lock)."""
        deadline = time.monotonic() + CRITICAL_LOCK_TIMEOUT
        # A store deleted since the last scan (a removed workspace) has no lock to take.
        mirrors = [m for m in grant.mirrors if m.path.exists()]
        for _ in range(3):
            mirrors = list(dict.fromkeys([*mirrors, *self._holding(grant, files)]))
            locks = ExitStack()
            try:
                codex = next((m for m in mirrors if m.kind == "codex"), None)
                if codex is not None:
                    locks.enter_context(codex_lock(codex.path.parent, timeout=max(0.0, deadline - time.monotonic())))
                pi_paths = [m.path for m in mirrors if m.kind == "pi"]
                held = locks.enter_context(pi_locks(pi_paths, timeout=max(0.0, deadline - time.monotonic())))
                more = [m for m in self._holding(grant, files) if m not in mirrors]
            except BaseException:
                locks.close()
                raise
            if not more:
                stack.push(locks.pop_all())
                return mirrors, held
            locks.close()  # a new copy appeared before we held its lock: lock it too
        raise LockError(grant.mirrors[0].path, "busy", "the stores holding this login keep changing")

    def _holding(self, grant: Grant, files: list[Path]) -> list[Mirror]:
        """Every store holding ``grant``'s refresh token now (blocking)."""
        found = scan(files, self.env)
        return next((f.mirrors for f in found if f.refresh == grant.refresh_token), [])

    def _successor_of(self, grant: Grant) -> OAuthEntry | None:
        """The entry that replaced ``grant``'s token, if takod spent it already."""
        seen: set[str] = set()
        token, found = grant.refresh_token, None
        while (digest := hashlib.sha256(token.encode()).hexdigest()) in self._spent and digest not in seen:
            seen.add(digest)
            provider, found = self._spent[digest]
            if provider != grant.provider:
                return None
            token = found.refresh
        if found is None or any(m.kind != "pi" for m in grant.mirrors):
            return None
        return found

    def _remember_spent(self, provider: str, old_refresh: str, new: OAuthEntry) -> None:
        self._spent[hashlib.sha256(old_refresh.encode()).hexdigest()] = (provider, new)
        while len(self._spent) > SPENT_KEPT:
            del self._spent[next(iter(self._spent))]

    async def _adopt(self, grant: Grant, current_refresh: str | None) -> None:
        """Take what another process stored instead of refreshing; callers waiting
        on ``grant`` follow its lineage to the token stored now."""
        grant.state, grant.attempts, grant.retry_at = "scheduled", 0, None
        if current_refresh is not None and current_refresh != grant.refresh_token:
            self._successor[grant.key] = _key(grant.provider, current_refresh)
        await self._after_change()

    async def _after_change(self) -> None:
        await self.rescan()
        await self.daemon.state.grants_changed()

    def _retry(self, grant: Grant, error: str, retry_after: float | None = None) -> None:
        grant.attempts += 1
        backoff = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (grant.attempts - 1)) * random.uniform(0.5, 1.5)
        grant.state, grant.last_error = "retrying", error
        grant.retry_at = self.wall() + max(backoff, retry_after or 0.0)

    def _someone_else_refreshed(self, grant: Grant, force: bool, locked: bool) -> tuple[str, str | None] | None:
        """Re-read the primary store (pi's under its lock, taken briefly unless
        ``locked``: the caller holds it): None if we should refresh, else why not
        and the refresh token stored now (None when the login is gone)."""
        primary = grant.mirrors[0]
        if primary.kind == "pi" and not locked:
            with pi_lock(primary.path, timeout=LOCK_TIMEOUT):
                stored = self._stored(primary)
        else:
            stored = self._stored(primary)
        if stored is None:
            return ("entry gone" if primary.kind == "pi" else "login gone"), None
        current_refresh, expires_at = stored
        if current_refresh != grant.refresh_token:
            return "refreshed by someone else", current_refresh
        if not force and expires_at - self.lead > time.time() and not self._stale_copy(grant):
            return "not due", current_refresh
        return None

    def _stale_copy(self, grant: Grant) -> bool:
        """Whether another mirror still holding this grant's token is due. A login that
        does not rotate (Copilot, Google) may have been renewed in one copy only:
        refreshing renews every copy, while adopting would leave the grant due and
        the scheduler spinning on it."""
        due = time.time() + self.lead
        for mirror in grant.mirrors[1:]:
            try:
                stored = self._stored(mirror)
            except FileProblem:
                continue
            if stored is not None and stored[0] == grant.refresh_token and stored[1] <= due:
                return True
        return False

    @staticmethod
    def _stored(mirror: Mirror) -> tuple[str, float] | None:
        """(refresh token, expiry) that ``mirror`` holds now; None when its login is gone."""
        if mirror.kind == "pi":
            auth = pi_auth.read_auth(mirror.path)
            entry = auth.entries.get(mirror.provider) if auth else None
            return (entry.refresh, entry.expires / 1000) if isinstance(entry, OAuthEntry) else None
        codex = codex_auth.read_auth(mirror.path)
        if codex is None or not codex.refresh_token:
            return None
        return codex.refresh_token, codex.expires_at if codex.expires_at is not None else 0.0

    async def _request_and_persist(
        self, grant: Grant, started: list[Mirror], held: dict[Path, HeldPiLock]
    ) -> tuple[list[str], str]:
        """Request new tokens and write them to every store in ``started`` (locked by
        the caller) and any found since; returns (mirrors written, refresh token now)."""
        assert self._http is not None
        now = time.time()
        codex_mirror = next((m for m in started if m.kind == "codex"), None)
        if codex_mirror is not None:
            codex = await anyio.to_thread.run_sync(codex_auth.read_auth, codex_mirror.path)
            if codex is None:
                raise FileProblem(codex_mirror.path, "missing", "disappeared")
            update = await refresh_codex(codex, self._http, self.env, now, timeout=LOCKED_REQUEST_TIMEOUT_S)
            self._note_refreshed(grant, update.refresh_token or grant.refresh_token, started)
            written = await anyio.to_thread.run_sync(self._persist_codex, grant, started, codex, update, held)
            return written, update.refresh_token or grant.refresh_token
        entry = await anyio.to_thread.run_sync(self._read_entry, started[0])
        new = await refresh_pi_entry(grant.provider, entry, self._http, self.env, int(now * 1000),
                                     timeout=LOCKED_REQUEST_TIMEOUT_S)
        self._note_refreshed(grant, new.refresh, started)
        if new.refresh != grant.refresh_token:
            self._remember_spent(grant.provider, grant.refresh_token, new)
        return await anyio.to_thread.run_sync(self._persist_pi, grant, started, new, held), new.refresh

    def _note_refreshed(self, grant: Grant, new_refresh: str, mirrors: list[Mirror]) -> None:
        """Remember the refresh before its tokens reach the files: a rescan that
        sees the first file written must not take the new token for a grant never
        refreshed (one living less than the lead would be refreshed again at once),
        and the request budget counts it whatever the answer holds."""
        self._last_refresh[_key(grant.provider, new_refresh)] = time.time()
        self._note_request(mirrors, self.wall())

    @staticmethod
    def _read_entry(mirror: Mirror) -> OAuthEntry:
        auth = pi_auth.read_auth(mirror.path)
        entry = auth.entries.get(mirror.provider) if auth else None
        if not isinstance(entry, OAuthEntry):
            raise FileProblem(mirror.path, "missing", f"no longer holds {mirror.provider}")
        return entry

    @staticmethod
    def _all_mirrors(grant: Grant, started: list[Mirror]) -> list[Mirror]:
        """The mirrors known when the request went out and those found since: a rescan
        meanwhile may have missed a copy (read half-written) or found a new one."""
        return list(dict.fromkeys([*started, *grant.mirrors]))

    def _persist_pi(
        self, grant: Grant, started: list[Mirror], new: OAuthEntry, held: dict[Path, HeldPiLock]
    ) -> list[str]:
        """Write ``new`` into every pi mirror still holding the old refresh token,
        journalled first so that a kill between two mirrors cannot leave one of
        them with a spent token for good."""
        record = self._journal(grant.provider, grant.refresh_token, new)
        written, failed = self._write_pi_mirrors(
            self._all_mirrors(grant, started), grant.refresh_token, new, PERSIST_LOCK_TIMEOUT, held
        )
        if record is not None and failed is None:
            record.unlink(missing_ok=True)
        if not written:
            kept = "; takod keeps it until it can" if record is not None else ""
            raise FileProblem(grant.mirrors[0].path, "unwritable",
                              f"no file accepted the refreshed token{kept} ({failed or 'no copy holds the old token'})")
        return written

    @staticmethod
    def _write_pi_mirrors(
        mirrors: list[Mirror], old_refresh: str, new: OAuthEntry, lock_timeout: float = PERSIST_LOCK_TIMEOUT,
        held: dict[Path, HeldPiLock] | None = None,
    ) -> tuple[list[str], str | None]:
        """Put ``new`` in each pi mirror whose entry still holds ``old_refresh``:
        (mirrors written, why one could not be checked or written)."""
        written: list[str] = []
        failed: str | None = None
        for mirror in mirrors:
            def choose(current: pi_auth.PiEntry | None) -> OAuthEntry | None:
                if isinstance(current, OAuthEntry) and current.refresh == old_refresh:
                    return new
                return None

            try:
                if _replace(mirror, choose, held or {}, lock_timeout) is not None:
                    written.append(mirror.describe())
            except (FileProblem, LockError, OSError) as exc:
                # Keep going: the other mirrors must get the rotated token regardless.
                failed = f"{mirror.describe()}: {exc}"
                log.error("could not write the refreshed token", mirror=mirror.describe(), error=str(exc))
        return written, failed

    # the journal of rotated tokens not yet in every file ----------------------------

    def _journal_dir(self) -> Path | None:
        state_dir = getattr(self.daemon, "state_dir", None)
        return Path(state_dir) / "refresh-journal" if state_dir is not None else None

    def _journal(self, provider: str, old_refresh: str, new: OAuthEntry) -> Path | None:
        """Note ``new`` durably (0600, in the private state dir) before any mirror is
        written; None when there is no state dir or the note cannot be written."""
        path = self._journal_path(old_refresh)
        if path is None:
            return None
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            check_dirs(path.parent.parent, path)  # a symlinked journal dir would put new tokens elsewhere
            old = hashlib.sha256(old_refresh.encode()).hexdigest()
            atomic_write(path, msgspec.json.encode(_JournalEntry(provider, old, new)))
        except (OSError, FileProblem) as exc:  # FileProblem: a link planted in the state dir
            log.warning("could not journal a refreshed token", error=str(exc))
            return None
        return path

    def _journal_path(self, old_refresh: str) -> Path | None:
        directory = self._journal_dir()
        if directory is None:
            return None
        return directory / f"{hashlib.sha256(old_refresh.encode()).hexdigest()[:32]}.json"

    def _apply_journal(self, path: Path, lock_timeout: float) -> tuple[str | None, list[str], str | None]:
        """Write one journalled token into every pi file entry still holding the
        token it replaced, and drop the note once nothing is left to write:
        (the new refresh token, mirrors written, why one could not be written)."""
        try:
            record = msgspec.json.decode(path.read_bytes(), type=_JournalEntry)
        except FileNotFoundError:
            return None, [], None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            path.unlink(missing_ok=True)  # half a note is no note
            return None, [], None
        written: list[str] = []
        failed: str | None = None
        for file in self.daemon.state.pi_files():
            try:
                auth = pi_auth.read_auth(file)
            except FileProblem as exc:
                failed = str(exc)
                continue
            entry = auth.entries.get(record.provider) if auth else None
            if isinstance(entry, OAuthEntry) and hashlib.sha256(entry.refresh.encode()).hexdigest() == record.old:
                done, bad = self._write_pi_mirrors([Mirror("pi", file, record.provider)], entry.refresh,
                                                   record.entry, lock_timeout)
                written += done
                failed = bad or failed
        if failed is None:
            path.unlink(missing_ok=True)
        return record.entry.refresh, written, failed

    def _finish_interrupted(self) -> None:
        """Complete refreshes a killed daemon left half written (blocking: run in a
        worker thread before the first scan)."""
        directory = self._journal_dir()
        if directory is None or not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            _new, written, _failed = self._apply_journal(path, STARTUP_LOCK_TIMEOUT)
            for mirror in written:
                log.warning("completed a refresh a stopped takod left half written", mirror=mirror)

    def _persist_codex(
        self, grant: Grant, started: list[Mirror], before: codex_auth.CodexAuth, update: codex_auth.TokenRefresh,
        held: dict[Path, HeldPiLock],
    ) -> list[str]:
        """Codex's file first (compare-before-write), then each pi copy that still
        holds the token just spent, mapped from the new tokens as the link maps them.
        (Not the link's newer-token test: tokens issued within one second look the
        same age.) A failure on one store never keeps the others from the new tokens."""
        written: list[str] = []
        home = codex_auth.codex_home(self.env)
        path = Path(before.path)
        try:
            if codex_auth.write_refreshed_tokens(home, update, grant.refresh_token):
                written.append(str(path))
        except (FileProblem, OSError) as exc:
            # Caught mid-write by Codex, say: the link copies pi's newer tokens back later.
            log.error("could not write the refreshed token", mirror=str(path), error=str(exc))
        tokens = {"id_token": before.id_token, "access_token": before.access_token,
                  "refresh_token": before.refresh_token, "account_id": before.account_id}
        now = datetime.now(timezone.utc)
        codex = codex_auth.parse_auth(
            codex_auth.apply_refresh({"auth_mode": "chatgpt", "tokens": tokens}, update, now), path
        )
        now_ms = int(now.timestamp() * 1000)
        for other in self._all_mirrors(grant, started):
            if other.kind != "pi":
                continue

            def choose(current: pi_auth.PiEntry | None) -> OAuthEntry | None:
                if not isinstance(current, OAuthEntry) or current.refresh != grant.refresh_token:
                    return None
                return codex_link.pi_entry_from_codex(codex, current, now_ms)

            try:
                if _replace(other, choose, held, PERSIST_LOCK_TIMEOUT) is not None:
                    written.append(other.describe())
            except (FileProblem, LockError, OSError, ValueError) as exc:
                log.error("could not write the refreshed token", mirror=other.describe(), error=str(exc))
        if not written:
            raise FileProblem(path, "unwritable", "no mirror accepted the refreshed token")
        return written


def _replace(
    mirror: Mirror, choose: Callable[[pi_auth.PiEntry | None], OAuthEntry | None],
    held: dict[Path, HeldPiLock], lock_timeout: float,
) -> OAuthEntry | None:
    """``pi_auth.replace_entry`` for ``mirror``, under the lock the refresh holds
    when it holds one (blocking). A held lock lost meanwhile (takod stopped for
    longer than pi's stale time, say) is taken again: the token is spent, and the
    write still only replaces the old refresh token."""
    lock = held.get(mirror.path) or next(
        (h for p, h in held.items() if os.path.realpath(p) == os.path.realpath(mirror.path)), None
    )
    if lock is not None:
        try:
            return pi_auth.replace_entry(mirror.path, mirror.provider, choose, held=lock)
        except LockLost as exc:
            log.warning("lost pi's lock during a refresh; taking it again to save the token", error=str(exc))
    return pi_auth.replace_entry(mirror.path, mirror.provider, choose, lock_timeout=lock_timeout)
