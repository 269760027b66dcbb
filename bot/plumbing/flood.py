"""Per-person flood control: a token bucket per person, in memory, bounded.

A person may send `burst` updates at once, then `rate` per second; beyond that their updates
are dropped (the guard in handlers/guard.py answers a pressed button so it stops spinning, and
tells the person to slow down at most once per `notice_interval`). Nothing here touches the
database: a flood costs a dictionary lookup per update.

The verdict is taken once per update, when it arrives (PerPersonUpdateProcessor asks before
the update waits for the person's turn, so a flood never piles up in that person's queue),
and remembered by update id for the guard; an update that did not go through the processor
(`Application.process_update` called directly) gets its verdict from the guard itself.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_PEOPLE = 50_000  # buckets kept at most; the least recently seen go first
MAX_VERDICTS = 4096  # verdicts waiting for the guard (in flight at once, at most)
ANSWER_INTERVAL_S = 1.0  # dropped button presses answered at most this often per person


@dataclass
class _Bucket:
    tokens: float
    seen_at: float
    noticed_at: float | None = None
    answered_at: float | None = None


class FloodControl:
    """Token buckets by person key (a Telegram user id)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        notice_interval: float = 60.0,
        max_people: int = MAX_PEOPLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be above 0 and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.notice_interval = notice_interval
        self._max_people = max_people
        self._clock = clock
        # Least recently seen first, so idle buckets are found at the front.
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._verdicts: OrderedDict[int, bool] = OrderedDict()
        # A bucket idle this long is full again and has no notice pending: forgetting it
        # changes nothing for the person.
        self._idle_after = max(burst / rate, notice_interval)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: int) -> bool:
        """Take one token from the person's bucket; False when it is empty (drop the update)."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), seen_at=now)
        else:
            elapsed = max(0.0, now - bucket.seen_at)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.seen_at = now
        self._buckets[key] = bucket  # now the most recently seen
        self._evict(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def verdict(self, update_id: int, key: int) -> bool:
        """allow(key), taken once per update: the first call decides, the second (the guard's,
        after the processor's) reads the same answer and forgets it."""
        if update_id in self._verdicts:
            return self._verdicts.pop(update_id)
        return self.allow(key)

    def decide_early(self, update_id: int, key: int) -> bool:
        """The processor's call on arrival: decide now and keep the answer for the guard."""
        allowed = self.allow(key)
        self._verdicts[update_id] = allowed
        while len(self._verdicts) > MAX_VERDICTS:
            self._verdicts.popitem(last=False)
        return allowed

    def should_notice(self, key: int) -> bool:
        """True at most once per notice_interval for a person being slowed down."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        if bucket.noticed_at is not None and now - bucket.noticed_at < self.notice_interval:
            return False
        bucket.noticed_at = now
        return True

    def should_answer(self, key: int) -> bool:
        """True at most once per second for a person being slowed down: their dropped button
        presses are answered (so the button stops spinning) without letting a flood spend the
        bot's overall rate with Telegram on answerCallbackQuery calls."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            return True
        if bucket.answered_at is not None and now - bucket.answered_at < ANSWER_INTERVAL_S:
            return False
        bucket.answered_at = now
        return True

    def _evict(self, now: float) -> None:
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) <= self._max_people and now - oldest.seen_at < self._idle_after:
                break
            del self._buckets[key]
