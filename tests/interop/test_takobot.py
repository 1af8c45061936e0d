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
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_servers import DEFAULT_REPLY, FakeOpenAI
from tests.harness import REPO, TOOLS_BIN, DaemonProcess, clean_env, require_tool

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


# --- keys: Takobot's own pi after `takod key migrate` / `takod key set` ----------------------

OPENAI_KEY = "sk-proj-CANARYtakobotOPENAI0123456789abcdef"
VENICE_KEY = "venice-CANARYtakobotVENICE0123456789"
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # the plaintext-file fallback, for sure

DISCOVER_AND_ASK = """
import json
from takobot import inference
rt = inference.discover_inference_runtime()
out = {"selected": rt.selected_provider, "source": rt.statuses["pi"].key_source}
if rt.selected_provider:
    out["answer"] = inference.run_inference_prompt_with_fallback(
        rt, "Say hi", timeout_s=90, model=inference.inference_model_for_lane("type1"))
print(json.dumps(out))
"""


def _takobots_pi(ws: Path, base_url: str) -> None:
    """What Takobot's setup leaves in a workspace: its own pi runtime (here the real pi
    0.73.1) and a Node it accepts (it wants >= 22 and would download nvm; pi runs on
    this machine's), and a pi agent dir whose built-in ``openai`` provider points at
    the loopback fake."""
    require_tool(TOOLS_BIN / "pi", "the real pi CLI")
    bin_dir = ws / ".tako" / "pi" / "node" / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pi").symlink_to(TOOLS_BIN / "pi")
    node_dir = ws / ".tako" / "nvm" / "versions" / "node" / "v22.12.0" / "bin"
    node_dir.mkdir(parents=True)
    node = shutil.which("node")
    assert node, "node is needed for pi"
    (node_dir / "node").symlink_to(node)
    agent = ws / ".tako" / "pi" / "agent"
    agent.mkdir(parents=True)
    openai = {"baseUrl": base_url, "api": "openai-completions", "models": [{"id": "fake-model"}]}
    (agent / "models.json").write_text(json.dumps({"providers": {"openai": openai}}))


def _takobot_env() -> dict[str, str]:
    loopback = "127.0.0.1,localhost,::1"
    dead = "http://127.0.0.1:9"
    return {"PI_OFFLINE": "1", "NO_PROXY": loopback, "no_proxy": loopback, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
            "http_proxy": dead, "https_proxy": dead}


def _cli(d: DaemonProcess, ws: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "takod", *args], env={**d.env, "TAKOD_NO_SPAWN": "1"}, cwd=ws,
                          input=stdin, capture_output=True, text=True, timeout=120)


def _plaintext_holders(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


def test_after_key_migrate_takobots_pi_still_gets_the_key_with_no_plaintext_left(
    home: Path, tako_workspace: Path
) -> None:
    ws = tako_workspace
    with FakeOpenAI(api_key=OPENAI_KEY, models=["fake-model"], chunk_delay=0.0) as fake:
        _takobots_pi(ws, fake.base_url)
        # Takobot stores the keys the way it does: plaintext in its settings file.
        takobot(ws, home, """
import json
from takobot import inference
print(json.dumps([inference.set_inference_api_key("OPENAI_API_KEY", %r), inference.set_inference_api_key("VENICE_API_KEY", %r),
                  inference.set_inference_type1_model("openai/fake-model")]))
""" % (OPENAI_KEY, VENICE_KEY))
        before = takobot(ws, home, DISCOVER_AND_ASK, **_takobot_env())
        assert before["selected"] == "pi" and before["answer"] == ["pi", DEFAULT_REPLY]

        d = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=str(ws), PATH="/usr/bin:/bin", **NO_KEYRING)).start()
        try:
            refused = _cli(d, ws, "key", "migrate")
            assert refused.returncode != 0 and "no OS keyring" in refused.stderr and "--to-file" in refused.stderr
            settings = ws / ".tako" / "state" / "inference-settings.json"
            assert OPENAI_KEY in settings.read_text()  # refused: nothing moved

            out = _cli(d, ws, "key", "migrate", "--to-file", "--json")
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            assert result["migrated"] == ["OPENAI_API_KEY"] and result["pi_entries"] == ["OPENAI_API_KEY"]
            assert "VENICE_API_KEY" in result["kept"] and "pi" in result["kept"]["VENICE_API_KEY"]
            assert _plaintext_holders(ws, OPENAI_KEY) == []  # not in the settings, not in pi's auth.json
            assert VENICE_KEY in settings.read_text()  # kept: Takobot would lose it, and says so

            after = takobot(ws, home, DISCOVER_AND_ASK, **_takobot_env())
            assert after["selected"] == "pi" and after["answer"] == ["pi", DEFAULT_REPLY], after
            assert fake.last.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        finally:
            d.stop()
        assert OPENAI_KEY not in d.log_text() + d.stderr_text()


def test_a_key_set_with_takod_reaches_takobots_pi(home: Path, tako_workspace: Path) -> None:
    ws = tako_workspace
    with FakeOpenAI(api_key=OPENAI_KEY, models=["fake-model"], chunk_delay=0.0) as fake:
        _takobots_pi(ws, fake.base_url)
        takobot(ws, home, 'import json\nfrom takobot import inference\n'
                          'print(json.dumps(inference.set_inference_type1_model("openai/fake-model")))')
        assert takobot(ws, home, DISCOVER_AND_ASK, **_takobot_env())["selected"] is None  # no key anywhere yet

        d = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=str(ws), PATH="/usr/bin:/bin", **NO_KEYRING)).start()
        try:
            out = _cli(d, ws, "key", "set", "OPENAI_API_KEY", "-", "--json", stdin=OPENAI_KEY)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["pi_entry_outcome"] == "written"
            assert _plaintext_holders(ws, OPENAI_KEY) == []
            after = takobot(ws, home, DISCOVER_AND_ASK, **_takobot_env())
            assert after["selected"] == "pi" and after["answer"] == ["pi", DEFAULT_REPLY], after
            assert fake.last.headers["authorization"] == f"Bearer {OPENAI_KEY}"
            # takod's own run goes the same way: pi, the lane model Takobot set, the key through the entry.
            ran = _cli(d, ws, "run", "Say hi", "--provider", "pi", "--json")
            assert ran.returncode == 0, ran.stderr
            assert json.loads(ran.stdout)["text"] == DEFAULT_REPLY and json.loads(ran.stdout)["model"] == "openai/fake-model"
            piped = _cli(d, ws, "key", "get", "OPENAI_API_KEY")  # into a pipe: what pi reads
            assert piped.returncode == 0 and piped.stdout == OPENAI_KEY + "\n"
            leader, follower = pty.openpty()  # onto a terminal: refused, nothing printed
            try:
                on_tty = subprocess.run([sys.executable, "-m", "takod", "key", "get", "OPENAI_API_KEY"], cwd=ws,
                                        env={**d.env, "TAKOD_NO_SPAWN": "1"}, stdout=follower, stderr=subprocess.PIPE,
                                        text=True, timeout=60)
                os.set_blocking(leader, False)
                try:
                    shown = os.read(leader, 65536)
                except BlockingIOError:
                    shown = b""
            finally:
                os.close(leader)
                os.close(follower)
            assert on_tty.returncode == 2 and "pipe" in on_tty.stderr and OPENAI_KEY.encode() not in shown

            # Cleared: the entry goes with it (a failing command must not count as pi's credential).
            auth = ws / ".tako" / "pi" / "agent" / "auth.json"
            assert "openai" in json.loads(auth.read_text())
            assert _cli(d, ws, "key", "clear", "OPENAI_API_KEY").returncode == 0
            assert "openai" not in json.loads(auth.read_text())
            gone = _cli(d, ws, "key", "get", "OPENAI_API_KEY")
            assert gone.returncode != 0 and gone.stdout == "" and "takod key set OPENAI_API_KEY" in gone.stderr
        finally:
            d.stop()
        assert OPENAI_KEY not in d.log_text() + d.stderr_text()
