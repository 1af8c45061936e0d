"""The CLI's human output as pure functions: aligned status rows, one line per event, a settings table."""

from __future__ import annotations

import re

from takod.cli_format import event_line, file_problems, provider_rows, settings_rows


def p(name: str, level: str, reason: str | None = None, hint: str | None = None, **detail: object) -> dict:
    return {"name": name, "ready": level == "ready", "level": level, "reason": reason, "hint": hint, "detail": detail}


README_EXAMPLE = [
    p("pi", "installed", "no-credentials", "`takod login PROVIDER`"),
    p("ollama", "reachable", "model-not-pulled", "pull it (`ollama pull llama3.2`)"),
    p("codex", "ready"),
    p("claude", "not-installed", "not-installed", "install Claude Code"),
    p("gemini", "installed", "no-credentials", "run `gemini`"),
]


def test_reasons_start_in_one_column_whatever_the_level() -> None:
    rows = provider_rows(README_EXAMPLE)
    starts = {row.index(p["reason"], row.index(p["level"]) + len(p["level"])) for row, p in zip(rows, README_EXAMPLE) if p["reason"]}
    assert len(starts) == 1, rows
    assert rows[2] == "  codex   ready"  # nothing trails a ready provider


def test_colour_never_shifts_a_column() -> None:
    def paint(text: str) -> str:
        return f"\033[31m{text}\033[0m"

    plain = provider_rows(README_EXAMPLE)
    coloured = [re.sub(r"\033\[[0-9;]*m", "", row) for row in provider_rows(README_EXAMPLE, ok=paint, bad=paint, dim=paint)]
    assert coloured == plain


def test_a_ready_provider_with_a_hint_shows_it() -> None:
    rows = provider_rows([p("pi", "ready", hint="ready through another credential, but ..."), p("claude", "not-installed", "x")])
    assert rows[0].endswith("ready through another credential, but ...")


def test_file_problems_once_each() -> None:
    warn = "settings unusable, using the last good ones: /w/.tako/state/inference-settings.json: bad JSON"
    providers = [p("pi", "installed", "credentials-unreadable", problems=["/h/.pi/agent/auth.json: bad JSON"], warnings=[warn]),
                 p("codex", "ready", warnings=[warn, "env-shadowed: OPENAI_API_KEY ..."])]
    assert file_problems(providers) == ["/h/.pi/agent/auth.json: bad JSON", warn]


def test_event_lines_are_one_readable_line() -> None:
    cases = {
        ("daemon", (("state", "stopping"), ("reason", "SIGTERM"))): "daemon  stopping (SIGTERM)",
        ("auth", (("kind", "credentials"), ("seq", 3))): "auth    credentials changed (`takod auth` lists them)",
        ("auth", (("kind", "needs-login"), ("grant", "g1"), ("provider", "anthropic"), ("error", "invalid_grant"),
                  ("guidance", "run `takod login anthropic`"))):
            "auth    the anthropic login needs you: invalid_grant — run `takod login anthropic`",
        ("resync", (("lost", 4),)): "resync  4 events lost; re-read with `takod status` / `takod auth`",
        ("future", (("kind", "x"), ("n", 1), ("nested", ()))): "future  kind=x n=1",
    }
    for (topic, payload), line in cases.items():
        assert event_line(topic, dict(payload)) == line
    status = event_line("status", {"workspace": "/w", "selected": "codex", "seq": 2, "updated_at": 0,
                                   "providers": README_EXAMPLE})
    assert status == ("status  selected codex · ready: codex · not ready: pi (no-credentials), ollama (model-not-pulled), "
                      "claude (not-installed), gemini (no-credentials) · /w")
    assert "\n" not in status


def test_settings_rows_are_a_table_without_reprs() -> None:
    rows = settings_rows({"workspace": "/w", "path": "/w/.tako/state/inference-settings.json", "preferred_provider": "auto",
                          "ollama_model": "", "ollama_host": "", "type1_model": "", "type2_model": "",
                          "api_keys": {"GROQ_API_KEY": "gsk_...9f3a"}, "problem": None})
    text = "\n".join(rows)
    assert "None" not in text and "{" not in text
    assert "GROQ_API_KEY gsk_...9f3a" in text and "`takod key migrate`" in text
    assert len({row.index(row.split(None, 1)[1]) for row in rows if not row.startswith(" ")}) == 1
