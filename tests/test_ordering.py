"""One person's updates run in order; different people's run at the same time."""

from __future__ import annotations

import asyncio

from telegram import Chat, Message, Update, User

from bot.plumbing.ordering import PerPersonUpdateProcessor


def _update(update_id: int, user_id: int) -> Update:
    user = User(user_id, "P", is_bot=False)
    chat = Chat(user_id, Chat.PRIVATE)
    return Update(update_id, message=Message(update_id, None, chat, from_user=user, text="x"))


async def test_same_person_in_order_other_people_concurrently() -> None:
    processor = PerPersonUpdateProcessor(max_working=16)
    log: list[tuple[str, int, int]] = []
    running = 0
    most_at_once = 0

    async def handle(update_id: int, user_id: int, delay: float) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        log.append(("start", user_id, update_id))
        await asyncio.sleep(delay)
        log.append(("end", user_id, update_id))
        running -= 1

    jobs = []
    for update_id, (user_id, delay) in enumerate(
        [(1, 0.05), (1, 0.0), (2, 0.03), (1, 0.0), (2, 0.0), (3, 0.01)]
    ):
        update = _update(update_id, user_id)
        jobs.append(processor.process_update(update, handle(update_id, user_id, delay)))
    await asyncio.gather(*jobs)

    for user_id in (1, 2, 3):
        mine = [(kind, uid) for kind, who, uid in log if who == user_id]
        # Each update of a person ends before the next one starts, in arrival order.
        ids = [uid for kind, uid in mine if kind == "start"]
        assert ids == sorted(ids)
        assert all(
            mine[i][0] == "start" and mine[i + 1][0] == "end" for i in range(0, len(mine), 2)
        )
    assert most_at_once == 3  # one update of each person at a time
    assert processor._locks == {}  # idle people are forgotten


async def test_a_busy_person_does_not_hold_the_slots_of_others() -> None:
    """Many queued updates of one person must not starve another person's update."""
    processor = PerPersonUpdateProcessor(max_working=2, max_queued=100)
    release = asyncio.Event()
    done: list[int] = []

    async def slow(update_id: int) -> None:
        await release.wait()
        done.append(update_id)

    async def quick(update_id: int) -> None:
        done.append(update_id)

    flood = [
        asyncio.create_task(processor.process_update(_update(n, 1), slow(n))) for n in range(20)
    ]
    await asyncio.sleep(0)
    await asyncio.wait_for(processor.process_update(_update(99, 2), quick(99)), timeout=1)
    assert done == [99]
    release.set()
    await asyncio.gather(*flood)
    assert done[1:] == list(range(20))
