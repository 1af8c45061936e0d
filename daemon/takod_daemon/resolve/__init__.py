"""What a run of each provider will use, decided once.

``resolve.pi.resolve_pi`` and ``resolve.api.resolve_api`` are the single
answer to "what will this provider run with": binary, agent directory,
credential and where it comes from, model, child environment. Readiness
(``readiness.py``) reports that answer and the engine executes it, so the two
cannot disagree.
"""
