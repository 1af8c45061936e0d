"""The refresh scheduler against clocks that jump: deadlines are wall-clock
times (expiries are), sleeps run on the monotonic clock (which stands still in
suspend and ignores clock changes). Pure planning with injected times, then the
real scheduler loop with an injected wall clock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from takod_daemon.refresh import broker as broker_module
from takod_daemon.refresh.broker import MAX_SLEEP, Grant, Mirror, RefreshBroker, plan, shift_retries, sleep_for

T0 = 1_800_000_000.0
LEAD = 600.0
HOUR = 3600.0


def grant(key: str, expires_at: float, **fields: Any) -> Grant:
    g = Grant(key, "anthropic", "sk-ant-ort01-secret-" + key, [Mirror("pi", Path("/x/auth.json"), "anthropic")],
              expires_at, ())
    for name, value in fields.items():
        setattr(g, name, value)
    return g


def test_plan_names_the_due_grants_and_the_wait_for_the_next() -> None:
    grants = [grant("a", T0 + 2 * HOUR), grant("b", T0 + 100), grant("c", T0 + HOUR, state="needs-login"),
              grant("d", T0 - 5, state="refreshing")]
    assert plan(grants, LEAD, T0) == (["b"], pytest.approx(2 * HOUR - LEAD))
    assert plan([], LEAD, T0) == ([], None)


def test_no_sleep_is_longer_than_the_cap() -> None:
    assert sleep_for(2 * HOUR) == MAX_SLEEP
    assert sleep_for(None) == MAX_SLEEP  # even with nothing scheduled: a jump is noticed
    assert sleep_for(12.5) == 12.5
    assert sleep_for(-3) == 0.0


def test_after_a_suspend_the_next_wake_finds_the_grant_due() -> None:
    g = grant("a", T0 + 2 * HOUR)
    due, until = plan([g], LEAD, T0)
    assert due == [] and sleep_for(until) == MAX_SLEEP
    # Suspended for three hours: the monotonic sleep ends MAX_SLEEP after the resume at the latest.
    due, _ = plan([g], LEAD, T0 + 3 * HOUR + MAX_SLEEP)
    assert due == ["a"]


def test_a_clock_set_back_keeps_a_retrys_wait_as_meant() -> None:
    g = grant("a", T0 + HOUR, state="retrying", retry_at=T0 + 30)
    shift_retries([g], -HOUR)  # the clock went back an hour
    assert g.retry_at == T0 + 30 - HOUR
    assert plan([g], LEAD, T0 - HOUR + 31)[0] == ["a"]  # 31 s later by the new clock


def test_a_clock_set_forward_or_a_resume_brings_retries_sooner_not_later() -> None:
    g = grant("a", T0 + HOUR, state="retrying", retry_at=T0 + 30)
    shift_retries([g], +HOUR)
    assert g.retry_at == T0 + 30
    assert plan([g], LEAD, T0 + HOUR)[0] == ["a"]


def test_expiry_is_never_shifted_by_a_jump() -> None:
    # An expiry is the provider's wall-clock time: after a jump back the grant is
    # due when the (new) wall clock reaches it, not an hour early.
    g = grant("a", T0 + HOUR)
    shift_retries([g], -HOUR)
    assert g.expires_at == T0 + HOUR


# --- the real loop, with a wall clock the test moves ---------------------------------------


class Wall:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def loop_broker(monkeypatch: pytest.MonkeyPatch, wall: Wall, *grants: Grant) -> tuple[RefreshBroker, list[str]]:
    monkeypatch.setattr(broker_module, "MAX_SLEEP", 0.02)  # the cap, shortened: the loop wakes often
    state = SimpleNamespace(pi_files=lambda: [])
    b = RefreshBroker(SimpleNamespace(state=state), {}, LEAD)  # type: ignore[arg-type]
    b.wall = wall
    b.grants = {g.key: g for g in grants}
    calls: list[str] = []

    async def refresh(key: str, force: bool = True) -> None:
        calls.append(key)
        b.grants[key].state = "needs-login"  # done with it, for this test

    b.refresh = refresh  # type: ignore[method-assign]

    async def rescan() -> None:  # the stores are not the subject here; the re-read is
        calls.append("rescan")

    b.rescan = rescan  # type: ignore[method-assign]
    return b, calls


async def _run_until(b: RefreshBroker, calls: list[str], step: Any) -> None:
    async with anyio.create_task_group() as tg:
        b._tg = tg
        tg.start_soon(b._schedule)
        await anyio.sleep(0.1)  # several wakes: nothing due yet
        assert calls == []
        step()
        with anyio.fail_after(10):
            while not [c for c in calls if c != "rescan"]:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_loop_notices_a_jump_forward_without_being_poked(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Wall(T0)
    b, calls = loop_broker(monkeypatch, wall, grant("a", T0 + 5 * HOUR))

    def jump() -> None:
        wall.now += 5 * HOUR  # suspend/resume: no file changed, nobody called poke()

    await _run_until(b, calls, jump)
    # The stores are read again (another tool may have refreshed meanwhile) before the refresh.
    assert calls == ["rescan", "a"]


@pytest.mark.anyio
async def test_the_loop_keeps_a_retry_wait_across_a_jump_back(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Wall(T0)
    g = grant("a", T0 + 5 * HOUR, state="retrying", retry_at=T0 + 30)
    b, calls = loop_broker(monkeypatch, wall, g)

    async with anyio.create_task_group() as tg:
        b._tg = tg
        tg.start_soon(b._schedule)
        await anyio.sleep(0.1)
        wall.now -= HOUR  # seen as a jump at the next wake; the retry moves with it
        with anyio.fail_after(10):
            while abs(g.retry_at - (T0 + 30 - HOUR)) > 1:  # moved back by the jump (less the time slept)
                await anyio.sleep(0.01)
        assert calls == ["rescan"]
        wall.now += 31  # 31 s later, by the clock as it is now
        with anyio.fail_after(10):
            while calls[-1] == "rescan":
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert calls[-1] == "a" and set(calls[:-1]) == {"rescan"}  # each jump re-reads the stores


@pytest.mark.anyio
async def test_a_codex_login_found_expired_after_a_stop_is_left_to_codex_before_any_request() -> None:
    """SIGSTOP (or a suspend the clocks did not show) leaves the login far past takod's
    lead and inside Codex's own window when the loop runs again: a codex resuming or
    starting with takod refreshes it itself, so takod waits the grace, sending nothing
    (the broker has no HTTP client here: a request would fail the test)."""
    from takod_daemon.refresh import budget

    g = Grant("c", "openai-codex", "rt_secret", [Mirror("codex", Path("/c/auth.json"), "openai-codex")],
              T0 - 60, ())
    b = RefreshBroker(SimpleNamespace(state=SimpleNamespace(pi_files=lambda: [])), {}, LEAD)  # type: ignore[arg-type]
    b.wall = Wall(T0)
    b.grants = {g.key: g}

    async def after_change() -> None:  # pragma: no cover - reached only if the grace were skipped
        raise AssertionError("refreshed or adopted without waiting for Codex")
    b._after_change = after_change  # type: ignore[method-assign]
    await b.refresh("c", force=False)
    assert (g.state, g.hold) == ("backing-off", budget.Hold(T0 + budget.CODEX_GRACE_S, budget.WAITING_FOR_CODEX))
    assert b.info(g).wait_reason == "waiting_for_codex" and b.info(g).refresh_at == T0 + budget.CODEX_GRACE_S


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
