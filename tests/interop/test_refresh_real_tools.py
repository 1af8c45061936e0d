"""After takod refreshes a ChatGPT login shared by Codex and pi, the real tools
still find valid credentials: nobody was logged out.

takod refreshes the grant held in ``$CODEX_HOME/auth.json`` and linked into the
workspace's pi ``openai-codex`` entry, against the loopback token server. Then
the real ``codex`` (``codex login status``) and the real pi (``--list-models``,
and pi's own ``AuthStorage`` from the installed package) read those files. pi
finally refreshes by itself with the refresh token takod stored, through pi's
own refresh code and lock (its fetch pointed at the loopback server), which
only works if takod stored the live token; takod then carries pi's result back
into Codex's file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oauth_server import FakeOAuthServer
from tests.harness import (
    REPO, TOOLS_BIN, DaemonProcess, clean_env, read_json, require_tool, wait_for, write_private,
)

pytestmark = pytest.mark.interop

WAIT = 30.0
PI_PACKAGE = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
OPENAI_CANARY = "rt_CANARYinteropopenai0123456789abcdef012345"
LIFETIME_S = 900  # beyond the 600 s lead: takod refreshes only when asked

# pi's AuthStorage, as pi uses it before every model call. Optionally with the
# clock moved forward (so pi finds the token expired and refreshes it itself)
# and OpenAI's token endpoint pointed at the loopback server.
PI_GET_KEY = """
const [authModule, authPath, tokenUrl, shiftMs] = process.argv.slice(1);
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) =>
  realFetch(String(url) === "https://auth.openai.com/oauth/token" ? tokenUrl : url, init);
const realNow = Date.now;
Date.now = () => realNow() + Number(shiftMs);
const { AuthStorage } = await import(authModule);
const storage = AuthStorage.create(authPath);
const key = await storage.getApiKey("openai-codex", { includeFallback: false });
console.log(JSON.stringify({ key: key ?? null, has: storage.hasAuth("openai-codex"),
                             errors: storage.errors.map(String) }));
"""


@pytest.fixture
def tools() -> dict[str, str]:
    require_tool(TOOLS_BIN / "codex", "the real codex CLI")
    require_tool(TOOLS_BIN / "pi", "the real pi CLI")
    require_tool(PI_PACKAGE / "dist" / "core" / "auth-storage.js", "the real pi package")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    return {"codex": str(TOOLS_BIN / "codex"), "pi": str(TOOLS_BIN / "pi"), "node": node}


@pytest.fixture
def server() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as srv:
        yield srv


def test_codex_and_pi_stay_logged_in_after_takod_refreshes_their_shared_login(
    home: Path, server: FakeOAuthServer, tools: dict[str, str]
) -> None:
    ws = home / "ws"
    (ws / ".tako").mkdir(parents=True)
    (ws / "tako.toml").write_text("")
    codex_home = home / ".codex"
    codex_file = codex_home / "auth.json"
    pi_file = ws / ".tako" / "pi" / "agent" / "auth.json"
    grant = server.add_grant("oai", "openai", refresh_token=OPENAI_CANARY, lifetime_s=LIFETIME_S)
    write_private(codex_file, grant.codex_auth())

    path = os.pathsep.join([str(TOOLS_BIN), str(Path(tools["node"]).parent), "/usr/bin", "/bin"])
    env = clean_env(home, TAKO_WORKSPACE=str(ws), CODEX_HOME=str(codex_home), PATH=path, **server.env())
    d = DaemonProcess(home, env).start("--refresh-lead", "600")
    try:
        assert read_json(pi_file)["openai-codex"]["refresh"] == OPENAI_CANARY  # linked by takod

        cli = subprocess.run(
            [sys.executable, "-m", "takod", "auth", "refresh", "codex", "--json"],
            env={**env, "TAKOD_NO_SPAWN": "1"}, capture_output=True, text=True, timeout=WAIT * 2,
        )
        assert cli.returncode == 0, cli.stderr
        assert server.count("oai", outcome="ok") == 1
        current = server.grant("oai")
        assert read_json(codex_file)["tokens"]["refresh_token"] == current.refresh
        assert read_json(pi_file)["openai-codex"]["refresh"] == current.refresh
        assert OPENAI_CANARY not in cli.stdout and current.refresh not in cli.stdout

        # The real Codex reads its refreshed file and is logged in.
        tool_env = {**env, "PI_CODING_AGENT_DIR": str(pi_file.parent), "PI_OFFLINE": "1"}
        status = subprocess.run([tools["codex"], "login", "status"], env=tool_env, capture_output=True, text=True,
                                timeout=WAIT * 2)
        assert status.returncode == 0, status.stderr[-2000:]
        assert "Logged in using ChatGPT" in status.stdout + status.stderr

        # The real pi lists the Codex models: it found the openai-codex login.
        listed = subprocess.run([tools["pi"], "--list-models"], env=tool_env, capture_output=True, text=True,
                                timeout=WAIT * 4, cwd=ws)
        assert listed.returncode == 0, listed.stderr[-2000:]
        table = listed.stdout + listed.stderr  # pi 0.73 prints the table on stderr
        assert any(line.split()[:1] == ["openai-codex"] for line in table.splitlines()), table[-2000:]

        # pi's AuthStorage hands out the access token takod stored, without refreshing.
        auth_module = str(PI_PACKAGE / "dist" / "core" / "auth-storage.js")

        def pi_key(shift_ms: int) -> dict[str, Any]:
            out = subprocess.run(
                [tools["node"], "--input-type=module", "-e", PI_GET_KEY, "--",
                 auth_module, str(pi_file), server.url("openai"), str(shift_ms)],
                env=tool_env, capture_output=True, text=True, timeout=WAIT * 2,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            return json.loads(out.stdout.strip().splitlines()[-1])

        got = pi_key(0)
        assert got == {"key": current.access, "has": True, "errors": []}
        assert server.count("oai") == 1  # neither tool needed a refresh

        # Later pi finds the token expired and refreshes it itself, with the refresh token
        # takod stored: the server accepts it (a spent one would be refused as reused).
        later = pi_key((LIFETIME_S + 60) * 1000)
        assert later["errors"] == [], later
        assert server.count("oai", outcome="ok") == 2 and server.count("oai", outcome="rejected") == 0
        renewed = server.grant("oai")
        assert later["key"] == renewed.access
        assert read_json(pi_file)["openai-codex"]["refresh"] == renewed.refresh

        # takod carries pi's newer tokens into Codex's file, so Codex is not logged out either.
        wait_for(lambda: read_json(codex_file)["tokens"]["refresh_token"] == renewed.refresh, WAIT)
        assert read_json(codex_file)["tokens"]["access_token"] == renewed.access
        status = subprocess.run([tools["codex"], "login", "status"], env=tool_env, capture_output=True, text=True,
                                timeout=WAIT * 2)
        assert status.returncode == 0 and "Logged in using ChatGPT" in status.stdout + status.stderr
        with d.client() as c:
            found = c.call("auth.inventory")["grants"]
        assert [(g["provider"], g["state"], len(g["mirrors"])) for g in found] == [("openai-codex", "scheduled", 2)]
        assert server.count("oai") == 2

        log = d.log_text() + d.stderr_text()
        for secret in (OPENAI_CANARY, current.refresh, renewed.refresh):
            assert secret not in log
    finally:
        d.stop()
