"""The ChatGPT login shared by Codex and pi: which copy is newer, the field
mapping both ways, and applying it to pi's auth.json under pi's lock."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.credentials import codex_link
from takod_daemon.credentials.codex_auth import CodexAuth, parse_auth, read_auth, write_refreshed_tokens
from takod_daemon.credentials.codex_link import (
    PI_PROVIDER,
    LinkDecision,
    apply_to_pi,
    codex_update_from_pi,
    decide,
    newer_side,
    pi_entry_from_codex,
)
from takod_daemon.credentials.files import FileProblem
from takod_daemon.credentials.pi_auth import ApiKeyEntry, OAuthEntry, UnknownEntry
from takod_daemon.credentials.pi_lock import LockTimeout

NOW_MS = 1_800_000_000_000
ACCOUNT = "acct-canary-1"
REFRESH_CANARY = "rt-canary-DO-NOT-LEAK-fedcba9876543210"
AUTH_CLAIM = "https://api.openai.com/auth"


def jwt(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2lnbmF0dXJlLWNhbmFyeQ"


def access(iat: int, exp: int | None = None, account: str | None = ACCOUNT) -> str:
    claims: dict[str, Any] = {"iat": iat, "exp": exp if exp is not None else iat + 864000}
    if account:
        claims[AUTH_CLAIM] = {"chatgpt_account_id": account}
    return jwt(**claims)


def codex_doc(access_token: str, refresh: str = "codex-refresh", account: str | None = ACCOUNT,
              id_token: str | None = None) -> dict[str, Any]:
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": id_token or jwt(email="me@example.com", exp=1_700_003_600),
            "access_token": access_token,
            "refresh_token": refresh,
            "account_id": account,
        },
        "last_refresh": "2026-01-01T00:00:00.000000Z",
    }


def codex(access_token: str, refresh: str = "codex-refresh", **kw: Any) -> CodexAuth:
    return parse_auth(codex_doc(access_token, refresh, **kw), Path("/nonexistent/codex/auth.json"))


def pi_entry(access_token: str, refresh: str = "pi-refresh", **extra: Any) -> OAuthEntry:
    return OAuthEntry(access=access_token, refresh=refresh, expires=NOW_MS, extra={"accountId": ACCOUNT, **extra})


# --- which is newer ------------------------------------------------------------------


def test_newer_side_by_iat_then_exp() -> None:
    assert newer_side(access(200), access(100)) == "codex"
    assert newer_side(access(100), access(200)) == "pi"
    assert newer_side(access(100, exp=500), access(100, exp=400)) == "codex"
    assert newer_side(access(100, exp=500, account="x"), access(100, exp=500)) == "same"
    token = access(100)
    assert newer_side(token, token) == "same"


def test_newer_side_unknown_without_comparable_times() -> None:
    assert newer_side("opaque-token", access(100)) == "unknown"
    assert newer_side(jwt(sub="a"), jwt(sub="b")) == "unknown"
    assert newer_side(jwt(iat=5), jwt(exp=9)) == "unknown"


# --- mapping -------------------------------------------------------------------------


def test_pi_entry_from_codex_maps_fields_exactly() -> None:
    token = access(1_700_000_000, exp=1_700_864_000)
    entry = pi_entry_from_codex(codex(token, REFRESH_CANARY), None, NOW_MS)
    assert entry == OAuthEntry(
        access=token, refresh=REFRESH_CANARY, expires=1_700_864_000_000, extra={"accountId": ACCOUNT}
    )
    assert REFRESH_CANARY not in repr(entry)


def test_pi_entry_account_from_token_claims_when_codex_has_none() -> None:
    entry = pi_entry_from_codex(codex(access(1), account=None), None, NOW_MS)
    assert entry.extra == {"accountId": ACCOUNT}
    bare = pi_entry_from_codex(codex(access(1, account=None), account=None), None, NOW_MS)
    assert bare.extra == {}  # accountId only when known


def test_pi_entry_expiry_falls_back_to_id_token_then_now() -> None:
    no_exp = jwt(iat=1)
    with_id = pi_entry_from_codex(codex(no_exp, id_token=jwt(exp=1_700_003_600)), None, NOW_MS)
    assert with_id.expires == 1_700_003_600_000
    neither = pi_entry_from_codex(codex(no_exp, id_token=jwt(sub="x")), None, NOW_MS)
    assert neither.expires == NOW_MS  # unknown counts as expired


def test_pi_entry_keeps_extras_of_the_current_entry() -> None:
    entry = pi_entry_from_codex(codex(access(2)), pi_entry(access(1), note="kept", accountId="old"), NOW_MS)
    assert entry.extra == {"accountId": ACCOUNT, "note": "kept"}


def test_codex_update_from_pi() -> None:
    update = codex_update_from_pi(pi_entry("a-token", REFRESH_CANARY))
    assert (update.access_token, update.refresh_token, update.id_token) == ("a-token", REFRESH_CANARY, None)


# --- decisions -----------------------------------------------------------------------


def test_nothing_on_either_side() -> None:
    assert decide(None, None, NOW_MS) == LinkDecision(action="none", reason="nothing_to_link")


def test_codex_only_seeds_pi() -> None:
    login = codex(access(100))
    got = decide(login, None, NOW_MS)
    assert got.action == "update_pi" and got.reason == "pi_missing"
    assert got.pi_entry == pi_entry_from_codex(login, None, NOW_MS)


def test_pi_only_never_creates_a_codex_login() -> None:
    assert decide(None, pi_entry(access(100)), NOW_MS).reason == "no_codex_login"


def test_codex_api_key_mode_is_not_a_login() -> None:
    api = parse_auth({"OPENAI_API_KEY": "sk-x"}, Path("/x"))
    assert decide(api, None, NOW_MS).reason == "nothing_to_link"


@pytest.mark.parametrize("entry", [ApiKeyEntry(key="sk-mine"), UnknownEntry("oauth", "broken")])
def test_a_non_oauth_pi_entry_is_left_alone(entry: ApiKeyEntry | UnknownEntry) -> None:
    got = decide(codex(access(100)), entry, NOW_MS)
    assert got == LinkDecision(action="none", reason="pi_entry_not_oauth")


def test_newer_codex_updates_pi() -> None:
    got = decide(codex(access(200)), pi_entry(access(100), extra_field=1), NOW_MS)
    assert got.action == "update_pi" and got.reason == "codex_newer"
    assert got.pi_entry is not None and got.pi_entry.extra["extra_field"] == 1


def test_newer_pi_updates_codex() -> None:
    pi = pi_entry(access(200), REFRESH_CANARY)
    got = decide(codex(access(100), "codex-rt"), pi, NOW_MS)
    assert got.action == "update_codex" and got.reason == "pi_newer"
    assert got.codex_update == codex_update_from_pi(pi)
    assert got.codex_replaces == "codex-rt"
    assert REFRESH_CANARY not in repr(got) and "codex-rt" not in repr(got)


def test_same_tokens_are_in_sync() -> None:
    token = access(100)
    assert decide(codex(token, "rt"), pi_entry(token, "rt"), NOW_MS).reason == "in_sync"


def test_equal_age_or_unknown_age_does_nothing() -> None:
    assert decide(codex(access(100), "rt-a"), pi_entry(access(100), "rt-b"), NOW_MS).reason == "same_age"
    assert decide(codex("opaque", account=ACCOUNT), pi_entry(access(100)), NOW_MS).reason == "age_unknown"


def test_different_accounts_are_never_linked() -> None:
    got = decide(codex(access(200), account="acct-other"), pi_entry(access(100)), NOW_MS)
    assert got == LinkDecision(action="none", reason="different_accounts")


@given(
    codex_iat=st.integers(1, 10**10), pi_iat=st.integers(1, 10**10),
    codex_exp=st.integers(1, 10**10), pi_exp=st.integers(1, 10**10),
)
def test_an_older_token_never_replaces_a_newer_one(codex_iat: int, pi_iat: int, codex_exp: int, pi_exp: int) -> None:
    got = decide(codex(access(codex_iat, codex_exp)), pi_entry(access(pi_iat, pi_exp)), NOW_MS)
    codex_age, pi_age = (codex_iat, codex_exp), (pi_iat, pi_exp)
    expected = "update_pi" if codex_age > pi_age else "update_codex" if pi_age > codex_age else "none"
    newer_iat, newer_exp = codex_age if expected == "update_pi" else pi_age
    if expected != "none" and (newer_iat > NOW_MS / 1000 + codex_link.CLOCK_SKEW_S or newer_exp <= newer_iat):
        expected = "none"  # the newer one is implausible: nothing is copied
    assert got.action == expected


# --- only plausible tokens of the same account are copied -----------------------------

NOW_S = NOW_MS // 1000


@pytest.mark.parametrize("forged", [
    access(NOW_S + 365 * 86400),  # issued a year from now: wins every comparison
    access(NOW_S + int(codex_link.CLOCK_SKEW_S) + 60),  # just past the skew allowance
    jwt(iat=NOW_S - 60, exp=NOW_S - 120, **{AUTH_CLAIM: {"chatgpt_account_id": ACCOUNT}}),  # expires before issued
    jwt(iat=NOW_S - 60, **{AUTH_CLAIM: {"chatgpt_account_id": ACCOUNT}}),  # no exp
])
def test_an_implausible_newer_pi_token_never_replaces_codex(forged: str) -> None:
    got = decide(codex(access(NOW_S - 3600), "codex-rt"), pi_entry(forged, "rt_GARBAGE"), NOW_MS)
    assert got == LinkDecision(action="none", reason="implausible_token")


def test_an_implausible_newer_codex_token_never_replaces_pi() -> None:
    got = decide(codex(access(NOW_S + 86400)), pi_entry(access(NOW_S - 3600)), NOW_MS)
    assert got == LinkDecision(action="none", reason="implausible_token")


def test_a_token_within_the_skew_allowance_is_copied() -> None:
    got = decide(codex(access(NOW_S - 3600), "codex-rt"), pi_entry(access(NOW_S + 60)), NOW_MS)
    assert got.action == "update_codex"


def test_a_newer_token_of_another_account_is_never_copied() -> None:
    # pi's extra claims the right account, but the token itself is another account's.
    pi = pi_entry(access(NOW_S - 60, account="acct-attacker"), "rt_GARBAGE")
    got = decide(codex(access(NOW_S - 3600), "codex-rt"), pi, NOW_MS)
    assert got == LinkDecision(action="none", reason="different_accounts")


def test_a_newer_token_without_an_account_is_never_copied() -> None:
    pi = OAuthEntry(access=access(NOW_S - 60, account=None), refresh="rt_GARBAGE", expires=NOW_MS)
    assert decide(codex(access(NOW_S - 3600), "codex-rt"), pi, NOW_MS).reason == "account_unknown"
    got = decide(codex(access(NOW_S - 60, account=None), account=None), pi_entry(access(NOW_S - 3600)), NOW_MS)
    assert got.reason == "account_unknown"


# --- applying to pi's auth.json ------------------------------------------------------


def write_pi(path: Path, doc: dict[str, Any], mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    os.chmod(path, mode)


def pi_json(entry: OAuthEntry) -> dict[str, Any]:
    return {"type": "oauth", "access": entry.access, "refresh": entry.refresh, "expires": entry.expires, **entry.extra}


OTHERS = {
    "anthropic": {"type": "oauth", "access": "sk-ant-oat-x", "refresh": "r", "expires": 1.0, "odd": [1, {"k": None}]},
    "groq": {"type": "api_key", "key": "!pass groq"},
}


def test_apply_creates_the_workspace_file(tmp_path: Path) -> None:
    path = tmp_path / "ws" / ".tako" / "pi" / "agent" / "auth.json"
    login = codex(access(100))
    got = apply_to_pi(path, login, now_ms=NOW_MS)
    assert got.action == "update_pi"
    assert json.loads(path.read_text()) == {PI_PROVIDER: pi_json(pi_entry_from_codex(login, None, NOW_MS))}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not os.path.lexists(str(path) + ".lock")


def test_apply_changes_only_the_codex_entry(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    write_pi(path, {**OTHERS, PI_PROVIDER: pi_json(pi_entry(access(100)))}, 0o644)
    got = apply_to_pi(path, codex(access(200)), now_ms=NOW_MS)
    assert got.reason == "codex_newer"
    doc = json.loads(path.read_text())
    assert list(doc) == [*OTHERS, PI_PROVIDER]
    assert {k: doc[k] for k in OTHERS} == OTHERS
    assert doc[PI_PROVIDER]["access"] == codex(access(200)).access_token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_apply_leaves_a_newer_pi_alone_and_codex_takes_it(tmp_path: Path) -> None:
    pi_path = tmp_path / "pi" / "auth.json"
    newer = pi_entry(access(200), "pi-rt-new")
    write_pi(pi_path, {PI_PROVIDER: pi_json(newer)})
    before = pi_path.read_bytes(), pi_path.stat().st_ino
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "auth.json").write_text(json.dumps(codex_doc(access(100), "codex-rt-old"), indent=2))
    login = read_auth(codex_home / "auth.json")

    got = apply_to_pi(pi_path, login, now_ms=NOW_MS)
    assert got.action == "update_codex"
    assert (pi_path.read_bytes(), pi_path.stat().st_ino) == before
    # codex_auth takes the update as it takes a refresh answer.
    assert got.codex_update is not None and got.codex_replaces is not None
    assert write_refreshed_tokens(codex_home, got.codex_update, got.codex_replaces)
    relinked = read_auth(codex_home / "auth.json")
    assert relinked is not None
    assert (relinked.access_token, relinked.refresh_token) == (newer.access, "pi-rt-new")
    assert decide(relinked, newer, NOW_MS).reason == "in_sync"


def test_apply_never_takes_the_lock_when_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    token = access(100)
    write_pi(path, {PI_PROVIDER: pi_json(pi_entry(token, "rt"))})
    Path(str(path) + ".lock").mkdir()  # pi is busy right now
    assert apply_to_pi(path, codex(token, "rt"), lock_timeout=0).reason == "in_sync"


def test_apply_waits_for_pis_lock_and_gives_up_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    write_pi(path, {PI_PROVIDER: pi_json(pi_entry(access(100)))})
    before = path.read_bytes()
    Path(str(path) + ".lock").mkdir()
    with pytest.raises(LockTimeout):
        apply_to_pi(path, codex(access(200)), lock_timeout=0.2)
    assert path.read_bytes() == before


def test_apply_redecides_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pi refreshes between our unlocked look and our lock: its newer token stays."""
    path = tmp_path / "auth.json"
    write_pi(path, {PI_PROVIDER: pi_json(pi_entry(access(100)))})
    lock_dir = Path(str(path) + ".lock")
    lock_dir.mkdir()  # "pi" holds its lock while refreshing
    looked = threading.Event()
    real_read = codex_link.read_auth

    def spy(p: Path) -> Any:
        result = real_read(p)
        looked.set()
        return result

    monkeypatch.setattr(codex_link, "read_auth", spy)
    outcome: list[LinkDecision | BaseException] = []

    def run() -> None:
        try:
            outcome.append(apply_to_pi(path, codex(access(200)), now_ms=NOW_MS, lock_timeout=60))
        except BaseException as exc:  # surfaced by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert looked.wait(60)
    refreshed = pi_entry(access(300), "pi-rt-300")
    write_pi(path, {PI_PROVIDER: pi_json(refreshed)})  # pi's refresh lands ...
    lock_dir.rmdir()  # ... and pi releases
    worker.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], LinkDecision)
    assert outcome[0].action == "update_codex"
    assert json.loads(path.read_text())[PI_PROVIDER] == pi_json(refreshed)


def test_apply_never_overwrites_an_unparseable_pi_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text('{"openai-codex": {"type": "oauth", "access": "')
    with pytest.raises(FileProblem):
        apply_to_pi(path, codex(access(200)))
    assert path.read_text() == '{"openai-codex": {"type": "oauth", "access": "'


def test_mapping_refuses_an_incomplete_login() -> None:
    with pytest.raises(ValueError) as exc:
        pi_entry_from_codex(codex(access(1), refresh=""), None, NOW_MS)
    assert "eyJ" not in str(exc.value)
