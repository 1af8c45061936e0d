"""Prompts end to end through a real daemon: streaming, fallback, cooldown, cancellation.

Ollama and the Anthropic Messages API are loopback fakes; everything between
the client and them is the real daemon. The CLI providers' runners are tested
against the real CLIs in tests/interop/test_cli_runners.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from takod import RemoteError
from tests.fakes.model_servers import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama, tag_entry
from tests.harness import DaemonProcess, clean_env, wait_for

CANARY_KEY = "sk-ant-api03-CANARYinferKEY0123456789abcdef"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(chunk_delay=0.01) as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=CANARY_KEY, chunk_delay=0.01) as server:
        yield server


def start(home: Path, workspace: Path, ollama: FakeOllama, anthropic: FakeAnthropic | None = None) -> DaemonProcess:
    extra = {"TAKO_WORKSPACE": str(workspace), "OLLAMA_HOST": ollama.host, "PATH": "/usr/bin:/bin"}
    if anthropic is not None:
        extra.update(ANTHROPIC_API_KEY=CANARY_KEY, ANTHROPIC_BASE_URL=anthropic.url)
    daemon = DaemonProcess(home, clean_env(home, **extra)).start()
    with daemon.client() as c:
        wait_for(lambda: c.call("status")["selected"] == "ollama", timeout=20)
    return daemon


@pytest.fixture
def daemon_with(home: Path, workspace: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(ollama: FakeOllama, anthropic: FakeAnthropic | None = None) -> DaemonProcess:
        d = start(home, workspace, ollama, anthropic)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
        assert CANARY_KEY not in d.log_text() + d.stderr_text()


def test_prompt_answered_by_the_selected_provider(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    with d.client() as c:
        result = c.call("infer", {"prompt": "Say hello", "system": "Be brief"})
    assert result["provider"] == "ollama"
    assert result["text"] == ollama.reply
    assert result["model"] == "llama3.2:latest"
    answered = [s for s in result["route"] if s["outcome"] == "answered"]
    assert [s["provider"] for s in answered] == ["ollama"]
    chat = [r for r in ollama.requests if r.path == "/api/chat"][-1]
    assert chat.body["messages"][-1] == {"role": "user", "content": "Say hello"}
    assert any(m["role"] == "system" and "Be brief" in m["content"] for m in chat.body["messages"])


def test_stream_chunks_arrive_before_the_answer_and_add_up_to_it(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    with d.client() as c:
        events = list(c.stream("infer", {"prompt": "hi", "stream": True}))
    kinds = [k for k, _ in events]
    assert kinds[0] == "route" and kinds[-1] == "result"
    text = "".join(p["text"] for k, p in events if k == "text")
    assert kinds.count("text") > 3  # really streamed, not one blob
    assert text == events[-1][1]["text"] == ollama.reply


def test_failure_before_the_first_token_falls_through(
    daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic, workspace: Path
) -> None:
    d = daemon_with(ollama, anthropic)
    ollama.set_mode("http-500")  # readiness still says ready: the failure shows only when used
    with d.client() as c:
        events = list(c.stream("infer", {"prompt": "hi", "stream": True}))
    result = events[-1][1]
    assert result["provider"] == "anthropic"
    assert result["text"] == anthropic.reply if isinstance(anthropic.reply, str) else True
    failed = [s for s in result["route"] if s["outcome"] == "failed"]
    assert failed and failed[0]["provider"] == "ollama" and failed[0]["reason"].startswith("unavailable")
    assert ("fallback", {"provider": "ollama", "error": failed[0]["reason"]}) in events
    assert anthropic.last.headers["x-api-key"] == CANARY_KEY
    log = (workspace / ".tako" / "logs" / "error.log").read_text()
    record = json.loads(log.splitlines()[-1])
    assert record["provider"] == "ollama" and record["after_first_token"] is False
    assert CANARY_KEY not in log


def test_failure_after_the_first_token_is_reported_not_spliced(
    daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic
) -> None:
    d = daemon_with(ollama, anthropic)
    ollama.set_mode("drop-mid-stream")
    with d.client() as c, pytest.raises(RemoteError) as err:
        list(c.stream("infer", {"prompt": "hi", "stream": True}))
    assert err.value.code == "provider_failed"
    assert "ollama" in err.value.message
    assert not anthropic.requests  # nothing of another provider's answer was appended


def test_rate_limited_provider_cools_down(daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic) -> None:
    d = daemon_with(ollama, anthropic)
    ollama.set_mode("http-429")
    with d.client() as c:
        first = c.call("infer", {"prompt": "one"})
        chats_after_first = len([r for r in ollama.requests if r.path == "/api/chat"])
        second = c.call("infer", {"prompt": "two"})
    assert first["provider"] == second["provider"] == "anthropic"
    skipped = [s for s in second["route"] if s["provider"] == "ollama"]
    assert skipped[0]["outcome"] == "skipped" and "cooling down" in skipped[0]["reason"]
    assert len([r for r in ollama.requests if r.path == "/api/chat"]) == chats_after_first


def test_a_cooldown_shows_in_status_and_a_named_provider_is_tried_anyway(
    daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic
) -> None:
    d = daemon_with(ollama, anthropic)
    ollama.retry_after = "600"  # far longer than this test: the cooldown cannot end on its own meanwhile
    ollama.set_mode("http-429")
    with d.client() as c:
        assert c.call("infer", {"prompt": "one"})["provider"] == "anthropic"
        st = c.call("status")
        ollama_status = next(p for p in st["providers"] if p["name"] == "ollama")
        assert not ollama_status["ready"] and ollama_status["reason"] == "cooling-down"
        assert ollama_status["level"] == "reachable" and "--provider" in ollama_status["hint"]
        cooldown = ollama_status["detail"]["cooldown"]
        assert cooldown["after"] == "rate limit" and cooldown["until"] > time.time() + 60
        assert st["selected"] != "ollama"
        health = c.call("health")  # the Anthropic API backend still takes prompts by itself
        assert health["ok"] and health["selected"] == "anthropic"

        ollama.set_mode("ok")
        named = c.call("infer", {"prompt": "two", "provider": "ollama"})  # asked for by name: tried now
        assert named["provider"] == "ollama" and named["text"] == ollama.reply


def test_an_auth_cooldown_ends_when_the_key_changes(home: Path, workspace: Path, ollama: FakeOllama) -> None:
    right = "sk-ant-api03-RIGHTinferKEY0123456789abcdef"
    with FakeAnthropic(api_key=right) as anthropic:
        d = start(home, workspace, ollama, anthropic)  # its environment's key is not the one the API takes
        try:
            ollama.set_mode("http-500")
            with d.client() as c:
                with pytest.raises(RemoteError) as err:
                    c.call("infer", {"prompt": "one"})
                assert "anthropic: auth" in err.value.message
                with pytest.raises(RemoteError) as err:
                    c.call("infer", {"prompt": "two"})
                assert "anthropic: cooling down" in err.value.message and "after auth" in err.value.message
                tried = len(anthropic.requests)

                c.call("keys.set", {"name": "ANTHROPIC_API_KEY", "value": right})  # the fix
                result = c.call("infer", {"prompt": "three"})
            assert result["provider"] == "anthropic" and len(anthropic.requests) > tried
            assert anthropic.last.headers["x-api-key"] == right
        finally:
            d.stop()
        assert right not in d.log_text() + d.stderr_text()


def test_ollama_started_after_its_last_probe_takes_the_prompt(home: Path, workspace: Path) -> None:
    """Ollama was down at the last probe and the periodic re-probe is minutes off:
    the prompt looks again instead of refusing on the old answer."""
    with FakeOllama(mode="refuse", chunk_delay=0.01) as ollama:
        env = clean_env(home, TAKO_WORKSPACE=str(workspace), OLLAMA_HOST=ollama.host, PATH="/usr/bin:/bin")
        d = DaemonProcess(home, env).start()
        try:
            with d.client() as c:
                ollama_status = next(p for p in c.call("status")["providers"] if p["name"] == "ollama")
                assert ollama_status["reason"] == "unreachable"
                ollama.set_mode("ok")  # started now; no `takod probe`
                result = c.call("infer", {"prompt": "hi"})
                assert result["provider"] == "ollama" and result["text"] == ollama.reply
                assert c.call("status")["selected"] == "ollama"  # status learnt it too
        finally:
            d.stop()


def test_ollama_chats_with_a_chat_model_not_the_embedder_listed_first(home: Path, workspace: Path) -> None:
    models = [
        tag_entry("nomic-embed-text:latest", size=274_302_450, family="nomic-bert", parameter_size="137M"),
        tag_entry("llama3.2:latest"),
    ]
    with FakeOllama(models=models, chunk_delay=0.01) as ollama:
        d = start(home, workspace, ollama)
        try:
            with d.client() as c:
                detail = next(p for p in c.call("status")["providers"] if p["name"] == "ollama")["detail"]
                result = c.call("infer", {"prompt": "hi"})
        finally:
            d.stop()
    assert (detail["model"], detail["model_source"]) == ("llama3.2:latest", "first-listed")
    assert "nomic-embed-text:latest" in detail["model_why"] and "embedding" in detail["model_why"]
    assert result["model"] == "llama3.2:latest"
    assert [r.body["model"] for r in ollama.requests if r.path == "/api/chat"] == ["llama3.2:latest"]


def test_local_only_never_leaves_the_machine(daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic) -> None:
    d = daemon_with(ollama, anthropic)
    ollama.set_mode("http-500")
    with d.client() as c, pytest.raises(RemoteError) as err:
        c.call("infer", {"prompt": "my password is hunter2", "local_only": True})
    assert err.value.code == "no_provider"
    assert not anthropic.requests


def test_explicit_provider_and_model(daemon_with: Any, ollama: FakeOllama, anthropic: FakeAnthropic) -> None:
    d = daemon_with(ollama, anthropic)
    with d.client() as c:
        by_model = c.call("infer", {"prompt": "hi", "model": "claude-sonnet-4-5"})
        by_provider = c.call("infer", {"prompt": "hi", "provider": "ollama"})
    assert by_model["provider"] == "anthropic"
    assert anthropic.last.body["model"] == "claude-sonnet-4-5"
    assert by_provider["provider"] == "ollama"


def test_async_stream_returns_at_once_and_ends_with_end(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    with d.client() as c:
        msgid = c.send("infer", {"prompt": "hi", "stream": "async"})
        started = c.wait(msgid)
        assert started == {"stream_id": msgid}
        chunks = []
        for method, params in c.notifications(timeout=20):
            if method == "takod.stream" and params[0] == msgid:
                chunks.append(params)
                if params[2] == "end":
                    break
    seqs = [p[1] for p in chunks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    end = chunks[-1][3]
    assert end["result"]["text"] == "".join(p[3]["text"] for p in chunks if p[2] == "text") == ollama.reply


def _raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    s.settimeout(20)
    return s


def _read_until(sock: socket.socket, unpacker: msgpack.Unpacker, want: Any) -> list[Any]:
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        unpacker.feed(sock.recv(65536))
        for msg in unpacker:
            seen.append(msg)
            if want(msg):
                return seen
    raise AssertionError(f"not seen; got {seen[-3:]}")


def test_cancel_stops_the_stream_and_closes_the_http_request(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    ollama.chunk_delay = 0.5
    ollama.set_mode("slow-stream")
    sock, unpacker = _raw(d.socket), msgpack.Unpacker(raw=False)
    sock.sendall(msgpack.packb([0, 7, "infer", [{"prompt": "long", "stream": True}]]))
    _read_until(sock, unpacker, lambda m: m[0] == 2 and m[1] == "takod.stream" and m[2][2] == "text")
    sock.sendall(msgpack.packb([2, "$/cancel", [7]]))
    seen = _read_until(sock, unpacker, lambda m: m[0] == 1 and m[1] == 7)
    assert seen[-1][2][1].startswith("cancelled")
    assert ollama.wait_disconnect(10)  # the daemon hung up on Ollama at once
    sock.close()


def test_client_hanging_up_stops_the_work(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    ollama.chunk_delay = 0.5
    ollama.set_mode("slow-stream")
    sock, unpacker = _raw(d.socket), msgpack.Unpacker(raw=False)
    sock.sendall(msgpack.packb([0, 1, "infer", [{"prompt": "long", "stream": True}]]))
    _read_until(sock, unpacker, lambda m: m[0] == 2 and m[2][2] == "text")
    sock.close()
    assert ollama.wait_disconnect(10)
    with d.client() as c:
        assert c.call("ping") == "pong"


def test_bad_requests_get_validation_errors(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    with d.client() as c:
        for params in ({}, {"prompt": "  "}, {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
                       {"messages": [{"role": "assistant", "content": "b"}]}, {"prompt": "a", "timeout": 0}):
            with pytest.raises(RemoteError) as err:
                c.call("infer", params)
            assert err.value.is_bad_request, params


def test_embed_models_and_health(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    with d.client() as c:
        emb = c.call("embed", {"texts": ["a", "b"]})
        models = c.call("models.list", {"provider": "ollama"})
        health = c.call("health")
    assert emb["provider"] == "ollama" and emb["dimensions"] == ollama.embedding_dims
    assert len(emb["embeddings"]) == 2
    assert {m["name"] for m in models["models"]} == {"llama3.2:latest", "nomic-embed-text:latest"}
    assert health == {"ok": True, "selected": "ollama", "ready": ["ollama"]}


def test_takod_run_streams_to_stdout_and_the_route_to_stderr(daemon_with: Any, ollama: FakeOllama) -> None:
    d = daemon_with(ollama)
    proc = subprocess.run(
        [sys.executable, "-m", "takod", "run", "Say hello", "--socket", str(d.socket)],
        env={**d.env, "TAKOD_NO_SPAWN": "1"}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ollama.reply + "\n"
    assert "→ ollama" in proc.stderr and "answered by ollama" in proc.stderr
    as_json = subprocess.run(
        [sys.executable, "-m", "takod", "run", "hi", "--json", "--socket", str(d.socket)],
        env={**d.env, "TAKOD_NO_SPAWN": "1"}, capture_output=True, text=True, timeout=60,
    )
    assert json.loads(as_json.stdout)["provider"] == "ollama"
