"""Virtual time for the send budget: its waits of seconds cost a test no wall-clock time.

`VirtualTimer` is a `bot.plumbing.send_budget.Timer`. Its time passes only:

- when the test says so (`advance`, or `sleep`, which moves the time when nothing else waits
  for an earlier moment), or
- with `auto=True`, by itself: once the event loop has had nothing to do for a few turns and
  no request is in flight (`busy`), the time jumps to the earliest moment someone waits for,
  as if the loop had slept until then.

With ``follow_real_time=True`` it is the loop's clock plus an offset instead: what waits for
it also wakes in real time, and `advance` (or `auto`) jumps over what would take seconds. An
end-to-end test uses this form when the rest of the bot (its sender polling, its long polls)
keeps running on the real clock.

A jump never wakes anyone before their moment: whatever the budget decides from this time
(places in its windows, the bulk pace, a 429 pause) holds exactly as in real time, and tests
judge it against the times recorded here.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from itertools import count

SETTLE_TURNS = 20  # loop turns with nothing new before the time may jump (auto)


class VirtualTimer:
    def __init__(
        self, start: float = 1000.0, *, auto: bool = False, follow_real_time: bool = False
    ) -> None:
        self._offset = start if not follow_real_time else 0.0
        self._follow = follow_real_time
        self._auto = auto
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = count()
        self._busy = 0
        self._moved = asyncio.Event()  # something happened: a new sleeper, a request ended
        self._driver: asyncio.Task[None] | None = None
        self.jumped = 0.0  # how much time the jumps skipped, in seconds

    # -- the Timer protocol ------------------------------------------------------------------

    def time(self) -> float:
        base = asyncio.get_running_loop().time() if self._follow else 0.0
        return base + self._offset

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        if event.is_set():
            return
        woken = self._sleep_until(self.time() + timeout)
        waiting = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((woken, waiting), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            waiting.cancel()

    # -- what tests do -------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this time (moved there at once unless someone is due before)."""
        moment = self.time() + seconds
        woken = self._sleep_until(moment)
        if not self._auto:
            self._jump_to(moment)
        await woken

    def advance(self, seconds: float) -> None:
        """Move the time on, waking whoever it reaches."""
        self._jump_to(self.time() + seconds)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A request in flight: the time does not jump under it (auto)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._moved.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[VirtualTimer]:
        """With `auto`: the task that moves the time while the test and the bot wait."""
        if not self._auto:
            yield self
            return
        self._driver = asyncio.create_task(self._drive(), name="virtual-timer")
        try:
            yield self
        finally:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
            self._driver = None

    # -- inside ------------------------------------------------------------------------------

    def _sleep_until(self, moment: float) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (moment, next(self._order), future))
        if self._follow:  # real time wakes it too
            loop.call_later(max(moment - self.time(), 0.0), self._wake_due)
        self._moved.set()
        return future

    def _wake_due(self) -> None:
        now = self.time()
        while self._sleepers and (self._sleepers[0][0] <= now or self._sleepers[0][2].done()):
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _jump_to(self, moment: float) -> None:
        skipped = moment - self.time()
        if skipped > 0:
            self._offset += skipped
            self.jumped += skipped
        self._wake_due()

    def _next_moment(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # a wait that ended otherwise (its event was set)
        return self._sleepers[0][0] if self._sleepers else None

    async def _settled(self) -> bool:
        """Nothing new for a few loop turns and no request in flight."""
        self._moved.clear()
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)
        return not self._moved.is_set() and not self._busy

    async def _drive(self) -> None:
        while True:
            if not await self._settled():
                if self._busy:
                    await self._moved.wait()
                continue
            moment = self._next_moment()
            if moment is None:
                await self._moved.wait()  # nobody waits: nothing to jump to
                continue
            self._jump_to(moment)
