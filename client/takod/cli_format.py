"""Human output for `takod status`, `watch` and `settings`: pure functions from
the daemon's answers (plain dicts) to lines of text. No I/O, no colour decisions
beyond the ``paint`` callables the caller passes."""

from __future__ import annotations

from typing import Any, Callable

Paint = Callable[[str], str]


def _plain(text: str) -> str:
    return text


def provider_rows(providers: list[dict[str, Any]], *, ok: Paint = _plain, bad: Paint = _plain,
                  dim: Paint = _plain) -> list[str]:
    """One aligned line per provider: name, level, reason and its fix.

    Widths come from the plain text, so colour codes never shift a column."""
    name_w = max((len(p["name"]) for p in providers), default=0)
    level_w = max((len("ready" if p["ready"] else p["level"]) for p in providers), default=0)
    rows = []
    for p in providers:
        level = "ready" if p["ready"] else p["level"]
        pad = " " * (level_w - len(level))
        line = f"  {p['name']:<{name_w}}  {(ok if p['ready'] else bad)(level)}"
        tail = ""
        if not p["ready"] and p.get("reason"):
            # An untrusted workspace's reason is explained once, above the table.
            hint = p.get("hint") if p["reason"] != "untrusted-workspace" else None
            tail = p["reason"] + (dim(f" — {hint}") if hint else "")
        elif p.get("hint"):  # ready, but something still needs a fix
            tail = dim(p["hint"])
        rows.append(line + (pad + "  " + tail if tail else ""))
        auth_file = (p.get("detail") or {}).get("auth_file") if p["name"] == "pi" else None
        if auth_file:  # which credential file a pi run uses
            rows.append(dim(f"  {'':<{name_w}}  runs with {auth_file}"))
    return rows


def file_problems(providers: list[dict[str, Any]]) -> list[str]:
    """Unreadable credential files and an unusable settings file, once each, from
    the providers' ``detail.problems`` and ``detail.warnings``."""
    found: dict[str, None] = {}
    for p in providers:
        detail = p.get("detail") or {}
        for text in detail.get("problems") or []:
            found[str(text)] = None
        for text in detail.get("warnings") or []:
            if str(text).startswith("settings unusable"):
                found[str(text)] = None
    return list(found)


FILE_FIX = "takod never rewrites a file it cannot parse: repair it or move it aside (`takod doctor` says more)"


def _scalars(payload: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return " ".join(f"{k}={v}" for k, v in payload.items()
                    if k not in skip and isinstance(v, (str, int, float, bool)) and v != "")


def event_line(topic: str, payload: Any) -> str:
    """One readable line for a ``takod.event``; unknown topics and kinds still print their scalar fields."""
    if not isinstance(payload, dict):
        return f"{topic} {payload}"
    if topic == "status":
        providers = payload.get("providers") or []
        ready = [p["name"] for p in providers if p.get("ready")]
        waiting = [f"{p['name']} ({p.get('reason')})" for p in providers if not p.get("ready")]
        parts = [f"selected {payload.get('selected') or 'none'}", f"ready: {', '.join(ready) or 'none'}"]
        if waiting:
            parts.append(f"not ready: {', '.join(waiting)}")
        return "status  " + " · ".join(parts) + f" · {payload.get('workspace', '')}"
    if topic == "auth":
        kind = payload.get("kind")
        if kind == "credentials":
            return "auth    credentials changed (`takod auth` lists them)"
        if kind == "refreshed":
            return f"auth    refreshed the {payload.get('provider')} login ({', '.join(payload.get('mirrors') or [])})"
        if kind == "needs-login":
            return (f"auth    the {payload.get('provider')} login needs you: {payload.get('error')}"
                    + (f" — {payload['guidance']}" if payload.get("guidance") else ""))
        return f"auth    {_scalars(payload)}"
    if topic == "daemon":
        state = payload.get("state")
        reason = f" ({payload['reason']})" if payload.get("reason") else ""
        return f"daemon  {state}{reason}"
    if topic == "login":
        line = f"login   {payload.get('provider')} [{payload.get('login_id')}] {payload.get('kind')}: {payload.get('message')}"
        for key in ("url", "code", "hint"):
            if payload.get(key):
                line += f" · {key} {payload[key]}"
        return line
    if topic == "resync":
        return f"resync  {payload.get('lost', '?')} events lost; re-read with `takod status` / `takod auth`"
    return f"{topic:<7} {_scalars(payload)}"


def settings_rows(settings: dict[str, Any]) -> list[str]:
    """The settings as a two-column table; key values masked by the daemon, empty values shown as their meaning."""
    defaults = {
        "preferred_provider": "auto", "ollama_model": "(OLLAMA_MODEL, else the first pulled)",
        "ollama_host": "(OLLAMA_HOST, else http://127.0.0.1:11434)", "type1_model": "(auto)", "type2_model": "(auto)",
    }
    rows = [("workspace", settings["workspace"]), ("file", settings["path"])]
    rows += [(name, settings.get(name) or shown) for name, shown in defaults.items()]
    keys = settings.get("api_keys") or {}
    if keys:
        rows.append(("api_keys", ", ".join(f"{name} {masked}" for name, masked in keys.items())))
        rows.append(("", "plaintext in the settings file: `takod key migrate` moves them to the key store"))
    if settings.get("problem"):
        rows.append(("problem", f"{settings['problem']}; using the last good settings"))
        rows.append(("", FILE_FIX))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]
