"""The status-line file's format (takod.status_line): what the daemon writes is what
the prompt reads back, and anything it cannot vouch for reads as None."""

from __future__ import annotations

from takod.status_line import client_env, key_digest, lookup, prompt_line, render

KEYS = {"OPENAI_API_KEY": "sk-unit-CANARY-1"}


def text(workspaces: dict, answers: dict | None = None, pid: int = 4242, nonce: str = "n0nce") -> str:
    return render(pid, nonce, workspaces, answers or {}).decode()


def test_a_workspace_line_reads_back() -> None:
    t = text({"/home/u": (3, "codex"), "/home/u/my ws": (1, None)})
    assert lookup(t, "/home/u", {}) == (4242, "codex")
    assert lookup(t, "/home/u/my ws", {}) == (4242, None)  # a space in the path: the path is last
    assert lookup(t, "/home/u/other", {}) is None


def test_keys_need_an_answer_from_the_same_evaluation() -> None:
    digest = key_digest("n0nce", KEYS)
    fresh = text({"/w": (5, None)}, {("/w", digest): (5, "openai")})
    assert lookup(fresh, "/w", KEYS) == (4242, "openai")
    stale = text({"/w": (6, None)}, {("/w", digest): (5, "openai")})
    assert lookup(stale, "/w", KEYS) is None  # evaluated since: the daemon must be asked
    assert lookup(fresh, "/w", {"OPENAI_API_KEY": "sk-other"}) is None
    assert lookup(fresh, "/w", {}) == (4242, None)


def test_the_digest_depends_on_every_key_and_the_nonce_and_hides_them() -> None:
    d = key_digest("a", KEYS)
    assert d != key_digest("b", KEYS)
    assert d != key_digest("a", {**KEYS, "GROQ_API_KEY": "g"})
    assert d == key_digest("a", dict(reversed(list({**KEYS}.items()))))
    assert "CANARY" not in text({"/w": (1, None)}, {("/w", d): (1, "openai")})


def test_what_the_file_cannot_vouch_for() -> None:
    good = text({"/w": (1, "pi")})
    assert lookup(good.replace("takod-status-line 1", "takod-status-line 2"), "/w", {}) is None
    assert lookup("garbage\nw 1 pi /w\n", "/w", {}) is None
    assert lookup("", "/w", {}) is None
    assert lookup(good.replace(" 4242 ", " x "), "/w", {}) is None
    assert "\nw" not in text({"/a\nw 1 codex /w": (1, "codex")})  # a newline in a path is never written


def test_prompt_line_and_the_shell_keys() -> None:
    assert (prompt_line("codex"), prompt_line(None)) == ("tako:codex", "tako:none")
    env = {"OPENAI_API_KEY": "k", "GH_TOKEN": "t", "EMPTY_API_KEY": "", "PATH": "/bin"}
    assert client_env(env) == {"OPENAI_API_KEY": "k", "GH_TOKEN": "t"}
