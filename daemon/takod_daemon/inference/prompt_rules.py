"""What smart routing reads in a prompt: pure functions over its text.

The rules are the Inference skill's (its routing guide): privacy keywords and
"locally" keep a prompt on this machine, "with Claude" / "don't use Ollama"
keep it off Ollama, and a complexity score sends design, planning, comparison,
research and very long prompts to the bigger models first. Each function
returns the words that decided, so the route trace can quote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Private material: credentials, personal data, health and money, and code or
# documents that are not the user's to share.
_PRIVATE = re.compile(
    r"\b(passwords?|passphrases?|secrets?|credentials?|private keys?|api keys?|access tokens?|auth tokens?|"
    r"ssns?|social security( number)?|pii|personal (data|information)|personally identifiable|"
    r"medical|diagnos[ie]s|patients?|hipaa|health records?|credit cards?|bank accounts?|salar(y|ies)|"
    r"tax returns?|confidential|proprietary|private|nda|trade secrets?|internal only|under embargo)\b",
    re.I,
)

# Asking for the local model. "don't use ollama" is a cloud request, checked first.
_LOCAL = re.compile(
    r"\b(locally|offline|on this machine|on[- ]device|local (model|llm|ollama)|(with|using|via|use|on) ollama)\b",
    re.I,
)
_CLOUD = re.compile(
    r"\b((do not|don'?t|never) use ollama|not (with|on) ollama|(with|use|using|via) claude( api)?|claude api)\b",
    re.I,
)

# Reasoning markers: each group counts once, HIGH points each.
_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("design", re.compile(r"\b(design (a|an|the)|architect(ure|ing)?|system design)\b", re.I)),
    ("planning", re.compile(r"\b(implementation plan|plan (for|out)|roadmap|step[- ]by[- ]step|multi[- ]step|migration plan)\b", re.I)),
    ("comparison", re.compile(r"\b(pros and cons|trade[- ]?offs?|compare|comparison|versus|evaluate (the )?options)\b", re.I)),
    ("research", re.compile(r"\b(best practices|research|state of the art|literature)\b", re.I)),
    ("scope", re.compile(r"\b(entire (codebase|repo(sitory)?|project)|multiple files|all (the )?components|across the codebase)\b", re.I)),
    ("building", re.compile(r"\b(build (a|an|me)|create new files|implement (a|an) (new )?(feature|system|service))\b", re.I)),
)
_SIMPLE = re.compile(r"\b(this file|this function|single function|just this|quick(ly)?|simple|briefly|one line|in a sentence)\b", re.I)
_NUMBERED = re.compile(r"^\s*(\d+[.)]|[-*])\s+\S", re.M)

HIGH = 10  # one marker, a long prompt or a large piece of code: complex on its own
LOW = 5
THRESHOLD = 10
LONG_PROMPT = 1000  # characters (the skill's figure)
MEDIUM_PROMPT = 400
LARGE_CODE = 80  # lines of code

_FENCE = re.compile(r"```[^\n]*\n(.*?)(```|\Z)", re.S)
_CODE_WORDS = re.compile(
    r"(```|\b(code|function|method|class|bug|debug|refactor|compile[sr]?|stack ?trace|traceback|regex|script|"
    r"snippet|python|javascript|typescript|rust|golang|java|c\+\+|sql|bash)\b|\bdef \w+\(|=>|\breturn\b.*;|[{};]\s*$)",
    re.I | re.M,
)


@dataclass(frozen=True)
class Complexity:
    score: int
    signals: tuple[str, ...]

    @property
    def complex(self) -> bool:
        return self.score >= THRESHOLD

    def explain(self) -> str:
        return f"score {self.score}: " + ", ".join(self.signals)


def private_match(text: str) -> str | None:
    """The private-material word in ``text``, if any."""
    m = _PRIVATE.search(text)
    return m.group(0) if m else None


def cloud_request(text: str) -> str | None:
    """The words asking for Claude rather than the local model, if any."""
    m = _CLOUD.search(text)
    return m.group(0) if m else None


def local_request(text: str) -> str | None:
    """The words asking for the local model, if any (never when it asks for Claude)."""
    if cloud_request(text):
        return None
    m = _LOCAL.search(text)
    return m.group(0) if m else None


def code_lines(text: str) -> int:
    """Lines of code: inside fences when there are any, else every line when the text looks like code."""
    fenced = _FENCE.findall(text)
    if fenced:
        return sum(len([ln for ln in body.splitlines() if ln.strip()]) for body, _ in fenced)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    coded = [ln for ln in lines if re.search(r"[{};=()]\s*$|^\s*(def|class|import|from|return|if|for|while)\b", ln)]
    return len(lines) if len(coded) * 2 >= len(lines) > 1 else 0


def looks_like_code(text: str) -> bool:
    """A prompt about code (for ``OLLAMA_CODE_MODEL``)."""
    return bool(_CODE_WORDS.search(text))


def complexity(text: str) -> Complexity:
    """The skill's complexity score: reasoning markers, length and code size add,
    small-scope words subtract; ``THRESHOLD`` or more is complex."""
    score, signals = 0, []
    for name, pattern in _MARKERS:
        if m := pattern.search(text):
            score += HIGH
            signals.append(f"{name} {m.group(0)!r}")
    if len(text) > LONG_PROMPT:
        score += HIGH
        signals.append(f"{len(text)} characters")
    elif len(text) > MEDIUM_PROMPT:
        score += LOW
        signals.append(f"{len(text)} characters")
    if (lines := code_lines(text)) > LARGE_CODE:
        score += HIGH
        signals.append(f"{lines} lines of code")
    if len(_NUMBERED.findall(text)) >= 3 or text.count("?") >= 3:
        score += LOW
        signals.append("several steps or questions")
    if m := _SIMPLE.search(text):
        score -= LOW
        signals.append(f"small scope {m.group(0)!r}")
    return Complexity(score, tuple(signals) or ("no markers",))
