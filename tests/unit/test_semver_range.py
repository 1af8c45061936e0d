"""The npm-semver range check used for pi's engines.node (results as node-semver
gives them with includePrerelease, which npm uses for engines)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.providers.detect import satisfies

CASES = [
    # pi 0.73.1's own range
    ("20.6.0", ">=20.6.0", True),
    ("20.20.2", ">=20.6.0", True),
    ("v22.12.0", ">=20.6.0", True),
    ("20.5.1", ">=20.6.0", False),
    ("18.19.0", ">=20.6.0", False),
    # two comparators, both must hold
    ("18.0.0", ">=18 <23", True),
    ("22.99.99", ">=18 <23", True),
    ("23.0.0", ">=18 <23", False),
    ("17.9.9", ">=18 <23", False),
    ("22.0.0", ">= 18 < 23", True),
    # caret
    ("20.6.0", "^20.6", True),
    ("20.99.0", "^20.6", True),
    ("20.5.9", "^20.6", False),
    ("21.0.0", "^20.6", False),
    ("0.2.9", "^0.2.3", True),
    ("0.3.0", "^0.2.3", False),
    ("0.0.3", "^0.0.3", True),
    ("0.0.4", "^0.0.3", False),
    ("0.9.0", "^0", True),
    ("1.0.0", "^0", False),
    ("0.0.9", "^0.0", True),
    ("0.1.0", "^0.0", False),
    # tilde
    ("1.2.9", "~1.2.3", True),
    ("1.3.0", "~1.2.3", False),
    ("1.9.0", "~1", True),
    ("2.0.0", "~1", False),
    ("1.2.5", "~>1.2", True),
    # alternatives
    ("16.20.0", "^14.17.0 || ^16.13.0 || >=18.0.0", True),
    ("15.0.0", "^14.17.0 || ^16.13.0 || >=18.0.0", False),
    ("21.1.0", "^14.17.0 || ^16.13.0 || >=18.0.0", True),
    ("12.0.0", "10 || 12", True),
    ("11.0.0", "10 || 12", False),
    # x-ranges and partial comparators
    ("20.0.0", "20.x", True),
    ("21.0.0", "20.x", False),
    ("5.0.0", "*", True),
    ("5.0.0", "", True),
    ("2.0.0", ">1", True),
    ("1.9.9", ">1", False),
    ("1.2.9", "<=1.2", True),
    ("1.3.0", "<=1.2", False),
    ("1.1.9", "<1.2", True),
    ("1.2.0", "<1.2", False),
    ("1.5.0", ">*", False),
    # exact versions and hyphen ranges
    ("1.2.3", "1.2.3", True),
    ("1.2.4", "=1.2.3", False),
    ("2.3.4", "1.2.3 - 2.3.4", True),
    ("2.3.5", "1.2.3 - 2.3.4", False),
    ("2.3.9", "1.2 - 2.3", True),
    ("2.4.0", "1.2 - 2.3", False),
    # prereleases: below their release, above the previous one
    ("21.0.0-nightly20230801", ">=20.6.0", True),
    ("20.6.0-rc.1", ">=20.6.0", False),
    ("2.0.0-rc.1", "^1.2.3", False),
    ("1.2.3-beta.2", ">1.2.3-beta.1", True),
    ("1.2.3-beta.11", ">1.2.3-beta.2", True),
    ("1.2.3-beta", ">1.2.3-alpha.9", True),
    ("1.2.3+build.5", "1.2.3", True),
]


@pytest.mark.parametrize(("version", "range_text", "expected"), CASES)
def test_satisfies(version: str, range_text: str, expected: bool) -> None:
    assert satisfies(version, range_text) is expected


@pytest.mark.parametrize("range_text", [">=abc", "^", ">=20.6.0 <", "1.2.3.4", "1.2.3-a..b", "~> "])
def test_unparseable_range_is_an_error(range_text: str) -> None:
    with pytest.raises(ValueError):
        satisfies("20.6.0", range_text)


@pytest.mark.parametrize("version", ["20", "v20.6", "twenty", "", "20.6.0.1"])
def test_unparseable_version_is_an_error(version: str) -> None:
    with pytest.raises(ValueError):
        satisfies(version, ">=1")


versions = st.tuples(*(st.integers(0, 40) for _ in range(3)))


@given(versions, versions)
def test_comparators_order_versions_like_tuples(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert satisfies(va, f">={vb}") is (a >= b)
    assert satisfies(va, f"<{vb}") is (a < b)
    assert satisfies(va, f"{vb}") is (a == b)


@given(versions, versions)
def test_caret_keeps_the_leftmost_nonzero_part(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    # ^M.m.p: at least M.m.p, and the first non-zero part of M.m.p unchanged.
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    lead = next((i for i, part in enumerate(b) if part), 2)
    expected = a >= b and a[: lead + 1] == b[: lead + 1]
    assert satisfies(va, f"^{vb}") is expected
