"""``takod login PROVIDER`` and ``takod login answer TEXT``: assisted login through the daemon.

The daemon runs the flow (login.start); this command prints each prompt from the
``login`` topic, reads answers from the terminal (hidden for secrets) on a side
thread with its own connection (so a browser callback can finish the login while
we wait for typing), and ends with the outcome. Ctrl-C cancels the login.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any, Callable

from .cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, Output, _client

_PROMPTS = ("open_url", "paste", "secret")


def _read_answer(kind: str) -> str | None:
    if kind == "secret" and sys.stdin.isatty():
        import getpass

        return getpass.getpass("key (hidden): ")
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def _answer_in_background(args: argparse.Namespace, login_id: str, kind: str) -> None:
    def run() -> None:
        text = _read_answer(kind)
        if text:
            with _client(args) as c:
                c.call("login.answer", {"login_id": login_id, "text": text})

    threading.Thread(target=run, daemon=True).start()


def _show(event: dict[str, Any], out: Output) -> None:
    if out.json:
        out.emit_json(event, compact=True)
        return
    kind = event["kind"]
    text = event["message"]
    if kind == "done":
        print(out.ok(text))
    elif kind == "failed":
        print(out.bad(f"{text}: {event.get('hint', '')}"), file=sys.stderr)
    else:
        print(text)
        if event.get("url"):
            print(f"  {event['url']}")
        if event.get("code"):
            print(f"  code: {event['code']}")
        if kind in ("open_url", "paste"):
            print(out.dim("  paste here and press Enter, or answer from elsewhere with `takod login answer TEXT`"))
    sys.stdout.flush()


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    if args.provider == "answer":
        if args.text is None:
            out.error("usage", "takod login answer TEXT [--id ID]")
            return 2
        with _client(args) as c:
            result = c.call("login.answer", {"text": args.text, **({"login_id": args.id} if args.id else {})})
        if out.json:
            out.emit_json(result)
        elif not result["accepted"]:
            print(f"login {result['login_id']} is not waiting for an answer", file=sys.stderr)
        return EXIT_OK if result["accepted"] else EXIT_ERROR
    with _client(args) as c:
        c.call("subscribe", {"topics": ["login"]})
        params: dict[str, Any] = {"provider": args.provider}
        if args.timeout is not None:
            params["timeout"] = args.timeout
        login_id = c.call("login.start", params)["login_id"]
        try:
            for method, event in c.notifications():
                if method != "takod.event" or len(event) != 4 or event[3].get("login_id") != login_id:
                    continue
                payload = event[3]
                _show(payload, out)
                if payload["kind"] in _PROMPTS:
                    _answer_in_background(args, login_id, payload["kind"])
                elif payload["kind"] in ("done", "failed"):
                    return EXIT_OK if payload["kind"] == "done" else EXIT_ERROR
        except KeyboardInterrupt:
            with _client(args) as cancel:
                cancel.call("login.cancel", {"login_id": login_id})
            return EXIT_INTERRUPTED
    return EXIT_ERROR


def register(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add("login", cmd_login, "log in to a provider through the daemon (codex, anthropic, or an API-key provider "
            "such as openai, gemini); `takod login answer TEXT` answers a waiting prompt")
    p.add_argument("provider", metavar="PROVIDER", help="codex|openai-codex, anthropic|claude, openai, gemini, ... or `answer`")
    p.add_argument("text", nargs="?", help="with `answer`: the pasted code, redirect URL or value")
    p.add_argument("--id", help="with `answer`: the login id (default: the only running login)")
    p.add_argument("--timeout", type=float, help="seconds before the login gives up (default 900)")
