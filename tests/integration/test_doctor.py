"""``takod doctor`` against a real daemon in a temporary HOME: the report's
shape, repairs with --fix (a loose socket directory, the workspace pi runtime
installed offline from the local pi package), credentials shadowed by the
environment (named, never shown), and reauth guidance from the error log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from takod import RemoteError
from tests.fakes.model_servers import FakeAnthropic
from tests.fakes.oauth_server import make_jwt
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool

REPO = Path(__file__).resolve().parents[2]
PI_PACKAGE_DIR = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
STORED_CANARY = "sk-proj-CANARYstoredDOCTOR0123456789abcdef"
DAEMON_ENV_CANARY = "sk-proj-CANARYdaemonENV0123456789abcdef"
SHELL_CANARY = "sk-proj-CANARYshellENV0123456789abcdef"
PROXY_CANARY = "CANARYproxyPASSWORD42"
WRONG_KEY = "sk-ant-api03-CANARYwrongKEY0123456789abcdef"
RIGHT_KEY = "sk-ant-api03-CANARYrightKEY0123456789abcdef"
CANARIES = (STORED_CANARY, DAEMON_ENV_CANARY, SHELL_CANARY, PROXY_CANARY, WRONG_KEY, RIGHT_KEY)


@pytest.fixture
def start(home: Path, workspace: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(**extra: str) -> DaemonProcess:
        # Any --fix installs pi from the local package (a file: spec), npm offline: never the registry.
        offline = {"TAKOD_PI_PACKAGE": f"file:{PI_PACKAGE_DIR}", "npm_config_offline": "true"}
        env = clean_env(home, TAKO_WORKSPACE=str(workspace), PATH="/usr/bin:/bin", **{**offline, **extra})
        d = DaemonProcess(home, env).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
        text = d.log_text() + d.stderr_text()
        assert not [c for c in CANARIES if c in text]


def doctor_cli(d: DaemonProcess, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    """Run ``takod doctor --json ARGS`` as a user's shell would (never spawning a daemon)."""
    shell = {**d.env, "TAKOD_NO_SPAWN": "1", **env}
    proc = subprocess.run([sys.executable, "-m", "takod", "doctor", "--json", *args], env=shell,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout), proc.stdout + proc.stderr


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


def test_report_shape_and_exit_code(start: Any) -> None:
    d = start()
    code, report, _ = doctor_cli(d)
    assert set(report) == {"ok", "workspace", "daemon", "checks", "fixes", "counts"}
    assert report["daemon"] is True and report["fixes"] == []
    for check in report["checks"]:
        assert set(check) == {"id", "verdict", "summary", "detail", "fix", "fixable"}
        assert check["verdict"] in ("ok", "warn", "fail")
    checks = by_id(report)
    for cid in ("socket-dir", "socket", "state-dir", "keyring", "provider:pi", "providers", "node", "pi-runtime",
                "pi-auth", "codex-store", "env-shadowing", "proxy", "clock", "logins", "error-log"):
        assert cid in checks, cid
    # A fresh HOME: nothing is ready, which is a failure (exit 4, like `takod health`).
    assert checks["providers"]["verdict"] == "fail" and report["ok"] is False and code == 4
    assert sum(report["counts"].values()) == len(report["checks"])
    # The daemon's readiness is reported as is: the same reasons `status` gives.
    with d.client() as c:
        reasons = {p["name"]: p["reason"] for p in c.call("status")["providers"]}
    assert f": {reasons['ollama']}" in checks["provider:ollama"]["summary"]


def test_loose_socket_dir_is_reported_and_fixed(start: Any) -> None:
    d = start()
    d.socket.parent.chmod(0o755)
    code, report, _ = doctor_cli(d)
    check = by_id(report)["socket-dir"]
    assert check["verdict"] == "fail" and check["fixable"] and "0755" in check["summary"]
    code, report, _ = doctor_cli(d, "--fix")
    assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o700
    assert any(f["id"] == "socket-dir" and f["ok"] for f in report["fixes"])
    assert by_id(report)["socket-dir"]["verdict"] == "ok"


def test_env_shadowing_and_proxies_are_named_never_shown(start: Any) -> None:
    d = start(OPENAI_API_KEY=DAEMON_ENV_CANARY, HTTPS_PROXY=f"http://user:{PROXY_CANARY}@proxy.invalid:3128",
              NO_PROXY="127.0.0.1,localhost")
    with d.client() as c:
        c.call("keys.set", {"name": "OPENAI_API_KEY", "value": STORED_CANARY})
    code, report, output = doctor_cli(d, OPENAI_API_KEY=SHELL_CANARY)
    shadow = by_id(report)["env-shadowing"]
    assert shadow["verdict"] == "warn"
    assert "OPENAI_API_KEY in your shell overrides" in shadow["detail"]
    assert "OPENAI_API_KEY in the daemon's environment is ignored" in shadow["detail"]
    proxy = by_id(report)["proxy"]
    assert "http://***@proxy.invalid:3128" in (proxy["summary"] + (proxy["detail"] or ""))
    assert not [c for c in CANARIES if c in output]


def test_error_log_login_failure_gives_reauth_guidance(start: Any, workspace: Path) -> None:
    with FakeAnthropic(api_key=RIGHT_KEY) as anthropic:
        d = start(ANTHROPIC_BASE_URL=anthropic.url)
        with d.client() as c, pytest.raises(RemoteError):
            c.call("infer", {"prompt": "hi", "provider": "anthropic", "env": {"ANTHROPIC_API_KEY": WRONG_KEY}})
    log = (workspace / ".tako" / "logs" / "error.log").read_text()
    assert '"kind":"auth"' in log and WRONG_KEY not in log
    code, report, output = doctor_cli(d)
    check = by_id(report)["error-log"]
    assert check["verdict"] == "warn" and "anthropic" in check["summary"]
    assert "`takod key set ANTHROPIC_API_KEY`" in check["fix"]
    assert WRONG_KEY not in output


def test_fix_installs_the_workspace_pi_runtime_offline(start: Any, workspace: Path) -> None:
    require_tool(TOOLS_BIN / "pi", "pi")  # start() points TAKOD_PI_PACKAGE at its package
    d = start()
    code, report, _ = doctor_cli(d)
    before = by_id(report)
    assert before["pi-runtime"]["verdict"] == "warn" and before["pi-runtime"]["fixable"]
    assert before["provider:pi"]["summary"] == "pi is not ready: not-installed"
    assert before["pi-auth"]["fixable"]

    shell = {**d.env, "TAKOD_NO_SPAWN": "1"}
    proc = subprocess.run([sys.executable, "-m", "takod", "doctor", "--fix"], env=shell,
                          capture_output=True, text=True, timeout=300)
    assert "npm install" in proc.stderr and "installed pi 0.73.1" in proc.stderr  # progress, as it happened
    assert "fixed pi-runtime" in proc.stdout and "fixed pi-auth" in proc.stdout

    binary = workspace / ".tako" / "pi" / "node" / "node_modules" / ".bin" / "pi"
    assert os.access(binary, os.X_OK)
    auth = workspace / ".tako" / "pi" / "agent" / "auth.json"
    assert auth.read_text() == "{}" and stat.S_IMODE(auth.stat().st_mode) == 0o600
    with d.client() as c:
        pi = next(p for p in c.call("status")["providers"] if p["name"] == "pi")
    assert pi["reason"] == "no-credentials" and pi["detail"]["source"] == "workspace"
    code, report, _ = doctor_cli(d)
    assert by_id(report)["pi-runtime"]["verdict"] == "ok"


def test_daemon_down_local_checks_and_mode_fix(home: Path) -> None:
    env = {**clean_env(home), "TAKOD_NO_SPAWN": "1"}
    run_dir = Path(env["TAKOD_SOCKET"]).parent
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)  # a daemon refuses to start here

    def doctor(*args: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-m", "takod", "doctor", "--json", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        return proc.returncode, json.loads(proc.stdout)

    code, report = doctor()
    assert code == 3 and report["daemon"] is False and report["ok"] is False
    checks = by_id(report)
    assert report["checks"][0]["id"] == "daemon" and checks["daemon"]["verdict"] == "fail"
    assert checks["socket-dir"]["verdict"] == "fail" and checks["socket-dir"]["fixable"]
    code, report = doctor("--fix")
    assert report["fixes"] == [{"id": "socket-dir", "ok": True, "message": f"chmod 0700 {run_dir}"}]
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700 and by_id(report)["socket-dir"]["verdict"] == "ok"


def test_codex_store_and_clock_skew_from_a_real_login_file(start: Any, home: Path) -> None:
    now = time.time()
    access = make_jwt({"iat": int(now + 7200), "exp": int(now + 90000),
                       "https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"}})
    codex = home / ".codex"
    codex.mkdir()
    (codex / "config.toml").write_text('cli_auth_credentials_store = "auto"\n')
    refresh = "rt-CANARYdoctorCLOCK0123456789abcdef"
    (codex / "auth.json").write_text(json.dumps({
        "auth_mode": "chatgpt", "OPENAI_API_KEY": None, "last_refresh": "2026-01-01T00:00:00.000000Z",
        "tokens": {"id_token": make_jwt({"iat": int(now)}), "access_token": access, "refresh_token": refresh,
                   "account_id": "acct-1"},
    }))
    d = start()
    code, report, output = doctor_cli(d)
    checks = by_id(report)
    assert checks["codex-store"]["verdict"] == "ok" and "auto" in checks["codex-store"]["summary"]
    clock = checks["clock"]
    assert clock["verdict"] == "warn" and "min behind" in clock["summary"]
    assert str(codex / "auth.json") in clock["detail"]
    assert access not in output and refresh not in output
