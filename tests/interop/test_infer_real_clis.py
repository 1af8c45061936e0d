"""Prompts through a real daemon to the real pi and claude CLIs, each pointed at
a loopback fake model API (tests/fakes/model_servers.py):

- pi runs from the daemon's PATH in a Tako workspace (``tako.toml``); its agent
  dir ``<ws>/.tako/pi/agent`` (the daemon sets ``PI_CODING_AGENT_DIR``) holds a
  ``models.json`` provider ``fake`` whose ``baseUrl`` is a :class:`FakeOpenAI`
  (chat completions), a ``settings.json`` making ``fake/fake-model`` pi's
  default, and an ``auth.json`` API-key entry for ``fake``: the credential that
  makes pi *ready*. ``PI_OFFLINE=1`` gives pi ``--offline``.
- claude gets ``ANTHROPIC_BASE_URL`` (a :class:`FakeAnthropic`) and
  ``ANTHROPIC_API_KEY`` (its credential) from the daemon's environment, and
  ``ANTHROPIC_MODEL`` (claude's own default-model setting) so the fake knows
  the model it asks for.

Clients are ``takod.Client`` (the ``infer`` method) and the ``takod`` CLI
(``takod run``, ``takod prefer``) as separate processes. Nothing leaves the
machine: HOME is a temp dir, every proxy variable points at a closed loopback
port with only loopback exempt (``NO_PROXY``), and Ollama's host is a closed port.

"Nothing left" is read from /proc: the daemon carries a unique marker variable,
which every provider CLI it starts inherits (so does everything a CLI starts);
after a cancellation, a hang-up, a Ctrl-C or a timeout no process but the
daemon carries it, none is left in the CLI's session, and the daemon has no
child at all, not even an unreaped zombie.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from takod import Client, RemoteError
from tests.fakes.model_servers import DEFAULT_REPLY, FakeAnthropic, FakeGemini, FakeOpenAI, pieces
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, require_tool, takod_interruptible, wait_for
from tests.procfs import alive

pytestmark = pytest.mark.interop

MARKER_VAR = "TAKOD_TEST_RUN_MARKER"
PI_KEY = "sk-test-pi-0123456789abcdef"
CLAUDE_KEY = "sk-ant-test-0123456789abcdef"
CLAUDE_MODEL = "claude-sonnet-4-5"
PI_MODEL = "fake/fake-model"
DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
# Every wait on an answer is bounded by this (pi and claude take a second or two to start).
ANSWER_WAIT = 120.0
EXIT_INTERRUPTED = 130


# --- /proc ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def marked(marker: str) -> set[int]:
    """Live processes whose environment carries ``marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = set()
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and alive(pid):
            found.add(pid)
    return found


def session_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields else None


def in_sessions(sessions: set[int]) -> set[int]:
    """Live processes in any of ``sessions``."""
    found = set()
    for pid in _pids():
        fields = _stat(pid)
        if fields and fields[0] != "Z" and int(fields[3]) in sessions:
            found.add(pid)
    return found


def children_of(ppid: int) -> set[int]:
    """Every child of ``ppid``, zombies included (a child nobody reaped is left over too)."""
    found = set()
    for pid in _pids():
        fields = _stat(pid)
        if fields and int(fields[1]) == ppid:
            found.add(pid)
    return found


# --- the rig: a daemon with pi and claude ready ---------------------------------------------


@dataclass
class Rig:
    daemon: DaemonProcess
    workspace: Path
    openai: FakeOpenAI  # pi's model API
    anthropic: FakeAnthropic  # claude's model API
    marker: str
    seen_sessions: set[int] = field(default_factory=set)

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("timeout", ANSWER_WAIT)
        return self.daemon.client(**kwargs)

    def cli_env(self) -> dict[str, str]:
        """The environment for a ``takod`` CLI process: the daemon's, minus the marker
        (the CLI process is not one of the daemon's children)."""
        env = {k: v for k, v in self.daemon.env.items() if k != MARKER_VAR}
        return env | {"TAKOD_NO_SPAWN": "1"}

    def takod(self, *args: str, timeout: float = ANSWER_WAIT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "takod", *args, "--socket", str(self.daemon.socket)],
            env=self.cli_env(), cwd=self.workspace, capture_output=True, text=True, timeout=timeout,
        )

    def prefer(self, provider: str) -> None:
        proc = self.takod("prefer", provider, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["selected"] == provider

    def providers_running(self) -> set[int]:
        """The provider CLIs the daemon runs now (every marked process but the daemon)."""
        return marked(self.marker) - {self.daemon.pid}

    def note_running(self) -> set[int]:
        """Record the sessions of the provider CLIs running now; return their pids."""
        pids = self.providers_running()
        self.seen_sessions |= {sid for sid in map(session_of, pids) if sid is not None and sid != session_of(self.daemon.pid)}
        return pids

    def leftovers(self) -> set[int]:
        return self.providers_running() | in_sessions(self.seen_sessions) | children_of(self.daemon.pid)

    def assert_nothing_left(self) -> None:
        """No provider process, nothing in a session a provider CLI led, no child of the
        daemon (a bounded wait: a killed process takes a moment to go)."""
        try:
            wait_for(lambda: not self.leftovers(), timeout=15)
        except AssertionError:
            raise AssertionError(f"left over: {_describe(self.leftovers())}") from None


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            cmd = "?"
        fields = _stat(pid)
        out.append(f"{pid} [{fields[0] if fields else 'gone'}] {cmd}")
    return out


def _write_pi_agent(agent: Path, base_url: str) -> None:
    agent.mkdir(parents=True)
    provider = {
        "baseUrl": base_url,
        "api": "openai-completions",
        "apiKey": "TAKOD_FAKE_OPENAI_KEY",  # pi resolves it from the environment the daemon gives it
        "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsUsageInStreaming": True},
        "models": [{"id": "fake-model"}, {"id": "deep-model"}],
    }
    (agent / "models.json").write_text(json.dumps({"providers": {"fake": provider}}))
    # Without a default pi would pick the first model it has a key for (ANTHROPIC_API_KEY is set).
    (agent / "settings.json").write_text(json.dumps({"defaultProvider": "fake", "defaultModel": "fake-model"}))
    auth = agent / "auth.json"
    auth.write_text(json.dumps({"fake": {"type": "api_key", "key": PI_KEY}}))
    auth.chmod(0o600)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as made:
        yield made


@contextmanager
def make_rig(tmp_path: Path, *, claude_key_in_env: bool = True) -> Iterator[Rig]:
    """A daemon with pi ready and (unless claude's key is to be stored later) claude."""
    for cli in ("pi", "claude"):
        require_tool(TOOLS_BIN / cli, f"the real {cli} CLI")
    home = tmp_path / "h"  # short: the socket path must stay under ~100 bytes
    home.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "tako.toml").write_text("")
    bin_dir = tmp_path / "bin"  # only these two CLIs on the daemon's PATH (node comes from /usr/bin)
    bin_dir.mkdir()
    for cli in ("pi", "claude"):
        (bin_dir / cli).symlink_to(TOOLS_BIN / cli)
    marker = uuid.uuid4().hex
    with (
        FakeOpenAI(api_key=PI_KEY, models=["fake-model", "deep-model"], chunk_delay=0.01) as openai,
        FakeAnthropic(api_key=CLAUDE_KEY, models=[CLAUDE_MODEL], chunk_delay=0.01) as anthropic,
    ):
        _write_pi_agent(workspace / ".tako" / "pi" / "agent", openai.base_url)
        env = clean_env(
            home,
            TAKO_WORKSPACE=str(workspace),
            PATH=f"{bin_dir}:/usr/bin:/bin",
            OLLAMA_HOST="127.0.0.1:9",  # closed: Ollama is not ready, and nothing else answers there
            PI_OFFLINE="1",
            TAKOD_FAKE_OPENAI_KEY=PI_KEY,
            ANTHROPIC_BASE_URL=anthropic.base_url,
            ANTHROPIC_MODEL=CLAUDE_MODEL,
            CLAUDE_CONFIG_DIR=str(home / "claude-config"),
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
            NO_PROXY=LOOPBACK, no_proxy=LOOPBACK,
            HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY,
            **{MARKER_VAR: marker},
        )
        if claude_key_in_env:
            env["ANTHROPIC_API_KEY"] = CLAUDE_KEY
        daemon = DaemonProcess(home, env).start()
        rig = Rig(daemon, workspace, openai, anthropic, marker)
        try:
            with daemon.client() as c:
                expected = {"pi", "claude"} if claude_key_in_env else {"pi"}
                wait_for(lambda: _ready(c.call("status")) >= expected, timeout=30)
                assert c.call("status")["selected"] == "pi"  # first in priority order
            yield rig
            rig.assert_nothing_left()
        finally:
            daemon.stop()
    for key in (PI_KEY, CLAUDE_KEY):
        assert key not in daemon.log_text() + daemon.stderr_text()


def _ready(status: dict[str, Any]) -> set[str]:
    return {p["name"] for p in status["providers"] if p["ready"]}


def _answered(result: dict[str, Any]) -> list[str]:
    return [s["provider"] for s in result["route"] if s["outcome"] == "answered"]


def _step(result_or_trace: Any, provider: str) -> dict[str, Any]:
    route = result_or_trace["route"] if isinstance(result_or_trace, dict) else result_or_trace
    return next(s for s in route if s["provider"] == provider and s["outcome"] != "skipped")


class Streamed:
    """One ``infer`` with ``stream: true`` on a raw ``Client``: its chunks as they come,
    then its response (or error)."""

    def __init__(self, client: Client, params: dict[str, Any]):
        self.client = client
        self.msgid = client.send("infer", {**params, "stream": True})
        self.chunks: list[tuple[str, dict[str, Any]]] = []

    def texts(self) -> list[str]:
        return [p["text"] for k, p in self.chunks if k == "text"]

    def until_texts(self, count: int, timeout: float = ANSWER_WAIT) -> None:
        """Read chunks until ``count`` text chunks arrived (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.texts()) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not {count} texts within {timeout} s; chunks: {self.chunks}"
            for method, params in self.client.notifications(timeout=remaining):
                if method == "takod.stream" and params[0] == self.msgid:
                    self.chunks.append((params[2], params[3]))
                    if params[2] == "text":
                        break

    def finish(self, timeout: float = ANSWER_WAIT) -> dict[str, Any]:
        """The response; the chunks that came before it are in ``chunks``. Raises RemoteError."""
        try:
            return self.client.wait(self.msgid, timeout=timeout)
        finally:
            self._collect()

    def _collect(self) -> None:
        """The chunks that arrived before the response (queued by the client, in order)."""
        for method, params in self.client.notifications(timeout=0):
            if method == "takod.stream" and params[0] == self.msgid:
                self.chunks.append((params[2], params[3]))


# --- answers --------------------------------------------------------------------------------


def test_pi_answers_through_the_daemon_with_streaming_chunks(rig: Rig) -> None:
    token = f"tako-{uuid.uuid4().hex[:8]}"
    with rig.client() as c:
        events = list(c.stream("infer", {"prompt": f"Say hello to {token}.", "stream": True}, timeout=ANSWER_WAIT))
    kinds = [k for k, _ in events]
    assert kinds[0] == "route" and events[0][1]["provider"] == "pi"
    assert kinds[-1] == "result"
    texts = [p["text"] for k, p in events if k == "text"]
    assert texts == pieces(DEFAULT_REPLY)  # each delta pi printed, in order, one chunk each
    result = events[-1][1]
    assert result["provider"] == "pi" and result["text"] == DEFAULT_REPLY
    assert result["model"] == PI_MODEL
    assert result["output_tokens"] == len(pieces(DEFAULT_REPLY))
    assert _answered(result) == ["pi"] and _step(result, "pi")["first_token_ms"] is not None
    request = rig.openai.last  # what pi sent: the prompt, the key from auth.json / models.json
    assert token in json.dumps(request.body) and request.bearer == PI_KEY
    assert not rig.anthropic.requests

    proc = rig.takod("run", f"Say hello to {token}.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEFAULT_REPLY + "\n"
    assert "→ pi" in proc.stderr and "answered by pi" in proc.stderr


def test_takobots_lane_models_reach_pi_as_its_model(rig: Rig) -> None:
    """type1_model / type2_model (Takobot passes them to pi as --model): set with the
    CLI, honoured by run for the lane asked for; `auto` gives pi its own default back."""
    def model_sent() -> str:
        return rig.openai.last.body["model"]

    with rig.client() as c:
        assert c.call("infer", {"prompt": "hi"})["model"] == PI_MODEL and model_sent() == "fake-model"
        out = rig.takod("settings", "set", "type2_model", "fake/deep-model", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["type2_model"] == "fake/deep-model"
        deep = c.call("infer", {"prompt": "think hard", "lane": "type2"})
        assert (deep["provider"], deep["model"], model_sent()) == ("pi", "fake/deep-model", "deep-model")
        assert c.call("infer", {"prompt": "hi"})["model"] == PI_MODEL  # type1 is still pi's default

        assert rig.takod("settings", "set", "type1_model", "fake/deep-model").returncode == 0
        run = rig.takod("run", "hi", "--json")
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["model"] == "fake/deep-model" and model_sent() == "deep-model"
        asked = c.call("infer", {"prompt": "hi", "model": PI_MODEL})  # a model asked for wins over the lane's
        assert asked["model"] == PI_MODEL and model_sent() == "fake-model"

        assert rig.takod("settings", "set", "type1_model", "auto").returncode == 0
        assert c.call("settings.get")["type1_model"] == "auto"
        assert c.call("infer", {"prompt": "hi"})["model"] == PI_MODEL and model_sent() == "fake-model"
        bad = rig.takod("settings", "set", "type1_model", "")
        assert bad.returncode == 2 and "auto" in bad.stderr  # says how to clear it instead


def test_claude_answers_when_preferred(rig: Rig) -> None:
    rig.prefer("claude")
    token = f"tako-{uuid.uuid4().hex[:8]}"
    proc = rig.takod("run", f"Say hello to {token}.", "--system", "Answer briefly.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEFAULT_REPLY + "\n"
    assert "→ claude" in proc.stderr and "answered by claude" in proc.stderr
    sent = rig.anthropic.last
    assert sent.header("x-api-key") == CLAUDE_KEY and sent.body["model"] == CLAUDE_MODEL
    assert token in json.dumps(sent.body["messages"]) and "Answer briefly." in json.dumps(sent.body["system"])

    with rig.client() as c:
        events = list(c.stream("infer", {"prompt": "Say hello.", "stream": True}, timeout=ANSWER_WAIT))
    result = events[-1][1]
    assert result["provider"] == "claude" and result["model"] == CLAUDE_MODEL
    assert "".join(p["text"] for k, p in events if k == "text") == result["text"] == DEFAULT_REPLY
    assert [k for k, _ in events].count("text") > 3  # streamed, not one blob
    assert _answered(result) == ["claude"]
    assert not rig.openai.requests  # pi was never asked


def test_claude_failing_before_the_stream_falls_through_to_pi(rig: Rig) -> None:
    rig.prefer("claude")
    rig.anthropic.set_mode("http-500")
    with rig.client() as c:
        events = list(c.stream("infer", {"prompt": "Say hello.", "stream": True}, timeout=ANSWER_WAIT))
    result = events[-1][1]
    assert result["provider"] == "pi" and result["text"] == DEFAULT_REPLY
    failed = _step(result, "claude")
    assert failed["outcome"] == "failed" and failed["reason"].startswith("unavailable: "), failed
    assert "500" in failed["reason"]
    assert _answered(result) == ["pi"]
    routes = [p["provider"] for k, p in events if k == "route"]
    assert routes == ["claude", "pi"]
    assert ("fallback", {"provider": "claude", "error": failed["reason"]}) in events
    # every text chunk is pi's, and comes after the fallback
    fallback_at = next(i for i, (k, _) in enumerate(events) if k == "fallback")
    assert all(i > fallback_at for i, (k, _) in enumerate(events) if k == "text")
    assert "".join(p["text"] for k, p in events if k == "text") == DEFAULT_REPLY
    assert rig.anthropic.requests and rig.openai.requests
    record = json.loads((rig.workspace / ".tako" / "logs" / "error.log").read_text().splitlines()[-1])
    assert record["provider"] == "claude" and record["after_first_token"] is False
    assert CLAUDE_KEY not in json.dumps(record)

    proc = rig.takod("run", "Say hello.")  # the same through the CLI: the fall-through on stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEFAULT_REPLY + "\n"
    assert "→ claude" in proc.stderr and "✗ claude: unavailable" in proc.stderr and "answered by pi" in proc.stderr


def test_a_failure_mid_stream_is_reported_not_spliced(rig: Rig) -> None:
    rig.openai.set_mode("error-event")  # two deltas, then the API's error event
    with rig.client() as c:
        stream = Streamed(c, {"prompt": "Say hello."})
        with pytest.raises(RemoteError) as err:
            stream.finish()
        assert c.call("ping") == "pong"
    assert err.value.code == "provider_failed"
    assert err.value.message.startswith("pi failed after it started answering: unavailable"), err.value.message
    assert stream.texts() == pieces(DEFAULT_REPLY)[: rig.openai.error_after]
    kinds = [k for k, _ in stream.chunks]
    assert "fallback" not in kinds and [p["provider"] for k, p in stream.chunks if k == "route"] == ["pi"]
    assert not rig.anthropic.requests  # claude (ready, next in line) was never asked
    record = json.loads((rig.workspace / ".tako" / "logs" / "error.log").read_text().splitlines()[-1])
    assert record["provider"] == "pi" and record["after_first_token"] is True


def test_a_stored_key_reaches_the_cli_and_an_unreadable_key_file_stops_no_prompt(tmp_path: Path) -> None:
    with make_rig(tmp_path, claude_key_in_env=False) as rig:
        with rig.client() as c:
            assert "claude" not in _ready(c.call("status"))
        stored = subprocess.run(  # the key from stdin, as a user pipes it in
            [sys.executable, "-m", "takod", "key", "set", "ANTHROPIC_API_KEY", "-", "--socket", str(rig.daemon.socket)],
            env=rig.cli_env(), input=CLAUDE_KEY, capture_output=True, text=True, timeout=60,
        )
        assert stored.returncode == 0, stored.stderr
        with rig.client() as c:
            wait_for(lambda: "claude" in _ready(c.call("status")), timeout=30)
        rig.prefer("claude")
        with rig.client() as c:
            result = c.call("infer", {"prompt": "Say hello."}, timeout=ANSWER_WAIT)
        assert result["provider"] == "claude" and result["text"] == DEFAULT_REPLY
        assert rig.anthropic.last.header("x-api-key") == CLAUDE_KEY  # from the key store, via claude's environment

        # The fallback key file (no keyring here) goes bad: prompts that need no stored key still run.
        keys_file = rig.daemon.state_dir / "keys.json"
        assert CLAUDE_KEY in keys_file.read_text()
        keys_file.write_text('{"keys": {"ANTHROPIC_API_KEY": ')
        with rig.client() as c:
            result = c.call("infer", {"prompt": "Say hello.", "provider": "pi"}, timeout=ANSWER_WAIT)
        assert result["provider"] == "pi" and result["text"] == DEFAULT_REPLY
        assert keys_file.read_text() == '{"keys": {"ANTHROPIC_API_KEY": '  # left as it was found


GEMINI_RIGHT_KEY = "AIzaCANARYrightGEMINI0123456789abcdefgh"
GEMINI_WRONG_KEY = "AIzaCANARYwrongGEMINI0123456789abcdefgh"


def test_a_gemini_auth_cooldown_shows_in_status_and_ends_when_the_key_is_fixed(tmp_path: Path) -> None:
    """The real gemini CLI with a wrong GEMINI_API_KEY: the auth failure puts it on a
    5-minute cooldown, which status shows (not `ready`); storing the right key ends it
    at once, and the next prompt reaches the API with that key."""
    require_tool(TOOLS_BIN / "gemini", "the real gemini CLI")
    home = tmp_path / "h"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({"privacy": {"usageStatisticsEnabled": False}}))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gemini").symlink_to(TOOLS_BIN / "gemini")
    with FakeGemini(api_key=GEMINI_RIGHT_KEY) as fake:
        env = clean_env(
            home, TAKO_WORKSPACE=str(workspace), PATH=f"{bin_dir}:/usr/bin:/bin", OLLAMA_HOST="127.0.0.1:9",
            GEMINI_API_KEY=GEMINI_WRONG_KEY, GOOGLE_GEMINI_BASE_URL=fake.base_url,
            NO_PROXY=LOOPBACK, no_proxy=LOOPBACK,
            HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY,
        )
        daemon = DaemonProcess(home, env).start()
        try:
            with daemon.client(timeout=ANSWER_WAIT) as c:
                wait_for(lambda: "gemini" in _ready(c.call("status")), timeout=30)
                with pytest.raises(RemoteError) as err:
                    c.call("infer", {"prompt": "Say hello.", "provider": "gemini", "model": "gemini-2.5-flash"})
                assert "gemini: auth" in err.value.message
                gemini = next(p for p in c.call("status")["providers"] if p["name"] == "gemini")
                assert (gemini["ready"], gemini["reason"]) == (False, "cooling-down")
                assert gemini["detail"]["cooldown"]["after"] == "auth"
                assert gemini["detail"]["cooldown"]["until"] > time.time() + 60

                # Editing gemini's settings (the fix: selectedType) ends the cooldown too ...
                settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False}}
                (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
                wait_for(lambda: "gemini" in _ready(c.call("status")), timeout=30)
                with pytest.raises(RemoteError) as err:  # ... though here the key itself was wrong
                    c.call("infer", {"prompt": "Say hello.", "provider": "gemini", "model": "gemini-2.5-flash"})
                assert "gemini: auth" in err.value.message
                assert "gemini" not in _ready(c.call("status"))

                c.call("keys.set", {"name": "GEMINI_API_KEY", "value": GEMINI_RIGHT_KEY})  # the fix
                assert "gemini" in _ready(c.call("status"))  # the cooldown was about the old key
                result = c.call("infer", {"prompt": "Say hello.", "model": "gemini-2.5-flash"})
            assert result["provider"] == "gemini" and result["text"] == DEFAULT_REPLY
            assert fake.last.headers.get("x-goog-api-key") == GEMINI_RIGHT_KEY
        finally:
            daemon.stop()
        text = daemon.log_text() + daemon.stderr_text()
        assert GEMINI_RIGHT_KEY not in text and GEMINI_WRONG_KEY not in text


# --- stopping -------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", ["pi", "claude"])
def test_cancel_mid_stream_kills_the_cli(rig: Rig, cli: str) -> None:
    if cli == "claude":
        rig.prefer("claude")
    fake = rig.openai if cli == "pi" else rig.anthropic
    fake.set_mode("stall-mid-stream")  # two deltas, then silence
    with rig.client() as c:
        stream = Streamed(c, {"prompt": "Tell me a long story."})
        stream.until_texts(fake.error_after)
        assert rig.note_running(), "the CLI was running"
        c.notify("$/cancel", [stream.msgid])
        with pytest.raises(RemoteError) as err:
            stream.finish(timeout=30)
        assert err.value.code == "cancelled", err.value
        rig.assert_nothing_left()
        assert fake.wait_disconnect(15), "the model server saw the CLI go away"
        assert c.call("ping") == "pong"  # the connection lives on
    assert stream.texts() == pieces(DEFAULT_REPLY)[: fake.error_after]


@pytest.mark.parametrize("cli", ["pi", "claude"])
def test_client_hanging_up_mid_stream_kills_the_cli(rig: Rig, cli: str) -> None:
    if cli == "claude":
        rig.prefer("claude")
    fake = rig.openai if cli == "pi" else rig.anthropic
    fake.set_mode("stall-mid-stream")
    c = rig.client().connect()
    try:
        stream = Streamed(c, {"prompt": "Tell me a long story."})
        stream.until_texts(fake.error_after)
        assert rig.note_running(), "the CLI was running"
    finally:
        c.close()  # hang up, no $/cancel
    rig.assert_nothing_left()
    assert fake.wait_disconnect(15)
    with rig.client() as again:
        assert again.call("ping") == "pong"


def test_cancelling_an_async_stream_kills_the_cli(rig: Rig) -> None:
    """``stream: "async"`` (what an editor uses): the answer is the stream id, and
    ``$/cancel [stream_id]`` ends the stream with an ``end`` chunk saying so."""
    rig.openai.set_mode("stall-mid-stream")
    with rig.client() as c:
        stream_id = c.call("infer", {"prompt": "Tell me a long story.", "stream": "async"})["stream_id"]
        chunks: list[tuple[str, dict[str, Any]]] = []

        def next_chunk() -> tuple[str, dict[str, Any]]:
            for method, params in c.notifications(timeout=ANSWER_WAIT):
                if method == "takod.stream" and params[0] == stream_id:
                    chunks.append((params[2], params[3]))
                    return chunks[-1]
            raise AssertionError(f"the stream went quiet; chunks so far: {chunks}")

        while len([k for k, _ in chunks if k == "text"]) < rig.openai.error_after:  # all it sends before stalling
            next_chunk()
        assert rig.note_running(), "pi was running"
        c.notify("$/cancel", [stream_id])
        while (last := next_chunk())[0] != "end":
            pass
        assert last[1] == {"error": "cancelled: stream cancelled"}, last
        rig.assert_nothing_left()
        assert rig.openai.wait_disconnect(15)
        assert c.call("ping") == "pong"
    assert [p["text"] for k, p in chunks if k == "text"] == pieces(DEFAULT_REPLY)[: rig.openai.error_after]


def _read_stdout(proc: subprocess.Popen[bytes], want: bytes, timeout: float) -> bytes:
    """Read ``proc``'s stdout until it wrote ``want`` (bounded); return what it wrote."""
    assert proc.stdout is not None
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < len(want):
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"stdout so far {got!r}, waiting for {want!r}"
        data = os.read(proc.stdout.fileno(), 65536)
        assert data, f"stdout closed after {got!r}"
        got += data
    return got


def test_ctrl_c_in_takod_run_stops_the_cli(rig: Rig) -> None:
    rig.openai.set_mode("stall-mid-stream")
    run = subprocess.Popen(
        takod_interruptible("run", "Tell me a long story.", "--socket", str(rig.daemon.socket)),
        env=rig.cli_env(), cwd=rig.workspace, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        first = "".join(pieces(DEFAULT_REPLY)[: rig.openai.error_after]).encode()
        assert _read_stdout(run, first, ANSWER_WAIT) == first  # pi's first words, as they came
        assert rig.note_running(), "pi was running"
        run.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert run.returncode == EXIT_INTERRUPTED, stderr
    rig.assert_nothing_left()
    assert rig.openai.wait_disconnect(15)
    with rig.client() as c:
        assert c.call("ping") == "pong"


def test_a_stalled_stream_times_out_and_is_reported(rig: Rig) -> None:
    rig.openai.set_mode("stall-mid-stream")
    with rig.client() as c:
        stream = Streamed(c, {"prompt": "Say hello.", "timeout": 6})
        stream.until_texts(rig.openai.error_after)
        assert rig.note_running()
        with pytest.raises(RemoteError) as err:
            stream.finish(timeout=60)
    assert err.value.code == "provider_failed"
    assert "pi failed after it started answering: timeout" in err.value.message, err.value.message
    assert stream.texts() == pieces(DEFAULT_REPLY)[: rig.openai.error_after]
    assert not rig.anthropic.requests  # part of pi's answer was out: no fall-through
    rig.assert_nothing_left()
    assert rig.openai.wait_disconnect(15)


def test_a_hung_model_api_times_out_and_falls_through(rig: Rig) -> None:
    rig.prefer("claude")
    rig.anthropic.set_mode("hang")  # reads the request, never answers
    with rig.client() as c:
        stream = Streamed(c, {"prompt": "Say hello.", "timeout": 8})
        result = stream.finish()
    failed = _step(result, "claude")
    assert failed["outcome"] == "failed" and failed["reason"] == "timeout: no answer within 8 s", failed
    assert result["provider"] == "pi" and result["text"] == DEFAULT_REPLY
    assert rig.anthropic.requests, "claude reached the model before it timed out"
    assert ("fallback", {"provider": "claude", "error": failed["reason"]}) in stream.chunks
    rig.assert_nothing_left()
