"""takod's own HTTP API backends are providers like the CLIs: only ``OPENAI_API_KEY``
stored (nothing else installed) makes ``openai`` ready and selected, ``health``
exits 0, ``doctor`` finds a ready provider, and ``run`` answers through it from
the loopback server with that key."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.fakes.model_servers import FakeOpenAI
from tests.harness import DaemonProcess, clean_env

KEY = "sk-openai-only-0123456789abcdef"


def takod(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("takod")
    assert binary, "the takod console script is not on PATH (pip install -e .)"
    return subprocess.run([binary, *args], env=env, cwd=env["HOME"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_only_an_openai_key_stored_is_a_ready_selected_provider(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    bin_dir = tmp_path / "bin"  # no provider CLI at all
    bin_dir.mkdir()
    with FakeOpenAI(api_key=KEY) as openai:
        env = clean_env(home, PATH=f"{bin_dir}:/usr/bin:/bin", OLLAMA_HOST="127.0.0.1:9",
                        OPENAI_BASE_URL=openai.base_url)
        daemon = DaemonProcess(home, env).start()
        try:
            cli_env = dict(env, TAKOD_NO_SPAWN="1")
            assert takod(cli_env, "health").returncode == 4  # nothing ready yet
            with daemon.client() as c:
                c.call("keys.set", {"name": "OPENAI_API_KEY", "value": KEY})
            status = json.loads(takod(cli_env, "status", "--json").stdout)
            providers = {p["name"]: p for p in status["providers"]}
            assert status["selected"] == "openai"
            assert providers["openai"]["ready"] and providers["openai"]["detail"]["model"] == "gpt-4.1-mini"
            assert not providers["anthropic"]["ready"] and providers["anthropic"]["reason"] == "no-credentials"
            human = takod(cli_env, "status").stdout
            assert "openai" in human and "API backends without a key: anthropic" in human

            health = takod(cli_env, "health", "--json")
            assert health.returncode == 0 and json.loads(health.stdout)["selected"] == "openai"
            doctor = json.loads(takod(cli_env, "doctor", "--json").stdout)
            checks = {c["id"]: c for c in doctor["checks"]}
            assert checks["providers"]["verdict"] == "ok" and "openai" in checks["providers"]["summary"]
            assert checks["provider:anthropic"]["verdict"] == "ok"  # no key: optional, not a warning

            ran = takod(cli_env, "run", "--json", "Say hi.")
            assert ran.returncode == 0, ran.stdout + ran.stderr
            assert json.loads(ran.stdout)["provider"] == "openai"
            assert openai.last.bearer == KEY
            for text in (json.dumps(status), human, health.stdout, ran.stdout, daemon.log_text()):
                assert KEY not in text
        finally:
            daemon.stop()
