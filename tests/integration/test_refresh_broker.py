"""The refresh broker end to end: a real daemon, real files, pi's real lock
library, and the loopback token server standing in for every OAuth endpoint.

Each test starts a daemon in a fresh HOME whose workspace (``TAKO_WORKSPACE``)
is a Tako workspace, plants logins registered with the fake server, and
checks what reaches the server (how many refreshes, of which token) and what
ends up in every file holding a copy of the login. Waits are bounded; no
assertion is about how long something took.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from takod import Client
from takod_daemon.refresh import broker as broker_module
from tests.fakes.oauth_server import PI_MARGIN_MS, FakeOAuthServer, Grant, make_jwt
from tests.harness import REPO, TOOLS_BIN, DaemonProcess, clean_env, require_tool, wait_for

WAIT = 30.0  # bound on every wait for the daemon, the server or a helper process
LEAD = 600.0  # the daemon's default lead time, passed explicitly
PI_PACKAGE = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
HOLDER_JS = REPO / "tests" / "fakes" / "pi_lock_holder.js"
STALE_AFTER_S = 30.0  # pi's (and takod's) threshold for breaking a lock

# Canary refresh tokens planted in the files: never to be seen unmasked anywhere.
ANTHROPIC_CANARY = "sk-ant-ort01-CANARYbrokeranthropic0123456789abcdef"
OPENAI_CANARY = "rt_CANARYbrokeropenai0123456789abcdef0123"


# --- the token server, observed -------------------------------------------------------------


class ObservedOAuthServer(FakeOAuthServer):
    """The fake token server plus two controls the broker tests need: it tells
    when a request *arrives* (before it is answered), and it can hold the next
    request of a grant at the door until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = threading.Condition()
        self.arrivals: list[str | None] = []
        self._gates: dict[str, threading.Event] = {}
        self._all_gates: list[threading.Event] = []

    def hold_next(self, grant: str) -> threading.Event:
        """Hold the next request presenting ``grant``'s token until the returned event is set."""
        gate = threading.Event()
        with self._arrived:
            self._gates[grant] = gate
            self._all_gates.append(gate)
        return gate

    def wait_arrival(self, grant: str, n: int = 1, timeout: float = WAIT) -> None:
        with self._arrived:
            ok = self._arrived.wait_for(lambda: self.arrivals.count(grant) >= n, timeout)
        assert ok, f"no request #{n} for {grant} reached the token server within {timeout} s"

    def stop(self) -> None:
        for gate in self._all_gates:
            gate.set()
        super().stop()

    # Called by the request handler as soon as a request's token is read.
    def _grant_of(self, token: str | None) -> str | None:
        name = super()._grant_of(token)
        with self._arrived:
            self.arrivals.append(name)
            gate = self._gates.pop(name, None) if name else None
            self._arrived.notify_all()
        if gate is not None:
            gate.wait(WAIT)
        return name

    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [t for g in self._grants.values() for t in (*g.spent, g.refresh)]

    def refresh_as_pi(self, grant: str, refresh_token: str) -> dict[str, Any]:
        """Refresh like pi does (another process), returning the token answer."""
        g = self.grant(grant)
        assert g.endpoint == "anthropic", "only Anthropic is needed here"
        body = json.dumps({"grant_type": "refresh_token", "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
                           "refresh_token": refresh_token}).encode()
        request = urllib.request.Request(self.url("anthropic"), data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return json.loads(response.read())


# --- files ------------------------------------------------------------------------------------


def write_in_place(path: Path, data: bytes) -> None:
    """Truncate and rewrite the same inode, mode 0600 (how pi and Codex save)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def pi_dumps(doc: Any) -> bytes:
    return json.dumps(doc, indent=2).encode()  # pi: JSON.stringify(data, null, 2)


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def pi_entry(grant: Grant, expires_in: float | None = None, **extra: Any) -> dict[str, Any]:
    """``grant`` as pi stores it; ``expires_in`` overrides the stored expiry (seconds from now)."""
    entry = grant.pi_entry()
    if expires_in is not None:
        entry["expires"] = int((time.time() + expires_in) * 1000)
    entry.update(extra)
    return entry


def grant_id(provider: str, refresh_token: str) -> str:
    """The id takod gives a grant: the provider and a hash of its refresh token."""
    return f"{provider}:{hashlib.sha256(refresh_token.encode()).hexdigest()[:12]}"


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- pi's lock, held by pi's own proper-lockfile ---------------------------------------------


class PiLockHolder:
    """tests/fakes/pi_lock_holder.js: pi's lock taken by the proper-lockfile pi ships."""

    def __init__(self, auth: Path):
        node = shutil.which("node")
        if node is None or not (PI_PACKAGE / "package.json").is_file():
            require_tool(PI_PACKAGE / "package.json", "the real pi package (for its proper-lockfile)")
            pytest.skip("node is not on PATH")
        self.popen = subprocess.Popen(
            [node, str(HOLDER_JS), str(PI_PACKAGE), "hold", str(auth)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("locked")

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, wanted: str) -> None:
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"pi's lock holder said nothing within {WAIT} s (wanted {wanted!r})")
        if line is None:
            err = self.popen.stderr.read() if self.popen.stderr else ""
            pytest.fail(f"pi's lock holder ended before {wanted!r}: {err[-2000:]}")
        assert line == wanted, f"pi's lock holder said {line!r}, wanted {wanted!r}"

    def release(self) -> None:
        """Release the lock; pi's proper-lockfile must not have found it compromised."""
        assert self.popen.stdin is not None
        self.popen.stdin.write("release\n")
        self.popen.stdin.flush()
        self.expect("released")
        assert self.popen.wait(WAIT) == 0

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(WAIT)


# --- the daemon -------------------------------------------------------------------------------


class World:
    """One test's HOME, Tako workspace, token server and daemons."""

    def __init__(self, home: Path, server: ObservedOAuthServer):
        self.home = home
        self.server = server
        self.ws = home / "ws"
        (self.ws / ".tako").mkdir(parents=True)
        (self.ws / "tako.toml").write_text("")
        self.daemons: list[DaemonProcess] = []
        self.holders: list[PiLockHolder] = []

    @property
    def ws_pi(self) -> Path:
        return self.ws / ".tako" / "pi" / "agent" / "auth.json"

    @property
    def home_pi(self) -> Path:
        return self.home / ".pi" / "agent" / "auth.json"

    @property
    def codex(self) -> Path:
        return self.home / ".codex" / "auth.json"

    def bin_dir(self) -> Path:
        """A PATH holding the real pi and node (so the pi provider can be ready)."""
        require_tool(TOOLS_BIN / "pi", "the real pi CLI")
        directory = self.home / "bin"
        directory.mkdir(exist_ok=True)
        for name, target in (("pi", TOOLS_BIN / "pi"), ("node", shutil.which("node"))):
            if target and not (directory / name).exists():
                (directory / name).symlink_to(target)
        return directory

    def env(self, **extra: str) -> dict[str, str]:
        extra.setdefault("PATH", str(self.home / "emptybin"))
        return clean_env(self.home, TAKO_WORKSPACE=str(self.ws), **self.server.env(), **extra)

    def start(self, **extra: str) -> DaemonProcess:
        d = DaemonProcess(self.home, self.env(**extra))
        self.daemons.append(d)
        return d.start("--refresh-lead", str(int(LEAD)))

    def hold_pi_lock(self, auth: Path) -> PiLockHolder:
        holder = PiLockHolder(auth)
        self.holders.append(holder)
        return holder

    def close(self) -> None:
        for holder in self.holders:
            holder.kill()
        for d in self.daemons:
            d.stop()
            print(f"--- daemon {d.proc.pid if d.proc else '?'} stderr tail:\n{d.stderr_text()[-3000:]}")
            print("--- refresh log:\n" + "\n".join(
                line for line in d.log_text().splitlines() if "refresh" in line or '"level": "warning"' in line
            )[-4000:])


@pytest.fixture
def world(home: Path) -> Iterator[World]:
    with ObservedOAuthServer() as server:
        w = World(home, server)
        try:
            yield w
        finally:
            w.close()


def call(d: DaemonProcess, method: str, params: Any = None, timeout: float = WAIT) -> Any:
    with d.client(timeout=timeout) as c:
        return c.call(method, params)


def grants(d: DaemonProcess) -> dict[str, dict[str, Any]]:
    """auth.inventory's grants by id."""
    return {g["id"]: g for g in call(d, "auth.inventory")["grants"]}


def grant_of(d: DaemonProcess, provider: str, refresh_token: str) -> dict[str, Any] | None:
    return grants(d).get(grant_id(provider, refresh_token))


def pi_status(d: DaemonProcess) -> dict[str, Any]:
    return next(p for p in call(d, "status")["providers"] if p["name"] == "pi")


def run_cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**d.env, "TAKOD_NO_SPAWN": "1", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "takod", *args], env=env, cwd=d.home, capture_output=True,
                          text=True, timeout=WAIT * 2)


def subscribe(d: DaemonProcess, *topics: str) -> Client:
    c = d.client(timeout=WAIT).connect()
    c.call("subscribe", {"topics": list(topics)})
    return c


def next_event(c: Client, topic: str, check: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        for method, params in c.notifications(timeout=max(0.01, deadline - time.monotonic())):
            if method == "takod.event" and params[2] == topic:
                seen.append(params[3])
                if check(params[3]):
                    return params[3]
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no matching {topic} event within {timeout} s; saw {seen!r:.2000}")


def assert_no_secrets(w: World, *outputs: Any) -> None:
    """No refresh token (planted canary or any the server issued) unmasked in any
    daemon log or stderr, or in ``outputs``."""
    secrets = {ANTHROPIC_CANARY, OPENAI_CANARY, *w.server.issued_refresh_tokens()}
    texts = {f"daemon {i} log": d.log_text() + d.stderr_text() for i, d in enumerate(w.daemons)}
    texts.update({f"output {i}": o if isinstance(o, str) else json.dumps(o) for i, o in enumerate(outputs)})
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a refresh token leaked into {where}"
            assert secret[6:-4] not in text, f"part of a refresh token leaked into {where}"


# --- refresh ahead of expiry ------------------------------------------------------------------


def test_token_within_the_lead_is_refreshed_unasked_and_one_far_from_expiry_is_not(world: World) -> None:
    srv = world.server
    soon = srv.add_grant("soon", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    far = srv.add_grant("far", "openai", lifetime_s=3 * 86400)
    others = {"custom": {"type": "api_key", "key": "!printf literal"}, "future-tool": {"x": [1, 2]}}
    write_in_place(world.ws_pi, pi_dumps({
        "anthropic": pi_entry(soon, expires_in=LEAD / 5),  # inside the lead
        **others,
        "openai-codex": pi_entry(far),  # three days away
    }))
    before = read_json(world.ws_pi)
    d = world.start()

    # No client call at all: the scheduler alone refreshes the grant inside the lead.
    srv.wait_for_requests(1, WAIT)
    wait_for(lambda: read_json(world.ws_pi)["anthropic"]["refresh"] == srv.current_refresh("soon"), WAIT)
    assert srv.count("soon", outcome="ok") == 1
    assert srv.count("far") == 0

    after = read_json(world.ws_pi)
    new = after["anthropic"]
    assert new["access"] == srv.grant("soon").access
    assert new["expires"] == pytest.approx(srv.grant("soon").expires_at * 1000 - PI_MARGIN_MS["anthropic"], abs=5000)
    assert after["openai-codex"] == before["openai-codex"]  # the far grant: untouched
    assert {k: after[k] for k in others} == others  # every other entry kept
    assert list(after) == list(before)
    assert mode_of(world.ws_pi) == 0o600

    found = wait_for(lambda: (g := grant_of(d, "anthropic", srv.current_refresh("soon"))) and g["last_refresh"] and g, WAIT)
    assert found["state"] == "scheduled" and found["last_error"] is None
    assert found["refresh_at"] > time.time() + LEAD  # a fresh hour-long token is not due again soon
    far_info = grant_of(d, "openai-codex", far.refresh)
    assert far_info is not None and far_info["state"] == "scheduled" and far_info["last_refresh"] is None
    assert far_info["refresh_at"] == pytest.approx(far_info["expires_at"] - LEAD)
    assert srv.count("far") == 0
    assert_no_secrets(world, run_cli(d, "auth", "--json").stdout, run_cli(d, "auth").stdout)


def test_auth_refresh_forces_a_refresh_and_reports_it(world: World) -> None:
    srv = world.server
    far = srv.add_grant("far", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=8 * 3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(far)}))
    d = world.start()
    events = subscribe(d, "auth")
    try:
        assert grant_of(d, "anthropic", ANTHROPIC_CANARY)["state"] == "scheduled"
        assert srv.count() == 0

        out = run_cli(d, "auth", "refresh", "claude", "--json")
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert srv.count("far", outcome="ok") == 1
        current = srv.current_refresh("far")
        assert current != ANTHROPIC_CANARY
        assert read_json(world.ws_pi)["anthropic"]["refresh"] == current
        [info] = result["grants"]
        assert info["id"] == grant_id("anthropic", current)
        assert info["state"] == "scheduled" and info["last_refresh"] is not None and info["last_error"] is None

        event = next_event(events, "auth", lambda p: p.get("kind") == "refreshed")
        assert event["provider"] == "anthropic"
        assert event["mirrors"] == [f"{world.ws_pi}#anthropic"]

        # A provider with no grant is an error, not a silent success.
        none = run_cli(d, "auth", "refresh", "codex", "--json")
        assert none.returncode == 2 and "no_grant" in none.stdout + none.stderr
        assert srv.count() == 1
        assert_no_secrets(world, out.stdout, none.stdout, none.stderr, event)
    finally:
        events.close()


def test_auth_refresh_exit_codes_follow_the_protocol(world: World) -> None:
    """`retrying` is not an error (PROTOCOL §7.10): exit 0; a refused grant needs the user: exit 1;
    a provider with no grant is a rejected request: exit 2."""
    srv = world.server
    far = srv.add_grant("far", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=8 * 3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(far)}))
    d = world.start()
    assert grant_of(d, "anthropic", ANTHROPIC_CANARY)["state"] == "scheduled"

    srv.fail_transient(1)
    out = run_cli(d, "auth", "refresh", "claude", "--json")
    assert [g["state"] for g in json.loads(out.stdout)["grants"]] == ["retrying"]
    assert out.returncode == 0, out.stderr

    none = run_cli(d, "auth", "refresh", "nonsense")
    assert none.returncode == 2
    assert "`takod auth` lists the logins" in none.stderr

    srv.fail_permanent()
    out = run_cli(d, "auth", "refresh", "claude", "--json")
    assert [g["state"] for g in json.loads(out.stdout)["grants"]] == ["needs-login"]
    assert out.returncode == 1
    assert_no_secrets(world, out.stdout, none.stderr)


# --- single flight ----------------------------------------------------------------------------


def test_many_concurrent_triggers_make_one_request(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    gate = srv.hold_next("g")
    d = world.start()
    srv.wait_arrival("g")  # the scheduler's refresh is at the server, held there
    # pi's lock is held across the request (a directory, as pi makes it): a pi that wakes
    # now waits for it and then reads the new token instead of spending the old one.
    assert os.path.isdir(str(world.ws_pi) + ".lock")

    n = 8
    results: list[Any] = []
    errors: list[BaseException] = []

    def force() -> None:
        try:
            results.append(call(d, "auth.refresh", {"provider": "anthropic"}, timeout=WAIT * 2))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=force) for _ in range(n)]
    for t in threads:
        t.start()
    cli: list[subprocess.CompletedProcess[str]] = []
    cli_thread = threading.Thread(target=lambda: cli.append(run_cli(d, "auth", "refresh", "--json")))
    cli_thread.start()
    # Every trigger has reached the daemon (it logs each request) before the answer is let through.
    wait_for(lambda: sum('"event": "request"' in line and '"auth.refresh"' in line
                         for line in d.log_text().splitlines()) >= n + 1, WAIT)
    gate.set()
    for t in [*threads, cli_thread]:
        t.join(WAIT * 2)
        assert not t.is_alive()
    assert not errors, errors

    assert srv.count("g") == 1
    current = srv.current_refresh("g")
    assert read_json(world.ws_pi)["anthropic"]["refresh"] == current
    for result in [*results, json.loads(cli[0].stdout)]:
        [info] = result["grants"]
        assert info["id"] == grant_id("anthropic", current), info
        assert info["state"] == "scheduled" and info["last_refresh"] is not None
    assert cli[0].returncode == 0, cli[0].stderr
    assert srv.count("g") == 1
    assert_no_secrets(world, results, cli[0].stdout)


# --- mirrors ----------------------------------------------------------------------------------


def test_every_mirror_gets_the_refreshed_tokens(world: World) -> None:
    srv = world.server
    anth = srv.add_grant("anth", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    oai = srv.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, lifetime_s=3 * 86400)
    # The user's pi login, and Codex's; the workspace copy is seeded and linked by takod.
    write_in_place(world.home_pi, pi_dumps({"anthropic": pi_entry(anth)}))
    codex_doc = oai.codex_auth()
    codex_doc["future_field"] = {"kept": True}
    write_in_place(world.codex, json.dumps(codex_doc, indent=2).encode())
    d = world.start()

    seeded = read_json(world.ws_pi)
    assert seeded["anthropic"]["refresh"] == ANTHROPIC_CANARY
    assert seeded["openai-codex"]["refresh"] == OPENAI_CANARY
    found = grants(d)
    assert sorted(found[grant_id("anthropic", ANTHROPIC_CANARY)]["mirrors"]) == sorted(
        [f"{world.ws_pi}#anthropic", f"{world.home_pi}#anthropic"])
    assert sorted(found[grant_id("openai-codex", OPENAI_CANARY)]["mirrors"]) == sorted(
        [f"{world.ws_pi}#openai-codex", str(world.codex)])

    result = call(d, "auth.refresh", None, timeout=WAIT * 2)
    assert srv.count("anth") == 1 and srv.count("oai") == 1
    assert {g["state"] for g in result["grants"]} == {"scheduled"}

    a, o = srv.grant("anth"), srv.grant("oai")
    for path in (world.ws_pi, world.home_pi):
        entry = read_json(path)["anthropic"]
        assert (entry["refresh"], entry["access"]) == (a.refresh, a.access), path
        assert mode_of(path) == 0o600
    ws_codex = read_json(world.ws_pi)["openai-codex"]
    assert (ws_codex["refresh"], ws_codex["access"]) == (o.refresh, o.access)
    assert ws_codex["accountId"] == o.account_id
    assert ws_codex["expires"] == o.expires_at * 1000
    codex = read_json(world.codex)
    assert codex["tokens"]["refresh_token"] == o.refresh
    assert codex["tokens"]["access_token"] == o.access
    assert codex["tokens"]["id_token"] == o.id_token
    assert codex["tokens"]["account_id"] == o.account_id
    assert codex["future_field"] == {"kept": True}
    assert codex["last_refresh"] != codex_doc["last_refresh"]
    assert mode_of(world.codex) == 0o600
    assert "openai-codex" not in read_json(world.home_pi)  # nothing invented where it was not

    # Both grants go on under their new tokens, every mirror listed.
    now = grants(d)
    assert set(now) == {grant_id("anthropic", a.refresh), grant_id("openai-codex", o.refresh)}
    assert all(len(g["mirrors"]) == 2 for g in now.values())
    assert_no_secrets(world, result, run_cli(d, "auth", "--json").stdout)


def test_the_pi_copy_of_a_codex_login_follows_the_refresh_whatever_the_token_times_say(world: World) -> None:
    # The stored access token claims to be issued later than the one the provider issues
    # next (clock skew; or two refreshes within one second, which look the same age).
    # Token times cannot tell which copy is newer here: the spent refresh token can.
    srv = world.server
    issued = int(time.time()) + 3600
    claims = {"exp": issued + 86400, "iat": issued, "sub": "auth0|skew",
              "https://api.openai.com/auth": {"chatgpt_account_id": "acct-skew"}}
    oai = srv.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, account_id="acct-skew",
                        access_token=make_jwt(claims))
    write_in_place(world.codex, json.dumps(oai.codex_auth(), indent=2).encode())
    d = world.start()
    assert read_json(world.ws_pi)["openai-codex"]["refresh"] == OPENAI_CANARY  # linked

    call(d, "auth.refresh", {"provider": "codex"}, timeout=WAIT * 2)
    assert srv.count("oai") == 1
    current = srv.current_refresh("oai")
    wait_for(lambda: grant_of(d, "openai-codex", current), WAIT)
    assert read_json(world.codex)["tokens"]["refresh_token"] == current
    assert read_json(world.ws_pi)["openai-codex"]["refresh"] == current
    assert read_json(world.ws_pi)["openai-codex"]["access"] == srv.grant("oai").access
    # Nothing copies the spent tokens back afterwards either.
    [info] = grants(d).values()
    assert sorted(info["mirrors"]) == sorted([str(world.codex), f"{world.ws_pi}#openai-codex"])
    assert read_json(world.codex)["tokens"]["refresh_token"] == current


def test_a_codex_file_caught_mid_write_does_not_lose_the_rotated_token(world: World) -> None:
    srv = world.server
    issued = int(time.time()) - 3600  # the stored token is an hour old
    claims = {"exp": issued + 3 * 86400, "iat": issued, "sub": "auth0|torn",
              "https://api.openai.com/auth": {"chatgpt_account_id": "acct-torn"}}
    oai = srv.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, lifetime_s=3 * 86400, account_id="acct-torn",
                        access_token=make_jwt(claims))
    original = json.dumps(oai.codex_auth(), indent=2).encode()
    write_in_place(world.codex, original)
    d = world.start()
    assert read_json(world.ws_pi)["openai-codex"]["refresh"] == OPENAI_CANARY  # linked
    gate = srv.hold_next("oai")
    forced = threading.Thread(target=lambda: call(d, "auth.refresh", {"provider": "codex"}, timeout=WAIT * 2))
    forced.start()
    srv.wait_arrival("oai")
    write_in_place(world.codex, original[: len(original) // 2])  # Codex truncated and is writing
    gate.set()
    forced.join(WAIT * 2)
    current = srv.current_refresh("oai")
    write_in_place(world.codex, original)  # ... and Codex's write completes

    # The rotated token survived in pi's copy, and from there reaches Codex's file too.
    wait_for(lambda: read_json(world.ws_pi)["openai-codex"]["refresh"] == current, WAIT)
    wait_for(lambda: read_json(world.codex)["tokens"]["refresh_token"] == current, WAIT)
    info = wait_for(lambda: (x := grant_of(d, "openai-codex", current)) and len(x["mirrors"]) == 2 and x, WAIT)
    assert info["state"] == "scheduled"
    assert srv.count("oai") == 1


def test_a_stale_copy_of_a_non_rotating_login_is_refreshed_once(world: World) -> None:
    # Copilot's "refresh token" (the GitHub token) never changes, so a copy that pi did not
    # renew (here the home file) is the same grant as the fresh workspace copy, but stale.
    srv = world.server
    g = srv.add_grant("cop", "copilot", lifetime_s=1800)
    write_in_place(world.ws_pi, pi_dumps({"github-copilot": pi_entry(g)}))  # fresh: 25 minutes left
    write_in_place(world.home_pi, pi_dumps({"github-copilot": pi_entry(g, expires_in=-60)}))  # expired
    d = world.start()

    wait_for(lambda: srv.count("cop", outcome="ok") >= 1, WAIT)
    wait_for(lambda: read_json(world.home_pi)["github-copilot"]["access"] == srv.grant("cop").access, WAIT)
    assert read_json(world.ws_pi)["github-copilot"]["access"] == srv.grant("cop").access
    info = wait_for(lambda: (x := grant_of(d, "github-copilot", g.refresh)) and x["last_refresh"] and x, WAIT)
    assert info["state"] == "scheduled" and info["refresh_at"] > time.time() + 60
    assert srv.count("cop") == 1
    assert d.log_text().count("refresh not needed") <= 1  # no busy loop of re-checks


# --- pi's lock --------------------------------------------------------------------------------


def test_a_live_pi_lock_is_waited_for_never_broken_and_the_refresh_follows_its_release(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    before = world.ws_pi.read_bytes()
    pi = world.hold_pi_lock(world.ws_pi)  # pi's own proper-lockfile, as a refreshing pi holds it
    d = world.start()

    # The due refresh waits for the lock (pi may be refreshing under it) and sends nothing meanwhile.
    wait_for(lambda: grant_of(d, "anthropic", ANTHROPIC_CANARY)["state"] == "refreshing", WAIT)
    assert srv.count() == 0
    assert world.ws_pi.read_bytes() == before
    assert Path(str(world.ws_pi) + ".lock").is_dir()  # still pi's

    pi.release()  # proper-lockfile says "released", not "compromised": never broken
    wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT)
    wait_for(lambda: read_json(world.ws_pi)["anthropic"]["refresh"] == srv.current_refresh("g"), WAIT)
    done = wait_for(lambda: (x := grant_of(d, "anthropic", srv.current_refresh("g"))) and x["last_refresh"] and x, WAIT)
    assert done["state"] == "scheduled" and done["last_error"] is None
    assert srv.count("g") == 1
    assert not os.path.lexists(str(world.ws_pi) + ".lock")


@pytest.mark.parametrize("copies", ["workspace", "workspace+home"])
def test_a_lock_wanted_while_the_request_is_out_waits_for_the_rotated_token(world: World, copies: str) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    mirrors = [world.ws_pi] + ([world.home_pi] if "home" in copies else [])
    for path in mirrors:
        write_in_place(path, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    gate = srv.hold_next("g")
    d = world.start()
    srv.wait_arrival("g")
    # A tool wanting any copy's lock now (to refresh it itself) cannot have it: every copy
    # is locked until the rotated token is in it.
    from takod_daemon.credentials.pi_lock import LockBusy, pi_lock

    for path in mirrors:
        with pytest.raises(LockBusy):
            with pi_lock(path, timeout=0):
                pass
    gate.set()
    wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT)  # the old token is spent now

    current = srv.current_refresh("g")
    for path in mirrors:
        wait_for(lambda path=path: read_json(path)["anthropic"]["refresh"] == current, WAIT)
    info = wait_for(lambda: (x := grant_of(d, "anthropic", current)) and x["last_refresh"] and x, WAIT)
    assert info["state"] == "scheduled" and info["last_error"] is None
    assert srv.count("g") == 1
    assert all(x["state"] != "needs-login" for x in grants(d).values())


def test_a_stale_lock_left_by_a_killed_pi_is_reclaimed(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    pi = world.hold_pi_lock(world.ws_pi)
    pi.kill()  # SIGKILL: proper-lockfile's exit hook never runs
    lock_dir = Path(str(world.ws_pi) + ".lock")
    assert lock_dir.is_dir()
    age(lock_dir, STALE_AFTER_S + 5)  # nobody has touched it since

    d = world.start()
    wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT)
    wait_for(lambda: read_json(world.ws_pi)["anthropic"]["refresh"] == srv.current_refresh("g"), WAIT)
    wait_for(lambda: not os.path.lexists(lock_dir), WAIT)  # ours, released after the write
    info = wait_for(lambda: grant_of(d, "anthropic", srv.current_refresh("g")), WAIT)
    assert info["state"] == "scheduled"


# --- someone else refreshed first -------------------------------------------------------------


def test_a_refresh_written_by_another_process_before_a_forced_refresh_is_adopted(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g)}))
    d = world.start()
    assert srv.count() == 0

    # pi takes its lock to refresh; meanwhile the user forces a refresh.
    pi = world.hold_pi_lock(world.ws_pi)
    forced: list[Any] = []
    t = threading.Thread(target=lambda: forced.append(call(d, "auth.refresh", {"provider": "anthropic"})))
    t.start()
    wait_for(lambda: grant_of(d, "anthropic", ANTHROPIC_CANARY)["state"] == "refreshing", WAIT)
    # pi refreshes under its lock and writes the file in place, then releases.
    answer = srv.refresh_as_pi("g", ANTHROPIC_CANARY)
    theirs = pi_dumps({"anthropic": {"type": "oauth", "refresh": answer["refresh_token"], "access": answer["access_token"],
                                     "expires": int(time.time() * 1000) + answer["expires_in"] * 1000 - 300_000}})
    write_in_place(world.ws_pi, theirs)
    pi.release()
    t.join(WAIT * 2)
    assert not t.is_alive()

    assert srv.count("g") == 1  # pi's refresh only: takod adopted it
    assert world.ws_pi.read_bytes() == theirs  # and did not rewrite the file
    [info] = forced[0]["grants"]
    assert info["id"] == grant_id("anthropic", answer["refresh_token"])
    assert info["state"] == "scheduled" and info["last_error"] is None
    now = grants(d)
    assert list(now) == [grant_id("anthropic", answer["refresh_token"])]
    assert now[info["id"]]["state"] == "scheduled"
    assert srv.count("g") == 1


def test_a_refresh_by_another_process_while_ours_is_at_a_slow_server_is_adopted(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g)}))
    d = world.start()
    events = subscribe(d, "auth")
    try:
        gate = srv.hold_next("g")
        forced: list[Any] = []
        t = threading.Thread(target=lambda: forced.append(call(d, "auth.refresh", {"provider": "anthropic"})))
        t.start()
        srv.wait_arrival("g")  # our request is at the server, not yet answered

        # Another process that does not wait for pi's lock (takod holds it) refreshes the
        # same token first and saves it.
        answer = srv.refresh_as_pi("g", ANTHROPIC_CANARY)
        theirs = pi_dumps({"anthropic": {
            "type": "oauth", "refresh": answer["refresh_token"], "access": answer["access_token"],
            "expires": int(time.time() * 1000) + answer["expires_in"] * 1000 - 300_000}})
        write_in_place(world.ws_pi, theirs)
        gate.set()  # our request now presents a spent token
        t.join(WAIT * 2)
        assert not t.is_alive()

        assert srv.count("g", outcome="ok") == 1 and srv.count("g", outcome="rejected") == 1
        assert world.ws_pi.read_bytes() == theirs
        [info] = forced[0]["grants"]
        assert info["id"] == grant_id("anthropic", answer["refresh_token"])
        assert info["state"] == "scheduled" and info["guidance"] is None
        assert all(g["state"] != "needs-login" for g in grants(d).values())
        assert pi_status(d)["reason"] != "needs-login"
        with pytest.raises(AssertionError):
            next_event(events, "auth", lambda p: p.get("kind") == "needs-login", timeout=1.0)
        assert srv.count("g") == 2
    finally:
        events.close()


# --- failures ---------------------------------------------------------------------------------


def test_permanent_failure_needs_login_touches_nothing_and_a_file_change_resets_it(world: World) -> None:
    srv = world.server
    srv.echo_secrets = True  # a careless server quoting the token back: takod must not repeat it
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=-60)}))  # already expired
    write_in_place(world.home_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=-60)}))
    files = {p: p.read_bytes() for p in (world.ws_pi, world.home_pi)}
    srv.fail_permanent(endpoint="anthropic")
    gate = srv.hold_next("g")
    d = world.start(PATH=str(world.bin_dir()))
    events = subscribe(d, "auth", "daemon")
    try:
        gate.set()
        event = next_event(events, "auth", lambda p: p.get("kind") == "needs-login")
        assert event["provider"] == "anthropic" and event["error"] == "invalid_grant"
        assert "/login anthropic" in event["guidance"] or "takod login anthropic" in event["guidance"]

        info = grant_of(d, "anthropic", ANTHROPIC_CANARY)
        assert info["state"] == "needs-login" and info["refresh_at"] is None
        assert info["last_error"] == "invalid_grant" and info["guidance"] == event["guidance"]
        st = wait_for(lambda: (p := pi_status(d))["reason"] == "needs-login" and p, WAIT)
        assert st["ready"] is False
        for path, data in files.items():
            assert path.read_bytes() == data, f"{path} was changed"

        # No retry loop: a reload re-reads everything and still makes no request.
        assert srv.count("g") == 1
        d.signal(signal.SIGHUP)
        next_event(events, "daemon", lambda p: p.get("state") == "reloaded")
        call(d, "providers.probe")
        assert grant_of(d, "anthropic", ANTHROPIC_CANARY)["state"] == "needs-login"
        assert srv.count("g") == 1
        cli = run_cli(d, "auth", "--json")
        human = run_cli(d, "auth")
        assert "login needed" in human.stdout
        assert_no_secrets(world, cli.stdout, human.stdout, event, info)

        # The file changes (here: the same login rewritten): takod tries again, and the server is fine now.
        srv.reset_modes()
        write_in_place(world.ws_pi, files[world.ws_pi])
        wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT)
        wait_for(lambda: read_json(world.ws_pi)["anthropic"]["refresh"] == srv.current_refresh("g"), WAIT)
        wait_for(lambda: read_json(world.home_pi)["anthropic"]["refresh"] == srv.current_refresh("g"), WAIT)
        wait_for(lambda: pi_status(d)["ready"], WAIT)
        info = wait_for(lambda: grant_of(d, "anthropic", srv.current_refresh("g")), WAIT)
        assert info["state"] == "scheduled" and info["guidance"] is None
        assert_no_secrets(world, run_cli(d, "auth", "--json").stdout)
    finally:
        events.close()


def test_a_rejection_is_checked_against_the_stores_before_a_login_is_asked_for(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    before = world.ws_pi.read_bytes()
    gate = srv.hold_next("g")
    d = world.start()
    srv.wait_arrival("g")  # the scheduler's refresh, under every store's lock
    srv.fail_permanent(endpoint="anthropic")
    gate.set()
    # Nobody else refreshed (the stores still hold the token sent), so a login is needed.
    info = wait_for(lambda: (x := grant_of(d, "anthropic", ANTHROPIC_CANARY)) and x["state"] == "needs-login" and x,
                    WAIT)
    assert info["last_error"] == "invalid_grant"
    assert call(d, "ping") == "pong"
    assert world.ws_pi.read_bytes() == before
    assert srv.count("g", outcome="ok") == 0
    wait_for(lambda: not os.path.lexists(str(world.ws_pi) + ".lock"), WAIT)


def test_transient_failures_are_retried_with_backoff_and_the_old_token_kept(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=120)}))
    before = world.ws_pi.read_bytes()
    srv.fail_transient(1, endpoint="anthropic")  # one 503
    gate = srv.hold_next("g")
    d = world.start()
    srv.wait_arrival("g")
    # While the first attempt is out, something makes takod re-read every store.
    events = subscribe(d, "daemon")
    try:
        d.signal(signal.SIGHUP)
        next_event(events, "daemon", lambda p: p.get("state") == "reloaded")
    finally:
        events.close()
    failed_at = time.time()
    gate.set()

    info = wait_for(lambda: (x := grant_of(d, "anthropic", ANTHROPIC_CANARY)) and x["state"] == "retrying" and x, WAIT)
    assert "503" in info["last_error"]
    assert info["refresh_at"] > failed_at
    assert world.ws_pi.read_bytes() == before  # the old token stays where it was
    assert srv.count("g", outcome="fault") == 1

    # The retry comes by itself, after the backoff.
    wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT * 2)
    wait_for(lambda: read_json(world.ws_pi)["anthropic"]["refresh"] == srv.current_refresh("g"), WAIT)
    done = wait_for(lambda: (x := grant_of(d, "anthropic", srv.current_refresh("g"))) and x["last_refresh"] and x, WAIT)
    assert done["state"] == "scheduled" and done["last_error"] is None
    assert srv.count("g") == 2


def test_a_rate_limit_is_honoured_before_the_next_attempt(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=120)}))
    before = world.ws_pi.read_bytes()
    srv.rate_limit(1, retry_after="900", endpoint="anthropic")
    started = time.time()
    d = world.start()
    info = wait_for(lambda: (x := grant_of(d, "anthropic", ANTHROPIC_CANARY)) and x["state"] == "retrying" and x, WAIT)
    assert "429" in info["last_error"]
    assert info["refresh_at"] >= started + 900
    assert world.ws_pi.read_bytes() == before
    assert srv.count("g") == 1


# --- kill -9 ----------------------------------------------------------------------------------


def test_kill_9_mid_refresh_leaves_whole_files_and_a_restart_recovers(world: World) -> None:
    srv = world.server
    anth = srv.add_grant("anth", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    oai = srv.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, lifetime_s=3 * 86400)
    write_in_place(world.home_pi, pi_dumps({"anthropic": pi_entry(anth, expires_in=60)}))
    write_in_place(world.codex, json.dumps(oai.codex_auth(), indent=2).encode())
    srv.slow(WAIT)  # answers come late; a client that hung up meanwhile is not served
    d = world.start()
    forced = threading.Thread(target=lambda: run_cli(d, "auth", "refresh", "codex"))
    forced.start()
    srv.wait_arrival("anth")
    srv.wait_arrival("oai")
    os.kill(d.pid, signal.SIGKILL)
    d.wait(WAIT)
    forced.join(WAIT * 2)

    mirrors = [world.ws_pi, world.home_pi, world.codex]
    for path in mirrors:
        read_json(path)  # whole: parses
        assert mode_of(path) == 0o600
    srv.reset_modes()
    assert srv.current_refresh("anth") == ANTHROPIC_CANARY  # nothing was rotated
    assert srv.current_refresh("oai") == OPENAI_CANARY

    d2 = world.start()
    wait_for(lambda: srv.count("anth", outcome="ok") == 1, WAIT * 2)
    call(d2, "auth.refresh", {"provider": "codex"}, timeout=WAIT * 2)
    assert srv.count("oai", outcome="ok") == 1
    wait_for(lambda: all(read_json(p)["anthropic"]["refresh"] == srv.current_refresh("anth")
                         for p in (world.ws_pi, world.home_pi)), WAIT)
    assert read_json(world.ws_pi)["openai-codex"]["refresh"] == srv.current_refresh("oai")
    assert read_json(world.codex)["tokens"]["refresh_token"] == srv.current_refresh("oai")
    states = {g["provider"]: g["state"] for g in grants(d2).values()}
    assert states == {"anthropic": "scheduled", "openai-codex": "scheduled"}
    assert_no_secrets(world)


# --- the request budget: whatever the endpoint answers ---------------------------------------


def _odd_codex_answer(kind: str, sent: Grant) -> bytes:
    now = int(time.time())
    claims = {"https://api.openai.com/auth": {"chatgpt_account_id": sent.account_id}, "iat": now}
    if kind == "opaque access token":
        access = "opaque-access-token-without-any-expiry"
    elif kind == "exp in the past":
        access = make_jwt({**claims, "exp": now - 3600})
    else:  # "the same token again": the tokens just sent, already due
        access = sent.access
    refresh = sent.refresh if kind == "the same token again" else "rt_odd_answer_" + kind.replace(" ", "_")
    return json.dumps({"access_token": access, "refresh_token": refresh, "id_token": sent.id_token}).encode()


@pytest.mark.parametrize("kind", ["opaque access token", "exp in the past", "the same token again"])
def test_an_answer_that_is_due_again_at_once_costs_one_request_not_a_loop(world: World, kind: str) -> None:
    from tests.fakes.http_base import Canned

    srv = world.server
    # Due (inside the 600 s lead), not yet inside Codex's own 300 s window (that waits for Codex first).
    oai = srv.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, lifetime_s=450)
    write_in_place(world.codex, json.dumps(oai.codex_auth(), indent=2).encode())
    srv.answer_with(Canned(_odd_codex_answer(kind, oai)), path="/openai/oauth/token")
    d = world.start()
    wait_for(lambda: srv.count() >= 1, WAIT)
    info = wait_for(lambda: next((g for g in grants(d).values() if g["state"] == "backing-off"), None), WAIT)
    assert info["wait_reason"] == "refreshed_recently"
    assert info["refresh_at"] >= time.time() + 200  # five minutes after the refresh, not now
    # Even a forced refresh keeps to the budget: it says why and when, and sends nothing.
    forced = call(d, "auth.refresh", {"provider": "codex"})["grants"]
    assert [(g["state"], g["wait_reason"]) for g in forced] == [("backing-off", "refreshed_recently")]
    assert srv.count() == 1
    shown = run_cli(d, "auth")
    assert "refreshed_recently" in shown.stdout, shown.stdout
    codex_status = wait_for(lambda: next(
        (p for p in call(d, "status")["providers"] if p["name"] == "codex" and p["detail"].get("warnings")), None), WAIT)
    assert any(w.startswith("refresh-backing-off: refreshed_recently") for w in codex_status["detail"]["warnings"])
    assert OPENAI_CANARY not in shown.stdout + d.log_text()


@pytest.mark.parametrize("lifetime", [0, 1e308])
def test_a_pi_answer_with_an_unusable_lifetime_is_one_request_and_a_login_hint(world: World, lifetime: float) -> None:
    from tests.fakes.http_base import Canned

    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))
    body = json.dumps({"access_token": "sk-ant-oat01-odd", "refresh_token": "sk-ant-ort01-odd", "expires_in": lifetime})
    srv.answer_with(Canned(body.encode()), path="/anthropic/v1/oauth/token")
    d = world.start()
    info = wait_for(lambda: (x := grant_of(d, "anthropic", ANTHROPIC_CANARY)) and x["state"] == "needs-login" and x,
                    WAIT)
    assert info["last_error"] == "malformed_response"
    forced = call(d, "auth.refresh", {"provider": "anthropic"})["grants"]
    assert [x["state"] for x in forced] == ["needs-login"]
    assert srv.count() == 1


# --- seeding and copies: no store keeps a token takod spent ------------------------------------


def test_a_workspace_seeded_while_the_home_login_is_refreshed_gets_the_new_token(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.home_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=60)}))  # due
    other = world.home / "ws2"
    (other / ".tako").mkdir(parents=True)
    (other / "tako.toml").write_text("")
    other_pi = other / ".tako" / "pi" / "agent" / "auth.json"
    gate = srv.hold_next("g")
    d = world.start()
    srv.wait_arrival("g")  # takod's refresh of the home login is at the server
    loaded = threading.Thread(target=lambda: call(d, "status", {"workspace": str(other)}))
    loaded.start()  # a new workspace without a pi file: seeded from the home one
    # The seed waits for the home file's lock, which the refresh holds: no copy of the token being spent.
    assert not other_pi.exists() or ANTHROPIC_CANARY not in other_pi.read_text()
    gate.set()
    loaded.join(WAIT * 2)
    assert not loaded.is_alive()
    current = srv.current_refresh("g")
    for path in (world.home_pi, other_pi):
        wait_for(lambda path=path: read_json(path)["anthropic"]["refresh"] == current, WAIT)
    assert srv.count("g") == 1 and srv.count("g", outcome="rejected") == 0
    assert all(x["state"] != "needs-login" for x in grants(d).values())


def test_a_copy_holding_a_token_takod_already_spent_gets_its_successor_not_a_request(world: World) -> None:
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    old_file = pi_dumps({"anthropic": pi_entry(g, expires_in=60)})
    write_in_place(world.home_pi, old_file)  # due: takod refreshes it at once
    d = world.start()
    wait_for(lambda: srv.count("g", outcome="ok") == 1, WAIT)
    current = srv.current_refresh("g")
    wait_for(lambda: read_json(world.home_pi)["anthropic"]["refresh"] == current, WAIT)

    # Some tool copies the old home file into a new workspace (a backup restored, a copy made
    # before the refresh): it holds the spent token.
    other = world.home / "ws2"
    (other / ".tako").mkdir(parents=True)
    (other / "tako.toml").write_text("")
    other_pi = other / ".tako" / "pi" / "agent" / "auth.json"
    write_in_place(other_pi, old_file)
    call(d, "status", {"workspace": str(other)})
    wait_for(lambda: read_json(other_pi)["anthropic"]["refresh"] == current, WAIT)
    assert srv.count("g") == 1  # the spent token was never sent again
    assert all(x["state"] != "needs-login" for x in grants(d).values())



def _expired_codex_login(world: World, name: str, refresh_token: str | None = None) -> tuple[Grant, bytes]:
    """A Codex login whose access token expired a minute ago, written to Codex's file."""
    g = world.server.add_grant(name, "openai", lifetime_s=3600,
                               **({"refresh_token": refresh_token} if refresh_token else {}))
    now = int(time.time())
    doc = g.codex_auth()
    doc["tokens"]["access_token"] = make_jwt({"https://api.openai.com/auth": {"chatgpt_account_id": g.account_id},
                                              "iat": now - 3600, "exp": now - 60})
    data = json.dumps(doc, indent=2).encode()
    write_in_place(world.codex, data)
    return g, data


def test_an_expired_codex_login_is_left_to_a_starting_codex_which_refreshes_it_itself(world: World) -> None:
    """Codex posts its refresh token before taking any lock: a takod refreshing the same
    expired login at the same moment spends it twice (docs/refresh.md). takod waits."""
    srv = world.server
    ours, _ = _expired_codex_login(world, "oai", OPENAI_CANARY)
    started = time.time()
    d = world.start()
    info = grant_of(d, "openai-codex", OPENAI_CANARY)
    assert info is not None
    assert (info["state"], info["wait_reason"]) == ("backing-off", "waiting_for_codex")
    assert info["refresh_at"] >= started + 30  # the grace, not now
    shown = run_cli(d, "auth")
    assert "waiting_for_codex" in shown.stdout and "codex refreshes it" in shown.stdout, shown.stdout
    codex_status = next(p for p in call(d, "status")["providers"] if p["name"] == "codex")
    assert any(w.startswith("refresh-backing-off: waiting_for_codex") for w in codex_status["detail"]["warnings"])

    # Codex starts, refreshes its own login and writes its file: takod adopts it, sending nothing.
    theirs = srv.add_grant("theirs", "openai", lifetime_s=3 * 86400, account_id=ours.account_id)
    write_in_place(world.codex, json.dumps(theirs.codex_auth(), indent=2).encode())
    adopted = wait_for(lambda: grant_of(d, "openai-codex", theirs.refresh), WAIT)
    assert adopted["state"] == "scheduled" and adopted["wait_reason"] is None
    assert grant_of(d, "openai-codex", OPENAI_CANARY) is None
    assert srv.count() == 0
    assert OPENAI_CANARY not in shown.stdout + d.log_text()


def test_the_user_can_still_refresh_an_expired_codex_login_at_once(world: World) -> None:
    srv = world.server
    _expired_codex_login(world, "oai", OPENAI_CANARY)
    d = world.start()
    assert grant_of(d, "openai-codex", OPENAI_CANARY)["wait_reason"] == "waiting_for_codex"
    [info] = call(d, "auth.refresh", {"provider": "codex"})["grants"]
    assert info["state"] == "scheduled" and info["wait_reason"] is None
    assert srv.count("oai") == 1
    assert json.loads(world.codex.read_bytes())["tokens"]["refresh_token"] == srv.current_refresh("oai")
