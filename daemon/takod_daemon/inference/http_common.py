"""What the HTTP backends (Ollama, Anthropic, OpenAI-compatible) share.

- :func:`failure_for_status`, :func:`failure_for_transport`, :func:`kind_for_text`:
  HTTP statuses, transport errors and provider error texts as
  :class:`ProviderFailure` kinds (401/403 auth, 429/402 rate_limit with
  Retry-After, 404 model, 5xx and connection trouble unavailable, timeouts
  timeout);
- :func:`parse_retry_after`: ``retry-after-ms``, then ``Retry-After`` as
  seconds or an HTTP date;
- :func:`scrub`: every message that leaves a runner goes through it: the
  request's own secrets are masked wherever they appear (a server may quote the
  key it refused), then anything else secret-looking (:func:`redact_text`);
- :func:`run_guarded`: the whole-run deadline and the mapping of httpx's
  exceptions and of answers too large to read, the same for every runner
  (bodies and lines are read with :mod:`takod_daemon.peer_input`);
- :class:`EmbedResult`: what an embedding call returns.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import anyio
import httpx
import msgspec

from takod_daemon.inference.types import FailureKind, ProviderFailure
from takod_daemon.peer_input import TooLarge
from takod_daemon.redact import mask_secret, redact_text

MAX_MESSAGE = 600  # characters of a provider's error text kept in a failure message
# An embeddings answer may be this large: JSON floats take up to ~25 bytes, so it
# holds more numbers than the 16 MiB frame that carries them to the client can.
MAX_EMBED_BODY = 64 * 1024 * 1024

T = TypeVar("T")


class EmbedResult(msgspec.Struct, frozen=True, kw_only=True):
    """One vector per input text, in input order."""

    model: str
    vectors: list[list[float]]
    input_tokens: int | None = None


# --- messages -------------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str | None] = (), *, limit: int = MAX_MESSAGE) -> str:
    """``text`` safe to show: known secrets masked, secret-looking substrings
    masked, whitespace collapsed, cut to ``limit`` characters."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, mask_secret(secret))
    # A peer's error text may be megabytes (a mid-stream error line): the pattern
    # masking runs only on a margin past what can be shown.
    text = " ".join(redact_text(text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Retry-After ----------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str] | httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None.

    ``retry-after-ms`` (sent by OpenAI and Anthropic; their SDKs prefer it)
    wins over ``Retry-After``, which is delta-seconds or an HTTP date.
    """
    headers = httpx.Headers(headers)
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _non_negative(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


# --- classification -------------------------------------------------------------

_MODEL_PROBLEM = re.compile(
    r"(?i)\bmodel\b.{0,80}?\b(?:not found|does not exist|not exist|not available|unknown|not a valid|"
    r"invalid|not supported|unsupported|no access|not allowed|try pulling)|"
    r"\bmodel_not_found\b|\bunknown model\b|\binvalid model\b|\bnot a valid model\b"
)
_RATE = re.compile(r"(?i)rate.?limit|too many requests|quota|resource.?exhausted|insufficient.?credits|\b429\b")
_AUTH = re.compile(
    r"(?i)unauthori[sz]ed|unauthenticated|invalid.{0,20}api.?key|incorrect api key|api key not valid|"
    r"authentication|permission denied|forbidden|\b401\b|\b403\b"
)
_TIMEOUT = re.compile(r"(?i)timed? ?out|deadline exceeded")
_BAD_REQUEST = re.compile(r"(?i)context length|context window|too long|maximum context|invalid request|bad request")


def mentions_model_problem(text: str) -> bool:
    """Does a provider's error text say the model is missing or not usable?"""
    return bool(_MODEL_PROBLEM.search(text))


def kind_for_text(text: str, default: FailureKind = "unavailable") -> FailureKind:
    """The failure kind a free-text provider error (a mid-stream error line)
    most likely means."""
    if mentions_model_problem(text):
        return "model"
    if _RATE.search(text):
        return "rate_limit"
    if _AUTH.search(text):
        return "auth"
    if _TIMEOUT.search(text):
        return "timeout"
    if _BAD_REQUEST.search(text):
        return "bad_request"
    return default


def kind_for_status(status: int, message: str = "") -> FailureKind:
    """The failure kind of a non-2xx HTTP status (``message`` refines 400/403/404)."""
    if status in (401, 407):
        return "auth"
    if status == 403:
        return "model" if mentions_model_problem(message) else "auth"
    if status in (402, 429):
        return "rate_limit"
    if status == 404:
        # A missing model, or an endpoint that does not exist (a wrong base URL).
        return "model" if "model" in message.lower() else "unavailable"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "unavailable"
    return "model" if mentions_model_problem(message) else "bad_request"


def failure_for_status(
    where: str,
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
    kind: FailureKind | None = None,
) -> ProviderFailure:
    """A :class:`ProviderFailure` for an HTTP error answer from ``where``."""
    said = scrub(message, secrets)
    text = f"{where} answered HTTP {status}" + (f": {said}" if said else "")
    return ProviderFailure(kind or kind_for_status(status, message), text, retry_after=retry_after)


def unreadable(where: str, what: str, exc: Exception) -> ProviderFailure:
    """A ``crashed`` failure: ``where`` answered ``what`` in a shape we cannot read."""
    return ProviderFailure("crashed", f"{where} answered {what} that we cannot read: {exc}")


def failure_for_transport(exc: Exception, where: str, secrets: Iterable[str | None] = ()) -> ProviderFailure:
    """A :class:`ProviderFailure` for httpx's transport errors."""
    detail = scrub(str(exc) or type(exc).__name__, secrets)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderFailure("timeout", f"{where} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return ProviderFailure("unavailable", f"cannot connect to {where}: {detail}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return ProviderFailure("unavailable", f"{where} broke off the answer: {detail}")
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
        return ProviderFailure("unavailable", f"{where} is not a usable URL: {detail}")
    return ProviderFailure("unavailable", f"{where}: {type(exc).__name__}: {detail}")


async def run_guarded(
    body: Callable[[], Awaitable[T]], *, timeout: float, where: str, secrets: Iterable[str | None] = ()
) -> T:
    """Run ``body`` within ``timeout`` seconds; timeouts and httpx errors become
    :class:`ProviderFailure`. Cancellation from outside passes through untouched."""
    secrets = tuple(secrets)
    try:
        with anyio.fail_after(timeout):
            return await body()
    except TimeoutError:
        raise ProviderFailure("timeout", f"{where} did not finish within {timeout:g}s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise failure_for_transport(exc, where, secrets) from None
    except TooLarge as exc:  # a body or a line past what takod reads: memory stays bounded
        raise ProviderFailure("crashed", f"{where} answered more than takod reads: a {exc}") from None


def request_timeout(seconds: float) -> httpx.Timeout:
    """Per-request httpx timeouts: the run's own budget, whatever the client's defaults."""
    return httpx.Timeout(seconds, connect=min(seconds, 15.0))


def join_url(base: str, path: str) -> str:
    """``base`` (no trailing slash kept) + ``/path``."""
    return base.rstrip("/") + "/" + path.lstrip("/")
