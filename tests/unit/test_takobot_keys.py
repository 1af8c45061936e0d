"""The pi auth.json entries that give Takobot's pi the keys takod stores (takobot_keys)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from takod_daemon import takobot_keys

OLD = "!/old/venv/bin/python -m takod key get OPENAI_API_KEY"
NEW = "!/new/venv/bin/python -m takod key get OPENAI_API_KEY"


def test_key_command_carries_what_pi_will_not_have() -> None:
    env = {"PYTHONPATH": "/src/client:/src/daemon", "TAKOD_SOCKET": "/run/x y/rpc.sock", "HOME": "/h"}
    assert takobot_keys.key_command("OPENAI_API_KEY", python="/v/bin/python", env=env) == (
        "!PYTHONPATH=/src/client:/src/daemon TAKOD_SOCKET='/run/x y/rpc.sock' /v/bin/python -m takod key get OPENAI_API_KEY"
    )
    assert takobot_keys.key_command("GROQ_API_KEY", python="/v/bin/python", env={}) == "!/v/bin/python -m takod key get GROQ_API_KEY"


def test_bridge_writes_keeps_others_and_updates_only_its_own(tmp_path: Path) -> None:
    auth = tmp_path / "agent" / "auth.json"
    home = tmp_path / "home-auth.json"
    home.write_text(json.dumps({"anthropic": {"type": "oauth", "access": "a", "refresh": "r", "expires": 1}}))
    assert takobot_keys.bridge(auth, "OPENAI_API_KEY", OLD, [home], 2.0) == "written"
    doc = json.loads(auth.read_text())
    assert doc["openai"] == {"type": "api_key", "key": OLD, "apiKey": OLD}
    assert doc["anthropic"]["refresh"] == "r"  # seeded from home first, as Takobot would have
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert takobot_keys.bridge(auth, "OPENAI_API_KEY", OLD, [home], 2.0) == "present"
    assert takobot_keys.bridge(auth, "OPENAI_API_KEY", NEW, [home], 2.0) == "written"  # takod moved: follow it
    assert json.loads(auth.read_text())["openai"]["key"] == NEW

    user = {"type": "api_key", "key": "sk-users-own"}
    auth.write_text(json.dumps({**json.loads(auth.read_text()), "openai": user}))
    assert takobot_keys.bridge(auth, "OPENAI_API_KEY", NEW, [home], 2.0) == "other-entry"
    assert json.loads(auth.read_text())["openai"] == user  # never replaced
    assert not takobot_keys.unbridge(auth, "OPENAI_API_KEY", 2.0)  # nor removed
    assert json.loads(auth.read_text())["openai"] == user


def test_unbridge_removes_only_its_own_entry(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    assert not takobot_keys.unbridge(auth, "OPENAI_API_KEY", 2.0)  # no file: nothing to do
    takobot_keys.bridge(auth, "OPENAI_API_KEY", OLD, [], 2.0)
    takobot_keys.bridge(auth, "GROQ_API_KEY", OLD.replace("OPENAI", "GROQ"), [], 2.0)
    assert takobot_keys.unbridge(auth, "OPENAI_API_KEY", 2.0)
    assert set(json.loads(auth.read_text())) == {"groq"}


def test_what_takobot_would_lose() -> None:
    assert takobot_keys.takobot_would_lose("OPENAI_API_KEY") is None
    assert "GEMINI_API_KEY" in (takobot_keys.takobot_would_lose("GOOGLE_API_KEY") or "")
    assert takobot_keys.takobot_would_lose("CLAUDE_API_KEY")
    assert takobot_keys.takobot_would_lose("VENICE_API_KEY")
