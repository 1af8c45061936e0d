"""Where Ollama is and which models it has, over HTTP, without loading a model.

``OLLAMA_HOST`` is parsed exactly as Ollama's own ``envconfig.Host()`` does, then
made connectable as ``ConnectableHost()`` does (``0.0.0.0`` -> ``127.0.0.1``,
``::`` -> ``::1``). The probe reads only ``GET /api/version`` and
``GET /api/tags``: never generate, chat or show, so probing never makes Ollama
load a model into memory.

The chat model is a model that can chat: an embedding-only model
(``nomic-embed-text``, ``mxbai-embed-large``, ``all-minilm``, ...) answers
``/api/chat`` with an error. ``/api/tags`` lists each model's
``capabilities`` on newer Ollama (``completion``, ``embedding``, ``tools``,
``vision``, ``thinking``, ...; the same list ``/api/show`` gives); older
versions leave it out, and then the model family decides (BERT-style encoders:
``bert``, ``nomic-bert``, ...), else an ``embed`` in the name.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, TypeVar

import anyio
import httpx
import msgspec

from takod_daemon.peer_input import MAX_BODY, TooLarge, decode_json, fetch
from takod_daemon.redact import redact_text

DEFAULT_PORT = 11434
# Loopback answers in milliseconds; a LAN host in tens. Status must stay fast.
PROBE_TIMEOUT = 2.0

HostSource = Literal["settings", "env", "default"]
ModelSource = Literal["settings", "env", "default", "first-listed"]

_PORT_RE = re.compile(r"[+-]?[0-9]+")  # Go's strconv.ParseInt(s, 10, 32) syntax


class OllamaEndpoint(msgspec.Struct, frozen=True):
    """An Ollama base URL, split as Ollama splits it. ``path`` is a prefix for
    every API path (a reverse proxy's mount point), without the leading slash."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}" + (f"/{self.path}" if self.path else "")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``; None where Go returns an error."""
    last = hostport.rfind(":")
    if last < 0:
        return None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != last:  # no "]", or "]" not followed by the last colon
            return None
        host, first_after = hostport[1:end], end + 1
        if "[" in hostport[1:] or "]" in hostport[first_after:]:
            return None
    else:
        host = hostport[:last]
        if ":" in host or "[" in hostport or "]" in hostport:
            return None
    return host, hostport[last + 1 :]


def _go_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``; None when Go would not parse it."""
    if "%" in text:  # Go's ParseIP takes no IPv6 zone
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # Go prints v4-in-v6 addresses as plain IPv4
    return str(ip)


def _go_port(text: str) -> int | None:
    if not _PORT_RE.fullmatch(text):
        return None
    port = int(text)
    return port if 0 <= port <= 65535 else None


def parse_ollama_host(raw: str) -> OllamaEndpoint:
    """``OLLAMA_HOST`` as Ollama's ``envconfig.Host()`` reads it (providers.md D1).

    No scheme: ``http`` on port 11434 (``ollama.com`` alone means
    ``https://ollama.com:443``); ``http://`` defaults to port 80 and ``https://``
    to 443; text after the first ``/`` is a path prefix; a bad port falls back to
    the default; an empty host (``:1234``) stays empty. Never raises.
    """
    text = raw.strip().strip("\"'").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = "127.0.0.1", ""
        ip = _go_ip(hostport.strip("[]"))
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
    port = _go_port(port_text)
    return OllamaEndpoint(scheme, host, default_port if port is None else port, path)


def connectable(endpoint: OllamaEndpoint) -> OllamaEndpoint:
    """``ConnectableHost()``: bind-all addresses become loopback for a client.

    An empty host (``:1234``), which Go dials as the local machine, becomes
    ``127.0.0.1`` too: an HTTP client needs a host.
    """
    ip = _go_ip(endpoint.host)
    if endpoint.host == "" or ip == "0.0.0.0":
        return msgspec.structs.replace(endpoint, host="127.0.0.1")
    if ip == "::":
        return msgspec.structs.replace(endpoint, host="::1")
    return endpoint


def resolve_endpoint(settings_host: str | None, env: Mapping[str, str]) -> tuple[OllamaEndpoint, HostSource]:
    """The endpoint to connect to: ``settings.ollama_host``, else ``OLLAMA_BASE_URL``
    (the Inference skill's client address), else ``OLLAMA_HOST``, else
    ``127.0.0.1:11434``; blank values count as unset."""
    candidates: tuple[tuple[HostSource, str | None], ...] = (
        ("settings", settings_host),
        ("env", env.get("OLLAMA_BASE_URL")),
        ("env", env.get("OLLAMA_HOST")),
    )
    for source, value in candidates:
        if value and value.strip():
            return connectable(parse_ollama_host(value)), source
    return connectable(parse_ollama_host("")), "default"


# --- /api/tags and model names ------------------------------------------------


class OllamaModelDetails(msgspec.Struct):
    """``details`` of a ``/api/tags`` entry."""

    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class OllamaModel(msgspec.Struct):
    """One ``/api/tags`` entry; ``size`` is in bytes."""

    name: str
    model: str = ""
    modified_at: str = ""
    size: int = 0
    digest: str = ""
    details: OllamaModelDetails = msgspec.field(default_factory=OllamaModelDetails)
    remote_model: str | None = None
    remote_host: str | None = None
    capabilities: list[str] | None = None


class _VersionReply(msgspec.Struct):
    version: str


class _TagsReply(msgspec.Struct):
    models: list[OllamaModel] | None = None  # a nil Go slice encodes as null


class _ErrorReply(msgspec.Struct):
    error: str = ""


def _name_key(name: str) -> tuple[str, ...]:
    """Ollama's ``ParseName`` with defaults filled in, case-folded as its ``EqualFold``
    compares: ``llama3``, ``llama3:latest`` and ``registry.ollama.ai/library/llama3``
    are one model."""
    rest, tag = name.strip(), ""
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, tag = rest.rpartition(":")
    parts = rest.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else ""
    host = "/".join(parts[:-2]).rpartition("://")[2] if len(parts) >= 3 else ""
    return tuple(
        part.casefold()
        for part in (host or "registry.ollama.ai", namespace or "library", model, tag or "latest")
    )


def find_model(models: Sequence[OllamaModel], wanted: str) -> OllamaModel | None:
    """The listed model Ollama would use for ``wanted``, or None if it is not pulled."""
    key = _name_key(wanted)
    return next((m for m in models if _name_key(m.name) == key), None)


# Families of encoder-only (embedding) models in Ollama's library.
EMBEDDING_FAMILIES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert", "jina-bert-v2", "xlm-roberta", "roberta", "new"})


def embedding_only(model: OllamaModel) -> bool:
    """Whether ``model`` can only embed, never chat (see the module docstring)."""
    if model.capabilities is not None:
        return "completion" not in model.capabilities and "embedding" in model.capabilities
    families = {model.details.family, *(model.details.families or [])} - {""}
    if families:
        return families <= EMBEDDING_FAMILIES
    return "embed" in model.name.lower()


class ModelChoice(NamedTuple):
    """The model takod would use; ``problem`` is ``model-not-pulled``, ``embedding-model``,
    ``no-chat-model`` or None; ``why`` says why this model when takod chose it."""

    model: str | None
    source: ModelSource | None
    problem: str | None
    detail: str | None
    why: str | None = None


def choose_model(
    models: Sequence[OllamaModel], *, settings_model: str | None, env_model: str | None,
    default_model: str | None = None,
) -> ModelChoice:
    """``settings.ollama_model``, else ``OLLAMA_MODEL``, else ``OLLAMA_DEFAULT_MODEL``
    (``default_model``, the Inference skill's), else the first listed model that can chat.

    A named model must be pulled and able to chat; the chosen name is Ollama's own spelling of it.
    """
    candidates: tuple[tuple[ModelSource, str | None], ...] = (
        ("settings", settings_model),
        ("env", env_model),
        ("default", default_model),
    )
    for source, wanted in candidates:
        if wanted and wanted.strip():
            found = find_model(models, wanted)
            if found is None:
                name = wanted.strip()
                fix = f"{name} is not pulled; run `ollama pull {name}`"
                return ModelChoice(name, source, "model-not-pulled", fix)
            if embedding_only(found):
                fix = f"{found.name} is an embedding model and cannot chat; choose a chat model with `takod ollama model NAME`"
                return ModelChoice(found.name, source, "embedding-model", fix)
            return ModelChoice(found.name, source, None, None)
    if not models:
        return ModelChoice(None, None, "model-not-pulled", "no model is pulled; run `ollama pull <model>`")
    embedders = [m.name for m in models if embedding_only(m)]
    chat = next((m for m in models if not embedding_only(m)), None)
    if chat is None:
        fix = f"only embedding models are pulled ({', '.join(embedders)}); pull a chat model: `ollama pull llama3.2`"
        return ModelChoice(None, None, "no-chat-model", fix)
    why = "the first listed model"
    skipped = [m.name for m in models[: models.index(chat)]]  # all embedding-only, by the choice above
    if skipped:
        why = f"the first listed model that can chat (skipped {', '.join(skipped)}: embedding only)"
    return ModelChoice(chat.name, "first-listed", None, None, why)


# --- the probe ----------------------------------------------------------------


class OllamaProbe(msgspec.Struct, frozen=True, kw_only=True):
    """What one probe found.

    ``problem``: ``unreachable`` (refused, timed out, bad URL), ``bad-response``
    (something answered, but not like Ollama), ``model-not-pulled``, or None.
    """

    url: str
    host_source: HostSource
    reachable: bool = False
    version: str | None = None
    models: list[OllamaModel] = []
    model: str | None = None
    model_source: ModelSource | None = None
    model_why: str | None = None  # why this model, when takod chose it
    problem: str | None = None
    detail: str | None = None


class _BadResponse(Exception):
    pass


_Reply = TypeVar("_Reply", _VersionReply, _TagsReply)


async def _get(client: httpx.AsyncClient, path: str, reply_type: type[_Reply]) -> _Reply:
    try:
        response = await fetch(client, "GET", path)
    except TooLarge:  # bounded: whatever answers must not make status hold megabytes
        raise _BadResponse(f"{path} answered more than {MAX_BODY} bytes, which is not Ollama") from None
    if response.status_code != 200:
        try:
            said = decode_json(response.content, _ErrorReply).error[:200]
        except msgspec.DecodeError:
            said = ""
        raise _BadResponse(f"{path} answered HTTP {response.status_code}" + (f": {said}" if said else ""))
    try:
        return decode_json(response.content, reply_type)
    except msgspec.DecodeError as exc:
        raise _BadResponse(f"{path} answered something that is not Ollama's ({exc})") from None


def _is_loopback(host: str) -> bool:
    ip = _go_ip(host)
    return host == "localhost" or (ip is not None and ipaddress.ip_address(ip).is_loopback)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every probe: building one loads the CA bundle, ~20 ms of
    event-loop time that a per-probe client would pay even for plain http."""
    return ssl.create_default_context()


async def probe_ollama(
    *,
    settings_host: str | None = None,
    settings_model: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> OllamaProbe:
    """Ask Ollama for its version and model list; choose the model takod would use.

    ``env`` defaults to this process's environment (for ``OLLAMA_HOST`` and
    ``OLLAMA_MODEL``). The whole probe is bounded by ``timeout``: a server that
    accepts and never answers is ``unreachable`` after it. Never raises for
    network trouble.
    """
    env = os.environ if env is None else env
    endpoint, host_source = resolve_endpoint(settings_host, env)
    url = endpoint.url

    def failed(problem: str, detail: str, reachable: bool = False) -> OllamaProbe:
        return OllamaProbe(
            url=url, host_source=host_source, reachable=reachable, problem=problem, detail=redact_text(detail)
        )

    try:
        with anyio.fail_after(timeout):
            # Like Go's ProxyFromEnvironment, never send loopback traffic through a proxy.
            async with httpx.AsyncClient(
                base_url=url, timeout=timeout, trust_env=not _is_loopback(endpoint.host), verify=_ssl_context()
            ) as client:
                version = await _get(client, "/api/version", _VersionReply)
                tags = await _get(client, "/api/tags", _TagsReply)
    except (TimeoutError, httpx.TimeoutException):
        return failed("unreachable", f"Ollama at {url} did not answer within {timeout:g}s")
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        return failed("unreachable", f"cannot reach Ollama at {url}: {exc}")
    except httpx.HTTPError as exc:  # e.g. a body its Content-Encoding cannot decode: it answered, badly
        return failed("bad-response", f"{url} answered something that is not Ollama's ({type(exc).__name__})", True)
    except _BadResponse as exc:
        return failed("bad-response", f"{url}{exc}", reachable=True)
    models = tags.models or []
    choice = choose_model(models, settings_model=settings_model, env_model=env.get("OLLAMA_MODEL"),
                          default_model=env.get("OLLAMA_DEFAULT_MODEL"))
    return OllamaProbe(
        url=url,
        host_source=host_source,
        reachable=True,
        version=version.version,
        models=models,
        model=choice.model,
        model_source=choice.source,
        model_why=choice.why,
        problem=choice.problem,
        detail=choice.detail,
    )
