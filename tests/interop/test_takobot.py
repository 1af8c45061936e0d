"""takod beside the real Takobot 0.1.88 (PyPI ``takobot==0.1.88``, installed by
scripts/install-test-tools.sh into its own venv, ``.tools/takobot``; or the
python named by ``TAKOD_TEST_TAKOBOT_PYTHON``): the files Takobot writes in a
workspace, read by takod, and Takobot's own view of what takod leaves behind.

Takobot runs as itself: its own functions, in its own interpreter, with the
workspace as its working directory (it finds the workspace root from there) and
a temp HOME. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, DaemonProcess, clean_env, require_tool

pytestmark = pytest.mark.interop

TAKOBOT_PY = Path(os.environ.get("TAKOD_TEST_TAKOBOT_PYTHON") or REPO / ".tools" / "takobot" / "bin" / "python")
PROMPT_HEAD = "CANARYpromptHEAD tell me about my calendar"


def takobot(workspace: Path, home: Path, code: str, **env: str) -> Any:
    """Run ``code`` in Takobot's interpreter, in ``workspace``; return what it printed as JSON."""
    require_tool(TAKOBOT_PY, "the real takobot 0.1.88")
    proc = subprocess.run(
        [str(TAKOBOT_PY), "-c", code], cwd=workspace, capture_output=True, text=True, timeout=120,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def doctor(d: DaemonProcess) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "takod", "doctor", "--json"], env={**d.env, "TAKOD_NO_SPAWN": "1"},
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    assert PROMPT_HEAD not in proc.stdout + proc.stderr  # Takobot logs the prompt's head; doctor never shows it
    return {c["id"]: c for c in report["checks"]}


WRITE_ERROR = """
import json
from takobot import inference
path = inference._append_inference_error_log(
    provider={provider!r}, command=["pi", "--print", {prompt!r}], detail={detail!r},
    stderr_text={stderr!r}, phase="stream")
print(json.dumps({{"path": str(path), "oauth_refresh_failure": inference.looks_like_openai_oauth_refresh_failure({detail!r} + " " + {stderr!r})}}))
"""


@pytest.fixture
def tako_workspace(home: Path) -> Path:
    ws = home / "tako"
    ws.mkdir()
    (ws / "tako.toml").write_text("")
    return ws


def test_doctor_reads_takobots_plain_text_error_log(home: Path, tako_workspace: Path) -> None:
    # What Takobot's own doctor turns into "openai oauth refresh failure detected: run `inference login force`".
    written = takobot(tako_workspace, home, WRITE_ERROR.format(
        provider="pi", prompt=PROMPT_HEAD, detail="pi inference failed: exit=1",
        stderr="Error: Token refresh failed: 401 {\"error\": \"invalid_grant\"} for openai-codex",
    ))
    assert written["oauth_refresh_failure"]  # Takobot itself calls this a login failure
    assert Path(written["path"]) == tako_workspace / ".tako" / "logs" / "error.log"
    d = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=str(tako_workspace), PATH="/usr/bin:/bin")).start()
    try:
        check = doctor(d)["error-log"]
        assert check["verdict"] == "warn" and "pi" in check["summary"], check
        assert "`takod login codex`" in check["fix"]  # openai-codex: the Codex login
        assert "invalid_grant" in check["detail"]
    finally:
        d.stop()


def test_a_takobot_failure_that_is_not_about_logins_is_counted_not_flagged(home: Path, tako_workspace: Path) -> None:
    written = takobot(tako_workspace, home, WRITE_ERROR.format(
        provider="pi", prompt=PROMPT_HEAD, detail="pi inference timed out after 180.0s", stderr="",
    ))
    assert not written["oauth_refresh_failure"]
    d = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=str(tako_workspace), PATH="/usr/bin:/bin")).start()
    try:
        check = doctor(d)["error-log"]
        assert check["verdict"] == "ok" and check["summary"].startswith("1 failed prompt"), check
        assert "pi" in check["detail"]
    finally:
        d.stop()
