"""The pi, codex, claude and gemini runners against the real CLIs (installed by
scripts/install-test-tools.sh into .tools/npm), each pointed at a loopback fake
model API from tests/fakes/model_servers.py:

- pi: a ``models.json`` provider whose ``baseUrl`` is the fake OpenAI server
  (chat completions), its ``apiKey`` naming an environment variable, in a temp
  ``PI_CODING_AGENT_DIR``, ``PI_OFFLINE=1``;
- codex: a ``[model_providers.loopback]`` table (``wire_api = "responses"``,
  ``env_key``) in a temp ``CODEX_HOME``;
- claude: ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY``;
- gemini: ``GOOGLE_GEMINI_BASE_URL`` and ``GEMINI_API_KEY``, with a temp
  ``GEMINI_CLI_HOME`` selecting API-key auth.

Nothing leaves the machine: HOME is a temp dir, every proxy variable points at
a closed loopback port with only loopback exempt (``NO_PROXY``), so a request
to anywhere else fails here.

Where only a broken CLI shows the case (hangs, ignores SIGTERM, floods stdout,
crashes, asks a question, leaves a child holding the pipe), the runners drive
tests/fakes/clis/scripted_cli.py instead.

Every child gets a unique marker variable; "no orphans" means no live process
carrying the marker or belonging to the CLI's session is left (read from /proc).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import anyio
import pytest

from takod_daemon.inference import claude_cli, codex_cli, gemini_cli, pi_cli
from takod_daemon.inference.types import (
    MAX_ANSWER_CHARS,
    Chunk,
    InferRequest,
    Message,
    ProviderFailure,
    RunContext,
    RunResult,
)
from takod_daemon.resolve.codex import resolve_codex
from takod_daemon.resolve.gemini import auth_facts, resolve_gemini
from tests.fakes.model_servers import DEFAULT_REPLY, FakeAnthropic, FakeGemini, FakeModelServer, FakeOpenAI, pieces
from tests.harness import REPO, TOOLS_BIN, require_tool, wait_for
from tests.procfs import alive

pytestmark = pytest.mark.interop

SCRIPTED_CLI = REPO / "tests" / "fakes" / "clis" / "scripted_cli.py"
MARKER_VAR = "TAKOD_TEST_RUN_MARKER"
GUARD = 240  # every test's async part is bounded by this
CLIS = ("pi", "codex", "claude", "gemini")
RUNNERS: dict[str, ModuleType] = {"pi": pi_cli, "codex": codex_cli, "claude": claude_cli, "gemini": gemini_cli}
KEYS = {
    "pi": "sk-test-pi-0123456789abcdef",
    "codex": "sk-test-codex-0123456789abcd",
    "claude": "sk-ant-test-0123456789abcdef",
    "gemini": "AIzaTestLoopbackKey0123456789abcdefgh",
}
DEAD_PROXY = "http://127.0.0.1:9"
T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        with anyio.fail_after(GUARD):
            return await fn()

    return anyio.run(bounded)


# --- processes ------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def session_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields else None


def in_sessions(sessions: set[int]) -> list[int]:
    """Live processes in any of ``sessions``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) in sessions:
                found.append(int(entry))
    return found


def assert_no_orphans(marker: str, sessions: frozenset[int] | set[int] = frozenset()) -> None:
    """No live process carries ``marker`` or is in ``sessions`` (a bounded
    wait: a killed process takes a moment to die)."""
    wait_for(lambda: not marked(marker) and not in_sessions(set(sessions)), timeout=15)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_kib(key: str = "VmRSS") -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key}")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS


# --- collecting what a runner emits -------------------------------------------------------


@dataclass
class Collector:
    chunks: list[Chunk] = field(default_factory=list)
    first_text: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        if chunk.kind == "text":
            self.first_text.set()

    def texts(self) -> list[str]:
        return [c.text for c in self.chunks if c.kind == "text"]


def fails(fn: Callable[[], Awaitable[Any]]) -> ProviderFailure:
    async def attempt() -> ProviderFailure:
        try:
            await fn()
        except ProviderFailure as exc:
            return exc
        raise AssertionError("the run succeeded")

    return run(attempt)


# --- real CLIs against loopback fakes -----------------------------------------------------


def base_env(home: Path, marker: str) -> dict[str, str]:
    loopback = "127.0.0.1,localhost,::1"
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "NO_PROXY": loopback,
        "no_proxy": loopback,
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        MARKER_VAR: marker,
    }


@dataclass
class Setup:
    cli: str
    fake: FakeModelServer
    ctx: RunContext
    model: str
    marker: str

    @property
    def runner(self) -> ModuleType:
        return RUNNERS[self.cli]

    @property
    def key(self) -> str:
        return KEYS[self.cli]

    def request(self, text: str = "Say hello.", **kwargs: Any) -> InferRequest:
        kwargs.setdefault("timeout", 120.0)
        return InferRequest(messages=[Message("user", text)], model=self.model, **kwargs)

    async def run(self, req: InferRequest, out: Collector) -> RunResult:
        return await self.runner.run(req, self.ctx, out)


@contextmanager
def real_cli(cli: str, tmp_path: Path, **fake_args: Any) -> Iterator[Setup]:
    binary = TOOLS_BIN / cli
    require_tool(binary, f"the real {cli} CLI")
    marker = uuid.uuid4().hex
    home = tmp_path / "home"
    home.mkdir()
    env = base_env(home, marker)
    key = KEYS[cli]
    fake: FakeModelServer
    if cli in ("pi", "codex"):
        fake = FakeOpenAI(api_key=key, models=["fake-model"], **fake_args)
    elif cli == "claude":
        fake = FakeAnthropic(api_key=key, models=["claude-sonnet-4-5"], **fake_args)
    else:
        fake = FakeGemini(api_key=key, **fake_args)  # gemini routes model names itself (2.5 -> 3.5)
    with fake:
        if cli == "pi":
            agent = tmp_path / "pi-agent"
            agent.mkdir()
            provider = {
                "baseUrl": fake.base_url,
                "api": "openai-completions",
                "apiKey": "TAKOD_FAKE_OPENAI_KEY",  # pi resolves it from the environment
                "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsUsageInStreaming": True},
                "models": [{"id": "fake-model"}],
            }
            (agent / "models.json").write_text(json.dumps({"providers": {"fake": provider}}))
            env |= {"PI_CODING_AGENT_DIR": str(agent), "PI_OFFLINE": "1", "TAKOD_FAKE_OPENAI_KEY": key}
            model = "fake/fake-model"
        elif cli == "codex":
            codex_home = tmp_path / "codex-home"
            codex_home.mkdir()
            (codex_home / "config.toml").write_text(
                'model = "fake-model"\n'
                'model_provider = "loopback"\n'
                "[model_providers.loopback]\n"
                'name = "Loopback"\n'
                f'base_url = "{fake.base_url}"\n'
                'env_key = "TAKOD_FAKE_CODEX_KEY"\n'
                'wire_api = "responses"\n'
            )
            env |= {"CODEX_HOME": str(codex_home), "TAKOD_FAKE_CODEX_KEY": key}
            model = "fake-model"
        elif cli == "claude":
            env |= {
                "ANTHROPIC_BASE_URL": fake.base_url,
                "ANTHROPIC_API_KEY": key,
                "CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config"),
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
            model = "claude-sonnet-4-5"
        else:
            gemini_home = tmp_path / "gemini-home"
            (gemini_home / ".gemini").mkdir(parents=True)
            settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False}}
            (gemini_home / ".gemini" / "settings.json").write_text(json.dumps(settings))
            env |= {"GOOGLE_GEMINI_BASE_URL": fake.base_url, "GEMINI_API_KEY": key, "GEMINI_CLI_HOME": str(gemini_home)}
            model = "gemini-2.5-flash"
        workspace = tmp_path / "ws"
        workspace.mkdir()
        ctx = RunContext(workspace=workspace, env=env, binary=str(binary), tmp_dir=tmp_path / "tmp")
        yield Setup(cli, fake, ctx, model, marker)
    assert_no_orphans(marker)


@pytest.mark.parametrize("cli", CLIS)
def test_the_answer_streams_in_order(cli: str, tmp_path: Path) -> None:
    token = f"tako-{uuid.uuid4().hex[:8]}"
    with real_cli(cli, tmp_path, chunk_delay=0.01) as s:
        out = Collector()
        req = s.request(f"Say hello to {token}.", system="Answer briefly; system-marker-7.")
        result = run(lambda: s.run(req, out))
        sent = json.dumps(s.fake.last.body)
    # codex prints an agent message only when it is complete
    assert out.texts() == ([DEFAULT_REPLY] if cli == "codex" else pieces(DEFAULT_REPLY))
    assert result.text == DEFAULT_REPLY
    assert result.usage.input_tokens == s.fake.usage_input_tokens
    assert result.usage.output_tokens == len(pieces(DEFAULT_REPLY))
    if cli == "gemini":  # the model gemini routed the request to, as the API saw it
        assert result.model and f"/models/{result.model}:" in s.fake.last.path
    else:  # codex does not say which model answered: the requested one
        assert result.model == {"pi": "fake/fake-model", "codex": "fake-model", "claude": "claude-sonnet-4-5"}[cli]
    assert token in sent and "system-marker-7" in sent  # prompt and system text reached the model


def test_codex_falls_back_from_websockets_and_names_its_model(tmp_path: Path) -> None:
    """codex's built-in OpenAI provider tries the Responses API over a WebSocket
    first; a compatible server without WebSockets answers 404, and codex falls
    back to HTTPS and answers. Nothing asked for a model: the one in config.toml
    answered, and the result says so."""
    binary = TOOLS_BIN / "codex"
    require_tool(binary, "the real codex CLI")
    marker = uuid.uuid4().hex
    home = tmp_path / "home"
    home.mkdir()
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    with FakeOpenAI(api_key=KEYS["codex"], models=["fake-model"]) as fake:
        (codex_home / "config.toml").write_text(f'model = "fake-model"\nopenai_base_url = "{fake.base_url}"\n')
        env = base_env(home, marker) | {"CODEX_HOME": str(codex_home), "CODEX_API_KEY": KEYS["codex"]}
        workspace = tmp_path / "ws"
        workspace.mkdir()
        model = resolve_codex(env).model  # what the engine gives the runner
        ctx = RunContext(workspace=workspace, env=env, binary=str(binary), tmp_dir=tmp_path / "tmp", model=model)
        out = Collector()
        result = run(lambda: codex_cli.run(InferRequest(messages=[Message("user", "Say hello.")], timeout=120), ctx, out))
        paths = [(r.method, r.path) for r in fake.requests]
    assert ("GET", "/v1/responses") in paths and ("POST", "/v1/responses") in paths  # tried ws, then https
    assert result.text == DEFAULT_REPLY and result.model == "fake-model"
    assert_no_orphans(marker)


def _gemini_reply(rec: Any) -> str:
    """The fake's answer: a classifier verdict (with the long reasoning real
    classifiers give) for gemini's router, the default reply otherwise."""
    if rec.path.endswith(":generateContent"):
        return json.dumps({"complexity_reasoning": " ".join(["simple"] * 40), "complexity_score": 10})
    return DEFAULT_REPLY


def gemini_auth_scope(env: dict[str, str]) -> str | None:
    """What the engine gives the gemini runner: the auth scope of gemini's resolution."""
    return resolve_gemini((), env, auth_facts(env)).auth_scope


def test_gemini_set_to_a_google_login_it_lacks_uses_the_api_key_readiness_counted(tmp_path: Path) -> None:
    """~/.gemini/settings.json selects oauth-personal, but there is no login: gemini
    would exit 41 asking to sign in. A GEMINI_API_KEY is there (takod calls gemini
    ready by it): the run uses it, and the user's settings file is left as it was."""
    binary = TOOLS_BIN / "gemini"
    require_tool(binary, "the real gemini CLI")
    marker = uuid.uuid4().hex
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    settings = json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}, "privacy": {"usageStatisticsEnabled": False}})
    (home / ".gemini" / "settings.json").write_text(settings)
    with FakeGemini(api_key=KEYS["gemini"]) as fake:
        env = base_env(home, marker) | {"GOOGLE_GEMINI_BASE_URL": fake.base_url, "GEMINI_API_KEY": KEYS["gemini"]}
        workspace = tmp_path / "ws"
        workspace.mkdir()
        ctx = RunContext(workspace=workspace, env=env, binary=str(binary), tmp_dir=tmp_path / "tmp",
                         auth_scope=gemini_auth_scope(env))
        req = InferRequest(messages=[Message("user", "Say hello.")], model="gemini-2.5-flash", timeout=120)
        result = run(lambda: gemini_cli.run(req, ctx, Collector()))
        sent_key = fake.last.headers.get("x-goog-api-key")
    assert result.text == DEFAULT_REPLY and sent_key == KEYS["gemini"]
    assert (home / ".gemini" / "settings.json").read_text() == settings
    assert not (home / ".gemini" / "oauth_creds.json").exists()
    assert_no_orphans(marker)


def test_gemini_with_only_an_api_key_answers_and_names_the_routed_model(tmp_path: Path) -> None:
    """Only GEMINI_API_KEY (and a base URL): no auth method in gemini's settings,
    which alone makes gemini exit 41 "Invalid auth method selected". No model
    asked for: gemini's router asks its classifier first, then streams the answer
    from the model it chose; that model is the one reported."""
    binary = TOOLS_BIN / "gemini"
    require_tool(binary, "the real gemini CLI")
    marker = uuid.uuid4().hex
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({"privacy": {"usageStatisticsEnabled": False}}))
    with FakeGemini(api_key=KEYS["gemini"], reply=_gemini_reply) as fake:
        env = base_env(home, marker) | {"GOOGLE_GEMINI_BASE_URL": fake.base_url, "GEMINI_API_KEY": KEYS["gemini"]}
        workspace = tmp_path / "ws"
        workspace.mkdir()
        ctx = RunContext(workspace=workspace, env=env, binary=str(binary), tmp_dir=tmp_path / "tmp",
                         auth_scope=gemini_auth_scope(env))
        result = run(lambda: gemini_cli.run(InferRequest(messages=[Message("user", "Say hello.")], timeout=120), ctx, Collector()))
        streamed = [r.path for r in fake.requests if r.path.endswith(":streamGenerateContent")]
        classified = [r.path for r in fake.requests if r.path.endswith(":generateContent")]
    assert result.text == DEFAULT_REPLY
    assert classified, "gemini's router did not run: the test shows nothing"
    assert streamed and streamed[-1].endswith(f"/models/{result.model}:streamGenerateContent")
    assert json.loads((home / ".gemini" / "settings.json").read_text()) == {"privacy": {"usageStatisticsEnabled": False}}
    assert_no_orphans(marker)


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(("mode", "kind"), [("http-401", "auth"), ("http-429", "rate_limit"), ("http-500", "unavailable")])
def test_a_failure_before_the_stream_is_classified(cli: str, mode: str, kind: str, tmp_path: Path) -> None:
    with real_cli(cli, tmp_path, echo_secrets=True) as s:  # the server quotes the key in its errors
        s.fake.set_mode(mode)  # type: ignore[arg-type]
        out = Collector()
        failure = fails(lambda: s.run(s.request(), out))
    assert failure.kind == kind, failure
    assert out.chunks == []
    assert s.key not in failure.message
    if kind == "rate_limit" and cli != "codex":  # codex does not relay it
        assert failure.retry_after == 7.0  # the fake's Retry-After, as the CLI relays it


@pytest.mark.parametrize("cli", CLIS)
def test_a_failure_mid_stream_reports_after_the_first_tokens(cli: str, tmp_path: Path) -> None:
    def reply(rec: Any) -> str:
        # claude falls back to a non-streaming request after a mid-stream error;
        # a different answer there is the case takod must not pass off as one answer.
        streaming = not (isinstance(rec.body, dict) and rec.body.get("stream") is False)
        return DEFAULT_REPLY if streaming or cli != "claude" else "A different answer altogether."

    with real_cli(cli, tmp_path, chunk_delay=0.01, reply=reply) as s:
        s.fake.set_mode("error-event")
        out = Collector()
        failure = fails(lambda: s.run(s.request(), out))
    assert failure.kind == "unavailable", failure
    first = pieces(DEFAULT_REPLY)[: s.fake.error_after]
    if cli == "codex":
        assert out.texts() == []  # codex never printed the unfinished message
    else:
        assert out.texts()[: len(first)] == first


@pytest.mark.parametrize("cli", CLIS)
def test_cancelling_mid_stream_stops_the_cli_and_its_children(cli: str, tmp_path: Path) -> None:
    token = f"private-{uuid.uuid4().hex[:8]}"
    with real_cli(cli, tmp_path, chunk_delay=0.01) as s:
        s.fake.set_mode("stall-mid-stream")
        out = Collector()
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.run, s.request(f"Tell {token} a story."), out)
                with anyio.fail_after(90):
                    if cli == "codex":  # codex shows nothing of an unfinished message
                        while not s.fake.requests:
                            await anyio.sleep(0.05)
                    else:
                        await out.first_text.wait()
                pids = marked(s.marker)
                seen["pids"] = pids
                seen["sessions"] = {sid for sid in map(session_of, pids) if sid is not None}
                seen["cmdlines"] = b"\0".join(cmdline(pid) for pid in pids)
                tg.cancel_scope.cancel()

        run(scenario)
        assert seen["pids"], "the CLI was running"
        assert_no_orphans(s.marker, seen["sessions"])
        assert s.fake.wait_disconnect(15), "the model server saw the client go away"
    assert token.encode() not in seen["cmdlines"]  # the prompt is not on any command line
    assert s.key.encode() not in seen["cmdlines"]  # nor the key


@pytest.mark.parametrize("cli", CLIS)
def test_a_stalled_stream_times_out(cli: str, tmp_path: Path) -> None:
    with real_cli(cli, tmp_path, chunk_delay=0.01) as s:
        s.fake.set_mode("stall-mid-stream")
        out = Collector()
        failure = fails(lambda: s.run(s.request(timeout=15.0), out))
        assert s.fake.requests, "the CLI reached the model before the timeout"
        assert s.fake.wait_disconnect(15)
    assert failure.kind == "timeout", failure


# What each CLI makes of one event whose data is not JSON, in the middle of the stream.
MALFORMED_OUTCOME = {"pi": "unavailable", "codex": "ok", "claude": "ok", "gemini": "unavailable"}


@pytest.mark.parametrize("cli", CLIS)
def test_malformed_server_output(cli: str, tmp_path: Path) -> None:
    with real_cli(cli, tmp_path, chunk_delay=0.01) as s:
        s.fake.set_mode("malformed")
        out = Collector()

        async def attempt() -> RunResult | ProviderFailure:
            try:
                return await s.run(s.request(), out)
            except ProviderFailure as exc:
                return exc

        outcome = run(attempt)
    streamed = "".join(out.texts())
    if MALFORMED_OUTCOME[cli] == "ok":
        assert isinstance(outcome, RunResult) and outcome.text == DEFAULT_REPLY == streamed
    else:
        assert isinstance(outcome, ProviderFailure) and outcome.kind == "unavailable", outcome
        assert DEFAULT_REPLY.startswith(streamed)  # no garbage reached the caller


# --- a CLI that misbehaves ------------------------------------------------------------------


def scripted(tmp_path: Path, steps: list[dict[str, Any]], *, marker: str, **env: str) -> RunContext:
    script = tmp_path / "steps.json"
    script.write_text(json.dumps(steps))
    wrapper = tmp_path / "fake-cli"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"FAKE_CLI_SCRIPT={shlex.quote(str(script))} exec {shlex.quote(sys.executable)} "
        f'{shlex.quote(str(SCRIPTED_CLI))} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return RunContext(workspace=tmp_path, env=base_env(home, marker) | env, binary=str(wrapper), tmp_dir=tmp_path / "tmp")


def out(value: dict[str, Any]) -> dict[str, str]:
    return {"out": json.dumps(value)}


# A minimal successful answer ("ok") in each CLI's own event format.
ANSWER_OK: dict[str, list[dict[str, Any]]] = {
    "pi": [
        out({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "delta": "ok"}}),
        out({"type": "message_end", "message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}], "stopReason": "stop"}}),
        out({"type": "agent_end", "messages": [{"role": "assistant", "content": [{"type": "text", "text": "ok"}], "stopReason": "stop"}]}),
    ],
    "codex": [
        out({"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "ok"}}),
        out({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}}),
    ],
    "claude": [
        out({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ok"}}}),
        out({"type": "assistant", "message": {"model": "m", "content": [{"type": "text", "text": "ok"}]}}),
        out({"type": "result", "subtype": "success", "is_error": False, "result": "ok"}),
    ],
    "gemini": [
        out({"type": "message", "role": "assistant", "content": "ok", "delta": True}),
        out({"type": "result", "status": "success", "stats": {"input_tokens": 1, "output_tokens": 1, "models": {}}}),
    ],
}


@pytest.mark.parametrize("cli", CLIS)
def test_the_prompt_goes_on_stdin_and_the_key_only_in_the_environment(cli: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    record = tmp_path / "record"
    record.mkdir()
    steps: list[dict[str, Any]] = [
        {"save_stdin": str(record / "stdin")},
        {"save_argv": str(record / "argv")},
        {"save_env": str(record / "env")},
    ]
    if cli == "pi":
        steps.append({"copy_arg_file": "--system-prompt", "to": str(record / "system")})
    elif cli == "claude":
        steps.append({"copy_arg_file": "--system-prompt-file", "to": str(record / "system")})
    elif cli == "gemini":
        steps.append({"copy_env_file": "GEMINI_SYSTEM_MD", "to": str(record / "system")})
    key_var = {"pi": "OPENAI_API_KEY", "codex": "OPENAI_API_KEY", "claude": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}[cli]
    ctx = scripted(tmp_path, steps + ANSWER_OK[cli], marker=marker, **{key_var: KEYS[cli]})
    question, system = f"question-{marker[:8]}", f"system-{marker[:8]}"
    req = InferRequest(messages=[Message("user", question)], system=system, timeout=60)
    collected = Collector()
    result = run(lambda: RUNNERS[cli].run(req, ctx, collected))
    assert result.text == "ok" and collected.texts() == ["ok"]
    argv = json.loads((record / "argv").read_text())
    env = json.loads((record / "env").read_text())
    stdin = (record / "stdin").read_bytes()
    assert question.encode() in stdin
    assert not any(question in arg or system in arg or KEYS[cli] in arg for arg in argv)
    assert env[key_var] == KEYS[cli]
    if cli == "codex":
        assert system.encode() in stdin  # folded into the prompt
    else:
        assert (record / "system").read_text() == system
        leftovers = list((tmp_path / "tmp").iterdir())
        assert leftovers == []  # the private system-prompt file is gone
    if cli == "pi":
        assert env["PI_CODING_AGENT_DIR"] == str(tmp_path / ".tako" / "pi" / "agent")
        assert "--offline" not in argv
    assert_no_orphans(marker)


def test_a_timeout_kills_the_cli_and_what_it_started(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    steps = [{"spawn": ["sleep", "600"]}, out({"type": "thread.started", "thread_id": "t"}), {"hang": True}]
    ctx = scripted(tmp_path, steps, marker=marker)
    # 4 MiB of prompt the CLI never reads: the stdin writer must not hold the run either
    req = InferRequest(messages=[Message("user", "x" * (4 << 20))], timeout=2.0)
    failure = fails(lambda: codex_cli.run(req, ctx, Collector()))
    assert failure.kind == "timeout"
    assert_no_orphans(marker)


def test_cancelling_a_cli_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    steps = [
        {"ignore_term": True},
        {"spawn": ["sleep", "600"]},
        out({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hel"}}}),
        {"hang": True},
    ]
    ctx = scripted(tmp_path, steps, marker=marker)
    collected = Collector()
    seen: dict[str, set[int]] = {}

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(claude_cli.run, InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, collected)
            await collected.first_text.wait()
            seen["sessions"] = {sid for sid in map(session_of, marked(marker)) if sid is not None}
            tg.cancel_scope.cancel()

    run(scenario)
    assert collected.texts() == ["Hel"]
    assert seen["sessions"]
    assert_no_orphans(marker, seen["sessions"])


def test_a_failing_emit_surfaces_as_itself_and_stops_the_cli(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    delta = out({"type": "message", "role": "assistant", "content": "Hel", "delta": True})
    ctx = scripted(tmp_path, [{"spawn": ["sleep", "600"]}, delta, {"hang": True}], marker=marker)

    class ClientGone(Exception):
        pass

    async def emit(chunk: Chunk) -> None:
        raise ClientGone(chunk.text)

    async def attempt() -> BaseException:
        try:
            await gemini_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, emit)
        except ClientGone as exc:  # not an exception group, not a ProviderFailure
            return exc
        raise AssertionError("emit's failure was swallowed")

    assert str(run(attempt)) == "Hel"
    assert_no_orphans(marker)


def test_a_crash_mid_stream(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    delta = {"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hel"}}}
    ctx = scripted(tmp_path, [out(delta), out(delta), {"err": "about to fall over"}, {"kill_self": "SEGV"}], marker=marker)
    collected = Collector()
    failure = fails(lambda: claude_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=60), ctx, collected))
    assert failure.kind == "crashed"
    assert "exited -11" in failure.message
    assert collected.texts() == ["Hel", "Hel"]
    assert_no_orphans(marker)


@pytest.mark.parametrize(
    ("where", "text"),
    [("err_raw", "Press Enter to continue... "), ("out_raw", "Overwrite settings? (y/n) ")],
)
def test_an_interactive_question_fails_at_once(where: str, text: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    # no newline: the question waits on the same line, as prompts do
    ctx = scripted(tmp_path, [{where: text}, {"hang": True}], marker=marker)
    failure = fails(lambda: gemini_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, Collector()))
    assert failure.kind == "interactive", failure  # not a timeout: it was noticed as it appeared
    assert_no_orphans(marker)


def test_a_huge_line_fails_without_being_held(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    ctx = scripted(tmp_path, [{"flood_line": 256 << 20}, {"hang": True}], marker=marker)
    before = rss_kib()
    reset_peak_rss()
    failure = fails(lambda: pi_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, Collector()))
    grew_mib = (rss_kib("VmHWM") - before) / 1024
    assert failure.kind == "crashed" and "line of more than" in failure.message
    assert grew_mib < 64, f"peak memory grew {grew_mib:.0f} MiB for a 256 MiB line"
    assert_no_orphans(marker)


def test_endless_noise_is_bounded_and_times_out(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    ctx = scripted(tmp_path, [{"flood_noise": True}], marker=marker)
    before = rss_kib()
    reset_peak_rss()
    failure = fails(lambda: codex_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=3.0), ctx, Collector()))
    grew_mib = (rss_kib("VmHWM") - before) / 1024
    assert failure.kind == "timeout"
    assert grew_mib < 32, f"peak memory grew {grew_mib:.0f} MiB"
    assert_no_orphans(marker)


def test_an_endless_answer_is_cut_off(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    delta = {"type": "message", "role": "assistant", "content": "y" * (1 << 20), "delta": True}
    ctx = scripted(tmp_path, [{"out": json.dumps(delta), "times": 1000}, {"hang": True}], marker=marker)
    collected = Collector()
    before = rss_kib()
    reset_peak_rss()
    failure = fails(lambda: gemini_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, collected))
    grew_mib = (rss_kib("VmHWM") - before) / 1024
    assert failure.kind == "crashed" and "answered more than" in failure.message
    assert sum(len(c.text) for c in collected.chunks) <= MAX_ANSWER_CHARS
    assert grew_mib < 64, f"peak memory grew {grew_mib:.0f} MiB for a 1 GiB answer"
    assert_no_orphans(marker)


def test_a_child_left_holding_stdout_does_not_hold_the_run(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    # The CLI answers and exits, but a child it started keeps stdout open.
    steps = [*ANSWER_OK["claude"], {"spawn": ["sleep", "600"]}, {"exit": 0}]
    ctx = scripted(tmp_path, steps, marker=marker)
    result = run(lambda: claude_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=120), ctx, Collector()))
    assert result.text == "ok"  # finished without waiting for the timeout
    assert_no_orphans(marker)


def test_garbage_output_is_reported_as_crashed(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    steps = [{"out": "{definitely not json"}, {"out": "Traceback (most recent call last):"}, {"exit": 0}]
    ctx = scripted(tmp_path, steps, marker=marker)
    failure = fails(lambda: codex_cli.run(InferRequest(messages=[Message("user", "hi")], timeout=60), ctx, Collector()))
    assert failure.kind == "crashed" and "unreadable" in failure.message
    assert_no_orphans(marker)


def test_a_missing_binary_is_unavailable(tmp_path: Path) -> None:
    ctx = RunContext(workspace=tmp_path, env={"PATH": "/nonexistent"}, binary=str(tmp_path / "no-such-cli"))
    failure = fails(lambda: gemini_cli.run(InferRequest(messages=[Message("user", "hi")]), ctx, Collector()))
    assert failure.kind == "unavailable" and "could not start" in failure.message
    ctx = RunContext(workspace=tmp_path, env={"PATH": "/nonexistent"})
    failure = fails(lambda: claude_cli.run(InferRequest(messages=[Message("user", "hi")]), ctx, Collector()))
    assert failure.kind == "unavailable" and "not installed" in failure.message
