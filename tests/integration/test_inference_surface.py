"""The Inference skill's surface through the real CLI and a real daemon: routing
rules and their explanation, the environment configuration read from the
client's shell, the skill's flags, and `takod models` with detail.

Ollama and the Anthropic API are loopback fakes. The daemon's environment has
none of the routing variables unless a test says so: what the CLI's shell
exports is what must count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fakes.model_servers import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama, default_models, tag_entry
from tests.harness import DaemonProcess, clean_env, wait_for
from tests.unit.test_routing_rules import LONG_DESIGN_QUESTION

CANARY_KEY = "sk-ant-api03-CANARYsurfaceKEY0123456789abcdef"
TAKOD = shutil.which("takod")
MODELS = [*default_models(), tag_entry("qwen2.5-coder:7b", size=4_683_087_332, family="qwen2", parameter_size="7.6B"),
          tag_entry("mistral:latest", size=4_113_301_824, family="llama", parameter_size="7.2B"),
          tag_entry("mxbai-embed-large:latest", size=669_615_493, family="bert", parameter_size="334M",
                    quantization_level="F16")]


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(chunk_delay=0.0, models=MODELS) as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=CANARY_KEY, chunk_delay=0.0) as server:
        yield server


@pytest.fixture
def surface(home: Path, workspace: Path, ollama: FakeOllama, anthropic: FakeAnthropic) -> Iterator[Any]:
    """Start a daemon (Ollama selected, an Anthropic key); yield a function that runs the CLI."""
    started: list[DaemonProcess] = []

    def start(**daemon_vars: str) -> DaemonProcess:
        extra = {"TAKO_WORKSPACE": str(workspace), "PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": CANARY_KEY,
                 "ANTHROPIC_BASE_URL": anthropic.url, **daemon_vars}
        if "OLLAMA_BASE_URL" not in daemon_vars:
            extra["OLLAMA_HOST"] = ollama.host
        d = DaemonProcess(home, clean_env(home, **extra)).start()
        started.append(d)
        with d.client() as c:
            wait_for(lambda: c.call("status")["selected"] == "ollama", timeout=20)
        return d

    yield start
    for d in started:
        d.stop()
        assert CANARY_KEY not in d.log_text() + d.stderr_text()


def cli(d: DaemonProcess, *args: str, stdin: str | None = None, **shell: str) -> subprocess.CompletedProcess[str]:
    """`takod ARGS` from a shell that exports ``shell`` (and no API key)."""
    assert TAKOD
    env = clean_env(d.home, TAKOD_NO_SPAWN="1", TAKOD_SOCKET=str(d.socket), **shell)
    return subprocess.run([TAKOD, *args], env=env, cwd=d.home, input=stdin or "", capture_output=True,
                          text=True, timeout=120)


def run_json(d: DaemonProcess, *args: str, **shell: str) -> dict[str, Any]:
    proc = cli(d, "run", "--json", *args, **shell)
    assert proc.returncode == 0, proc.stderr
    assert CANARY_KEY not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def answered(result: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in result["route"] if s["outcome"] == "answered")


# --- routing --------------------------------------------------------------------


def test_routing_exported_in_the_clients_shell_counts(surface: Any, anthropic: FakeAnthropic) -> None:
    d = surface()
    # Without routing the long design question goes where everything goes: the selected Ollama.
    assert run_json(d, LONG_DESIGN_QUESTION)["provider"] == "ollama"
    routed = run_json(d, LONG_DESIGN_QUESTION, INFERENCE_ENABLE_ROUTING="true")
    assert routed["provider"] == "anthropic"
    assert "complex prompt" in answered(routed)["rule"]
    sent = len(anthropic.requests)
    private = run_json(d, "Help me with this proprietary code", INFERENCE_ENABLE_ROUTING="1")
    assert private["provider"] == "ollama"
    assert answered(private)["rule"] == "kept local: the prompt matched 'proprietary' (private material)"
    assert len(anthropic.requests) == sent


def test_ollama_enable_routing_in_the_daemons_environment(surface: Any) -> None:
    d = surface(OLLAMA_ENABLE_ROUTING="true")
    with d.client() as c:
        result = c.call("infer", {"prompt": LONG_DESIGN_QUESTION})
        assert result["provider"] == "anthropic"
        # ... and a client that switches it off wins
        result = c.call("infer", {"prompt": LONG_DESIGN_QUESTION, "env": {"OLLAMA_ENABLE_ROUTING": "false"}})
        assert result["provider"] == "ollama"


def test_the_stream_says_the_rule_on_the_terminal(surface: Any) -> None:
    d = surface()
    proc = cli(d, "run", "Summarize locally: the meeting ran long", INFERENCE_ENABLE_ROUTING="1")
    assert proc.returncode == 0, proc.stderr
    assert "→ ollama (llama3.2:latest) — kept local: the prompt asked for 'locally'" in proc.stderr


def test_kept_local_with_ollama_down_says_why_and_what_to_do(
    surface: Any, ollama: FakeOllama, anthropic: FakeAnthropic
) -> None:
    d = surface()
    ollama.set_mode("refuse")
    proc = cli(d, "run", "Summarize locally: my notes", INFERENCE_ENABLE_ROUTING="1")
    assert proc.returncode == 1
    assert "kept local: the prompt asked for 'locally'" in proc.stderr
    assert "ollama" in proc.stderr and "ollama serve" in proc.stderr and "--provider" in proc.stderr
    assert not [r for r in anthropic.requests if r.path.endswith("/messages")]  # it never left the machine


def test_default_backend_alone_is_tried_first(surface: Any) -> None:
    d = surface()
    result = run_json(d, "hi", INFERENCE_DEFAULT_BACKEND="anthropic")
    assert result["provider"] == "anthropic"
    assert answered(result)["rule"] == "INFERENCE_DEFAULT_BACKEND=anthropic"


def test_a_bad_variable_is_a_usage_error_naming_it(surface: Any) -> None:
    d = surface()
    proc = cli(d, "run", "hi", OLLAMA_TIMEOUT="thirty")
    assert proc.returncode == 2
    assert "OLLAMA_TIMEOUT='thirty'" in proc.stderr and "milliseconds" in proc.stderr


# --- environment configuration ---------------------------------------------------


def test_models_from_the_variables(surface: Any, ollama: FakeOllama, anthropic: FakeAnthropic) -> None:
    d = surface()
    shell = {"OLLAMA_CODE_MODEL": "qwen2.5-coder:7b", "OLLAMA_DEFAULT_MODEL": "mistral:latest",
             "ANTHROPIC_DEFAULT_MODEL": "claude-haiku-4-5", "OLLAMA_EMBED_MODEL": "mxbai-embed-large:latest"}

    def last_chat_model() -> str:
        return [r for r in ollama.requests if r.path == "/api/chat"][-1].body["model"]

    assert run_json(d, "Review: function add(a,b) { return a+b }", **shell)["model"] == "qwen2.5-coder:7b"
    assert last_chat_model() == "qwen2.5-coder:7b"
    run_json(d, "Write a story", **shell)
    assert last_chat_model() == "mistral:latest"  # OLLAMA_DEFAULT_MODEL over the first pulled
    assert run_json(d, "--provider", "anthropic", "hi", **shell)["model"] == "claude-haiku-4-5"
    assert anthropic.last.body["model"] == "claude-haiku-4-5"
    proc = cli(d, "embed", "--text", "hello", "--output", "json", **shell)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "mxbai-embed-large:latest"


def test_ollama_timeout_bounds_an_ollama_attempt(surface: Any, ollama: FakeOllama) -> None:
    d = surface()
    ollama.chunk_delay = 60.0
    ollama.set_mode("slow-stream")  # the first word at once, the next a minute later
    proc = cli(d, "run", "--json", "hi", OLLAMA_TIMEOUT="1500")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "provider_failed" and "no answer within 1.5 s" in error["message"]


def test_anthropic_timeout_bounds_an_anthropic_attempt(surface: Any, anthropic: FakeAnthropic) -> None:
    d = surface()
    anthropic.set_mode("hang")
    proc = cli(d, "run", "--json", "--provider", "anthropic", "hi", ANTHROPIC_TIMEOUT="1500")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "no_provider" and "timeout: no answer within 1.5 s" in error["message"]


def test_ollama_base_url_is_where_the_daemon_probes(surface: Any, ollama: FakeOllama) -> None:
    d = surface(OLLAMA_BASE_URL=ollama.url)  # and no OLLAMA_HOST
    with d.client() as c:
        status = next(p for p in c.call("status")["providers"] if p["name"] == "ollama")
    assert status["ready"] and status["detail"]["url"].rstrip("/") == ollama.url.rstrip("/")


def test_ollama_base_url_from_the_clients_shell(surface: Any, ollama: FakeOllama) -> None:
    d = surface()
    with FakeOllama(chunk_delay=0.0, reply="the other Ollama answered") as other:
        result = run_json(d, "hi", OLLAMA_BASE_URL=other.url)
        assert result["provider"] == "ollama" and result["text"] == "the other Ollama answered"
        assert any(r.path == "/api/chat" for r in other.requests)


# --- flags ----------------------------------------------------------------------


def test_the_skills_flags(surface: Any, ollama: FakeOllama) -> None:
    d = surface()
    result = run_json(d, "--backend", "ollama", "-m", "qwen2.5-coder:7b", "-s", "You are terse", "-t", "0.3",
                      "--prompt", "Explain async")
    assert result["provider"] == "ollama"
    chat = [r for r in ollama.requests if r.path == "/api/chat"][-1].body
    assert chat["model"] == "qwen2.5-coder:7b" and chat["options"]["temperature"] == 0.3
    assert chat["messages"][0] == {"role": "system", "content": "You are terse"}
    assert chat["messages"][-1]["content"] == "Explain async"
    # `--prompt TEXT MODEL`: the argument is the model, as in the skill's Run.ts
    assert run_json(d, "--prompt", "hi", "llama3.2:latest")["model"] == "llama3.2:latest"
    proc = cli(d, "run", "--prompt", "hi", "one", "two")
    assert proc.returncode == 2 and "give the prompt once" in proc.stderr


def test_chat_takes_backend_model_and_system(surface: Any, ollama: FakeOllama) -> None:
    d = surface()
    proc = cli(d, "chat", "--backend", "ollama", "-m", "qwen2.5-coder:7b", "-s", "Be kind", stdin="hello\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    chat = [r for r in ollama.requests if r.path == "/api/chat"][-1].body
    assert chat["model"] == "qwen2.5-coder:7b" and chat["messages"][0]["content"] == "Be kind"


def test_chat_uses_the_chat_model_from_its_first_turn(surface: Any, ollama: FakeOllama) -> None:
    d = surface()
    proc = cli(d, "chat", stdin="hello\nand then?\n/exit\n", OLLAMA_CHAT_MODEL="qwen2.5-coder:7b")
    assert proc.returncode == 0, proc.stderr
    models = [r.body["model"] for r in ollama.requests if r.path == "/api/chat"]
    assert models == ["qwen2.5-coder:7b", "qwen2.5-coder:7b"]


# --- models -----------------------------------------------------------------------


def test_models_table_has_size_date_parameters_and_quantization(surface: Any) -> None:
    d = surface()
    proc = cli(d, "models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "MODEL", "SIZE", "MODIFIED", "PARAMS", "QUANT"]
    llama = next(line.split() for line in lines if "llama3.2:latest" in line)
    assert llama[0] == "ollama" and " ".join(llama[2:]) == "2.0 GB 2026-08-01 3.2B Q4_K_M"
    assert any(line.startswith("anthropic") and "claude-sonnet-4-5" in line for line in lines)
    assert CANARY_KEY not in proc.stdout + proc.stderr


@pytest.mark.parametrize("flag", [("--json",), ("--format", "json")])
def test_models_json_carries_the_detail(surface: Any, flag: tuple[str, ...]) -> None:
    d = surface()
    proc = cli(d, "models", "--backend", "ollama", *flag)
    assert proc.returncode == 0, proc.stderr
    models = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    detail = models["qwen2.5-coder:7b"]["detail"]
    assert detail["size"] == 4_683_087_332 and detail["modified_at"].startswith("2026-08-01")
    assert detail["parameter_size"] == "7.6B" and detail["parameter_count"] == 7_600_000_000
    assert detail["quantization"] == "Q4_K_M" and detail["context_length"] == 131072
    assert models["nomic-embed-text:latest"]["detail"]["capabilities"] == ["embedding"]
