"""``doctor``: what is wrong with this machine's inference setup, and how to fix it.

Pure functions only: :mod:`takod_daemon.methods.doctor` gathers a
:class:`DoctorFacts` (files, the daemon's warm readiness, the key store, the
error log) and :func:`run_checks` turns it into one
:class:`~takod.schema.DoctorCheck` per concern. Provider readiness is the
daemon's own (:mod:`takod_daemon.readiness`), reported, not re-decided.
Nothing here sees a secret: facts hold names, masked values and times only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import msgspec

from takod.doctor_local import LocalFacts, PathFacts, local_checks
from takod.schema import API_PROVIDERS, DoctorCheck, GrantInfo, ProviderStatus

from .keystore import StoreStatus
from .providers.detect import satisfies

CLOCK_TOLERANCE_S = 300.0  # a token issued this far "in the future" means our clock is behind
ERROR_WINDOW_S = 7 * 86400  # error-log records older than this are history
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# Text of a failed prompt that means "log in again" (Takobot's §9.6 signals, widened).
_REAUTH_RE = re.compile(
    r"invalid_grant|refresh[ _]token|unauthori[sz]ed|\b401\b|not logged in|log ?in again|login required|"
    r"token (?:has )?expired|authentication",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TokenTime:
    """When a token says it was issued (JWT ``iat``) or last refreshed."""

    source: str  # "path" or "path#provider"
    issued_at: float | None = None
    refreshed_at: float | None = None


@dataclass(frozen=True)
class ErrorRecord:
    """One line of ``<ws>/.tako/logs/error.log`` (already masked when written)."""

    ts: float
    provider: str
    kind: str
    error: str


# Takobot's error.log record (takobot 0.1.88 `_append_inference_error_log`): a header
# line, `command:` (holds the prompt's head: never shown), `detail:`, optional
# `timeout_s:`, `stdout_tail:` / `stderr_tail:` followed by the output, a blank line.
TAKOBOT_HEADER_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?) provider=(?P<provider>\S+) phase=\S+\s*$"
)
_TAKOBOT_ERROR_CHARS = 2000  # of its detail and output tails: enough for any signal


def takobot_error_record(lines: list[str]) -> ErrorRecord | None:
    """One of Takobot's plain-text error.log records as an :class:`ErrorRecord`
    (not masked yet); None when ``lines`` do not start with its header."""
    head = TAKOBOT_HEADER_RE.match(lines[0]) if lines else None
    if head is None:
        return None
    try:
        ts = datetime.fromisoformat(head["ts"].replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    detail, output, in_output = "", [], False
    for line in lines[1:]:
        if line.startswith("detail: ") and not in_output:
            detail = line[len("detail: "):]
        elif line in ("stdout_tail:", "stderr_tail:"):
            in_output = True
        elif in_output:
            output.append(line)
    text = " ".join(" ".join([detail, *output]).split())[:_TAKOBOT_ERROR_CHARS]
    kind = "auth" if _REAUTH_RE.search(text) else "failed"
    return ErrorRecord(ts.timestamp(), head["provider"], kind, text)


@dataclass(frozen=True)
class DoctorFacts:
    """Everything the checks read, gathered by the doctor method."""

    now: float
    local: LocalFacts
    workspace: str
    tako_workspace: bool
    providers: list[ProviderStatus]
    selected: str | None
    key_store: StoreStatus | None  # None: still probing the keyring
    node_path: str | None = None
    node_version: str | None = None
    node_range: str = ">=20.6.0"  # what the installed pi (or the pinned one) asks for
    npm_path: str | None = None
    # What --fix would install as a workspace Node (node_runtime), or why it cannot.
    node_installable: str | None = None
    node_unavailable: str | None = None
    pi_runtime_path: str = ""
    pi_runtime_version: str | None = None  # None: not installed
    pi_on_path: str | None = None
    pi_package: str = ""  # what --fix installs
    ws_auth: PathFacts | None = None
    ws_auth_problem: str | None = None
    ws_auth_entries: int = 0
    home_auth: str | None = None  # a home pi auth file a seed would copy
    codex_store: str | None = None  # cli_auth_credentials_store; None: not readable
    codex_problem: str | None = None
    codex_auth_exists: bool = False
    codex_installed: bool = False
    # key name -> where it is set: daemon-env, client-env, keyring, file, settings
    key_sources: dict[str, list[str]] = field(default_factory=dict)
    proxies: dict[str, str] = field(default_factory=dict)  # the daemon's, userinfo masked
    client_proxy_names: list[str] = field(default_factory=list)
    tokens: list[TokenTime] = field(default_factory=list)
    grants: list[GrantInfo] = field(default_factory=list)  # the refresh broker's OAuth logins
    errors: list[ErrorRecord] = field(default_factory=list)
    error_log: str = ""
    error_log_problem: str | None = None
    # Why the workspace is not the user's own, and the next step (trust.py); None when it is.
    untrusted: str | None = None
    untrusted_hint: str | None = None
    settings_path: str = ""
    settings_problem: str | None = None  # the workspace settings file cannot be parsed


def _check(check_id: str, verdict: str, summary: str, **kw: object) -> DoctorCheck:
    return DoctorCheck(id=check_id, verdict=verdict, summary=summary, **kw)  # type: ignore[arg-type]


def _ago(now: float, ts: float) -> str:
    minutes = max(0, int(now - ts) // 60)
    return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"


def check_keyring(store: StoreStatus | None) -> DoctorCheck:
    if store is None:
        return _check("keyring", "warn", "the key store is still probing the OS keyring",
                      fix="wait a few seconds; a keyring that hangs is reported as keyring-timeout")
    if store.secure:
        return _check("keyring", "ok", f"API keys are in the OS keyring ({store.keyring})")
    return _check("keyring", "warn", f"insecure storage: API keys are in a plain 0600 file ({store.reason})",
                  detail=store.detail, fix=store.hint)


# Reasons --fix can act on: the workspace pi runtime, or a re-probe.
_RUNTIME_REASONS = ("not-installed", "node-too-old", "node-missing")


def check_provider(status: ProviderStatus, tako_workspace: bool) -> DoctorCheck:
    cid = f"provider:{status.name}"
    if status.ready:
        warnings = [str(w) for w in status.detail.get("warnings", []) or []]  # type: ignore[union-attr]
        return _check(cid, "ok", f"{status.name} is ready", detail="; ".join(warnings) or None)
    reason = status.reason or "unknown"
    fixable = reason == "not-probed" or (status.name == "pi" and tako_workspace and reason in _RUNTIME_REASONS)
    if reason == "not-installed" and not fixable:
        return _check(cid, "ok", f"{status.name} is not installed (optional)", fix=status.hint)
    if status.name in API_PROVIDERS and reason == "no-credentials":
        return _check(cid, "ok", f"{status.name} API has no key (optional)", fix=status.hint)
    return _check(cid, "warn", f"{status.name} is not ready: {reason}", fix=status.hint, fixable=fixable,
                  detail=", ".join(str(p) for p in status.detail.get("problems", []) or []) or None)  # type: ignore[union-attr]


def check_providers(providers: list[ProviderStatus], selected: str | None) -> DoctorCheck:
    ready = [p.name for p in providers if p.ready]
    if not ready:
        return _check("providers", "fail", "no provider is ready: no prompt can run",
                      fix="see the provider lines above; each says what it needs")
    return _check("providers", "ok", f"{len(ready)} ready ({', '.join(ready)}); prompts go to {selected}")


def _node_fix(f: DoctorFacts, otherwise: str) -> dict[str, object]:
    """The fix for a missing or too old Node: --fix installs a workspace one where it can."""
    if f.node_installable:
        return {"fix": f"`takod doctor --fix` installs {f.node_installable} into this workspace "
                       "(.tako/nvm, from the npm registry, sha512 verified), then the workspace pi", "fixable": True}
    return {"fix": f.node_unavailable or otherwise}


def check_node(f: DoctorFacts) -> DoctorCheck:
    if f.node_path is None:
        return _check("node", "warn", f"no Node.js found; pi needs Node {f.node_range}",
                      **_node_fix(f, "install Node.js (with npm) from your package manager or nodejs.org"))
    if f.node_version is None:
        return _check("node", "warn", f"{f.node_path} --version failed", fix="reinstall Node.js")
    try:
        good = satisfies(f.node_version, f.node_range)
    except ValueError:
        good = True  # a range we cannot read is pi's business; detection reports it
    if not good:
        return _check("node", "warn", f"Node {f.node_version} ({f.node_path}) is too old; pi needs {f.node_range}",
                      **_node_fix(f, "install a newer Node.js"))
    npm = f"npm {f.npm_path}" if f.npm_path else "no npm (the workspace pi runtime cannot be installed)"
    if f.npm_path is None and f.node_installable:
        return _check("node", "warn", f"Node {f.node_version} ({f.node_path}) has no npm to install pi with",
                      **_node_fix(f, ""))
    return _check("node", "ok", f"Node {f.node_version} ({f.node_path}) satisfies pi's {f.node_range}", detail=npm)


def check_pi_runtime(f: DoctorFacts) -> DoctorCheck:
    if not f.tako_workspace:
        return _check("pi-runtime", "ok", f"{f.workspace} is not a Tako workspace: pi comes from PATH")
    if f.pi_runtime_version is not None:
        return _check("pi-runtime", "ok", f"workspace pi runtime {f.pi_runtime_version} at {f.pi_runtime_path}")
    if f.pi_on_path:
        return _check("pi-runtime", "ok", f"no workspace pi runtime; pi from PATH is used ({f.pi_on_path})",
                      fix=f"`takod doctor --fix` would not replace it; install {f.pi_package} yourself to pin it")
    if f.npm_path is None and f.node_installable:
        return _check("pi-runtime", "warn", "no workspace pi runtime, and no npm to install one",
                      fix=f"`takod doctor --fix` installs {f.node_installable} first, then {f.pi_package}",
                      fixable=True)
    if f.npm_path is None:
        return _check("pi-runtime", "warn", "no workspace pi runtime, and no npm to install one",
                      fix=f.node_unavailable or "install Node.js with npm, then `takod doctor --fix`")
    return _check("pi-runtime", "warn", f"no workspace pi runtime at {f.pi_runtime_path}",
                  fix=f"`takod doctor --fix` installs {f.pi_package} there (npm, cache in .tako/npm-cache)",
                  fixable=True)


def check_pi_auth(f: DoctorFacts, uid: int) -> DoctorCheck:
    if not f.tako_workspace:
        return _check("pi-auth", "ok", "not a Tako workspace: pi uses its own ~/.pi/agent/auth.json")
    a = f.ws_auth
    path = a.path if a is not None else "auth.json"
    if a is None or not a.exists:
        source = f"a copy of {f.home_auth}" if f.home_auth else "an empty {} (mode 0600) for `takod login` to fill"
        return _check("pi-auth", "warn", f"workspace pi auth file {path} is missing",
                      fix=f"`takod doctor --fix` writes {source}", fixable=True)
    if a.kind != "file" or a.uid != uid:
        return _check("pi-auth", "fail", f"{path} is not a plain file of yours ({a.kind}, uid {a.uid})",
                      fix="move it aside and run `takod doctor --fix`")
    if f.ws_auth_problem:
        return _check("pi-auth", "fail", f"{path} cannot be used", detail=f.ws_auth_problem,
                      fix="takod never rewrites a file it cannot parse: repair it or move it aside, then `takod doctor --fix`")
    if a.mode & 0o077:
        return _check("pi-auth", "warn", f"{path} has mode {a.mode:04o}; it holds tokens and must be 0600",
                      fix=f"chmod 600 '{path}' (`takod doctor --fix` does it)", fixable=True)
    return _check("pi-auth", "ok", f"workspace pi auth file has {f.ws_auth_entries} entr{'y' if f.ws_auth_entries == 1 else 'ies'}")


def check_settings(f: DoctorFacts) -> DoctorCheck:
    if f.settings_problem:
        return _check("settings", "fail", f"the workspace settings file {f.settings_path} cannot be parsed; "
                      "takod keeps using the last good settings", detail=f.settings_problem,
                      fix="takod never rewrites a file it cannot parse: repair it or move it aside "
                      "(`takod settings` shows what is in use)")
    return _check("settings", "ok", "workspace settings are readable")


def check_codex_store(f: DoctorFacts) -> DoctorCheck:
    if f.codex_problem:
        return _check("codex-store", "warn", "Codex's config.toml cannot be read", detail=f.codex_problem,
                      fix="fix the file; until then takod treats Codex's login as read-only")
    store = f.codex_store or "file"
    hands_off = "takod can neither read nor refresh it; `codex login status` tells whether it works"
    to_file = 'to let takod keep it fresh, set cli_auth_credentials_store = "file" in config.toml and run `codex login`'
    if store == "file":
        state = "logged in" if f.codex_auth_exists else "no auth.json (not logged in)"
        if not (f.codex_installed or f.codex_auth_exists):
            return _check("codex-store", "ok", "Codex is not set up")
        return _check("codex-store", "ok", f"Codex keeps its login in auth.json (file store): {state}")
    if store == "auto" and f.codex_auth_exists:
        return _check("codex-store", "ok", "Codex store is auto and the login is in auth.json",
                      detail="a later Codex login may move it into the OS keyring, out of takod's reach")
    if store in ("auto", "keyring"):
        return _check("codex-store", "warn", f"Codex store is {store}: the login is in the OS keyring",
                      detail=hands_off, fix=to_file)
    if store == "ephemeral":
        return _check("codex-store", "warn", "Codex store is ephemeral: the login lives in one codex process only",
                      fix=to_file)
    return _check("codex-store", "warn", f"Codex store {store!r} is not one takod knows", fix=to_file)


def check_env_shadowing(f: DoctorFacts, providers: list[ProviderStatus]) -> DoctorCheck:
    """Names only: where each key is set, and which one wins (the engine's order:
    daemon env < settings < stored key < the client's own environment)."""
    found: list[str] = []
    fixes: list[str] = []
    for name, where in sorted(f.key_sources.items()):
        stored = next((w for w in where if w in ("keyring", "file")), None)
        if stored and "client-env" in where:
            found.append(f"{name} in your shell overrides the stored key ({stored}) for prompts from this shell")
            fixes.append(f"unset {name}, or `takod key clear {name}`")
        if stored and "daemon-env" in where:
            found.append(f"{name} in the daemon's environment is ignored: the stored key ({stored}) wins")
            fixes.append(f"remove {name} from the daemon's environment (service or launching shell)")
        if "settings" in where and len(where) > 1:
            others = ", ".join(w for w in where if w != "settings")
            found.append(f"{name} in the workspace settings (plaintext) is shadowed by {others}")
            fixes.append("`takod key migrate`")
    for status in providers:
        for warning in status.detail.get("warnings", []) or []:  # type: ignore[union-attr]
            if str(warning).startswith("env-shadowed"):
                found.append(str(warning).removeprefix("env-shadowed: "))
                fixes.append(f"unset it to use the {status.name} login")
    if not found:
        return _check("env-shadowing", "ok", "no environment variable shadows a stored credential")
    return _check("env-shadowing", "warn", f"{len(found)} credential(s) shadowed by another source",
                  detail="; ".join(found), fix="; ".join(dict.fromkeys(fixes)))


def mask_proxy(value: str) -> str:
    """A proxy URL with its userinfo masked (``http://***@proxy:3128``)."""
    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
    except ValueError:
        return "<unparseable>"
    if "@" not in parts.netloc:
        return value
    masked = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    text = urlunsplit(masked)
    return text if "://" in value else text.removeprefix("//")


def _covers_loopback(no_proxy: str) -> bool:
    entries = {e.strip().lower() for e in no_proxy.split(",")}
    return "*" in entries or any(name in entries for name in LOOPBACK_NAMES)


def check_proxies(f: DoctorFacts) -> DoctorCheck:
    daemon = {k.upper(): v for k, v in f.proxies.items()}
    client = {n.upper() for n in f.client_proxy_names}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(f.proxies.items()))
    problems: list[str] = []
    fixes: list[str] = []
    if client - set(daemon):
        problems.append(f"your shell sets {', '.join(sorted(client - set(daemon)))}, the daemon does not "
                        "(it was started elsewhere), so its requests bypass that proxy")
        fixes.append("set the same variables where the daemon starts, or `takod stop` and run takod from this shell")
    if any(k != "NO_PROXY" for k in daemon) and not _covers_loopback(daemon.get("NO_PROXY", "")):
        problems.append("NO_PROXY does not list 127.0.0.1/localhost: loopback requests (Ollama) go to the proxy")
        fixes.append("add 127.0.0.1,localhost,::1 to NO_PROXY in the daemon's environment")
    if problems:
        return _check("proxy", "warn", problems[0], detail="; ".join(problems[1:] + ([shown] if shown else [])) or None,
                      fix="; ".join(fixes))
    if not daemon:
        return _check("proxy", "ok", "no proxy variables")
    return _check("proxy", "ok", f"proxy settings: {shown}")


def check_clock(f: DoctorFacts) -> DoctorCheck:
    ahead = []
    for token in f.tokens:
        for what, ts in (("issued", token.issued_at), ("last refreshed", token.refreshed_at)):
            if ts is not None and ts - f.now > CLOCK_TOLERANCE_S:
                ahead.append((ts - f.now, f"{token.source} says it was {what} {int(ts - f.now)} s from now"))
    if not ahead:
        checked = f"{len(f.tokens)} token time(s)" if f.tokens else "no token times to compare"
        return _check("clock", "ok", f"the clock agrees with the tokens' issue times ({checked})")
    worst = max(ahead)[0]
    return _check("clock", "warn", f"this machine's clock looks about {int(worst // 60)} min behind",
                  detail="; ".join(text for _, text in ahead),
                  fix="enable time sync (`timedatectl set-ntp true`); a wrong clock makes tokens look expired or not yet valid")


def check_logins(grants: list[GrantInfo]) -> DoctorCheck:
    """The OAuth logins takod keeps fresh, as the refresh broker sees them; its
    guidance for a dead login already says how to log in again."""
    dead = [g for g in grants if g.state == "needs-login"]
    failing = [g for g in grants if g.state == "retrying"]
    if dead:
        return _check("logins", "warn", f"login needed: {', '.join(g.provider for g in dead)}",
                      detail="; ".join(f"{g.provider} ({', '.join(g.mirrors)}): {g.last_error}" for g in dead),
                      fix=" ".join(dict.fromkeys(g.guidance or f"`takod login {g.provider}`" for g in dead)))
    if failing:
        return _check("logins", "warn", f"refresh failing, retrying: {', '.join(g.provider for g in failing)}",
                      detail="; ".join(f"{g.provider}: {g.last_error}" for g in failing),
                      fix="check the network (and the proxy check); `takod auth refresh` retries now")
    if not grants:
        return _check("logins", "ok", "no OAuth logins for takod to keep fresh")
    return _check("logins", "ok", f"{len(grants)} OAuth login(s) kept fresh: {', '.join(g.provider for g in grants)}")


def reauth_hint(provider: str, error: str) -> str:
    """How to log in again after a failure of ``provider`` that reads like ``error``."""
    text = error.lower()
    if provider == "pi":
        for needle, name in (("codex", "codex"), ("openai", "codex"), ("anthropic", "anthropic"), ("copilot", "copilot")):
            if needle in text:
                return f"`takod login {name}`"
        return "`takod login PROVIDER` (codex, anthropic, copilot, or an API-key provider)"
    return {
        "codex": "`takod login codex` (or `codex login`)",
        "claude": "run `claude` and `/login`, or `takod login anthropic`",
        "gemini": "run `gemini` and sign in again, or `takod key set GEMINI_API_KEY`",
        "ollama": "check the Ollama host's credentials (`takod ollama host URL`)",
    }.get(provider, f"store a working key: `takod key set {provider.upper().replace('-', '_')}_API_KEY`")


def check_error_log(f: DoctorFacts) -> DoctorCheck:
    if f.error_log_problem:
        return _check("error-log", "warn", f"the error log cannot be read: {f.error_log_problem}")
    recent = [e for e in f.errors if f.now - e.ts <= ERROR_WINDOW_S]
    if not recent:
        return _check("error-log", "ok", "no failed prompts in the last 7 days")
    auth = [e for e in recent if e.kind == "auth" or _REAUTH_RE.search(e.error)]
    if not auth:
        last = recent[-1]
        return _check("error-log", "ok", f"{len(recent)} failed prompt(s) in 7 days, none about logins",
                      detail=f"last: {last.provider} {last.kind} {_ago(f.now, last.ts)} ({f.error_log})")
    latest: dict[str, ErrorRecord] = {}
    for e in auth:
        latest[e.provider] = e
    lines = [f"{p}: {e.kind} {_ago(f.now, e.ts)}: {e.error[:160]}" for p, e in latest.items()]
    fixes = [f"{p}: {reauth_hint(p, e.error)}" for p, e in latest.items()]
    return _check("error-log", "warn", f"recent login failures: {', '.join(latest)}",
                  detail="; ".join(lines) + f" ({f.error_log})", fix="; ".join(fixes))


# Checks whose repair writes into the workspace (or runs its npm): never in one that is not the user's own.
WORKSPACE_REPAIRS = ("node", "pi-runtime", "pi-auth", "provider:pi")


def check_workspace_trust(f: DoctorFacts) -> DoctorCheck:
    if f.untrusted is None:
        return _check("workspace-trust", "ok", f"{f.workspace} is yours")
    return _check("workspace-trust", "fail", f"{f.workspace} is not yours: takod only reads it",
                  detail=f.untrusted, fix=f.untrusted_hint)


def run_checks(f: DoctorFacts, *, daemon_up: bool = True) -> list[DoctorCheck]:
    """Every check, in report order."""
    checks = local_checks(f.local, daemon_up=daemon_up)
    checks.append(check_workspace_trust(f))
    checks.append(check_keyring(f.key_store))
    checks += [check_provider(p, f.tako_workspace) for p in f.providers]
    checks.append(check_providers(f.providers, f.selected))
    checks += [
        check_node(f),
        check_pi_runtime(f),
        check_pi_auth(f, f.local.uid),
        check_settings(f),
        check_codex_store(f),
        check_env_shadowing(f, f.providers),
        check_proxies(f),
        check_clock(f),
        check_logins(f.grants),
        check_error_log(f),
    ]
    if f.untrusted is not None:
        checks = [msgspec.structs.replace(c, fixable=False) if c.id in WORKSPACE_REPAIRS else c for c in checks]
    return checks
