"""Sliding-window flood limits and the traffic record benchmarks check against them."""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Hashable


class WindowCounter:
    """Timestamps of recent sends per key, forgotten once older than the window."""

    PRUNE_EVERY = 10_000  # adds between sweeps of keys that went quiet (e.g. broadcast targets)

    def __init__(self, window: float) -> None:
        self.window = window
        self._stamps: dict[Hashable, deque[float]] = {}
        self._adds_since_prune = 0

    def _recent(self, key: Hashable, now: float) -> deque[float] | None:
        stamps = self._stamps.get(key)
        if stamps is not None:
            horizon = now - self.window
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
        return stamps

    def count(self, key: Hashable, now: float) -> int:
        stamps = self._recent(key, now)
        return len(stamps) if stamps else 0

    def oldest(self, key: Hashable, now: float) -> float | None:
        stamps = self._recent(key, now)
        return stamps[0] if stamps else None

    def add(self, key: Hashable, now: float) -> int:
        """Records a send and returns how many the key had in the window, this one included."""
        stamps = self._recent(key, now)
        if stamps is None:
            stamps = self._stamps[key] = deque()
        stamps.append(now)
        self._adds_since_prune += 1
        if self._adds_since_prune >= self.PRUNE_EVERY:
            self._prune(now)
        return len(stamps)

    def _prune(self, now: float) -> None:
        self._adds_since_prune = 0
        horizon = now - self.window
        stale = [key for key, stamps in self._stamps.items() if not stamps or stamps[-1] <= horizon]
        for key in stale:
            del self._stamps[key]


class RateLimit:
    """At most ``rate`` sends per second, enforced over a sliding window.

    A rate below one per second (a group's 20 per minute is 1/3) widens the window so that it
    still holds one whole send: 0.5/s allows one send in any two seconds.

    ``burst`` tolerates short bursts, as Telegram does in one chat: at most ``burst`` sends in
    any ``burst / rate`` seconds (rate 1, burst 3: three at once, then none until the first is
    three seconds old). The default, 1, is the strict form: 1/s means one in any second.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        if burst < 1:
            raise ValueError("a burst is at least one send")
        self.rate = rate
        self.burst = burst
        window = max(1.0, burst / rate)
        self.capacity = max(1, math.floor(rate * window + 1e-9))
        self._sends = WindowCounter(window)

    def retry_after(self, key: Hashable, now: float) -> int | None:
        """Whole seconds until a send to ``key`` would be allowed, or None when it is now."""
        if self._sends.count(key, now) < self.capacity:
            return None
        oldest = self._sends.oldest(key, now)
        assert oldest is not None
        return max(1, math.ceil(oldest + self._sends.window - now))

    def record(self, key: Hashable, now: float) -> None:
        self._sends.add(key, now)


class TrafficLog:
    """Every accepted send (time, chat) and the busiest one-second windows seen so far.

    Times are seconds since the emulator started (monotonic clock). Two compact arrays keep a
    10,000-recipient broadcast at a few hundred kilobytes.
    """

    def __init__(self) -> None:
        self.times = array("d")
        self.chat_ids = array("q")
        self._last_second = WindowCounter(1.0)
        self.peak_global = 0
        self.peak_per_chat = 0

    def record(self, chat_id: int, now: float) -> None:
        self.times.append(now)
        self.chat_ids.append(chat_id)
        self.peak_global = max(self.peak_global, self._last_second.add(None, now))
        self.peak_per_chat = max(self.peak_per_chat, self._last_second.add(chat_id, now))
