"""pi's resolution (resolve/pi.py): which provider and credential a pi run uses, the
variables its child gets, and which agent directory it runs in, as pi 0.73.1 decides.
Files are real (tmp_path); the differential test against the real pi is
tests/integration/test_readiness_matrix.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from takod_daemon.resolve.pi import (
    PiAgent,
    agent_dir_for,
    child_env,
    parse_models,
    read_agent,
    resolve_pi,
)

NOW = 1_800_000_000.0


def agent(tmp_path: Path, auth: dict | None = None, models: dict | str | None = None, settings: dict | None = None,
          env: dict[str, str] | None = None) -> PiAgent:
    directory = tmp_path / "agent"
    directory.mkdir(exist_ok=True)
    if auth is not None:
        (directory / "auth.json").write_text(json.dumps(auth))
        (directory / "auth.json").chmod(0o600)
    if models is not None:
        (directory / "models.json").write_text(models if isinstance(models, str) else json.dumps(models))
    if settings is not None:
        (directory / "settings.json").write_text(json.dumps(settings))
    return read_agent(directory, env or {}, tmp_path / "home")


LOCAL = {"providers": {"local": {"baseUrl": "http://127.0.0.1:11434/v1", "api": "openai-completions",
                                 "apiKey": "ollama", "models": [{"id": "llama3.2"}]}}}


@pytest.mark.parametrize("name", ["CLAUDE_API_KEY", "GOOGLE_API_KEY", "VENICE_API_KEY", "ALI_BAILIAN_API_KEY",
                                  "MIDDLEWARE_API_KEY"])
def test_keys_pi_never_reads_give_pi_nothing(tmp_path: Path, name: str) -> None:
    plan = resolve_pi(agent(tmp_path), {name: "sk-secret-0123456789"}, now=NOW)
    assert plan.credential is None and plan.available == ()


def test_a_key_pi_reads_is_used_and_only_it_reaches_the_child(tmp_path: Path) -> None:
    pool = {"ANTHROPIC_API_KEY": "sk-ant-0123456789", "OPENAI_API_KEY": "sk-oa-0123456789",
            "NPM_TOKEN": "npm-secret", "PATH": "/usr/bin"}
    plan = resolve_pi(agent(tmp_path), pool, now=NOW)
    assert plan.credential is not None and plan.credential.provider == "anthropic"  # pi's own order
    assert plan.available == ("anthropic", "openai")
    env = child_env(plan, pool)
    assert env["ANTHROPIC_API_KEY"] == pool["ANTHROPIC_API_KEY"] and env["PATH"] == "/usr/bin"
    assert "OPENAI_API_KEY" not in env and "NPM_TOKEN" not in env
    assert env["PI_CODING_AGENT_DIR"] == str(tmp_path / "agent")


def test_a_requested_model_picks_its_provider_and_its_key(tmp_path: Path) -> None:
    pool = {"ANTHROPIC_API_KEY": "sk-ant-0123456789", "OPENAI_API_KEY": "sk-oa-0123456789"}
    plan = resolve_pi(agent(tmp_path), pool, now=NOW, model="openai/gpt-5.4")
    assert plan.credential is not None and plan.credential.provider == "openai"
    assert set(child_env(plan, pool)) >= {"OPENAI_API_KEY"} and "ANTHROPIC_API_KEY" not in child_env(plan, pool)


def test_an_auth_json_key_naming_a_variable_gets_that_variable(tmp_path: Path) -> None:
    ag = agent(tmp_path, auth={"openai": {"type": "api_key", "key": "MY_FAKE_KEY"}})
    pool = {"MY_FAKE_KEY": "sk-real-0123456789"}
    plan = resolve_pi(ag, pool, now=NOW)
    assert plan.credential is not None and plan.credential.kind == "env" and plan.credential.usable
    assert child_env(plan, pool)["MY_FAKE_KEY"] == "sk-real-0123456789"


def test_a_key_naming_an_unset_variable_is_not_usable(tmp_path: Path) -> None:
    plan = resolve_pi(agent(tmp_path, auth={"openai": {"type": "api_key", "key": "MY_FAKE_KEY"}}), {}, now=NOW)
    assert plan.credential is not None and not plan.credential.usable
    assert "MY_FAKE_KEY" in (plan.credential.problem or "")


def test_a_command_key_gets_the_variables_it_mentions(tmp_path: Path) -> None:
    ag = agent(tmp_path, auth={"openai": {"type": "api_key", "key": "!printf %s \"$VAULT_TOKEN${OTHER_SECRET}\""}})
    pool = {"VAULT_TOKEN": "v-0123456789", "OTHER_SECRET": "o-0123456789", "UNRELATED_SECRET": "u"}
    plan = resolve_pi(ag, pool, now=NOW)
    assert plan.credential is not None and plan.credential.kind == "command" and plan.credential.unverified
    env = child_env(plan, pool)
    assert env["VAULT_TOKEN"] and env["OTHER_SECRET"] and "UNRELATED_SECRET" not in env


def test_an_auth_entry_hides_the_environment(tmp_path: Path) -> None:
    ag = agent(tmp_path, auth={"anthropic": {"type": "api_key", "key": "sk-ant-file-0123456789"}})
    plan = resolve_pi(ag, {"ANTHROPIC_API_KEY": "sk-ant-env-0123456789"}, now=NOW)
    assert plan.credential is not None and plan.credential.source == str(ag.auth_path)
    assert plan.needs == ()


def test_an_entry_for_a_provider_pi_has_no_models_for_counts_for_nothing(tmp_path: Path) -> None:
    plan = resolve_pi(agent(tmp_path, auth={"venice": {"type": "api_key", "key": "sk-v-0123456789"}}), {}, now=NOW)
    assert plan.credential is None


def test_an_empty_auth_file_has_no_credential(tmp_path: Path) -> None:
    assert resolve_pi(agent(tmp_path, auth={}), {}, now=NOW).credential is None


@pytest.mark.parametrize("api_key", ["ollama", "lm-studio", "sk-local-0123456789"])
def test_a_models_json_custom_provider_is_enough(tmp_path: Path, api_key: str) -> None:
    models = json.loads(json.dumps(LOCAL))
    models["providers"]["local"]["apiKey"] = api_key
    plan = resolve_pi(agent(tmp_path, models=models), {}, now=NOW)
    assert plan.credential is not None and plan.credential.provider == "local" and plan.credential.usable
    assert plan.credential.source == str(tmp_path / "agent" / "models.json")


def test_models_json_with_comments_and_trailing_commas(tmp_path: Path) -> None:
    text = '// mine\n{"providers": {"local": {"baseUrl": "http://127.0.0.1:1/v1", "api": "openai-completions",' \
           ' /* key */ "apiKey": "x", "models": [{"id": "m",},],},},}'
    assert parse_models(tmp_path / "models.json", text).custom == {"local": ("m",)}


@pytest.mark.parametrize("bad", [
    "{not json",
    {"providers": {"local": {"baseUrl": "http://127.0.0.1:1/v1", "api": "openai-completions", "models": [{"id": "m"}]}}},
    {"providers": {"local": {"apiKey": "x", "api": "openai-completions", "models": [{"id": "m"}]}}},
    {"providers": {"local": {"baseUrl": "http://h/v1", "apiKey": "x", "models": [{"id": "m"}]}}},
])
def test_a_models_json_pi_rejects_gives_nothing_and_says_why(tmp_path: Path, bad: object) -> None:
    plan = resolve_pi(agent(tmp_path, models=bad), {}, now=NOW)  # type: ignore[arg-type]
    assert plan.credential is None and plan.problems


def test_the_settings_default_model_decides(tmp_path: Path) -> None:
    ag = agent(tmp_path, models=LOCAL, settings={"defaultProvider": "local", "defaultModel": "llama3.2"})
    plan = resolve_pi(ag, {"ANTHROPIC_API_KEY": "sk-ant-0123456789"}, now=NOW)
    assert plan.credential is not None and plan.credential.provider == "local" and plan.needs == ()


def test_a_default_model_without_a_credential_is_not_ready(tmp_path: Path) -> None:
    ag = agent(tmp_path, settings={"defaultProvider": "openai", "defaultModel": "gpt-5.4"})
    plan = resolve_pi(ag, {"ANTHROPIC_API_KEY": "sk-ant-0123456789"}, now=NOW)
    assert plan.credential is None and "openai" in (plan.note or "")


@pytest.mark.parametrize("pool", [
    {"AWS_PROFILE": "work"},
    {"AWS_ACCESS_KEY_ID": "AKIA0123456789", "AWS_SECRET_ACCESS_KEY": "s3cr3t-0123456789"},
    {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"},
    {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/creds"},
    {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"},
    {"AWS_BEARER_TOKEN_BEDROCK": "bedrock-0123456789"},
])
def test_ambient_aws_credentials_make_bedrock_usable(tmp_path: Path, pool: dict[str, str]) -> None:
    plan = resolve_pi(agent(tmp_path), {**pool, "AWS_REGION": "us-east-1"}, now=NOW)
    assert plan.credential is not None and plan.credential.provider == "amazon-bedrock"
    assert set(child_env(plan, pool)) >= set(pool)


def test_only_the_aws_key_id_is_not_enough(tmp_path: Path) -> None:
    assert resolve_pi(agent(tmp_path), {"AWS_ACCESS_KEY_ID": "AKIA0123456789"}, now=NOW).credential is None


def test_vertex_application_default_credentials(tmp_path: Path) -> None:
    adc = tmp_path / "home" / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text("{}")
    pool = {"GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_CLOUD_LOCATION": "us-central1"}
    plan = resolve_pi(agent(tmp_path), pool, now=NOW)
    assert plan.credential is not None and plan.credential.provider == "google-vertex"
    assert resolve_pi(agent(tmp_path), {"GOOGLE_CLOUD_PROJECT": "p"}, now=NOW).credential is None


def test_an_expired_login_pi_cannot_refresh_is_not_usable(tmp_path: Path) -> None:
    entry = {"type": "oauth", "access": "sk-ant-oat-0123456789", "refresh": "r-0123456789", "expires": 1000}
    ag = agent(tmp_path, auth={"anthropic": entry})
    assert resolve_pi(ag, {}, now=NOW).credential.usable  # type: ignore[union-attr]  # pi refreshes it
    dead = resolve_pi(ag, {}, now=NOW, dead={"anthropic"}).credential
    assert dead is not None and not dead.usable and dead.kind == "oauth"


def test_masked_and_real_pools_decide_alike(tmp_path: Path) -> None:
    ag = agent(tmp_path, auth={"openai": {"type": "api_key", "key": "MY_FAKE_KEY"}})
    real = resolve_pi(ag, {"MY_FAKE_KEY": "sk-real-0123456789"}, now=NOW)
    masked = resolve_pi(ag, {"MY_FAKE_KEY": "sk-...6789"}, now=NOW, masked_pool=True)
    assert (real.credential.provider, real.needs) == (masked.credential.provider, masked.needs)  # type: ignore[union-attr]
    assert "sk-real-0123456789" not in repr(real)


def test_the_agent_directory_rule(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tako = tmp_path / "ws"
    tako.mkdir()
    (tako / "tako.toml").write_text("")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert agent_dir_for(tako, {}, home) == tako / ".tako" / "pi" / "agent"
    assert agent_dir_for(plain, {}, home) == home / ".pi" / "agent"
    assert agent_dir_for(plain, {"PI_CODING_AGENT_DIR": "/opt/pi"}, home) == Path("/opt/pi")


def test_the_child_keeps_the_ordinary_environment_and_no_other_secret(tmp_path: Path) -> None:
    ordinary = {"PATH": "/usr/bin", "HOME": "/h", "LANG": "C.UTF-8", "HTTPS_PROXY": "http://p:3128", "CI": "1",
                "AWS_REGION": "eu-west-1", "TMPDIR": "/t"}
    secrets = {"NPM_TOKEN": "n", "DATABASE_PASSWORD": "p", "GOOGLE_APPLICATION_CREDENTIALS": "/adc.json",
               "CLAUDE_CODE_OAUTH_TOKEN": "c", "GROQ_API_KEY": "g", "AWS_SECRET_ACCESS_KEY": "s"}
    pool = {**ordinary, **secrets, "OPENAI_API_KEY": "sk-oa-0123456789"}
    env = child_env(resolve_pi(agent(tmp_path), pool, now=NOW), pool)
    assert env == {**ordinary, "OPENAI_API_KEY": "sk-oa-0123456789", "PI_CODING_AGENT_DIR": str(tmp_path / "agent")}
