"""Typed parameters and results of every RPC method (the daemon's public API).

Every method takes ``params`` = ``[]`` or ``[options]`` where ``options`` is a
map decoded into the method's ``*Params`` Struct (unknown keys are an error,
so typos surface). Results are maps. docs/PROTOCOL.md describes each one.

Standard library and msgspec only: the CLI loads it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PROVIDERS = ("pi", "ollama", "codex", "claude", "gemini")
# takod's own direct HTTP backends, after the CLIs in priority order (one key variable each).
API_PROVIDERS = ("anthropic", "openai", "openrouter", "groq", "xai", "mistral", "deepseek", "cerebras")
# Every provider's reason in a workspace that is not the user's own (docs/security.md).
UNTRUSTED_WORKSPACE = "untrusted-workspace"
TOPICS = ("status", "auth", "daemon", "login")

# Linux's PATH_MAX and NAME_MAX (macOS: 1024 and 255): longer paths can never be opened.
PATH_MAX_BYTES = 4095
NAME_MAX_BYTES = 255


def workspace_problem(path: str) -> str | None:
    """Why ``path`` cannot be a workspace root; None when it can be.

    A path the operating system could never open (relative, with a NUL byte,
    not encodable, over PATH_MAX or with a component over NAME_MAX) is a bad
    request, answered before anything uses it.
    """
    if not path.startswith("/"):
        return "workspace must be an absolute path"
    if "\x00" in path:
        return "workspace must not contain a NUL byte"
    try:
        data = path.encode("utf-8")
    except UnicodeEncodeError:
        return "workspace is not valid UTF-8"
    if len(data) > PATH_MAX_BYTES:
        return f"workspace is longer than {PATH_MAX_BYTES} bytes"
    if any(len(part) > NAME_MAX_BYTES for part in data.split(b"/")):
        return f"workspace has a path component longer than {NAME_MAX_BYTES} bytes"
    return None


# An environment as a process could have one (names without "=" or NUL, values
# without NUL): anything else could never reach a provider's process.
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=1024, pattern=r"^[^=\x00]+$")]
EnvValue = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]
Environment = dict[EnvName, EnvValue]
# A one-line name (model, provider, thinking level) that may end up on a provider's command line.
Word = Annotated[str, msgspec.Meta(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Params(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every method's options map."""


class Result(msgspec.Struct, omit_defaults=False):
    """Base of every method's result map."""


# hello ---------------------------------------------------------------------


class HelloParams(Params):
    client: str | None = None  # a name for logs, e.g. "takod-cli/0.1.0"
    workspace: str | None = None  # default workspace for this connection's requests
    protocol: int | None = None  # the protocol version the client speaks


class HelloResult(Result):
    server: str
    version: str
    protocol: int
    pid: int
    capabilities: list[str]
    methods: list[str]
    workspace: str


# ping ----------------------------------------------------------------------


class PingParams(Params):
    pass


# status --------------------------------------------------------------------


class StatusParams(Params):
    workspace: str | None = None
    env: Environment | None = None  # the client's environment: its API keys count too


class ProviderStatus(Result):
    """One provider's readiness: ``level`` is how far it got, ``reason`` why not further."""

    name: str
    ready: bool
    level: str  # not-installed | installed | credentials | reachable | ready | unknown
    reason: str | None  # stable reason code (docs/readiness.md), e.g. untrusted-workspace; None when ready
    hint: str | None  # one-line fix
    detail: dict[str, object] = msgspec.field(default_factory=dict)


class DaemonInfo(Result):
    pid: int
    version: str
    protocol: int
    started_at: float
    uptime_s: float
    socket: str
    state_dir: str
    activated: bool
    connections: int


class StatusResult(Result):
    daemon: DaemonInfo
    workspace: str
    selected: str | None
    providers: list[ProviderStatus]
    seq: int
    updated_at: float
    key_store: "KeyStoreInfo | None" = None


class ProbeParams(Params):
    workspace: str | None = None


# auth.inventory -------------------------------------------------------------


class AuthParams(Params):
    workspace: str | None = None


class CredentialInfo(Result):
    """One credential found on this machine, masked."""

    provider: str  # the takod provider that can use it: pi, codex, claude, gemini
    backend: str  # what it authenticates to (pi's provider id, e.g. anthropic, openai-codex)
    source: str  # file path, env:NAME, keyring:NAME, or file:NAME for the insecure fallback
    kind: str  # api_key | oauth
    masked: str
    expires_at: float | None
    expired: bool
    refreshable: bool
    read_only: bool
    account: str | None
    note: str | None
    unverified: bool
    wins: bool  # the credential readiness counts on for this provider


class KeyStoreInfo(Result):
    backend: str  # keyring backend name, or "file" for the 0600 fallback
    secure: bool
    reason: str | None
    hint: str | None


class GrantInfo(Result):
    """One OAuth grant takod keeps fresh (a refresh-token lineage, maybe in several files)."""

    id: str  # "<provider>:<hash of the refresh token>", stable until the token rotates
    provider: str  # pi provider id: openai-codex, anthropic, github-copilot, ...
    mirrors: list[str]  # every file holding it ("path#provider" for pi files)
    expires_at: float  # stored expiry, epoch seconds
    refresh_at: float | None  # next scheduled refresh; None when a login is needed
    last_refresh: float | None
    last_error: str | None
    state: str  # scheduled | refreshing | retrying | backing-off | needs-login
    guidance: str | None  # what to do when a login is needed
    # backing-off: why the next refresh (refresh_at) waits: refreshed_recently,
    # refresh_budget_spent (the per-grant request budget), waiting_for_codex (an
    # expired Codex login left to Codex for a grace period; docs/refresh.md)
    wait_reason: str | None = None


class AuthResult(Result):
    workspace: str
    credentials: list[CredentialInfo]
    problems: list[str]
    key_store: KeyStoreInfo | None
    grants: list[GrantInfo] = msgspec.field(default_factory=list)


class AuthRefreshParams(Params):
    provider: Word | None = None  # a takod provider (pi, codex) or a pi provider id; None: every grant
    workspace: str | None = None


class AuthRefreshResult(Result):
    grants: list[GrantInfo]


# settings.get / settings.set -----------------------------------------------

SETTINGS_FIELDS = ("preferred_provider", "ollama_model", "ollama_host", "type1_model", "type2_model")


class SettingsGetParams(Params):
    workspace: str | None = None


class SettingsSetParams(Params):
    field: str
    value: str
    workspace: str | None = None


class SettingsResult(Result):
    workspace: str
    path: str
    preferred_provider: str
    ollama_model: str
    ollama_host: str
    type1_model: str
    type2_model: str
    api_keys: dict[str, str]  # name -> masked value (plaintext keys Takobot stored; migrate them)
    problem: str | None


# keys.* ----------------------------------------------------------------------


class KeySetParams(Params):
    name: str
    value: str
    workspace: str | None = None  # a Tako workspace whose pi auth.json gets the key's entry


class KeyGetParams(Params):
    name: str


class KeyClearParams(Params):
    name: str


class KeyListParams(Params):
    pass


class KeyNamesParams(Params):
    pass


class KeyNameInfo(Result):
    name: str
    providers: list[str]
    description: str


class KeyNamesResult(Result):
    names: list[KeyNameInfo]


class KeyMigrateParams(Params):
    workspace: str | None = None
    to_file: bool = False  # without an OS keyring: move the keys to takod's 0600 key file anyway


class KeyInfoResult(Result):
    name: str
    backend: str
    masked: str
    # The workspace pi auth.json whose entry reads this key from the store (for
    # Takobot's pi), and what happened there: written, present, other-entry.
    pi_entry: str | None = None
    pi_entry_outcome: str | None = None


class KeyGetResult(Result):
    name: str
    value: str  # the key itself: only ever printed into a pipe by `takod key get`


class KeyListResult(Result):
    keys: list[KeyInfoResult]
    store: KeyStoreInfo | None


class KeyClearResult(Result):
    name: str
    removed: bool


class KeyMigrateResult(Result):
    migrated: list[str]
    failed: list[str]
    removed_from_settings: list[str]
    store: KeyStoreInfo | None
    # Left in the settings file, and why: what Takobot would lose were they moved.
    kept: dict[str, str] = msgspec.field(default_factory=dict)
    # Migrated keys the workspace pi auth.json now reads from the store (Takobot's pi).
    pi_entries: list[str] = msgspec.field(default_factory=list)


# infer / embed / models.list / health ---------------------------------------


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: str


# The Inference skill's configuration variables: the CLI sends the ones set in its
# environment with each prompt, and they win over the daemon's (docs/inference.md).
INFERENCE_ENV_VARS = (
    "INFERENCE_ENABLE_ROUTING", "OLLAMA_ENABLE_ROUTING", "INFERENCE_DEFAULT_BACKEND",
    "OLLAMA_BASE_URL", "OLLAMA_HOST", "OLLAMA_MODEL", "OLLAMA_TIMEOUT", "OLLAMA_DEFAULT_MODEL",
    "OLLAMA_CHAT_MODEL", "OLLAMA_CODE_MODEL", "OLLAMA_EMBED_MODEL", "ANTHROPIC_DEFAULT_MODEL", "ANTHROPIC_TIMEOUT",
)


class InferParams(Params):
    """A prompt. Give ``prompt`` (one user turn) or ``messages`` (a conversation)."""

    prompt: str | None = None
    messages: list[MessageIn] | None = None
    system: str | None = None
    model: Word | None = None  # implies a backend: claude-* anthropic, llama3.2 ollama, provider/model pi
    provider: Word | None = None  # pi, ollama, codex, claude, gemini, or an API backend (anthropic, openai, ...)
    temperature: float | None = None
    format: Literal["text", "json"] = "text"
    thinking: Word | None = None
    max_tokens: int | None = None
    stream: bool | Literal["async"] = False  # True: chunks, then the answer; "async": a stream id at once
    deliver: Literal["notify", "autocmd"] = "notify"  # how async chunks reach a stock Neovim
    timeout: float | None = None  # per provider attempt; nil: OLLAMA_TIMEOUT / ANTHROPIC_TIMEOUT, else 180
    local_only: bool = False  # never send the prompt off this machine
    env: Environment | None = None  # extra environment for the provider (e.g. a client's own key)
    workspace: str | None = None
    # Takobot's model lanes: type1 (fast: chat) or type2 (deep: reasoning, summaries).
    # Without a model, pi runs with the lane's model from the settings (type1_model / type2_model).
    lane: Literal["type1", "type2"] = "type1"


class RouteStep(Result):
    provider: str
    outcome: str  # answered | failed | skipped
    reason: str | None
    model: str | None
    elapsed_ms: float | None
    first_token_ms: float | None
    rule: str | None = None  # the routing rule that put this provider here, e.g. "kept local: ..."


class InferResult(Result):
    text: str
    provider: str
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    elapsed_ms: float
    route: list[RouteStep]
    thinking: str | None = None


class InferStarted(Result):
    stream_id: int  # the msgid of the infer request; chunks carry it


class EmbedParams(Params):
    texts: list[str]
    model: Word | None = None  # default: OLLAMA_EMBED_MODEL or nomic-embed-text (ollama), text-embedding-3-small (openai)
    provider: Literal["ollama", "openai"] = "ollama"
    env: Environment | None = None  # the client's keys and INFERENCE_ENV_VARS, as for infer
    workspace: str | None = None


class EmbedResult(Result):
    provider: str
    model: str
    embeddings: list[list[float]]
    dimensions: int


class ModelsParams(Params):
    provider: Word | None = None  # one provider, or all
    env: Environment | None = None  # the client's keys and INFERENCE_ENV_VARS, as for infer
    workspace: str | None = None


class ModelEntry(Result):
    provider: str
    name: str
    detail: dict[str, object] = msgspec.field(default_factory=dict)


class ModelsResult(Result):
    models: list[ModelEntry]
    errors: dict[str, str]


class HealthParams(Params):
    workspace: str | None = None


class HealthResult(Result):
    ok: bool  # a provider is ready
    selected: str | None
    ready: list[str]


# subscribe / unsubscribe ---------------------------------------------------


class SubscribeParams(Params):
    topics: list[str] | None = None  # None: every topic
    deliver: Literal["notify", "autocmd"] = "notify"


class SubscribeResult(Result):
    sub_id: int
    topics: list[str]
    deliver: str


class UnsubscribeParams(Params):
    sub_id: int


class UnsubscribeResult(Result):
    removed: bool


# shutdown ------------------------------------------------------------------


class ShutdownParams(Params):
    pass


class ShutdownResult(Result):
    stopping: bool
    pid: int


# login.start / login.answer / login.cancel / login.status ------------------


class LoginStartParams(Params):
    provider: Word  # openai-codex|codex, anthropic|claude, or an API-key provider (openai, gemini, ...) / key name
    workspace: str | None = None  # where OAuth credentials go (<ws>/.tako/pi/agent/auth.json)
    timeout: float | None = None  # seconds before the login gives up (default 900)


class LoginStartResult(Result):
    login_id: str
    provider: str  # pi provider id or key name the login produces


class LoginAnswerParams(Params):
    text: str
    login_id: str | None = None  # None: the only running login


class LoginAnswerResult(Result):
    login_id: str
    accepted: bool  # False: no prompt was waiting


class LoginCancelParams(Params):
    login_id: str | None = None


class LoginCancelResult(Result):
    login_id: str
    cancelled: bool


class LoginStatusParams(Params):
    login_id: str | None = None  # None: every login the daemon remembers


# doctor / doctor.run ----------------------------------------------------------


class DoctorParams(Params):
    fix: bool = False  # repair what is safe, then check again
    stream: bool = False  # send `progress` chunks as takod.stream notifications while it works
    env_names: list[str] | None = None  # names (never values) of key and proxy variables in the client's shell
    workspace: str | None = None


class DoctorCheck(Result):
    """One diagnosis: ``verdict`` ok | warn | fail; ``fix`` says what to do (text)."""

    id: str  # stable: socket-dir, keyring, provider:pi, pi-runtime, ...
    verdict: Literal["ok", "warn", "fail"]
    summary: str
    detail: str | None = None
    fix: str | None = None
    fixable: bool = False  # `takod doctor --fix` can repair it


class DoctorFix(Result):
    """One repair `--fix` attempted."""

    id: str  # the check it was for
    ok: bool
    message: str


class DoctorResult(Result):
    ok: bool  # no check failed
    workspace: str
    daemon: bool  # the daemon ran these checks (False: the client's own checks only)
    checks: list[DoctorCheck]
    fixes: list[DoctorFix]
    counts: dict[str, int]  # ok / warn / fail
