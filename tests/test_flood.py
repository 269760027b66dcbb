"""Flood control: token buckets per person, bounded in memory, and drops that skip the queue.

No database, no network: a fake monotonic clock drives the buckets.
"""

from __future__ import annotations

import asyncio

from telegram import Chat, Message, Update, User

from bot.plumbing.flood import FloodControl
from bot.plumbing.ordering import PerPersonUpdateProcessor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_sustained_rate_then_served_again() -> None:
    clock = FakeClock()
    flood = FloodControl(rate=2, burst=5, clock=clock)
    assert [flood.allow(1) for _ in range(8)] == [True] * 5 + [False] * 3
    assert flood.allow(2)  # someone else is not affected
    clock.now += 0.5  # one token back at 2 per second
    assert [flood.allow(1) for _ in range(2)] == [True, False]
    clock.now += 10  # a pause refills the bucket up to the burst, never beyond
    assert [flood.allow(1) for _ in range(6)] == [True] * 5 + [False]


def test_one_notice_per_interval() -> None:
    clock = FakeClock()
    flood = FloodControl(rate=1, burst=1, notice_interval=60, clock=clock)
    flood.allow(1)
    assert not flood.allow(1)
    assert flood.should_notice(1)
    assert not flood.should_notice(1)
    clock.now += 30
    assert not flood.should_notice(1)
    clock.now += 31
    assert flood.should_notice(1)
    assert not flood.should_notice(99)  # never seen: nothing to say


def test_dropped_button_presses_are_answered_at_most_once_a_second() -> None:
    """A flood of presses must not spend the bot's overall rate on answerCallbackQuery."""
    clock = FakeClock()
    flood = FloodControl(rate=1, burst=1, clock=clock)
    flood.allow(1)
    assert not flood.allow(1)
    answered = [flood.should_answer(1) for _ in range(50)]
    assert answered == [True] + [False] * 49
    clock.now += 1.0
    assert flood.should_answer(1)
    assert flood.should_answer(2)  # someone else's presses are not affected


def test_memory_stays_bounded_idle_buckets_are_forgotten() -> None:
    clock = FakeClock()
    flood = FloodControl(rate=10, burst=10, notice_interval=5, max_people=100, clock=clock)
    for person in range(1000):
        flood.allow(person)
    assert len(flood) == 100  # the least recently seen went first
    clock.now += 6  # idle longer than a full refill and the notice interval
    flood.allow(5000)
    assert len(flood) == 1


def test_the_verdict_is_taken_once_per_update() -> None:
    clock = FakeClock()
    flood = FloodControl(rate=1, burst=1, clock=clock)
    assert flood.decide_early(1, 7)
    assert not flood.decide_early(2, 7)
    # The guard reads the processor's verdicts without taking tokens again.
    assert flood.verdict(1, 7) and not flood.verdict(2, 7)
    clock.now += 1
    assert flood.verdict(3, 7)  # not seen on arrival (process_update called directly)


def _update(update_id: int, user_id: int) -> Update:
    user = User(user_id, "P", is_bot=False)
    chat = Chat(user_id, Chat.PRIVATE)
    return Update(update_id, message=Message(update_id, None, chat, from_user=user, text="x"))


async def test_dropped_updates_do_not_wait_for_the_person_turn() -> None:
    """A refused update runs at once (only the guard drops it), not behind the person's
    slow update, so a flood never builds a queue."""
    processor = PerPersonUpdateProcessor(max_working=4)
    processor.admission = lambda update: isinstance(update, Update) and update.update_id == 1
    release = asyncio.Event()
    order: list[int] = []

    async def slow() -> None:
        await release.wait()
        order.append(1)

    async def dropped(update_id: int) -> None:
        order.append(update_id)

    first = asyncio.create_task(processor.process_update(_update(1, 5), slow()))
    await asyncio.sleep(0)
    await asyncio.wait_for(
        asyncio.gather(*(processor.process_update(_update(n, 5), dropped(n)) for n in (2, 3))),
        timeout=1,
    )
    assert order == [2, 3]  # done while the person's first update still runs
    release.set()
    await first
    assert order == [2, 3, 1]
    assert processor._locks == {}
