"""The per-grant request budget (refresh/budget.py): pure planning, whatever the endpoint answered."""

from __future__ import annotations

from takod_daemon.refresh import budget

T0 = 1_800_000_000.0
MIN = 60.0


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
