"""Publish/subscribe of daemon events (status changes, auth changes, login prompts).

Publishing never blocks and never fails: each subscription owns a bounded
queue. When a subscriber falls behind and its queue overflows, the oldest
events are dropped and the subscriber receives one ``resync`` event saying how
many were lost, so it knows to re-read state instead of trusting a gap.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import anyio

QUEUE_LIMIT = 256
RESYNC_TOPIC = "resync"


@dataclass
class Event:
    topic: str
    payload: Any


@dataclass(eq=False)
class Subscription:
    """One client's interest in some topics; drained by that connection's pump."""

    sub_id: int
    topics: frozenset[str]
    deliver: str
    queue: deque[Event] = field(default_factory=lambda: deque(maxlen=QUEUE_LIMIT))
    lost: int = 0
    seq: int = 0
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    closed: bool = False

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if len(self.queue) == self.queue.maxlen:
            self.lost += 1
        self.queue.append(event)
        self.wakeup.set()

    def take(self) -> list[Event]:
        """Everything queued, preceded by a resync event if any were dropped."""
        events: list[Event] = []
        if self.lost:
            events.append(Event(RESYNC_TOPIC, {"lost": self.lost}))
            self.lost = 0
        events.extend(self.queue)
        self.queue.clear()
        self.wakeup = anyio.Event()
        return events

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class EventBus:
    """Fan-out of events to subscriptions by topic."""

    def __init__(self) -> None:
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)

    def subscribe(self, topics: Iterable[str], deliver: str) -> Subscription:
        sub = Subscription(next(self._ids), frozenset(topics), deliver)
        self._subs[sub.sub_id] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        sub.wakeup.set()
        self._subs.pop(sub.sub_id, None)

    def publish(self, topic: str, payload: Any) -> None:
        event = Event(topic, payload)
        for sub in list(self._subs.values()):
            if topic in sub.topics:
                sub.push(event)

    def __len__(self) -> int:
        return len(self._subs)
