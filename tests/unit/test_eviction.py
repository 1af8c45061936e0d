"""Which workspaces the daemon lets go (eviction.py): idle ones, then the least recently used beyond the cap."""

from __future__ import annotations

from takod_daemon.eviction import DEFAULT_IDLE_S, DEFAULT_MAX_WORKSPACES, Bounds, to_evict


def test_idle_ones_go_and_pinned_ones_never() -> None:
    used = {"default": 0.0, "old": 10.0, "recent": 95.0, "hello": 0.0}
    assert to_evict(used, {"default", "hello"}, now=100.0, bounds=Bounds(max_workspaces=10, idle_s=60)) == ["old"]


def test_beyond_the_cap_the_least_recently_used_go_first() -> None:
    used = {f"w{i}": float(i) for i in range(6)}
    assert to_evict(used, {"w0"}, now=6.0, bounds=Bounds(max_workspaces=3, idle_s=1000)) == ["w1", "w2", "w3"]


def test_idle_ones_count_towards_the_cap() -> None:
    used = {"a": 0.0, "b": 50.0, "c": 99.0, "d": 99.5}
    # a is idle; with it gone three remain, one over a cap of 2: b (the older) goes too.
    assert to_evict(used, set(), now=100.0, bounds=Bounds(max_workspaces=2, idle_s=60)) == ["a", "b"]


def test_all_pinned_means_over_the_cap_rather_than_dropping_a_pinned_one() -> None:
    used = {"a": 0.0, "b": 1.0, "c": 2.0}
    assert to_evict(used, {"a", "b", "c"}, now=1e9, bounds=Bounds(max_workspaces=1, idle_s=1)) == []


def test_nothing_to_do_within_bounds() -> None:
    assert to_evict({"a": 5.0, "b": 6.0}, set(), now=7.0, bounds=Bounds()) == []
    assert to_evict({}, set(), now=7.0, bounds=Bounds()) == []


def test_bounds_from_env_take_positive_numbers_only() -> None:
    assert Bounds.from_env({}) == Bounds(DEFAULT_MAX_WORKSPACES, DEFAULT_IDLE_S)
    assert Bounds.from_env({"TAKOD_MAX_WORKSPACES": "4", "TAKOD_WORKSPACE_IDLE_S": "0.5"}) == Bounds(4, 0.5)
    for bad in ("0", "-3", "lots", "inf", "nan", ""):
        assert Bounds.from_env({"TAKOD_MAX_WORKSPACES": bad, "TAKOD_WORKSPACE_IDLE_S": bad}) == Bounds()
