"""Refreshing OAuth grants: what to send each token endpoint (:mod:`.endpoints`)
and how to read its answer and failures (:mod:`.grants`)."""

from takod_daemon.refresh.grants import (
    CODEX_GRANT,
    PI_EXPIRY_MARGIN_MS,
    REFRESHABLE_PI_PROVIDERS,
    REQUEST_TIMEOUT_S,
    GrantExpiry,
    RefreshError,
    RefreshPermanent,
    RefreshTransient,
    classify_failure,
    codex_grant_expiry,
    pi_grant_expiry,
    pi_stored_expires,
    reauth_guidance,
    refresh_codex,
    refresh_pi_entry,
)

__all__ = [
    "CODEX_GRANT",
    "PI_EXPIRY_MARGIN_MS",
    "REFRESHABLE_PI_PROVIDERS",
    "REQUEST_TIMEOUT_S",
    "GrantExpiry",
    "RefreshError",
    "RefreshPermanent",
    "RefreshTransient",
    "classify_failure",
    "codex_grant_expiry",
    "pi_grant_expiry",
    "pi_stored_expires",
    "reauth_guidance",
    "refresh_codex",
    "refresh_pi_entry",
]
