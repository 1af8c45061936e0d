"""The real pi reads what ``takod login`` wrote: pi's own AuthStorage (the installed
package) hands out the access token of each login, and ``pi --list-models`` lists the
Codex models, so the entries are in pi's exact format."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.login_server import FakeLoginServer
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool
from tests.integration.test_login import _events, _start

pytestmark = pytest.mark.interop

PI_PACKAGE = Path(__file__).resolve().parents[2] / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
PI_GET_KEYS = """
const [authModule, authPath, ...providers] = process.argv.slice(1);
const { AuthStorage } = await import(authModule);
const storage = AuthStorage.create(authPath);
const out = {};
for (const p of providers) out[p] = (await storage.getApiKey(p, { includeFallback: false })) ?? null;
console.log(JSON.stringify(out));
"""


@pytest.fixture
def server() -> Iterator[FakeLoginServer]:
    with FakeLoginServer() as srv:
        srv.slow_downs = 0
        srv.approved.set()
        yield srv


def test_pi_reads_every_login_takod_wrote(home: Path, server: FakeLoginServer) -> None:
    require_tool(TOOLS_BIN / "pi", "the real pi CLI")
    require_tool(PI_PACKAGE / "dist" / "core" / "auth-storage.js", "the real pi package")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    env = clean_env(home, **server.env())
    proc = DaemonProcess(home, env).start()
    try:
        with proc.client() as c:
            for provider in ("codex", "anthropic"):
                login_id = _start(c, provider)
                [prompt] = _events(c, login_id, {"open_url"})
                q = {k: v[0] for k, v in parse_qs(urlsplit(prompt["url"]).query).items()}
                c.call("login.answer", {"login_id": login_id, "text": f"{server.issue_code(q['code_challenge'])}#{q['state']}"})
                assert _events(c, login_id, {"done", "failed"})[-1]["kind"] == "done"
            login_id = _start(c, "copilot")
            assert _events(c, login_id, {"done", "failed"})[-1]["kind"] == "done"
    finally:
        proc.stop()
    auth = home / ".tako" / "pi" / "agent" / "auth.json"
    tool_env = {**env, "PI_CODING_AGENT_DIR": str(auth.parent), "PI_OFFLINE": "1"}
    got = subprocess.run(
        [node, "--input-type=module", "-e", PI_GET_KEYS, "--", str(PI_PACKAGE / "dist" / "core" / "auth-storage.js"),
         str(auth), "openai-codex", "anthropic", "github-copilot"],
        env=tool_env, capture_output=True, text=True, timeout=60,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    keys = json.loads(got.stdout.strip().splitlines()[-1])
    assert keys == {"openai-codex": server.issued["openai"], "anthropic": server.issued["anthropic"],
                    "github-copilot": server.issued["copilot"]}
    listed = subprocess.run([str(TOOLS_BIN / "pi"), "--list-models"], env=tool_env, capture_output=True, text=True,
                            timeout=120, cwd=home)
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = listed.stdout + listed.stderr
    assert any(line.split()[:1] == ["openai-codex"] for line in table.splitlines()), table[-2000:]
