"""Issue 14's races, a few trials each, with the real pi (its AuthStorage under
node) and the real codex against the reuse-detecting loopback token server
(0.3-1 s per answer). stress/refresh_race.py runs the same scenarios by the
fifty; here each must come out clean every time: no refresh token presented
twice, every store on the live token, no grant needs-login, and in the wake
race pi gets a working key. ``codex-expired`` (a Codex login already expired
when takod and ``codex exec`` start together) is clean only because takod
leaves Codex the first move on such a login (docs/refresh.md).
"""

from __future__ import annotations

import shutil

import pytest

from stress.refresh_race import LatentServer, SCENARIOS, Env, PI_AUTH_MODULE, PRELOAD
from tests.harness import TOOLS_BIN, require_tool

pytestmark = pytest.mark.interop

TRIALS = 3


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory):
    require_tool(PI_AUTH_MODULE, "the real pi package")
    require_tool(TOOLS_BIN / "codex", "the real codex CLI")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    home = tmp_path_factory.mktemp("race") / "h"
    home.mkdir()
    preload = home / "preload.mjs"
    preload.write_text(PRELOAD)
    with LatentServer() as server:
        e = Env(home, server, node, str(TOOLS_BIN / "codex"), preload)
        try:
            yield e
        finally:
            e.stop_daemons()


@pytest.mark.parametrize("scenario", ["wake", "start", "codex", "codex-expired", "seed"])
def test_no_refresh_token_is_ever_spent_twice(env: Env, scenario: str) -> None:
    for _ in range(TRIALS):
        trial = SCENARIOS[scenario](env)
        assert trial.reuses == 0, trial
        assert trial.stores_live and not trial.needs_login, trial
        if scenario in ("wake", "seed"):
            assert trial.tool_ok, trial
