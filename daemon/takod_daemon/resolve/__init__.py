"""What a run of each provider will use, decided once.

``resolve.pi.resolve_pi``, ``resolve.api.resolve_api``, ``resolve.gemini.resolve_gemini``,
``resolve.codex.resolve_codex``, ``resolve.claude.resolve_claude`` and
``resolve.ollama.resolve_ollama`` are the single answer to "what will this
provider run with": binary, agent directory, credential and where it comes
from, model, child environment, settings the run needs. Readiness
(``readiness.py``) reports that answer and the engine executes it, so the two
cannot disagree.
"""
