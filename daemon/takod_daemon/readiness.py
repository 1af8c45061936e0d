"""Readiness rules: from what is known about this machine to "who can answer now, and why not".

Pure functions only: the state manager gathers the facts (binaries, credential
summaries, the Ollama probe, settings) and these rules turn them into one
:class:`~takod.schema.ProviderStatus` per provider plus the selected provider.
Never a billed model call: readiness is decided from local facts.

Levels, in order: ``not-installed`` < ``installed`` < ``credentials`` <
``reachable`` (Ollama) < ``ready``. ``reason`` says what stops the next level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from takod.schema import API_PROVIDERS, PROVIDERS, ProviderStatus

from .credentials.summary import CredentialSummary
from .providers.detect import BinaryInfo
from .providers.ollama_probe import OllamaProbe
from .trust import REASON as UNTRUSTED, WorkspaceTrust
from .resolve.api import ApiPlan
from .resolve.claude import ClaudePlan
from .resolve.codex import CodexPlan
from .resolve.gemini import GeminiPlan
from .resolve.pi import PiCredential, PiPlan

HINTS = {
    "not-installed": {
        "pi": "run `takod doctor --fix` to install the workspace pi runtime, or `npm i -g @mariozechner/pi-coding-agent`",
        "codex": "install Codex: `npm i -g @openai/codex`",
        "claude": "install Claude Code: `npm i -g @anthropic-ai/claude-code`",
        "gemini": "install Gemini CLI: `npm i -g @google/gemini-cli`",
        "ollama": "install Ollama (https://ollama.com) and run `ollama serve`, or point `takod ollama host URL` at one",
    },
    "no-credentials": {
        "pi": "`takod login PROVIDER` or `takod key set ANTHROPIC_API_KEY` (any key pi knows)",
        "codex": "run `codex login`, or `takod key set OPENAI_API_KEY`",
        "claude": "run `claude` and `/login`, or `takod key set ANTHROPIC_API_KEY`",
        "gemini": "run `gemini` and sign in, or `takod key set GEMINI_API_KEY`",
        **{name: f"`takod key set {var}`" for name, var in (
            ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY"), ("openrouter", "OPENROUTER_API_KEY"),
            ("groq", "GROQ_API_KEY"), ("xai", "XAI_API_KEY"), ("mistral", "MISTRAL_API_KEY"),
            ("deepseek", "DEEPSEEK_API_KEY"), ("cerebras", "CEREBRAS_API_KEY"))},
    },
    "needs-login": {
        "pi": "the login expired and cannot be refreshed: `takod login PROVIDER`",
        "codex": "the login expired and cannot be refreshed: run `codex login`",
        "claude": "the login expired: run `claude` and `/login`",
        "gemini": "the login expired: run `gemini` and sign in again",
    },
    "node-too-old": "pi needs a newer Node: `takod doctor --fix` installs a workspace runtime",
    "node-missing": "pi needs Node.js: install Node >= 20.6 or run `takod doctor --fix`",
    "version-failed": "the CLI is installed but `--version` failed; reinstall it",
    "credentials-unreadable": "a credential file could not be read; see detail.problems (takod never rewrites it)",
    "unreachable": "start Ollama (`ollama serve`) or set the host with `takod ollama host URL`",
    "bad-response": "something answers at the Ollama address but it is not Ollama; check `takod ollama host`",
    "no-models": "pull a model: `ollama pull llama3.2`",
    "model-not-pulled": "pull it (`ollama pull {model}`) or choose another with `takod ollama model NAME`",
    "embedding-model": "that model only embeds, it cannot chat: choose a chat model with `takod ollama model NAME`",
    "no-chat-model": "only embedding models are pulled: pull a chat model, e.g. `ollama pull llama3.2`",
    "not-probed": "takod has not checked this yet; `takod probe` checks now",
    "cooling-down": "it failed just now (detail.cooldown says why and until when); takod tries it again then, or as "
    "soon as its credentials change; `takod run --provider NAME` tries it now",
    "keyring-locked": "the key is in the OS keyring, which is locked: unlock it (log in to the desktop session, "
    "or `gnome-keyring-daemon --unlock`), then `takod probe`",
    "keyring-timeout": "the key is in the OS keyring, which does not answer (a locked keyring waiting on an "
    "unlock prompt does this): unlock it, then `takod probe`",
}
READY_DESPITE_PROBLEM_HINT = ("ready through another credential, but a credential file could not be read "
                              "(detail.problems; takod never rewrites it): fix it or move it aside; `takod doctor` says more")
OLLAMA_MISSING_HINT = ("no Ollama answers and none is installed here: install it (https://ollama.com/download), "
                       "then `ollama serve`; or point `takod ollama host URL` at a running one")
# Any other key store reason (keystore.StoreStatus.reason) for a key that cannot be read now.
KEYRING_UNAVAILABLE_HINT = "the key is in the OS keyring, which cannot be used now: `takod auth` says why; then `takod probe`"


LEVEL_RANK = {"not-installed": 0, "installed": 1, "credentials": 2, "reachable": 3, "ready": 4}


@dataclass(frozen=True)
class Facts:
    """Everything readiness depends on, gathered by the state manager."""

    now: float
    binaries: dict[str, BinaryInfo] = field(default_factory=dict)
    credentials: dict[str, list[CredentialSummary]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)  # unreadable files, per provider
    ollama: OllamaProbe | None = None
    ollama_binary: str | None = None
    preferred: str = "auto"
    warnings: dict[str, list[str]] = field(default_factory=dict)
    # Stored keys a provider could use that sit in a keyring that cannot be read
    # now, and the key store's reason code for that (keyring-locked, ...).
    unavailable_keys: dict[str, list[str]] = field(default_factory=dict)
    key_store_reason: str | None = None
    # Set when the workspace is not the user's own: nothing may run for it.
    untrusted: WorkspaceTrust | None = None
    # What a pi run and each direct API backend will use (resolve/): readiness reports it.
    pi_plan: PiPlan | None = None
    api_plans: dict[str, ApiPlan] = field(default_factory=dict)
    gemini_plan: GeminiPlan | None = None
    claude_plan: ClaudePlan | None = None
    codex_plan: CodexPlan | None = None
    # Providers sitting out a failure: name -> (until, what failed).
    cooling: dict[str, tuple[float, str]] = field(default_factory=dict)


def _hint(reason: str, provider: str) -> str | None:
    hint = HINTS.get(reason)
    if isinstance(hint, dict):
        return hint.get(provider)
    return hint


def _status(name: str, level: str, reason: str | None, detail: dict[str, object]) -> ProviderStatus:
    return ProviderStatus(
        name=name,
        ready=reason is None,
        level=level,
        reason=reason,
        hint=_hint(reason, name) if reason else None,
        detail=detail,
    )


def _binary_detail(info: BinaryInfo | None) -> dict[str, object]:
    if info is None or info.path is None:
        return {}
    detail: dict[str, object] = {"path": info.path, "version": info.version, "source": info.source}
    if info.node_path:
        detail.update(node=info.node_path, node_version=info.node_version)
    return detail


def _credential_detail(cred: CredentialSummary) -> dict[str, object]:
    out: dict[str, object] = {"provider": cred.provider, "source": cred.source, "kind": cred.kind, "masked": cred.masked}
    if cred.expires_at is not None:
        out["expires_at"] = cred.expires_at
    if cred.account:
        out["account"] = cred.account
    if cred.unverified:
        out["unverified"] = True
    if cred.note:
        out["note"] = cred.note
    return out


def _binary_verdict(name: str, facts: Facts, detail: dict[str, object]) -> ProviderStatus | None:
    """The status of a CLI that cannot run at all (missing, bad Node, broken), else None."""
    info = facts.binaries.get(name)
    detail.update(_binary_detail(info))
    if facts.warnings.get(name):
        detail["warnings"] = list(facts.warnings[name])
    if facts.problems.get(name):
        detail["problems"] = list(facts.problems[name])
    if info is None:
        return _status(name, "unknown", "not-probed", detail)
    if info.problem == "not-installed" or info.path is None:
        return _status(name, "not-installed", "not-installed", detail)
    if info.problem == "node-incompatible":
        return _status(name, "installed", "node-too-old", detail)
    if info.problem in ("node-missing", "version-failed"):
        return _status(name, "installed", info.problem, detail)
    return None


def _locked(name: str, level: str, facts: Facts, detail: dict[str, object]) -> ProviderStatus | None:
    """Not ready because the keys it could use sit in a keyring that cannot be read now."""
    locked = facts.unavailable_keys.get(name)
    if not locked:
        return None
    detail["unavailable_keys"] = list(locked)
    status = _status(name, level, facts.key_store_reason or "keyring-error", detail)
    if status.hint is None:
        status.hint = KEYRING_UNAVAILABLE_HINT
    return status


def cli_provider(name: str, facts: Facts) -> ProviderStatus:
    """codex, claude, gemini: a CLI plus credentials it can use (pi: :func:`pi_provider`).
    gemini's and claude's are those its run can use, codex's model the one its run names (``resolve/``)."""
    detail: dict[str, object] = {}
    verdict = _binary_verdict(name, facts, detail)
    if verdict is not None:
        return verdict
    if name == "codex" and facts.codex_plan is not None and facts.codex_plan.model:
        detail["model"] = facts.codex_plan.model  # the one a prompt naming none runs (resolve.codex)
    custom = facts.codex_plan.custom if name == "codex" and facts.codex_plan is not None else None
    if custom is not None:  # its credentials are those of run_credentials (state.facts)
        detail["model_provider"] = custom.id

    creds = facts.credentials.get(name, [])
    if name == "gemini" and facts.gemini_plan is not None:
        creds = list(facts.gemini_plan.credentials)  # those a run can use (resolve.gemini)
    if name == "claude" and facts.claude_plan is not None:
        creds = list(facts.claude_plan.credentials)  # those a run can use (resolve.claude)
        if facts.claude_plan.backend != "anthropic":
            detail["backend"] = facts.claude_plan.backend
    usable = [c for c in creds if not c.needs_login(facts.now)]
    if not usable:
        locked = _locked(name, "installed", facts, detail)
        if locked is not None:  # unlocking the keyring is the nearest fix
            return locked
        if creds:
            detail["credential"] = _credential_detail(creds[0])
            return _status(name, "installed", "needs-login", detail)
        if facts.problems.get(name):
            return _status(name, "installed", "credentials-unreadable", detail)
        status = _status(name, "installed", "no-credentials", detail)
        if custom is not None and custom.env_key:
            status.hint = (f"codex talks to [model_providers.{custom.id}] ({custom.source}), which takes its key from "
                           f"{custom.env_key}: set it in takod's environment (`takod key set {custom.env_key}` if "
                           "`takod key names` lists it), then `takod probe`")
        return status
    best = usable[0]
    detail["credential"] = _credential_detail(best)
    if best.unverified:
        detail["unverified"] = True
    status = _status(name, "ready", None, detail)
    if facts.problems.get(name):  # ready through another credential; the broken file still needs a fix
        status.hint = READY_DESPITE_PROBLEM_HINT
    return status


def _pi_credential_detail(cred: PiCredential) -> dict[str, object]:
    # ``kind`` keeps the api_key/oauth split every provider uses; ``form`` says how pi reads it.
    kind = "oauth" if cred.kind == "oauth" else "api_key"
    out: dict[str, object] = {"provider": cred.provider, "source": cred.source, "kind": kind, "masked": cred.masked,
                              "form": cred.kind}
    for key in ("expires_at", "account", "note", "problem"):
        value = getattr(cred, key)
        if value is not None:
            out[key] = value
    if cred.unverified:
        out["unverified"] = True
    if cred.needs:
        out["variables"] = list(cred.needs)
    return out


def pi_provider(facts: Facts) -> ProviderStatus:
    """pi: its CLI and Node, and the credential the run will use (``resolve.pi``)."""
    detail: dict[str, object] = {}
    verdict = _binary_verdict("pi", facts, detail)
    plan = facts.pi_plan
    if plan is not None:
        # Which files the run will use, whatever the verdict.
        detail.update(agent_dir=str(plan.agent_dir), auth_file=str(plan.auth_file))
        if plan.available:
            detail["pi_providers"] = list(plan.available)
        if plan.note:
            detail["note"] = plan.note
        if plan.problems:  # the agent directory's own (the home ones are in facts.problems too)
            detail["problems"] = list(dict.fromkeys([*detail.get("problems", []), *plan.problems]))  # type: ignore[misc]
    if verdict is not None:
        return verdict
    if plan is None:
        return _status("pi", "unknown", "not-probed", detail)
    cred = plan.credential
    if cred is not None:
        detail["credential"] = _pi_credential_detail(cred)
        if cred.usable:
            if cred.unverified:
                detail["unverified"] = True
            status = _status("pi", "ready", None, detail)
            if detail.get("problems"):  # ready through another credential; the broken file still needs a fix
                status.hint = READY_DESPITE_PROBLEM_HINT
            return status
        if cred.kind == "oauth":
            return _status("pi", "installed", "needs-login", detail)
    locked = _locked("pi", "installed", facts, detail)
    if locked is not None:
        return locked
    if plan.problems and cred is None:
        return _status("pi", "installed", "credentials-unreadable", detail)
    return _status("pi", "installed", "no-credentials", detail)


def api_provider(name: str, facts: Facts) -> ProviderStatus:
    """A direct API backend: built in, ready when its key is there (``resolve.api``)."""
    plan = facts.api_plans.get(name)
    if plan is None:
        return _status(name, "unknown", "not-probed", {})
    detail: dict[str, object] = {"url": plan.base_url, "key": plan.key_var, "model": plan.model}
    if plan.model is None:
        detail["warnings"] = ["no default model: give one with --model"]
    if plan.source is None:
        return _locked(name, "installed", facts, detail) or _status(name, "installed", "no-credentials", detail)
    detail["credential"] = {"provider": name, "source": plan.source, "kind": "api_key", "masked": plan.masked}
    return _status(name, "ready", None, detail)


def ollama_provider(facts: Facts) -> ProviderStatus:
    probe = facts.ollama
    detail: dict[str, object] = {}
    if facts.ollama_binary:
        detail["path"] = facts.ollama_binary
    if probe is None:
        return _status("ollama", "unknown", "not-probed", detail)
    detail.update(url=probe.url, host_source=probe.host_source)
    if probe.version:
        detail["version"] = probe.version
    if not probe.reachable or probe.problem == "bad-response":
        # bad-response: something answered, but not Ollama; it is no step towards ready.
        level = "installed" if facts.ollama_binary else "not-installed"
        reason = probe.problem or "unreachable"
        if probe.detail:
            detail["error"] = probe.detail
        status = _status("ollama", level, reason, detail)
        if reason == "unreachable" and not facts.ollama_binary:  # nothing here to start
            status.hint = OLLAMA_MISSING_HINT
        return status
    detail["models"] = [m.name for m in probe.models]
    if probe.model is None:
        # Nothing named and nothing listed (the probe calls that model-not-pulled too),
        # or nothing listed that can chat.
        if probe.detail:
            detail["error"] = probe.detail
        return _status("ollama", "reachable", "no-chat-model" if probe.problem == "no-chat-model" else "no-models", detail)
    detail.update(model=probe.model, model_source=probe.model_source)
    if probe.model_why:
        detail["model_why"] = probe.model_why
    if probe.problem in ("model-not-pulled", "embedding-model"):
        if probe.detail:
            detail["error"] = probe.detail
        status = _status("ollama", "reachable", probe.problem, detail)
        if probe.problem == "model-not-pulled":
            status.hint = HINTS["model-not-pulled"].format(model=probe.model)  # type: ignore[union-attr]
        return status
    return _status("ollama", "ready", None, detail)


def cooling_down(status: ProviderStatus, until: float, after: str) -> ProviderStatus:
    """A ready provider that sits out a failure: not ready until ``until``; one level short of it."""
    detail = dict(status.detail, cooldown={"until": until, "after": after})
    level = "reachable" if status.name == "ollama" else "credentials"
    return _status(status.name, level, "cooling-down", detail)


def evaluate(facts: Facts) -> tuple[list[ProviderStatus], str | None]:
    """Every provider's status in priority order, and the one a prompt would go to."""
    statuses = [
        ollama_provider(facts) if name == "ollama" else pi_provider(facts) if name == "pi" else cli_provider(name, facts)
        for name in PROVIDERS
    ]
    statuses += [api_provider(name, facts) for name in API_PROVIDERS]
    statuses = [
        cooling_down(s, *facts.cooling[s.name]) if s.ready and s.name in facts.cooling else s for s in statuses
    ]
    if facts.untrusted is not None:
        return [untrusted(s, facts.untrusted) for s in statuses], None
    return statuses, select(statuses, facts.preferred)


def untrusted(status: ProviderStatus, trust: WorkspaceTrust) -> ProviderStatus:
    """``status`` in a workspace that is not the user's own: nothing runs there
    (a CLI would run in it, pi would take its runtime and its ``!command`` keys,
    Ollama its host), so no provider is ready. What was found is still reported."""
    level = "installed" if LEVEL_RANK.get(status.level, 0) > LEVEL_RANK["installed"] else status.level
    detail = {**status.detail, "untrusted": trust.detail}
    return ProviderStatus(name=status.name, ready=False, level=level, reason=UNTRUSTED, hint=trust.hint, detail=detail)


def select(statuses: list[ProviderStatus], preferred: str) -> str | None:
    """The preferred provider when it is ready, otherwise the first ready one in priority order."""
    ready = [s.name for s in statuses if s.ready]
    if preferred in ready:
        return preferred
    return ready[0] if ready else None
