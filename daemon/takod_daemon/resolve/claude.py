"""What a Claude Code run will use: which backend it talks to, and the credentials
it can authenticate there with, decided as Claude Code 2.1.289 decides.

Checked against the real ``claude -p`` with loopback servers (docs/readiness.md):

- **Backend.** ``CLAUDE_CODE_USE_BEDROCK`` wins, then ``CLAUDE_CODE_USE_VERTEX``,
  then ``CLAUDE_CODE_USE_FOUNDRY``, each when truthy (``1``, ``true``, ``yes``,
  ``on``, any case, trimmed); else the Anthropic API.
- **Anthropic API**, in claude's order: ``ANTHROPIC_AUTH_TOKEN`` (bearer),
  ``ANTHROPIC_API_KEY``, an ``apiKeyHelper`` command in its settings,
  ``CLAUDE_CODE_OAUTH_TOKEN``, then the login in ``.credentials.json``, which
  counts only with the ``user:inference`` scope (without it claude says "Not
  logged in": ``credentials.claude_auth.summarize`` reports it as needing a login). The helper is read from the user settings
  (``$CLAUDE_CONFIG_DIR/settings.json``, else ``~/.claude/settings.json``) and
  the workspace's project settings (``.claude/settings.json``,
  ``.claude/settings.local.json``): claude runs in the workspace.
- **Bedrock** ignores every Anthropic credential: AWS's own chain does
  (``AWS_BEARER_TOKEN_BEDROCK``, the key pair, ``AWS_PROFILE`` or the
  ``[default]`` profile in ``~/.aws/credentials`` / ``~/.aws/config``, container
  and web-identity credentials), or ``CLAUDE_CODE_SKIP_BEDROCK_AUTH``.
- **Vertex** likewise: application default credentials (with a project) or
  ``CLAUDE_CODE_SKIP_VERTEX_AUTH`` (then ``ANTHROPIC_VERTEX_PROJECT_ID`` is
  required: claude cannot find the project without credentials).
- **Foundry**: ``ANTHROPIC_FOUNDRY_API_KEY``; without it claude asks Azure AD,
  which cannot be checked offline and is not counted.

:func:`resolve_claude` is the one decision: readiness reports its credentials,
the engine gives the child the secrets of its backend (``child_secret_prefixes``).
Pure, except :func:`claude_facts` (blocking; small files).
"""

from __future__ import annotations

import configparser
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from ..credentials import claude_auth
from ..credentials.files import FileProblem, decode_json, read_bytes
from ..credentials.summary import CredentialSummary
from ..redact import mask_secret

TRUTHY = ("1", "true", "yes", "on")
SWITCHES = (("bedrock", "CLAUDE_CODE_USE_BEDROCK"), ("vertex", "CLAUDE_CODE_USE_VERTEX"),
            ("foundry", "CLAUDE_CODE_USE_FOUNDRY"))
# The Anthropic API's credentials, in claude's order (the helper comes after the key).
ANTHROPIC_VARS = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
AWS_MARKERS = (
    ("AWS_BEARER_TOKEN_BEDROCK",),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI",),
    ("AWS_WEB_IDENTITY_TOKEN_FILE",),
)
HELPER_NOTE = "apiKeyHelper: a command in claude's settings, run by claude for the key (unverified)"


def truthy(value: str | None) -> bool:
    """claude's ``isEnvTruthy``."""
    return (value or "").strip().lower() in TRUTHY


def backend(env: Mapping[str, str]) -> str:
    """``anthropic``, ``bedrock``, ``vertex`` or ``foundry``: where a claude run with ``env`` goes."""
    return next((name for name, var in SWITCHES if truthy(env.get(var))), "anthropic")


def child_secret_prefixes(env: Mapping[str, str]) -> tuple[str, ...]:
    """The secret-looking variables (by prefix) a claude child may get: its own, and its cloud's."""
    prefixes: tuple[str, ...] = ("ANTHROPIC_", "CLAUDE_")
    where = backend(env)
    if where == "bedrock":
        prefixes += ("AWS_",)
    elif where == "vertex":
        prefixes += ("GOOGLE_", "CLOUDSDK_")
    return prefixes


class ClaudeFacts(NamedTuple):
    """What claude's choice of credential depends on beyond the environment (:func:`claude_facts`)."""

    helpers: tuple[str, ...] = ()  # settings files naming an apiKeyHelper, claude's order
    aws_profiles: frozenset[str] = frozenset()  # profiles with a section in ~/.aws/credentials or config
    adc: str | None = None  # the application-default-credentials file, if there is one
    adc_project: str | None = None  # the project it names (project_id / quota_project_id)


class ClaudePlan(NamedTuple):
    """What a claude run will use: the backend, and the credentials it can authenticate
    with there, best first (readiness reports the first usable one)."""

    backend: str
    credentials: tuple[CredentialSummary, ...]


def project_files(workspace: Path) -> list[Path]:
    """The workspace's own claude settings (claude runs there), highest precedence first."""
    return [workspace / ".claude" / "settings.local.json", workspace / ".claude" / "settings.json"]


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _adc_path(env: Mapping[str, str]) -> Path:
    named = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    return Path(named) if named else _home(env) / ".config" / "gcloud" / "application_default_credentials.json"


def _aws_files(env: Mapping[str, str]) -> tuple[tuple[Path, str], ...]:
    aws = _home(env) / ".aws"
    return ((Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or aws / "credentials"), ""),
            (Path(env.get("AWS_CONFIG_FILE") or aws / "config"), "profile "))


def user_files(env: Mapping[str, str]) -> list[Path]:
    """The user's files :func:`claude_facts` reads (to watch): claude's settings, AWS's, the ADC file."""
    return [claude_auth.config_dir(env) / "settings.json", *(path for path, _ in _aws_files(env)), _adc_path(env)]


def _json(path: Path) -> object:
    try:
        raw = read_bytes(path)
        return None if raw is None else decode_json(raw, object)
    except FileProblem:
        return None  # claude would not use it either


def _aws_profiles(env: Mapping[str, str]) -> frozenset[str]:
    found: set[str] = set()
    for path, prefix in _aws_files(env):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in parser.sections():
            name = section.removeprefix(prefix) if section != "default" else section
            if any(k in parser[section] for k in ("aws_access_key_id", "sso_session", "sso_start_url",
                                                   "role_arn", "credential_process", "web_identity_token_file")):
                found.add(name)
    return frozenset(found)


def claude_facts(env: Mapping[str, str], workspace: Path | None = None) -> ClaudeFacts:
    """Read what claude's credential depends on (blocking; small files). Nothing is run."""
    helpers = []
    for path in [*(project_files(workspace) if workspace is not None else []), user_files(env)[0]]:
        doc = _json(path)
        if isinstance(doc, dict) and isinstance(doc.get("apiKeyHelper"), str) and doc["apiKeyHelper"].strip():
            helpers.append(str(path))
    adc_path = _adc_path(env)
    adc = _json(adc_path)
    project = None
    if isinstance(adc, dict):
        project = next((adc[k] for k in ("project_id", "quota_project_id") if isinstance(adc.get(k), str)), None)
    return ClaudeFacts(tuple(helpers), _aws_profiles(env), str(adc_path) if adc is not None else None, project)


def _key_name(cred: CredentialSummary) -> str | None:
    # claude_auth names the variable ("ANTHROPIC_API_KEY"); the key scan "env:NAME", "keyring:NAME", "FILE:NAME".
    return cred.source.rsplit(":", 1)[-1] if cred.kind == "api_key" or cred.source.startswith("CLAUDE_") else None


def _ambient(source: str, masked: str = "", note: str | None = None, unverified: bool = True) -> CredentialSummary:
    return CredentialSummary("claude", source, "api_key", masked, note=note, unverified=unverified)


def _anthropic(creds: list[CredentialSummary], facts: ClaudeFacts) -> list[CredentialSummary]:
    def rank(cred: CredentialSummary) -> int:
        name = _key_name(cred)
        if name in ANTHROPIC_VARS:
            return ANTHROPIC_VARS.index(name)
        return 3 if name == "CLAUDE_CODE_OAUTH_TOKEN" else 4

    keys = [c for c in creds if _key_name(c) in (*ANTHROPIC_VARS, "CLAUDE_CODE_OAUTH_TOKEN")]
    logins = [c for c in creds if c.kind == "oauth" and c not in keys]
    helpers = [_ambient(f"apiKeyHelper:{path}", note=HELPER_NOTE) for path in facts.helpers[:1]]
    ordered = sorted(keys, key=rank)
    return [c for c in ordered if rank(c) < 2] + helpers + [c for c in ordered if rank(c) >= 2] + logins


def _bedrock(pool: Mapping[str, str], facts: ClaudeFacts, show: Callable[[str], str]) -> list[CredentialSummary]:
    if truthy(pool.get("CLAUDE_CODE_SKIP_BEDROCK_AUTH")):
        return [_ambient("CLAUDE_CODE_SKIP_BEDROCK_AUTH", note="claude sends Bedrock requests unsigned (a gateway signs them)")]
    for marker in AWS_MARKERS:
        if all(pool.get(v) for v in marker):
            return [_ambient(f"env:{marker[0]}", show(pool[marker[0]]), "AWS credentials; only AWS can tell whether they work")]
    profile = pool.get("AWS_PROFILE") or "default"
    if profile in facts.aws_profiles:
        return [_ambient(f"aws-profile:{profile}", note="an AWS profile in ~/.aws; only AWS can tell whether it works")]
    return []


def _vertex(pool: Mapping[str, str], facts: ClaudeFacts) -> list[CredentialSummary]:
    if truthy(pool.get("CLAUDE_CODE_SKIP_VERTEX_AUTH")):
        if not pool.get("ANTHROPIC_VERTEX_PROJECT_ID"):
            return []  # claude: "No projectId was given and it could not be resolved from credentials"
        return [_ambient("CLAUDE_CODE_SKIP_VERTEX_AUTH", note="claude sends Vertex requests without credentials")]
    project = (pool.get("ANTHROPIC_VERTEX_PROJECT_ID") or pool.get("GOOGLE_CLOUD_PROJECT") or pool.get("GCLOUD_PROJECT")
               or facts.adc_project)
    if facts.adc and project:
        return [_ambient(f"gcloud-adc:{facts.adc}", note="Google application default credentials; "
                         "only Google can tell whether they work")]
    return []


def resolve_claude(
    creds: Iterable[CredentialSummary], pool: Mapping[str, str], facts: ClaudeFacts, *, masked_pool: bool = False
) -> ClaudePlan:
    """What a claude run with the environment ``pool`` will use, of the credentials found
    (``creds``: claude's login file, its variables and every key counted for claude);
    ``masked_pool`` says the pool's secret values are masked already."""
    found = list(creds)
    show: Callable[[str], str] = (lambda value: value) if masked_pool else mask_secret
    where = backend(pool)
    if where == "bedrock":
        return ClaudePlan(where, tuple(_bedrock(pool, facts, show)))
    if where == "vertex":
        return ClaudePlan(where, tuple(_vertex(pool, facts)))
    if where == "foundry":
        key = pool.get("ANTHROPIC_FOUNDRY_API_KEY")
        return ClaudePlan(where, (_ambient("env:ANTHROPIC_FOUNDRY_API_KEY", show(key), unverified=False),) if key else ())
    return ClaudePlan(where, tuple(_anthropic(found, facts)))
