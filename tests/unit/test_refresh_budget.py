"""The per-grant request budget (refresh/budget.py): pure planning, whatever the endpoint answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from takod_daemon.refresh import budget
from takod_daemon.refresh.broker import Grant, Mirror, RefreshBroker, plan

T0 = 1_800_000_000.0
MIN = 60.0
LEAD = 600.0


def test_a_grant_never_refreshed_may_be_refreshed_now() -> None:
    assert budget.hold([], T0) is None


def test_after_a_refresh_the_next_waits_five_minutes_then_ten_then_twenty() -> None:
    assert budget.hold([T0], T0 + 1) == budget.Hold(T0 + 5 * MIN, budget.REFRESHED_RECENTLY)
    assert budget.hold([T0], T0 + 5 * MIN) is None
    assert budget.hold([T0, T0 + 5 * MIN], T0 + 5 * MIN).until == T0 + 15 * MIN
    assert budget.hold([T0, T0 + 5 * MIN, T0 + 15 * MIN], T0 + 15 * MIN).until == T0 + 35 * MIN


def test_never_more_than_four_in_an_hour() -> None:
    times = [T0, T0 + 5 * MIN, T0 + 15 * MIN, T0 + 35 * MIN]
    held = budget.hold(times, T0 + 35 * MIN)
    assert held == budget.Hold(T0 + 75 * MIN, budget.REFRESHED_RECENTLY)  # 40 min gap after the 4th
    # However the gaps fall, a fifth within the hour of the first four is held back.
    quick = [T0, T0 + 1, T0 + 2, T0 + 3]
    assert budget.hold(quick, T0 + 4).until >= T0 + 3600


def test_a_loop_of_instant_answers_costs_at_most_four_requests_an_hour() -> None:
    # Simulate the scheduler: the endpoint's answer is always due again at once.
    now, sent = T0, []
    while now < T0 + 3600:
        held = budget.hold(sent, now)
        if held is None:
            sent.append(now)
        else:
            now = held.until if held.until > now else now + 1
    assert len(sent) == budget.MAX_PER_WINDOW
    assert all(b - a >= budget.MIN_GAP_S for a, b in zip(sent, sent[1:]))


def test_old_refreshes_leave_the_window() -> None:
    assert budget.hold([T0 - 2 * 3600, T0 - 3600 - 1], T0) is None
    assert budget.prune([T0 - 2 * 3600, T0 - 10], T0) == [T0 - 10]


def test_a_clock_set_back_counts_future_times_as_now() -> None:
    held = budget.hold([T0 + 3600], T0)
    assert held is not None and held.until == T0 + budget.MIN_GAP_S


def test_codex_refreshes_a_login_itself_only_inside_its_own_window() -> None:
    assert budget.in_codex_window(T0 - 60, T0)  # expired
    assert budget.in_codex_window(T0 + 299, T0)
    assert not budget.in_codex_window(T0 + 450, T0)  # inside takod's 10-min lead: takod's to refresh


def test_codex_gets_the_first_move_for_the_grace_then_takod_may_refresh() -> None:
    assert budget.codex_first_move(T0, T0) == budget.Hold(T0 + budget.CODEX_GRACE_S, budget.WAITING_FOR_CODEX)
    assert budget.codex_first_move(T0, T0 + budget.CODEX_GRACE_S) is None


def test_the_later_hold_wins() -> None:
    a, b = budget.Hold(T0 + 10, "a"), budget.Hold(T0 + 20, "b")
    assert budget.later(a, None, b) == b and budget.later(None, None) is None


def _codex_grant(expires_at: float, *, pi_only: bool = False) -> Grant:
    mirror = (Mirror("pi", Path("/x/auth.json"), "openai-codex") if pi_only
              else Mirror("codex", Path("/c/auth.json"), "openai-codex"))
    return Grant("k", "openai-codex", "rt_secret", [mirror], expires_at, ())


def test_an_expired_codex_login_waits_once_for_codex_then_is_due() -> None:
    g = _codex_grant(T0 - 60)
    hold = RefreshBroker._codex_wait(g, T0)
    assert hold == budget.Hold(T0 + budget.CODEX_GRACE_S, budget.WAITING_FOR_CODEX)
    g.apply_budget(hold, LEAD)
    assert g.state == "backing-off"
    assert plan([g], LEAD, T0 + 1) == ([], pytest.approx(budget.CODEX_GRACE_S - 1))
    # Noticed once: after the grace it is due, and it is not made to wait again.
    later = T0 + budget.CODEX_GRACE_S + 1
    assert RefreshBroker._codex_wait(g, later) is None
    g.apply_budget(None, LEAD)
    assert g.state == "scheduled" and plan([g], LEAD, later)[0] == ["k"]


def test_a_codex_login_in_takods_lead_and_a_pi_only_copy_do_not_wait() -> None:
    assert RefreshBroker._codex_wait(_codex_grant(T0 + 450), T0) is None  # steady state: takod refreshes first
    assert RefreshBroker._codex_wait(_codex_grant(T0 - 60, pi_only=True), T0) is None  # pi re-reads under its lock
