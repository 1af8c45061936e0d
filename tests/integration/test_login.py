"""Assisted login end to end: a real daemon, loopback token servers, the test as the browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from takod.client import Client
from tests.fakes.login_server import FakeLoginServer
from tests.integration.test_refresh_broker import PiLockHolder
from tests.harness import DaemonProcess, clean_env, takod_interruptible, wait_for

UNKNOWN = {"custom-provider": {"type": "api_key", "key": "keep-me", "x": [1, 2]}, "zz-extra": {"note": "kept"}}


@pytest.fixture
def login_server() -> Iterator[FakeLoginServer]:
    with FakeLoginServer() as server:
        yield server


@pytest.fixture
def login_daemon(home: Path, login_server: FakeLoginServer) -> Iterator[DaemonProcess]:
    auth = home / ".tako" / "pi" / "agent" / "auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text(json.dumps(UNKNOWN))
    proc = DaemonProcess(home, clean_env(home, **login_server.env())).start()
    try:
        yield proc
    finally:
        proc.stop()


def _events(c: Client, login_id: str, until: set[str]) -> list[dict[str, Any]]:
    """This login's events up to and including the first whose kind is in ``until``."""
    got: list[dict[str, Any]] = []
    for method, params in c.notifications(timeout=30):
        if method == "takod.event" and params[2] == "login" and params[3]["login_id"] == login_id:
            got.append(params[3])
            if params[3]["kind"] in until:
                return got
    raise AssertionError(f"no {until} event; got {got}")


def _start(c: Client, provider: str) -> str:
    c.call("subscribe", {"topics": ["login"]})
    return c.call("login.start", {"provider": provider})["login_id"]


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _port_free(port: int) -> bool:
    """Nobody listens on ``port`` any more (connections in TIME_WAIT do not count,
    as for any server that binds with SO_REUSEADDR, pi's included)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _auth(home: Path) -> dict[str, Any]:
    return json.loads((home / ".tako" / "pi" / "agent" / "auth.json").read_text())


def _assert_codex_entry(home: Path, server: FakeLoginServer) -> dict[str, Any]:
    doc = _auth(home)
    entry = doc["openai-codex"]
    assert set(entry) == {"type", "access", "refresh", "expires", "accountId"}
    assert entry["type"] == "oauth" and entry["access"] == server.issued["openai"]
    assert entry["accountId"] == server.account and isinstance(entry["expires"], int)
    for key, value in UNKNOWN.items():
        assert doc[key] == value
    mode = stat.S_IMODE((home / ".tako" / "pi" / "agent" / "auth.json").stat().st_mode)
    assert mode == 0o600
    return entry


def _assert_no_secrets(text: str, *secrets: str) -> None:
    assert "login started" in text  # the text holds the login's log lines: the check below means something
    for secret in secrets:
        assert secret not in text


def test_codex_login_through_the_callback(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    with login_daemon.client() as c:
        login_id = _start(c, "codex")
        [prompt] = _events(c, login_id, {"open_url"})
        url = urlsplit(prompt["url"])
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert prompt["url"].startswith(login_server.env()["TAKOD_OPENAI_AUTH_URL"] + "?")
        assert list(q) == ["response_type", "client_id", "redirect_uri", "scope", "code_challenge",
                           "code_challenge_method", "state", "id_token_add_organizations",
                           "codex_cli_simplified_flow", "originator"]
        assert q["client_id"] == "app_EMoamEEZ73f0CkXaXp7hrann" and q["originator"] == "pi"
        assert q["redirect_uri"] == "http://localhost:1455/auth/callback"
        assert q["scope"] == "openid profile email offline_access" and q["code_challenge_method"] == "S256"
        code = login_server.issue_code(q["code_challenge"])
        # A callback with the wrong state is refused and does not end the login.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:1455/auth/callback?code={code}&state=forged", timeout=10)
        with urllib.request.urlopen(f"http://127.0.0.1:1455/auth/callback?code={code}&state={q['state']}", timeout=10) as r:
            assert r.status == 200
        done = _events(c, login_id, {"done", "failed"})[-1]
        assert done["kind"] == "done", done
        [req] = login_server.requests
        assert req["order"] == ["grant_type", "client_id", "code", "code_verifier", "redirect_uri"]
        assert req["fields"]["code"] == code and _challenge(req["fields"]["code_verifier"]) == q["code_challenge"]
        entry = _assert_codex_entry(home, login_server)
        assert c.call("login.status", {"login_id": login_id})["logins"][0]["state"] == "done"
        assert wait_for(lambda: _port_free(1455))
        # The daemon sees the new login (file watcher / rescan).
        assert wait_for(lambda: [g for g in c.call("auth.inventory")["grants"] if g.get("provider") == "openai-codex"])
        assert wait_for(lambda: [cred for cred in c.call("auth.inventory")["credentials"]
                                 if cred["provider"] == "pi" and cred["backend"] == "openai-codex" and not cred["expired"]])
    _assert_no_secrets(login_daemon.log_text(), entry["access"], entry["refresh"], code, req["fields"]["code_verifier"])


def test_codex_paste_waits_for_pis_lock(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    """pi holds its lock (pi's own proper-lockfile): the write waits for it, then lands."""
    with login_daemon.client() as c:
        login_id = _start(c, "openai-codex")
        [prompt] = _events(c, login_id, {"open_url"})
        q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
        code = login_server.issue_code(q["code_challenge"])
        holder = PiLockHolder(home / ".tako" / "pi" / "agent" / "auth.json")
        try:
            pasted = f"http://localhost:1455/auth/callback?code={code}&state={q['state']}"
            assert c.call("login.answer", {"login_id": login_id, "text": pasted})["accepted"] is True
            wait_for(lambda: login_server.requests)
            time.sleep(0.5)  # room for a write that ignored the lock to land (and fail the test)
            assert "openai-codex" not in _auth(home)
            assert c.call("login.status", {"login_id": login_id})["logins"][0]["state"] == "running"
            holder.release()  # not found compromised: takod waited instead of breaking it
        finally:
            holder.kill()
        done = _events(c, login_id, {"done", "failed"})[-1]
        assert done["kind"] == "done", done
        entry = _assert_codex_entry(home, login_server)
    _assert_no_secrets(login_daemon.log_text(), entry["access"], entry["refresh"], code)


def test_codex_paste_of_another_attempt_is_refused(login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    with login_daemon.client() as c:
        login_id = _start(c, "codex")
        _events(c, login_id, {"open_url"})
        c.call("login.answer", {"text": "somecode#wrongstate"})
        failed = _events(c, login_id, {"done", "failed"})[-1]
        assert failed["kind"] == "failed" and failed["error"] == "state_mismatch"
        assert not login_server.requests
    assert wait_for(lambda: _port_free(1455))


def test_cancel_and_timeout_end_the_login_and_free_the_port(login_daemon: DaemonProcess) -> None:
    with login_daemon.client() as c:
        login_id = _start(c, "codex")
        _events(c, login_id, {"open_url"})
        assert c.call("login.cancel", {"login_id": login_id})["cancelled"] is True
        failed = _events(c, login_id, {"failed"})[-1]
        assert failed["error"] == "cancelled"
        assert wait_for(lambda: _port_free(1455))
        assert c.call("login.answer", {"login_id": login_id, "text": "x"})["accepted"] is False
        short = c.call("login.start", {"provider": "codex", "timeout": 0.5})["login_id"]
        assert _events(c, short, {"failed"})[-1]["error"] == "timeout"
        assert wait_for(lambda: _port_free(1455))
        states = {i["login_id"]: i["state"] for i in c.call("login.status")["logins"]}
        assert states == {login_id: "cancelled", short: "failed"}


def test_anthropic_paste_code_and_state(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    with login_daemon.client() as c:
        login_id = _start(c, "anthropic")
        [prompt] = _events(c, login_id, {"open_url"})
        q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
        assert q["code"] == "true" and q["client_id"] == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
        assert q["redirect_uri"] == "http://localhost:53692/callback"
        assert q["code_challenge"] == _challenge(q["state"])  # pi: the verifier is the state
        code = login_server.issue_code(q["code_challenge"])
        c.call("login.answer", {"login_id": login_id, "text": f"{code}#{q['state']}"})
        assert _events(c, login_id, {"done", "failed"})[-1]["kind"] == "done"
        [req] = login_server.requests
        assert req["fields"] == {"grant_type": "authorization_code", "client_id": q["client_id"], "code": code,
                                 "state": q["state"], "redirect_uri": q["redirect_uri"], "code_verifier": q["state"]}
        doc = _auth(home)
        assert set(doc["anthropic"]) == {"type", "access", "refresh", "expires"}
        assert doc["anthropic"]["access"] == login_server.issued["anthropic"]
        assert doc["custom-provider"] == UNKNOWN["custom-provider"]
    _assert_no_secrets(login_daemon.log_text(), doc["anthropic"]["access"], doc["anthropic"]["refresh"], code)


def test_unparseable_auth_file_is_never_overwritten(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    auth = home / ".tako" / "pi" / "agent" / "auth.json"
    auth.write_text('{"half": ')
    with login_daemon.client() as c:
        login_id = _start(c, "anthropic")
        [prompt] = _events(c, login_id, {"open_url"})
        q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
        c.call("login.answer", {"text": login_server.issue_code(q["code_challenge"])})
        failed = _events(c, login_id, {"done", "failed"})[-1]
        assert failed["error"] == "auth_file_unreadable"
    assert auth.read_text() == '{"half": '


def test_api_key_login_via_cli_goes_to_the_key_store(home: Path, login_daemon: DaemonProcess) -> None:
    canary = "sk-canary-" + os.urandom(8).hex()
    cmd = [sys.executable, "-m", "takod", "login", "openai", "--json"]
    result = subprocess.run(cmd, env=login_daemon.env, cwd=home, input=canary + "\n", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["kind"] for e in lines] == ["secret", "done"]
    with login_daemon.client() as c:
        assert [k["name"] for k in c.call("keys.list")["keys"]] == ["OPENAI_API_KEY"]
    _assert_no_secrets(result.stdout + result.stderr + login_daemon.log_text(), canary)


def test_cli_usage_errors(home: Path, login_daemon: DaemonProcess) -> None:
    run = lambda *a: subprocess.run([sys.executable, "-m", "takod", *a], env=login_daemon.env, cwd=home,
                                    capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    bad = run("login", "nope", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["code"] == "unknown_provider"
    none = run("login", "answer", "x")
    assert none.returncode == 2 and "no_login" in none.stderr


def test_copilot_device_flow(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    with login_daemon.client() as c:
        login_id = _start(c, "copilot")
        [prompt] = _events(c, login_id, {"device_code"})
        assert prompt["code"] == login_server.user_code and prompt["url"] == "https://github.com/login/device"
        wait_for(lambda: sum(r["endpoint"].endswith("access_token") for r in login_server.requests) >= 2, timeout=20)
        login_server.approved.set()  # the user typed the code in
        assert _events(c, login_id, {"done", "failed"})[-1]["kind"] == "done"
        polls = [r for r in login_server.requests if r["endpoint"].endswith("access_token")]
        assert polls[0]["fields"]["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"
        copilot = [r for r in login_server.requests if r["endpoint"] == "copilot"]
        assert copilot[-1]["editor"] == "vscode/1.107.0"
        entry = _auth(home)["github-copilot"]
        assert entry == {"type": "oauth", "access": login_server.issued["copilot"], "refresh": login_server.github_token,
                         "expires": 2_000_000_000_000 - 300_000}
    _assert_no_secrets(login_daemon.log_text(), login_server.github_token, entry["access"])


def test_cli_login_answered_from_another_terminal(home: Path, login_daemon: DaemonProcess, login_server: FakeLoginServer) -> None:
    takod = [sys.executable, "-m", "takod"]
    login = subprocess.Popen([*takod, "login", "codex", "--json"], env=login_daemon.env, cwd=home,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert login.stdout is not None
        prompt = json.loads(login.stdout.readline())
        assert prompt["kind"] == "open_url"
        q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
        code = login_server.issue_code(q["code_challenge"])
        answer = subprocess.run([*takod, "login", "answer", f"{code}#{q['state']}", "--id", prompt["login_id"], "--json"],
                                env=login_daemon.env, cwd=home, capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"login_id": prompt["login_id"], "accepted": True}
        rest, err = login.communicate(timeout=60)
    finally:
        login.kill()
    assert login.returncode == 0, err
    assert json.loads(rest.splitlines()[-1])["kind"] == "done"
    entry = _auth(home)["openai-codex"]
    _assert_no_secrets(rest + err + answer.stdout + login_daemon.log_text(), entry["access"], entry["refresh"], code)


def test_cli_ctrl_c_cancels_the_login(home: Path, login_daemon: DaemonProcess) -> None:
    login = subprocess.Popen(takod_interruptible("login", "codex", "--json"), env=login_daemon.env,
                             cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert login.stdout is not None
        login_id = json.loads(login.stdout.readline())["login_id"]
        login.send_signal(signal.SIGINT)
        login.communicate(timeout=60)
    finally:
        login.kill()
    assert login.returncode == 130
    with login_daemon.client() as c:
        assert wait_for(lambda: c.call("login.status", {"login_id": login_id})["logins"][0]["state"] == "cancelled")
    assert wait_for(lambda: _port_free(1455))


def test_codex_with_the_callback_port_busy_is_paste_only(home: Path, login_daemon: DaemonProcess,
                                                         login_server: FakeLoginServer) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier tests' TIME_WAIT
        squatter.bind(("127.0.0.1", 1455))
        squatter.listen()
        with login_daemon.client() as c:
            login_id = _start(c, "codex")
            [prompt] = _events(c, login_id, {"open_url"})
            assert "1455 is busy" in prompt["message"]
            q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
            c.call("login.answer", {"text": login_server.issue_code(q["code_challenge"])})  # a bare code, as pi accepts
            assert _events(c, login_id, {"done", "failed"})[-1]["kind"] == "done"
    _assert_codex_entry(home, login_server)
