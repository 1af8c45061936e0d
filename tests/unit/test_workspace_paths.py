"""``workspace_problem``: exactly the paths the operating system could never use are refused.

Property: for any string, either ``workspace_problem`` names a problem, or the
path is one that ``os.lstat`` and ``Path.resolve`` take without ValueError or
ENAMETOOLONG (they may still say it does not exist: that is not a bad request).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from takod.schema import NAME_MAX_BYTES, PATH_MAX_BYTES, workspace_problem
from tests.hypo import relaxed

components = st.text(
    st.characters(codec="utf-8", exclude_characters="/") | st.sampled_from(["\x00", "\ud800", "\udcff", "é"]),
    max_size=300,
)
paths = st.builds(lambda lead, parts: lead + "/".join(parts), st.sampled_from(["/", "", "~", "./"]),
                  st.lists(components, max_size=20))


@relaxed
@given(paths)
@example("/tmp/ws\x00")
@example("/" + "a" * NAME_MAX_BYTES)
@example("/" + "a" * (NAME_MAX_BYTES + 1))
@example("/" + "é" * 128)  # 256 bytes in 128 characters
@example("/" + "ab/" * (PATH_MAX_BYTES // 3))
def test_a_path_that_passes_is_one_the_os_takes(path: str) -> None:
    problem = workspace_problem(path)
    if problem is not None:
        assert problem.startswith("workspace ")
        return
    try:
        os.lstat(path)
    except OSError as exc:
        assert exc.errno != errno.ENAMETOOLONG
    Path(path).resolve()  # neither ValueError (NUL) nor UnicodeEncodeError (surrogates)


@pytest.mark.parametrize("path, problem", [
    ("relative", "absolute"),
    ("/a\x00b", "NUL"),
    ("/a\udcffb", "UTF-8"),
    ("/" + "x" * (NAME_MAX_BYTES + 1), "component"),
    ("/" + "x/" * PATH_MAX_BYTES, "longer than"),
])
def test_each_impossible_path_says_why(path: str, problem: str) -> None:
    assert problem in (workspace_problem(path) or "")


def test_ordinary_paths_pass() -> None:
    for path in ("/", "/home/me/ws", "/tmp/with space/ünïcode", "/a/../b", "/x\ny"):
        assert workspace_problem(path) is None
