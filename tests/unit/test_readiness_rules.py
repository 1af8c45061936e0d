"""The pure readiness rules: hand-built facts in, one status per provider and a
selection out. No daemon, no files: every level and reason path of
``readiness.evaluate``."""

from __future__ import annotations

import pytest

from pathlib import Path

from takod.schema import API_PROVIDERS, PROVIDERS
from takod_daemon.cooldowns import Cooldowns
from takod_daemon.credentials.summary import CredentialSummary
from takod_daemon.providers.detect import BinaryInfo
from takod_daemon.providers.ollama_probe import OllamaModel, OllamaProbe
from takod_daemon.readiness import HINTS, OLLAMA_MISSING_HINT, Facts, cli_provider, evaluate, ollama_provider, select
from takod_daemon.resolve.pi import PiCredential, PiPlan

NOW = 1_800_000_000.0
CLIS = ("pi", "codex", "claude", "gemini")


def installed(name: str, **kw: object) -> BinaryInfo:
    kw.setdefault("path", f"/opt/bin/{name}")
    kw.setdefault("version", "1.2.3")
    kw.setdefault("source", "path")
    return BinaryInfo(name=name, **kw)  # type: ignore[arg-type]


def missing(name: str) -> BinaryInfo:
    return BinaryInfo(name=name, problem="not-installed", detail=f"{name} not found on PATH")


def cred(provider: str, **kw: object) -> CredentialSummary:
    kw.setdefault("source", f"/home/u/.{provider}/auth.json")
    kw.setdefault("kind", "oauth")
    kw.setdefault("masked", "sk-...abcd")
    return CredentialSummary(provider, **kw)  # type: ignore[arg-type]


def all_installed() -> dict[str, BinaryInfo]:
    return {name: installed(name) for name in CLIS}


def probe(**kw: object) -> OllamaProbe:
    kw.setdefault("url", "http://127.0.0.1:11434")
    kw.setdefault("host_source", "default")
    return OllamaProbe(**kw)  # type: ignore[arg-type]


def model(name: str) -> OllamaModel:
    return OllamaModel(name=name)


AGENT = Path("/home/u/.pi/agent")
# pi's resolution with a usable key (resolve/pi.py decides it; readiness reports it).
PI_READY = PiPlan(AGENT, AGENT / "auth.json", PiCredential("anthropic", "env:ANTHROPIC_API_KEY", "env", "sk-...abcd"))

READY_OLLAMA = probe(
    reachable=True, version="0.12.6", models=[model("llama3.2:latest")], model="llama3.2:latest", model_source="first-listed"
)


def by_name(facts: Facts) -> dict[str, object]:
    statuses, _ = evaluate(facts)
    return {s.name: s for s in statuses}


# --- CLI providers: binary ---------------------------------------------------


@pytest.mark.parametrize("name", CLIS)
def test_not_probed_yet_is_unknown(name: str) -> None:
    st = cli_provider(name, Facts(now=NOW))
    assert (st.ready, st.level, st.reason) == (False, "unknown", "not-probed")
    assert st.hint == HINTS["not-probed"]


@pytest.mark.parametrize("name", CLIS)
def test_missing_binary_is_not_installed_with_an_install_hint(name: str) -> None:
    st = cli_provider(name, Facts(now=NOW, binaries={name: missing(name)}, credentials={name: [cred(name)]}))
    assert (st.ready, st.level, st.reason) == (False, "not-installed", "not-installed")
    assert st.hint == HINTS["not-installed"][name]
    assert "credential" not in st.detail  # credentials do not matter without the CLI


def test_a_binary_without_a_path_counts_as_missing() -> None:
    st = cli_provider("codex", Facts(now=NOW, binaries={"codex": BinaryInfo(name="codex")}))
    assert st.reason == "not-installed"


def test_pi_with_an_old_node_says_node_too_old() -> None:
    info = installed("pi", node_path="/usr/bin/node", node_version="18.19.0", node_ok=False, problem="node-incompatible")
    st = cli_provider("pi", Facts(now=NOW, binaries={"pi": info}, credentials={"pi": [cred("anthropic", kind="api_key")]}))
    assert (st.ready, st.level, st.reason) == (False, "installed", "node-too-old")
    assert "doctor --fix" in (st.hint or "")
    assert st.detail["node"] == "/usr/bin/node" and st.detail["node_version"] == "18.19.0"


@pytest.mark.parametrize("problem", ["node-missing", "version-failed"])
def test_a_cli_that_cannot_run_is_installed_but_not_ready(problem: str) -> None:
    st = cli_provider("pi", Facts(now=NOW, binaries={"pi": installed("pi", problem=problem)}, credentials={"pi": [cred("x")]}))
    assert (st.ready, st.level, st.reason) == (False, "installed", problem)
    assert st.hint


def test_binary_detail_carries_path_version_and_source() -> None:
    st = cli_provider("codex", Facts(now=NOW, binaries={"codex": installed("codex", version="0.160.0")}))
    assert st.detail == {"path": "/opt/bin/codex", "version": "0.160.0", "source": "path"}


# --- CLI providers: credentials ---------------------------------------------


@pytest.mark.parametrize("name", CLIS)
def test_no_credentials(name: str) -> None:
    st = cli_provider(name, Facts(now=NOW, binaries=all_installed()))
    assert (st.ready, st.level, st.reason) == (False, "installed", "no-credentials")
    assert st.hint == HINTS["no-credentials"][name]


@pytest.mark.parametrize("name", CLIS)
def test_a_valid_credential_makes_it_ready(name: str) -> None:
    c = cred(name, expires_at=NOW + 3600, refreshable=True, account="me@example.com")
    st = cli_provider(name, Facts(now=NOW, binaries=all_installed(), credentials={name: [c]}))
    assert (st.ready, st.level, st.reason, st.hint) == (True, "ready", None, None)
    assert st.detail["credential"] == {
        "provider": name,
        "source": c.source,
        "kind": "oauth",
        "masked": "sk-...abcd",
        "expires_at": NOW + 3600,
        "account": "me@example.com",
    }


def test_an_api_key_without_expiry_is_ready() -> None:
    st = cli_provider("claude", Facts(now=NOW, binaries=all_installed(), credentials={"claude": [cred("claude", kind="api_key")]}))
    assert st.ready and "expires_at" not in st.detail["credential"]


def test_expired_but_refreshable_counts_as_usable() -> None:
    c = cred("codex", expires_at=NOW - 60, refreshable=True)
    st = cli_provider("codex", Facts(now=NOW, binaries=all_installed(), credentials={"codex": [c]}))
    assert st.ready and st.reason is None
    assert st.detail["credential"]["expires_at"] == NOW - 60


@pytest.mark.parametrize("name", CLIS)
def test_expired_and_not_refreshable_needs_login(name: str) -> None:
    c = cred(name, expires_at=NOW - 60, refreshable=False)
    st = cli_provider(name, Facts(now=NOW, binaries=all_installed(), credentials={name: [c]}))
    assert (st.ready, st.level, st.reason) == (False, "installed", "needs-login")
    assert st.hint == HINTS["needs-login"][name]
    assert st.detail["credential"]["source"] == c.source  # says which login died


def test_expiry_exactly_now_is_expired() -> None:
    c = cred("claude", expires_at=NOW, refreshable=False)
    assert cli_provider("claude", Facts(now=NOW, binaries=all_installed(), credentials={"claude": [c]})).reason == "needs-login"


def test_first_usable_credential_wins_over_a_dead_one_before_it() -> None:
    dead = cred("claude", source="/dead", expires_at=NOW - 1, refreshable=False)
    alive = cred("claude", source="ANTHROPIC_API_KEY", kind="api_key")
    st = cli_provider("claude", Facts(now=NOW, binaries=all_installed(), credentials={"claude": [dead, alive]}))
    assert st.ready and st.detail["credential"]["source"] == "ANTHROPIC_API_KEY"


def test_credential_order_decides_between_usable_ones() -> None:
    first = cred("pi", source="first", kind="api_key")
    second = cred("pi", source="second", kind="api_key")
    st = cli_provider("pi", Facts(now=NOW, binaries=all_installed(), credentials={"pi": [first, second]}))
    assert st.detail["credential"]["source"] == "first"


def test_unreadable_credentials_file_without_any_credential() -> None:
    problems = {"codex": ["/home/u/.codex/auth.json: is not valid JSON (line 1)"]}
    st = cli_provider("codex", Facts(now=NOW, binaries=all_installed(), problems=problems))
    assert (st.ready, st.level, st.reason) == (False, "installed", "credentials-unreadable")
    assert st.hint == HINTS["credentials-unreadable"]
    assert st.detail["problems"] == problems["codex"]


def test_problems_are_reported_even_when_the_last_good_credential_keeps_it_ready() -> None:
    problems = {"codex": ["/home/u/.codex/auth.json: is not valid JSON"]}
    st = cli_provider("codex", Facts(now=NOW, binaries=all_installed(), credentials={"codex": [cred("codex")]}, problems=problems))
    assert st.ready
    assert st.detail["problems"] == problems["codex"]


def test_unverified_credential_is_ready_but_says_unverified() -> None:
    c = cred("gemini", unverified=True, note="personal Google login", refreshable=True, expires_at=NOW + 10)
    st = cli_provider("gemini", Facts(now=NOW, binaries=all_installed(), credentials={"gemini": [c]}))
    assert st.ready
    assert st.detail["unverified"] is True
    assert st.detail["credential"]["unverified"] is True
    assert st.detail["credential"]["note"] == "personal Google login"


def test_warnings_are_passed_through() -> None:
    warnings = {"pi": ["settings unusable, using the last good ones"]}
    st = cli_provider("pi", Facts(now=NOW, binaries=all_installed(), warnings=warnings))
    assert st.detail["warnings"] == warnings["pi"]
    assert st.reason == "no-credentials"


@pytest.mark.parametrize("reason", ["keyring-locked", "keyring-timeout", "keyring-error"])
def test_a_key_in_a_keyring_that_cannot_be_read_is_no_credential(reason: str) -> None:
    facts = Facts(now=NOW, binaries=all_installed(), unavailable_keys={"claude": ["ANTHROPIC_API_KEY"]},
                  key_store_reason=reason)
    st = cli_provider("claude", facts)
    assert (st.ready, st.level, st.reason) == (False, "installed", reason)
    assert st.hint and "keyring" in st.hint
    assert st.detail["unavailable_keys"] == ["ANTHROPIC_API_KEY"]
    assert cli_provider("codex", facts).reason == "no-credentials"  # only the key's users are affected


def test_a_readable_credential_wins_over_a_locked_key() -> None:
    facts = Facts(now=NOW, binaries=all_installed(), credentials={"claude": [cred("claude")]},
                  unavailable_keys={"claude": ["ANTHROPIC_API_KEY"]}, key_store_reason="keyring-locked")
    assert cli_provider("claude", facts).ready


def test_a_locked_key_is_the_nearer_fix_than_a_dead_login() -> None:
    facts = Facts(now=NOW, binaries=all_installed(),
                  credentials={"claude": [cred("claude", expires_at=NOW - 1)]},
                  unavailable_keys={"claude": ["ANTHROPIC_API_KEY"]}, key_store_reason="keyring-locked")
    assert cli_provider("claude", facts).reason == "keyring-locked"


def test_credentials_of_another_provider_do_not_count() -> None:
    st = cli_provider("claude", Facts(now=NOW, binaries=all_installed(), credentials={"codex": [cred("codex")]}))
    assert st.reason == "no-credentials"


# --- Ollama -----------------------------------------------------------------


def test_ollama_not_probed_yet() -> None:
    st = ollama_provider(Facts(now=NOW))
    assert (st.ready, st.level, st.reason) == (False, "unknown", "not-probed")


@pytest.mark.parametrize(("binary", "level"), [(None, "not-installed"), ("/usr/bin/ollama", "installed")])
def test_ollama_unreachable(binary: str | None, level: str) -> None:
    p = probe(problem="unreachable", detail="cannot reach Ollama at http://127.0.0.1:11434: refused")
    st = ollama_provider(Facts(now=NOW, ollama=p, ollama_binary=binary))
    assert (st.ready, st.level, st.reason) == (False, level, "unreachable")
    if binary:  # start the one installed here
        assert st.hint == HINTS["unreachable"]
    else:  # nothing to start: say how to install it, never just `ollama serve`
        assert st.hint == OLLAMA_MISSING_HINT and "install" in st.hint
    assert st.detail["error"].startswith("cannot reach Ollama")
    assert st.detail["url"] == "http://127.0.0.1:11434"
    assert ("path" in st.detail) == (binary is not None)


def test_ollama_answering_something_else_is_a_bad_response() -> None:
    # The probe marks it reachable (something answered) but it is not Ollama.
    p = probe(reachable=True, problem="bad-response", detail="http://127.0.0.1:11434/api/version answered HTTP 404")
    st = ollama_provider(Facts(now=NOW, ollama=p))
    assert (st.ready, st.reason) == (False, "bad-response")
    assert st.hint == HINTS["bad-response"]
    assert "404" in st.detail["error"]


def test_ollama_with_no_models_pulled() -> None:
    # What probe_ollama returns for an empty /api/tags and no model named.
    p = probe(reachable=True, version="0.12.6", models=[], problem="model-not-pulled",
              detail="no model is pulled; run `ollama pull <model>`")
    st = ollama_provider(Facts(now=NOW, ollama=p))
    assert (st.ready, st.level, st.reason) == (False, "reachable", "no-models")
    assert st.hint == HINTS["no-models"]
    assert st.detail["models"] == []
    assert st.detail["version"] == "0.12.6"


def test_ollama_named_model_not_pulled() -> None:
    p = probe(reachable=True, version="0.12.6", models=[model("llama3.2:latest")], model="mistral",
              model_source="settings", problem="model-not-pulled", detail="mistral is not pulled; run `ollama pull mistral`")
    st = ollama_provider(Facts(now=NOW, ollama=p))
    assert (st.ready, st.level, st.reason) == (False, "reachable", "model-not-pulled")
    assert st.hint.startswith("pull it (`ollama pull mistral`)")  # the model by name
    assert (st.detail["model"], st.detail["model_source"]) == ("mistral", "settings")
    assert st.detail["models"] == ["llama3.2:latest"]


def test_ollama_named_model_on_a_server_with_no_models_is_not_pulled() -> None:
    p = probe(reachable=True, models=[], model="mistral", model_source="env", problem="model-not-pulled")
    assert ollama_provider(Facts(now=NOW, ollama=p)).reason == "model-not-pulled"


def test_ollama_ready() -> None:
    st = ollama_provider(Facts(now=NOW, ollama=READY_OLLAMA, ollama_binary="/usr/bin/ollama"))
    assert (st.ready, st.level, st.reason, st.hint) == (True, "ready", None, None)
    assert st.detail == {
        "path": "/usr/bin/ollama",
        "url": "http://127.0.0.1:11434",
        "host_source": "default",
        "version": "0.12.6",
        "models": ["llama3.2:latest"],
        "model": "llama3.2:latest",
        "model_source": "first-listed",
    }


def test_ollama_needs_no_local_binary_to_be_ready() -> None:
    assert ollama_provider(Facts(now=NOW, ollama=READY_OLLAMA, ollama_binary=None)).ready


# --- evaluate and selection ---------------------------------------------------


def test_evaluate_lists_every_provider_in_priority_order() -> None:
    statuses, selected = evaluate(Facts(now=NOW))
    assert [s.name for s in statuses] == [*PROVIDERS, *API_PROVIDERS]
    assert list(PROVIDERS) == ["pi", "ollama", "codex", "claude", "gemini"]
    assert selected is None


def test_nothing_ready_selects_nothing() -> None:
    _, selected = evaluate(Facts(now=NOW, binaries=all_installed(), ollama=probe(problem="unreachable")))
    assert selected is None


def ready_facts(*ready: str, preferred: str = "auto") -> Facts:
    return Facts(
        now=NOW,
        binaries=all_installed(),
        credentials={name: [cred(name)] for name in ready if name != "ollama"},
        ollama=READY_OLLAMA if "ollama" in ready else probe(problem="unreachable"),
        preferred=preferred,
        pi_plan=PI_READY if "pi" in ready else None,
    )


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        (("pi", "ollama", "codex", "claude", "gemini"), "pi"),
        (("ollama", "codex", "claude", "gemini"), "ollama"),
        (("codex", "claude", "gemini"), "codex"),
        (("claude", "gemini"), "claude"),
        (("gemini",), "gemini"),
        (("gemini", "codex"), "codex"),
    ],
)
def test_auto_selects_the_first_ready_in_priority_order(ready: tuple[str, ...], expected: str) -> None:
    assert evaluate(ready_facts(*ready))[1] == expected


@pytest.mark.parametrize("preferred", PROVIDERS)
def test_preferred_provider_wins_when_ready(preferred: str) -> None:
    assert evaluate(ready_facts(*PROVIDERS, preferred=preferred))[1] == preferred


def test_preferred_provider_is_ignored_when_not_ready() -> None:
    assert evaluate(ready_facts("codex", "claude", preferred="gemini"))[1] == "codex"
    assert evaluate(ready_facts("claude", preferred="ollama"))[1] == "claude"


def test_preferred_but_needs_login_falls_back() -> None:
    facts = ready_facts("codex", preferred="claude")
    facts.credentials["claude"] = [cred("claude", expires_at=NOW - 1, refreshable=False)]
    statuses, selected = evaluate(facts)
    assert selected == "codex"
    assert {s.name: s.reason for s in statuses}["claude"] == "needs-login"


def test_select_on_its_own() -> None:
    statuses, _ = evaluate(ready_facts("claude", "gemini"))
    assert select(statuses, "auto") == "claude"
    assert select(statuses, "gemini") == "gemini"
    assert select(statuses, "pi") == "claude"
    assert select([], "auto") is None


def test_every_reason_the_rules_give_has_a_hint() -> None:
    reasons: set[str] = set()
    cases = [
        Facts(now=NOW, binaries={n: missing(n) for n in CLIS}, ollama=probe(problem="unreachable")),
        Facts(now=NOW, binaries=all_installed(), ollama=probe(reachable=True, problem="bad-response")),
        Facts(now=NOW, binaries=all_installed(), ollama=probe(reachable=True, models=[], problem="model-not-pulled")),
        Facts(now=NOW, binaries=all_installed(), credentials={n: [cred(n, expires_at=0.0)] for n in CLIS},
              ollama=probe(reachable=True, models=[model("a")], model="b", problem="model-not-pulled")),
        Facts(now=NOW, binaries={n: installed(n, problem="node-incompatible") for n in CLIS},
              problems={n: ["x: bad"] for n in CLIS}),
        Facts(now=NOW, binaries={n: installed(n, problem="version-failed") for n in CLIS}),
        Facts(now=NOW, binaries={n: installed(n, problem="node-missing") for n in CLIS}),
        Facts(now=NOW, binaries=all_installed(), problems={n: ["x: bad"] for n in CLIS}),
        Facts(now=NOW, binaries=all_installed(), unavailable_keys={n: ["K"] for n in CLIS},
              key_store_reason="keyring-locked"),
    ]
    for facts in cases:
        for st in evaluate(facts)[0]:
            assert st.ready is (st.reason is None)
            if st.reason is not None:
                reasons.add(st.reason)
                assert st.hint, f"{st.name}: {st.reason} has no hint"
    assert reasons >= {
        "not-installed", "unreachable", "bad-response", "no-models", "model-not-pulled", "needs-login",
        "node-too-old", "version-failed", "node-missing", "credentials-unreadable", "no-credentials",
        "keyring-locked",
    }


def test_a_ready_provider_cooling_down_is_not_ready_and_says_until_when() -> None:
    facts = Facts(
        now=NOW, binaries=all_installed(), credentials={"codex": [cred("openai")], "claude": [cred("anthropic")]},
        ollama=READY_OLLAMA, cooling={"codex": (NOW + 300, "auth"), "ollama": (NOW + 60, "rate limit"), "gemini": (NOW + 9, "auth")},
    )  # fmt: skip
    statuses, selected = evaluate(facts)
    got = {s.name: s for s in statuses}
    assert (got["codex"].ready, got["codex"].level, got["codex"].reason) == (False, "credentials", "cooling-down")
    assert got["codex"].detail["cooldown"] == {"until": NOW + 300, "after": "auth"}
    assert got["codex"].detail["credential"]  # what it would use is still shown
    assert (got["ollama"].level, got["ollama"].reason) == ("reachable", "cooling-down")
    assert got["gemini"].reason == "no-credentials"  # not ready anyway: what stops it first is said
    assert selected == "claude" and got["claude"].ready
    assert HINTS["cooling-down"]


def test_cooldowns_end_at_their_time_or_when_their_credentials_change() -> None:
    generations = {"codex": 0}
    cooldowns = Cooldowns(lambda p: generations.get(p, 0))
    cooldowns.begin("codex", NOW + 300, "auth")
    cooldowns.begin("ollama", NOW + 60, "rate limit")
    assert set(cooldowns.active(NOW)) == {"codex", "ollama"} and cooldowns.next_end() == NOW + 60
    assert set(cooldowns.active(NOW + 61)) == {"codex"}
    generations["codex"] += 1  # its credential file was re-read, a key was set, ...
    assert cooldowns.active(NOW + 62) == {} and cooldowns.next_end() is None
