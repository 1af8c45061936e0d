"""A workspace Node from the real npm registry, on a PATH with no node or npm.

`takod doctor --fix` in a fresh Tako workspace downloads the pinned prebuilt
Node and npm packages from registry.npmjs.org (the one place this suite goes
beyond the machine, on purpose: the brief asks for it), verifies their sha512,
lays them out in `.tako/nvm`, installs the workspace pi with that npm, and then
`takod run --provider pi` answers through that pi and that Node from a loopback
model server.

The tarballs are kept in ``$TAKOD_TEST_CACHE`` (default ``~/.cache/takod-tests``)
so reruns do not download again; the daemon still verifies them each time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from takod_daemon import node_runtime
from tests.fakes.model_servers import DEFAULT_REPLY, FakeOpenAI
from tests.harness import DaemonProcess, clean_env, require_tool, wait_for

REPO = Path(__file__).resolve().parents[2]
PI_PACKAGE_DIR = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
PI_KEY = "sk-test-CANARYnodeBOOTSTRAP0123456789"
CACHE = Path(os.environ.get("TAKOD_TEST_CACHE") or Path.home() / ".cache" / "takod-tests")

pytestmark = pytest.mark.interop


def _write_pi_agent(agent: Path, base_url: str) -> None:
    agent.mkdir(parents=True)
    provider = {
        "baseUrl": base_url, "api": "openai-completions", "apiKey": "TAKOD_FAKE_OPENAI_KEY",
        "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsUsageInStreaming": True},
        "models": [{"id": "fake-model"}],
    }
    (agent / "models.json").write_text(json.dumps({"providers": {"fake": provider}}))
    (agent / "settings.json").write_text(json.dumps({"defaultProvider": "fake", "defaultModel": "fake-model"}))
    auth = agent / "auth.json"
    auth.write_text(json.dumps({"fake": {"type": "api_key", "key": PI_KEY}}))
    auth.chmod(0o600)


def test_doctor_fix_installs_node_then_pi_and_pi_answers(tmp_path: Path) -> None:
    require_tool(PI_PACKAGE_DIR / "package.json", "the pi package (scripts/install-test-tools.sh)")
    try:
        artifact = node_runtime.node_artifact(node_runtime.platform_key())
    except node_runtime.RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    home = tmp_path / "h"
    home.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "tako.toml").write_text("")
    empty_bin = tmp_path / "bin"  # PATH: nothing at all, so no node and no npm
    empty_bin.mkdir()
    assert shutil.which("node", path=str(empty_bin)) is None and shutil.which("npm", path=str(empty_bin)) is None
    cache = node_runtime.cache_dir(workspace)
    cache.mkdir(parents=True)
    wanted = (artifact.filename, node_runtime.NPM_ARTIFACT.filename)
    for name in wanted:
        if (CACHE / name).exists():
            shutil.copy(CACHE / name, cache / name)

    with FakeOpenAI(api_key=PI_KEY, models=["fake-model"], chunk_delay=0.0) as openai:
        _write_pi_agent(workspace / ".tako" / "pi" / "agent", openai.base_url)
        env = clean_env(
            home, TAKO_WORKSPACE=str(workspace), PATH=str(empty_bin), OLLAMA_HOST="127.0.0.1:9",
            PI_OFFLINE="1", TAKOD_FAKE_OPENAI_KEY=PI_KEY,
            # pi comes from the local package: only Node and npm are fetched from the registry.
            TAKOD_PI_PACKAGE=f"file:{PI_PACKAGE_DIR}", npm_config_prefer_offline="true",
            NO_PROXY="127.0.0.1,localhost,::1", no_proxy="127.0.0.1,localhost,::1",  # pi's model server is loopback
        )
        del env["npm_config_offline"]  # the opt-in: this test may reach registry.npmjs.org
        daemon = DaemonProcess(home, env).start()
        try:
            shell = {**env, "TAKOD_NO_SPAWN": "1"}
            before = subprocess.run([sys.executable, "-m", "takod", "doctor", "--json"], env=shell,
                                    capture_output=True, text=True, timeout=120)
            node_check = next(c for c in json.loads(before.stdout)["checks"] if c["id"] == "node")
            assert node_check["fixable"] and artifact.package in node_check["fix"]

            fixed = subprocess.run([sys.executable, "-m", "takod", "doctor", "--fix"], env=shell,
                                   capture_output=True, text=True, timeout=1200)
            assert "sha512 verified" in fixed.stderr + fixed.stdout, fixed.stderr
            runtime = node_runtime.install_dir(workspace)
            node = runtime / "bin" / "node"
            said = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=60)
            assert said.stdout.strip() == f"v{artifact.version}"
            assert (workspace / ".tako" / "pi" / "node" / "node_modules" / ".bin" / "pi").exists(), fixed.stderr
            for name in wanted:  # keep the verified downloads for the next run
                CACHE.mkdir(parents=True, exist_ok=True)
                if not (CACHE / name).exists():
                    shutil.copy(cache / name, CACHE / name)

            with daemon.client() as c:
                wait_for(lambda: next(p for p in c.call("status")["providers"] if p["name"] == "pi")["ready"],
                         timeout=60)
            proc = subprocess.run([sys.executable, "-m", "takod", "run", "--provider", "pi", "--json", "Say hi"],
                                  env=shell, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, proc.stderr
            result = json.loads(proc.stdout)
            assert result["provider"] == "pi" and result["text"].strip() == DEFAULT_REPLY.strip()
            assert any(r.path.endswith("/chat/completions") for r in openai.requests)
        finally:
            daemon.stop()
        assert PI_KEY not in daemon.log_text() + daemon.stderr_text()
