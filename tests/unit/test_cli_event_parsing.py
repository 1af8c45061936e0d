"""The pure parts of the CLI runners: argv/env/stdin builders, Takobot's prompt
guard, error classification, line splitting, and each CLI's JSON event parser.

Event lines are the shapes the real CLIs print (captured from pi 0.73.1, codex
0.160.0, claude 2.1.289 and gemini 0.58.0 against loopback servers, trimmed of
fields the parsers do not read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from takod_daemon.inference import claude_cli, codex_cli, gemini_cli, pi_cli, prompt_limits
from takod_daemon.inference.gemini_cli import GeminiStats
from takod_daemon.inference.subprocess_run import (
    CliExit,
    EventDecoder,
    LineSplitter,
    LineTooLong,
    Tail,
    classify,
    interactive_signal,
    render_prompt,
    retry_after_from,
    retry_notice_is_fatal,
    scrub,
    secret_values,
    system_text,
)
from takod_daemon.inference.types import Chunk, InferRequest, Message, ProviderFailure, RunContext
from takod_daemon.resolve import gemini as gemini_resolve
from takod_daemon.resolve.codex import resolve_codex


def req(text: str = "hi", **kwargs: Any) -> InferRequest:
    return InferRequest(messages=[Message("user", text)], **kwargs)


def line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def feed_all(parser: Any, events: list[dict[str, Any]]) -> list[Chunk]:
    chunks: list[Chunk] = []
    for event in events:
        chunks += parser.feed(line(event))
    return chunks


OK = CliExit(returncode=0)


# --- prompt guard ----------------------------------------------------------------------


def test_short_lines_pass_the_guard_unchanged() -> None:
    prepared = prompt_limits.prepare_prompt("  hello\r\nworld\rthird  ")
    assert prepared.text == "hello\nworld\nthird"
    assert prepared.wrapped_lines == 0 and prepared.trimmed_from is None and prepared.notes() == []


def test_a_long_line_is_cut_at_the_last_space_in_the_window() -> None:
    words = " ".join(f"w{i:03d}" for i in range(200))  # 999 characters, a space every 5
    pieces = prompt_limits.wrap_line(words)
    assert all(len(p) <= 320 for p in pieces)
    assert " ".join(pieces) == words  # only the spaces at the cuts are gone
    assert pieces[0] == words[:319]  # the space at index 319 is the last one in the window


def test_a_line_without_spaces_is_hard_cut() -> None:
    assert [len(p) for p in prompt_limits.wrap_line("x" * 700)] == [320, 320, 60]


def test_a_space_before_the_minimum_piece_is_not_a_cut_point() -> None:
    line_ = "a" * 50 + " " + "b" * 400  # the only space is before cursor + 106
    assert [len(p) for p in prompt_limits.wrap_line(line_)] == [320, 131]


def test_prepare_prompt_counts_wrapped_lines_and_notes_them() -> None:
    prepared = prompt_limits.prepare_prompt("short\n" + "y" * 400 + "\n" + "z" * 321)
    assert prepared.wrapped_lines == 2
    assert prepared.text.split("\n") == ["short", "y" * 320, "y" * 80, "z" * 320, "z"]
    assert prepared.notes() == ["pi prompt guard: wrapped 2 oversized lines"]


def test_an_over_long_prompt_loses_its_middle() -> None:
    head, middle, tail = "H" * 60_000, "M" * 30_000, "T" * 40_000
    text = "\n".join(wrapped for part in (head, middle, tail) for wrapped in prompt_limits.wrap_line(part))
    prepared = prompt_limits.prepare_prompt(text)
    assert len(prepared.text) <= prompt_limits.MAX_CHARS
    assert prompt_limits.TRUNCATION_MARKER.strip() in prepared.text
    before, after = prepared.text.split(prompt_limits.TRUNCATION_MARKER.strip())
    assert set(before.replace("\n", "")) == {"H"} and set(after.replace("\n", "")) == {"T"}
    room = prompt_limits.MAX_CHARS - len(prompt_limits.TRUNCATION_MARKER)
    assert abs(len(before.strip()) - int(room * 0.6)) < 400  # 60 % head (newlines stripped at the edges)
    assert prepared.trimmed_from == len(text)
    assert prepared.notes()[-1] == f"pi prompt guard: trimmed prompt from {len(text)} to {len(prepared.text)} chars"


def test_trim_middle_keeps_short_text() -> None:
    assert prompt_limits.trim_middle("abc", 10) == "abc"
    assert prompt_limits.trim_middle("abcdefghijklmnop", 8, marker="..") == "abc..nop"  # 60 % of 6, then 40 %


# --- the prompt a CLI gets ---------------------------------------------------------------


def test_one_user_message_is_sent_as_is() -> None:
    assert render_prompt(req("What is 2+2?")) == "What is 2+2?"


def test_a_conversation_becomes_a_transcript_ending_with_the_last_turn() -> None:
    r = InferRequest(
        messages=[
            Message("system", "be brief"),
            Message("user", "hi"),
            Message("assistant", "hello"),
            Message("user", "and now?"),
        ],
        system="You are Tako.",
    )
    assert render_prompt(r) == "User: hi\n\nAssistant: hello\n\nUser: and now?"
    assert system_text(r) == "You are Tako.\n\nbe brief"
    assert render_prompt(r, fold_system=True).startswith("<system>\nYou are Tako.\n\nbe brief\n</system>\n\nUser: hi")


def test_json_format_adds_the_instruction() -> None:
    assert render_prompt(req("list", format="json")).endswith("Respond with valid JSON only: no prose, no Markdown code fences.")


def test_nothing_to_send_is_a_bad_request() -> None:
    with pytest.raises(ProviderFailure) as info:
        render_prompt(InferRequest(messages=[Message("system", "x"), Message("user", "  ")]))
    assert info.value.kind == "bad_request"


# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "status", "kind"),
    [
        ("401 Incorrect API key provided: sk-********0000.", None, "auth"),
        ("Failed to authenticate. API Error: 401 Incorrect API key provided", None, "auth"),
        ("Not logged in · Please run /login", None, "auth"),
        ("No API key found for the selected model.", None, "auth"),
        ("[API Error: API key not valid. Please pass a valid API key.]", None, "auth"),
        ("unexpected status 401 Unauthorized: Incorrect API key, url: http://127.0.0.1:1/v1/responses", None, "auth"),
        ("The model `m-404` does not exist or you do not have access to it.", None, "model"),
        ('Error: Model "nosuch/thing" not found. Use --list-models to see available models.', None, "model"),
        ("There's an issue with the selected model (claude-x). It may not exist or you may not have access to it.", None, "model"),
        ("models/g-1 is not found for API version v1beta, or is not supported for generateContent.", None, "model"),
        ("429 Rate limit reached for requests. Please try again in 7s.", None, "rate_limit"),
        ("You exceeded your current quota, please check your plan and billing details.", None, "rate_limit"),
        ("exceeded retry limit, last status: 429 Too Many Requests", None, "rate_limit"),
        ("Connection error.", None, "unavailable"),
        ("stream disconnected before completion: stream closed before response.completed", None, "unavailable"),
        ("500 The server had an error while processing your request.", None, "unavailable"),
        ("prompt is too long: 250000 tokens > 200000 maximum", None, "bad_request"),
        ("something odd", None, "unavailable"),
        ("something odd", 429, "rate_limit"),
        ("rate limited", 401, "auth"),  # a status, when known, wins over the text
        ("whatever", 503, "unavailable"),
    ],
)
def test_classify(text: str, status: int | None, kind: str) -> None:
    assert classify(text, status=status) == kind


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Rate limit reached, retry after 7s", 7.0),
        ("Please try again in 20ms.", 0.02),
        ("Retrying after 7412ms...", 7.412),
        ('"retryDelay": "30s"', 30.0),
        ("try again in 2 minutes", 120.0),
        ("retry after 5 more attempts", 5.0),
        ("no hint here", None),
    ],
)
def test_retry_after(text: str, seconds: float | None) -> None:
    assert retry_after_from(text) == seconds


def test_when_a_cli_retry_notice_stops_the_run() -> None:
    assert retry_notice_is_fatal("unavailable", attempt=1, emitted=True)  # would restart streamed text
    assert retry_notice_is_fatal("model", attempt=1, emitted=False)
    assert retry_notice_is_fatal("rate_limit", attempt=1, emitted=False)
    assert not retry_notice_is_fatal("auth", attempt=1, emitted=False)  # may follow a token refresh
    assert retry_notice_is_fatal("auth", attempt=2, emitted=False)
    assert not retry_notice_is_fatal("unavailable", attempt=2, emitted=False)
    assert retry_notice_is_fatal("unavailable", attempt=3, emitted=False)


def test_interactive_signals() -> None:
    assert interactive_signal("Press Enter to continue...") == "press enter to continue"
    assert interactive_signal("Overwrite? (Y/n)") == "(y/n)"  # case-insensitive
    assert interactive_signal("Overwrite config? (y/n) ") == "(y/n)"
    assert interactive_signal("Warning: 256-color support not detected.") is None


def test_secret_values_from_the_environment_are_scrubbed() -> None:
    env = {"LOOPBACK_KEY": "zz-local-key-123456", "OPENAI_API_KEY": "sk-abcdefghijkl", "PATH": "/usr/bin:/bin", "SHORT_TOKEN": "abc"}
    secrets = secret_values(env)
    assert set(secrets) == {"zz-local-key-123456", "sk-abcdefghijkl"}
    cleaned = scrub("bad key zz-local-key-123456 and sk-abcdefghijkl on /usr/bin", secrets)
    assert "zz-local-key-123456" not in cleaned and "sk-abcdefghijkl" not in cleaned and "/usr/bin" in cleaned


def test_credentials_in_proxy_urls_are_scrubbed() -> None:
    secrets = secret_values({"HTTPS_PROXY": "http://alice:s3cretpass@proxy.local:3128"})
    assert secrets == ("alice:s3cretpass",)
    assert "s3cretpass" not in scrub("CONNECT failed via http://alice:s3cretpass@proxy.local:3128", secrets)


# --- lines -----------------------------------------------------------------------------------


def test_line_splitter_joins_pieces_and_keeps_the_unfinished_line() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.pending == b'{"b"'
    assert splitter.feed(b':2}\r\n\nrest') == [b'{"b":2}\r', b""]
    assert splitter.close() == b"rest"


def test_line_splitter_refuses_an_over_long_line_without_holding_it() -> None:
    splitter = LineSplitter(10)
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 11)
    with pytest.raises(LineTooLong):
        LineSplitter(10).feed(b"y" * 11 + b"\n")


def test_line_splitter_can_truncate_instead() -> None:
    splitter = LineSplitter(4, truncate=True)
    assert splitter.feed(b"abcdefgh") == [b"abcd"]
    assert splitter.feed(b"ij\nnext\n") == [b"next"]  # the rest of the long line is dropped


def test_tail_masks_and_keeps_the_last_lines() -> None:
    tail = Tail(size=2)
    for text in (b"one", b"token=sk-abcdefghijklmnop1234", b"three"):
        tail.add(text)
    assert tail.lines()[-1] == "three"
    assert "sk-abcdefghijklmnop1234" not in tail.lines()[0]


def test_event_decoder_skips_unknown_types_and_counts_garbage() -> None:
    decoder: EventDecoder[Any] = EventDecoder(codex_cli.CodexEvent)
    assert isinstance(decoder.decode(b'{"type":"turn.completed","usage":{"output_tokens":3}}'), codex_cli.TurnCompleted)
    assert decoder.decode(b'{"type":"brand.new.event","x":1}') is None
    assert decoder.unreadable == 0
    assert decoder.decode(b"{not json") is None
    assert decoder.decode(b'{"type":"turn.completed","usage":"three"}') is None  # known type, wrong shape
    assert decoder.unreadable == 2 and "not json" in decoder.describe_unreadable()


# --- pi ------------------------------------------------------------------------------------------


def ctx(tmp_path: Path, **env: str) -> RunContext:
    return RunContext(workspace=tmp_path, env={"PATH": "/usr/bin:/bin", **env})


def test_pi_argv_has_the_fixed_flags_and_no_prompt_or_key(tmp_path: Path) -> None:
    argv = pi_cli.pi_argv("/ws/pi", req("secret question", model="fake/fake-model", thinking="low"))
    assert argv == [
        "/ws/pi", "--print", "--mode", "json", "--no-session", "--no-tools", "--no-extensions", "--no-skills",
        "--model", "fake/fake-model", "--thinking", "low",
    ]  # fmt: skip
    system = tmp_path / "system.md"
    assert pi_cli.pi_argv("pi", req(), system_file=system, offline=True)[-3:] == ["--offline", "--system-prompt", str(system)]
    with pytest.raises(ProviderFailure) as info:
        pi_cli.pi_argv("pi", req(thinking="maximum"))
    assert info.value.kind == "bad_request"


def test_pi_env_puts_node_first_and_defaults_the_agent_dir(tmp_path: Path) -> None:
    env = pi_cli.pi_env(ctx(tmp_path, OPENAI_API_KEY="sk-x"), "/opt/node/bin/node")
    assert env["PATH"].split(":")[0] == "/opt/node/bin"
    assert env["PI_CODING_AGENT_DIR"] == str(tmp_path / ".tako" / "pi" / "agent")
    assert env["CI"] == "1" and env["OPENAI_API_KEY"] == "sk-x"
    mine = pi_cli.pi_env(ctx(tmp_path, PI_CODING_AGENT_DIR="/elsewhere", PATH="/opt/node/bin:/usr/bin"), "/opt/node/bin/node")
    assert mine["PI_CODING_AGENT_DIR"] == "/elsewhere" and mine["PATH"] == "/opt/node/bin:/usr/bin"


def test_pi_stdin_applies_the_prompt_guard() -> None:
    assert pi_cli.pi_stdin(req("a\r\n" + "b" * 400)) == ("a\n" + "b" * 320 + "\n" + "b" * 80).encode()


def pi_assistant(text: str = "", **extra: Any) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": [{"type": "text", "text": text}] if text else [],
        "api": "openai-completions",
        "provider": "fake",
        "model": "fake-model",
        "usage": {"input": 5, "output": 3, "totalTokens": 8},
        "stopReason": "stop",
    }
    return message | extra


def pi_delta(kind: str, delta: str, partial: str = "") -> dict[str, Any]:
    return {
        "type": "message_update",
        "assistantMessageEvent": {"type": kind, "contentIndex": 0, "delta": delta, "partial": pi_assistant(partial)},
        "message": pi_assistant(partial),
    }


PI_HEAD = [
    {"type": "session", "version": 3, "id": "01a2", "timestamp": "2026-11-22T03:02:10.894Z", "cwd": "/ws"},
    {"type": "agent_start"},
    {"type": "turn_start"},
    {"type": "message_start", "message": {"role": "user", "content": [{"type": "text", "text": "say hi"}]}},
    {"type": "message_end", "message": {"role": "user", "content": [{"type": "text", "text": "say hi"}]}},
    {"type": "message_start", "message": pi_assistant()},
]


def test_pi_stream_text_and_thinking_in_order() -> None:
    parser = pi_cli.PiParser()
    final = pi_assistant("Hello world", responseModel="fake-model-2026")
    chunks = feed_all(
        parser,
        PI_HEAD
        + [
            {"type": "message_update", "assistantMessageEvent": {"type": "thinking_start", "contentIndex": 0}},
            pi_delta("thinking_delta", "hmm"),
            pi_delta("text_start", ""),
            pi_delta("text_delta", "Hel"),
            pi_delta("text_delta", "lo "),
            pi_delta("text_delta", "world"),
            {"type": "message_end", "message": final},
            {"type": "turn_end", "message": final, "toolResults": []},
            {"type": "agent_end", "messages": [{"role": "user", "content": "say hi"}, final]},
        ],
    )
    assert chunks == [Chunk("thinking", "hmm"), Chunk("text", "Hel"), Chunk("text", "lo "), Chunk("text", "world")]
    result = parser.finish(OK)
    assert result.text == "Hello world"
    assert result.model == "fake/fake-model-2026"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 3)
    assert result.stop_reason == "stop" and result.thinking == "hmm"


def test_pi_failure_is_read_from_the_message_not_the_exit_code() -> None:
    parser = pi_cli.PiParser()
    failed = pi_assistant(stopReason="error", errorMessage="401 Incorrect API key provided: sk-********0000.")
    feed_all(parser, PI_HEAD + [{"type": "message_end", "message": failed}, {"type": "agent_end", "messages": [failed]}])
    with pytest.raises(ProviderFailure) as info:
        parser.finish(OK)  # pi's JSON mode exits 0 even so
    assert info.value.kind == "auth"
    assert "Incorrect API key" in info.value.message


def test_pi_rate_limit_retry_is_not_waited_for() -> None:
    parser = pi_cli.PiParser()
    failed = pi_assistant(stopReason="error", errorMessage="429 Rate limit reached, retry after 7s")
    feed_all(parser, PI_HEAD + [{"type": "message_end", "message": failed}, {"type": "agent_end", "messages": [failed]}])
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line({"type": "auto_retry_start", "attempt": 1, "maxAttempts": 3, "delayMs": 2000, "errorMessage": "429 Rate limit reached, retry after 7s"}))
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 7.0)


def test_pi_transient_error_retried_by_pi_then_answered() -> None:
    parser = pi_cli.PiParser()
    failed = pi_assistant(stopReason="error", errorMessage="Connection error.")
    answer = pi_assistant("ok")
    chunks = feed_all(
        parser,
        PI_HEAD
        + [
            {"type": "message_end", "message": failed},
            {"type": "agent_end", "messages": [failed]},
            {"type": "auto_retry_start", "attempt": 1, "maxAttempts": 3, "delayMs": 2000, "errorMessage": "Connection error."},
            {"type": "agent_start"},
            pi_delta("text_delta", "ok"),
            {"type": "message_end", "message": answer},
            {"type": "agent_end", "messages": [answer]},
            {"type": "auto_retry_end", "success": True, "attempt": 1},
        ],
    )
    assert chunks == [Chunk("text", "ok")]
    assert parser.finish(OK).text == "ok"


def test_pi_retry_after_streamed_text_stops_the_run() -> None:
    parser = pi_cli.PiParser()
    feed_all(parser, PI_HEAD + [pi_delta("text_delta", "Hel")])
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line({"type": "auto_retry_start", "attempt": 1, "errorMessage": "Connection error."}))
    assert info.value.kind == "unavailable"
    assert "after streaming part of the answer" in info.value.message


def test_pi_that_never_answers_is_classified_from_stderr() -> None:
    parser = pi_cli.PiParser()
    feed_all(parser, PI_HEAD[:1])
    exit = CliExit(returncode=1, stderr_tail=("No API key found for the selected model.", "Use /login to log into a provider"))
    with pytest.raises(ProviderFailure) as info:
        parser.finish(exit)
    assert info.value.kind == "auth"


def test_pi_garbage_is_crashed() -> None:
    parser = pi_cli.PiParser()
    assert parser.feed(b"{this is not json") == []
    with pytest.raises(ProviderFailure) as info:
        parser.finish(OK)
    assert info.value.kind == "crashed" and "unreadable" in info.value.message


# --- codex ------------------------------------------------------------------------------------------


def test_codex_argv_reads_the_prompt_from_stdin() -> None:
    argv = codex_cli.codex_argv("/bin/codex", req("secret", model="gpt-5", thinking="high"))
    assert argv == [
        "/bin/codex", "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only", "--color", "never",
        "-m", "gpt-5", "-c", 'model_reasoning_effort="high"', "-",
    ]  # fmt: skip
    assert "-c" not in codex_cli.codex_argv("codex", req(thinking="off"))
    assert codex_cli.codex_stdin(req("q", system="sys")) == b"<system>\nsys\n</system>\n\nq"


CODEX_HEAD = [
    {"type": "thread.started", "thread_id": "01a2"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "error", "message": "Model metadata for `fake-model` not found."}},
    {"type": "turn.started"},
]


def test_codex_messages_arrive_whole_and_join_with_a_blank_line() -> None:
    parser = codex_cli.CodexParser("fake-model")
    chunks = feed_all(
        parser,
        CODEX_HEAD
        + [
            {"type": "item.completed", "item": {"id": "item_1", "type": "reasoning", "text": "thinking..."}},
            {"type": "item.started", "item": {"id": "item_2", "type": "agent_message", "text": ""}},
            {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "first"}},
            {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": "second"}},
            {"type": "turn.completed", "usage": {"input_tokens": 5, "cached_input_tokens": 0, "output_tokens": 3}},
        ],
    )
    assert chunks == [Chunk("thinking", "thinking..."), Chunk("text", "first"), Chunk("text", "\n\nsecond")]
    result = parser.finish(CliExit(returncode=1))  # codex's exit 1 sticks after a retried error; the turn completed
    assert result.text == "first\n\nsecond" and result.model == "fake-model"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 3)


def test_codex_turn_failed_is_classified() -> None:
    parser = codex_cli.CodexParser()
    feed_all(parser, CODEX_HEAD)
    message = "unexpected status 401 Unauthorized: Incorrect API key provided: sk-********0000., url: http://127.0.0.1:1/v1/responses"
    parser.feed(line({"type": "error", "message": message}))
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line({"type": "turn.failed", "error": {"message": message}}))
    assert info.value.kind == "auth"


def test_codex_reconnect_notices() -> None:
    assert codex_cli.parse_reconnect("Reconnecting... 2/5 (stream disconnected before completion: boom)") == (
        2, 5, "stream disconnected before completion: boom",
    )  # fmt: skip
    assert codex_cli.parse_reconnect("unexpected status 500") is None
    parser = codex_cli.CodexParser()
    assert parser.feed(line({"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion: x)"})) == []
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line({"type": "error", "message": "Reconnecting... 1/5 (unexpected status 404 Not Found: The model `m` does not exist or you do not have access to it.)"}))
    assert info.value.kind == "model"


def test_codex_websocket_404s_let_codex_fall_back_to_https() -> None:
    # codex 0.169 against an OpenAI-compatible server without WebSockets: 404s on ws://, then HTTPS answers.
    parser = codex_cli.CodexParser()
    feed_all(parser, CODEX_HEAD)
    for attempt in range(2, 6):
        notice = f"Reconnecting... {attempt}/5 (unexpected status 404 Not Found: Invalid URL (GET /v1/responses), url: ws://127.0.0.1:1/v1/responses)"
        assert parser.feed(line({"type": "error", "message": notice})) == []
    fallback = "Falling back from WebSockets to HTTPS transport. unexpected status 404 Not Found: Unknown error, url: ws://127.0.0.1:1/v1/responses"
    feed_all(parser, [
        {"type": "item.completed", "item": {"id": "item_1", "type": "error", "message": fallback}},
        {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "hi"}},
        {"type": "turn.completed", "usage": {"output_tokens": 1}},
    ])  # fmt: skip
    assert parser.finish(CliExit(returncode=0)).text == "hi"
    # A missing model over HTTPS is final.
    with pytest.raises(ProviderFailure):
        codex_cli.CodexParser().feed(line({"type": "error", "message": "Reconnecting... 1/5 (unexpected status 404 Not Found: The model `m` does not exist or you do not have access to it., url: https://h/v1/responses)"}))


def test_codex_names_the_model_it_used() -> None:
    # Nothing asked for and nothing configured: the model codex's own warning names.
    parser = codex_cli.CodexParser()
    feed_all(parser, CODEX_HEAD + [{"type": "turn.completed", "usage": {}}])
    assert parser.finish(CliExit(returncode=0)).model == "fake-model"


def test_codex_configured_model(tmp_path: Path) -> None:
    env = {"CODEX_HOME": str(tmp_path)}
    assert resolve_codex(env).model is None
    (tmp_path / "config.toml").write_text('model = "gpt-5.5"\n')
    assert resolve_codex(env).model == "gpt-5.5"
    (tmp_path / "config.toml").write_text('model = "gpt-5.5"\nprofile = "fast"\n[profiles.fast]\nmodel = "gpt-5.5-mini"\n')
    assert resolve_codex(env).model == "gpt-5.5-mini"
    (tmp_path / "config.toml").write_text('model = [')
    assert resolve_codex(env).model is None


def test_codex_without_turn_completed_reports_why() -> None:
    parser = codex_cli.CodexParser()
    feed_all(parser, CODEX_HEAD + [{"type": "error", "message": "stream disconnected before completion: boom"}])
    with pytest.raises(ProviderFailure) as info:
        parser.finish(CliExit(returncode=1))
    assert info.value.kind == "unavailable" and "boom" in info.value.message
    with pytest.raises(ProviderFailure) as info:
        codex_cli.CodexParser().finish(CliExit(returncode=2, stderr_tail=("error: unexpected argument '--bogus' found",)))
    assert info.value.kind == "crashed"


# --- claude ----------------------------------------------------------------------------------------


def test_claude_argv() -> None:
    argv = claude_cli.claude_argv("/bin/claude", req("secret", model="sonnet", thinking="minimal"), system_file=Path("/t/s.md"))
    assert argv == [
        "/bin/claude", "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages",
        "--no-session-persistence", "--tools", "", "--model", "sonnet", "--effort", "low",
        "--system-prompt-file", "/t/s.md",
    ]  # fmt: skip
    assert claude_cli.claude_stdin(req("secret")) == b"secret"


def cl_stream(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stream_event", "event": event, "session_id": "s", "parent_tool_use_id": None, "uuid": "u"}


def cl_delta(text: str, kind: str = "text_delta") -> dict[str, Any]:
    field = "thinking" if kind == "thinking_delta" else "text"
    return cl_stream({"type": "content_block_delta", "index": 0, "delta": {"type": kind, field: text}})


def cl_assistant(*blocks: dict[str, Any], model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": list(blocks), "stop_reason": None},
        "parent_tool_use_id": None,
        "session_id": "s",
    }


def cl_result(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "result", "subtype": "success", "is_error": False, "result": "Hello world", "stop_reason": "end_turn",
        "terminal_reason": "completed", "api_error_status": None,
        "usage": {"input_tokens": 5, "output_tokens": 3, "server_tool_use": {"web_search_requests": 0}},
    }  # fmt: skip
    return base | fields


CLAUDE_HEAD = [
    {"type": "system", "subtype": "init", "cwd": "/ws", "session_id": "s", "tools": [], "model": "claude-sonnet-4-5", "permissionMode": "default"},
    {"type": "system", "subtype": "status", "status": "requesting", "session_id": "s"},
    cl_stream({"type": "message_start", "message": {"id": "msg_1", "model": "claude-sonnet-4-5-20250929", "content": []}}),
]


def test_claude_stream_then_result() -> None:
    parser = claude_cli.ClaudeParser()
    chunks = feed_all(
        parser,
        CLAUDE_HEAD
        + [
            cl_delta("hmm", "thinking_delta"),
            cl_delta("Hel"),
            cl_delta("lo world"),
            cl_assistant({"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hello world"}),
            cl_stream({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
            {"type": "system", "subtype": "informational", "content": "We're changing auto mode..."},
            cl_result(),
        ],
    )
    assert chunks == [Chunk("thinking", "hmm"), Chunk("text", "Hel"), Chunk("text", "lo world")]
    result = parser.finish(OK)
    assert result.text == "Hello world" and result.model == "claude-sonnet-4-5" and result.thinking == "hmm"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.stop_reason) == (5, 3, "end_turn")


def test_claude_without_partial_messages_emits_the_assistant_text() -> None:
    parser = claude_cli.ClaudeParser()
    chunks = feed_all(parser, CLAUDE_HEAD[:1] + [cl_assistant({"type": "text", "text": "whole"}), cl_result(result="whole")])
    assert chunks == [Chunk("text", "whole")]
    assert parser.finish(OK).text == "whole"


def test_claude_success_subtype_with_is_error_is_a_failure() -> None:
    parser = claude_cli.ClaudeParser()
    feed_all(
        parser,
        CLAUDE_HEAD[:1]
        + [
            cl_assistant({"type": "text", "text": "Not logged in · Please run /login"}, model="<synthetic>"),
            cl_result(is_error=True, result="Not logged in · Please run /login", terminal_reason="api_error"),
        ],
    )
    with pytest.raises(ProviderFailure) as info:
        parser.finish(CliExit(returncode=1))
    assert info.value.kind == "auth"


def test_claude_error_status_decides_the_kind() -> None:
    parser = claude_cli.ClaudeParser()
    feed_all(parser, [cl_result(is_error=True, result="There's an issue with the selected model (x).", api_error_status=404)])
    with pytest.raises(ProviderFailure) as info:
        parser.finish(CliExit(returncode=1))
    assert info.value.kind == "model"


def api_retry(attempt: int, status: int | None, error: str) -> dict[str, Any]:
    return {"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10, "retry_delay_ms": 572, "error_status": status, "error": error}


def test_claude_auth_retry_gets_one_chance_rate_limit_none() -> None:
    parser = claude_cli.ClaudeParser()
    assert parser.feed(line(api_retry(1, 401, "authentication_failed"))) == []
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line(api_retry(2, 401, "authentication_failed")))
    assert info.value.kind == "auth"
    with pytest.raises(ProviderFailure) as info:
        claude_cli.ClaudeParser().feed(line(api_retry(1, 429, "rate_limit") | {"retry_delay_ms": 7000}))
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 7.0)


def test_claude_retry_after_streamed_text_stops_the_run() -> None:
    parser = claude_cli.ClaudeParser()
    feed_all(parser, CLAUDE_HEAD + [cl_delta("Hel")])
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line(api_retry(1, None, "unknown")))
    assert info.value.kind == "unavailable" and "after streaming" in info.value.message


def test_claude_restarted_answer_is_caught() -> None:
    parser = claude_cli.ClaudeParser()
    feed_all(parser, CLAUDE_HEAD + [cl_delta("Hello "), cl_delta("fr")])
    with pytest.raises(ProviderFailure) as info:
        parser.feed(line(cl_assistant({"type": "text", "text": "A different answer"})))
    assert info.value.kind == "unavailable" and "restarted" in info.value.message


def test_claude_without_result_is_crashed() -> None:
    parser = claude_cli.ClaudeParser()
    feed_all(parser, CLAUDE_HEAD + [cl_delta("Hel")])
    with pytest.raises(ProviderFailure) as info:
        parser.finish(OK)
    assert info.value.kind == "crashed"


# --- gemini ------------------------------------------------------------------------------------------


def test_gemini_argv_and_env_keep_the_prompt_and_system_off_the_command_line(tmp_path: Path) -> None:
    assert gemini_cli.gemini_argv("/bin/gemini", req("secret", model="gemini-2.5-flash")) == [
        "/bin/gemini", "-p", "", "-o", "stream-json", "--skip-trust", "-m", "gemini-2.5-flash",
    ]  # fmt: skip
    env = gemini_cli.gemini_env(ctx(tmp_path, GEMINI_API_KEY="AIza-test"), tmp_path / "system.md")
    assert env["GEMINI_SYSTEM_MD"] == str(tmp_path / "system.md") and env["GEMINI_API_KEY"] == "AIza-test"
    assert gemini_cli.gemini_stdin(req("secret")) == b"secret"


GEMINI_HEAD = [
    {"type": "init", "timestamp": "2026-11-22T03:09:49.847Z", "session_id": "s", "model": "gemini-2.5-flash"},
    {"type": "message", "timestamp": "t", "role": "user", "content": "say hi\n"},
]


def gm_stats(model: str = "gemini-3.5-flash") -> dict[str, Any]:
    return {
        "total_tokens": 8, "input_tokens": 5, "output_tokens": 3, "cached": 0, "input": 5, "duration_ms": 108,
        "tool_calls": 0, "models": {model: {"total_tokens": 8, "input_tokens": 5, "output_tokens": 3}},
    }  # fmt: skip


def test_gemini_names_the_routed_model_not_its_classifier() -> None:
    # Real gemini 0.58 stats with its router on: the classifier (asked first, long JSON answer), then the answer.
    stats = GeminiStats(models={
        "gemini-3.1-flash-lite": {"total_tokens": 115, "input_tokens": 55, "output_tokens": 60},
        "gemini-3.1-pro-preview": {"total_tokens": 23, "input_tokens": 11, "output_tokens": 12},
    })  # fmt: skip
    assert gemini_cli.answering_model(stats) == "gemini-3.1-pro-preview"
    # A model that failed before its fallback answered produced nothing.
    stats = GeminiStats(models={"gemini-3.5-flash": {"output_tokens": 12}, "gemini-2.5-pro": {"output_tokens": 0}})
    assert gemini_cli.answering_model(stats) == "gemini-3.5-flash"
    assert gemini_cli.answering_model(GeminiStats()) is None


def test_gemini_api_key_auth_is_supplied_only_where_gemini_would_not_use_the_key() -> None:
    key = {"GEMINI_API_KEY": "k"}
    nothing = gemini_resolve.AuthFacts(selected=None, selected_usable=False, system_files=frozenset())
    defaults, settings = gemini_resolve.SYSTEM_DEFAULTS_ENV, gemini_resolve.SYSTEM_SETTINGS_ENV
    scope = gemini_resolve.api_key_auth_scope
    # Nothing selected: the environment decides ("gateway" with a base URL, which gemini rejects): below the user.
    assert scope(key | {"GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:1"}, nothing) == defaults
    assert scope(key, nothing) == defaults
    assert scope({}, nothing) is None
    assert scope(key | {"GOOGLE_GENAI_USE_GCA": "true"}, nothing) is None  # asked for in so many words
    assert scope(key | {"GOOGLE_GENAI_USE_VERTEXAI": "TRUE"}, nothing) is None
    assert scope(key, nothing._replace(system_files=frozenset({defaults}))) is None  # a system file is in charge
    # A selection that works is the user's; one that cannot work is overridden from above.
    assert scope(key, nothing._replace(selected="oauth-personal", selected_usable=True)) is None
    assert scope(key, nothing._replace(selected="gemini-api-key")) is None
    assert scope(key, nothing._replace(selected="oauth-personal")) == settings
    assert scope(key, nothing._replace(selected="oauth-personal", system_files=frozenset({settings}))) is None


def test_gemini_auth_facts(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GEMINI_API_KEY": "k"}
    assert gemini_resolve.auth_facts(env)[:2] == (None, False)
    (tmp_path / ".gemini").mkdir()
    (tmp_path / ".gemini" / "settings.json").write_text('{"security": {"auth": {"selectedType": "oauth-personal"}}}')
    assert gemini_resolve.auth_facts(env)[:2] == ("oauth-personal", False)  # no login: the key is not its credential
    creds = {"access_token": "ya29.x", "refresh_token": "1//r", "expiry_date": 4_102_444_800_000}
    (tmp_path / ".gemini" / "oauth_creds.json").write_text(json.dumps(creds))
    assert gemini_resolve.auth_facts(env)[:2] == ("oauth-personal", True)
    (tmp_path / ".gemini" / "settings.json").write_text('{"security": ')  # gemini fails on it too
    assert gemini_resolve.auth_facts(env)[:2] == (None, False)


def test_gemini_deltas_and_the_model_that_answered() -> None:
    parser = gemini_cli.GeminiParser()
    chunks = feed_all(
        parser,
        GEMINI_HEAD
        + [
            {"type": "message", "timestamp": "t", "role": "assistant", "content": "Hel", "delta": True},
            {"type": "message", "timestamp": "t", "role": "assistant", "content": "lo world", "delta": True},
            {"type": "tool_use", "timestamp": "t", "tool_name": "x", "tool_id": "1", "parameters": {}},
            {"type": "result", "timestamp": "t", "status": "success", "stats": gm_stats()},
        ],
    )
    assert chunks == [Chunk("text", "Hel"), Chunk("text", "lo world")]
    result = parser.finish(OK)
    assert result.text == "Hello world" and result.model == "gemini-3.5-flash"  # routed, as init does not say
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 3)


def test_gemini_whole_messages_add_only_what_is_new() -> None:
    parser = gemini_cli.GeminiParser()
    assert parser.feed(line({"type": "message", "role": "assistant", "content": "Hello"})) == [Chunk("text", "Hello")]
    assert parser.feed(line({"type": "message", "role": "assistant", "content": "Hello world"})) == [Chunk("text", " world")]
    with pytest.raises(ProviderFailure):
        parser.feed(line({"type": "message", "role": "assistant", "content": "Goodbye"}))


def test_gemini_error_result_is_classified() -> None:
    parser = gemini_cli.GeminiParser()
    error = {"type": "unknown", "message": '[API Error: {"error":{"message":"API key not valid. Please pass a valid API key.","code":401}}]'}
    feed_all(parser, GEMINI_HEAD + [{"type": "result", "timestamp": "t", "status": "error", "error": error, "stats": gm_stats()}])
    with pytest.raises(ProviderFailure) as info:
        parser.finish(CliExit(returncode=1))
    assert info.value.kind == "auth"


def test_gemini_mid_stream_error_event_then_error_result() -> None:
    parser = gemini_cli.GeminiParser()
    feed_all(
        parser,
        GEMINI_HEAD
        + [
            {"type": "message", "role": "assistant", "content": "Hel", "delta": True},
            {"type": "error", "timestamp": "t", "severity": "error", "message": "Model stream ended without a finish reason."},
            {"type": "result", "timestamp": "t", "status": "error", "stats": gm_stats()},
        ],
    )
    with pytest.raises(ProviderFailure) as info:
        parser.finish(OK)
    assert info.value.kind == "unavailable" and "finish reason" in info.value.message


def test_gemini_retry_notices_on_stderr() -> None:
    notice = gemini_cli.parse_retry_notice("Attempt 2 failed with status 503. Retrying with backoff... _ApiError: x")
    assert notice == (2, 503, "Attempt 2 failed with status 503. Retrying with backoff... _ApiError: x", True)
    notice = gemini_cli.parse_retry_notice("Attempt 1 failed: You exceeded your current quota. Retrying after 7412ms...")
    assert notice == (1, None, "You exceeded your current quota (retrying after 7412ms)", True)
    assert gemini_cli.parse_retry_notice("Ripgrep is not available. Falling back to GrepTool.") is None
    parser = gemini_cli.GeminiParser()
    parser.feed_stderr("Attempt 1 failed with status 500. Retrying with backoff... boom")  # may retry
    with pytest.raises(ProviderFailure) as info:
        parser.feed_stderr("Attempt 1 failed: You exceeded your current quota. Retrying after 7412ms...")
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 7.412)


def test_gemini_retry_notice_continued_on_the_next_line() -> None:
    parser = gemini_cli.GeminiParser()
    parser.feed_stderr("Attempt 1 failed: You exceeded your current quota, please check your plan and billing details.")
    with pytest.raises(ProviderFailure) as info:
        parser.feed_stderr("Suggested retry after 7s.. Retrying after 7585ms...")
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 7.0)


def test_gemini_exit_code_without_result() -> None:
    with pytest.raises(ProviderFailure) as info:
        gemini_cli.GeminiParser().finish(CliExit(returncode=41, stderr_tail=("Please set an Auth method",)))
    assert info.value.kind == "auth"
