"""Smart routing on the Inference skill's own examples (its SKILL.md and routing guide).

Pure functions: the prompt rules, the environment configuration and the plan.
"""

from __future__ import annotations

import pytest

from takod.schema import ProviderStatus
from takod_daemon.inference import prompt_rules, routing
from takod_daemon.inference.config import ConfigError, InferenceConfig, resolve

# The skill's "what gets routed to Ollama" / "simple" examples.
SIMPLE = [
    "Review this function for bugs",
    "Summarize this file",
    "Explain how closures work",
    "Why is this function failing?",
    "Add comments to this code",
    "Explain closures in JavaScript",
    "Review this function for security issues",
    "List 3 colors",
    "Write a story",
]
# "What stays with Claude": architecture, planning, comparison, research, building, file operations.
COMPLEX = [
    "Design a microservices system",
    "Design a scalable authentication system",
    "Create an implementation plan",
    "Compare pros and cons of these approaches",
    "Find best practices for authentication",
    "Help me build a feature",
    "Create new files and update existing ones",
    "Design a system",
]
LONG_DESIGN_QUESTION = (
    "We run a monolith that handles billing, user accounts and notifications. I want to move it to an "
    "event-driven architecture over the next two quarters. Step by step: 1. which services should be cut out "
    "first and why? 2. how do we keep the billing ledger consistent while both systems run? 3. what are the "
    "trade-offs between an outbox table and change data capture for publishing events? 4. how should we test "
    "the migration without downtime? Please reason through each step and give me a plan I can present."
)
# Every example the skill gives of a prompt that must stay on this machine.
PRIVATE = [
    "Help me with this proprietary code locally",
    "Summarize locally",
    "Review this function locally",
    "Analyze this offline",
    "Use local model",
    "Private code review",
    "Review this code with Ollama",
    "Summarize this file with ollama",
    "Test this prompt with ollama",
    "Experiment locally with this prompt",
    "Here is my API key, why does the request fail?",
    "My password is hunter2, is it strong?",
    "Summarise this patient's medical history",
    "Check this confidential contract for risks",
    "Which of these credentials are still valid?",
    "Fix this function, it is proprietary",
]
CLOUD = ["Review this code with Claude", "Use Claude API for this", "Don't use Ollama for this question"]


@pytest.mark.parametrize("prompt", SIMPLE)
def test_the_skills_simple_examples_are_not_complex(prompt: str) -> None:
    assert not prompt_rules.complexity(prompt).complex, prompt_rules.complexity(prompt).explain()


@pytest.mark.parametrize("prompt", [*COMPLEX, LONG_DESIGN_QUESTION])
def test_the_skills_complex_examples_are_complex(prompt: str) -> None:
    assert prompt_rules.complexity(prompt).complex, prompt_rules.complexity(prompt).explain()


def test_length_and_code_size_count_on_their_own() -> None:
    assert prompt_rules.complexity("word " * 250).complex  # 1250 characters
    code = "```python\n" + "\n".join(f"x{i} = f({i})" for i in range(100)) + "\n```\nWhat does it do?"
    score = prompt_rules.complexity(code)
    assert score.complex and "100 lines of code" in score.explain()
    assert not prompt_rules.complexity("```python\nx = 1\n```\nWhat does it do?").complex


@pytest.mark.parametrize("prompt", PRIVATE)
def test_every_private_or_local_example_is_kept_local(prompt: str) -> None:
    assert prompt_rules.private_match(prompt) or prompt_rules.local_request(prompt)


@pytest.mark.parametrize("prompt", CLOUD)
def test_asking_for_claude_is_not_a_local_request(prompt: str) -> None:
    assert prompt_rules.cloud_request(prompt)
    assert prompt_rules.local_request(prompt) is None


def test_ordinary_prompts_are_neither_private_nor_local() -> None:
    for prompt in [*SIMPLE, *COMPLEX]:
        assert prompt_rules.private_match(prompt) is None, prompt
        assert prompt_rules.local_request(prompt) is None, prompt


def test_code_prompts_are_recognised_for_the_code_model() -> None:
    assert prompt_rules.looks_like_code("Review: function add(a,b) { return a+b }")
    assert prompt_rules.looks_like_code("Why is this function failing?")
    assert not prompt_rules.looks_like_code("Write a story about a cat")


# --- configuration ------------------------------------------------------------


def test_client_variables_win_over_the_daemons() -> None:
    cfg = resolve({"INFERENCE_DEFAULT_BACKEND": "ollama", "OLLAMA_TIMEOUT": "30000"},
                  {"INFERENCE_DEFAULT_BACKEND": "Anthropic"})
    assert cfg.default_backend == "anthropic" and cfg.ollama_timeout == 30.0


def test_ollama_enable_routing_is_the_older_name_of_the_switch() -> None:
    assert resolve({"OLLAMA_ENABLE_ROUTING": "true"}).routing
    assert resolve({"OLLAMA_ENABLE_ROUTING": "true"}).routing_var == "OLLAMA_ENABLE_ROUTING"
    # the skill's own name wins when both are set; a client's "false" switches the daemon's off
    assert not resolve({"OLLAMA_ENABLE_ROUTING": "true", "INFERENCE_ENABLE_ROUTING": "false"}).routing
    assert not resolve({"INFERENCE_ENABLE_ROUTING": "1"}, {"INFERENCE_ENABLE_ROUTING": "false"}).routing


def test_bad_values_are_errors_that_name_the_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"OLLAMA_TIMEOUT='soon'.*milliseconds.*30000"):
        resolve({"OLLAMA_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match=r"INFERENCE_ENABLE_ROUTING='maybe'.*true, false"):
        resolve({}, {"INFERENCE_ENABLE_ROUTING": "maybe"})
    with pytest.raises(ConfigError, match="ANTHROPIC_TIMEOUT"):
        resolve({"ANTHROPIC_TIMEOUT": "-5"})


def test_ollama_base_url_comes_before_ollama_host() -> None:
    cfg = resolve({"OLLAMA_HOST": "0.0.0.0", "OLLAMA_BASE_URL": "http://10.0.0.5:11434"})
    assert (cfg.ollama_url_var, cfg.ollama_url) == ("OLLAMA_BASE_URL", "http://10.0.0.5:11434")


# --- the plan -----------------------------------------------------------------


def status(name: str, ready: bool = True, reason: str | None = None) -> ProviderStatus:
    return ProviderStatus(name=name, ready=ready, level="ready" if ready else "installed", reason=reason, hint=None)


ALL_READY = [status("pi"), status("ollama"), status("codex"), status("claude", False, "no-credentials"),
             status("gemini", False, "not-installed")]
ROUTING = InferenceConfig(routing=True, routing_var="INFERENCE_ENABLE_ROUTING")


def order(plan: routing.Plan) -> list[str]:
    return [c.provider for c in plan.candidates]


def test_a_long_multi_step_design_question_does_not_go_to_ollama_first() -> None:
    plan = routing.plan(ALL_READY, "ollama", prompt_text=LONG_DESIGN_QUESTION, config=ROUTING,
                        api_keys={"anthropic": True})
    assert order(plan)[0] != "ollama" and order(plan)[-1] == "ollama"
    assert "complex prompt" in (plan.candidates[0].rule or "")


def test_a_simple_prompt_keeps_the_selected_provider() -> None:
    plan = routing.plan(ALL_READY, "ollama", prompt_text="Explain how closures work", config=ROUTING)
    assert order(plan)[0] == "ollama" and plan.candidates[0].rule == "the selected provider"


@pytest.mark.parametrize("prompt", PRIVATE)
def test_private_prompts_are_planned_for_ollama_only_with_the_rule(prompt: str) -> None:
    plan = routing.plan(ALL_READY, "pi", prompt_text=prompt, config=ROUTING, api_keys={"anthropic": True})
    assert order(plan) == ["ollama"]
    assert plan.kept_local and plan.kept_local.startswith("kept local:")
    assert all(s.rule == plan.kept_local for s in plan.skipped if s.provider in ("pi", "anthropic"))


def test_the_private_rule_quotes_the_word_that_matched() -> None:
    plan = routing.plan(ALL_READY, "pi", prompt_text="Help me with this proprietary code", config=ROUTING)
    assert plan.candidates[0].rule == "kept local: the prompt matched 'proprietary' (private material)"


def test_without_routing_the_prompt_rules_do_not_apply() -> None:
    plan = routing.plan(ALL_READY, "pi", prompt_text="Summarize locally, it is proprietary")
    assert order(plan)[0] == "pi" and plan.kept_local is None


def test_kept_local_and_ollama_down_says_why_and_what_to_do() -> None:
    down = [status("ollama", False, "unreachable") if s.name == "ollama" else s for s in ALL_READY]
    plan = routing.plan(down, "pi", prompt_text="Summarize locally", config=ROUTING)
    assert not plan.candidates
    message = plan.refusal("no provider can take this prompt (ollama: not ready: unreachable)")
    assert "asked for 'locally'" in message and "unreachable" in message
    assert "ollama serve" in message and "--provider" in message


def test_asking_for_claude_skips_ollama() -> None:
    plan = routing.plan(ALL_READY, "ollama", prompt_text="Review this code with Claude", config=ROUTING,
                        api_keys={"anthropic": True})
    assert order(plan)[0] == "anthropic" and "ollama" not in order(plan)
    assert any(s.provider == "ollama" and "not local" in (s.rule or "") for s in plan.skipped)


def test_default_backend_is_honoured_without_routing() -> None:
    cfg = InferenceConfig(default_backend="anthropic")
    plan = routing.plan(ALL_READY, "pi", prompt_text="hi", config=cfg, api_keys={"anthropic": True})
    assert order(plan)[0] == "anthropic"
    assert plan.candidates[0].rule == "INFERENCE_DEFAULT_BACKEND=anthropic"


def test_an_unknown_default_backend_is_skipped_with_the_known_names() -> None:
    plan = routing.plan(ALL_READY, "pi", prompt_text="hi", config=InferenceConfig(default_backend="ollamma"))
    skip = next(s for s in plan.skipped if s.provider == "ollamma")
    assert "unknown provider" in skip.reason and "ollama" in skip.reason
    assert skip.rule == "INFERENCE_DEFAULT_BACKEND=ollamma" and order(plan)[0] == "pi"


def test_explicit_choices_beat_the_prompt_rules() -> None:
    assert order(routing.plan(ALL_READY, "pi", provider="pi", prompt_text="my password", config=ROUTING)) == ["pi"]
    plan = routing.plan(ALL_READY, "pi", model="claude-sonnet-4-5", prompt_text="Summarize locally",
                        config=ROUTING, api_keys={"anthropic": True})
    assert order(plan)[0] == "anthropic"


def test_task_models_and_timeouts_come_from_the_variables() -> None:
    cfg = InferenceConfig(ollama_code_model="qwen2.5-coder:7b", ollama_chat_model="llama3.2:3b",
                          ollama_timeout=30.0, anthropic_default_model="claude-x", anthropic_timeout=60.0)
    code = routing.plan(ALL_READY, "ollama", prompt_text="Review: function add(a,b) { return a+b }", config=cfg)
    assert (code.candidates[0].model, code.candidates[0].timeout) == ("qwen2.5-coder:7b", 30.0)
    chat = routing.plan(ALL_READY, "ollama", prompt_text="and then?", conversation=True, config=cfg)
    assert chat.candidates[0].model == "llama3.2:3b"
    plain = routing.plan(ALL_READY, "ollama", prompt_text="Write a story", config=cfg, api_keys={"anthropic": True})
    assert plain.candidates[0].model is None
    anthropic = next(c for c in plain.candidates if c.provider == "anthropic")
    assert (anthropic.model, anthropic.timeout) == ("claude-x", 60.0)
    given = routing.plan(ALL_READY, "ollama", prompt_text="hi", config=cfg, timeout_given=True)
    assert given.candidates[0].timeout is None  # the request's own timeout wins
