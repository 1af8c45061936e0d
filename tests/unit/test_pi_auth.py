"""pi's auth.json: locations, typed entries, key resolution, readiness summaries,
seeding the workspace copy, and merging one entry (checked against the real pi)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from takod_daemon.credentials.files import FileProblem, RawFile, read_bytes
from takod_daemon.credentials.pi_auth import (
    ApiKeyEntry,
    OAuthEntry,
    PiAuthFile,
    UnknownEntry,
    auth_locations,
    home_auth_paths,
    key_kind,
    merge_entry,
    parse_entries,
    read_auth,
    replace_entry,
    resolve_api_key,
    seed_workspace_auth,
    summarize,
    workspace_auth_path,
)
from takod_daemon.credentials.pi_lock import LockTimeout

REPO = Path(__file__).resolve().parents[2]
PI_PACKAGE = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
CANARY = "sk-canary-DO-NOT-LEAK-0123456789abcdef"
REFRESH_CANARY = "rt-canary-DO-NOT-LEAK-fedcba9876543210"


def write(path: Path, doc: object | str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    os.chmod(path, mode)
    return path


def load(path: Path) -> PiAuthFile:
    auth = read_auth(path)
    assert auth is not None
    return auth


SAMPLE = {
    "anthropic": {"type": "api_key", "key": CANARY},
    "openai-codex": {
        "type": "oauth",
        "access": "eyJhbGciOiJub25lIn0.e30.sig-" + CANARY,
        "refresh": REFRESH_CANARY,
        "expires": 1767225600000,
        "accountId": "acct-123",
    },
    "github-copilot": {"type": "oauth", "access": "tid=1;exp=2", "refresh": "gho_x", "expires": 1.7e12,
                       "enterpriseUrl": "ghe.example.com"},
    "future-thing": {"type": "passkey", "blob": [1, 2, 3]},
    "broken-oauth": {"type": "oauth", "access": "a"},
    "legacy": "sk-plain-string-entry",
}


# --- locations -----------------------------------------------------------------------


def test_locations_in_order(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "home"
    assert auth_locations(ws, {}, home) == [
        ws / ".tako/pi/agent/auth.json",
        home / ".pi/agent/auth.json",
        home / ".pi/auth.json",
    ]


def test_agent_dir_env_replaces_the_home_agent_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert home_auth_paths({"PI_CODING_AGENT_DIR": "/opt/pi"}, home) == [
        Path("/opt/pi/auth.json"),
        home / ".pi/auth.json",
    ]
    assert home_auth_paths({"PI_CODING_AGENT_DIR": "~/custom"}, home)[0] == home / "custom/auth.json"
    assert home_auth_paths({"PI_CODING_AGENT_DIR": ""}, home)[0] == home / ".pi/agent/auth.json"


def test_a_location_reached_twice_is_listed_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    env = {"PI_CODING_AGENT_DIR": str(ws / ".tako/pi/agent")}
    assert auth_locations(ws, env, tmp_path) == [workspace_auth_path(ws), tmp_path / ".pi/auth.json"]


# --- parsing -------------------------------------------------------------------------


def test_entries_are_typed_and_unknowns_kept() -> None:
    entries = parse_entries(SAMPLE)
    assert list(entries) == list(SAMPLE)
    assert entries["anthropic"] == ApiKeyEntry(key=CANARY)
    codex = entries["openai-codex"]
    assert isinstance(codex, OAuthEntry)
    assert codex.refresh == REFRESH_CANARY and codex.expires == 1767225600000
    assert codex.extra == {"accountId": "acct-123"}
    assert codex.extra_str("accountId") == "acct-123"
    copilot = entries["github-copilot"]
    assert isinstance(copilot, OAuthEntry)
    assert copilot.expires == 1_700_000_000_000 and isinstance(copilot.expires, int)
    assert copilot.extra == {"enterpriseUrl": "ghe.example.com"}
    assert entries["future-thing"] == UnknownEntry("passkey", "entry type 'passkey' is not one takod knows")
    assert isinstance(entries["broken-oauth"], UnknownEntry)
    assert entries["broken-oauth"].declared_type == "oauth"
    assert entries["legacy"] == UnknownEntry(None, "entry is not a JSON object")


@pytest.mark.parametrize(
    "value",
    [
        {"type": ["oauth"]},
        {"no": "type"},
        {"type": "api_key", "key": 5},
        {"type": "oauth", "access": "a", "refresh": "r", "expires": "soon"},
        {"type": "oauth", "access": "a", "refresh": "r", "expires": True},
        None,
    ],
)
def test_malformed_entries_are_unknown(value: object) -> None:
    assert isinstance(parse_entries({"p": value})["p"], UnknownEntry)


def test_api_key_entry_of_pi_1x_keeps_its_env_map() -> None:
    entry = parse_entries({"cf": {"type": "api_key", "env": {"CLOUDFLARE_ACCOUNT_ID": "a1"}}})["cf"]
    assert entry == ApiKeyEntry(key=None, extra={"env": {"CLOUDFLARE_ACCOUNT_ID": "a1"}})


def test_reprs_never_show_secrets() -> None:
    text = repr(parse_entries(SAMPLE))
    assert CANARY not in text and REFRESH_CANARY not in text


def test_read_auth(tmp_path: Path) -> None:
    assert read_auth(tmp_path / "missing.json") is None
    path = write(tmp_path / "auth.json", SAMPLE)
    auth = load(path)
    assert auth.path == path and list(auth.entries) == list(SAMPLE)
    assert auth.trusted and auth.writable
    assert CANARY not in repr(auth)


def test_empty_file_has_no_entries(tmp_path: Path) -> None:
    assert load(write(tmp_path / "auth.json", "  \n")).entries == {}


def test_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": {"type": "api_key", "key": "k"}}).encode())
    assert load(path).entries == {"a": ApiKeyEntry(key="k")}


@pytest.mark.parametrize(
    ("content", "reason"),
    [('{"anthropic": {"type": "api_key", "key": "' + CANARY, "malformed"), ('["' + CANARY + '"]', "invalid")],
)
def test_unusable_file_is_a_problem_that_never_quotes_it(tmp_path: Path, content: str, reason: str) -> None:
    path = write(tmp_path / "auth.json", content)
    with pytest.raises(FileProblem) as exc:
        read_auth(path)
    assert exc.value.reason == reason
    assert CANARY not in str(exc.value) and CANARY not in repr(exc.value)


def test_group_or_other_writable_file_is_not_trusted(tmp_path: Path) -> None:
    assert load(write(tmp_path / "a.json", {}, 0o644)).trusted
    assert not load(write(tmp_path / "b.json", {}, 0o620)).trusted
    assert not load(write(tmp_path / "c.json", {}, 0o602)).trusted


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_file_of_another_user_is_not_trusted(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", {}, 0o600)
    os.chown(path, 65534, 65534)
    assert not load(path).trusted


# --- api_key values ------------------------------------------------------------------


def test_key_kind_follows_pi() -> None:
    env = {"MY_KEY": "v", "EMPTY": ""}
    assert key_kind("!op read x", env) == "command"
    assert key_kind("MY_KEY", env) == "env"
    assert key_kind("EMPTY", env) == "literal"  # pi: an empty variable does not count
    assert key_kind("UNSET", env) == "literal"
    assert key_kind("sk-abc", env) == "literal"


def api_key_file(tmp_path: Path, key: str, mode: int = 0o600) -> PiAuthFile:
    return load(write(tmp_path / "auth.json", {"p": {"type": "api_key", "key": key}}, mode))


def test_resolve_literal_and_env(tmp_path: Path) -> None:
    literal = resolve_api_key(api_key_file(tmp_path, CANARY), "p", {})
    assert literal is not None and literal.value == CANARY and literal.kind == "literal"
    assert CANARY not in repr(literal)
    env = resolve_api_key(api_key_file(tmp_path, "MY_KEY"), "p", {"MY_KEY": CANARY})
    assert env is not None and env.value == CANARY and env.kind == "env"


def test_resolve_runs_command_with_given_env_and_trims(tmp_path: Path) -> None:
    auth = api_key_file(tmp_path, '!printf "  %s\\n" "$SECRET_SRC"')
    resolved = resolve_api_key(auth, "p", {"SECRET_SRC": CANARY, "PATH": os.environ["PATH"]})
    assert resolved is not None
    assert resolved.value == CANARY and resolved.kind == "command" and resolved.reason is None


@pytest.mark.parametrize(
    ("command", "reason"),
    [(f"!echo {CANARY}; exit 3", "command_failed"), ("!true", "command_empty"), ("!printf '  \\n'", "command_empty")],
)
def test_resolve_command_failures_never_quote_output(tmp_path: Path, command: str, reason: str) -> None:
    resolved = resolve_api_key(api_key_file(tmp_path, command), "p", {"PATH": os.environ["PATH"]})
    assert resolved is not None and resolved.value is None and resolved.reason == reason
    assert CANARY not in repr(resolved) and CANARY not in (resolved.detail or "")


def test_resolve_command_timeout_kills_the_whole_pipeline(tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    # The grandchild would write the marker if it outlived the timeout's kill.
    command = f"!(sleep 2; touch '{marker}') & sleep 30"
    resolved = resolve_api_key(api_key_file(tmp_path, command), "p", {"PATH": os.environ["PATH"]}, timeout=0.3)
    assert resolved is not None and resolved.reason == "command_timeout" and resolved.value is None
    # A surviving grandchild would touch the marker 2 s after it started.
    time.sleep(3)
    assert not marker.exists()


def test_untrusted_file_never_runs_its_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    auth = api_key_file(tmp_path, f"!touch '{marker}'; echo k", mode=0o666)
    resolved = resolve_api_key(auth, "p", {"PATH": os.environ["PATH"]})
    assert resolved is not None and resolved.reason == "command_untrusted" and resolved.value is None
    assert not marker.exists()
    trusted = api_key_file(tmp_path, f"!touch '{marker}'; echo k")
    resolved = resolve_api_key(trusted, "p", {"PATH": os.environ["PATH"]})
    assert resolved is not None and resolved.value == "k"
    assert marker.exists()


def test_resolve_only_api_key_entries(tmp_path: Path) -> None:
    auth = load(write(tmp_path / "auth.json", SAMPLE))
    assert resolve_api_key(auth, "openai-codex", {}) is None
    assert resolve_api_key(auth, "nobody", {}) is None


# --- summaries -----------------------------------------------------------------------


def test_summaries(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    doc = {
        **SAMPLE,
        "openrouter": {"type": "oauth", "access": "or-key-0123456789", "refresh": "", "expires": 9007199254740991},
        "groq": {"type": "api_key", "key": "GROQ_KEY_VAR"},
        "xai": {"type": "api_key", "key": "XAI_API_KEY"},
        "mistral": {"type": "api_key", "key": f"!touch '{marker}'; echo k"},
    }
    auth = load(write(tmp_path / "auth.json", doc))
    found = {s.provider: s for s in summarize(auth, {"GROQ_KEY_VAR": CANARY})}
    assert list(found) == ["anthropic", "openai-codex", "github-copilot", "openrouter", "groq", "xai", "mistral"]

    codex = found["openai-codex"]
    assert codex.kind == "oauth" and codex.source == str(auth.path)
    assert codex.expires_at == 1767225600 and codex.refreshable and not codex.read_only
    assert codex.account == "acct-123" and codex.masked.endswith("cdef")
    assert found["openrouter"].expires_at is None and not found["openrouter"].refreshable

    assert found["anthropic"].kind == "api_key" and found["anthropic"].masked == "sk-canary-...cdef"
    assert found["groq"].masked.endswith("cdef") and "GROQ_KEY_VAR" in (found["groq"].note or "")
    assert found["xai"].unverified and "XAI_API_KEY" in (found["xai"].note or "")
    mistral = found["mistral"]
    assert mistral.unverified and mistral.masked == "" and (mistral.note or "").startswith("command")
    assert not marker.exists()  # readiness never runs commands

    everything = repr(list(found.values()))
    assert CANARY not in everything and REFRESH_CANARY not in everything


# --- merging and writing -------------------------------------------------------------


def raw(path: Path) -> RawFile:
    got = read_bytes(path)
    assert got is not None
    return got


NEW_CODEX = OAuthEntry(access="new-access", refresh="new-refresh", expires=1800000000000, extra={"accountId": "acct-123"})


def test_merge_keeps_every_other_key_verbatim(tmp_path: Path) -> None:
    text = (
        '{"zeta": {"type": "weird", "n": 1.50, "big": 123456789012345678901234567890, "s": "\\u00e9t\\u00e9"},\n'
        ' "openai-codex": {"type": "oauth", "access": "old", "refresh": "old", "expires": 1},\n'
        ' "alpha": {"type": "api_key", "key": "k"}}'
    )
    path = write(tmp_path / "auth.json", text)
    merged = merge_entry(raw(path), "openai-codex", NEW_CODEX)
    assert b"1.50" in merged and b"123456789012345678901234567890" in merged and b"\\u00e9t\\u00e9" in merged
    doc = json.loads(merged)
    assert list(doc) == ["zeta", "openai-codex", "alpha"]
    assert doc["zeta"] == json.loads(text)["zeta"] and doc["alpha"] == {"type": "api_key", "key": "k"}
    assert doc["openai-codex"] == {
        "type": "oauth",
        "access": "new-access",
        "refresh": "new-refresh",
        "expires": 1800000000000,
        "accountId": "acct-123",
    }


def test_merge_into_new_or_empty_file(tmp_path: Path) -> None:
    entry = ApiKeyEntry(key="k")
    assert json.loads(merge_entry(None, "p", entry)) == {"p": {"type": "api_key", "key": "k"}}
    empty = write(tmp_path / "auth.json", "")
    assert json.loads(merge_entry(raw(empty), "p", entry)) == {"p": {"type": "api_key", "key": "k"}}


@pytest.mark.parametrize("content", ['{"a": ', "[1, 2]", '"x"'])
def test_merge_refuses_a_file_it_cannot_parse(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "auth.json", content)
    with pytest.raises(FileProblem):
        merge_entry(raw(path), "p", ApiKeyEntry(key="k"))


def test_replace_entry_rereads_under_the_lock_and_writes_0600(tmp_path: Path) -> None:
    path = write(tmp_path / "agent" / "auth.json", SAMPLE, 0o644)
    seen: list[object] = []

    def choose(current: object) -> OAuthEntry:
        seen.append(current)
        assert Path(str(path) + ".lock").is_dir()  # decided while holding pi's lock
        return NEW_CODEX

    assert replace_entry(path, "openai-codex", choose) == NEW_CODEX
    assert isinstance(seen[0], OAuthEntry) and seen[0].refresh == REFRESH_CANARY
    doc = json.loads(path.read_text())
    assert doc["openai-codex"]["access"] == "new-access"
    assert {k: v for k, v in doc.items() if k != "openai-codex"} == {
        k: v for k, v in SAMPLE.items() if k != "openai-codex"
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not os.path.lexists(str(path) + ".lock")


def test_replace_entry_creates_file_and_private_parent(tmp_path: Path) -> None:
    path = tmp_path / "ws" / ".tako" / "pi" / "agent" / "auth.json"
    replace_entry(path, "p", lambda current: ApiKeyEntry(key="k"))
    assert json.loads(path.read_text()) == {"p": {"type": "api_key", "key": "k"}}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replace_entry_choosing_nothing_leaves_file_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", SAMPLE, 0o640)
    before = path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino
    assert replace_entry(path, "openai-codex", lambda current: None) is None
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_replace_entry_never_overwrites_an_unparseable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", '{"half": {"type": "oauth", "access": "')
    with pytest.raises(FileProblem):
        replace_entry(path, "p", lambda current: ApiKeyEntry(key="k"))
    assert path.read_text() == '{"half": {"type": "oauth", "access": "'


def test_replace_entry_gives_up_on_a_held_lock(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", SAMPLE)
    Path(str(path) + ".lock").mkdir()
    with pytest.raises(LockTimeout):
        replace_entry(path, "p", lambda current: ApiKeyEntry(key="k"), lock_timeout=0.2)
    assert json.loads(path.read_text()) == SAMPLE


# --- seeding -------------------------------------------------------------------------


def test_seed_copies_the_first_usable_home_file_byte_for_byte(tmp_path: Path) -> None:
    target = workspace_auth_path(tmp_path / "ws")
    broken = write(tmp_path / "home/.pi/agent/auth.json", '{"x": ')
    source = write(tmp_path / "home/.pi/auth.json", '{ "anthropic" : {"type":"api_key","key":"k"} }', 0o644)
    result = seed_workspace_auth(target, [broken, source])
    assert result.outcome == "seeded" and result.source == source
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert broken.read_text() == '{"x": '


@pytest.mark.parametrize("existing", ["\n", "{}", " { }\n"])
def test_seed_fills_a_workspace_file_without_entries(tmp_path: Path, existing: str) -> None:
    # `{}` is what pi and `doctor --fix` create: pi would find no credential there.
    target = write(workspace_auth_path(tmp_path / "ws"), existing)
    source = write(tmp_path / "home/auth.json", SAMPLE)
    assert seed_workspace_auth(target, [source]).outcome == "seeded"
    assert json.loads(target.read_text()) == SAMPLE


@pytest.mark.parametrize("existing", ['{"half": ', json.dumps({"p": {"type": "api_key", "key": "mine"}})])
def test_seed_never_overwrites_a_workspace_file(tmp_path: Path, existing: str) -> None:
    target = write(workspace_auth_path(tmp_path / "ws"), existing)
    source = write(tmp_path / "home/auth.json", SAMPLE)
    assert seed_workspace_auth(target, [source]).outcome == "workspace_has_auth"
    assert target.read_text() == existing


def test_seed_skips_home_files_without_entries(tmp_path: Path) -> None:
    target = workspace_auth_path(tmp_path / "ws")
    empty = write(tmp_path / "home/a.json", "{}")
    result = seed_workspace_auth(target, [empty, tmp_path / "home/missing.json"])
    assert result.outcome == "no_home_auth" and result.source is None
    assert not target.exists()


def test_seed_never_copies_the_workspace_file_onto_itself(tmp_path: Path) -> None:
    target = workspace_auth_path(tmp_path / "ws")
    link = tmp_path / "alias.json"
    link.symlink_to(target)
    assert seed_workspace_auth(target, [link]).outcome == "no_home_auth"


# --- the real pi reads what we write -------------------------------------------------

PI_READER = """
const [authModule, path, ...providers] = process.argv.slice(1);
const { AuthStorage } = await import(authModule);
const storage = AuthStorage.create(path);
const keys = {};
for (const p of providers) keys[p] = (await storage.getApiKey(p, { includeFallback: false })) ?? null;
console.log(JSON.stringify({ keys, list: storage.list(), errors: storage.errors.map(String) }));
"""


@pytest.fixture
def node() -> str:
    hint = "real pi is not installed under .tools/npm; run scripts/install-test-tools.sh"
    found = shutil.which("node")
    if found is None or not (PI_PACKAGE / "package.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return found


@pytest.mark.interop
def test_real_pi_reads_our_file_and_resolves_keys_as_we_do(node: str, tmp_path: Path) -> None:
    path = tmp_path / "agent" / "auth.json"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MY_GROQ": "groq-from-env", "PI_OFFLINE": "1"}
    values = {"groq": "MY_GROQ", "mistral": "!printf '  cmd-key \\n'", "xai": "xai-literal", "zai": "UNSET_VAR"}
    for provider, value in values.items():
        replace_entry(path, provider, lambda current, value=value: ApiKeyEntry(key=value))
    far_future = 4102444800000
    replace_entry(path, "openai-codex", lambda current: OAuthEntry(
        access="codex-access", refresh="codex-refresh", expires=far_future, extra={"accountId": "acct-1"}
    ))
    out = subprocess.run(
        [node, "--input-type=module", "-e", PI_READER, "--",
         str(PI_PACKAGE / "dist/core/auth-storage.js"), str(path), *values, "openai-codex"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["list"] == [*values, "openai-codex"]

    auth = load(path)
    for provider in values:
        ours = resolve_api_key(auth, provider, env)
        assert ours is not None
        assert result["keys"][provider] == ours.value
    assert result["keys"]["openai-codex"] == "codex-access"
