"""What a pi run will use, decided the way pi 0.73.1 itself decides it.

Facts from the installed pi (``@mariozechner/pi-coding-agent`` 0.73.1 and its
``pi-ai``): ``model-registry.js`` (models.json), ``model-resolver.js``
(``findInitialModel``, ``defaultModelPerProvider``), ``auth-storage.js``
(``hasAuth``, ``getApiKey``), ``resolve-config-value.js`` and
``env-api-keys.js`` (``getEnvApiKey``).

- **Agent directory** (:func:`agent_dir_for`): a Tako workspace runs pi in
  ``<ws>/.tako/pi/agent`` (as Takobot does; takod seeds its ``auth.json`` from
  the home one while it holds no entry); anywhere else pi runs in the user's own
  ``$PI_CODING_AGENT_DIR`` or ``~/.pi/agent``. Everything pi reads from files
  (``auth.json``, ``models.json``, ``settings.json``) comes from that one directory.
- **Which provider answers** (:func:`resolve_pi`): pi's model choice without
  ``--model``: the ``settings.json`` default if pi knows that model, else the
  first provider in ``defaultModelPerProvider`` order that has auth, else the
  first ``models.json`` custom provider that has auth. A provider "has auth"
  (``hasAuth``) from an ``auth.json`` entry of any kind, the environment
  variables pi reads for it, ambient cloud credentials (Bedrock, Vertex), or a
  ``models.json`` ``apiKey``; only providers with models count.
- **Its credential** is what ``getApiKey`` would use, in pi's order: the
  ``auth.json`` entry (hiding everything else), the environment, ambient cloud
  credentials, then ``models.json``'s ``apiKey``. A key *value* is a
  ``!command``, the name of a set environment variable, or the key itself.
- **The child's environment** (:func:`child_env`): the pool's ordinary
  variables, and of the secret ones exactly those the chosen credential reads
  (a variable named as a key, the variables a ``!command`` mentions, the cloud's
  own variables). Removing other providers' keys never changes pi's choice: the
  chosen provider stays the first one with auth.

Pure functions, except :func:`read_agent` (blocking file reads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import msgspec

from ..credentials import pi_auth
from ..credentials.files import FileProblem, read_bytes, strip_bom
from ..credentials.pi_auth import ApiKeyEntry, OAuthEntry, PiAuthFile, UnknownEntry
from ..inference.child_env import is_secret_name
from ..links import is_tako_workspace
from ..redact import mask_secret

AGENT_DIR_ENV = "PI_CODING_AGENT_DIR"

# pi-ai 0.73.1 getApiKeyEnvVars: the variables pi reads per provider, first non-empty wins.
PI_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "github-copilot": ("COPILOT_GITHUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"),
    "anthropic": ("ANTHROPIC_OAUTH_TOKEN", "ANTHROPIC_API_KEY"),
    "openai": ("OPENAI_API_KEY",),
    "azure-openai-responses": ("AZURE_OPENAI_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "google": ("GEMINI_API_KEY",),
    "google-vertex": ("GOOGLE_CLOUD_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "vercel-ai-gateway": ("AI_GATEWAY_API_KEY",),
    "zai": ("ZAI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "minimax": ("MINIMAX_API_KEY",),
    "minimax-cn": ("MINIMAX_CN_API_KEY",),
    "moonshotai": ("MOONSHOT_API_KEY",),
    "moonshotai-cn": ("MOONSHOT_API_KEY",),
    "huggingface": ("HF_TOKEN",),
    "fireworks": ("FIREWORKS_API_KEY",),
    "opencode": ("OPENCODE_API_KEY",),
    "opencode-go": ("OPENCODE_API_KEY",),
    "kimi-coding": ("KIMI_API_KEY",),
    "cloudflare-workers-ai": ("CLOUDFLARE_API_KEY",),
    "cloudflare-ai-gateway": ("CLOUDFLARE_API_KEY",),
    "xiaomi": ("XIAOMI_API_KEY",),
    "xiaomi-token-plan-cn": ("XIAOMI_TOKEN_PLAN_CN_API_KEY",),
    "xiaomi-token-plan-ams": ("XIAOMI_TOKEN_PLAN_AMS_API_KEY",),
    "xiaomi-token-plan-sgp": ("XIAOMI_TOKEN_PLAN_SGP_API_KEY",),
}
# Every variable pi reads as a key (besides the ambient cloud ones below).
PI_KEY_VARS: frozenset[str] = frozenset(v for names in PI_ENV_KEYS.values() for v in names)

# defaultModelPerProvider's order: pi tries these providers' default models first
# (every built-in provider of 0.73.1 has one, and each default model exists).
BUILTIN_ORDER: tuple[str, ...] = (
    "amazon-bedrock", "anthropic", "openai", "azure-openai-responses", "openai-codex", "deepseek",
    "google", "google-vertex", "github-copilot", "openrouter", "vercel-ai-gateway", "xai", "groq",
    "cerebras", "zai", "mistral", "minimax", "minimax-cn", "moonshotai", "moonshotai-cn",
    "huggingface", "fireworks", "opencode", "opencode-go", "kimi-coding", "cloudflare-workers-ai",
    "cloudflare-ai-gateway", "xiaomi", "xiaomi-token-plan-cn", "xiaomi-token-plan-ams",
    "xiaomi-token-plan-sgp",
)
_BUILTIN = frozenset(BUILTIN_ORDER)
# The OAuth providers pi 0.73.1 can refresh itself (pi-ai utils/oauth).
PI_OAUTH_PROVIDERS = frozenset({"anthropic", "openai-codex", "github-copilot"})

# getEnvApiKey's ambient credentials: any of these makes Bedrock count.
BEDROCK_MARKERS = (
    ("AWS_PROFILE",),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("AWS_BEARER_TOKEN_BEDROCK",),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI",),
    ("AWS_WEB_IDENTITY_TOKEN_FILE",),
)
VERTEX_VARS = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION")

_ENV_NAME_LIKE_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_VAR_REF_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_JSONC_COMMENT_RE = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
_TRAILING_COMMA_RE = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])')


# --- facts read from the agent directory ------------------------------------------------


class PiModels(msgspec.Struct, frozen=True):
    """The parts of ``models.json`` that decide auth and choice.

    ``custom``: providers it adds models to, with their model ids, in file order;
    ``api_keys``: each provider's ``apiKey`` value (custom or override);
    ``problem``: why pi would ignore the whole file (then nothing else is set)."""

    path: Path
    custom: dict[str, tuple[str, ...]] = {}
    api_keys: dict[str, str] = {}
    problem: str | None = None


class PiAgent(msgspec.Struct, frozen=True):
    """What pi reads from the agent directory a run will use."""

    agent_dir: Path
    auth: PiAuthFile | None = None
    auth_problem: str | None = None
    models: PiModels | None = None
    default: tuple[str, str] | None = None  # settings.json defaultProvider, defaultModel
    vertex_adc: bool = False  # an application-default-credentials file exists

    @property
    def auth_path(self) -> Path:
        return self.agent_dir / pi_auth.AUTH_FILENAME


def home_agent_dir(env: Mapping[str, str], home: Path) -> Path:
    """The user's own pi agent directory: ``$PI_CODING_AGENT_DIR`` or ``~/.pi/agent``."""
    return pi_auth.home_auth_paths(env, home)[0].parent


def agent_dir_for(workspace: Path, env: Mapping[str, str], home: Path) -> Path:
    """The agent directory pi runs with for ``workspace`` (see the module docstring)."""
    if is_tako_workspace(workspace):
        return pi_auth.workspace_auth_path(workspace).parent
    return home_agent_dir(env, home)


def _jsonc(text: str) -> object:
    """JSON with ``//`` and ``/* */`` comments and trailing commas, as pi 0.73 reads models.json."""
    text = _JSONC_COMMENT_RE.sub(lambda m: m.group(1) or "", text)
    text = _TRAILING_COMMA_RE.sub(lambda m: m.group(1) or m.group(2), text)
    return json.loads(text)


def parse_models(path: Path, text: str | None) -> PiModels:
    """``models.json`` as pi's ``loadCustomModels`` + ``validateConfig`` take it."""
    if text is None:
        return PiModels(path)
    try:
        doc = _jsonc(text)
    except ValueError as exc:
        return PiModels(path, problem=f"{path}: not valid JSON ({exc.__class__.__name__}); pi ignores it")
    providers = doc.get("providers") if isinstance(doc, dict) else None
    if not isinstance(providers, dict):
        return PiModels(path, problem=f"{path}: no \"providers\" object; pi ignores it")
    custom: dict[str, tuple[str, ...]] = {}
    keys: dict[str, str] = {}
    for name, config in providers.items():
        if not isinstance(config, dict):
            return PiModels(path, problem=f"{path}: provider {name!r} is not an object; pi ignores the file")
        models = config.get("models") or []
        api_key = config.get("apiKey")
        if not isinstance(models, list) or (api_key is not None and not isinstance(api_key, str)):
            return PiModels(path, problem=f"{path}: provider {name!r} does not match pi's schema; pi ignores the file")
        ids = tuple(m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"])
        if len(ids) != len(models):
            return PiModels(path, problem=f"{path}: a model of {name!r} has no id; pi ignores the file")
        if not models and not any(config.get(k) for k in ("baseUrl", "headers", "compat", "modelOverrides")):
            return PiModels(path, problem=f"{path}: provider {name!r} sets nothing pi uses; pi ignores the file")
        if models and name not in _BUILTIN:
            if not config.get("baseUrl") or not api_key:
                return PiModels(
                    path, problem=f"{path}: custom provider {name!r} needs \"baseUrl\" and \"apiKey\"; pi ignores the file"
                )
            if not config.get("api") and not all(isinstance(m, dict) and m.get("api") for m in models):
                return PiModels(path, problem=f"{path}: custom provider {name!r} gives no \"api\"; pi ignores the file")
        if ids:
            custom[name] = ids
        if api_key:
            keys[name] = api_key
    return PiModels(path, custom, keys)


def _read_text(path: Path) -> str | None:
    raw = read_bytes(path)
    return None if raw is None else strip_bom(raw.data).decode("utf-8", errors="replace")


def _default_model(path: Path) -> tuple[str, str] | None:
    try:
        text = _read_text(path)
        doc = json.loads(text) if text else None
    except (FileProblem, ValueError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("defaultProvider"), str) and isinstance(doc.get("defaultModel"), str):
        return doc["defaultProvider"], doc["defaultModel"]
    return None


def _vertex_adc(env: Mapping[str, str], home: Path) -> bool:
    named = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    path = Path(named) if named else home / ".config" / "gcloud" / "application_default_credentials.json"
    return path.exists()


def read_agent(agent_dir: Path, env: Mapping[str, str], home: Path) -> PiAgent:
    """Read what pi will read from ``agent_dir`` (blocking; never raises for a bad file)."""
    auth, auth_problem = None, None
    try:
        auth = pi_auth.read_auth(agent_dir / pi_auth.AUTH_FILENAME)
    except FileProblem as exc:
        auth_problem = f"{exc.path}: {exc.detail}"
    models_path = agent_dir / "models.json"
    try:
        models = parse_models(models_path, _read_text(models_path))
    except FileProblem as exc:
        models = PiModels(models_path, problem=f"{exc.path}: {exc.detail}")
    return PiAgent(
        agent_dir=agent_dir,
        auth=auth,
        auth_problem=auth_problem,
        models=models,
        default=_default_model(agent_dir / "settings.json"),
        vertex_adc=_vertex_adc(env, home),
    )


# --- the decision -----------------------------------------------------------------------


class PiCredential(msgspec.Struct, frozen=True):
    """The credential pi will use for ``provider`` (a pi provider id).

    ``kind``: ``oauth``, ``api_key`` (a literal key), ``env`` (a variable named by
    a key value, or one pi reads itself), ``command`` (a ``!command``), ``ambient``
    (cloud credentials). ``needs``: the variables the child must get for it.
    ``problem`` says why pi would fail with it (then ``usable`` is False)."""

    provider: str
    source: str
    kind: str
    masked: str = ""
    needs: tuple[str, ...] = ()
    usable: bool = True
    problem: str | None = None
    note: str | None = None
    unverified: bool = False
    expires_at: float | None = None
    refreshable: bool = False
    account: str | None = None


class PiPlan(msgspec.Struct, frozen=True):
    """What a pi run will use. ``credential`` is None when pi has nothing to answer with."""

    agent_dir: Path
    auth_file: Path
    credential: PiCredential | None
    available: tuple[str, ...] = ()  # providers pi counts as having auth, in its order
    needs: tuple[str, ...] = ()  # every variable the child gets beyond the ordinary ones
    note: str | None = None
    problems: tuple[str, ...] = ()


# How a pool value is shown: masked, or as it is when the pool holds masked values already.
Show = Callable[[str], str]


def _config_value(value: str, pool: Mapping[str, str], show: Show, *, provider: str, source: str) -> PiCredential:
    """A key value as pi 0.73's ``resolveConfigValue`` reads it."""
    if value.startswith("!"):
        refs = tuple(dict.fromkeys(n for n in _VAR_REF_RE.findall(value) if pool.get(n)))
        return PiCredential(
            provider, source, "command", needs=refs, unverified=True,
            note="the key comes from a shell command, run by pi when the key is used",
        )
    if pool.get(value):
        return PiCredential(provider, source, "env", show(pool[value]), needs=(value,),
                            note=f"from environment variable {value}")
    if _ENV_NAME_LIKE_RE.fullmatch(value):
        return PiCredential(
            provider, source, "api_key", usable=False,
            problem=f"no variable {value} is set, so pi would send the name itself as the key: "
            f"`takod key set {value}` or export it",
        )
    return PiCredential(provider, source, "api_key", mask_secret(value))



def _auth_entry(
    agent: PiAgent, provider: str, pool: Mapping[str, str], show: Show, now: float, dead: frozenset[str]
) -> PiCredential | None:
    if agent.auth is None or provider not in agent.auth.entries:
        return None
    entry = agent.auth.entries[provider]
    source = str(agent.auth.path)
    if isinstance(entry, OAuthEntry):
        expires = None if entry.expires >= pi_auth.NEVER_EXPIRES_MS else entry.expires / 1000
        refreshable = bool(entry.refresh) and provider in PI_OAUTH_PROVIDERS and provider not in dead
        expired = expires is not None and expires <= now
        problem = None
        if provider not in PI_OAUTH_PROVIDERS:
            problem = f"pi cannot use an OAuth login for {provider}"
        elif expired and not refreshable:
            problem = "the login expired and cannot be refreshed"
        return PiCredential(
            provider, source, "oauth", mask_secret(entry.access), usable=problem is None, problem=problem,
            expires_at=expires, refreshable=refreshable,
            account=entry.extra_str("email") or entry.extra_str("accountId"),
        )
    if isinstance(entry, ApiKeyEntry):
        if entry.key is None:
            return PiCredential(provider, source, "api_key", usable=False, problem="the entry stores no key")
        return _config_value(entry.key, pool, show, provider=provider, source=source)
    assert isinstance(entry, UnknownEntry)
    return PiCredential(provider, source, "unknown", usable=False, problem=f"pi cannot use this entry: {entry.problem}")


def _ambient(agent: PiAgent, provider: str, pool: Mapping[str, str]) -> PiCredential | None:
    if provider == "amazon-bedrock":
        if any(all(pool.get(v) for v in marker) for marker in BEDROCK_MARKERS):
            needs = tuple(sorted(n for n in pool if n.startswith("AWS_") and pool[n]))
            return PiCredential(provider, "ambient:aws", "ambient", needs=needs, unverified=True,
                                note="AWS credentials from the environment; only AWS can tell whether they work")
    if provider == "google-vertex":
        project = pool.get("GOOGLE_CLOUD_PROJECT") or pool.get("GCLOUD_PROJECT")
        if agent.vertex_adc and project and pool.get("GOOGLE_CLOUD_LOCATION"):
            needs = tuple(v for v in VERTEX_VARS if pool.get(v))
            return PiCredential(provider, "ambient:gcloud-adc", "ambient", needs=needs, unverified=True,
                                note="Google application default credentials; only Google can tell whether they work")
    return None


def provider_credential(
    agent: PiAgent,
    provider: str,
    pool: Mapping[str, str],
    *,
    now: float,
    dead: frozenset[str] = frozenset(),
    masked_pool: bool = False,
    sources: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> PiCredential | None:
    """What pi's ``getApiKey`` would use for ``provider``; None when pi has no auth for it.
    ``sources`` says where pool variables came from (default ``env:NAME``), ``notes``
    what to say about some (a key in a plaintext file)."""
    show: Show = (lambda value: value) if masked_pool else mask_secret
    found = _auth_entry(agent, provider, pool, show, now, dead)
    if found is not None:
        return found
    for var in PI_ENV_KEYS.get(provider, ()):
        if pool.get(var):
            source = (sources or {}).get(var, f"env:{var}")
            return PiCredential(provider, source, "env", show(pool[var]), needs=(var,), note=(notes or {}).get(var))
    ambient = _ambient(agent, provider, pool)
    if ambient is not None:
        return ambient
    models = agent.models
    if models is not None and provider in models.api_keys:
        return _config_value(models.api_keys[provider], pool, show, provider=provider, source=str(models.path))
    return None


def _known_model(agent: PiAgent, provider: str, model_id: str) -> bool:
    custom = agent.models.custom if agent.models is not None else {}
    return provider in _BUILTIN or model_id in custom.get(provider, ())


def resolve_pi(
    agent: PiAgent,
    pool: Mapping[str, str],
    *,
    now: float,
    dead: Iterable[str] = (),
    model: str | None = None,
    masked_pool: bool = False,
    sources: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> PiPlan:
    """Which provider and credential a pi run will use, and the variables it needs.

    ``pool`` is every variable the run could have (the daemon's environment,
    stored and settings keys, the client's overlay); ``masked_pool`` says its
    values are masked already (readiness passes masked values, the runner real
    ones: the decision is the same). ``dead`` holds pi provider ids whose login
    the refresh broker found dead. ``model`` is the request's ``--model``.
    """
    dead = frozenset(dead)
    custom = list(agent.models.custom) if agent.models is not None else []
    order = list(BUILTIN_ORDER) + [p for p in custom if p not in _BUILTIN]
    creds = {
        p: provider_credential(agent, p, pool, now=now, dead=dead, masked_pool=masked_pool, sources=sources, notes=notes)
        for p in order
    }
    available = tuple(p for p in order if creds[p] is not None)
    problems = tuple(p for p in (agent.auth_problem, agent.models.problem if agent.models else None) if p)
    base = dict(agent_dir=agent.agent_dir, auth_file=agent.auth_path, available=available, problems=problems)

    chosen: str | None = None
    note: str | None = None
    extra_needs: tuple[str, ...] = ()
    wanted = model if model and model != "auto" else None
    if wanted and "/" in wanted and wanted.split("/", 1)[0] in creds:
        chosen = wanted.split("/", 1)[0]
    elif wanted:
        # A bare model id: pi searches every provider with auth for it.
        extra_needs = tuple(n for p in available for n in creds[p].needs)  # type: ignore[union-attr]
        chosen = available[0] if available else None
    elif agent.default and _known_model(agent, *agent.default):
        chosen = agent.default[0]
        note = f"pi's default model {agent.default[0]}/{agent.default[1]} (settings.json)"
    elif available:
        chosen = available[0]
    credential = creds.get(chosen) if chosen else None
    if chosen and credential is None:
        note = f"pi would use {chosen} ({note or 'as asked'}), which has no credential"
    needs = tuple(dict.fromkeys((credential.needs if credential else ()) + extra_needs))
    return PiPlan(credential=credential, needs=needs, note=note, **base)  # type: ignore[arg-type]


def child_env(plan: PiPlan, pool: Mapping[str, str]) -> dict[str, str]:
    """The environment pi runs with: the pool's ordinary variables, the secrets the
    plan needs (and no other), and the plan's agent directory."""
    env = {k: v for k, v in pool.items() if not is_secret_name(k) and k not in PI_KEY_VARS}
    env.update({name: pool[name] for name in plan.needs if name in pool})
    env[AGENT_DIR_ENV] = str(plan.agent_dir)
    return env

