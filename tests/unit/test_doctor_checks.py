"""The doctor's checks are pure: facts in, verdicts out."""

from __future__ import annotations

from takod.doctor_local import LocalFacts, PathFacts, check_private_dir, check_runtime_dir, check_socket, mode_fixes
from takod.schema import GrantInfo, ProviderStatus
from takod_daemon.doctor import (
    DoctorFacts,
    ErrorRecord,
    TokenTime,
    check_clock,
    check_codex_store,
    check_env_shadowing,
    check_error_log,
    check_logins,
    check_pi_auth,
    check_pi_runtime,
    check_provider,
    check_providers,
    check_proxies,
    mask_proxy,
    run_checks,
)

UID = 1000
NOW = 1_800_000_000.0


def local(**kw: object) -> LocalFacts:
    base: dict[str, object] = dict(
        uid=UID, platform="linux",
        socket=PathFacts("/run/user/1000/takod/rpc.sock", True, "socket", 0o600, UID),
        socket_dir=PathFacts("/run/user/1000/takod", True, "dir", 0o700, UID),
        state_dir=PathFacts("/h/.local/state/takod", True, "dir", 0o700, UID),
        state_files=(PathFacts("/h/.local/state/takod/daemon.log", True, "file", 0o600, UID),),
        xdg_runtime_dir="/run/user/1000", runtime_dir=PathFacts("/run/user/1000", True, "dir", 0o700, UID),
        systemd=False, linger=None, user="u",
    )
    base.update(kw)
    return LocalFacts(**base)  # type: ignore[arg-type]


def status(name: str, ready: bool, reason: str | None = None, **detail: object) -> ProviderStatus:
    return ProviderStatus(name=name, ready=ready, level="ready" if ready else "installed", reason=reason,
                          hint=f"hint for {reason}" if reason else None, detail=dict(detail))


def facts(**kw: object) -> DoctorFacts:
    base: dict[str, object] = dict(now=NOW, local=local(), workspace="/ws", tako_workspace=True,
                                   providers=[status("ollama", True)], selected="ollama", key_store=None)
    base.update(kw)
    return DoctorFacts(**base)  # type: ignore[arg-type]


def test_socket_dir_modes_and_owner() -> None:
    d = PathFacts("/r/takod", True, "dir", 0o755, UID)
    loose = check_private_dir("socket-dir", "socket directory", d, UID)
    assert loose.verdict == "fail" and loose.fixable and "0755" in loose.summary
    foreign = check_private_dir("socket-dir", "socket directory", PathFacts("/r/takod", True, "dir", 0o700, 0), UID)
    assert foreign.verdict == "fail" and not foreign.fixable
    # Never "take it over": the fix points takod elsewhere instead of chowning another user's directory.
    assert "sudo chown" not in (foreign.fix or "") and "TAKOD_SOCKET" in (foreign.fix or "")
    link = check_private_dir("socket-dir", "socket directory", PathFacts("/r/takod", True, "symlink", 0o777, UID), UID)
    assert link.verdict == "fail" and not link.fixable
    assert check_private_dir("socket-dir", "x", PathFacts("/r/takod", False), UID).verdict == "ok"
    assert check_socket(PathFacts("/r/s", True, "socket", 0o666, UID), UID, True).fixable
    # Only what is loose gets a mode fix, and never a foreign check id.
    facts_ = local(socket_dir=d)
    assert mode_fixes(facts_, {"socket-dir", "socket"}) == [("socket-dir", "/r/takod", 0o700)]


def test_runtime_dir() -> None:
    assert check_runtime_dir(local()).verdict == "ok"
    assert check_runtime_dir(local(xdg_runtime_dir=None)).verdict == "warn"
    bad = local(runtime_dir=PathFacts("/run/user/1000", True, "dir", 0o755, UID))
    assert check_runtime_dir(bad).verdict == "warn"
    assert check_runtime_dir(local(platform="darwin", xdg_runtime_dir=None)).verdict == "ok"


def test_providers_reuse_readiness() -> None:
    pi = check_provider(status("pi", False, "not-installed"), tako_workspace=True)
    assert pi.verdict == "warn" and pi.fixable and pi.fix == "hint for not-installed"
    codex = check_provider(status("codex", False, "not-installed"), tako_workspace=True)
    assert codex.verdict == "ok" and not codex.fixable
    assert check_provider(status("ollama", False, "not-probed"), True).fixable
    assert check_providers([status("pi", False, "needs-login")], None).verdict == "fail"
    assert check_providers([status("ollama", True)], "ollama").verdict == "ok"


def test_pi_runtime_and_auth() -> None:
    missing = check_pi_runtime(facts(npm_path="/usr/bin/npm", pi_runtime_path="/ws/.tako/pi/node", pi_package="p@1"))
    assert missing.verdict == "warn" and missing.fixable and "p@1" in (missing.fix or "")
    assert not check_pi_runtime(facts(npm_path=None)).fixable
    assert check_pi_runtime(facts(pi_runtime_version="0.73.1")).verdict == "ok"
    assert check_pi_runtime(facts(tako_workspace=False)).verdict == "ok"
    auth = PathFacts("/ws/.tako/pi/agent/auth.json", True, "file", 0o644, UID)
    assert check_pi_auth(facts(ws_auth=auth), UID).fixable
    broken = check_pi_auth(facts(ws_auth=PathFacts(auth.path, True, "file", 0o600, UID), ws_auth_problem="bad JSON"), UID)
    assert broken.verdict == "fail" and not broken.fixable
    seed = check_pi_auth(facts(ws_auth=PathFacts(auth.path, False), home_auth="/h/.pi/agent/auth.json"), UID)
    assert seed.fixable and "/h/.pi/agent/auth.json" in (seed.fix or "")


def test_codex_store_modes() -> None:
    assert check_codex_store(facts(codex_store="file", codex_auth_exists=True)).verdict == "ok"
    assert check_codex_store(facts(codex_store="keyring", codex_installed=True)).verdict == "warn"
    assert check_codex_store(facts(codex_store="auto", codex_auth_exists=False)).verdict == "warn"
    assert check_codex_store(facts(codex_store="auto", codex_auth_exists=True)).verdict == "ok"
    assert check_codex_store(facts(codex_problem="config.toml: bad TOML")).verdict == "warn"


def test_env_shadowing_names_only() -> None:
    f = facts(key_sources={"OPENAI_API_KEY": ["client-env", "keyring"], "GROQ_API_KEY": ["daemon-env"],
                           "ANTHROPIC_API_KEY": ["daemon-env", "file"]})
    c = check_env_shadowing(f, [status("claude", True, warnings=["env-shadowed: ANTHROPIC_API_KEY in the environment is used instead of the claude login"])])
    assert c.verdict == "warn"
    assert "OPENAI_API_KEY in your shell overrides" in (c.detail or "")
    assert "ANTHROPIC_API_KEY in the daemon's environment is ignored" in (c.detail or "")
    assert "claude login" in (c.detail or "")
    assert "GROQ" not in (c.detail or "")  # set in one place only: nothing shadowed
    assert check_env_shadowing(facts(key_sources={"X_API_KEY": ["keyring"]}), []).verdict == "ok"


def test_proxies_masked_and_loopback() -> None:
    assert mask_proxy("http://user:s3cret@proxy:3128") == "http://***@proxy:3128"
    assert mask_proxy("user:pw@proxy:3128") == "***@proxy:3128"
    assert mask_proxy("http://proxy:3128") == "http://proxy:3128"
    no_bypass = check_proxies(facts(proxies={"HTTPS_PROXY": "http://***@proxy:3128"}))
    assert no_bypass.verdict == "warn" and "NO_PROXY" in no_bypass.summary
    ok = check_proxies(facts(proxies={"HTTPS_PROXY": "http://p:1", "NO_PROXY": "localhost,127.0.0.1"}))
    assert ok.verdict == "ok"
    elsewhere = check_proxies(facts(client_proxy_names=["https_proxy"]))
    assert elsewhere.verdict == "warn" and "HTTPS_PROXY" in elsewhere.summary


def test_clock_skew_from_token_times() -> None:
    future = check_clock(facts(tokens=[TokenTime("/h/.codex/auth.json", issued_at=NOW + 3600)]))
    assert future.verdict == "warn" and "60 min behind" in future.summary
    assert check_clock(facts(tokens=[TokenTime("a", issued_at=NOW - 10, refreshed_at=NOW + 30)])).verdict == "ok"


def test_error_log_reauth_guidance() -> None:
    errs = [ErrorRecord(NOW - 60, "pi", "auth", "openai-codex: invalid_grant: refresh token revoked"),
            ErrorRecord(NOW - 30, "ollama", "timeout", "no answer within 180 s")]
    c = check_error_log(facts(errors=errs, error_log="/ws/.tako/logs/error.log"))
    assert c.verdict == "warn" and "`takod login codex`" in (c.fix or "") and "ollama" not in c.summary
    calm = check_error_log(facts(errors=errs[1:]))
    assert calm.verdict == "ok" and "none about logins" in calm.summary
    old = check_error_log(facts(errors=[ErrorRecord(NOW - 30 * 86400, "codex", "auth", "401")]))
    assert old.verdict == "ok"


def test_run_checks_has_stable_unique_ids() -> None:
    ids = [c.id for c in run_checks(facts())]
    assert len(ids) == len(set(ids))
    assert ids[:2] == ["socket-dir", "socket"] and "error-log" in ids and "provider:ollama" in ids


def grant(state: str, **kw: object) -> GrantInfo:
    base: dict[str, object] = dict(id="openai-codex:ab", provider="openai-codex", mirrors=["/h/.codex/auth.json"],
                                   expires_at=NOW, refresh_at=None, last_refresh=None, last_error=None, state=state,
                                   guidance=None)
    base.update(kw)
    return GrantInfo(**base)  # type: ignore[arg-type]


def test_logins_from_the_refresh_broker() -> None:
    assert check_logins([]).verdict == "ok"
    assert check_logins([grant("scheduled")]).verdict == "ok"
    dead = check_logins([grant("needs-login", last_error="invalid_grant",
                               guidance="The provider no longer accepts this login's refresh token. Log in again: run `codex login`.")])
    assert dead.verdict == "warn" and "invalid_grant" in (dead.detail or "") and "`codex login`" in (dead.fix or "")
    assert check_logins([grant("retrying", last_error="timeout")]).verdict == "warn"


def test_takobot_error_records_are_read() -> None:
    from takod_daemon.doctor import takobot_error_record

    record = takobot_error_record([
        "2026-12-07T16:15:03.123456+00:00 provider=pi phase=stream",
        "command: pi --print 'the prompt head'",
        "detail: pi inference failed: exit=1",
        "stderr_tail:",
        "Error: Token refresh failed: 401",
        "invalid_grant",
        "",
    ])  # fmt: skip
    assert record is not None and (record.provider, record.kind) == ("pi", "auth")
    assert record.ts == 1796660103.123456 and "prompt head" not in record.error
    assert record.error == "pi inference failed: exit=1 Error: Token refresh failed: 401 invalid_grant"
    timeout = takobot_error_record(["2026-12-07T16:15:03+00:00 provider=pi phase=run", "detail: timed out", "timeout_s: 60.0"])
    assert timeout is not None and timeout.kind == "failed"
    assert takobot_error_record(["not a header"]) is None and takobot_error_record([]) is None
