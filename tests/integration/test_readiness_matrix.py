"""The readiness differential, fast subset (tests/readiness_matrix.py says how it
works; stress/readiness_matrix.py runs the whole matrix): for each configuration,
``status`` says ready iff the real pi (or takod's API backend) answers with the
configuration's secret, and a ready provider's ``takod run`` reaches the loopback
server with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import TOOLS_BIN, require_tool
from tests.readiness_matrix import Config, Servers, check, describe, generate, servers, subset

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def srv() -> Iterator[Servers]:
    with servers() as made:
        yield made


def test_the_matrix_is_large_enough_and_the_subset_is_in_it() -> None:
    full = generate()
    assert len(full) >= 200 and len(set(full)) == len(full)
    assert set(subset()) <= set(full)


@pytest.mark.parametrize("config", subset(), ids=lambda c: c.name)
def test_status_says_ready_iff_a_prompt_runs(config: Config, srv: Servers, tmp_path: Path) -> None:
    if config.cli != "ollama":  # Ollama is the loopback fake, reached over HTTP: no binary runs
        require_tool(TOOLS_BIN / config.cli, f"the real {config.cli} CLI")
    outcome = check(config, tmp_path, srv)
    assert outcome.ok, describe(outcome)
