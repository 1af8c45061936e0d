"""What a person sees from each command: readable output, a next step in every refusal,
and the exit codes the README promises (0 ok, 1 the daemon reported an error, 2 bad usage
or a rejected request, 3 no daemon, 4 none ready). A real daemon in a temporary HOME."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import takod
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, line_queue, require_tool, wait_for
from tests.rawrpc import WAIT

TAKOD = shutil.which("takod")
CANARY = "sk-ant-api03-CANARYuxSECRET0123456789abcdef-7c1d"
CANARY_CORE = "CANARYuxSECRET"


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert TAKOD, "the takod console script is not on PATH"
    return subprocess.run([TAKOD, *args], env=env, cwd=env["HOME"], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(daemon: DaemonProcess, daemon_env: dict[str, str]) -> dict[str, str]:
    return dict(daemon_env, TAKOD_NO_SPAWN="1", NO_COLOR="1")


def settings_file(home: Path) -> Path:
    return home / ".tako" / "state" / "inference-settings.json"


# refusals: exit code and the next step ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says", "never"),
    [
        (["key", "set", "GROQ_API_KEY", ""], 2, "is empty", "warning"),
        (["key", "set", "FOO_API_KEY", "x"], 2, "`takod key names` lists the", "did you mean"),
        (["key", "set", "GEMNI_API_KEY", "x"], 2, "did you mean GEMINI_API_KEY?", None),
        (["run", "--provider", "nonsense", "hi"], 2, "use one of pi, ollama, codex, claude, gemini", None),
        (["run", "hi"], 1, "`takod status` says why, `takod doctor` how to fix it", None),
        (["auth", "refresh", "nonsense"], 2, "`takod auth` lists the logins", None),
        (["login", "answer", "x"], 2, "no login is running; start one with `takod login PROVIDER`", "single"),
        (["ollama", "host", "ftp://x"], 2, "give http://HOST:PORT", None),
        (["ollama", "host", "not-a-url"], 2, "give http://HOST:PORT", None),
        (["ollama", "host", "http://127.0.0.1:99999"], 2, "give http://HOST:PORT", None),
        (["prefer", "nonsense"], 2, "invalid choice", None),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_refusals_name_the_next_step(env: dict[str, str], args: list[str], code: int, says: str,
                                     never: str | None) -> None:
    result = run(env, *args)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    if never:
        assert never not in result.stderr
    as_json = run(env, *args, "--json")
    assert as_json.returncode == code
    if code != 2 or args[0] != "prefer":  # argparse rejects before any JSON
        assert says in json.loads(as_json.stdout)["error"]["message"]


def test_a_rejected_ollama_host_leaves_the_settings_file_alone(daemon: DaemonProcess, env: dict[str, str]) -> None:
    assert run(env, "ollama", "host", "http://127.0.0.1:11500").returncode == 0
    before = settings_file(daemon.home).read_bytes()
    for bad in ("ftp://x", "not-a-url", "http://127.0.0.1:99999"):
        assert run(env, "ollama", "host", bad).returncode == 2
    assert settings_file(daemon.home).read_bytes() == before


def test_key_names_lists_every_accepted_name(env: dict[str, str]) -> None:
    result = run(env, "key", "names")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("OPENAI_API_KEY ") for line in lines)
    names = json.loads(run(env, "key", "names", "--json").stdout)["names"]
    assert len(names) == len(lines) and {"name", "providers", "description"} <= set(names[0])
    # The count the unknown-name error promises is the count listed.
    refused = run(env, "key", "set", "FOO_API_KEY", "x").stderr
    assert f"lists the {len(names)} accepted names" in refused


# status -------------------------------------------------------------------------------------


def test_status_short_is_one_word(env: dict[str, str]) -> None:
    result = run(env, "status", "--short")
    assert (result.returncode, result.stdout) == (0, "tako:none\n")
    assert json.loads(run(env, "status", "--short", "--json").stdout) == {"selected": None}


def test_status_short_without_a_daemon_says_down(home: Path) -> None:
    env = dict(clean_env(home), TAKOD_NO_SPAWN="1")
    result = run(env, "status", "--short")
    assert (result.returncode, result.stdout) == (3, "tako:down\n")
    assert "takod is not running" in result.stderr


def test_ollama_hints_never_say_start_what_is_not_installed(env: dict[str, str]) -> None:
    ollama = next(line for line in run(env, "status").stdout.splitlines() if line.strip().startswith("ollama"))
    assert "unreachable" in ollama and "install it (https://ollama.com/download)" in ollama


def test_a_corrupt_settings_file_shows_in_status_settings_and_doctor(daemon: DaemonProcess, env: dict[str, str]) -> None:
    path = settings_file(daemon.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"preferred_provider": "pi", "api_keys": {')
    wait_for(lambda: "settings unusable" in run(env, "status").stdout, WAIT)
    status = run(env, "status").stdout
    assert str(path) in status and "repair it or move it aside" in status

    settings = run(env, "settings").stdout
    assert "problem" in settings and "None" not in settings and "using the last good settings" in settings

    doctor = run(env, "doctor", "--json")
    check = {c["id"]: c for c in json.loads(doctor.stdout)["checks"]}["settings"]
    assert check["verdict"] == "fail" and "move it aside" in check["fix"]
    assert str(path) in check["summary"]
    assert path.read_text() == '{"preferred_provider": "pi", "api_keys": {'  # never rewritten


def test_a_corrupt_pi_auth_file_is_named_even_when_pi_is_ready(home: Path) -> None:
    require_tool(TOOLS_BIN / "pi", "the real pi CLI")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pi").symlink_to(TOOLS_BIN / "pi")
    node = shutil.which("node")
    assert node
    (bin_dir / "node").symlink_to(node)
    auth = home / ".pi" / "agent" / "auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text('{"anthropic": {"type": "oauth", ')
    auth.chmod(0o600)
    denv = clean_env(home, PATH=f"{bin_dir}:/usr/bin:/bin", ANTHROPIC_API_KEY=CANARY)
    d = DaemonProcess(home, denv).start()
    try:
        env = dict(denv, TAKOD_NO_SPAWN="1", NO_COLOR="1")
        st = json.loads(run(env, "status", "--json").stdout)
        pi = next(p for p in st["providers"] if p["name"] == "pi")
        assert pi["ready"] and "could not be read" in pi["hint"]
        text = run(env, "status").stdout
        assert str(auth) in text and "ready through another credential" in text
        assert CANARY_CORE not in text
    finally:
        d.stop()


# settings, version, watch -------------------------------------------------------------------


def test_settings_is_a_table_with_keys_masked(daemon: DaemonProcess, env: dict[str, str]) -> None:
    path = settings_file(daemon.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_keys": {"ANTHROPIC_API_KEY": CANARY}, "ollama_model": "llama3.2"}))
    wait_for(lambda: "ANTHROPIC_API_KEY" in run(env, "settings").stdout, WAIT)
    out = run(env, "settings").stdout
    assert CANARY_CORE not in out
    assert "None" not in out and "{" not in out and "'" not in out  # no Python reprs
    assert "`takod key migrate`" in out
    rows = dict(line.split(None, 1) for line in out.splitlines() if line and not line.startswith(" "))
    assert rows["ollama_model"] == "llama3.2" and rows["preferred_provider"] == "auto"


def test_version_reports_client_and_daemon(daemon: DaemonProcess, env: dict[str, str]) -> None:
    result = run(env, "version", "--json")
    assert json.loads(result.stdout) == {
        "client": takod.__version__,
        "daemon": {"version": takod.__version__, "protocol": 1, "pid": daemon.pid},
        "differs": False,
    }
    text = run(env, "version").stdout
    assert f"client  takod {takod.__version__}" in text and "daemon  takod" in text


def test_version_never_starts_a_daemon(home: Path) -> None:
    env = dict(clean_env(home), NO_COLOR="1")  # spawning allowed: version must still not start one
    result = run(env, "version", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["daemon"] is None
    assert not Path(env["TAKOD_SOCKET"]).exists()


def test_watch_prints_one_readable_line_per_event(daemon: DaemonProcess, env: dict[str, str]) -> None:
    watch = subprocess.Popen([TAKOD, "watch"], env=env, cwd=env["HOME"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = line_queue(watch)
    try:
        def reloaded() -> bool:
            daemon.signal(signal.SIGHUP)
            try:
                return lines.get(timeout=0.5).rstrip().endswith("daemon  reloaded")
            except queue.Empty:
                return False

        wait_for(reloaded, timeout=WAIT)
        assert run(env, "stop").returncode == 0
        seen = []
        while not seen or "stopping" not in seen[-1]:
            seen.append(lines.get(timeout=WAIT).rstrip())
        assert seen[-1].endswith("daemon  stopping (shutdown requested)")
        assert not any(line.lstrip()[9:].startswith("{") for line in seen)  # no JSON blobs
        assert watch.wait(WAIT) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
