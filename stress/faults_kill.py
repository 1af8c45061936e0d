"""kill -9 of the daemon at random points of a refresh and of a settings write.

    python stress/faults_kill.py [--iterations 100] [--settings-iterations 100] [--seed N] [--json]

Refresh: each iteration is a fresh HOME with a Tako workspace, one Anthropic
login in pi's home ``auth.json`` (takod seeds it into the workspace file) and
one Codex login in ``~/.codex/auth.json`` (takod links it into the workspace pi
file), both due. A loopback token server (tests/fakes/oauth_server.py) knows
each login's current refresh token; both rotate on every refresh. The daemon
is started and killed with SIGKILL after a random delay drawn over the time a
whole refresh takes (measured first, unkilled). Then:

- every file must parse (pi's two files, Codex's, the settings);
- no token is lost: some file holds the token the server accepts now (a copy
  still holding a spent token is counted as a *lagging copy*);
- what the kill left behind is counted: pi lock directories (``auth.json.lock``,
  stale after 30 s) and temporary files of an interrupted write;
- a new daemon on the same HOME must bring every copy to the server's current
  token (``recovered``), and how long that took.

Settings: one daemon; a client writes ``settings.set`` in a loop while the
daemon is killed at a random moment; the file must parse and hold either the
value before or the value being written. Then a new daemon is started on it.

Prints figures and a verdict (exit 0 when every check held, 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from takod import RemoteError  # noqa: E402
from tests.fakes.oauth_server import FakeOAuthServer  # noqa: E402
from tests.harness import DaemonProcess, clean_env  # noqa: E402

RECOVERY_TIMEOUT = 120.0  # a lock left by the kill goes stale after 30 s; the rest is load headroom
POLL = 0.005
ISSUE_TIME_RESOLUTION = 1.1


# --- one HOME -----------------------------------------------------------------------------


@dataclass
class Home:
    root: Path
    server: FakeOAuthServer
    anthropic: str  # grant names on the server
    openai: str
    originals: dict[str, str]  # grant -> refresh token planted

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def home_pi(self) -> Path:
        return self.root / ".pi" / "agent" / "auth.json"

    @property
    def ws_pi(self) -> Path:
        return self.ws / ".tako" / "pi" / "agent" / "auth.json"

    @property
    def codex(self) -> Path:
        return self.root / ".codex" / "auth.json"

    @property
    def settings(self) -> Path:
        return self.ws / ".tako" / "state" / "inference-settings.json"

    def env(self) -> dict[str, str]:
        return clean_env(self.root, TAKO_WORKSPACE=str(self.ws), PATH="/usr/bin:/bin",
                         OLLAMA_HOST="http://127.0.0.1:9", **self.server.env())

    def daemon(self) -> DaemonProcess:
        return DaemonProcess(self.root, self.env())


def _write_private(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)


def make_home(base: Path, server: FakeOAuthServer, n: int) -> Home:
    root = base / f"h{n}"
    (root / "ws" / ".tako").mkdir(parents=True)
    (root / "ws" / "tako.toml").write_text("")
    anth = server.add_grant(f"anth{n}", "anthropic", lifetime_s=3600)
    # JWT exp in 7.5 min: due (lead 10 min), outside Codex's own 5-min window (which waits for Codex first)
    oai = server.add_grant(f"oai{n}", "openai", lifetime_s=450)
    entry = anth.pi_entry()
    entry["expires"] = int((time.time() + 60) * 1000)  # due
    home = Home(root, server, anth.name, oai.name, {anth.name: anth.refresh, oai.name: oai.refresh})
    _write_private(home.home_pi, {"anthropic": entry})
    _write_private(home.codex, oai.codex_auth())
    return home


# --- what is on disk ------------------------------------------------------------------------


def _parse(path: Path) -> tuple[Any, str | None]:
    """(document, problem): a missing file is no problem; one that does not parse is."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return json.loads(data), None
    except ValueError as exc:
        return None, f"{path.name}: {exc}"


def copies(home: Home) -> tuple[dict[str, list[str]], list[str]]:
    """Refresh tokens on disk per grant (every copy), and the files that did not parse."""
    found: dict[str, list[str]] = {home.anthropic: [], home.openai: []}
    broken = []
    for path in (home.home_pi, home.ws_pi, home.codex, home.settings):
        doc, problem = _parse(path)
        if problem:
            broken.append(problem)
        if not isinstance(doc, dict):
            continue
        if path == home.codex:
            token = (doc.get("tokens") or {}).get("refresh_token")
            if token:
                found[home.openai].append(token)
            continue
        for provider, grant in (("anthropic", home.anthropic), ("openai-codex", home.openai)):
            entry = doc.get(provider)
            if isinstance(entry, dict) and entry.get("refresh"):
                found[grant].append(entry["refresh"])
    return found, broken


def lock_dirs(home: Home) -> dict[Path, tuple[int, int]]:
    """Every pi lock directory under ``home``, with its inode and mtime (ns)."""
    found = {}
    for where, dirs, _files in os.walk(home.root):
        for d in dirs:
            if d.endswith(".lock"):
                try:
                    st = os.lstat(Path(where) / d)
                except FileNotFoundError:
                    continue
                found[Path(where) / d] = (st.st_ino, st.st_mtime_ns)
    return found


def noted_locks(home: Home) -> dict[Path, tuple[int, int]]:
    """The locks a killed daemon had noted as its own ($TAKOD_STATE_DIR/pi-locks), with the inode
    and mtime it noted: the next daemon must remove each that is still exactly so."""
    found = {}
    for record in (home.root / "state" / "pi-locks").glob("*.json"):
        try:
            doc = json.loads(record.read_text())
            found[Path(doc["lock"])] = (int(doc["ino"]), int(doc["mtime_ns"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found


def temp_files(home: Home) -> int:
    """Temporary files of interrupted writes under ``home``."""
    return sum(1 for _dir, _dirs, files in os.walk(home.root) for f in files if f.startswith(".") and f.endswith(".tmp"))


def all_current(home: Home) -> bool:
    found, broken = copies(home)
    if broken:
        return False
    want = {g: home.server.current_refresh(g) for g in found}
    # Every copy there is holds the current token, and the workspace file has both logins.
    return all(found[g] and all(t == want[g] for t in found[g]) for g in found) and len(found[home.openai]) == 2 \
        and len(found[home.anthropic]) == 2


# --- refresh kills ----------------------------------------------------------------------------


class TimedServer(FakeOAuthServer):
    """The fake token server, noting when it rotated each grant (its commit point:
    from then on only the answer it sends holds the new token)."""

    def __init__(self) -> None:
        super().__init__()
        self.rotated_at: dict[str, float] = {}

    def _redeem(self, endpoint: Any, token: str, client: str | None) -> Any:
        grant = super()._redeem(endpoint, token, client)
        self.rotated_at.setdefault(grant.name, time.monotonic())
        return grant


@dataclass
class RefreshFigures:
    iterations: int = 0
    kill_window_ms: float = 0.0
    durable_ms: list[float] = field(default_factory=list)  # unkilled: server rotation -> first copy on disk
    files_not_whole: int = 0
    tokens_rotated: int = 0  # logins the server rotated before or just after the kill
    missing_after_kill: int = 0  # rotated, and no file holds the new token
    missing_kill_after_rotation_ms: list[float] = field(default_factory=list)
    healed_from_journal: int = 0  # missing, and a restarted daemon completed the refresh from its journal
    tokens_lost: int = 0  # missing for good (the answer died with the daemon); reported as needs-login
    lagging_copies: int = 0  # a copy still holding a spent token while another holds the new one
    lock_dirs_left: int = 0
    lock_dirs_after_restart: int = 0  # ones the restarted daemon should have removed, or made and kept
    lock_dirs_unnoted: int = 0  # made by the killed daemon just before it could note them: pi's 30 s rule
    temp_files_left: int = 0
    recovered: int = 0  # restart: every copy current, or the lost login reported needs-login
    not_recovered: int = 0
    recovery_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _grant_id(provider: str, token: str) -> str:
    import hashlib

    return f"{provider}:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def calibrate(base: Path, server: TimedServer, runs: int = 5) -> tuple[float, list[float]]:
    """Unkilled runs: (median seconds from ready to every copy refreshed, the
    milliseconds from each rotation to its first copy on disk)."""
    spans, durable = [], []
    for n in range(runs):
        home = make_home(base, server, 10_000 + n)
        d = home.daemon().start()
        t0 = time.monotonic()
        first: dict[str, float] = {}
        try:
            while True:
                found, _ = copies(home)
                now = time.monotonic()
                for g, tokens in found.items():
                    if g not in first and server.current_refresh(g) != home.originals[g] \
                            and server.current_refresh(g) in tokens:
                        first[g] = now
                if len(first) == 2 and all_current(home):
                    break
                if now - t0 > 60:
                    raise RuntimeError("calibration: the refresh did not complete within 60 s")
                time.sleep(0.001)
            spans.append(time.monotonic() - t0)
            durable += [round((first[g] - server.rotated_at[g]) * 1000, 1) for g in first]
        finally:
            d.stop()
    return sorted(spans)[len(spans) // 2], durable


def _outcome(home: Home, d: DaemonProcess, missing: dict[str, str]) -> tuple[bool, dict[str, str]]:
    """(done, fate of each login missing after the kill). Done when every copy of
    each login holds the server's current token, except a missing login the
    daemon reports as needing a login (``lost``); a missing login whose copies
    are current again was completed from takod's journal (``healed``)."""
    found, broken = copies(home)
    if broken or len(found[home.openai]) != 2 or len(found[home.anthropic]) != 2:
        return False, {}
    current = {g: bool(tokens) and all(t == home.server.current_refresh(g) for t in tokens) for g, tokens in found.items()}
    fates: dict[str, str] = {}
    states: dict[str, str] = {}
    if any(not current[g] for g in missing):
        with d.client() as c:
            states = {x["id"]: x["state"] for x in c.call("auth.inventory")["grants"]}
    for g in found:
        if current[g]:
            if g in missing:
                fates[g] = "healed"
        elif g in missing and states.get(missing[g]) == "needs-login":
            fates[g] = "lost"
        else:
            return False, {}
    return True, fates


def refresh_iteration(base: Path, server: TimedServer, n: int, window: float, rng: random.Random,
                      figures: RefreshFigures, recover: bool = True) -> None:
    home = make_home(base, server, n)
    # Codex and pi tell the newer copy of their shared login by the JWT's issue
    # time, in seconds: tokens issued within one second look the same age, which
    # real logins (refreshed days apart) never do. Let the planted ones age first.
    time.sleep(ISSUE_TIME_RESOLUTION)
    d = home.daemon().start()
    time.sleep(rng.uniform(0, window))
    os.kill(d.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    d.wait(10)
    time.sleep(0.05)  # a request that reached the server before the kill is redeemed by now
    figures.iterations += 1
    found, broken = copies(home)
    figures.files_not_whole += len(broken)
    figures.failures += [f"#{n}: {b}" for b in broken]
    missing: dict[str, str] = {}
    for grant, tokens in found.items():
        current = server.current_refresh(grant)
        if current != home.originals[grant]:
            figures.tokens_rotated += 1
            if current not in tokens:
                figures.missing_after_kill += 1
                figures.missing_kill_after_rotation_ms.append(round((killed_at - server.rotated_at[grant]) * 1000, 1))
                provider = "anthropic" if grant == home.anthropic else "openai-codex"
                missing[grant] = _grant_id(provider, home.originals[grant])
        figures.lagging_copies += sum(1 for t in tokens if t != current and current in tokens)
    killed_locks, noted = lock_dirs(home), noted_locks(home)
    figures.lock_dirs_left += len(killed_locks)
    figures.temp_files_left += temp_files(home)
    if recover:
        d2 = home.daemon().start()
        t0 = time.monotonic()
        try:
            while True:
                done, fates = _outcome(home, d2, missing)
                if done:
                    figures.recovered += 1
                    figures.recovery_s.append(time.monotonic() - t0)
                    figures.healed_from_journal += sum(1 for f in fates.values() if f == "healed")
                    figures.tokens_lost += sum(1 for f in fates.values() if f == "lost")
                    break
                if time.monotonic() - t0 > RECOVERY_TIMEOUT:
                    figures.not_recovered += 1
                    figures.failures.append(f"#{n}: copies not current, or a lost login not reported,"
                                            f" {RECOVERY_TIMEOUT:g} s after a restart (missing: {sorted(missing)})")
                    break
                time.sleep(0.02)
        finally:
            d2.stop()
        # Once it stopped: its own are released, and so is every lock the killed one had noted as it
        # left it. A lock the killed one made (or touched) in the instant before noting it is left to
        # pi's 30 s rule (docs/reliability.md), like a lock of a killed pi.
        for lock, now in lock_dirs(home).items():
            if killed_locks.get(lock) == now and noted.get(lock) != now:
                figures.lock_dirs_unnoted += 1
            else:
                figures.lock_dirs_after_restart += 1
                figures.failures.append(f"#{n}: {lock} still there after the restart"
                                        f" ({'noted by the killed daemon' if noted.get(lock) == now else 'made since the kill'})")
    shutil.rmtree(home.root, ignore_errors=True)


# --- settings kills ---------------------------------------------------------------------------


@dataclass
class SettingsFigures:
    iterations: int = 0
    writes_acknowledged: int = 0
    files_not_whole: int = 0
    wrong_value: int = 0
    acknowledged_but_lost: int = 0
    temp_files_left: int = 0
    restart_failed: int = 0
    failures: list[str] = field(default_factory=list)


MODELS = [f"model-{i:04d}" for i in range(10_000)]


def settings_iteration(base: Path, server: FakeOAuthServer, n: int, rng: random.Random, figures: SettingsFigures) -> None:
    root = base / f"s{n}"
    (root / "ws").mkdir(parents=True)
    (root / "ws" / "tako.toml").write_text("")
    home = Home(root, server, "", "", {})
    d = home.daemon().start()
    acked: list[str] = []
    attempted: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            with d.client(timeout=10) as c:
                for i in range(len(MODELS)):
                    if stop.is_set():
                        return
                    attempted.append(MODELS[i])
                    c.call("settings.set", {"field": "ollama_model", "value": MODELS[i]})
                    acked.append(MODELS[i])
        except (OSError, RemoteError, EOFError, ConnectionError):
            return  # the daemon died under us: expected
        except Exception:  # noqa: BLE001 - the client's own error types for a dead peer
            return

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(rng.uniform(0.05, 0.6))
    os.kill(d.pid, signal.SIGKILL)
    d.wait(10)
    stop.set()
    t.join(15)
    figures.iterations += 1
    figures.writes_acknowledged += len(acked)
    doc, problem = _parse(home.settings)
    if problem:
        figures.files_not_whole += 1
        figures.failures.append(f"#{n}: {problem}")
    elif doc is not None:
        value = doc.get("ollama_model")
        # The last acknowledged value, or one written after it (in flight at the kill).
        allowed = attempted[len(acked) - 1:] if acked else attempted
        if value not in allowed:
            if acked and value in attempted[: len(acked) - 1]:
                figures.acknowledged_but_lost += 1
            figures.wrong_value += 1
            figures.failures.append(f"#{n}: settings hold {value!r}, last acknowledged {acked[-1:]}")
    elif acked:
        figures.acknowledged_but_lost += 1
        figures.failures.append(f"#{n}: settings file missing after {len(acked)} acknowledged writes")
    figures.temp_files_left += temp_files(home)
    try:
        d2 = home.daemon().start()
        with d2.client() as c:
            got = c.call("settings.get", {})
        d2.stop()
        if doc is not None and got.get("ollama_model") != doc.get("ollama_model"):
            figures.restart_failed += 1
            figures.failures.append(f"#{n}: a restarted daemon reads {got.get('ollama_model')!r}")
    except Exception as exc:  # noqa: BLE001 - reported as a figure
        figures.restart_failed += 1
        figures.failures.append(f"#{n}: restart failed: {exc}")
    shutil.rmtree(root, ignore_errors=True)


# --- running ----------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3)


def run(iterations: int, settings_iterations: int, seed: int, recover: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="tk9-", dir="/tmp"))  # short: socket paths are limited
    refresh, settings = RefreshFigures(), SettingsFigures()
    try:
        with TimedServer() as server:
            if iterations:
                span, refresh.durable_ms = calibrate(base, server)
                window = span * 1.5
                refresh.kill_window_ms = round(window * 1000, 1)
                for n in range(iterations):
                    refresh_iteration(base, server, n, window, rng, refresh, recover)
            for n in range(settings_iterations):
                settings_iteration(base, server, n, rng, settings)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # A login is lost only when the daemon dies between the server's rotation and
    # the first copy on disk: no client can save an answer it never read. Anything
    # else (a loss long after the rotation, one not reported after a restart, a
    # file that does not parse, copies left behind) fails.
    ok = (refresh.files_not_whole == refresh.not_recovered == 0
          and settings.files_not_whole == settings.wrong_value == settings.restart_failed == 0)
    r = asdict(refresh)
    r["durable_ms"] = {"p50": _pct(refresh.durable_ms, 0.5), "max": _pct(refresh.durable_ms, 1.0),
                       "n": len(refresh.durable_ms)}
    r["missing_kill_after_rotation_ms"] = {"p50": _pct(refresh.missing_kill_after_rotation_ms, 0.5),
                                           "max": _pct(refresh.missing_kill_after_rotation_ms, 1.0)}
    r["recovery_s"] = {"p50": _pct(refresh.recovery_s, 0.5), "p90": _pct(refresh.recovery_s, 0.9),
                       "max": _pct(refresh.recovery_s, 1.0)}
    return {"seed": seed, "refresh": r, "settings": asdict(settings), "verdict": "pass" if ok else "fail"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=100, help="refresh kills (default 100; try 500)")
    p.add_argument("--settings-iterations", type=int, default=100, help="settings-write kills (default 100)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-recover", action="store_true", help="skip the restart after each refresh kill")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    started = time.monotonic()
    result = run(args.iterations, args.settings_iterations, seed, not args.no_recover)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        r, s = result["refresh"], result["settings"]
        print(f"seed {seed}, {result['elapsed_s']} s")
        print(f"refresh: {r['iterations']} kills over a {r['kill_window_ms']} ms window")
        print(f"  files not whole     {r['files_not_whole']}")
        print(f"  rotation -> on disk {r['durable_ms']} ms (unkilled)")
        print(f"  tokens rotated      {r['tokens_rotated']}   in no file after the kill {r['missing_after_kill']}"
              f" (killed {r['missing_kill_after_rotation_ms']} ms after the rotation)")
        print(f"  after a restart     healed from the journal {r['healed_from_journal']}"
              f"   lost (answer died with the daemon; needs-login reported) {r['tokens_lost']}")
        print(f"  lagging copies      {r['lagging_copies']} right after the kill")
        print(f"  left behind         {r['lock_dirs_left']} lock dirs ({r['lock_dirs_after_restart']} after a restart,"
              f" {r['lock_dirs_unnoted']} unnoted ones left to pi's 30 s rule),"
              f" {r['temp_files_left']} temp files")
        print(f"  recovered           {r['recovered']}/{r['iterations']}   time {r['recovery_s']}")
        print(f"settings: {s['iterations']} kills, {s['writes_acknowledged']} writes acknowledged")
        print(f"  files not whole     {s['files_not_whole']}   wrong value {s['wrong_value']}"
              f"   acknowledged but lost {s['acknowledged_but_lost']}")
        print(f"  temp files left     {s['temp_files_left']}   restart failed {s['restart_failed']}")
        for line in (r["failures"] + s["failures"])[:20]:
            print("  !", line)
        print(f"verdict: {result['verdict']}")
    return 0 if result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
