"""Readiness end to end: a real daemon in a temporary HOME, the real CLIs from
npm on its PATH, credential files written the way Codex, Claude Code, Gemini
CLI and pi write them, and a loopback Ollama. ``status`` must say who can
answer a prompt and why the others cannot; no secret may show anywhere.

The helpers at the top are shared with test_state_watch.py and
test_keys_settings.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from takod import Client
from tests.fakes.ollama_server import FakeOllama, fake_ollama  # noqa: F401 (fixture)
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool, wait_for

NODE = shutil.which("node")
CLI_PACKAGES = {
    "pi": "@mariozechner/pi-coding-agent",
    "codex": "@openai/codex",
    "claude": "@anthropic-ai/claude-code",
    "gemini": "@google/gemini-cli",
}
WAIT = 10.0  # bound on every wait for the daemon to notice something

# Canary secrets: planted in files, keys and the environment; never to be seen unmasked.
CODEX_REFRESH = "rt_CANARY_codex_refresh_0123456789abcdef"
CODEX_API_KEY = "sk-proj-CANARYcodexapikey0123456789abcdef"
CLAUDE_ACCESS = "sk-ant-oat01-CANARYclaudeaccess0123456789abcdef"
CLAUDE_REFRESH = "sk-ant-ort01-CANARYclauderefresh0123456789abcdef"
GEMINI_ACCESS = "ya29.CANARYgeminiaccess0123456789abcdefghij"
GEMINI_REFRESH = "1//CANARYgeminirefresh0123456789abcdefghij"
PI_ANTHROPIC_KEY = "sk-ant-api03-CANARYpiworkspace0123456789abcdef"
STORED_ANTHROPIC_KEY = "sk-ant-api03-CANARYstoredkey0123456789abcdef"
ENV_OPENROUTER_KEY = "sk-or-v1-CANARYenvopenrouter0123456789abcdef"

CANARIES: list[str] = [
    CODEX_REFRESH, CODEX_API_KEY, CLAUDE_ACCESS, CLAUDE_REFRESH, GEMINI_ACCESS, GEMINI_REFRESH,
    PI_ANTHROPIC_KEY, STORED_ANTHROPIC_KEY, ENV_OPENROUTER_KEY,
]


# --- tokens and the files real tools write -------------------------------------------------


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned_jwt(**claims: Any) -> str:
    """A JWT with ``alg: none`` and an empty signature (takod never checks signatures)."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def codex_access_token(exp: float, *, iat: float | None = None, tag: str = "a") -> str:
    token = unsigned_jwt(
        iat=int(iat if iat is not None else exp - 864000),
        exp=int(exp),
        jti=f"CANARY-codex-access-{tag}",
        **{"https://api.openai.com/auth": {"chatgpt_account_id": "acct-1", "chatgpt_plan_type": "plus"}},
    )
    CANARIES.append(token)
    return token


def codex_auth_doc(exp: float, *, refresh: str | None = CODEX_REFRESH, tag: str = "a") -> dict[str, Any]:
    """``$CODEX_HOME/auth.json`` in ChatGPT mode, as Codex writes it (providers.md A2)."""
    id_token = unsigned_jwt(email="dev@example.com", exp=int(exp), jti=f"CANARY-codex-id-{tag}")
    CANARIES.append(id_token)
    return {
        "OPENAI_API_KEY": None,
        "auth_mode": "chatgpt",
        "last_refresh": "2026-11-20T09:30:00.123456Z",
        "tokens": {
            "access_token": codex_access_token(exp, tag=tag),
            "account_id": "acct-1",
            "id_token": id_token,
            "refresh_token": refresh,
        },
    }


def claude_credentials_doc(expires_ms: int, *, access: str = CLAUDE_ACCESS, refresh: str = CLAUDE_REFRESH) -> dict[str, Any]:
    """``~/.claude/.credentials.json`` (providers.md B2), with a sibling key Claude keeps."""
    return {
        "claudeAiOauth": {
            "accessToken": access,
            "refreshToken": refresh,
            "expiresAt": expires_ms,
            "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
            "subscriptionType": "max",
            "rateLimitTier": "default_claude_max_5x",
        },
        "mcpOAuth": {},
    }


def gemini_oauth_doc(expiry_ms: int) -> dict[str, Any]:
    """``~/.gemini/oauth_creds.json`` (providers.md C2)."""
    return {
        "access_token": GEMINI_ACCESS,
        "expiry_date": expiry_ms,
        "id_token": unsigned_jwt(email="dev@example.com", azp="gemini-cli"),
        "refresh_token": GEMINI_REFRESH,
        "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email openid",
        "token_type": "Bearer",
    }


GEMINI_SETTINGS = {"security": {"auth": {"selectedType": "oauth-personal"}}}


def pi_auth_doc(key: str = PI_ANTHROPIC_KEY) -> dict[str, Any]:
    """pi's ``auth.json`` with one api_key entry (pi-auth.md §1.3)."""
    return {"anthropic": {"type": "api_key", "key": key}}


def dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def takobot_dumps(doc: Any) -> bytes:
    """inference-settings.json exactly as Takobot saves it: indent 2, sorted keys, newline."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def write_in_place(path: Path, data: bytes) -> None:
    """Truncate and rewrite the same inode (how Codex and many editors save)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path: Path, doc: Any) -> None:
    write_in_place(path, dumps(doc))


# --- the daemon, its PATH and its clients -------------------------------------------------


def cli_bin(home: Path, *names: str) -> Path:
    """A PATH directory holding just the named real CLIs (npm's links) and node."""
    directory = home / "bin"
    directory.mkdir(exist_ok=True)
    for name in names:
        require_tool(TOOLS_BIN / name, f"the real {name} CLI")
        link = directory / name
        if not link.exists():
            link.symlink_to(TOOLS_BIN / name)
    if NODE and not (directory / "node").exists():
        (directory / "node").symlink_to(NODE)
    return directory


def installed_version(name: str) -> str:
    manifest = TOOLS_BIN.parent / CLI_PACKAGES[name] / "package.json"
    return json.loads(manifest.read_text())["version"]


def node_version() -> str:
    assert NODE
    return subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout.strip().lstrip("v")


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/oauth/token"


TOKEN_URL_VARS = ("TAKOD_OPENAI_TOKEN_URL", "TAKOD_ANTHROPIC_TOKEN_URL", "TAKOD_COPILOT_TOKEN_URL", "TAKOD_GOOGLE_TOKEN_URL")


def start_daemon(home: Path, *, clis: Iterable[str] = (), **env: str) -> DaemonProcess:
    """A daemon whose PATH holds only ``clis`` (and node); ``env`` adds variables.
    Token endpoints point at a closed loopback port: a refresh never leaves the machine."""
    env.setdefault("PATH", str(cli_bin(home, *clis)))
    dead = closed_port_url()
    for var in TOKEN_URL_VARS:
        env.setdefault(var, dead)
    return DaemonProcess(home, clean_env(home, **env)).start()


def providers(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in result["providers"]}


def status(daemon: DaemonProcess, workspace: str | Path | None = None) -> dict[str, Any]:
    with daemon.client() as c:
        return c.call("status", {"workspace": str(workspace)} if workspace else None)


def wait_status(
    daemon: DaemonProcess, check: Callable[[dict[str, Any]], bool], workspace: str | Path | None = None,
    timeout: float = WAIT,
) -> dict[str, Any]:
    """Poll ``status`` until ``check`` holds (bounded); return that status."""
    seen: list[dict[str, Any]] = []

    def ok() -> dict[str, Any] | None:
        st = status(daemon, workspace)
        seen[:] = [st]
        return st if check(st) else None

    try:
        return wait_for(ok, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"status never matched; last: {json.dumps(seen[-1] if seen else None, indent=1)}") from None


def reason_of(st: dict[str, Any], name: str) -> str | None:
    return providers(st)[name]["reason"]


def subscribe(daemon: DaemonProcess, *topics: str) -> Client:
    c = daemon.client().connect()
    c.call("subscribe", {"topics": list(topics or ["status"])})
    return c


def next_event(
    c: Client, topic: str, check: Callable[[dict[str, Any]], bool] = lambda p: True, timeout: float = WAIT
) -> dict[str, Any]:
    """The next ``topic`` event whose payload passes ``check``, read within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching {topic} event within {timeout} s; saw {seen!r:.2000}")
        for method, params in c.notifications(timeout=remaining):
            if method == "takod.event" and params[2] == topic:
                seen.append(params[3])
                if check(params[3]):
                    return params[3]
            if time.monotonic() > deadline:
                break


def run_cli(daemon: DaemonProcess, *args: str, input: str | None = None, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``takod`` CLI against ``daemon`` (never starting one of its own)."""
    full_env = {**daemon.env, "TAKOD_NO_SPAWN": "1", "NO_COLOR": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "takod", *args],
        env=full_env,
        cwd=cwd or daemon.home,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_canaries(daemon: DaemonProcess, *outputs: Any) -> None:
    """No canary secret in the daemon's log, its stderr, or any of ``outputs``."""
    texts = {"daemon log": daemon.log_text(), "daemon stderr": daemon.stderr_text()}
    for i, out in enumerate(outputs):
        texts[f"output {i}"] = out if isinstance(out, str) else json.dumps(out, default=str)
    for where, text in texts.items():
        for canary in CANARIES:
            assert canary not in text, f"a secret leaked into {where}"
            # A masked value shows a short prefix and the last 4 characters, nothing in between.
            assert canary[-16:-4] not in text, f"part of a secret leaked into {where}"


@pytest.fixture
def stop_later() -> Iterable[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.stop()
        # Shown by pytest only when the test failed.
        print(f"--- daemon {d.pid} exit {d.proc.poll() if d.proc else None}; stderr tail:\n{d.stderr_text()[-3000:]}")
        print("--- log warnings/errors:\n" + "\n".join(
            line for line in d.log_text().splitlines() if '"level": "warning"' in line or '"level": "error"' in line
        )[-3000:])


# --- detection ----------------------------------------------------------------------------


def test_real_clis_on_path_are_installed_with_their_versions(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home, clis=CLI_PACKAGES)
    stop_later.append(d)
    st = status(d)
    ps = providers(st)
    for name in CLI_PACKAGES:
        p = ps[name]
        assert (p["ready"], p["level"], p["reason"]) == (False, "installed", "no-credentials"), p
        assert p["detail"]["version"] == installed_version(name)
        assert p["detail"]["path"] == str(home / "bin" / name)
        assert p["detail"]["source"] == "path"
        assert p["hint"]
    assert ps["pi"]["detail"]["node_version"] == node_version()
    assert st["selected"] is None

    cli = run_cli(d, "status", "--json")
    assert cli.returncode == 0, cli.stderr
    from_cli = providers(json.loads(cli.stdout))
    assert {n: from_cli[n]["detail"]["version"] for n in CLI_PACKAGES} == {n: installed_version(n) for n in CLI_PACKAGES}

    human = run_cli(d, "status")
    assert human.returncode == 0 and "no-credentials" in human.stdout


def test_empty_path_means_nothing_is_installed(home: Path, stop_later: list[DaemonProcess]) -> None:
    with FakeOllama(mode="refuse") as dead:
        d = start_daemon(home, PATH="", OLLAMA_HOST=dead.host)
        stop_later.append(d)
        st = status(d)
    ps = providers(st)
    for name in CLI_PACKAGES:
        assert (ps[name]["level"], ps[name]["reason"]) == ("not-installed", "not-installed")
        assert "install" in ps[name]["hint"]
    assert (ps["ollama"]["level"], ps["ollama"]["reason"]) == ("not-installed", "unreachable")
    assert st["selected"] is None


# --- credentials of each provider -----------------------------------------------------------


def test_codex_login_makes_codex_ready_and_selected(home: Path, stop_later: list[DaemonProcess]) -> None:
    exp = time.time() + 7 * 86400
    write_json(home / ".codex" / "auth.json", codex_auth_doc(exp))
    d = start_daemon(home, clis=["codex", "claude"])
    stop_later.append(d)
    st = status(d)
    codex = providers(st)["codex"]
    assert (codex["ready"], codex["level"], codex["reason"]) == (True, "ready", None), codex
    cred = codex["detail"]["credential"]
    assert cred["kind"] == "oauth" and cred["source"] == str(home / ".codex" / "auth.json")
    assert cred["expires_at"] == pytest.approx(int(exp))
    assert cred["account"] == "dev@example.com"
    assert cred["masked"].startswith("eyJ...")
    assert reason_of(st, "claude") == "no-credentials"
    assert st["selected"] == "codex"

    with d.client() as c:
        inv = c.call("auth.inventory")
    codex_creds = [x for x in inv["credentials"] if x["provider"] == "codex"]
    assert len(codex_creds) == 1 and codex_creds[0]["wins"] and codex_creds[0]["refreshable"]
    assert codex_creds[0]["expired"] is False
    auth_json = run_cli(d, "auth", "--json")
    auth_human = run_cli(d, "auth")
    assert auth_json.returncode == 0 and auth_human.returncode == 0
    assert_no_canaries(d, st, inv, auth_json.stdout, auth_human.stdout, run_cli(d, "status", "--json").stdout)


@pytest.mark.parametrize(
    ("exp_offset", "refresh", "reason"),
    [
        (-3600, CODEX_REFRESH, None),  # expired but refreshable: still usable
        (-3600, None, "needs-login"),  # expired, nothing can renew it
    ],
)
def test_expired_codex_token(home: Path, stop_later: list[DaemonProcess], exp_offset: int,
                             refresh: str | None, reason: str | None) -> None:
    write_json(home / ".codex" / "auth.json", codex_auth_doc(time.time() + exp_offset, refresh=refresh))
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)
    st = status(d)
    assert reason_of(st, "codex") == reason
    assert st["selected"] == (None if reason else "codex")
    assert_no_canaries(d, st)


def test_codex_api_key_login(home: Path, stop_later: list[DaemonProcess]) -> None:
    write_json(home / ".codex" / "auth.json", {"OPENAI_API_KEY": CODEX_API_KEY, "auth_mode": "apikey"})
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)
    codex = providers(status(d))["codex"]
    assert codex["ready"] and codex["detail"]["credential"]["kind"] == "api_key"
    assert codex["detail"]["credential"]["masked"] == "sk-proj-...cdef"
    assert_no_canaries(d, codex)


def test_claude_credentials_make_claude_ready(home: Path, stop_later: list[DaemonProcess]) -> None:
    expires_ms = int((time.time() + 8 * 3600) * 1000)
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(expires_ms))
    os.chmod(home / ".claude" / ".credentials.json", 0o600)
    write_json(home / ".claude.json", {"oauthAccount": {"emailAddress": "dev@example.com", "accountUuid": "u-1"}})
    d = start_daemon(home, clis=["claude"])
    stop_later.append(d)
    st = status(d)
    claude = providers(st)["claude"]
    assert (claude["ready"], claude["level"]) == (True, "ready"), claude
    cred = claude["detail"]["credential"]
    assert cred["kind"] == "oauth" and cred["source"] == str(home / ".claude" / ".credentials.json")
    assert cred["expires_at"] == pytest.approx(expires_ms / 1000)
    assert cred["masked"] == "sk-ant-...cdef"
    assert cred["account"] == "dev@example.com"
    assert st["selected"] == "claude"
    assert_no_canaries(d, st, run_cli(d, "auth", "--json").stdout)


def test_claude_login_ended_by_a_failed_refresh_needs_login(home: Path, stop_later: list[DaemonProcess]) -> None:
    # What Claude writes after invalid_grant: blank tokens, expiresAt 0 (providers.md B2).
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(0, access="", refresh=""))
    d = start_daemon(home, clis=["claude"])
    stop_later.append(d)
    st = status(d)
    assert reason_of(st, "claude") == "needs-login"
    assert st["selected"] is None


def test_gemini_oauth_is_ready_but_unverified(home: Path, stop_later: list[DaemonProcess]) -> None:
    write_json(home / ".gemini" / "settings.json", GEMINI_SETTINGS)
    write_json(home / ".gemini" / "oauth_creds.json", gemini_oauth_doc(int((time.time() + 3000) * 1000)))
    d = start_daemon(home, clis=["gemini"])
    stop_later.append(d)
    st = status(d)
    gemini = providers(st)["gemini"]
    assert gemini["ready"] and gemini["level"] == "ready", gemini
    assert gemini["detail"]["unverified"] is True
    cred = gemini["detail"]["credential"]
    assert cred["unverified"] is True and cred["kind"] == "oauth"
    assert cred["source"] == str(home / ".gemini" / "oauth_creds.json")
    assert cred["account"] == "dev@example.com"
    assert "Google" in cred["note"]
    assert st["selected"] == "gemini"
    assert_no_canaries(d, st, run_cli(d, "auth", "--json").stdout)


def test_gemini_is_not_ready_by_a_key_its_run_leaves_unused(home: Path, stop_later: list[DaemonProcess]) -> None:
    """GOOGLE_GENAI_USE_GCA=true asks for a Google login, and there is none: gemini's
    run leaves that choice alone (resolve/gemini.py), so the GEMINI_API_KEY beside it
    does not make gemini ready. Without the variable the same key does."""
    key = "AIzaCANARYgeminikey0123456789abcdefgh"
    d = start_daemon(home, clis=["gemini"], GEMINI_API_KEY=key, GOOGLE_GENAI_USE_GCA="true")
    stop_later.append(d)
    st = status(d)
    assert reason_of(st, "gemini") == "no-credentials", providers(st)["gemini"]
    d.stop()
    d = start_daemon(home, clis=["gemini"], GEMINI_API_KEY=key)
    stop_later.append(d)
    assert providers(status(d))["gemini"]["ready"]


def test_pi_workspace_api_key_makes_pi_ready(home: Path, stop_later: list[DaemonProcess]) -> None:
    ws = home / "proj"
    (ws).mkdir()
    (ws / "tako.toml").write_text("")
    write_json(ws / ".tako" / "pi" / "agent" / "auth.json", pi_auth_doc())
    d = start_daemon(home, clis=["pi", "codex"], TAKO_WORKSPACE=str(ws))
    stop_later.append(d)
    st = status(d)
    assert st["workspace"] == str(ws)
    pi = providers(st)["pi"]
    assert (pi["ready"], pi["level"]) == (True, "ready"), pi
    cred = pi["detail"]["credential"]
    assert cred == {
        "provider": "anthropic",
        "source": str(ws / ".tako" / "pi" / "agent" / "auth.json"),
        "kind": "api_key",
        "masked": "sk-ant-...cdef",
        "form": "api_key",  # the key itself (pi reads a value as a !command, a variable name or the key)
    }
    assert st["selected"] == "pi"
    assert_no_canaries(d, st, run_cli(d, "auth", "--json").stdout, run_cli(d, "auth").stdout)


def test_an_api_key_in_the_environment_counts_for_pi(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home, clis=["pi"], OPENROUTER_API_KEY=ENV_OPENROUTER_KEY)
    stop_later.append(d)
    pi = providers(status(d))["pi"]
    assert pi["ready"]
    assert pi["detail"]["credential"]["source"] == "env:OPENROUTER_API_KEY"
    assert_no_canaries(d, pi, run_cli(d, "auth", "--json").stdout)


# --- Ollama ------------------------------------------------------------------------------


def test_ollama_ready_then_a_missing_model_then_a_pulled_one(
    home: Path, stop_later: list[DaemonProcess], fake_ollama: FakeOllama
) -> None:
    d = start_daemon(home, OLLAMA_HOST=fake_ollama.host)
    stop_later.append(d)
    st = status(d)
    ollama = providers(st)["ollama"]
    assert (ollama["ready"], ollama["level"]) == (True, "ready"), ollama
    assert ollama["detail"]["model"] == "llama3.2:latest"
    assert ollama["detail"]["model_source"] == "first-listed"
    assert ollama["detail"]["host_source"] == "env"
    assert ollama["detail"]["version"] == fake_ollama.version
    assert st["selected"] == "ollama"

    with d.client() as c:
        c.call("settings.set", {"field": "ollama_model", "value": "mistral:7b"})
        ollama = providers(c.call("status"))["ollama"]
        assert (ollama["level"], ollama["reason"]) == ("reachable", "model-not-pulled")
        assert ollama["detail"]["model"] == "mistral:7b" and ollama["detail"]["model_source"] == "settings"
        assert c.call("status")["selected"] is None

        c.call("settings.set", {"field": "ollama_model", "value": "llama3.2"})
        ollama = providers(c.call("status"))["ollama"]
        assert ollama["ready"] and ollama["detail"]["model"] == "llama3.2:latest"
    # The probe only ever read; it never loaded a model.
    assert set(fake_ollama.paths()) <= {"/api/version", "/api/tags"}


def test_ollama_model_named_in_a_takobot_settings_file(
    home: Path, stop_later: list[DaemonProcess], fake_ollama: FakeOllama
) -> None:
    settings = home / ".tako" / "state" / "inference-settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_bytes(takobot_dumps({
        "api_keys": {}, "ollama_host": fake_ollama.url, "ollama_model": "qwen2.5:14b",
        "preferred_provider": "auto", "type1_model": "", "type2_model": "",
    }))
    d = start_daemon(home)  # no OLLAMA_HOST: the settings name the host
    stop_later.append(d)
    ollama = providers(status(d))["ollama"]
    assert (ollama["reason"], ollama["detail"]["host_source"]) == ("model-not-pulled", "settings")
    assert ollama["detail"]["models"] == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_ollama_with_no_models(home: Path, stop_later: list[DaemonProcess]) -> None:
    with FakeOllama(models=[]) as empty:
        d = start_daemon(home, OLLAMA_HOST=empty.host)
        stop_later.append(d)
        ollama = providers(status(d))["ollama"]
    assert (ollama["level"], ollama["reason"]) == ("reachable", "no-models")
    assert "ollama pull" in ollama["hint"]


# --- selection --------------------------------------------------------------------------


def test_preferred_provider_is_honoured_when_ready_and_ignored_when_not(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    write_json(home / ".codex" / "auth.json", codex_auth_doc(time.time() + 86400))
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(int((time.time() + 3600) * 1000)))
    settings = home / ".tako" / "state" / "inference-settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_bytes(takobot_dumps({"api_keys": {}, "ollama_host": "", "ollama_model": "",
                                        "preferred_provider": "claude", "type1_model": "", "type2_model": ""}))
    with FakeOllama(mode="refuse") as dead:
        d = start_daemon(home, clis=["codex", "claude"], OLLAMA_HOST=dead.host)
        stop_later.append(d)
        assert status(d)["selected"] == "claude"  # Takobot's own setting, read as written

        with d.client() as c:
            c.call("settings.set", {"field": "preferred_provider", "value": "auto"})
            assert c.call("status")["selected"] == "codex"  # priority order
            c.call("settings.set", {"field": "preferred_provider", "value": "gemini"})  # not installed
            st = c.call("status")
            assert (st["selected"], reason_of(st, "gemini")) == ("codex", "not-installed")
            c.call("settings.set", {"field": "preferred_provider", "value": "ollama"})  # unreachable
            assert c.call("status")["selected"] == "codex"

        out = run_cli(d, "prefer", "claude", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["selected"] == "claude"
        assert status(d)["selected"] == "claude"
    assert_no_canaries(d, out.stdout)
