"""The readiness differential: does ``status`` say ready exactly when a prompt would run?

A generated matrix of credential configurations (store x format x provider x
Tako/plain workspace x pi installed or not). For each, a fresh daemon in a temp
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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.model_servers import FakeAnthropic, FakeModelServer, FakeOpenAI
from tests.harness import TOOLS_BIN, DaemonProcess, clean_env, wait_for

DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
PI_ARGS = ("--print", "--mode", "json", "--no-session", "--no-tools", "--no-extensions", "--no-skills")
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
    target: str  # pi:openai | pi:anthropic | pi:fake | api:openai | api:anthropic
    store: str  # ws-auth | home-auth | home-auth+ws-empty | models-json | daemon-env | keystore | settings
    form: str  # literal | env-name | env-name-stored | env-name-unset | command | pi-name | alias
    tako: bool  # a Tako workspace (tako.toml) or a plain directory
    installed: bool  # pi on the daemon's PATH

    @property
    def name(self) -> str:
        return f"{self.target}/{self.store}/{self.form}/{'tako' if self.tako else 'plain'}/" + (
            "installed" if self.installed else "no-pi"
        )

    @property
    def provider(self) -> str:
        return self.target.split(":")[0] if self.target.startswith("pi:") else self.target.split(":")[1]

    @property
    def pi_provider(self) -> str:
        return self.target.split(":")[1]


FILE_FORMS = ("literal", "env-name", "env-name-stored", "env-name-unset", "command")
ENV_FORMS = ("pi-name", "alias")


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
    ]


@dataclass
class Servers:
    openai: FakeOpenAI
    anthropic: FakeAnthropic

    def of(self, config: Config) -> FakeModelServer:
        return self.anthropic if "anthropic" in config.target else self.openai

    def arm(self, secret: str) -> None:
        for server in (self.openai, self.anthropic):
            server.api_key = secret
            server.requests.clear()


@contextmanager
def servers() -> Iterator[Servers]:
    with FakeOpenAI() as openai, FakeAnthropic() as anthropic:
        yield Servers(openai, anthropic)


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

    def pool(self) -> dict[str, str]:
        """Every key takod holds, as pi would get them in its environment."""
        return {**self.env, **self.settings_keys, **self.stored}


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
    if config.installed:
        (bin_dir / "pi").symlink_to(TOOLS_BIN / "pi")
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

    env = clean_env(
        home,
        TAKO_WORKSPACE=str(workspace),
        PATH=f"{bin_dir}:/usr/bin:/bin",
        OLLAMA_HOST="127.0.0.1:9",
        PI_OFFLINE="1",
        OPENAI_BASE_URL=srv.openai.base_url,
        ANTHROPIC_BASE_URL=srv.anthropic.url,
        NO_PROXY=LOOPBACK, no_proxy=LOOPBACK,
        HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY,
        **daemon_env,
    )
    return Setup(home, workspace, env, stored, settings_keys, secret)


def _reached(srv: Servers, config: Config, secret: str) -> bool:
    server = srv.of(config)
    return any(server.sent_key(r) == secret for r in server.requests)


def truth(config: Config, setup: Setup, srv: Servers) -> tuple[bool, str]:
    """Whether a prompt really runs with this configuration, measured with the real tool."""
    if not config.target.startswith("pi:"):  # takod's own HTTP backend: it has its key variable or not
        return bool(setup.pool().get(PI_VARS[config.provider])), "takod's HTTP backend"
    if not config.installed:
        return False, "pi is not installed"
    agent = (setup.workspace / ".tako" / "pi" / "agent") if config.tako else (setup.home / ".pi" / "agent")
    env = {**setup.pool(), "PI_CODING_AGENT_DIR": str(agent), "CI": "1"}
    srv.arm(setup.secret)
    proc = subprocess.run([str(TOOLS_BIN / "pi"), *PI_ARGS], input=b"Say hi.", env=env, cwd=setup.workspace,
                          capture_output=True, timeout=RUN_TIMEOUT)
    answered = b'"stopReason":"stop"' in proc.stdout
    return answered and _reached(srv, config, setup.secret), proc.stderr.decode(errors="replace")[-200:]


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
            full = c.call("status")
        status = {p["name"]: p for p in full["providers"]}[config.provider]
        seen = [json.dumps(full)]
        works, why = truth(config, setup, srv)
        reached: bool | None = None
        if status["ready"]:
            srv.arm(setup.secret)
            run = subprocess.run(
                [sys.executable, "-m", "takod", "run", "--provider", config.provider, "--json", "Say hi."],
                env=setup.env, cwd=setup.workspace, capture_output=True, timeout=RUN_TIMEOUT,
            )
            reached = run.returncode == 0 and _reached(srv, config, setup.secret)
            seen += [run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")]
            if not reached:
                why = f"run exit {run.returncode}: {run.stderr.decode(errors='replace')[-300:]}"
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

