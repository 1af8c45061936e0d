"""Refresh races against the REAL tools: does anyone ever post a spent refresh token?

Issue 14. A loopback token server (tests/fakes/oauth_server.py) rotates
single-use refresh tokens, answers each request after 0.3-1 s, and records
every token presented twice ("rejected": a reuse). Each trial sets up a login
that is already expired (or due) at the moment takod and another tool both
notice, then checks: reuses (goal 0), whether the tool got a key, and whether
every store ends on the server's live token with no grant ``needs-login``.

Scenarios (``--scenario``, default all):

- ``wake``: takod stopped with SIGSTOP (a suspended laptop) while the workspace
  pi login expires; a running pi (its own ``AuthStorage`` under node, as pi
  uses it before each model call) asks for its key 0.1 s after SIGCONT.
- ``start``: takod and a starting pi (``AuthStorage.create`` + ``getApiKey``)
  at once on an expired login.
- ``start-pi-p``: the same with the real ``pi -p`` (its model API a loopback
  fake Anthropic, named in the agent dir's ``models.json``).
- ``codex``: takod keeps the Codex login while the real ``codex exec`` starts
  beside it, the token inside takod's lead but not yet in Codex's own 5-minute
  window (``--codex`` picks the binary: the pinned 0.160 or e.g. 0.169).
- ``codex-expired``: as ``codex`` with the token already expired when both
  start: Codex posts before it takes any lock, so locking cannot keep the two
  apart; takod leaves such a login to Codex for a grace period (docs/refresh.md).
  Each trial reports who refreshed and how long after its start codex wrote.
- ``codex-expired-alone``: the same expired login with no codex started: takod
  refreshes it itself once the grace is over (a trial takes about a minute).
- ``seed``: the home pi login refreshed by takod while a new workspace without
  a pi ``auth.json`` is loaded (and seeded from the home file) mid-request.

pi's token URLs are hard-coded: a ``NODE_OPTIONS=--import`` preload rewrites
``fetch`` for exactly those URLs to the loopback server. Codex honours
``CODEX_REFRESH_TOKEN_URL_OVERRIDE``. Nothing leaves the machine.

Usage: python stress/refresh_race.py [--trials 50] [--scenario wake ...] [--json]
(The default set leaves out ``codex-expired-alone``, a minute per trial: name it.)
Exit 0 when no trial saw a reuse or lost a login, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STRESS = Path(__file__).resolve().parent
REPO = STRESS.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import load_average, machine, temp_home  # noqa: E402
from tests.fakes.oauth_server import FakeOAuthServer, Grant, _Slow, make_jwt  # noqa: E402
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, read_json, write_private  # noqa: E402

PI_PACKAGE = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
PI_AUTH_MODULE = PI_PACKAGE / "dist" / "core" / "auth-storage.js"
PI_TOKEN_URLS = {"anthropic": "https://platform.claude.com/v1/oauth/token",
                 "openai": "https://auth.openai.com/oauth/token"}
LEAD = 600
WAIT = 40.0

PRELOAD = """
const map = JSON.parse(process.env.TAKOD_RACE_TOKEN_URLS || "{}");
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(map[String(url)] ?? url, init);
"""

# pi's AuthStorage as a running pi uses it: created (startup read), then asked
# for the key when told to ("go" on stdin), or at once with "now".
PI_GET_KEY = """
const [authModule, authPath, provider, when] = process.argv.slice(1);
const { AuthStorage } = await import(authModule);
const storage = AuthStorage.create(authPath);
if (when !== "now") {
  process.stdout.write("ready\\n");
  await new Promise((resolve) => process.stdin.once("data", resolve));
}
const key = await storage.getApiKey(provider, { includeFallback: false });
console.log(JSON.stringify({ key: key ?? null, errors: storage.errors.map(String) }));
process.exit(0);
"""


class LatentServer(FakeOAuthServer):
    """The reuse-detecting token server, answering each request 0.3-1 s late
    (before the grant is touched: a request arriving meanwhile with the same
    token finds it spent)."""

    arrivals = 0  # requests received so far, counted as they arrive (before their answer)

    def _slow_for(self, endpoint: Any) -> _Slow | None:
        self.arrivals += 1
        return _Slow(random.uniform(0.3, 1.0), None, False)

    def wait_released(self, seconds: float) -> None:  # no gate: just the latency
        time.sleep(seconds)


@dataclass
class Trial:
    scenario: str
    reuses: int  # spent tokens presented to the server
    requests: int
    tool_ok: bool  # the other tool got a working key / kept its login
    stores_live: bool  # every store ends on the server's live refresh token
    needs_login: bool  # takod marked the grant needs-login
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reuses == 0 and self.stores_live and not self.needs_login


@dataclass
class Env:
    home: Path
    server: LatentServer
    node: str
    codex: str
    preload: Path
    n: int = 0
    daemons: list[DaemonProcess] = field(default_factory=list)

    @property
    def ws(self) -> Path:
        return self.home / "ws"

    def tool_env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(TOOLS_BIN), str(Path(self.node).parent), "/usr/bin", "/bin"])
        urls = {PI_TOKEN_URLS[e]: self.server.url(e) for e in PI_TOKEN_URLS}  # type: ignore[index]
        return clean_env(self.home, TAKO_WORKSPACE=str(self.ws), PATH=path, **self.server.env(),
                         NODE_OPTIONS=f"--import {self.preload}", TAKOD_RACE_TOKEN_URLS=json.dumps(urls),
                         CODEX_HOME=str(self.home / ".codex"), **extra)

    def start_daemon(self) -> DaemonProcess:
        d = DaemonProcess(self.home, self.tool_env())
        self.daemons.append(d)
        return d.start("--refresh-lead", str(LEAD), "--log-level", "info")

    def stop_daemons(self) -> None:
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.stop()
        self.daemons.clear()


def fresh_home(env: Env) -> None:
    """Wipe the temp HOME between trials (the server keeps every grant ever issued)."""
    env.stop_daemons()
    for child in env.home.iterdir():
        if child.name != "preload.mjs":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (env.ws / ".tako").mkdir(parents=True)
    (env.ws / "tako.toml").write_text("")


def pi_entry(grant: Grant, expires_in: float) -> dict[str, Any]:
    return {**grant.pi_entry(), "expires": int((time.time() + expires_in) * 1000)}


def wait_until(cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    return None


def grants(d: DaemonProcess) -> list[dict[str, Any]]:
    with d.client(timeout=WAIT) as c:
        return c.call("auth.inventory")["grants"]


def settle(env: Env, d: DaemonProcess, name: str, stores: list[tuple[Path, Callable[[Any], str]]]) -> tuple[bool, bool]:
    """Wait until every store holds the server's live token and takod is done
    refreshing: (stores live, takod says needs-login)."""
    def live() -> bool:
        current = env.server.current_refresh(name)
        return all(get(read_json(path)) == current for path, get in stores)

    stores_live = bool(wait_until(live, WAIT))
    quiet = wait_until(lambda: all(g["state"] != "refreshing" for g in grants(d)), WAIT)
    needs_login = any(g["state"] == "needs-login" for g in (grants(d) if quiet is not None else []))
    return stores_live, needs_login


def counts(env: Env, name: str) -> tuple[int, int]:
    return env.server.count(name, outcome="rejected"), env.server.count(name)


def pi_key(env: Env, auth: Path, provider: str, when: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [env.node, "--input-type=module", "-e", PI_GET_KEY, "--", str(PI_AUTH_MODULE), str(auth), provider, when],
        env=env.tool_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def pi_answer(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=WAIT * 2)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"key": None, "errors": [err[-300:]]}


# --- scenarios -------------------------------------------------------------------------------


def wake(env: Env) -> Trial:
    fresh_home(env)
    env.n += 1
    name = f"wake{env.n}"
    g = env.server.add_grant(name, "anthropic", lifetime_s=3600)
    ws_pi = env.ws / ".tako" / "pi" / "agent" / "auth.json"
    write_private(ws_pi, {"anthropic": pi_entry(g, LEAD + 3600)})  # far from due
    d = env.start_daemon()
    d.signal(signal.SIGSTOP)  # suspend
    write_private(ws_pi, {"anthropic": pi_entry(g, -60)})  # the login expired while asleep
    pi = pi_key(env, ws_pi, "anthropic", "go")
    assert pi.stdout is not None and pi.stdin is not None
    pi.stdout.readline()  # pi is running, holding the expired token in memory
    d.signal(signal.SIGCONT)  # resume
    time.sleep(0.1)
    pi.stdin.write("go\n")
    pi.stdin.flush()
    got = pi_answer(pi)
    live, needs = settle(env, d, name, [(ws_pi, lambda doc: doc["anthropic"]["refresh"])])
    reuses, requests = counts(env, name)
    current = env.server.grant(name)
    ok = got["key"] is not None and (got["key"] == current.access or requests == 0)
    return Trial("wake", reuses, requests, ok, live, needs, "" if ok else "; ".join(got["errors"])[:300])


def start(env: Env) -> Trial:
    fresh_home(env)
    env.n += 1
    name = f"start{env.n}"
    g = env.server.add_grant(name, "anthropic", lifetime_s=3600)
    ws_pi = env.ws / ".tako" / "pi" / "agent" / "auth.json"
    write_private(ws_pi, {"anthropic": pi_entry(g, -60)})  # expired before anyone starts
    # pi starts up to 0.5 s before takod is ready, or up to 1 s after (takod refreshes at once).
    offset = random.uniform(-0.5, 1.0)
    if offset < 0:
        pi = pi_key(env, ws_pi, "anthropic", "now")
        time.sleep(-offset)
        d = env.start_daemon()
    else:
        d = env.start_daemon()
        time.sleep(offset)
        pi = pi_key(env, ws_pi, "anthropic", "now")
    got = pi_answer(pi)
    live, needs = settle(env, d, name, [(ws_pi, lambda doc: doc["anthropic"]["refresh"])])
    reuses, requests = counts(env, name)
    ok = got["key"] is not None
    return Trial("start", reuses, requests, ok, live, needs, "" if ok else "; ".join(got["errors"])[:300])


def start_pi_p(env: Env) -> Trial:
    """``start`` with the real ``pi -p`` (its model API a loopback fake Anthropic)."""
    from tests.fakes.model_servers import FakeAnthropic

    fresh_home(env)
    env.n += 1
    name = f"pip{env.n}"
    g = env.server.add_grant(name, "anthropic", lifetime_s=3600)
    agent = env.ws / ".tako" / "pi" / "agent"
    write_private(agent / "auth.json", {"anthropic": pi_entry(g, -60)})
    with FakeAnthropic() as model:
        (agent / "models.json").write_text(json.dumps({"providers": {"anthropic": {"baseUrl": model.base_url}}}))
        argv = [str(TOOLS_BIN / "pi"), "--provider", "anthropic", "--model", "claude-sonnet-4-5", "--no-session",
                "--no-tools", "--no-extensions", "--no-skills", "-p", "hi"]
        tool_env = env.tool_env(PI_CODING_AGENT_DIR=str(agent), PI_OFFLINE="1")
        offset = random.uniform(-0.5, 1.0)
        if offset < 0:
            pi = subprocess.Popen(argv, env=tool_env, cwd=env.ws, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            time.sleep(-offset)
            d = env.start_daemon()
        else:
            d = env.start_daemon()
            time.sleep(offset)
            pi = subprocess.Popen(argv, env=tool_env, cwd=env.ws, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        out, err = pi.communicate(timeout=WAIT * 2)
        sent = [r.headers.get("authorization", "") or r.headers.get("x-api-key", "") for r in model.requests]
    live, needs = settle(env, d, name, [(agent / "auth.json", lambda doc: doc["anthropic"]["refresh"])])
    reuses, requests = counts(env, name)
    ok = pi.returncode == 0 and any(env.server.grant(name).access in s for s in sent)
    return Trial("start-pi-p", reuses, requests, ok, live, needs, "" if ok else (err or out)[-300:])


def _codex(env: Env, expires_in: float, scenario: str) -> Trial:
    fresh_home(env)
    env.n += 1
    name = f"codex{env.n}"
    g = env.server.add_grant(name, "openai", lifetime_s=3600)
    now = int(time.time())
    claims = {"https://api.openai.com/auth": {"chatgpt_account_id": g.account_id}, "iat": now - 3600,
              "exp": now + int(expires_in)}
    doc = g.codex_auth()
    doc["tokens"]["access_token"] = make_jwt(claims)
    codex_home = env.home / ".codex"
    write_private(codex_home / "auth.json", doc)
    (codex_home / "config.toml").write_text(
        'model = "fake-model"\nmodel_provider = "loopback"\n[model_providers.loopback]\nname = "L"\n'
        'base_url = "http://127.0.0.1:9/v1"\nwire_api = "responses"\nrequires_openai_auth = true\n'
        'stream_max_retries = 0\nrequest_max_retries = 0\n'
    )
    d = env.start_daemon()
    time.sleep(random.uniform(0.0, 0.5))  # codex starts while takod's refresh is under way
    codex_started = time.time()
    codex = subprocess.Popen([env.codex, "exec", "--skip-git-repo-check", "hi"], env=env.tool_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=env.ws, start_new_session=True)
    try:
        live, needs = settle(env, d, name, [(codex_home / "auth.json", lambda doc: doc["tokens"]["refresh_token"])])
        time.sleep(2.0)  # codex's own refresh, if it makes one, lands meanwhile
        live, needs = settle(env, d, name, [(codex_home / "auth.json", lambda doc: doc["tokens"]["refresh_token"])])
        by_takod = any(g["last_refresh"] for g in grants(d))
    finally:
        os.killpg(codex.pid, signal.SIGKILL)
        codex.wait()
    reuses, requests = counts(env, name)
    detail = ""
    if requests:
        wrote = (codex_home / "auth.json").stat().st_mtime - codex_started
        detail = f"refreshed by {'takod' if by_takod else 'codex'}; file written {wrote:.2f} s after codex started"
    return Trial(scenario, reuses, requests, reuses == 0, live, needs, detail)


def codex(env: Env) -> Trial:
    return _codex(env, LEAD - 200, "codex")  # takod's lead: 600 s; Codex's window: 300 s


def codex_expired(env: Env) -> Trial:
    return _codex(env, -60, "codex-expired")


def codex_expired_alone(env: Env) -> Trial:
    fresh_home(env)
    env.n += 1
    name = f"alone{env.n}"
    g = env.server.add_grant(name, "openai", lifetime_s=3600)
    now = int(time.time())
    doc = g.codex_auth()
    doc["tokens"]["access_token"] = make_jwt({"https://api.openai.com/auth": {"chatgpt_account_id": g.account_id},
                                              "iat": now - 3600, "exp": now - 60})
    auth = env.home / ".codex" / "auth.json"
    write_private(auth, doc)
    started = time.time()
    d = env.start_daemon()
    waited = [g["wait_reason"] for g in grants(d)]
    refreshed = wait_until(lambda: env.server.count(name) >= 1, WAIT * 3)
    after = time.time() - started
    live, needs = settle(env, d, name, [(auth, lambda doc: doc["tokens"]["refresh_token"])])
    reuses, requests = counts(env, name)
    ok = bool(refreshed) and waited == ["waiting_for_codex"]
    return Trial("codex-expired-alone", reuses, requests, ok, live, needs,
                 f"wait_reason at start {waited}; takod refreshed {after:.1f} s after start")


def seed(env: Env) -> Trial:
    fresh_home(env)
    env.n += 1
    name = f"seed{env.n}"
    g = env.server.add_grant(name, "anthropic", lifetime_s=3600)
    home_pi = env.home / ".pi" / "agent" / "auth.json"
    write_private(home_pi, {"anthropic": pi_entry(g, LEAD + 3600)})
    other = env.home / "ws2"
    (other / ".tako").mkdir(parents=True)
    (other / "tako.toml").write_text("")
    d = env.start_daemon()
    write_private(home_pi, {"anthropic": pi_entry(g, 60)})  # inside the refresh lead: takod refreshes
    arrived = env.server.arrivals
    wait_until(lambda: env.server.arrivals > arrived, WAIT)  # takod's request is at the server
    time.sleep(random.uniform(0.0, 1.0))  # somewhere inside it (answers take 0.3-1 s)
    with d.client(timeout=WAIT) as c:
        c.call("status", {"workspace": str(other)})  # loads (and seeds) the new workspace
    ws2_pi = other / ".tako" / "pi" / "agent" / "auth.json"
    get = lambda doc: doc["anthropic"]["refresh"]  # noqa: E731
    live, needs = settle(env, d, name, [(home_pi, get), (ws2_pi, get)])
    reuses, requests = counts(env, name)
    return Trial("seed", reuses, requests, live, live, needs)


SCENARIOS: dict[str, Callable[[Env], Trial]] = {
    "wake": wake, "start": start, "start-pi-p": start_pi_p, "codex": codex, "codex-expired": codex_expired,
    "codex-expired-alone": codex_expired_alone, "seed": seed,
}


def run(scenarios: list[str], trials: int, codex_bin: str, progress: bool = True) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not PI_AUTH_MODULE.exists():
        raise SystemExit("needs node and the real pi package in .tools/npm (scripts/install-test-tools.sh)")
    results: dict[str, list[Trial]] = {s: [] for s in scenarios}
    with temp_home() as home, LatentServer() as server:
        preload = home / "preload.mjs"
        preload.write_text(PRELOAD)
        env = Env(home, server, node, codex_bin, preload)
        try:
            for i in range(trials):
                for s in scenarios:
                    trial = SCENARIOS[s](env)
                    results[s].append(trial)
                    if progress:
                        print(f"{s:<14} #{i + 1:<3} reuses={trial.reuses} requests={trial.requests} "
                              f"tool_ok={trial.tool_ok} stores_live={trial.stores_live} "
                              f"needs_login={trial.needs_login} {trial.detail}", file=sys.stderr, flush=True)
        finally:
            env.stop_daemons()
    report: dict[str, Any] = {"machine": machine(), "load": load_average(), "trials": trials, "codex": codex_bin,
                              "scenarios": {}}
    for s, ts in results.items():
        report["scenarios"][s] = {
            "trials": len(ts),
            "reuses": sum(t.reuses for t in ts),
            "trials_with_reuse": sum(1 for t in ts if t.reuses),
            "requests": sum(t.requests for t in ts),
            "tool_failures": sum(1 for t in ts if not t.tool_ok),
            "stores_not_live": sum(1 for t in ts if not t.stores_live),
            "needs_login": sum(1 for t in ts if t.needs_login),
            "failures": [asdict(t) for t in ts if not t.ok or not t.tool_ok][:5],
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--codex", default=str(TOOLS_BIN / "codex"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scenarios = args.scenario or [s for s in SCENARIOS if s != "codex-expired-alone"]
    report = run(scenarios, args.trials, args.codex)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for s, r in report["scenarios"].items():
            print(f"{s:<14} trials {r['trials']:>3}  reuses {r['reuses']:>3}  tool failures {r['tool_failures']:>3}  "
                  f"stores not live {r['stores_not_live']:>3}  needs-login {r['needs_login']:>3}  "
                  f"requests {r['requests']}")
    bad = any(r["reuses"] or r["stores_not_live"] or r["needs_login"] for r in report["scenarios"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
