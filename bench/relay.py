"""Streaming relay overhead: a prompt's tokens through takod against the same loopback model server read directly.

    python bench/relay.py [--rounds 10] [--streams 3] [--chunks 400] [--delays 0.002,0] [--backends ollama,openai] [--json]

For each backend a loopback fake streams ``--chunks`` one-word tokens with
``--delay`` seconds between them (``slow-stream``; 0 = as fast as it can):

- ``ollama``: tests/fakes/ollama_server.py's ``FakeOllama``, ``POST /api/chat``
  (NDJSON); takod reaches it through ``OLLAMA_HOST``;
- ``openai``: tests/fakes/model_servers.py's ``FakeOpenAI``, ``POST
  /v1/chat/completions`` (SSE), an HTTP API backend; takod reaches it through
  ``OPENAI_API_KEY`` + ``OPENAI_BASE_URL``.

Two ways to get the same answer, interleaved (ABBA), ``--streams`` answers per
round and way:

- ``takod``: ``infer`` with ``stream: true`` and ``provider`` set, on one kept
  ``takod.Client`` connection in this process: what a caller of the daemon
  gets (daemon routing, its httpx stream, parsing, one ``takod.stream``
  notification per token, the client's decoding);
- ``direct``: the same request body posted with a kept ``httpx.Client`` in this
  process, lines parsed with ``json.loads``: the floor any client pays.

Figures per way: time to first token (request sent -> first text token
decoded by the caller), and tokens/s from the first to the last token. The
verdicts: TTFT difference takod - direct (medians; target <= 2 ms) and the
throughput ratio takod / direct (medians; target >= 0.9). Per-round figures give
min/median/max. CPU per token (the daemon's, all threads; this process's for
each way) is printed for context.

The default runs twice: tokens 2 ms apart (``--delays`` 0.002: a fast model,
~450 tokens/s; the relay must keep pace and add little to the first token:
the targets apply here), and no delay at all (0: a flood, the most the relay
can carry on this machine; no target: on a 2-CPU box the fake server, the
daemon and this process share the cores, reads batch up differently from run
to run, and the first token waits for the decoding of whatever batch it came in).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from common import (
    clean_env,
    cpu_seconds,
    emit,
    interleave,
    load_average,
    machine,
    median,
    ratio,
    summary,
    temp_home,
)
from takod import Client
from tests.fakes.model_servers import FakeOpenAI
from tests.fakes.ollama_server import FakeOllama
from tests.harness import DaemonProcess, wait_for

TTFT_TARGET_MS = 2.0  # takod may add at most this to the time to first token
THROUGHPUT_TARGET = 0.9  # takod's tokens/s at least this share of the direct reader's
TARGETS = ("takod", "direct")
OPENAI_KEY = "sk-bench-relay-0123456789abcdef"
OPENAI_MODEL = "gpt-4.1-mini"
PROMPT = "Count to a few hundred, one word at a time."


@dataclass
class Sample:
    ttft: float  # seconds, request sent -> first token decoded
    tokens: int
    span: float  # seconds, first token -> last token

    @property
    def rate(self) -> float:
        return (self.tokens - 1) / self.span if self.span > 0 and self.tokens > 1 else float("nan")


@dataclass
class Backend:
    name: str
    fake: Any
    infer: dict[str, Any]  # the infer params besides prompt/stream
    direct: Callable[[httpx.Client], Sample]
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    rounds: dict[str, list[list[Sample]]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    daemon_cpu: float = 0.0  # seconds the daemon spent during the takod streams
    reader_cpu: dict[str, float] = field(default_factory=lambda: {t: 0.0 for t in TARGETS})  # this process, per way


def reply_of(chunks: int) -> str:
    return " ".join(f"w{i}" for i in range(chunks))


def no_delay(fake: Any) -> None:
    """TCP_NODELAY on the fake's listening socket (Linux: accepted sockets inherit it).

    Real model servers set it (Go's net/http, so Ollama, does for every TCP
    connection; so do uvicorn and the CDNs in front of the hosted APIs). The
    fakes do not: their response headers and first events are small writes, and
    Nagle's algorithm holds each until the reader ACKs the previous one, which
    a Linux reader in delayed-ACK mode does up to 40 ms later. Which reader hits
    that depends on its kernel ACK state, not on its code; ``--nagle`` keeps
    the fakes as they are to show it.
    """
    fake._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# the direct readers ---------------------------------------------------------------


def direct_ollama(fake: FakeOllama, model: str) -> Callable[[httpx.Client], Sample]:
    url = fake.url + "/api/chat"
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True}

    def read(http: httpx.Client) -> Sample:
        first = last = 0.0
        n = 0
        start = time.perf_counter()
        with http.stream("POST", url, json=body, headers={"Accept": "application/x-ndjson"}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line:
                    continue
                chunk = json.loads(line)
                if chunk.get("error"):
                    raise RuntimeError(chunk["error"])
                if (chunk.get("message") or {}).get("content"):
                    last = time.perf_counter()
                    if not n:
                        first = last
                    n += 1
        return Sample(first - start, n, last - first)

    return read


def direct_openai(fake: FakeOpenAI) -> Callable[[httpx.Client], Sample]:
    url = fake.base_url + "/chat/completions"
    body = {
        "model": OPENAI_MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {OPENAI_KEY}", "Accept": "text/event-stream"}

    def read(http: httpx.Client) -> Sample:
        first = last = 0.0
        n = 0
        start = time.perf_counter()
        with http.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event.get("error"):
                    raise RuntimeError(event["error"])
                choices = event.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    if not n:
                        first = last
                    n += 1
        return Sample(first - start, n, last - first)

    return read


# through takod ----------------------------------------------------------------------


def through_takod(client: Client, params: dict[str, Any]) -> Sample:
    first = last = 0.0
    n = 0
    result: dict[str, Any] = {}
    start = time.perf_counter()
    for kind, payload in client.stream("infer", {"prompt": PROMPT, "stream": True, **params}, timeout=120):
        if kind == "text":
            last = time.perf_counter()
            if not n:
                first = last
            n += 1
        elif kind == "result":
            result = payload
    if result.get("provider") != params["provider"]:
        raise RuntimeError(f"answered by {result.get('provider')}, not {params['provider']}: {result.get('route')}")
    return Sample(first - start, n, last - first)


# the run ----------------------------------------------------------------------------


def measure(backend: Backend, client: Client, http: httpx.Client, daemon_pid: int, rounds: int, streams: int,
            expect: int) -> None:
    for _, target in interleave(rounds, TARGETS):
        got: list[Sample] = []
        for _ in range(streams):
            mine = time.process_time()
            if target == "takod":
                before = cpu_seconds(daemon_pid)
                sample = through_takod(client, backend.infer)
                backend.daemon_cpu += cpu_seconds(daemon_pid) - before
            else:
                sample = backend.direct(http)
            backend.reader_cpu[target] += time.process_time() - mine
            if sample.tokens != expect:
                raise RuntimeError(f"{backend.name}/{target}: {sample.tokens} tokens, expected {expect}")
            got.append(sample)
        backend.samples[target] += got
        backend.rounds[target].append(got)


def report_backend(backend: Backend, delay: float, chunks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend.name, "delay_s": delay, "chunks": chunks}
    for target in TARGETS:
        samples = backend.samples[target]
        out[target] = {
            "ttft_ms": summary([s.ttft * 1000 for s in samples]),
            "tokens_per_s": summary([s.rate for s in samples], qs=(10, 50, 90)),
        }
    ttft = {t: out[t]["ttft_ms"]["p50"] for t in TARGETS}
    rate = {t: out[t]["tokens_per_s"]["p50"] for t in TARGETS}
    per_round_diff = [
        median([s.ttft for s in a]) * 1000 - median([s.ttft for s in b]) * 1000
        for a, b in zip(backend.rounds["takod"], backend.rounds["direct"])
    ]
    per_round_ratio = [
        ratio(median([s.rate for s in a]), median([s.rate for s in b]))
        for a, b in zip(backend.rounds["takod"], backend.rounds["direct"])
    ]
    tokens = sum(s.tokens for s in backend.samples["takod"])
    out.update(
        ttft_diff_ms=ttft["takod"] - ttft["direct"],
        ttft_diff_rounds_ms=sorted(per_round_diff),
        throughput_ratio=ratio(rate["takod"], rate["direct"]),
        throughput_ratio_rounds=sorted(per_round_ratio),
        daemon_cpu_us_per_token=backend.daemon_cpu / tokens * 1e6 if tokens else float("nan"),
        reader_cpu_us_per_token={
            t: backend.reader_cpu[t] / sum(s.tokens for s in backend.samples[t]) * 1e6 for t in TARGETS
        },
        # The targets are for a model's stream; a flood (no delay) measures capacity and has none.
        ttft_ok=ttft["takod"] - ttft["direct"] <= TTFT_TARGET_MS if delay else None,
        throughput_ok=ratio(rate["takod"], rate["direct"]) >= THROUGHPUT_TARGET if delay else None,
    )
    return out


def run_delay(delay: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    reply = reply_of(args.chunks)
    with ExitStack() as stack:
        home = stack.enter_context(temp_home())
        ollama = stack.enter_context(FakeOllama(reply=reply, chunk_delay=delay, mode="slow-stream"))
        openai = stack.enter_context(FakeOpenAI(reply=reply, chunk_delay=delay, mode="slow-stream", api_key=OPENAI_KEY))
        if not args.nagle:
            no_delay(ollama)
            no_delay(openai)
        env = clean_env(
            home, OLLAMA_HOST=ollama.host, OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai.base_url,
            PATH="/usr/bin:/bin",  # no provider CLI: only the two HTTP backends can answer
        )
        daemon = DaemonProcess(home, env).start("--log-level", args.log_level)
        stack.callback(daemon.stop)
        client = stack.enter_context(Client(daemon.socket, spawn=False, timeout=120))
        wait_for(lambda: client.call("status")["selected"] == "ollama", timeout=30)
        ollama_status = next(s for s in client.call("status")["providers"] if s["name"] == "ollama")
        model = ollama_status["detail"]["model"]  # the model takod picked: the direct reader asks for the same
        http = stack.enter_context(httpx.Client(timeout=120, trust_env=False))
        backends = {
            "ollama": Backend("ollama", ollama, {"provider": "ollama"}, direct_ollama(ollama, model)),
            "openai": Backend("openai", openai, {"provider": "openai", "model": OPENAI_MODEL}, direct_openai(openai)),
        }
        reports = []
        for name in args.backends.split(","):
            backend = backends[name]
            # warm both paths (connections, imports, the daemon's first-use work)
            through_takod(client, backend.infer)
            backend.direct(http)
            measure(backend, client, http, daemon.pid, args.rounds, args.streams, args.chunks)
            reports.append(report_backend(backend, delay, args.chunks))
        return reports


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"relay overhead · {m['nproc']} CPU {m['cpu']} · Python {m['python']} · load {report['load_average']}",
        f"{report['args']['rounds']} rounds x {report['args']['streams']} streams per way, "
        f"{report['args']['chunks']} tokens per answer; takod log level {report['args']['log_level']}; "
        f"fake servers {'with Nagle (--nagle)' if report['args']['nagle'] else 'TCP_NODELAY'}",
        "",
    ]
    for r in report["results"]:
        head = f"{r['backend']}, {r['delay_s'] * 1000:g} ms between tokens" if r["delay_s"] else f"{r['backend']}, no delay (flood)"
        lines.append(head)
        for target in TARGETS:
            t, tp = r[target]["ttft_ms"], r[target]["tokens_per_s"]
            lines.append(
                f"  {target:<7} TTFT p50 {t['p50']:7.2f} ms  p90 {t['p90']:7.2f}   "
                f"tokens/s p50 {tp['p50']:8.0f}  p10 {tp['p10']:8.0f}"
            )
        rd, rr = r["ttft_diff_rounds_ms"], r["throughput_ratio_rounds"]

        def judged(ok: bool | None, target: str) -> str:
            return f"target {target}: {'ok' if ok else 'MISSED'}" if ok is not None else "capacity, no target"

        lines.append(
            f"  TTFT takod - direct {r['ttft_diff_ms']:+.2f} ms ({judged(r['ttft_ok'], f'<= +{TTFT_TARGET_MS:g}')}); "
            f"per round min/median/max {rd[0]:+.2f} / {median(rd):+.2f} / {rd[-1]:+.2f}"
        )
        lines.append(
            f"  throughput takod / direct {r['throughput_ratio']:.3f} ({judged(r['throughput_ok'], f'>= {THROUGHPUT_TARGET}')}); "
            f"per round {rr[0]:.3f} / {median(rr):.3f} / {rr[-1]:.3f}"
        )
        reader = r["reader_cpu_us_per_token"]
        lines.append(
            f"  CPU per token: takod daemon {r['daemon_cpu_us_per_token']:.0f} µs + its client {reader['takod']:.0f} µs; "
            f"direct reader {reader['direct']:.0f} µs"
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--streams", type=int, default=3, help="answers per round and way (default 3)")
    p.add_argument("--chunks", type=int, default=400, help="tokens per answer (default 400)")
    p.add_argument("--delays", default="0.002,0", help="seconds between tokens, one run each (default 0.002,0)")
    p.add_argument("--backends", default="ollama,openai", help="ollama, openai or both (default both)")
    p.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on in the fake servers (see no_delay)")
    p.add_argument("--log-level", default="info", choices=["debug", "info"], help="takod's log level (default info)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    results = []
    for delay in (float(d) for d in args.delays.split(",")):
        results += run_delay(delay, args)
    report = {"machine": machine(), "args": vars(args), "results": results, "load_average": load_average()}
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
