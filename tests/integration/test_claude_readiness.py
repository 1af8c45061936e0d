"""claude's readiness follows the files its resolution reads (resolve/claude.py), as they
change: an apiKeyHelper in the workspace's own claude settings, and the Bedrock switch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool, wait_for, write_private


def _claude(c: Any) -> dict[str, Any]:
    return next(p for p in c.call("status")["providers"] if p["name"] == "claude")


def _daemon(tmp_path: Path, *, login: bool = False, **extra: str) -> tuple[DaemonProcess, Path]:
    require_tool(TOOLS_BIN / "claude", "the real claude CLI")
    home, ws, bin_dir = tmp_path / "h", tmp_path / "ws", tmp_path / "bin"
    for d in (home, ws, bin_dir):
        d.mkdir()
    if login:
        write_private(home / ".claude" / ".credentials.json", {"claudeAiOauth": {
            "accessToken": "sk-ant-oat01-matrix", "refreshToken": "sk-ant-ort01-matrix",
            "expiresAt": 4102444800000, "scopes": ["user:inference"]}})
    (ws / "tako.toml").write_text("")
    (bin_dir / "claude").symlink_to(TOOLS_BIN / "claude")
    env = clean_env(home, TAKO_WORKSPACE=str(ws), PATH=f"{bin_dir}:/usr/bin:/bin", OLLAMA_HOST="127.0.0.1:9", **extra)
    return DaemonProcess(home, env).start(), ws


def test_a_helper_in_the_workspace_settings_makes_claude_ready_when_written(tmp_path: Path) -> None:
    daemon, ws = _daemon(tmp_path)
    try:
        with daemon.client() as c:
            wait_for(lambda: _claude(c)["level"] != "unknown", timeout=30)
            assert _claude(c)["reason"] == "no-credentials"
            settings = ws / ".claude" / "settings.json"
            settings.parent.mkdir()  # a new directory: watched through its parent
            settings.write_text(json.dumps({"apiKeyHelper": "printf %s sk-never-run"}))
            wait_for(lambda: _claude(c)["ready"], timeout=30)
            cred = _claude(c)["detail"]["credential"]
            assert cred["source"] == f"apiKeyHelper:{settings}" and cred["unverified"]
        assert "sk-never-run" not in daemon.log_text()  # read, never run
    finally:
        daemon.stop()


def test_on_bedrock_an_anthropic_key_is_not_ready_and_aws_keys_are(tmp_path: Path) -> None:
    daemon, _ws = _daemon(tmp_path, login=True, CLAUDE_CODE_USE_BEDROCK="1", ANTHROPIC_API_KEY="sk-ant-matrix-0123456789")
    try:
        with daemon.client() as c:
            wait_for(lambda: _claude(c)["level"] != "unknown", timeout=30)
            status = _claude(c)
            assert status["reason"] == "no-credentials" and status["detail"]["backend"] == "bedrock"
            # Neither the key nor the login is used on Bedrock: no "the key shadows the login" warning.
            assert not any("env-shadowed" in w for w in status["detail"].get("warnings", []))
            c.call("keys.set", {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAMATRIXTEST0001"})
            c.call("keys.set", {"name": "AWS_SECRET_ACCESS_KEY", "value": "matrix-secret-0123456789"})
            wait_for(lambda: _claude(c)["ready"], timeout=30)
            assert _claude(c)["detail"]["credential"]["unverified"]
    finally:
        daemon.stop()
