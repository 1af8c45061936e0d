"""Which agent directory a pi run uses, as the daemon sees it live: a Tako workspace
runs pi in ``<ws>/.tako/pi/agent``, seeded from the home ``auth.json`` also over a
``{}`` file and also when the home login arrives later; a plain directory runs pi
in the home one; ``models.json`` in that directory counts as soon as it is written.
``status`` names the file (``detail.auth_file``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool, wait_for

HOME_KEY = "sk-ant-home-0123456789abcdef"


def pi_status(daemon: DaemonProcess) -> dict:
    with daemon.client() as c:
        return next(p for p in c.call("status")["providers"] if p["name"] == "pi")


def write(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    require_tool(TOOLS_BIN / "pi", "the real pi CLI")
    home, ws, bin_dir = tmp_path / "h", tmp_path / "ws", tmp_path / "bin"
    for d in (home, ws, bin_dir):
        d.mkdir()
    (bin_dir / "pi").symlink_to(TOOLS_BIN / "pi")
    env = clean_env(home, TAKO_WORKSPACE=str(ws), PATH=f"{bin_dir}:/usr/bin:/bin", OLLAMA_HOST="127.0.0.1:9")
    return home, ws, env


def test_a_tako_workspace_with_an_empty_file_is_seeded_and_status_names_it(layout) -> None:
    home, ws, env = layout
    (ws / "tako.toml").write_text("")
    ws_auth = ws / ".tako" / "pi" / "agent" / "auth.json"
    write(ws_auth, {})  # what `doctor --fix` and pi create
    daemon = DaemonProcess(home, env).start()
    try:
        st = pi_status(daemon)
        assert not st["ready"] and st["reason"] == "no-credentials"
        assert st["detail"]["auth_file"] == str(ws_auth)
        # A login at home, later: the workspace file holds no entry, so it is seeded and pi is ready.
        home_entry = {"anthropic": {"type": "api_key", "key": HOME_KEY}}
        write(home / ".pi" / "agent" / "auth.json", home_entry)
        st = wait_for(lambda: (s := pi_status(daemon))["ready"] and s, timeout=30)
        assert json.loads(ws_auth.read_text()) == home_entry
        assert st["detail"]["credential"]["source"] == str(ws_auth)
        assert HOME_KEY not in json.dumps(st)
    finally:
        daemon.stop()


def test_a_plain_directory_runs_pi_with_the_home_agent_dir(layout) -> None:
    home, ws, env = layout
    daemon = DaemonProcess(home, env).start()
    try:
        st = pi_status(daemon)
        assert st["detail"]["agent_dir"] == str(home / ".pi" / "agent") and st["reason"] == "no-credentials"
        local = {"providers": {"local": {"baseUrl": "http://127.0.0.1:9/v1", "api": "openai-completions",
                                         "apiKey": "ollama", "models": [{"id": "llama3.2"}]}}}
        write(home / ".pi" / "agent" / "models.json", local)  # Ollama through pi, no key at all
        st = wait_for(lambda: (s := pi_status(daemon))["ready"] and s, timeout=30)
        assert st["detail"]["credential"]["provider"] == "local"
        assert not (ws / ".tako" / "pi").exists()  # a plain directory is never given a pi copy
    finally:
        daemon.stop()
