"""The refresh broker's arithmetic and bookkeeping, without a daemon: when a
grant is due (lead time, half-life guard, retry time), how retries back off,
how ``scan`` groups the copies of one login into one grant, and how
``rescan`` carries what it knows about a grant across file changes."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.credentials.pi_auth import OAuthEntry
from takod_daemon.refresh import broker as broker_module
from takod_daemon.refresh.broker import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    DEFAULT_LEAD,
    Grant,
    Mirror,
    RefreshBroker,
    _key,
    scan,
)
from tests.fakes.oauth_server import FakeOAuthServer, make_jwt

LEAD = DEFAULT_LEAD
T0 = 1_800_000_000.0  # a fixed "now", epoch seconds
TOOLS_WINDOW = 300.0  # pi 1.x and Codex refresh 5 minutes before the stored expiry


def grant(expires_at: float, **fields: Any) -> Grant:
    g = Grant("anthropic:0123456789ab", "anthropic", "sk-ant-ort01-secret", [Mirror("pi", Path("/x/auth.json"), "anthropic")],
              expires_at, ())
    for name, value in fields.items():
        setattr(g, name, value)
    return g


# --- due_at -------------------------------------------------------------------------------


def test_due_lead_seconds_before_the_stored_expiry() -> None:
    assert grant(T0 + 3600).due_at(LEAD) == T0 + 3600 - LEAD
    assert grant(T0 + 3600).due_at(60) == T0 + 3600 - 60
    assert grant(T0 - 10).due_at(LEAD) == T0 - 10 - LEAD  # expired: overdue


def test_a_retrying_grant_is_due_at_its_retry_time() -> None:
    g = grant(T0 + 3600, state="retrying", retry_at=T0 + 42)
    assert g.due_at(LEAD) == T0 + 42
    # A retry may also come later than the lead would say (a server's Retry-After).
    assert grant(T0 + 100, state="retrying", retry_at=T0 + 900).due_at(LEAD) == T0 + 900
    # Without a retry time it is scheduled as usual; other states ignore a stale retry time.
    assert grant(T0 + 3600, state="retrying", retry_at=None).due_at(LEAD) == T0 + 3600 - LEAD
    assert grant(T0 + 3600, state="scheduled", retry_at=T0 + 42).due_at(LEAD) == T0 + 3600 - LEAD


def test_half_life_guard_keeps_a_short_lived_token_from_being_refreshed_in_a_loop() -> None:
    # A token living 5 minutes is inside a 10 minute lead the moment it is issued.
    g = grant(T0 + 300, last_refresh=T0)
    assert g.due_at(LEAD) == T0 + 150
    # Long-lived tokens are not affected: the lead comes after half their life.
    assert grant(T0 + 3600, last_refresh=T0).due_at(LEAD) == T0 + 3600 - LEAD
    # Exactly twice the lead: both rules agree.
    assert grant(T0 + 2 * LEAD, last_refresh=T0).due_at(LEAD) == T0 + LEAD
    # A stored expiry that is not after our last refresh (another writer, a clock jump) has no guard.
    assert grant(T0 - 5, last_refresh=T0).due_at(LEAD) == T0 - 5 - LEAD


@given(
    lifetime=st.floats(min_value=1.0, max_value=30 * 86400.0),
    lead=st.floats(min_value=0.0, max_value=86400.0),
    refreshed=st.booleans(),
)
def test_due_never_after_expiry_and_never_in_a_refresh_loop(lifetime: float, lead: float, refreshed: bool) -> None:
    g = grant(T0 + lifetime, last_refresh=T0 if refreshed else None)
    due = g.due_at(lead)
    assert due <= T0 + lifetime  # never later than the stored expiry
    if refreshed:
        assert due >= T0 + lifetime / 2 - 1e-6  # at most one refresh per half life
    if not refreshed or lifetime >= 2 * lead:
        assert due == pytest.approx(T0 + lifetime - lead)
    if lead >= TOOLS_WINDOW and lifetime >= 2 * lead:
        assert due <= T0 + lifetime - TOOLS_WINDOW  # ahead of pi's and Codex's own refresh


# --- retries ------------------------------------------------------------------------------


def bare_broker(lead: float = LEAD, pi_files: list[Path] | None = None, env: dict[str, str] | None = None) -> RefreshBroker:
    state = SimpleNamespace(pi_files=lambda: list(pi_files or []))
    return RefreshBroker(SimpleNamespace(state=state), env or {}, lead)  # type: ignore[arg-type]


@pytest.mark.parametrize("jitter", ["low", "high"])
def test_retry_backoff_doubles_from_the_minimum_to_the_cap_with_jitter(monkeypatch: pytest.MonkeyPatch, jitter: str) -> None:
    monkeypatch.setattr(broker_module.random, "uniform", (lambda a, b: a) if jitter == "low" else (lambda a, b: b))
    factor = 0.5 if jitter == "low" else 1.5
    b = bare_broker()
    g = grant(T0 + 3600)
    for attempt in range(1, 15):
        before = time.time()
        b._retry(g, f"failure {attempt}")
        after = time.time()
        base = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (attempt - 1))
        assert g.attempts == attempt
        assert g.state == "retrying" and g.last_error == f"failure {attempt}"
        assert before + base * factor <= g.retry_at <= after + base * factor
    assert base == BACKOFF_MAX  # the cap was reached


def test_retry_backoff_stays_within_its_bounds_with_real_jitter() -> None:
    b = bare_broker()
    g = grant(T0 + 3600)
    for attempt in range(1, 25):
        before = time.time()
        b._retry(g, "x")
        after = time.time()
        base = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (attempt - 1))
        assert before + 0.5 * base <= g.retry_at <= after + 1.5 * base
        assert g.retry_at <= after + 1.5 * BACKOFF_MAX  # never silent for more than 15 minutes


def test_retry_honours_a_servers_retry_after_but_not_a_shorter_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module.random, "uniform", lambda a, b: 1.0)
    b = bare_broker()
    g = grant(T0 + 3600)
    before = time.time()
    b._retry(g, "rate limited", retry_after=3600)
    assert g.retry_at >= before + 3600
    g2 = grant(T0 + 3600)
    before = time.time()
    b._retry(g2, "rate limited", retry_after=0.1)  # shorter than our own backoff
    assert g2.retry_at >= before + BACKOFF_MIN


# --- ids and what is shown ----------------------------------------------------------------


def test_grant_id_names_the_provider_and_hides_the_token() -> None:
    key = _key("anthropic", "sk-ant-ort01-secret")
    assert key.startswith("anthropic:") and "secret" not in key
    assert key == _key("anthropic", "sk-ant-ort01-secret")
    assert key != _key("anthropic", "sk-ant-ort01-other")
    assert "sk-ant-ort01-secret" not in repr(grant(T0))


def test_info_has_no_refresh_time_once_a_login_is_needed() -> None:
    b = bare_broker()
    assert b.info(grant(T0 + 3600)).refresh_at == T0 + 3600 - LEAD
    dead = b.info(grant(T0 + 3600, state="needs-login", guidance="log in"))
    assert dead.refresh_at is None and dead.guidance == "log in"


# --- scan ---------------------------------------------------------------------------------


SERVER = FakeOAuthServer()  # used only to mint realistic tokens; never started


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    os.chmod(path, 0o600)
    return path


def names(found: list[Any]) -> list[tuple[str, list[str]]]:
    return sorted((f.provider, [m.describe() for m in f.mirrors]) for f in found)


def test_copies_of_one_login_in_several_pi_files_are_one_grant(tmp_path: Path) -> None:
    g = SERVER.add_grant("scan-anth", "anthropic")
    entry = g.pi_entry()
    older = {**entry, "expires": entry["expires"] - 60_000}
    ws = write(tmp_path / "ws/auth.json", {"anthropic": entry})
    home = write(tmp_path / "home/auth.json", {"anthropic": older})
    [found] = scan([ws, home], {"HOME": str(tmp_path)})
    assert found.provider == "anthropic" and found.refresh == g.refresh
    assert [m.describe() for m in found.mirrors] == [f"{ws}#anthropic", f"{home}#anthropic"]
    assert found.expires_at == older["expires"] / 1000  # the earliest copy decides


def test_different_logins_of_one_provider_are_separate_grants(tmp_path: Path) -> None:
    a, b = SERVER.add_grant("scan-a", "anthropic"), SERVER.add_grant("scan-b", "anthropic")
    one = write(tmp_path / "ws/auth.json", {"anthropic": a.pi_entry()})
    two = write(tmp_path / "home/auth.json", {"anthropic": b.pi_entry()})
    found = scan([one, two], {"HOME": str(tmp_path)})
    assert sorted(f.refresh for f in found) == sorted([a.refresh, b.refresh])
    assert all(len(f.mirrors) == 1 for f in found)


def test_codex_login_and_its_pi_copy_are_one_grant(tmp_path: Path) -> None:
    g = SERVER.add_grant("scan-oai", "openai")
    ws = write(tmp_path / "ws/auth.json", {"openai-codex": g.pi_entry()})
    codex = write(tmp_path / ".codex/auth.json", g.codex_auth())
    [found] = scan([ws], {"HOME": str(tmp_path)})
    assert found.provider == "openai-codex"
    assert [(m.kind, m.describe()) for m in found.mirrors] == [("pi", f"{ws}#openai-codex"), ("codex", str(codex))]
    assert found.expires_at == g.expires_at
    # CODEX_HOME is honoured.
    moved = write(tmp_path / "elsewhere/auth.json", g.codex_auth())
    [found] = scan([], {"HOME": str(tmp_path), "CODEX_HOME": str(moved.parent)})
    assert [m.describe() for m in found.mirrors] == [str(moved)]


def test_every_refreshable_pi_provider_and_nothing_else_is_scanned(tmp_path: Path) -> None:
    grants = {
        "openai-codex": SERVER.add_grant("scan-p1", "openai"),
        "anthropic": SERVER.add_grant("scan-p2", "anthropic"),
        "github-copilot": SERVER.add_grant("scan-p3", "copilot"),
        "google-gemini-cli": SERVER.add_grant("scan-p4", "google", client="google-gemini-cli"),
        "google-antigravity": SERVER.add_grant("scan-p5", "google", client="google-antigravity"),
    }
    doc: dict[str, Any] = {p: g.pi_entry() for p, g in grants.items()}
    doc |= {
        "openrouter": {"type": "oauth", "access": "k", "refresh": "r-openrouter", "expires": 1},  # not ours to refresh
        "groq": {"type": "api_key", "key": "gsk_x"},
        "xai": {"type": "oauth", "access": "a", "refresh": "", "expires": 1},
        "broken": {"type": "oauth", "access": "a"},
    }
    path = write(tmp_path / "ws/auth.json", doc)
    found = scan([path], {"HOME": str(tmp_path)})
    assert sorted(f.provider for f in found) == sorted(grants)
    assert {f.provider: f.refresh for f in found} == {p: g.refresh for p, g in grants.items()}


def test_unusable_files_are_skipped_and_the_rest_still_found(tmp_path: Path) -> None:
    g = SERVER.add_grant("scan-ok", "anthropic")
    good = write(tmp_path / "ws/auth.json", {"anthropic": g.pi_entry()})
    half = tmp_path / "home/auth.json"
    half.parent.mkdir(parents=True)
    half.write_text('{"anthropic": {"type": "oauth", "acc')  # half-written by pi
    codex = tmp_path / ".codex/auth.json"
    codex.parent.mkdir()
    codex.write_text('{"tokens": ')  # half-written by Codex
    missing = tmp_path / "nope/auth.json"
    [found] = scan([good, half, missing], {"HOME": str(tmp_path)})
    assert [m.path for m in found.mirrors] == [good]


def test_codex_logins_takod_must_not_refresh_are_left_out(tmp_path: Path) -> None:
    g = SERVER.add_grant("scan-keyring", "openai")
    write(tmp_path / ".codex/auth.json", g.codex_auth())
    (tmp_path / ".codex/config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    assert scan([], {"HOME": str(tmp_path)}) == []  # the file is not Codex's store
    (tmp_path / ".codex/config.toml").write_text('cli_auth_credentials_store = "file"\n')
    assert len(scan([], {"HOME": str(tmp_path)})) == 1
    write(tmp_path / ".codex/auth.json", {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x", "tokens": None})
    assert scan([], {"HOME": str(tmp_path)}) == []  # an API key is never refreshed


def test_a_codex_token_without_exp_is_due_now(tmp_path: Path) -> None:
    g = SERVER.add_grant("scan-noexp", "openai")
    doc = g.codex_auth()
    doc["tokens"]["access_token"] = make_jwt({"sub": "x"})  # no exp claim
    write(tmp_path / ".codex/auth.json", doc)
    before = time.time()
    [found] = scan([], {"HOME": str(tmp_path)})
    assert before <= found.expires_at <= time.time()


# --- rescan -------------------------------------------------------------------------------


def test_rescan_keeps_each_grant_object_so_a_refresh_in_flight_records_its_outcome(tmp_path: Path) -> None:
    g = SERVER.add_grant("rescan-a", "anthropic")
    path = write(tmp_path / "ws/auth.json", {"anthropic": g.pi_entry()})
    b = bare_broker(pi_files=[path])
    anyio.run(b.rescan)
    [held] = b.grants.values()
    held.state = "refreshing"  # a refresh holds this object ...
    write(path, {"anthropic": g.pi_entry(), "groq": {"type": "api_key", "key": "k"}})  # ... a file changes ...
    anyio.run(b.rescan)
    assert b.grants[held.key] is held  # ... and the known grant is the same object
    b._retry(held, "boom")  # so the refresh's outcome is what everyone sees
    assert b.grants[held.key].state == "retrying"
    assert b.info(b.grants[held.key]).last_error == "boom"


def test_a_grant_needing_login_stays_so_until_one_of_its_files_changes(tmp_path: Path) -> None:
    g = SERVER.add_grant("rescan-dead", "anthropic")
    ws = write(tmp_path / "ws/auth.json", {"anthropic": g.pi_entry()})
    home = write(tmp_path / "home/auth.json", {"anthropic": g.pi_entry()})
    other = write(tmp_path / "other/auth.json", {"groq": {"type": "api_key", "key": "k"}})
    b = bare_broker(pi_files=[ws, home, other])
    anyio.run(b.rescan)
    [dead] = b.grants.values()
    dead.state, dead.last_error, dead.guidance = "needs-login", "invalid_grant", "log in again"
    assert b.needs_login() == {(str(ws), "anthropic"), (str(home), "anthropic")}

    write(other, {"groq": {"type": "api_key", "key": "k2"}})  # not one of its files
    anyio.run(b.rescan)
    assert b.grants[dead.key].state == "needs-login"

    content = home.read_bytes()
    home.write_bytes(content)  # rewritten (same login): worth one more try
    st = home.stat()
    os.utime(home, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a distinct mtime even on coarse clocks
    anyio.run(b.rescan)
    again = b.grants[dead.key]
    assert again.state == "scheduled" and again.guidance is None and again.attempts == 0
    assert b.needs_login() == set()


def test_a_rotated_token_goes_to_every_copy_known_when_the_request_went_out(tmp_path: Path) -> None:
    g = SERVER.add_grant("persist-a", "anthropic")
    ws = write(tmp_path / "ws/auth.json", {"anthropic": g.pi_entry()})
    home = write(tmp_path / "home/auth.json", {"anthropic": g.pi_entry(), "groq": {"type": "api_key", "key": "k"}})
    elsewhere = write(tmp_path / "other/auth.json", {"anthropic": {**g.pi_entry(), "refresh": "another-login"}})
    b = bare_broker(pi_files=[ws, home, elsewhere])
    anyio.run(b.rescan)
    [held] = [x for x in b.grants.values() if x.refresh_token == g.refresh]
    started = list(held.mirrors)
    held.mirrors = held.mirrors[:1]  # a rescan meanwhile read the home copy half-written
    new = OAuthEntry(access="new-access", refresh="new-refresh", expires=int(time.time() * 1000) + 3_600_000)
    written = b._persist_pi(held, started, new, {})
    assert written == [f"{ws}#anthropic", f"{home}#anthropic"]
    for path in (ws, home):
        assert json.loads(path.read_text())["anthropic"]["refresh"] == "new-refresh"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(home.read_text())["groq"] == {"type": "api_key", "key": "k"}
    assert json.loads(elsewhere.read_text())["anthropic"]["refresh"] == "another-login"  # not this grant


def test_the_locks_cover_every_copy_found_under_them_and_skip_a_deleted_one(tmp_path: Path) -> None:
    from contextlib import ExitStack

    g = SERVER.add_grant("lock-set", "anthropic")
    ws = write(tmp_path / "ws/auth.json", {"anthropic": g.pi_entry()})
    home = write(tmp_path / "home/auth.json", {"anthropic": g.pi_entry()})
    gone = write(tmp_path / "gone/auth.json", {"anthropic": g.pi_entry()})
    b = bare_broker(pi_files=[ws, home, gone])
    anyio.run(b.rescan)
    [held] = [x for x in b.grants.values() if x.refresh_token == g.refresh]
    assert len(held.mirrors) == 3
    for path in (gone, gone.with_suffix(".json.lock")):
        path.unlink(missing_ok=True)
    gone.parent.rmdir()  # a workspace removed since the last scan: no lock to take there
    seeded = write(tmp_path / "seeded/auth.json", {"anthropic": g.pi_entry()})  # a copy made since
    stack = ExitStack()
    try:
        mirrors, locks = b._lock_stores(held, [ws, home, gone, seeded], stack)
        assert sorted(str(m.path) for m in mirrors) == sorted(str(p) for p in (ws, home, seeded))
        assert set(locks) == {ws, home, seeded}
        for path in (ws, home, seeded):
            assert Path(str(path) + ".lock").is_dir()  # pi's directory lock, held
    finally:
        stack.close()
    assert not any(Path(str(p) + ".lock").exists() for p in (ws, home, seeded))
