"""A real daemon never writes where a planted link points, and copies only
plausible tokens of the same account between Codex and pi (issue 13, findings
2 and 3; docs/security.md "Writes" and "linked grants").

Each test loads a workspace through ``status`` (loading seeds the workspace pi
file and links the Codex login into it before it answers), then checks every
file the attack aimed at, byte for byte, and greps for the canary tokens.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from takod.client import RemoteError
from tests.harness import DaemonProcess
from tests.multiuser import needs_two_users

ACCOUNT = "acct-write-targets-1"
CODEX_REFRESH = "rt_CANARY_codex_refresh_9f8e7d6c5b4a"
PI_HOME_KEY = "sk-ant-CANARY-home-pi-0a1b2c3d"
AUTH_CLAIM = "https://api.openai.com/auth"
PACKAGE = json.dumps({"name": "cloned-repo", "version": "1.0.0", "private": False}, indent=2) + "\n"


def jwt(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def access(iat: float, account: str = ACCOUNT) -> str:
    return jwt(iat=int(iat), exp=int(iat) + 864000, **{AUTH_CLAIM: {"chatgpt_account_id": account}})


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def codex_login(home: Path) -> Path:
    """The user's own Codex login: an hour old, refresh token = the canary."""
    doc = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "last_refresh": "2026-01-01T00:00:00Z",
           "tokens": {"id_token": jwt(email="me@example.com", **{AUTH_CLAIM: {"chatgpt_account_id": ACCOUNT}}),
                      "access_token": access(time.time() - 3600), "refresh_token": CODEX_REFRESH,
                      "account_id": ACCOUNT}}
    return write(home / ".codex" / "auth.json", json.dumps(doc, indent=2))


def home_pi(home: Path) -> Path:
    return write(home / ".pi" / "agent" / "auth.json", json.dumps({"anthropic": {"type": "api_key", "key": PI_HOME_KEY}}))


def ws_auth(ws: Path) -> Path:
    return ws / ".tako" / "pi" / "agent" / "auth.json"


def load(daemon: DaemonProcess, ws: Path) -> dict[str, Any]:
    with daemon.client() as c:
        return c.call("status", {"workspace": str(ws)})


def test_a_link_to_package_json_never_receives_tokens(home: Path, workspace: Path) -> None:
    codex_login(home)
    package = write(workspace / "package.json", PACKAGE, 0o644)
    ws_auth(workspace).parent.mkdir(parents=True)
    ws_auth(workspace).symlink_to("../../../package.json")
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        assert package.read_text() == PACKAGE
        assert stat.S_IMODE(package.stat().st_mode) == 0o644
        assert ws_auth(workspace).is_symlink()
        log = daemon.log_text()
        assert "unsafe_link" in log or "remove the link" in log
        assert CODEX_REFRESH not in log
    finally:
        daemon.stop()


def test_a_dangling_link_never_gets_a_copy_of_the_home_pi_file(home: Path, workspace: Path) -> None:
    home_pi(home)
    ws_auth(workspace).parent.mkdir(parents=True)
    ws_auth(workspace).symlink_to("../../../leaked-auth.json")
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        assert not (workspace / "leaked-auth.json").exists()
        assert ws_auth(workspace).is_symlink()
        found = [p for p in workspace.rglob("*") if p.is_file() and PI_HOME_KEY in p.read_text(errors="replace")]
        assert found == []
    finally:
        daemon.stop()


def test_a_link_to_your_own_private_pi_file_keeps_sharing_one_login(home: Path, workspace: Path) -> None:
    codex_login(home)
    shared = home_pi(home)
    ws_auth(workspace).parent.mkdir(parents=True)
    ws_auth(workspace).symlink_to(shared)
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        doc = json.loads(shared.read_text())
        assert doc["openai-codex"]["refresh"] == CODEX_REFRESH  # the link's target was written
        assert doc["anthropic"]["key"] == PI_HOME_KEY
        assert ws_auth(workspace).is_symlink() and os.readlink(ws_auth(workspace)) == str(shared)
        assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    finally:
        daemon.stop()


@pytest.mark.parametrize("how", ["symlink", "hard_link"])
def test_the_daemon_log_is_never_written_through_a_link(home: Path, how: str) -> None:
    outside = write(home / "notes.txt", "my notes\n", 0o644)
    state = home / "state"
    state.mkdir(mode=0o700)
    if how == "symlink":
        (state / "daemon.log").symlink_to(outside)
    else:
        os.link(outside, state / "daemon.log")
    daemon = DaemonProcess(home)
    try:
        with pytest.raises(RuntimeError) as caught:
            daemon.start()
    finally:
        daemon.stop()  # only if the test fails: the daemon started
    assert "daemon.log" in str(caught.value) and "remove" in str(caught.value)
    assert outside.read_text() == "my notes\n"


def pi_codex_entry(access_token: str, refresh: str) -> str:
    return json.dumps({"openai-codex": {"type": "oauth", "access": access_token, "refresh": refresh,
                                        "expires": int(time.time() * 1000) + 3_600_000, "accountId": ACCOUNT}})


@pytest.mark.parametrize("forged", ["future_iat", "other_account"])
def test_a_forged_newer_pi_token_never_replaces_the_codex_login(home: Path, workspace: Path, forged: str) -> None:
    codex = codex_login(home)
    before = codex.read_bytes()
    token = access(time.time() + 365 * 86400) if forged == "future_iat" else access(time.time() - 60, "acct-attacker")
    write(ws_auth(workspace), pi_codex_entry(token, "rt_GARBAGE"))
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        assert codex.read_bytes() == before
        assert "rt_GARBAGE" not in codex.read_text()
        log = daemon.log_text()
        assert "not linking the Codex and pi logins" in log
        assert "rt_GARBAGE" not in log and CODEX_REFRESH not in log
    finally:
        daemon.stop()


def test_a_plausible_newer_pi_token_of_the_same_account_is_linked(home: Path, workspace: Path) -> None:
    # The control for the test above: the same path does copy a real newer login.
    codex = codex_login(home)
    write(ws_auth(workspace), pi_codex_entry(access(time.time() - 60), "rt_newer_from_pi"))
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        assert json.loads(codex.read_text())["tokens"]["refresh_token"] == "rt_newer_from_pi"
    finally:
        daemon.stop()


@needs_two_users
def test_another_users_pi_file_never_replaces_the_codex_login(home: Path, make_user) -> None:
    attacker = make_user()
    shared = Path(tempfile.mkdtemp(prefix="takod-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)  # like /tmp
        ws = shared / "project"
        # The attacker plants a workspace with a plausible, same-account "newer" login.
        script = (
            "import os, sys, pathlib; ws = pathlib.Path(sys.argv[1]); (ws / '.tako/pi/agent').mkdir(parents=True);"
            "(ws / 'tako.toml').write_text('');"
            "p = ws / '.tako/pi/agent/auth.json'; p.write_text(sys.argv[2]); p.chmod(0o644)"
        )
        done = attacker.run([str(attacker.python), "-c", script, str(ws),
                             pi_codex_entry(access(time.time() - 60), "rt_GARBAGE")])
        assert done.returncode == 0, done.stderr.decode()
        assert ws_auth(ws).stat().st_uid == attacker.uid
        codex = codex_login(home)
        before = codex.read_bytes()
        daemon = DaemonProcess(home).start()
        try:
            load(daemon, ws)
            assert codex.read_bytes() == before
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("how", ["symlink", "hard_link"])
def test_an_autostarting_client_never_writes_the_daemons_stderr_through_a_link(home: Path, how: str) -> None:
    from tests.harness import clean_env
    from tests.procfs import daemons_for

    outside = write(home / "notes.txt", "my notes\n", 0o644)
    env = clean_env(home)
    Path(env["TAKOD_SOCKET"]).parent.mkdir(mode=0o700)  # a named socket's directory must exist to autostart
    state = Path(env["TAKOD_STATE_DIR"])
    state.mkdir(mode=0o700)
    if how == "symlink":
        (state / "daemon.stderr").symlink_to(outside)
    else:
        os.link(outside, state / "daemon.stderr")
    client = ("from takod import Client, DaemonStartError\n"
              "try:\n    Client(spawn=True, timeout=30).call('ping')\n"
              "except DaemonStartError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", client], env=env, capture_output=True, text=True, timeout=60)
    started = daemons_for(Path(env["TAKOD_SOCKET"]))
    for pid in started:  # only if the test fails: stop what it started
        os.kill(pid, signal.SIGTERM)
    assert "daemon.stderr" in done.stdout and "remove it" in done.stdout, done.stdout + done.stderr
    assert started == []
    assert outside.read_text() == "my notes\n" and stat.S_IMODE(outside.stat().st_mode) == 0o644


def test_an_oauth_login_is_refused_before_it_starts_when_its_file_is_a_planted_link(home: Path, workspace: Path) -> None:
    ws_auth(workspace).parent.mkdir(parents=True)
    ws_auth(workspace).symlink_to("../../../package.json")
    write(workspace / "package.json", PACKAGE, 0o644)
    daemon = DaemonProcess(home).start()
    try:
        with daemon.client() as c:
            with pytest.raises(RemoteError) as caught:
                c.call("login.start", {"provider": "codex", "workspace": str(workspace)})
            assert caught.value.code == "unsafe_link" and "remove the link" in str(caught.value)
            assert c.call("login.status")["logins"] == []  # nothing was started
        assert (workspace / "package.json").read_text() == PACKAGE
    finally:
        daemon.stop()


def test_a_symlinked_directory_in_the_workspace_never_places_new_credential_files(home: Path, workspace: Path) -> None:
    codex_login(home)
    home_pi(home)
    (workspace / ".tako" / "pi").mkdir(parents=True)
    (workspace / ".tako" / "pi" / "agent").symlink_to("../..")  # auth.json would land in the repository root
    (workspace / "docs").mkdir()
    (workspace / ".tako" / "state").symlink_to("../docs")
    daemon = DaemonProcess(home).start()
    try:
        load(daemon, workspace)
        assert not (workspace / "auth.json").exists()
        with daemon.client() as c:
            with pytest.raises(RemoteError) as caught:
                c.call("settings.set", {"field": "ollama_model", "value": "llama3", "workspace": str(workspace)})
            assert "symlink" in str(caught.value) and "remove the link" in str(caught.value)
            with pytest.raises(RemoteError) as caught:
                c.call("login.start", {"provider": "anthropic", "workspace": str(workspace)})
            assert caught.value.code == "unsafe_link"
        assert list((workspace / "docs").iterdir()) == []
        leaked = [p for p in workspace.rglob("*") if p.is_file() and CODEX_REFRESH in p.read_text(errors="replace")]
        assert leaked == []
    finally:
        daemon.stop()


def test_keys_never_go_through_a_link_in_the_state_dir(home: Path) -> None:
    outside = write(home / "elsewhere" / "keys.json", '{"keys": {}}\n')  # private and ours: still never followed
    state = home / "state"
    state.mkdir(mode=0o700)
    (state / "keys.json").symlink_to(outside)
    daemon = DaemonProcess(home).start()
    try:
        with daemon.client() as c:
            with pytest.raises(RemoteError) as caught:
                c.call("keys.set", {"name": "ANTHROPIC_API_KEY", "value": "sk-ant-CANARY-state-link-77"})
            assert caught.value.code == "keystore_io" and "remove the link" in str(caught.value)
        assert outside.read_text() == '{"keys": {}}\n'
        assert "sk-ant-CANARY-state-link-77" not in daemon.log_text()
    finally:
        daemon.stop()


def test_a_symlinked_refresh_journal_never_receives_rotated_tokens(home: Path) -> None:
    from tests.integration.test_refresh_broker import ANTHROPIC_CANARY, ObservedOAuthServer, World, pi_dumps, pi_entry, read_json, run_cli, write_in_place

    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    (home / "state").mkdir(mode=0o700)
    (home / "state" / "refresh-journal").symlink_to(elsewhere)
    with ObservedOAuthServer() as server:
        world = World(home, server)
        try:
            grant = server.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=8 * 3600)
            write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(grant)}))
            d = world.start()
            out = run_cli(d, "auth", "refresh", "claude", "--json")
            assert out.returncode == 0, out.stderr
            # The refresh still lands in pi's file (the journal is a safety net, not a gate) ...
            assert read_json(world.ws_pi)["anthropic"]["refresh"] == server.current_refresh("g")
            # ... and nothing went where the planted link points.
            assert list(elsewhere.iterdir()) == []
            assert "could not journal a refreshed token" in d.log_text()
        finally:
            world.close()


def test_a_file_where_the_tako_directory_should_be_is_a_warning_not_a_failure(home: Path, workspace: Path) -> None:
    home_pi(home)
    (workspace / ".tako").write_text("not a directory\n")
    daemon = DaemonProcess(home).start()
    try:
        status = load(daemon, workspace)
        assert status["workspace"] == str(workspace)
        assert (workspace / ".tako").read_text() == "not a directory\n"
        assert "Traceback" not in daemon.log_text()
    finally:
        daemon.stop()
