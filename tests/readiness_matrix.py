"""The readiness differential: does ``status`` say ready exactly when a prompt would run?

A generated matrix of credential configurations (store x format x provider x
Tako/plain workspace x the CLI installed or not), for pi, the direct API
backends and Claude Code. For each, a fresh daemon in a temp
HOME, with loopback model servers behind every provider (pi's built-in
``openai`` and ``anthropic`` re-pointed by ``models.json`` ``baseUrl``
overrides in both agent directories, a ``models.json`` custom provider
``fake``, takod's own API backends through ``OPENAI_BASE_URL`` /
``ANTHROPIC_BASE_URL``). Each configuration holds one secret, unique to it.

The truth is measured, not modelled:

- pi: the real pi, run directly as Takobot (Tako workspace: agent dir
  ``<ws>/.tako/pi/agent``) or the user (elsewhere: ``~/.pi/agent``) would run
  it, with every key takod holds in its environment (daemon environment, key
  store, settings keys). It "works" when the loopback server received the
  configuration's secret and pi answered.
- API backends: takod's HTTP client is the tool; "works" is the key variable
  being held at all, checked by the run itself.
- claude: the real Claude Code, run directly in the workspace as the user would
  (``claude -p``), with every key takod holds. Its Anthropic, Bedrock, Vertex
  and Foundry endpoints all point at the loopback Anthropic server. It "works"
  when a request reached the server with the configuration's credential (an
  API key or bearer token, the AWS access key id in a SigV4 signature; with
  ``CLAUDE_CODE_SKIP_*_AUTH``, any request on that cloud's path). Bedrock and
  Vertex requests reach the server but cannot be answered by it: for them,
  reaching it with the credential is the test.

A configuration passes when ``status`` says ready iff it works, and, when
ready, ``takod run --provider X`` reached the server with that secret.
tests/integration/test_readiness_matrix.py runs a fixed subset;
stress/readiness_matrix.py runs all of it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.model_servers import FakeAnthropic, FakeGemini, FakeModelServer, FakeOpenAI, RecordedRequest
from tests.fakes.ollama_server import FakeOllama, tag_entry
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, wait_for

DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
PI_ARGS = ("--print", "--mode", "json", "--no-session", "--no-tools", "--no-extensions", "--no-skills")
CLAUDE_ARGS = ("-p", "--output-format", "stream-json", "--verbose", "--no-session-persistence", "--tools", "")
RUN_TIMEOUT = 180.0
COMPAT = {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsUsageInStreaming": True}
ENV_NAME_VAR = "MATRIX_FAKE_KEY"  # secret-named: the old child filter dropped it
# A name the key store takes (a catalogue name) that pi never reads by itself: a name pi
# reads (XAI_API_KEY) would make that built-in provider pi's choice, ahead of a custom one.
STORED_NAME_VAR = "VENICE_API_KEY"
CMD_VAR = "MATRIX_CMD_SECRET"
ALIASES = {"openai": "VENICE_API_KEY", "anthropic": "CLAUDE_API_KEY"}  # names Takobot knows, pi never reads
PI_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True)
class Config:
    target: str  # pi:openai | pi:anthropic | pi:fake | api:openai | api:anthropic | claude | codex | gemini | ollama
    # pi: ws-auth | home-auth | home-auth+ws-empty | models-json | daemon-env | keystore | settings;
    # claude: daemon-env | keystore | settings | login-file | helper | bedrock | vertex | foundry;
    # codex: custom (a [model_providers] table that model_provider names); gemini: auth; ollama: OLLAMA_FORMS
    store: str
    # pi: literal | env-name | env-name-stored | env-name-unset | command | pi-name | alias; claude: CLAUDE_FORMS
    form: str
    tako: bool  # a Tako workspace (tako.toml) or a plain directory
    installed: bool  # the CLI (pi, claude) on the daemon's PATH

    @property
    def name(self) -> str:
        return f"{self.target}/{self.store}/{self.form}/{'tako' if self.tako else 'plain'}/" + (
            "installed" if self.installed else f"no-{self.cli}"
        )

    @property
    def provider(self) -> str:
        return self.target.split(":")[1] if self.target.startswith("api:") else self.target.split(":")[0]

    @property
    def cli(self) -> str:
        """The CLI this configuration installs or not."""
        return self.target if self.target in ("claude", "codex", "gemini", "ollama") else "pi"

    @property
    def pi_provider(self) -> str:
        return self.target.split(":")[1]


FILE_FORMS = ("literal", "env-name", "env-name-stored", "env-name-unset", "command")
ENV_FORMS = ("pi-name", "alias")
# claude: the key variables (in the daemon's environment, the key store or the settings file),
# its login file, an apiKeyHelper, and each cloud switch with the credentials it may meet.
CLAUDE_VARS = {"api-key": "ANTHROPIC_API_KEY", "auth-token": "ANTHROPIC_AUTH_TOKEN", "alias": "CLAUDE_API_KEY",
               "oauth-token": "CLAUDE_CODE_OAUTH_TOKEN", "foundry-key": "ANTHROPIC_FOUNDRY_API_KEY",
               "aws-bearer": "AWS_BEARER_TOKEN_BEDROCK"}
CLAUDE_FORMS: dict[str, tuple[str, ...]] = {
    "daemon-env": ("api-key", "auth-token", "alias", "oauth-token"),
    "keystore": ("api-key", "auth-token", "alias"),
    "settings": ("api-key", "alias"),  # Takobot's settings keep only its own names (no ANTHROPIC_AUTH_TOKEN)
    # scoped: a login with user:inference; unscoped: without (claude: "Not logged in"); blanked: ended
    # by a failed refresh; config-dir: under $CLAUDE_CONFIG_DIR
    "login-file": ("scoped", "unscoped", "blanked", "config-dir"),
    # user: ~/.claude/settings.json; config-dir: $CLAUDE_CONFIG_DIR/settings.json; home-not-config-dir:
    # ~/.claude/settings.json while $CLAUDE_CONFIG_DIR is elsewhere (claude does not read it)
    "helper": ("user", "config-dir", "home-not-config-dir"),
    "bedrock": ("api-key", "aws-keys", "aws-keys-stored", "aws-bearer", "aws-profile", "aws-default-file",
                "skip-auth", "none"),
    "vertex": ("api-key", "skip-auth", "skip-auth-no-project"),
    "foundry": ("foundry-key", "api-key"),
}
CLOUDS = ("bedrock", "vertex")  # claude's requests there reach the server, which cannot answer them
SWITCHES = {"bedrock": "CLAUDE_CODE_USE_BEDROCK", "vertex": "CLAUDE_CODE_USE_VERTEX", "foundry": "CLAUDE_CODE_USE_FOUNDRY"}
CLAUDE_MODEL = "claude-sonnet-4-5"
# codex: config.toml's model_provider names a custom provider at the loopback server, with an env_key
# in the daemon's environment or the key store, one nobody set (OPENAI_API_KEY set instead), or none.
CODEX_FORMS = ("env-key", "env-key-stored", "env-key-unset", "keyless")
CODEX_KEY_VAR = "MATRIX_CODEX_KEY"
# ollama (a loopback fake Ollama; "installed" is always true: a reachable Ollama needs no binary here):
# form -> (models listed, variables for the daemon, settings). HOST is the fake; DEAD a closed port.
LLAMA, QWEN, NOMIC = "llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest"
OLLAMA_FORMS: dict[str, tuple[tuple[str, ...], dict[str, str], dict[str, str]]] = {
    "running": ((LLAMA, NOMIC), {}, {}),
    "down": ((LLAMA,), {"OLLAMA_HOST": "DEAD"}, {}),
    "no-models": ((), {}, {}),
    "embed-only": ((NOMIC,), {}, {}),
    "embed-first": ((NOMIC, LLAMA), {}, {}),
    "env-model": ((LLAMA, QWEN), {"OLLAMA_MODEL": QWEN}, {}),
    "env-model-missing": ((LLAMA,), {"OLLAMA_MODEL": QWEN}, {}),
    "env-model-embedding": ((LLAMA, NOMIC), {"OLLAMA_MODEL": "nomic-embed-text"}, {}),
    "default-model": ((LLAMA, QWEN), {"OLLAMA_DEFAULT_MODEL": QWEN}, {}),
    "default-model-missing": ((LLAMA,), {"OLLAMA_DEFAULT_MODEL": QWEN}, {}),
    "env-over-default": ((LLAMA, QWEN), {"OLLAMA_MODEL": LLAMA, "OLLAMA_DEFAULT_MODEL": QWEN}, {}),
    "settings-model": ((LLAMA, QWEN), {"OLLAMA_MODEL": LLAMA}, {"ollama_model": QWEN}),
    "settings-model-missing": ((LLAMA,), {}, {"ollama_model": QWEN}),
    "settings-host": ((LLAMA,), {"OLLAMA_HOST": "DEAD"}, {"ollama_host": "HOST"}),
    "base-url": ((LLAMA,), {"OLLAMA_HOST": "DEAD", "OLLAMA_BASE_URL": "HOST"}, {}),
    "base-url-dead": ((LLAMA,), {"OLLAMA_BASE_URL": "DEAD"}, {}),
}
# gemini: GEMINI_API_KEY (or GOOGLE_API_KEY) and gemini's own auth method choice. An explicit model
# keeps gemini's model router (a classifier call the fake cannot answer) out of the way.
GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_ARGS = ("-p", "", "-o", "stream-json", "--skip-trust", "-m", GEMINI_MODEL)
GEMINI_FORMS = ("nothing-selected", "keystore", "settings-file", "selected-key", "selected-oauth-no-login",
                "forced-gca", "forced-vertex", "google-api-key", "none")
GEMINI_FORCING = ("GOOGLE_GENAI_USE_GCA", "GOOGLE_GENAI_USE_VERTEXAI")
CODEX_ARGS = ("exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only", "--color", "never", "-")


def generate() -> list[Config]:
    """Every configuration of the matrix (deterministic order)."""
    out: list[Config] = []
    for tako, installed in itertools.product((True, False), (True, False)):
        for target in ("pi:openai", "pi:anthropic"):
            stores = ["home-auth"] + (["ws-auth", "home-auth+ws-empty"] if tako else [])
            for store, form in itertools.product(stores, FILE_FORMS):
                out.append(Config(target, store, form, tako, installed))
            for store, form in itertools.product(("daemon-env", "keystore", "settings"), ENV_FORMS):
                out.append(Config(target, store, form, tako, installed))
        for form in FILE_FORMS:
            out.append(Config("pi:fake", "models-json", form, tako, installed))
        for store in ["home-auth"] + (["ws-auth"] if tako else []):
            out.append(Config("pi:fake", store, "literal", tako, installed))
        for target in ("api:openai", "api:anthropic"):
            for store, form in itertools.product(("daemon-env", "keystore", "settings"), ENV_FORMS):
                out.append(Config(target, store, form, tako, installed))
        for store, forms in CLAUDE_FORMS.items():
            out += [Config("claude", store, form, tako, installed) for form in forms]
        out += [Config("codex", "custom", form, tako, installed) for form in CODEX_FORMS]
        out += [Config("gemini", "auth", form, tako, installed) for form in GEMINI_FORMS]
        if installed:
            out += [Config("ollama", "host", form, tako, True) for form in OLLAMA_FORMS]
    return out


def subset() -> list[Config]:
    """The fast subset the suite runs: each finding of issue 15 once, real pi installed."""
    c = Config
    return [
        c("pi:anthropic", "home-auth", "literal", True, True),  # home login, workspace runs: seeded
        c("pi:openai", "home-auth+ws-empty", "literal", True, True),  # a `{}` workspace file: seeded too
        c("pi:openai", "ws-auth", "env-name", True, True),  # the variable a key names reaches pi
        c("pi:anthropic", "ws-auth", "command", True, True),  # so do those a !command mentions
        c("pi:openai", "ws-auth", "env-name-unset", True, True),  # a name with no variable: not ready
        c("pi:anthropic", "keystore", "alias", True, True),  # CLAUDE_API_KEY: pi never reads it
        c("pi:fake", "models-json", "literal", False, True),  # a models.json custom provider
        c("pi:openai", "keystore", "pi-name", False, True),
        c("api:openai", "keystore", "pi-name", False, False),  # only OPENAI_API_KEY: the API backend is ready
        c("pi:openai", "daemon-env", "pi-name", True, False),  # not installed
        c("claude", "bedrock", "api-key", True, True),  # on Bedrock claude never sends ANTHROPIC_API_KEY
        c("claude", "bedrock", "aws-keys", False, True),  # ... but signs with the AWS credentials
        c("claude", "login-file", "unscoped", True, True),  # a login without user:inference: "Not logged in"
        c("claude", "helper", "user", False, True),  # an apiKeyHelper in claude's settings
        c("claude", "keystore", "auth-token", True, True),
        c("codex", "custom", "keyless", True, True),  # a keyless local provider: codex answers with no key
        c("codex", "custom", "env-key-unset", False, True),  # its env_key unset: OPENAI_API_KEY does not help
        c("gemini", "auth", "nothing-selected", True, True),  # takod selects gemini-api-key; gemini alone exits 41
        c("gemini", "auth", "forced-gca", False, True),  # a Google login asked for: the key is left alone
        c("ollama", "host", "embed-first", True, True),  # an embedding model listed first is not the chat model
        c("ollama", "host", "default-model-missing", False, True),  # OLLAMA_DEFAULT_MODEL is the run's model
    ]


@dataclass
class Servers:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    ollama: FakeOllama
    gemini: FakeGemini

    def of(self, config: Config) -> FakeModelServer:
        if config.cli == "gemini":
            return self.gemini
        return self.anthropic if "anthropic" in config.target or config.cli == "claude" else self.openai

    def arm(self, secret: str, config: Config | None = None) -> None:
        for server in (self.openai, self.anthropic, self.gemini):
            server.api_key = secret
            server.requests.clear()
        if config is not None and config.store in CLOUDS:
            # A wrong-key 401 would send claude into minutes of retries; these requests cannot be
            # answered anyway: what they carry is the test.
            self.anthropic.api_key = None


@contextmanager
def servers() -> Iterator[Servers]:
    with (FakeOpenAI() as openai, FakeAnthropic() as anthropic, FakeOllama(chunk_delay=0.0) as ollama,
          FakeGemini() as gemini):
        yield Servers(openai, anthropic, ollama, gemini)


@dataclass
class Outcome:
    config: Config
    ready: bool
    reason: str | None
    works: bool
    run_reached: bool | None  # None: not run (not ready)
    detail: str = ""
    leaked: bool = False  # the secret appeared in status, the run's output or the daemon's log

    @property
    def ok(self) -> bool:
        return self.ready == self.works and (not self.ready or bool(self.run_reached)) and not self.leaked


def _write(path: Path, doc: object, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    path.chmod(mode)


def _key_value(config: Config, secret: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The value written in a file for a file form, and the daemon-env and key-store variables it relies on."""
    if config.form == "literal":
        return secret, {}, {}
    if config.form == "env-name":
        return ENV_NAME_VAR, {ENV_NAME_VAR: secret}, {}
    if config.form == "env-name-stored":
        return STORED_NAME_VAR, {}, {STORED_NAME_VAR: secret}
    if config.form == "env-name-unset":
        return ENV_NAME_VAR, {}, {}
    assert config.form == "command"
    return f'!printf %s "${CMD_VAR}"', {CMD_VAR: secret}, {}


def _models(srv: Servers, fake_key: str | None) -> dict[str, object]:
    providers: dict[str, object] = {
        "openai": {"baseUrl": srv.openai.base_url},
        "anthropic": {"baseUrl": srv.anthropic.url},
    }
    if fake_key is not None:
        providers["fake"] = {"baseUrl": srv.openai.base_url, "api": "openai-completions", "apiKey": fake_key,
                             "compat": COMPAT, "models": [{"id": "fake-model"}]}
    return {"providers": providers}


@dataclass
class Setup:
    home: Path
    workspace: Path
    env: dict[str, str]  # the daemon's
    stored: dict[str, str]  # to put in the key store
    settings_keys: dict[str, str]
    secret: str
    # What must reach the server: the secret itself, or (claude on AWS) the access key id in the
    # signature; None: any request on the cloud's path (claude with its cloud auth skipped).
    wire: str | None = ""

    def pool(self) -> dict[str, str]:
        """Every key takod holds, as pi would get them in its environment."""
        return {**self.env, **self.settings_keys, **self.stored}


def _claude_layout(config: Config, home: Path, secret: str) -> tuple[dict[str, str], dict[str, str], dict[str, str], str | None]:
    """Claude's files for ``config`` (written here), and its daemon-env, key-store and settings
    variables, and what must reach the server."""
    env: dict[str, str] = {}
    stored: dict[str, str] = {}
    settings: dict[str, str] = {}
    wire: str | None = secret
    store, form = config.store, config.form
    if store in ("daemon-env", "keystore", "settings"):
        {"daemon-env": env, "keystore": stored, "settings": settings}[store][CLAUDE_VARS[form]] = secret
    elif store == "login-file":
        blanked = form == "blanked"
        login = {"accessToken": "" if blanked else secret, "refreshToken": "" if blanked else f"sk-ant-ort01-{secret}",
                 "expiresAt": 0 if blanked else 4102444800000, "subscriptionType": "max"}
        if form != "unscoped":
            login["scopes"] = ["user:inference", "user:profile"]
        config_dir = home / "cc" if form == "config-dir" else home / ".claude"
        if form == "config-dir":
            env["CLAUDE_CONFIG_DIR"] = str(config_dir)
        _write(config_dir / ".credentials.json", {"claudeAiOauth": login})
    elif store == "helper":
        where = home / "cc" if form == "config-dir" else home / ".claude"
        if form != "user":
            env["CLAUDE_CONFIG_DIR"] = str(home / "cc")
        _write(where / "settings.json", {"apiKeyHelper": f"printf %s {secret}"}, 0o644)
    else:
        env[SWITCHES[store]] = "1"
        key_id = "AKIA" + uuid.uuid4().hex[:16].upper()
        if form in ("api-key", "foundry-key", "aws-bearer"):
            env[CLAUDE_VARS[form]] = secret
        elif form in ("aws-keys", "aws-keys-stored"):
            target = env if form == "aws-keys" else stored
            target.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
            wire = key_id
        elif form in ("aws-profile", "aws-default-file"):
            profile = "dev" if form == "aws-profile" else "default"
            if form == "aws-profile":
                env["AWS_PROFILE"] = profile
            _write(home / ".aws" / "credentials",
                   f"[{profile}]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
            wire = key_id
        elif form.startswith("skip-auth"):
            env["CLAUDE_CODE_SKIP_BEDROCK_AUTH" if store == "bedrock" else "CLAUDE_CODE_SKIP_VERTEX_AUTH"] = "1"
            wire = None
        if store == "vertex" and form != "skip-auth-no-project":
            env["ANTHROPIC_VERTEX_PROJECT_ID"] = "matrix-project"
    return env, stored, settings, wire


def build(config: Config, root: Path, srv: Servers) -> Setup:
    """Lay out HOME, workspace and daemon environment for ``config``."""
    secret = f"sk-matrix-{uuid.uuid4().hex[:16]}"
    home = root / "h"
    workspace = root / "ws"
    workspace.mkdir(parents=True)
    home.mkdir()
    if config.tako:
        (workspace / "tako.toml").write_text("")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    if config.installed and config.cli != "ollama":  # no real Ollama here: its loopback fake answers
        (bin_dir / config.cli).symlink_to(TOOLS_BIN / config.cli)
    if config.cli == "claude":
        return _build_claude(config, home, workspace, bin_dir, srv, secret)
    if config.cli == "codex":
        return _build_codex(config, home, workspace, bin_dir, srv, secret)
    if config.cli == "ollama":
        return _build_ollama(config, home, workspace, bin_dir, srv, secret)
    if config.cli == "gemini":
        return _build_gemini(config, home, workspace, bin_dir, srv, secret)
    daemon_env: dict[str, str] = {}
    stored: dict[str, str] = {}
    settings_keys: dict[str, str] = {}
    home_agent = home / ".pi" / "agent"
    ws_agent = workspace / ".tako" / "pi" / "agent"
    fake_key: str | None = None

    if config.store in ("ws-auth", "home-auth", "home-auth+ws-empty", "models-json"):
        value, env_vars, store_vars = _key_value(config, secret)
        daemon_env.update(env_vars)
        stored.update(store_vars)
        if config.store == "models-json":
            fake_key = value
        else:
            if config.pi_provider == "fake":
                fake_key = "unused-by-pi"  # the auth.json entry hides the models.json apiKey
            entry = {config.pi_provider: {"type": "api_key", "key": value}}
            _write((ws_agent if config.store == "ws-auth" else home_agent) / "auth.json", entry)
            if config.store == "home-auth+ws-empty":
                _write(ws_agent / "auth.json", "{}")
    else:
        var = PI_VARS[config.pi_provider] if config.form == "pi-name" else ALIASES[config.pi_provider]
        {"daemon-env": daemon_env, "keystore": stored, "settings": settings_keys}[config.store][var] = secret

    _write(home_agent / "models.json", _models(srv, fake_key), 0o644)
    if config.tako:
        _write(ws_agent / "models.json", _models(srv, fake_key), 0o644)
    if settings_keys:
        _write(workspace / ".tako" / "state" / "inference-settings.json", {"api_keys": settings_keys}, 0o600)

    env = _daemon_env(home, workspace, bin_dir, srv, daemon_env)
    return Setup(home, workspace, env, stored, settings_keys, secret)


def _daemon_env(home: Path, workspace: Path, bin_dir: Path, srv: Servers, extra: dict[str, str]) -> dict[str, str]:
    url = srv.anthropic.url
    return clean_env(
        home,
        TAKO_WORKSPACE=str(workspace),
        PATH=f"{bin_dir}:/usr/bin:/bin",
        OLLAMA_HOST="127.0.0.1:9",
        PI_OFFLINE="1",
        OPENAI_BASE_URL=srv.openai.base_url,
        ANTHROPIC_BASE_URL=url,
        # Claude Code: every cloud it can use points at the loopback server too.
        ANTHROPIC_BEDROCK_BASE_URL=url, ANTHROPIC_VERTEX_BASE_URL=url, ANTHROPIC_FOUNDRY_BASE_URL=url,
        AWS_REGION="us-east-1", CLOUD_ML_REGION="us-east5", ANTHROPIC_MODEL=CLAUDE_MODEL,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
        NO_PROXY=LOOPBACK, no_proxy=LOOPBACK,
        HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY,
        **extra,
    )


def _build_claude(config: Config, home: Path, workspace: Path, bin_dir: Path, srv: Servers, secret: str) -> Setup:
    env, stored, settings_keys, wire = _claude_layout(config, home, secret)
    if settings_keys:
        _write(workspace / ".tako" / "state" / "inference-settings.json", {"api_keys": settings_keys}, 0o600)
    return Setup(home, workspace, _daemon_env(home, workspace, bin_dir, srv, env), stored, settings_keys, secret, wire)


def _build_codex(config: Config, home: Path, workspace: Path, bin_dir: Path, srv: Servers, secret: str) -> Setup:
    key_var = "XAI_API_KEY" if config.form == "env-key-stored" else CODEX_KEY_VAR  # the key store takes known names
    table = (f'model = "fake-model"\nmodel_provider = "loopback"\n[model_providers.loopback]\nname = "Loopback"\n'
             f'base_url = "{srv.openai.base_url}"\nwire_api = "responses"\n')
    if config.form != "keyless":
        table += f'env_key = "{key_var}"\n'
    _write(home / ".codex" / "config.toml", table, 0o644)
    env: dict[str, str] = {}
    stored: dict[str, str] = {}
    wire: str | None = secret
    if config.form == "env-key":
        env[key_var] = secret
    elif config.form == "env-key-stored":
        stored[key_var] = secret
    elif config.form == "env-key-unset":
        env["OPENAI_API_KEY"] = secret
    else:
        wire = None
    return Setup(home, workspace, _daemon_env(home, workspace, bin_dir, srv, env), stored, {}, secret, wire)


def _build_gemini(config: Config, home: Path, workspace: Path, bin_dir: Path, srv: Servers, secret: str) -> Setup:
    settings: dict[str, object] = {"privacy": {"usageStatisticsEnabled": False}}
    env: dict[str, str] = {"GOOGLE_GEMINI_BASE_URL": srv.gemini.base_url}
    stored: dict[str, str] = {}
    settings_keys: dict[str, str] = {}
    form = config.form
    if form == "keystore":
        stored["GEMINI_API_KEY"] = secret
    elif form == "settings-file":
        settings_keys["GEMINI_API_KEY"] = secret
        _write(workspace / ".tako" / "state" / "inference-settings.json", {"api_keys": settings_keys}, 0o600)
    elif form == "google-api-key":
        env["GOOGLE_API_KEY"] = secret
    elif form != "none":
        env["GEMINI_API_KEY"] = secret
    if form == "selected-key":
        settings["security"] = {"auth": {"selectedType": "gemini-api-key"}}
    elif form == "selected-oauth-no-login":
        settings["security"] = {"auth": {"selectedType": "oauth-personal"}}
    elif form.startswith("forced-"):
        env[GEMINI_FORCING[0] if form == "forced-gca" else GEMINI_FORCING[1]] = "true"
    _write(home / ".gemini" / "settings.json", settings, 0o644)
    return Setup(home, workspace, _daemon_env(home, workspace, bin_dir, srv, env), stored, settings_keys, secret,
                 secret)


def _gemini_answers(setup: Setup, srv: Servers, extra: dict[str, str]) -> bool:
    srv.arm(setup.secret)
    proc = subprocess.run([str(TOOLS_BIN / "gemini"), *GEMINI_ARGS], input=b"Say hi.", env={**setup.pool(), **extra},
                          cwd=setup.workspace, capture_output=True, timeout=RUN_TIMEOUT)
    return proc.returncode == 0 and any(srv.gemini.sent_key(r) == setup.secret for r in srv.gemini.requests)


def _ollama_expected(config: Config) -> str | None:
    """The model a prompt must run with, by Ollama's and the Inference skill's rules as documented
    (settings' host, OLLAMA_BASE_URL, OLLAMA_HOST; settings' model, OLLAMA_MODEL,
    OLLAMA_DEFAULT_MODEL, the first listed chat model); None: no prompt can run."""
    listed, env, settings = OLLAMA_FORMS[config.form]
    host = settings.get("ollama_host") or env.get("OLLAMA_BASE_URL") or env.get("OLLAMA_HOST") or "HOST"
    if host != "HOST":
        return None
    named = settings.get("ollama_model") or env.get("OLLAMA_MODEL") or env.get("OLLAMA_DEFAULT_MODEL")
    if named:
        full = named if ":" in named else f"{named}:latest"
        return full if full in listed and "embed" not in full else None
    return next((m for m in listed if "embed" not in m), None)


def _build_ollama(config: Config, home: Path, workspace: Path, bin_dir: Path, srv: Servers, secret: str) -> Setup:
    listed, env, settings = OLLAMA_FORMS[config.form]
    embedding = {"family": "nomic-bert", "capabilities": ["embedding"]}
    srv.ollama.models = [tag_entry(m, **(embedding if "embed" in m else {})) for m in listed]  # type: ignore[arg-type]
    place = {"HOST": srv.ollama.host, "DEAD": "127.0.0.1:9"}
    env = {"OLLAMA_HOST": "HOST", **env}
    if settings:
        _write(workspace / ".tako" / "state" / "inference-settings.json",
               {k: place.get(v, v) for k, v in settings.items()}, 0o600)
    daemon_env = _daemon_env(home, workspace, bin_dir, srv, {})
    daemon_env.update({k: place.get(v, v) for k, v in env.items()})
    return Setup(home, workspace, daemon_env, {}, {}, secret, _ollama_expected(config))


def _reached(srv: Servers, config: Config, secret: str | None) -> bool:
    if config.cli == "ollama":  # the chat went to the fake Ollama with the expected model
        return any(r.path == "/api/chat" and (r.body or {}).get("model") == secret for r in srv.ollama.requests)
    server = srv.of(config)
    if config.cli == "claude":
        return any(_claude_sent(r, secret) for r in server.requests)
    if secret is None:  # a keyless provider: any request reached it
        return any(r.path.endswith("/responses") for r in server.requests)
    return any(server.sent_key(r) == secret for r in server.requests)


def _claude_sent(rec: RecordedRequest, wire: str | None) -> bool:
    """Whether claude's request carried ``wire`` (None: whether it went to a cloud's path)."""
    if wire is None:
        return "/model/" in rec.path or "/projects/" in rec.path
    auth = rec.header("authorization") or ""
    return wire in (rec.header("x-api-key"), auth.removeprefix("Bearer ")) or f"Credential={wire}/" in auth


def truth(config: Config, setup: Setup, srv: Servers) -> tuple[bool, str]:
    """Whether a prompt really runs with this configuration, measured with the real tool."""
    if config.target.startswith("api:"):  # takod's own HTTP backend: it has its key variable or not
        return bool(setup.pool().get(PI_VARS[config.provider])), "takod's HTTP backend"
    if not config.installed:
        return False, f"{config.cli} is not installed"
    if config.cli == "claude":
        srv.arm(setup.secret, config)
        proc = subprocess.run([str(TOOLS_BIN / "claude"), *CLAUDE_ARGS], input=b"Say hi.", env=setup.pool(),
                              cwd=setup.workspace, capture_output=True, timeout=RUN_TIMEOUT)
        return _reached(srv, config, setup.wire), proc.stdout.decode(errors="replace")[-200:]
    if config.cli == "ollama":  # Ollama itself answers that model's chat, asked directly
        if setup.wire is None:
            return False, "no Ollama at that address, or no such chat model there"
        srv.ollama.requests.clear()
        body = json.dumps({"model": setup.wire, "messages": [{"role": "user", "content": "Say hi."}], "stream": False})
        request = urllib.request.Request(srv.ollama.url + "/api/chat", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=RUN_TIMEOUT) as answer:
            return answer.status == 200 and b'"done":true' in answer.read().replace(b" ", b""), "asked Ollama directly"
    if config.cli == "gemini":
        # As the user runs it; else with gemini-api-key selected in gemini's highest settings scope, the
        # one setting takod supplies (resolve/gemini.py), unless the environment asks for a Google login
        # or Vertex, which takod leaves alone.
        if _gemini_answers(setup, srv, {}):
            return True, "gemini answered as it is set up"
        pool = setup.pool()
        if not pool.get("GEMINI_API_KEY") or any(pool.get(v) == "true" for v in GEMINI_FORCING):
            return False, "gemini did not answer, and takod may not select the key"
        selected = setup.home.parent / "gemini-system-settings.json"
        _write(selected, {"security": {"auth": {"selectedType": "gemini-api-key"}}})
        return _gemini_answers(setup, srv, {"GEMINI_CLI_SYSTEM_SETTINGS_PATH": str(selected)}), "with gemini-api-key selected"
    if config.cli == "codex":
        srv.arm(setup.secret, config)
        if setup.wire is None:
            srv.openai.api_key = None  # nothing to check a key against
        proc = subprocess.run([str(TOOLS_BIN / "codex"), *CODEX_ARGS], input=b"Say hi.", env=setup.pool(),
                              cwd=setup.workspace, capture_output=True, timeout=RUN_TIMEOUT)
        return proc.returncode == 0 and _reached(srv, config, setup.wire), proc.stdout.decode(errors="replace")[-200:]
    agent = (setup.workspace / ".tako" / "pi" / "agent") if config.tako else (setup.home / ".pi" / "agent")
    env = {**setup.pool(), "PI_CODING_AGENT_DIR": str(agent), "CI": "1"}
    srv.arm(setup.secret, config)
    proc = subprocess.run([str(TOOLS_BIN / "pi"), *PI_ARGS], input=b"Say hi.", env=env, cwd=setup.workspace,
                          capture_output=True, timeout=RUN_TIMEOUT)
    answered = b'"stopReason":"stop"' in proc.stdout
    return answered and _reached(srv, config, setup.secret), proc.stderr.decode(errors="replace")[-200:]


def _provider(status: dict[str, Any], name: str) -> dict[str, Any]:
    return {p["name"]: p for p in status["providers"]}[name]


def check(config: Config, root: Path, srv: Servers) -> Outcome:
    """Run one configuration end to end."""
    setup = build(config, root, srv)
    daemon = DaemonProcess(setup.home, setup.env).start()
    try:
        with daemon.client() as c:
            for name, value in setup.stored.items():
                c.call("keys.set", {"name": name, "value": value})
            if setup.stored:
                wait_for(lambda: set(setup.stored) <= {k["name"] for k in c.call("keys.list")["keys"]}, timeout=30)
            if config.provider == "ollama":  # the first probe, then the verdict
                wait_for(lambda: _provider(c.call("status"), "ollama")["level"] != "unknown", timeout=30)
            full = c.call("status")
        status = _provider(full, config.provider)
        seen = [json.dumps(full)]
        works, why = truth(config, setup, srv)
        reached: bool | None = None
        if status["ready"]:
            srv.arm(setup.secret, config)
            srv.ollama.requests.clear()
            if config.cli == "codex" and setup.wire is None:
                srv.openai.api_key = None
            run = subprocess.run(
                [sys.executable, "-m", "takod", "run", "--provider", config.provider, "--json",
                 *(("--model", GEMINI_MODEL) if config.cli == "gemini" else ()), "Say hi."],
                env=setup.env, cwd=setup.workspace, capture_output=True, timeout=RUN_TIMEOUT,
            )
            # Bedrock and Vertex requests reach the server, which cannot answer them: the credential is the test.
            answered = run.returncode == 0 or config.store in CLOUDS
            reached = answered and _reached(srv, config, setup.wire if config.cli != "pi" else setup.secret)
            if config.cli == "ollama":  # and status named the model the run used
                reached = reached and status["detail"].get("model") == setup.wire
            seen += [run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")]
            if not reached:
                why = (f"run exit {run.returncode}: {run.stderr.decode(errors='replace')[-300:]} "
                       f"{run.stdout.decode(errors='replace')[-300:]}")
        seen.append(daemon.log_text())
        leaked = any(setup.secret in text for text in seen)
        return Outcome(config, status["ready"], status["reason"], works, reached, why, leaked)
    finally:
        daemon.stop()


def describe(outcome: Outcome) -> str:
    verdict = "ok  " if outcome.ok else "FAIL"
    return (f"{verdict} {outcome.config.name}: status {'ready' if outcome.ready else outcome.reason}, "
            f"works {outcome.works}, run {outcome.run_reached}" + (", SECRET LEAKED" if outcome.leaked else "")
            + ("" if outcome.ok else f" ({outcome.detail})"))

