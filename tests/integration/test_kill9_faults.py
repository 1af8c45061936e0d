"""kill -9 of the daemon at random points of a refresh and of a settings write:
the short version of stress/faults_kill.py (which runs hundreds of kills).

After each kill every file parses, and after a restart every copy of every
login holds the token the loopback token server accepts now, or, when the kill
came between the server's rotation and the first durable copy (takod's journal
included), the daemon says that login needs a login again; the settings hold
the last acknowledged value or the one in flight.
"""

from __future__ import annotations

import importlib.util
import random
import sys

from tests.harness import REPO

_spec = importlib.util.spec_from_file_location("faults_kill", REPO / "stress" / "faults_kill.py")
assert _spec is not None and _spec.loader is not None
faults_kill = importlib.util.module_from_spec(_spec)
sys.modules["faults_kill"] = faults_kill
_spec.loader.exec_module(faults_kill)


def test_kill_9_mid_refresh_and_mid_settings_write_loses_nothing_it_could_keep() -> None:
    seed = random.randrange(1 << 30)
    result = faults_kill.run(iterations=8, settings_iterations=4, seed=seed)
    r, s = result["refresh"], result["settings"]
    context = f"seed {seed}: {r['failures'] + s['failures']}"
    assert r["iterations"] == 8 and s["iterations"] == 4
    assert r["files_not_whole"] == 0, context
    assert r["not_recovered"] == 0, context
    assert r["recovered"] == 8, context
    assert r["lock_dirs_after_restart"] == 0, context
    assert s["files_not_whole"] == s["wrong_value"] == s["restart_failed"] == 0, context
    assert s["writes_acknowledged"] > 0
    assert result["verdict"] == "pass", context
