"""Workspace trust with two real uids (tests/multiuser.py): an attacker plants a
workspace in a shared sticky directory; the victim's takod only reads and reports it.

Findings 1 and 2 of issue 13: the attacker's Node ran as the victim on ``status``,
and the attacker's pi ``auth.json`` replaced the victim's Codex login.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fakes.ollama_server import FakeOllama, fake_ollama  # noqa: F401 (fixture)
from tests.integration.test_readiness import codex_auth_doc, unsigned_jwt
from tests.multiuser import User, needs_two_users

pytestmark = needs_two_users

GARBAGE_REFRESH = "rt_GARBAGE"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory like /tmp: root's, 1777."""
    path = Path(tempfile.mkdtemp(prefix="takod-shared-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def own_tree(user: User, top: Path) -> None:
    """Everything under ``top`` (and ``top``) is ``user``'s."""
    for dirpath, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)
    os.lchown(top, user.uid, user.gid)


def recorder(path: Path, marks: Path, name: str, output: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nid -u >> '{marks / name}'\necho '{output}'\n")
    path.chmod(0o755)


def victim_env(victim: User, **extra: str) -> dict[str, str]:
    run = victim.home / "run"
    if not run.exists():  # a named socket's directory must exist: the client never makes one
        run.mkdir(mode=0o700)
        os.chown(run, victim.uid, victim.gid)
    return victim.env(
        TAKOD_SOCKET=str(run / "rpc.sock"),
        TAKOD_STATE_DIR=str(victim.home / "state"),
        **extra,
    )


def takod(victim: User, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return victim.run(victim.takod(*args), env=victim_env(victim, **env), cwd=cwd, timeout=90)


def plant(attacker: User, shared: Path, ollama_url: str) -> tuple[Path, Path]:
    """The attacker's workspace in ``shared``: a tako.toml, a Node and a pi that
    record who ran them, a readable pi auth.json with a forged newer Codex login
    and a key command, and settings naming the attacker's Ollama."""
    now = time.time()
    ws = shared / "project"
    marks = shared / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # anyone they run as can record it
    (ws / "sub").mkdir(parents=True)
    (ws / "tako.toml").write_text("")
    recorder(ws / ".tako/nvm/versions/node/v99.0.0/bin/node", marks, "node", "v99.0.0")
    recorder(ws / ".tako/pi/node/node_modules/.bin/pi", marks, "pi", "0.73.1")
    forged = unsigned_jwt(iat=int(now + 86400 * 365), exp=int(now + 86400 * 400),
                          **{"https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"}})
    auth = ws / ".tako/pi/agent/auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text(json.dumps({
        "openai-codex": {"type": "oauth", "access": forged, "refresh": GARBAGE_REFRESH,
                         "expires": int((now + 86400 * 400) * 1000), "accountId": "acct-1"},
        "anthropic": {"type": "api_key", "key": f"!id -u >> '{marks}/command'; echo sk-ant-x"},
    }))
    auth.chmod(0o644)
    settings = ws / ".tako/state/inference-settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"ollama_host": ollama_url, "ollama_model": "llama3.2:latest",
                                    "preferred_provider": "pi", "api_keys": {}}))
    for d in (ws, *[p for p in ws.rglob("*") if p.is_dir()]):
        d.chmod(0o755)
    own_tree(attacker, ws)
    own_tree(attacker, marks)
    return ws, marks


def give_codex_login(victim: User) -> bytes:
    codex = victim.home / ".codex" / "auth.json"
    codex.parent.mkdir(mode=0o700)
    codex.write_text(json.dumps(codex_auth_doc(time.time() + 86400, tag="victim")))
    codex.chmod(0o600)
    own_tree(victim, codex.parent)
    return codex.read_bytes()


def ran(marks: Path) -> list[str]:
    return sorted(p.name for p in marks.iterdir())


def test_a_planted_workspace_in_a_shared_tmp_never_acts_as_the_victim(
    two_users: tuple[User, User], shared_tmp: Path, fake_ollama: FakeOllama
) -> None:
    victim, attacker = two_users
    ws, marks = plant(attacker, shared_tmp, fake_ollama.url)
    codex_before = give_codex_login(victim)

    done = takod(victim, "status", "--json", cwd=ws / "sub")
    assert done.returncode == 0, done.stderr.decode()
    st: dict[str, Any] = json.loads(done.stdout)
    assert st["workspace"] == str(ws)  # found as git finds a repository, then judged
    assert {p["reason"] for p in st["providers"]} == {"untrusted-workspace"} and st["selected"] is None
    hint = st["providers"][0]["hint"]
    assert attacker.name in hint and "TAKO_WORKSPACE" in hint and "chown" not in hint

    text = takod(victim, "status", cwd=ws / "sub")
    assert b"untrusted-workspace" in text.stdout and attacker.name.encode() in text.stdout
    refused = takod(victim, "run", "hello", "--timeout", "10", cwd=ws / "sub")
    assert refused.returncode != 0 and b"untrusted_workspace" in refused.stdout + refused.stderr
    login = takod(victim, "login", "anthropic", cwd=ws / "sub")
    assert login.returncode != 0 and b"untrusted_workspace" in login.stdout + login.stderr

    # The attacker changes their files: file events are read, and still nothing runs.
    (ws / ".tako/pi/agent/auth.json").write_text((ws / ".tako/pi/agent/auth.json").read_text() + "\n")
    recorder(ws / ".tako/pi/node/node_modules/.bin/pi", marks, "pi", "0.73.2")
    own_tree(attacker, ws)
    assert takod(victim, "probe", "--json", cwd=ws / "sub").returncode == 0

    assert ran(marks) == []  # nothing ran, as anyone
    assert (victim.home / ".codex" / "auth.json").read_bytes() == codex_before
    assert fake_ollama.requests == []
    log = (victim.home / "state" / "daemon.log").read_text()
    assert "copied pi's newer" not in log and GARBAGE_REFRESH not in log
    takod(victim, "stop", cwd=victim.home)


def test_the_victims_own_workspace_with_the_same_files_works(
    two_users: tuple[User, User], shared_tmp: Path, fake_ollama: FakeOllama
) -> None:
    """The control: the same files, owned by the victim (umask 002 with a private
    group, as on Debian), are the victim's workspace and are followed."""
    victim, _attacker = two_users
    ws, marks = plant(victim, shared_tmp, fake_ollama.url)
    for d in (ws, *[p for p in ws.rglob("*") if p.is_dir()]):
        d.chmod(0o775)  # group-writable, by the victim's private group only
    give_codex_login(victim)
    done = takod(victim, "status", "--json", cwd=ws / "sub")
    assert done.returncode == 0, done.stderr.decode()
    st = json.loads(done.stdout)
    assert "untrusted-workspace" not in {p["reason"] for p in st["providers"]}
    assert fake_ollama.requests  # its settings are followed
    assert ran(marks) == []  # and reading still ran nothing
    takod(victim, "stop", cwd=victim.home)


def test_a_workspace_writable_by_a_shared_group_is_untrusted(
    two_users: tuple[User, User], shared_tmp: Path, fake_ollama: FakeOllama
) -> None:
    """The victim's workspace, group-writable by a group the attacker is in: the
    attacker made .tako in it. Untrusted, and the hint says it is the victim's to fix."""
    victim, attacker = two_users
    group = f"tkg{victim.name[3:]}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    try:
        for user in (victim, attacker):
            subprocess.run(["usermod", "-aG", group, user.name], check=True, capture_output=True)
        ws = victim.home / "ws"
        (ws / "sub").mkdir(parents=True)
        (ws / "tako.toml").write_text("")
        own_tree(victim, ws)
        shutil.chown(ws, group=group)
        ws.chmod(0o775)
        made = attacker.run(["mkdir", "-p", str(ws / ".tako/nvm/versions/node/v99.0.0/bin")])
        assert made.returncode != 0  # the victim's home is 0700: move the workspace out to share it
        victim.home.chmod(0o755)
        made = attacker.run(["mkdir", "-p", str(ws / ".tako/nvm/versions/node/v99.0.0/bin")])
        assert made.returncode == 0, made.stderr
        marks = shared_tmp / "marks"
        marks.mkdir()
        marks.chmod(0o777)
        node = ws / ".tako/nvm/versions/node/v99.0.0/bin/node"
        attacker.run(["sh", "-c", f"printf '#!/bin/sh\\nid -u >> {marks}/node\\n' > {node} && chmod 755 {node}"], check=True)

        done = takod(victim, "status", "--json", cwd=ws / "sub")
        assert done.returncode == 0, done.stderr.decode()
        pi = {p["name"]: p for p in json.loads(done.stdout)["providers"]}["pi"]
        assert pi["reason"] == "untrusted-workspace"
        assert f"is writable by group {group}" in pi["detail"]["untrusted"]
        assert pi["hint"] == f"make it private to you: chmod go-w '{ws}'"
        assert ran(marks) == []
        takod(victim, "stop", cwd=victim.home)
    finally:
        subprocess.run(["groupdel", group], capture_output=True)
