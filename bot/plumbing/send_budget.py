"""One budget for every message the bot sends: Telegram's limits, with replies first.

`SendBudget` is python-telegram-bot's rate limiter for the whole application (installed in
`build_application` in place of `AIORateLimiter`). It is the one place that decides when a
message goes out:

- overall: at most `overall_rate` messages in ANY one-second window, as Telegram (and the
  emulator) count them, not only on average. A message holds its place in the window from
  the moment its request starts until one second after its answer came back, so whatever
  the network's latency, Telegram never sees more than the limit within one second;
- per chat: at most 20 messages per minute to a group or channel (Telegram's bots FAQ),
  whoever sends them. A private chat gets about one message per second with short bursts
  tolerated, as Telegram does: at most `PRIVATE_BURST` (3) messages in any 3 seconds,
  replies and bulk together, so that a reply flow (an edit of the card, a confirmation, the
  next question) goes out at once and a fourth message waits for a place in the window
  (replies still before bulk). Bulk calls also keep one second after any message to the
  same chat (a broadcast never sends two messages in a row to someone, nor one right after
  a reply);
- priorities: interactive calls (every call by default: replies, edits, the outbox's
  notices) go before bulk calls (the broadcast sender passes ``rate_limit_args=BULK``);
  bulk calls are evenly spaced at no more than `bulk_rate` and take every place in the
  window the interactive calls leave. Even spacing means a reply never finds the window
  filled by a burst of bulk sends: it waits at most one bulk spacing (1/30 s);
- a bulk call may give ``"before_send"`` in its rate_limit_args: an async callable awaited
  once its place is granted, just before the request (the broadcast sender renews its hold
  on the outbox row there, however long the wait for the place was). When it returns False
  the place is given back and the call raises `NotSent`: nothing went out;
- a 429 pauses every message for its ``retry_after``. An interactive call is then retried
  (at most `max_retries` times, as AIORateLimiter does); a bulk call raises `RetryAfter` to
  the broadcast sender, which puts its row back without spending an attempt.

What counts as a message: sends, copies, forwards and edits (Telegram's flood limits apply
to them, and the emulator counts them). Other calls (answering a button, getMe, setting
commands, deleting a message, chat actions) are neither throttled nor held by a 429 pause:
a pressed button stops spinning at once. Only one that was itself refused with a 429 waits
out the pause before it is retried.

With ``overall_rate`` 0 (RATE_LIMIT_PER_SECOND=0, tests and the demo), interactive calls go
out at once, per-chat windows included (recorded, so that bulk calls still keep one second
per chat and the private burst window after them) and a
429 on them is the request layer's to wait out; bulk calls keep their pace and spacing.

The budget belongs to one process: two instances behind one webhook each have their own,
so each should get half of Telegram's rate.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from itertools import count
from typing import Any, Protocol

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

# rate_limit_args of a broadcast send: it waits behind every interactive call.
BULK: dict[str, Any] = {"bulk": True}
# The shortest wait: the event loop's clock (uvloop's) has a 1 ms resolution, and a shorter
# timeout would wake up before the place is free, again and again (a busy loop).
MIN_WAIT_S = 0.001

PRIVATE_CHAT_INTERVAL_S = 1.0  # about one message per second in one chat...
PRIVATE_BURST = 3  # ...with short bursts: at most 3 messages in any 3 s (replies and bulk)
GROUP_PER_MINUTE = 20  # at most 20 messages per minute to one group or channel
MAX_RETRIES = 3  # an interactive call retried after at most this many 429s
CATCH_UP_SPACINGS = 3  # how far behind its rhythm the bulk pace may make up
FORGET_CHATS_AFTER = 4096  # chats remembered before the quiet ones are forgotten

# Bot API methods that are messages for Telegram's flood limits (besides every send...).
_COUNTED_PREFIXES = ("send", "copyMessage", "forwardMessage", "editMessage")
_NOT_COUNTED = frozenset({"sendChatAction"})


class NotSent(Exception):
    """A bulk call's ``before_send`` said no: its place was given back, nothing was sent."""


def counts_as_message(endpoint: str) -> bool:
    """Whether a Bot API call is a message under Telegram's flood limits."""
    return endpoint.startswith(_COUNTED_PREFIXES) and endpoint not in _NOT_COUNTED


class Window:
    """At most `capacity` messages whose requests overlap any `period` seconds.

    A message occupies its place from its start until `period` seconds after it ended: the
    next one may start only once its arrival can no longer share a window with it.
    """

    __slots__ = ("_ends", "capacity", "in_flight", "period")

    def __init__(self, capacity: int, period: float) -> None:
        self.capacity = capacity
        self.period = period
        self.in_flight = 0
        self._ends: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds before one more message may start (inf: when one in flight ends)."""
        ends = self._ends
        while ends and ends[0] + self.period <= now:
            ends.popleft()
        excess = self.in_flight + len(ends) - self.capacity + 1
        if excess <= 0:
            return 0.0
        if excess > len(ends):
            return math.inf
        return ends[excess - 1] + self.period - now

    def started(self) -> None:
        self.in_flight += 1

    def ended(self, now: float) -> None:
        self.in_flight -= 1
        ends = self._ends
        while ends and ends[0] + self.period <= now:
            ends.popleft()  # bounded even when nobody asks for a delay (replies, interval)
        ends.append(now)

    def given_back(self) -> None:
        """A place taken but not used: nothing was sent."""
        self.in_flight -= 1

    def idle_since(self, now: float) -> bool:
        """Nothing in flight, and nothing that still holds a place."""
        return self.in_flight == 0 and self.delay(now) == 0.0 and not self._ends


class Pace:
    """Bulk pacing: sends evenly spaced at `rate`, at most floor(rate) in any second.

    Each send has a slot one spacing after the previous one's. A send that started late (the
    sender was busy: a database write, a slow answer, the next batch claimed) lets the next
    ones start earlier by as much, up to CATCH_UP_SPACINGS spacings, so that small delays do
    not add up into a lower rate; the per-second cap still holds. A send counts from the moment its request starts until its
    answer came back (see `Window`). Times are the budget's `Timer` (the event loop's clock).
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = rate
        self.per_second = max(1, math.floor(rate))
        self._spacing = 1.0 / rate
        self._next_slot = -math.inf
        self._ends: deque[float] = deque(maxlen=self.per_second)
        self._paused_until = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next send may start."""
        ready = max(self._next_slot, self._paused_until)
        if len(self._ends) == self.per_second:
            ready = max(ready, self._ends[0] + 1.0)
        return max(0.0, ready - now)

    def started(self, now: float) -> float:
        """Take the next slot; returns the previous one (to give the slot back)."""
        previous = self._next_slot
        late = now - self._next_slot if self._next_slot > -math.inf else 0.0
        made_up = min(max(late, 0.0), CATCH_UP_SPACINGS * self._spacing)
        self._next_slot = now + self._spacing - made_up
        return previous

    def given_back(self, previous: float) -> None:
        """The slot taken last was not used: the next send may have it."""
        self._next_slot = max(previous, self._paused_until)

    def ended(self, now: float) -> None:
        self._ends.append(now)

    def pause(self, seconds: float, now: float) -> None:
        """Telegram said 429: nothing goes out before `seconds` have passed."""
        self._paused_until = max(self._paused_until, now + seconds)
        self._next_slot = max(self._next_slot, now + seconds)  # no catching up on a pause


class _Ticket:
    __slots__ = ("bulk", "chat", "order")

    def __init__(self, bulk: bool, chat: int | str | None, order: int) -> None:
        self.bulk = bulk
        self.chat = chat
        self.order = order


def _window_for(rate: float) -> Window:
    """A rate as a window: below one per second (0.5/s), one message in a longer period."""
    period = max(1.0, 1.0 / rate)
    return Window(max(1, math.floor(rate * period + 1e-9)), period)


def _chat_key(data: dict[str, Any]) -> int | str | None:
    chat_id = data.get("chat_id")
    if chat_id is None:
        return None
    try:
        return int(chat_id)
    except (TypeError, ValueError):
        return str(chat_id)  # @channelusername


class Timer(Protocol):
    """The budget's time: monotonic seconds, and waiting on them (tests give a virtual one)."""

    def time(self) -> float:
        """The current time, in seconds on a monotonic clock."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Return once `event` is set or `timeout` seconds have passed, whichever is first."""
        ...


class LoopTimer:
    """The event loop's monotonic clock, used in production."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout)
        except TimeoutError:
            pass


def _is_group(chat: int | str) -> bool:
    # Private chats have positive ids; groups, supergroups and channels negative ones or a name.
    return isinstance(chat, str) or chat < 0


def retry_after_seconds(exc: RetryAfter) -> float:
    """How long a 429 asks to wait, in seconds: python-telegram-bot gives whole seconds, or a
    timedelta under its future behaviour (bot/__init__.py opts in). The one conversion used by
    the budget, the outbox delivery and the start-up retries."""
    delay = exc.retry_after
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


class SendBudget(BaseRateLimiter[dict[str, Any]]):
    """Telegram's limits for the whole bot, interactive calls first (see the module)."""

    def __init__(
        self,
        overall_rate: float,
        *,
        bulk_rate: float | None = None,
        private_chat_interval: float = PRIVATE_CHAT_INTERVAL_S,
        private_burst: int = PRIVATE_BURST,
        group_per_minute: int = GROUP_PER_MINUTE,
        max_retries: int = MAX_RETRIES,
        timer: Timer | None = None,
    ) -> None:
        if overall_rate < 0:
            raise ValueError("the overall rate cannot be negative")
        self.overall_rate = overall_rate
        # Where every time of the budget comes from; set before the first call, never after.
        self.timer: Timer = timer or LoopTimer()
        self._overall = _window_for(overall_rate) if overall_rate > 0 else None
        self._private_interval = private_chat_interval
        self._private_burst = private_burst
        self._group_per_minute = group_per_minute
        self.max_retries = max_retries
        self._chats: dict[int | str, tuple[Window, ...]] = {}
        self._waiting: list[_Ticket] = []
        self._order = count()
        self._changed = asyncio.Event()
        self._paused_until = 0.0
        self.pace = Pace(self._bulk_ceiling(bulk_rate))
        # What happened, for logs, tests and benchmarks.
        self.sent = {"interactive": 0, "bulk": 0}
        self.rate_limited = 0

    # -- configuration -------------------------------------------------------------------

    def _bulk_ceiling(self, bulk_rate: float | None) -> float:
        limits = [rate for rate in (bulk_rate, self.overall_rate) if rate]
        if not limits:
            raise ValueError("bulk sends need a rate: give bulk_rate or an overall rate")
        return min(limits)

    def limit_bulk(self, rate: float | None) -> None:
        """Bulk sends at most `rate` per second (None: the whole budget)."""
        self.pace = Pace(self._bulk_ceiling(rate))

    @property
    def bulk_rate(self) -> float:
        return self.pace.rate

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close; calls still waiting end with their tasks."""

    # -- the decision ----------------------------------------------------------------------

    def _windows_of(self, chat: int | str) -> tuple[Window, ...]:
        """The chat's windows: one second after any message (binding bulk calls only), then
        the windows binding every message: 20 per minute for a group or channel,
        `PRIVATE_BURST` in any `PRIVATE_BURST` seconds for a private chat."""
        windows = self._chats.get(chat)
        if windows is None:
            if len(self._chats) >= FORGET_CHATS_AFTER:
                self._forget_quiet_chats()
            interval = Window(1, self._private_interval)
            if _is_group(chat):
                windows = (interval, Window(self._group_per_minute, 60.0))
            else:
                burst = self._private_burst
                windows = (interval, Window(burst, burst * self._private_interval))
            self._chats[chat] = windows
        return windows

    def _forget_quiet_chats(self) -> None:
        """Memory stays flat whatever the audience: chats that hold no place are forgotten."""
        now = self.timer.time()
        for chat in [c for c, ws in self._chats.items() if all(w.idle_since(now) for w in ws)]:
            del self._chats[chat]

    def _delay(self, ticket: _Ticket, now: float) -> float:
        """Seconds before this call may go, if nothing else happened meanwhile."""
        delay = self._paused_until - now
        if ticket.chat is None or not (ticket.bulk or self._overall is not None):
            return delay  # not a message, or a reply with the budget off
        if self._overall is not None:
            delay = max(delay, self._overall.delay(now))
        interval, *binding_all = self._windows_of(ticket.chat)
        for window in binding_all:
            delay = max(delay, window.delay(now))
        if ticket.bulk:
            delay = max(delay, interval.delay(now), self.pace.delay(now))
        return delay

    def _overtaken(self, ticket: _Ticket, now: float) -> bool:
        """Someone before this call in line could go now: let them."""
        for other in self._waiting:
            if other is ticket:
                continue
            ahead = (other.bulk, other.order) < (ticket.bulk, ticket.order)
            if ahead and self._delay(other, now) <= 0:
                return True
        return False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def chat_free(self, chat_id: int | str) -> bool:
        """Whether a bulk call to `chat_id` is held back by nothing about that chat (a message
        in the last second, a private chat's burst, a group's 20 per minute): the broadcast sender sends to such a
        recipient first rather than stall its batch behind one who must wait."""
        now = self.timer.time()
        chat = _chat_key({"chat_id": chat_id})
        assert chat is not None
        windows = self._chats.get(chat)
        return windows is None or all(window.delay(now) <= 0 for window in windows)

    async def _wait_change(self, delay: float) -> None:
        changed = self._changed
        if math.isinf(delay):
            await changed.wait()
            return
        await self.timer.wait(changed, max(delay, MIN_WAIT_S))

    async def _take_place(
        self, bulk: bool, chat: int | str | None
    ) -> tuple[tuple[Window, ...], float]:
        """Wait for this call's turn, then hold its places in the windows.

        Returns the windows and the bulk pace's previous slot (to give them back)."""
        ticket = _Ticket(bulk, chat, next(self._order))
        self._waiting.append(ticket)
        try:
            while True:
                now = self.timer.time()
                delay = self._delay(ticket, now)
                if delay <= 0 and not self._overtaken(ticket, now):
                    break
                # When someone ahead may go, they take their place and tell the others.
                await self._wait_change(delay if delay > 0 else math.inf)
        except BaseException:
            # Cancelled while waiting: whoever this call was holding back looks again.
            self._waiting.remove(ticket)
            self._notify()
            raise
        self._waiting.remove(ticket)
        windows: tuple[Window, ...] = ()
        if chat is not None:
            windows = self._windows_of(chat)
            if self._overall is not None:
                windows = (self._overall, *windows)
        for window in windows:
            window.started()
        previous_slot = self.pace.started(self.timer.time()) if bulk else -math.inf
        self._notify()
        return windows, previous_slot

    def _give_back(self, bulk: bool, windows: tuple[Window, ...], previous_slot: float) -> None:
        """Places taken but not used: nothing was sent."""
        for window in windows:
            window.given_back()
        if bulk:
            self.pace.given_back(previous_slot)
        self._notify()

    def _release(self, bulk: bool, windows: tuple[Window, ...]) -> None:
        now = self.timer.time()
        for window in windows:
            window.ended(now)
        if bulk:
            self.pace.ended(now)
        self._notify()

    def pause(self, seconds: float) -> None:
        """Nothing goes out for `seconds` (Telegram's retry_after)."""
        now = self.timer.time()
        if now + seconds > self._paused_until:
            self._paused_until = now + seconds
            self.pace.pause(seconds, now)
        self._notify()

    @property
    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when none)."""
        return max(0.0, self._paused_until - self.timer.time())

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        bulk = bool(rate_limit_args and rate_limit_args.get("bulk"))
        before_send: Callable[[], Awaitable[bool]] | None = (
            rate_limit_args.get("before_send") if rate_limit_args else None
        )
        counted = counts_as_message(endpoint)
        chat = _chat_key(data) if counted else None
        # Bulk calls are the broadcast sender's, which puts the row back after a 429;
        # without an overall rate, the request layer waits out the replies' 429s.
        retries = 0 if bulk or self._overall is None else self.max_retries
        attempt = 0
        while True:
            windows: tuple[Window, ...] = ()
            if counted:
                windows, previous_slot = await self._take_place(bulk, chat)
                if before_send is not None:
                    try:
                        go = await before_send()
                    except BaseException:
                        self._give_back(bulk, windows, previous_slot)
                        raise
                    if not go:
                        self._give_back(bulk, windows, previous_slot)
                        raise NotSent(endpoint)
            elif attempt:
                # Refused itself: it waits out the pause (other non-messages never do).
                while (pause := self.paused_for) > 0:
                    await self._wait_change(pause)
            try:
                result = await callback(*args, **kwargs)
            except RetryAfter as exc:
                seconds = retry_after_seconds(exc)
                self.rate_limited += 1
                log.warning(
                    "Telegram asked to slow down (429 on %s): every message waits %.0f s",
                    endpoint,
                    seconds,
                )
                self.pause(seconds + 0.1)
                if attempt >= retries:
                    raise
                attempt += 1
                continue
            finally:
                if counted:
                    self._release(bulk, windows)
            if counted:
                self.sent["bulk" if bulk else "interactive"] += 1
            return result
