"""The whole readiness differential: every configuration of tests/readiness_matrix.py.

    .venv/bin/python stress/readiness_matrix.py               # all of it, 2 workers
    .venv/bin/python stress/readiness_matrix.py --workers 1 --match pi:fake
    .venv/bin/python stress/readiness_matrix.py --json

Each configuration gets a fresh daemon in a temp HOME and its own secret; the
real pi runs against loopback model servers (one pair per worker). A
configuration passes when ``status`` says ready iff a prompt really runs, and a
ready provider's ``takod run`` reaches the server with that secret. The count
and the result go in docs/readiness.md.
"""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import Report, parser

from tests.readiness_matrix import Config, Outcome, check, describe, generate, servers


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="configurations checked at once (default 2)")
    p.add_argument("--match", default="", help="only configurations whose name contains this")
    args = p.parse_args()
    configs = [c for c in generate() if args.match in c.name]
    report = Report("readiness_matrix", {"workers": args.workers, "match": args.match, "configurations": len(configs)})
    local = threading.local()
    outcomes: list[Outcome] = []
    started = time.monotonic()

    def one(config: Config) -> Outcome:
        if not hasattr(local, "srv"):
            local.cm = servers()  # one server pair per worker: each arms it with its own secret
            local.srv = local.cm.__enter__()
        with tempfile.TemporaryDirectory(prefix="takodm") as tmp:
            try:
                outcome = check(config, Path(tmp), local.srv)
            except Exception as exc:  # a configuration that could not even be checked fails, with why
                outcome = Outcome(config, False, f"error: {type(exc).__name__}: {exc}", True, None, str(exc))
        print(describe(outcome), flush=True)
        return outcome

    with ThreadPoolExecutor(args.workers) as pool:
        outcomes = list(pool.map(one, configs))
    failed = [o for o in outcomes if not o.ok]
    report.figures.update(
        configurations=len(outcomes),
        passed=len(outcomes) - len(failed),
        failed=len(failed),
        ready=sum(o.ready for o in outcomes),
        not_ready=sum(not o.ready for o in outcomes),
        seconds=round(time.monotonic() - started, 1),
    )
    report.notes += [describe(o) for o in failed]
    report.check("status agrees with a real run for every configuration", not failed)
    report.check("at least 200 configurations", len(outcomes) >= 200 or bool(args.match))
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
