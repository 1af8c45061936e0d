"""Workspace trust end to end, one uid: a real daemon (run as root here) and
workspaces parts of which belong to another uid (chown), or are loose.

- Reading never executes: status, probe, file events and doctor run no program
  from a workspace, the user's own included; only an explicit act (infer) does.
- A workspace that is not the user's own is read and reported
  (``untrusted-workspace``), never run, written, followed or copied out of.

The same attacks with two real uids are in test_multiuser_trust.py.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from takod.client import RemoteError as RpcError
from tests.fakes.ollama_server import FakeOllama, fake_ollama  # noqa: F401 (fixture)
from tests.harness import DaemonProcess
from tests.integration.test_readiness import (
    assert_no_canaries,
    codex_auth_doc,
    providers,
    run_cli,
    start_daemon,
    status,
    stop_later,  # noqa: F401 (fixture)
    subscribe,
    next_event,
    takobot_dumps,
    unsigned_jwt,
    wait_status,
    write_json,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")

STRANGER = 4343  # a uid that is not the daemon's
SHARED_GID = 4344  # a group with no member: not the user's private group
PI_KEY = "sk-ant-api03-CANARYtrustworkspace0123456789abcdef"
GARBAGE_REFRESH = "rt_GARBAGE_CANARY_from_someone_else_0123456789"


def recorder(path: Path, marks: Path, name: str, output: str) -> Path:
    """An executable that records that it ran (in ``marks/name``), then prints ``output``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nid -u >> '{marks / name}'\necho '{output}'\n")
    path.chmod(0o755)
    return path


def plant_runtime(ws: Path, marks: Path) -> None:
    """A workspace Node (Takobot's nvm layout) and pi runtime that record every run.
    No package.json: only running them would tell their versions."""
    marks.mkdir(exist_ok=True)
    marks.chmod(0o777)  # whoever runs them can record it
    recorder(ws / ".tako/nvm/versions/node/v99.0.0/bin/node", marks, "node", "v99.0.0")
    recorder(ws / ".tako/pi/node/node_modules/.bin/pi", marks, "pi", "0.73.1")


def ran(marks: Path) -> list[str]:
    return sorted(p.name for p in marks.iterdir()) if marks.exists() else []


def make_workspace(home: Path) -> Path:
    ws = home / "ws"
    (ws / ".tako/pi/agent").mkdir(parents=True)
    (ws / "tako.toml").write_text("")
    return ws


def give_away(path: Path) -> None:
    """Make ``path`` and everything below it another uid's (what a second user would have made)."""
    for dirpath, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(dirpath, name), STRANGER, STRANGER)
    os.lchown(path, STRANGER, STRANGER)


def call(d: DaemonProcess, method: str, params: dict[str, Any] | None = None) -> Any:
    with d.client() as c:
        return c.call(method, params)


def refused(d: DaemonProcess, method: str, params: dict[str, Any]) -> str:
    with pytest.raises(RpcError) as caught:
        call(d, method, params)
    assert caught.value.code == "untrusted_workspace", caught.value
    return caught.value.message


# --- reading never executes ---------------------------------------------------------------


def test_status_probe_events_and_doctor_never_run_the_workspace_runtime(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    ws, marks = make_workspace(home), home / "marks"
    plant_runtime(ws, marks)
    write_json(ws / ".tako/pi/agent/auth.json", {"anthropic": {"type": "api_key", "key": PI_KEY}})
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)

    pi = providers(status(d))["pi"]
    assert pi["ready"], pi  # the user's own workspace: its runtime counts...
    assert (pi["detail"]["source"], pi["detail"]["node_version"]) == ("workspace", "99.0.0")  # ...from file names
    call(d, "providers.probe", {})
    events = subscribe(d, "status")
    try:
        write_json(ws / ".tako/pi/agent/auth.json", {})  # a file event: re-read, re-evaluated
        next_event(events, "status", lambda p: not providers(p)["pi"]["ready"])
        recorder(ws / ".tako/pi/node/node_modules/.bin/pi", marks, "pi", "0.73.2")  # the runtime itself changes
        write_json(ws / ".tako/pi/agent/auth.json", {"anthropic": {"type": "api_key", "key": PI_KEY}})
        next_event(events, "status", lambda p: providers(p)["pi"]["ready"])
    finally:
        events.close()
    call(d, "doctor", {})
    cli = run_cli(d, "status", "--json", cwd=ws)
    assert cli.returncode == 0, cli.stderr
    assert ran(marks) == []

    # Not a test that cannot fail: an explicit act runs that very runtime.
    try:
        call(d, "infer", {"prompt": "hi", "provider": "pi", "timeout": 20})
    except RpcError:
        pass  # the recorder is no real pi; that it ran is what counts
    assert "pi" in ran(marks)
    assert_no_canaries(d)


# --- a workspace that is not the user's own --------------------------------------------------


def untrusted_reasons(st: dict[str, Any]) -> set[str | None]:
    return {p["reason"] for p in st["providers"]}


def test_a_workspace_with_another_users_tako_dir_is_read_and_reported_only(
    home: Path, stop_later: list[DaemonProcess], fake_ollama: FakeOllama
) -> None:
    ws, marks = make_workspace(home), home / "marks"
    plant_runtime(ws, marks)
    # A key command pi would run, a host its prompts would go to, a key to copy.
    write_json(ws / ".tako/pi/agent/auth.json", {"anthropic": {"type": "api_key", "key": f"!id -u >> '{marks}/command'"}})
    settings = ws / ".tako/state/inference-settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_bytes(takobot_dumps({
        "api_keys": {"OPENAI_API_KEY": "sk-proj-CANARYforeignsettings0123456789"}, "ollama_host": fake_ollama.url,
        "ollama_model": "llama3.2:latest", "preferred_provider": "pi", "type1_model": "", "type2_model": "",
    }))
    give_away(ws / ".tako")
    before = {p: p.read_bytes() for p in (settings, ws / ".tako/pi/agent/auth.json")}
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)

    st = status(d)
    assert untrusted_reasons(st) == {"untrusted-workspace"} and st["selected"] is None
    pi = providers(st)["pi"]
    assert f"{ws / '.tako'} is owned by uid {STRANGER}" in pi["detail"]["untrusted"]
    assert "TAKO_WORKSPACE" in pi["hint"] and "chown" not in pi["hint"]
    call(d, "providers.probe", {})

    assert "run a prompt" in refused(d, "infer", {"prompt": "hi", "provider": "pi", "timeout": 10})
    refused(d, "infer", {"prompt": "hi"})
    refused(d, "settings.set", {"field": "preferred_provider", "value": "auto"})
    refused(d, "keys.migrate", {})
    refused(d, "login.start", {"provider": "anthropic"})
    doctor = call(d, "doctor", {"fix": True})
    trust_check = next(c for c in doctor["checks"] if c["id"] == "workspace-trust")
    assert trust_check["verdict"] == "fail" and "TAKO_WORKSPACE" in trust_check["fix"]
    assert not [c for c in doctor["checks"] if c["fixable"] and c["id"] in ("pi-runtime", "pi-auth", "provider:pi")]
    assert {f["id"] for f in doctor["fixes"]} <= {"probe"}  # nothing repaired in the workspace
    refused(d, "models.list", {"provider": "ollama"})
    # The user's own key store still works, but the workspace's pi file gets no entry for it.
    stored = call(d, "keys.set", {"name": "ANTHROPIC_API_KEY", "value": "sk-ant-api03-trustTESTkey0123456789abcdef"})
    assert stored["pi_entry"] is None
    assert call(d, "keys.clear", {"name": "ANTHROPIC_API_KEY"})["removed"]
    cli = run_cli(d, "status", cwd=ws)
    assert "untrusted-workspace" in cli.stdout + cli.stderr

    assert ran(marks) == []  # no runtime, no key command
    assert fake_ollama.requests == []  # its settings named a host: never called
    assert {p: p.read_bytes() for p in before} == before
    assert call(d, "keys.list", {})["keys"] == []  # its settings' key did not become the user's
    assert not (ws / ".tako/tmp").exists() and not (ws / ".tako/logs").exists()
    assert_no_canaries(d, st)


def test_the_same_workspace_of_ones_own_follows_its_settings(
    home: Path, stop_later: list[DaemonProcess], fake_ollama: FakeOllama
) -> None:
    """The control for the test above: the same settings, owned by the user, are followed."""
    ws = make_workspace(home)
    settings = ws / ".tako/state/inference-settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_bytes(takobot_dumps({"api_keys": {}, "ollama_host": fake_ollama.url, "ollama_model": "llama3.2:latest",
                                        "preferred_provider": "auto", "type1_model": "", "type2_model": ""}))
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)
    assert providers(status(d))["ollama"]["ready"]
    assert fake_ollama.requests


def test_no_credential_is_copied_out_of_an_untrusted_workspace(home: Path, stop_later: list[DaemonProcess]) -> None:
    """A plausible, newer openai-codex entry (same account, issued a minute ago) in a
    workspace pi file that is not the user's own never reaches ~/.codex/auth.json."""
    now = time.time()
    write_json(home / ".codex/auth.json", codex_auth_doc(now + 86400, tag="victim"))
    codex_before = (home / ".codex/auth.json").read_bytes()
    ws = make_workspace(home)
    forged = unsigned_jwt(iat=int(now - 60), exp=int(now + 864000),
                          **{"https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"}})
    pi_file = ws / ".tako/pi/agent/auth.json"
    write_json(pi_file, {"openai-codex": {"type": "oauth", "access": forged, "refresh": GARBAGE_REFRESH,
                                          "expires": int((now + 864000) * 1000), "accountId": "acct-1"}})
    pi_file.chmod(0o644)
    give_away(ws / ".tako")
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)
    assert untrusted_reasons(status(d)) == {"untrusted-workspace"}
    call(d, "auth.refresh", {})
    write_json(home / ".codex/auth.json", json.loads(codex_before))  # a Codex event: the link is looked at again
    status(d)
    assert (home / ".codex/auth.json").read_bytes() == codex_before
    assert GARBAGE_REFRESH not in d.log_text() and "copied pi's newer" not in d.log_text()
    grants = call(d, "auth.inventory", {})["grants"]
    assert not any(str(pi_file) in m for g in grants for m in g["mirrors"])  # never refreshed or written


def test_the_same_entry_in_ones_own_workspace_is_linked(home: Path, stop_later: list[DaemonProcess]) -> None:
    """The control: in the user's own workspace that entry is the newer login, and Codex gets it."""
    now = time.time()
    write_json(home / ".codex/auth.json", codex_auth_doc(now + 86400, tag="victim"))
    ws = make_workspace(home)
    newer = unsigned_jwt(iat=int(now - 60), exp=int(now + 864000),
                         **{"https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"}})
    write_json(ws / ".tako/pi/agent/auth.json", {"openai-codex": {
        "type": "oauth", "access": newer, "refresh": GARBAGE_REFRESH, "expires": int((now + 864000) * 1000),
        "accountId": "acct-1"}})
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)
    status(d)
    assert json.loads((home / ".codex/auth.json").read_text())["tokens"]["refresh_token"] == GARBAGE_REFRESH


def test_a_group_writable_workspace_of_a_shared_group_is_untrusted(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    ws = make_workspace(home)
    os.chown(ws, 0, SHARED_GID)
    ws.chmod(0o775)
    d = start_daemon(home, TAKO_WORKSPACE=str(ws))
    stop_later.append(d)
    pi = providers(status(d))["pi"]
    assert pi["reason"] == "untrusted-workspace"
    assert "is writable by group" in pi["detail"]["untrusted"]
    # Ours to fix: the hint says how, and once fixed the next file event sees it.
    assert pi["hint"] == f"make it private to you: chmod go-w '{ws}'"
    ws.chmod(0o755)
    (ws / ".tako/state").mkdir()
    write_json(ws / ".tako/state/inference-settings.json", {"preferred_provider": "auto"})
    wait_status(d, lambda st: "untrusted-workspace" not in untrusted_reasons(st))


def test_a_workspace_under_a_foreign_tako_toml_in_a_sticky_tmp(
    tmp_path: Path, home: Path, stop_later: list[DaemonProcess]
) -> None:
    """Another user's ``tako.toml`` in a 1777 directory (TMPDIR): a directory of
    the user's own below it is found as that workspace, which is reported untrusted."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "tako.toml").write_text("")
    os.chown(shared / "tako.toml", STRANGER, STRANGER)
    mine = shared / "my-project"
    mine.mkdir()
    d = start_daemon(home)
    stop_later.append(d)
    cli = run_cli(d, "status", "--json", cwd=mine, TMPDIR=str(shared))
    assert cli.returncode == 0, cli.stderr
    st = json.loads(cli.stdout)
    assert st["workspace"] == str(shared)
    assert untrusted_reasons(st) == {"untrusted-workspace"}
    assert "is writable by others" in providers(st)["pi"]["detail"]["untrusted"]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # nothing "fixed" there


def test_a_tmpdir_of_someone_else_is_replaced_by_a_private_one(
    tmp_path: Path, home: Path, stop_later: list[DaemonProcess]
) -> None:
    """The daemon's scratch files (prompts) and the CLIs' temp files never go to a
    TMPDIR another user owns: it could rename what takod makes there and read it."""
    theirs = tmp_path / "their-tmp"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, STRANGER, STRANGER)
    marks = home / "marks"
    marks.mkdir()
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pi").write_text(f"#!/bin/sh\necho \"$TMPDIR\" > '{marks / 'tmpdir'}'\n")
    (bin_dir / "pi").chmod(0o755)
    write_json(home / ".pi/agent/auth.json", {"anthropic": {"type": "api_key", "key": PI_KEY}})
    d = start_daemon(home, TMPDIR=str(theirs))
    stop_later.append(d)
    assert providers(status(d))["pi"]["ready"]
    try:
        call(d, "infer", {"prompt": "hi", "provider": "pi", "timeout": 20})
    except RpcError:
        pass  # no real pi
    used = (marks / "tmpdir").read_text().strip()
    assert used == str(d.state_dir / "tmp")
    assert list(theirs.iterdir()) == []
    assert "TMPDIR is not yours" in d.log_text()
