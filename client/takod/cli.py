"""The ``takod`` command line. Standard library and msgspec only (it must start fast).

Exit codes: 0 success, 1 the daemon reported an error, 2 bad usage or a
request the daemon rejected, 3 the daemon could not be reached or started, 4 (health) no provider is ready,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from . import __version__
from .cli_format import FILE_FIX, event_line, file_problems, provider_rows, settings_rows
from .client import Client, ConnectError, ConnectionLost, RemoteError, TakodError, UntrustedSocket
from .paths import find_workspace, lock_path, log_path, socket_path, state_dir
from .schema import API_PROVIDERS, INFERENCE_ENV_VARS, PROVIDERS, SETTINGS_FIELDS, TOPICS, UNTRUSTED_WORKSPACE
from .status_line import client_env, prompt_line

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_READY = 4
EXIT_INTERRUPTED = 130

# Failures (kind 0) that are still the request's fault: exit 2 like any rejected request.
_REJECTED_CODES = frozenset({"invalid_key_value", "no_grant"})


# output ----------------------------------------------------------------------


class Output:
    """Writes human or JSON output; colours only on a terminal without NO_COLOR."""

    def __init__(self, json_mode: bool):
        self.json = json_mode
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def ok(self, text: str) -> str:
        return self.paint(text, "32")

    def bad(self, text: str) -> str:
        return self.paint(text, "31")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def emit_json(self, value: Any, *, compact: bool = False) -> None:
        data = msgspec.json.encode(value)
        if not compact:
            data = msgspec.json.format(data, indent=2)
        sys.stdout.write(data.decode() + "\n")
        sys.stdout.flush()

    def error(self, code: str, message: str) -> None:
        if self.json:
            self.emit_json({"error": {"code": code, "message": message}})
        else:
            print(f"takod: {message}" if code in ("unavailable", "error") else f"takod: {code}: {message}", file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


# commands --------------------------------------------------------------------


def _client(args: argparse.Namespace, *, spawn: bool | None = None) -> Client:
    return Client(args.socket, spawn=spawn, workspace=find_workspace(), name=f"takod-cli/{__version__}")


def _request_env() -> dict[str, str]:
    """Keys, and the routing and backend variables (docs/inference.md): this shell's
    `export` counts for a prompt even when the daemon was started elsewhere."""
    return {**client_env(), **{k: os.environ[k] for k in INFERENCE_ENV_VARS if os.environ.get(k)}}


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    env = client_env()
    short = getattr(args, "short", False)  # `takod probe` shows the table
    try:
        with _client(args) as c:
            st = c.call("status", {"env": env} if env else None)
    except ConnectError:
        if not short or out.json:
            raise
        print("tako:down")  # a prompt or status bar shows that, the reason goes to stderr
        raise
    if short:
        if out.json:
            out.emit_json({"selected": st["selected"]})
        else:
            print(prompt_line(st["selected"]))
        return EXIT_OK
    if out.json:
        out.emit_json(st)
        return EXIT_OK
    d = st["daemon"]
    print(f"takod {d['version']} · pid {d['pid']} · up {_duration(d['uptime_s'])} · {d['socket']}")
    print(f"workspace  {st['workspace']}")
    # Untrusted: one reason and one hint for the workspace, not five copies.
    untrusted = next((p for p in st["providers"] if p.get("reason") == UNTRUSTED_WORKSPACE), None)
    if untrusted is not None:
        print(f"trust      {out.bad(UNTRUSTED_WORKSPACE)}: {untrusted['hint']}")
    selected = st["selected"]
    print(f"selected   {out.ok(selected) if selected else out.bad('none')}")
    store = st.get("key_store")
    if store and not store["secure"]:
        print(f"keys       {out.bad('insecure storage')} ({store['reason']}): {store['backend']} — `takod auth` says more")
    print()
    # An HTTP API backend without its key is an option, not a problem: one line for all of them.
    keyless = [p["name"] for p in st["providers"] if p["name"] in API_PROVIDERS and p.get("reason") == "no-credentials"]
    shown = [p for p in st["providers"] if p["name"] not in keyless]
    for row in provider_rows(shown, ok=out.ok, bad=out.bad, dim=out.dim):
        print(row)
    if keyless:
        print(out.dim(f"  API backends without a key: {', '.join(keyless)} (`takod key set NAME`)"))
    problems = file_problems(st["providers"])
    if problems:
        print()
        for problem in problems:
            print(out.bad(f"! {problem}"))
        print(out.dim(f"  {FILE_FIX}"))
    return EXIT_OK


def cmd_paths(args: argparse.Namespace, out: Output) -> int:
    sock = Path(args.socket) if args.socket else socket_path()
    paths = {
        "socket": str(sock),
        "lock": str(lock_path(sock)),
        "state_dir": str(state_dir()),
        "log": str(log_path()),
        "workspace": str(find_workspace()),
    }
    if out.json:
        out.emit_json(paths)
    else:
        for key, value in paths.items():
            print(f"{key:<10} {value}")
    return EXIT_OK


def _lock_is_free(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def cmd_stop(args: argparse.Namespace, out: Output) -> int:
    client = _client(args, spawn=False)
    try:
        client.connect()
        pid = client.call("shutdown")["pid"]
    except UntrustedSocket:
        raise  # not "not running": something that is not ours listens there
    except ConnectError:
        if out.json:
            out.emit_json({"stopped": False, "running": False})
        else:
            print("takod is not running")
        return EXIT_OK
    finally:
        client.close()
    # Wait until it has let go of its instance lock (the last thing it does), so
    # `stop && serve` works. Not the pid: an exited but unreaped daemon still has one.
    sock = Path(args.socket) if args.socket else socket_path()
    deadline = time.monotonic() + 10
    stopped = False
    while time.monotonic() < deadline and not stopped:
        stopped = _lock_is_free(lock_path(sock))
        if not stopped:
            time.sleep(0.02)
    if out.json:
        out.emit_json({"stopped": stopped, "running": not stopped, "pid": pid})
    else:
        print(f"takod stopped (pid {pid})" if stopped else f"takod (pid {pid}) is still stopping")
    return EXIT_OK if stopped else EXIT_ERROR


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    topics = args.topic or list(TOPICS)
    with _client(args) as c:
        sub = c.call("subscribe", {"topics": topics})
        if not out.json:
            print(out.dim(f"watching {', '.join(sub['topics'])} (Ctrl-C to stop)"), file=sys.stderr)
        try:
            for method, params in c.notifications():
                if method != "takod.event" or len(params) != 4:
                    continue
                sub_id, seq, topic, payload = params
                if out.json:
                    out.emit_json({"sub_id": sub_id, "seq": seq, "topic": topic, "payload": payload}, compact=True)
                else:
                    print(f"{out.dim(time.strftime('%H:%M:%S'))} {event_line(topic, payload)}", flush=True)
        except ConnectionLost:
            if not out.json:
                print(out.dim("takod stopped"), file=sys.stderr)
    return EXIT_OK


def _expires(ts: float | None) -> str:
    if ts is None:
        return ""
    delta = ts - time.time()
    return f"expired {_duration(-delta)} ago" if delta < 0 else f"expires in {_duration(delta)}"


def _print_grants(grants: list[dict[str, Any]], out: Output) -> None:
    for g in grants:
        if g["state"] == "needs-login":
            when = out.bad(f"login needed: {g.get('guidance') or g.get('last_error')}")
        else:
            when = f"{_expires(g['expires_at'])}, next refresh {_in(g['refresh_at'])}"
            if g.get("wait_reason") == "waiting_for_codex":
                when += f" ({g['wait_reason']}: expired while takod was not watching; codex refreshes it when it starts)"
            elif g.get("wait_reason"):
                when += f" ({g['wait_reason']}: takod limits token requests per login)"
            if g.get("last_error"):
                when += out.bad(f" (last error: {g['last_error']})")
        print(f"  {g['provider']:<16} {g['state']:<11} {when}")
        print(out.dim(f"  {'':<16} " + ", ".join(g["mirrors"])))


def _in(ts: float | None) -> str:
    if ts is None:
        return "-"
    delta = ts - time.time()
    return "now" if delta <= 0 else f"in {_duration(delta)}"


def cmd_auth(args: argparse.Namespace, out: Output) -> int:
    if args.action == "refresh":
        with _client(args) as c:
            result = c.call("auth.refresh", {"provider": args.provider} if args.provider else None, timeout=150)
        if out.json:
            out.emit_json(result)
        else:
            if not result["grants"]:
                print("no OAuth logins takod can refresh")
            _print_grants(result["grants"], out)
        # `retrying` is no error (PROTOCOL §7.10: takod keeps trying); a refused grant needs the user.
        return EXIT_ERROR if any(g["state"] == "needs-login" for g in result["grants"]) else EXIT_OK
    with _client(args) as c:
        inv = c.call("auth.inventory")
    if out.json:
        out.emit_json(inv)
        return EXIT_OK
    store = inv.get("key_store")
    if store:
        state = out.ok("secure") if store["secure"] else out.bad(f"insecure storage ({store['reason']})")
        print(f"key store  {store['backend']} · {state}")
        if store.get("hint") and not store["secure"]:
            print(out.dim(f"           {store['hint']}"))
    if not inv["credentials"]:
        print("no credentials found")
    for cred in inv["credentials"]:
        mark = out.ok("*") if cred["wins"] else " "
        extra = ", ".join(x for x in (cred["backend"], cred["kind"], _expires(cred["expires_at"]), cred.get("account") or "") if x)
        print(f"{mark} {cred['provider']:<7} {cred['masked'] or '-':<18} {extra}")
        print(out.dim(f"          {cred['source']}" + (f" — {cred['note']}" if cred.get("note") else "")))
    for problem in inv["problems"]:
        print(out.bad(f"! {problem}"))
    if inv.get("grants"):
        print("\nOAuth logins takod keeps fresh:")
        _print_grants(inv["grants"], out)
    return EXIT_OK


def _read_secret(name: str, value: str | None) -> str:
    """The key value: from the argument, else stdin ('-' or piped), else a hidden prompt."""
    if value not in (None, "-"):
        if not value:  # refused by the daemon: no warning about a key that is not there
            return ""
        print("takod: warning: a key on the command line is visible in `ps` and shell history; "
              "prefer `takod key set NAME` (prompt) or `... | takod key set NAME -`", file=sys.stderr)
        return value  # type: ignore[return-value]
    if value == "-" or not sys.stdin.isatty():
        return sys.stdin.read().strip()
    import getpass

    return getpass.getpass(f"{name}: ").strip()


def _key_get(args: argparse.Namespace, out: Output) -> int:
    """Print a stored key, only into a pipe: the ``!command`` pi runs for an auth.json entry."""
    if sys.stdout.isatty():
        out.error("refused", "`takod key get` prints a key only into a pipe (pi's `!command` key entries run it); "
                  "to see which keys are stored: `takod key list`")
        return EXIT_USAGE
    with _client(args) as c:
        result = c.call("keys.get", {"name": args.name})
    sys.stdout.write(result["value"] + "\n")
    return EXIT_OK


def cmd_key(args: argparse.Namespace, out: Output) -> int:
    if args.key_command == "get":
        return _key_get(args, out)
    with _client(args) as c:
        if args.key_command == "set":
            result = c.call("keys.set", {"name": args.name, "value": _read_secret(args.name, args.value)})
            text = f"stored {result['name']} ({result['masked']}) in {result['backend']}"
            if result.get("pi_entry_outcome") == "written":
                text += f"; the workspace pi (Takobot's) reads it through {result['pi_entry']}"
            elif result.get("pi_entry_outcome") == "other-entry":
                text += f"; {result['pi_entry']} already has its own {result['name']} provider entry, which pi uses first"
        elif args.key_command == "clear":
            result = c.call("keys.clear", {"name": args.name})
            text = f"removed {result['name']}" if result["removed"] else f"no stored key {result['name']}"
        elif args.key_command == "names":
            result = c.call("keys.names")
            if not out.json:
                width = max(len(n["name"]) for n in result["names"])
                for n in result["names"]:
                    print(f"{n['name']:<{width}}  {n['description']}")
                return EXIT_OK
        elif args.key_command == "migrate":
            result = c.call("keys.migrate", {"to_file": True} if args.to_file else None)
            text = (f"migrated {', '.join(result['migrated']) or 'nothing'}"
                    + (f"; failed: {', '.join(result['failed'])}" if result["failed"] else ""))
            if result.get("pi_entries"):
                text += f"\nTakobot's pi reads {', '.join(result['pi_entries'])} from takod through its auth.json"
            for name, why in (result.get("kept") or {}).items():
                text += f"\n{name}: {why}"
        else:
            result = c.call("keys.list")
            if not out.json:
                store = result["store"]
                print(f"key store  {store['backend']}" + ("" if store["secure"] else out.bad(f" · insecure storage ({store['reason']})")))
                for key in result["keys"]:
                    print(f"  {key['name']:<28} {key['masked']:<20} {key['backend']}")
                if not result["keys"]:
                    print("  no stored keys")
                return EXIT_OK
    if out.json:
        out.emit_json(result)
    else:
        print(text)
    return EXIT_OK


def _set_setting(args: argparse.Namespace, out: Output, field: str, value: str) -> int:
    with _client(args) as c:
        result = c.call("settings.set", {"field": field, "value": value})
        selected = c.call("status")["selected"]
    if out.json:
        out.emit_json({**result, "selected": selected})
    else:
        shown = result[field] or "(auto)"
        print(f"{field} = {shown}  ·  selected provider: {selected or 'none'}")
    return EXIT_OK


def cmd_prefer(args: argparse.Namespace, out: Output) -> int:
    return _set_setting(args, out, "preferred_provider", args.provider)


def cmd_ollama(args: argparse.Namespace, out: Output) -> int:
    field = "ollama_host" if args.ollama_command == "host" else "ollama_model"
    return _set_setting(args, out, field, args.value)


def cmd_settings(args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "settings_command", None) == "set":
        return _set_setting(args, out, args.field, args.value)
    with _client(args) as c:
        result = c.call("settings.get")
    if out.json:
        out.emit_json(result)
    else:
        print("\n".join(settings_rows(result)))
    return EXIT_OK


def cmd_probe(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as c:
        c.call("providers.probe", timeout=90)
    return cmd_status(args, out)


def _read_prompt(value: str | None) -> str:
    if value in (None, "-"):
        if sys.stdin.isatty() and value is None:
            raise TakodError("no prompt: give one as an argument, or pipe it in")
        return sys.stdin.read()
    return value  # type: ignore[return-value]


def _infer_params(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in {
        "system": args.system, "model": args.model, "provider": args.provider, "temperature": args.temperature,
        "thinking": args.thinking, "timeout": args.timeout, "lane": args.lane,
    }.items() if v is not None}
    if args.format != "text":
        params["format"] = args.format
    if args.local:
        params["local_only"] = True
    env = _request_env()
    if env:
        params["env"] = env
    params.update(extra)
    return params


def _route_note(out: Output, result: dict[str, Any]) -> str:
    bits = [f"answered by {result['provider']}"]
    if result.get("model"):
        bits.append(result["model"])
    bits.append(f"{result['elapsed_ms'] / 1000:.1f} s")
    if result.get("input_tokens") is not None or result.get("output_tokens") is not None:
        bits.append(f"{result.get('input_tokens') or '?'}→{result.get('output_tokens') or '?'} tokens")
    return out.dim(" · ".join(bits))


def _stream_answer(c: Client, params: dict[str, Any], out: Output) -> dict[str, Any]:
    """Stream one answer to stdout, the route to stderr; return the result."""
    result: dict[str, Any] = {}
    wrote = False
    for kind, payload in c.stream("infer", {**params, "stream": True}):
        if kind == "text":
            sys.stdout.write(payload["text"])
            sys.stdout.flush()
            wrote = True
        elif kind == "route":
            model = f" ({payload['model']})" if payload.get("model") else ""
            rule = f" — {payload['rule']}" if payload.get("rule") else ""
            print(out.dim(f"→ {payload['provider']}{model}{rule}"), file=sys.stderr, flush=True)
        elif kind == "fallback":
            print(out.bad(f"✗ {payload['error'] and payload['provider'] + ': ' + payload['error']}"), file=sys.stderr, flush=True)
        elif kind == "result":
            result = payload
    if wrote and not result.get("text", "").endswith("\n"):
        sys.stdout.write("\n")
    return result


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    if args.prompt_opt is not None:
        if args.model is not None:
            out.error("usage", "--prompt and two arguments: give the prompt once, and the model as the argument or -m")
            return EXIT_USAGE
        # `run --prompt TEXT MODEL`: the one argument is the model.
        args.prompt, args.model = args.prompt_opt, args.prompt
    if args.model_opt is not None and args.model is not None and args.model_opt != args.model:
        out.error("usage", f"two models: {args.model!r} and -m {args.model_opt!r}; give one")
        return EXIT_USAGE
    args.model = args.model_opt or args.model
    prompt = _read_prompt(args.prompt)
    params = _infer_params(args, prompt=prompt)
    with _client(args) as c:
        if out.json or args.no_stream:
            result = c.call("infer", params, timeout=args.timeout * 6 if args.timeout else 1200)
            if out.json:
                out.emit_json(result)
                return EXIT_OK
            sys.stdout.write(result["text"] + ("" if result["text"].endswith("\n") else "\n"))
        else:
            result = _stream_answer(c, params, out)
    print(_route_note(out, result), file=sys.stderr)
    return EXIT_OK


CHAT_HELP = """/exit      leave (or Ctrl-D)
/clear     forget the conversation
/model M   use model M from now on (/model alone: back to the default)
/help      this text"""


def cmd_chat(args: argparse.Namespace, out: Output) -> int:
    messages: list[dict[str, str]] = []
    print(out.dim("takod chat — /help for commands, Ctrl-D to leave"), file=sys.stderr)
    with _client(args) as c:
        while True:
            try:
                line = input(out.paint("you> ", "1"))
            except EOFError:
                print(file=sys.stderr)
                return EXIT_OK
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return EXIT_OK
            if text == "/clear":
                messages.clear()
                print(out.dim("(conversation cleared)"), file=sys.stderr)
                continue
            if text == "/help":
                print(CHAT_HELP, file=sys.stderr)
                continue
            if text.startswith("/model"):
                args.model = text[len("/model"):].strip() or None
                print(out.dim(f"(model: {args.model or 'default'})"), file=sys.stderr)
                continue
            messages.append({"role": "user", "content": line})
            try:
                result = _stream_answer(c, _infer_params(args, messages=messages), out)
            except RemoteError as exc:
                messages.pop()
                out.error(exc.code, exc.message)
                continue
            messages.append({"role": "assistant", "content": result.get("text", "")})
            print(_route_note(out, result), file=sys.stderr)


def cmd_embed(args: argparse.Namespace, out: Output) -> int:
    texts = args.text or [_read_prompt("-")]
    params: dict[str, Any] = {"texts": texts, "provider": args.provider}
    if args.model:
        params["model"] = args.model
    if env := _request_env():
        params["env"] = env
    with _client(args) as c:
        result = c.call("embed", params)
    if out.json or args.output == "json":
        out.emit_json(result)
    elif args.output == "length":
        print(result["dimensions"])
    else:
        for vector in result["embeddings"]:
            print(msgspec.json.encode(vector).decode())
    return EXIT_OK


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _count(n: object, fallback: object) -> str:
    if isinstance(n, int) and n > 0:
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= scale:
                return f"{n / scale:.2f}".rstrip("0").rstrip(".") + unit
        return str(n)
    return str(fallback) if fallback else "-"


def models_table(models: list[dict[str, Any]]) -> list[str]:
    """The models as aligned lines: provider, name, size, modified/created date, parameters, quantization."""
    rows = [("PROVIDER", "MODEL", "SIZE", "MODIFIED", "PARAMS", "QUANT")]
    for m in models:
        d = m.get("detail") or {}
        date = str(d.get("modified_at") or d.get("created_at") or "-")[:10]
        rows.append((m["provider"], m["name"], _size(d.get("size")), date,
                     _count(d.get("parameter_count"), d.get("parameter_size")), str(d.get("quantization") or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def cmd_models(args: argparse.Namespace, out: Output) -> int:
    params: dict[str, Any] = {"provider": args.provider} if args.provider else {}
    if env := _request_env():
        params["env"] = env
    with _client(args) as c:
        result = c.call("models.list", params or None)
    if out.json or args.format == "json":
        out.emit_json(result)
        return EXIT_OK
    if result["models"]:
        print("\n".join(models_table(result["models"])))
    for provider, error in result["errors"].items():
        print(out.bad(f"{provider}: {error}"), file=sys.stderr)
    if not result["models"] and not result["errors"]:
        print("no models found: pull one (`ollama pull llama3.2`) or set an API key (`takod key set ANTHROPIC_API_KEY`)")
    return EXIT_OK


def cmd_health(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as c:
        result = c.call("health")
    if out.json:
        out.emit_json(result)
    return EXIT_OK if result["ok"] else EXIT_NOT_READY


def cmd_version(args: argparse.Namespace, out: Output) -> int:
    """The client's version, and the running daemon's when one answers (never starts one)."""
    daemon: dict[str, Any] | None = None
    client = _client(args, spawn=False)
    try:
        client.connect()
        info = client.call("hello", {"client": f"takod-cli/{__version__}"})
        daemon = {"version": info["version"], "protocol": info["protocol"], "pid": info.get("pid")}
    except UntrustedSocket:
        raise  # not "not running": something that is not ours listens there
    except ConnectError:
        pass
    finally:
        client.close()
    differs = daemon is not None and daemon["version"] != __version__
    if out.json:
        out.emit_json({"client": __version__, "daemon": daemon, "differs": differs})
        return EXIT_OK
    print(f"client  takod {__version__}")
    if daemon is None:
        print("daemon  not running")
    else:
        print(f"daemon  takod {daemon['version']} (protocol {daemon['protocol']})")
        if differs:
            print(out.bad("the daemon runs another version: `takod stop` and the next command starts this one"))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    try:
        from takod_daemon.main import main as daemon_main
    except ImportError:
        out.error("unavailable", "the daemon is not installed in this Python (package takod_daemon missing)")
        return EXIT_UNAVAILABLE
    argv = ["--log", args.log, "--log-level", args.log_level]
    if args.socket:
        argv += ["--socket", args.socket]
    return daemon_main(argv)


# parser ----------------------------------------------------------------------


class _Unbuilt:
    """Stands in for the parser of a command this run does not use: takes any
    configuration call (add_argument, add_subparsers, set_defaults, ...) and ignores it."""

    def __getattr__(self, name: str) -> Callable[..., "_Unbuilt"]:
        return lambda *args, **kwargs: self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. With ``only``, just that command is built, the others stand
    in as :class:`_Unbuilt` (building all ~30 parsers costs more than a `takod
    status` round trip); if ``only`` is no command, everything is built after all."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")
    common.add_argument("--socket", metavar="PATH", help="daemon socket (default: $TAKOD_SOCKET or the platform default)")

    parser = argparse.ArgumentParser(
        prog="takod",
        description="takod: the per-user inference daemon for Tako workspaces.",
        epilog="Run `takod COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"takod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    built: list[str] = []

    def add(name: str, func: Callable[[argparse.Namespace, Output], int], help: str) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Unbuilt()  # type: ignore[return-value]
        built.append(name)
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    st = add("status", cmd_status, "show the daemon and every provider's readiness")
    st.add_argument("--short", action="store_true", help="one line for a shell prompt or status bar: tako:PROVIDER or tako:none")
    au = add("auth", cmd_auth, "list every credential found (masked), which one each provider uses, the key store and "
             "the OAuth logins takod keeps fresh; `takod auth refresh [PROVIDER]` refreshes now")
    au.add_argument("action", nargs="?", choices=["refresh"], help="refresh OAuth logins now")
    au.add_argument("provider", nargs="?", help="only this provider (codex, claude, copilot, or a pi provider id)")
    key = add("key", cmd_key, "store API keys in the OS keyring: set, get, clear, list, migrate")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    ks = key_sub.add_parser("set", parents=[common], help="store a key (value from the prompt, stdin with -, or the argument)")
    ks.add_argument("name", help="env var name, e.g. OPENAI_API_KEY")
    ks.add_argument("value", nargs="?", help="the key; omit to be prompted, or - to read stdin")
    kc = key_sub.add_parser("clear", parents=[common], help="remove a stored key")
    kc.add_argument("name")
    key_sub.add_parser("list", parents=[common], help="list stored keys (masked)")
    key_sub.add_parser("names", parents=[common], help="list every key name `key set` accepts")
    km = key_sub.add_parser("migrate", parents=[common], help="move plaintext api_keys from the workspace settings into the "
                            "key store (Takobot's pi then reads them through `takod key get`)")
    km.add_argument("--to-file", action="store_true",
                    help="with no OS keyring: move them to takod's 0600 key file anyway (refused otherwise)")
    kg = key_sub.add_parser("get", parents=[common], help="print a stored key into a pipe (for pi's `!command` key entries)")
    kg.add_argument("name")
    pr = add("prefer", cmd_prefer, "prefer a provider when it is ready (or `auto`: priority order)")
    pr.add_argument("provider", choices=["auto", *PROVIDERS, *API_PROVIDERS])
    ol = add("ollama", cmd_ollama, "set the Ollama host or model for this workspace")
    ol_sub = ol.add_subparsers(dest="ollama_command", metavar="WHAT", required=True)
    oh = ol_sub.add_parser("host", parents=[common], help="Ollama URL, e.g. http://127.0.0.1:11434 (empty: OLLAMA_HOST or default)")
    oh.add_argument("value", metavar="URL")
    om = ol_sub.add_parser("model", parents=[common], help="Ollama model, e.g. llama3.2 (empty: OLLAMA_MODEL or first listed)")
    om.add_argument("value", metavar="NAME")
    st = add("settings", cmd_settings, "show this workspace's inference settings; `takod settings set FIELD VALUE` sets one")
    st_sub = st.add_subparsers(dest="settings_command", metavar="ACTION")
    ss = st_sub.add_parser("set", parents=[common], help="set one setting (Takobot reads the same file)")
    ss.add_argument("field", choices=list(SETTINGS_FIELDS),
                    help="type1_model / type2_model: the model pi runs with for Takobot's fast / deep lane (`auto`: pi's own)")
    ss.add_argument("value")

    def infer_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-s", "--system", help="system prompt")
        p.add_argument("--provider", "--backend", dest="provider", metavar="NAME",
                       help="only this provider (pi, ollama, codex, claude, gemini, anthropic, openai, ...); "
                            "--backend is the Inference skill's name for it")
        p.add_argument("-t", "--temperature", type=float, metavar="T",
                       help="sampling temperature, 0.0 (focused) to 1.0 (creative); default: the model's")
        p.add_argument("--format", choices=["text", "json"], default="text",
                       help="json: ask the model for a JSON answer (Ollama and the APIs enforce it); default text")
        p.add_argument("--thinking", help="thinking level: off, minimal, low, medium, high, xhigh")
        p.add_argument("--timeout", type=float, help="seconds per provider attempt (default: OLLAMA_TIMEOUT / "
                       "ANTHROPIC_TIMEOUT for those, else 180)")
        p.add_argument("--local", action="store_true", help="never send the prompt off this machine (Ollama on loopback)")
        p.add_argument("--lane", choices=["type1", "type2"],
                       help="Takobot's model lane: type1 (fast, the default) or type2 (deep); without a model, pi "
                       "uses the lane's model from the settings (`takod settings set type2_model MODEL`)")

    r = add("run", cmd_run, "run a prompt on the first ready provider, streaming the answer (route on stderr)")
    r.add_argument("prompt", nargs="?", help="the prompt; - or omitted: read stdin")
    r.add_argument("model", nargs="?", help="model (implies a provider: claude-* anthropic, llama3.2 ollama, provider/model pi)")
    r.add_argument("--prompt", dest="prompt_opt", metavar="TEXT", help="the prompt (instead of the first argument)")
    r.add_argument("-m", "--model", dest="model_opt", metavar="MODEL",
                   help="model (instead of the second argument); implies a provider as above")
    r.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    infer_options(r)
    ch = add("chat", cmd_chat, "multi-turn chat (/exit, /clear, /model, /help)")
    ch.add_argument("-m", "--model", metavar="MODEL",
                    help="model (implies a provider: claude-* anthropic, llama3.2 ollama); default: OLLAMA_CHAT_MODEL "
                         "for Ollama, else each provider's own")
    infer_options(ch)
    em = add("embed", cmd_embed, "embed texts (never falls back to another model)")
    em.add_argument("--text", action="append", help="a text to embed (repeatable; default: stdin)")
    em.add_argument("-m", "--model", metavar="MODEL",
                    help="embedding model (default: OLLAMA_EMBED_MODEL or nomic-embed-text; openai: text-embedding-3-small)")
    em.add_argument("--provider", "--backend", dest="provider", choices=["ollama", "openai"], default="ollama",
                    help="who computes the vectors (default ollama)")
    em.add_argument("--output", choices=["json", "array", "length"], default="array",
                    help="array: one JSON vector per line (default); json: the whole result; length: the dimensions")
    mo = add("models", cmd_models, "list the models each provider offers: size, date, parameters, quantization")
    mo.add_argument("--provider", "--backend", dest="provider", metavar="NAME",
                    help="only this provider (ollama, anthropic, openai, openrouter, groq, ...)")
    mo.add_argument("--format", choices=["table", "json"], default="table",
                    help="table (default) or json (same as --json)")
    add("health", cmd_health, "exit 0 if some provider is ready, 4 if none (silent unless --json)")
    add("probe", cmd_probe, "re-detect CLIs, re-read credentials and re-probe Ollama now, then show status")
    add("paths", cmd_paths, "show the socket, lock, state and log paths takod uses")
    add("stop", cmd_stop, "stop the running daemon (never starts one)")
    w = add("watch", cmd_watch, "print events (status, auth, daemon, login) as they happen")
    w.add_argument("--topic", action="append", choices=TOPICS, help="only this topic (repeatable)")
    # Commands with modules of their own (subprocess, threading, ...): imported only
    # when one of them runs, or for the full parser.
    for module, names in (("cli_login", ("login",)), ("cli_service", ("service",)), ("cli_doctor", ("doctor",)),
                          ("cli_completion", ("completion", "man"))):
        if only is None or only in names:
            importlib.import_module(f"{__package__}.{module}").register(add, common)
    add("version", cmd_version, "show the client's version and the running daemon's (never starts one)")
    s = add("serve", cmd_serve, "run the daemon in the foreground")
    s.add_argument("--log", choices=["auto", "console", "json", "journal"], default="auto", help="log output format")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    if only is not None and not built:
        return build_parser()  # not a command: the full parser says so and lists them
    return parser


def prompt_args(words: list[str]) -> argparse.Namespace | None:
    """``takod status --short`` parsed without argparse: a shell prompt or status bar
    runs it all the time, and building even one command's parser (argparse's gettext
    lookups) costs more CPU than the status call itself (docs/performance.md §9).
    tests/unit/test_cli_parser.py checks it equals what the parser makes."""
    if words != ["status", "--short"]:
        return None
    return argparse.Namespace(command="status", json=False, socket=None, short=True, func=cmd_status)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = prompt_args(words)
    if args is None:
        parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
    out = Output(args.json)
    try:
        return args.func(args, out)
    except RemoteError as exc:
        out.error(exc.code, exc.message)
        return EXIT_USAGE if exc.is_bad_request or exc.code in _REJECTED_CODES else EXIT_ERROR
    except ConnectError as exc:
        out.error("unavailable", str(exc))
        return EXIT_UNAVAILABLE
    except TakodError as exc:
        out.error("error", str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `takod watch | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
