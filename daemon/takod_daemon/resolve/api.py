"""What a run of a direct API backend (``anthropic``, ``openai``, ``openrouter``, ...) will use.

These backends are takod's own HTTP clients (``inference/openai_api.py``,
``inference/anthropic_api.py``): always installed, ready exactly when their one
key variable is in the pool (the daemon's environment, stored and settings keys,
the client's overlay). The base URL is ``<NAME>_BASE_URL`` when set, else the
service's own. Readiness reports this plan and the engine runs it.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from takod.schema import API_PROVIDERS

from ..inference import anthropic_api, openai_api
from ..inference.routing import API_BACKENDS
from ..redact import mask_secret

assert tuple(API_BACKENDS) == API_PROVIDERS, "routing's API backends are the public API provider names"


class ApiPlan(msgspec.Struct, frozen=True):
    """The key variable, where its value comes from (None: nowhere), the URL a run will
    use, and the model a prompt that names none gets (None: the caller must name one)."""

    provider: str
    key_var: str
    base_url: str
    model: str | None
    masked: str = ""
    source: str | None = None


def default_model(provider: str) -> str | None:
    """The service's own default model, by provider name (a base URL pointing elsewhere
    does not change which service this is)."""
    if provider == "anthropic":
        return anthropic_api.DEFAULT_MODEL
    return next((b.default_model for b in openai_api.BACKENDS if b.name == provider), None)


def resolve_api(
    provider: str, pool: Mapping[str, str], *, sources: Mapping[str, str] | None = None, masked_pool: bool = False
) -> ApiPlan:
    """The plan of API backend ``provider``; ``sources`` names where each pool key came from."""
    key_var, _kind, default_url = API_BACKENDS[provider]
    base = pool.get(f"{provider.upper()}_BASE_URL") or default_url
    model = default_model(provider)
    value = pool.get(key_var)
    if not value:
        return ApiPlan(provider, key_var, base, model)
    masked = value if masked_pool else mask_secret(value)
    source = (sources or {}).get(key_var, f"env:{key_var}")
    return ApiPlan(provider, key_var, base, model, masked, source)
