"""A loopback stand-in for the Ollama HTTP API, faithful to providers.md D2-D6.

Serves ``GET /`` and ``HEAD /`` ("Ollama is running"), ``GET /api/version``,
``GET /api/tags``, ``GET /api/ps``, and ``POST /api/chat``, ``/api/generate``
(NDJSON, chunked, streaming unless ``"stream": false``), ``/api/embed`` and
``/api/show`` (``model_info`` with the parameter count and context length).
Unknown models get Ollama's 404 ``{"error": "model 'NAME' not found"}``.

Failure modes switch at run time with :meth:`FakeOllama.set_mode`:

- ``refuse``: nothing listens on the port (connection refused);
- ``hang``: accept, read the request, never answer;
- ``http-500``: every API call answers 500 ``{"error": ...}``;
- ``http-401`` / ``http-429``: every API call answers 401 ``unauthorized`` /
  429 with ``Retry-After: retry_after`` (Ollama's cloud models and proxies);
- ``stream-error``: chat/generate streams break off with an ``{"error": ...}``
  line after HTTP 200 (a non-streaming call gets a 500);
- ``drop-mid-stream``: chat/generate streams stop after a few lines and the
  connection closes without ending the chunked body;
- ``malformed``: a line that is not JSON in the middle of a stream;
- ``slow-stream``: chat/generate chunks ``chunk_delay`` seconds apart;
- any bytes at all: :meth:`~tests.fakes.http_base.LoopbackServer.answer_with`.

Thinking: a model whose tag entry lists the ``thinking`` capability streams
``thinking`` first when the request sets ``think``; any other model answers
``think: true`` with Ollama's 400 ``"NAME" does not support thinking``.

A client that goes away mid-stream (noticed while waiting between chunks or
when a write fails) is recorded in ``ollama.disconnects``;
:meth:`FakeOllama.wait_disconnect` waits for one, bounded.

Use it as a context manager (``with FakeOllama() as ollama:``) or through the
``fake_ollama`` pytest fixture; ``ollama.host`` is an ``OLLAMA_HOST`` value.
Every request is recorded in ``ollama.requests``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from tests.fakes.http_base import FakeHandler, LoopbackServer

Mode = Literal[
    "ok",
    "refuse",
    "hang",
    "http-500",
    "http-401",
    "http-429",
    "stream-error",
    "drop-mid-stream",
    "malformed",
    "slow-stream",
]

CREATED_AT = "2026-08-21T10:00:00.000000000Z"
STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


def tag_entry(
    name: str,
    *,
    size: int = 2_019_393_189,
    family: str = "llama",
    parameter_size: str = "3.2B",
    quantization_level: str = "Q4_K_M",
    capabilities: list[str] | None = None,
) -> dict[str, Any]:
    """One ``/api/tags`` model entry with every field Ollama sends (``capabilities``
    only when given, as older Ollama versions leave it out)."""
    entry: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": "2026-08-01T12:00:00.123456789Z",
        "size": size,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size,
            "quantization_level": quantization_level,
        },
    }
    if capabilities is not None:
        entry["capabilities"] = capabilities
    return entry


def default_models() -> list[dict[str, Any]]:
    return [
        tag_entry("llama3.2:latest"),
        tag_entry(
            "nomic-embed-text:latest",
            size=274_302_450,
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
        ),
    ]


def _same_model(a: str, b: str) -> bool:
    # Ollama's tag defaults to "latest" and names compare case-insensitively.
    def full(name: str) -> str:
        return (name if name.rfind(":") > name.rfind("/") else name + ":latest").casefold()

    return full(a) == full(b)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any  # decoded JSON, or None
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


class FakeOllama(LoopbackServer):
    """A fake Ollama on ``127.0.0.1:<free port>``; see the module docstring."""

    def __init__(
        self,
        *,
        models: list[dict[str, Any]] | None = None,
        version: str = "0.12.6",
        reply: str = "Hello from the fake Ollama, one token at a time.",
        thinking: str = "Thinking it over first.",
        chunk_delay: float = 0.2,
        embedding_dims: int = 8,
        retry_after: str = "7",
        mode: Mode = "ok",
    ) -> None:
        super().__init__(_Handler)
        self.models = default_models() if models is None else models
        self.version = version
        self.reply = reply
        self.thinking = thinking
        self.chunk_delay = chunk_delay
        self.embedding_dims = embedding_dims
        self.retry_after = retry_after
        self.requests: list[RecordedRequest] = []
        self._mode: Mode = mode

    @property
    def url(self) -> str:
        return self.origin

    @property
    def host(self) -> str:
        """This server as an ``OLLAMA_HOST`` value."""
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [r.path for r in self.requests]

    def set_mode(self, mode: Mode) -> None:
        """Switch failure mode; ``refuse`` closes the listener, leaving it reopens it
        on the same port."""
        if mode == "refuse" and self._server is not None:
            self._close_listener()
        elif mode != "refuse" and self._server is None and self.port:
            self._listen(self.port)
        self._mode = mode

    def start(self) -> FakeOllama:
        super().start()
        if self._mode == "refuse":
            self._close_listener()  # the port stays known and refuses connections
        return self


class _Handler(FakeHandler[FakeOllama]):
    server_version = "fake-ollama"

    # --- plumbing ---

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, {"error": message}, headers)

    def _chunk(self, value: Any) -> bool:
        return self.write_chunk(json.dumps(value).encode() + b"\n")

    def _read_body(self) -> tuple[bytes, Any]:
        raw = self.read_body()
        try:
            return raw, json.loads(raw) if raw else None
        except ValueError:
            return raw, None

    def _begin(self, body: Any = None) -> bool:
        """Record the request and apply the connection-level modes; False if handled."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.requests.append(RecordedRequest(self.command, self.path, body, headers))
        if self.send_canned():
            return False
        if self.fake.mode == "hang":
            self.fake.wait_released(3600)
            self.close_connection = True
            return False
        if self.fake.mode == "http-500" and self.path.startswith("/api/"):
            self._error(500, "fake ollama: internal server error")
            return False
        if self.fake.mode == "http-401" and self.path.startswith("/api/"):
            self._error(401, "unauthorized")
            return False
        if self.fake.mode == "http-429" and self.path.startswith("/api/"):
            self._error(429, "too many requests, please retry later", {"Retry-After": self.fake.retry_after})
            return False
        return True

    # --- routes ---

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._begin():
            return
        fake = self.fake
        if self.path == "/":
            self.send_body(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif self.path == "/api/version":
            self.send_json(200, {"version": fake.version})
        elif self.path == "/api/tags":
            self.send_json(200, {"models": fake.models})
        elif self.path == "/api/ps":
            self.send_json(200, {"models": []})
        else:
            self.send_body(404, b"404 page not found", "text/plain")

    def do_POST(self) -> None:
        raw, body = self._read_body()
        if not self._begin(body):
            return
        routes = {"/api/chat": self._generate, "/api/generate": self._generate, "/api/embed": self._embed,
                  "/api/show": self._show}
        route = routes.get(self.path)
        if route is None:
            self.send_body(404, b"404 page not found", "text/plain")
        elif not isinstance(body, dict):
            self._error(400, "invalid JSON request body" if raw else "missing request body")
        elif not body.get("model"):
            self._error(400, "model is required")
        elif not any(_same_model(body["model"], m["name"]) for m in self.fake.models):
            self._error(404, f"model '{body['model']}' not found")
        elif body.get("think") and self.path != "/api/embed" and not self._can_think(body["model"]):
            self._error(400, f'"{body["model"]}" does not support thinking')
        else:
            route(body)

    def _show(self, body: dict[str, Any]) -> None:
        """Ollama's answer, trimmed to the fields a client reads (no modelfile, license, template)."""
        entry = next(m for m in self.fake.models if _same_model(body["model"], m["name"]))
        details = entry["details"]
        size = details["parameter_size"]
        scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(size[-1:], 1)
        arch = details["family"]
        self.send_json(200, {
            "parameters": "temperature 0.7",
            "details": details,
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": int(float(size.rstrip("KMB") or 0) * scale),
                f"{arch}.context_length": 2048 if arch == "nomic-bert" else 131072,
            },
            "capabilities": entry.get("capabilities") or (["embedding"] if arch == "nomic-bert" else ["completion"]),
            "modified_at": entry["modified_at"],
        })

    def _can_think(self, model: str) -> bool:
        entry = next(m for m in self.fake.models if _same_model(model, m["name"]))
        return "thinking" in (entry.get("capabilities") or [])

    def _generate(self, body: dict[str, Any]) -> None:
        fake = self.fake
        chat = self.path == "/api/chat"
        tokens = re.findall(r"\S+\s*", fake.reply)

        thoughts = re.findall(r"\S+\s*", fake.thinking) if body.get("think") else []

        def piece(text: str, done: bool, thinking: str | None = None) -> dict[str, Any]:
            chunk: dict[str, Any] = {"model": body["model"], "created_at": CREATED_AT}
            if chat:
                chunk["message"] = {"role": "assistant", "content": text}
                if thinking is not None:
                    chunk["message"]["thinking"] = thinking
            else:
                chunk["response"] = text
                if thinking is not None:
                    chunk["thinking"] = thinking
            chunk["done"] = done
            return chunk

        final = piece("", True) | {
            "done_reason": "stop",
            "total_duration": 1_250_000_000,
            "load_duration": 50_000_000,
            "prompt_eval_count": 12,
            "prompt_eval_duration": 100_000_000,
            "eval_count": len(tokens),
            "eval_duration": 1_000_000_000,
        }
        if not chat:
            final["context"] = [1, 2, 3]

        if body.get("stream") is False:
            if fake.mode == "stream-error":
                self._error(500, STREAM_ERROR)
                return
            whole = piece(fake.reply, True)
            self.send_json(200, final | {k: v for k, v in whole.items() if k in ("message", "response")})
            return

        if not self.start_chunked("application/x-ndjson"):
            return
        for thought in thoughts:
            if not self._chunk(piece("", False, thought)):
                return
        for i, token in enumerate(tokens):
            if i == min(2, len(tokens) - 1):
                if fake.mode == "stream-error":
                    if self._chunk({"error": STREAM_ERROR}):
                        self.write_chunk(b"")
                    return
                if fake.mode == "drop-mid-stream":
                    self.close_connection = True
                    return
                if fake.mode == "malformed" and not self.write_chunk(b'{"model": "llama3.2", "mess\n'):
                    return
            if fake.mode == "slow-stream" and i and not self.wait(fake.chunk_delay):
                self.close_connection = True
                return
            if not self._chunk(piece(token, False)):
                return
        if self._chunk(final):
            self.write_chunk(b"")  # the zero-length chunk ends the body

    def _embed(self, body: dict[str, Any]) -> None:
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        dims = int(body.get("dimensions") or self.fake.embedding_dims)
        self.send_json(
            200,
            {
                "model": body["model"],
                "embeddings": [_vector(text, dims) for text in texts],
                "total_duration": 14_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(len(str(t).split()) for t in texts),
            },
        )


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same input, same embedding)."""
    seed = hashlib.sha256(str(text).encode()).digest()
    raw = [seed[i % len(seed)] - 127.5 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A running :class:`FakeOllama` in ``ok`` mode, stopped after the test."""
    with FakeOllama() as server:
        yield server
