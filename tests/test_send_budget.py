"""The shared send budget, under real python-telegram-bot, against the emulator's flood limits.

The emulator answers 429 beyond its limits and records every accepted send: its record is the
judge of "never more than the limit in any one-second window" and "one per second per chat".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from telegram.error import RetryAfter
from telegram.ext import ExtBot

from bot.plumbing.request import ResilientRequest
from bot.plumbing.send_budget import BULK, NotSent, Pace, SendBudget, Window, counts_as_message

PEOPLE = list(range(7001, 7061))
TEXT = "Bonjour"


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with (
        BotApiEmulator(global_rate=10, per_chat_rate=1) as server,
        EmulatorClient(server.side_url) as client,
    ):
        await client.register(*(client.user(t, f"P{t}", "fr") for t in PEOPLE))
        await client.configure(per_chat_burst=3)  # 3 in any 3 s per chat, as Telegram tolerates
        yield server, client


@pytest.fixture
async def budget_bot(emulator) -> AsyncIterator[tuple[ExtBot, SendBudget]]:
    server, _ = emulator
    budget = SendBudget(10, bulk_rate=10)
    bot = ExtBot(
        server.token,
        base_url=server.base_url,
        request=ResilientRequest(retry_rate_limits=False),
        rate_limiter=budget,
    )
    async with bot:
        yield bot, budget


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - t < 1.0) for i, t in enumerate(times)), default=0)


def test_what_counts_as_a_message() -> None:
    assert counts_as_message("sendMessage") and counts_as_message("editMessageText")
    assert counts_as_message("sendDocument") and counts_as_message("copyMessage")
    assert not counts_as_message("answerCallbackQuery") and not counts_as_message("getMe")
    assert not counts_as_message("sendChatAction") and not counts_as_message("setMyCommands")


def test_a_window_holds_a_place_until_a_period_after_the_answer() -> None:
    window = Window(2, 1.0)
    assert window.delay(0.0) == 0.0
    window.started()
    window.started()
    assert window.delay(0.0) == float("inf")  # both in flight: wait for an answer
    window.ended(0.3)
    assert window.delay(0.3) == pytest.approx(1.0)  # its place is free a second later
    window.ended(0.5)
    assert window.delay(1.3) == 0.0
    group = Window(20, 60.0)  # a group's 20 per minute
    for second in range(20):
        group.started()
        group.ended(float(second))
    assert group.delay(20.0) == pytest.approx(40.0)


def test_the_bulk_pace_makes_up_for_a_late_send_but_never_bursts() -> None:
    pace = Pace(10)
    pace.started(0.0)
    assert pace.delay(0.0) == pytest.approx(0.1)
    pace.started(0.15)  # 50 ms late (the sender was writing to the database)
    assert pace.delay(0.15) == pytest.approx(0.05)  # the next slot keeps the rhythm
    pace.started(0.2)
    pace.started(0.9)  # very late: at most three spacings made up, never a longer burst
    for _ in range(3):
        assert pace.delay(0.9) == 0.0
        pace.started(0.9)
    assert pace.delay(0.9) == pytest.approx(0.1)
    pace.pause(2.0, 1.0)
    assert pace.delay(1.0) == pytest.approx(2.0)
    previous = pace.started(3.0)
    pace.given_back(previous)  # a slot taken, not used: the next send may have it
    assert pace.delay(3.0) == 0.0


async def test_never_more_than_the_limit_in_any_second(emulator, budget_bot) -> None:
    _, client = emulator
    bot, budget = budget_bot
    loop = asyncio.get_running_loop()
    started = loop.time()
    # 25 replies and 10 broadcast sends at once, to 35 different people.
    replies = [bot.send_message(t, TEXT) for t in PEOPLE[:25]]
    bulk = [bot.send_message(t, TEXT, rate_limit_args=BULK) for t in PEOPLE[25:35]]
    await asyncio.gather(*replies, *bulk)
    elapsed = loop.time() - started
    stats = await client.stats()
    assert stats["rate_limited"] == 0 and stats["max_per_second"] <= 10
    assert busiest_second((await client.traffic())["times"]) <= 10
    assert elapsed >= 2.9  # 35 messages at 10 per second: really paced
    assert budget.sent == {"interactive": 25, "bulk": 10}


async def test_replies_overtake_queued_broadcast_sends(emulator, budget_bot) -> None:
    _, client = emulator
    bot, _ = budget_bot
    loop = asyncio.get_running_loop()
    bulk = [
        asyncio.create_task(bot.send_message(t, TEXT, rate_limit_args=BULK)) for t in PEOPLE[:20]
    ]
    await asyncio.sleep(0.5)  # the broadcast is under way, most of it still queued
    asked = loop.time()
    await asyncio.gather(*(bot.send_message(t, TEXT) for t in PEOPLE[40:43]))
    waited = loop.time() - asked
    assert waited < 0.6  # three replies behind at most one bulk spacing each
    assert sum(not task.done() for task in bulk) >= 10  # the broadcast waits behind them
    await asyncio.gather(*bulk)
    traffic = await client.traffic()
    order = traffic["chat_ids"]
    last_reply = max(order.index(t) for t in PEOPLE[40:43])
    assert last_reply < 12  # they went out among the first dozen, not after the twenty
    assert (await client.stats())["rate_limited"] == 0


async def test_a_429_pauses_every_message(emulator, budget_bot) -> None:
    _, client = emulator
    bot, budget = budget_bot
    loop = asyncio.get_running_loop()
    await client.fail_next("sendMessage", 429, retry_after=1)
    started = loop.time()
    first = asyncio.create_task(bot.send_message(PEOPLE[0], TEXT))  # the one refused
    await asyncio.sleep(0.05)
    others = [bot.send_message(t, TEXT) for t in PEOPLE[1:4]]
    bulk = bot.send_message(PEOPLE[4], TEXT, rate_limit_args=BULK)
    await asyncio.gather(first, *others, bulk)  # the reply is retried after the pause
    traffic = await client.traffic()
    assert len(traffic["times"]) == 5 and budget.rate_limited == 1
    # Nothing was accepted during the pause: all five went out together after it (the
    # others, asked for 50 ms after the refused one, would otherwise be a second earlier).
    assert loop.time() - started >= 1.0
    assert max(traffic["times"]) - min(traffic["times"]) < 0.5
    # A broadcast send is not retried by the budget: its row goes back to the outbox.
    await client.fail_next("sendMessage", 429, retry_after=1)
    with pytest.raises(RetryAfter):
        await bot.send_message(PEOPLE[5], TEXT, rate_limit_args=BULK)
    assert budget.paused_for > 0.5
    # Calls that are not messages do not wait for the pause: a button stops spinning at once.
    answered = loop.time()
    await bot.get_me()
    assert loop.time() - answered < 0.3


async def test_three_replies_go_at_once_a_fourth_waits_before_bulk(emulator, budget_bot) -> None:
    _, client = emulator
    bot, budget = budget_bot
    person, other = PEOPLE[0], PEOPLE[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A reply flow (edit the card, confirm, ask the next question) goes out at once.
    await asyncio.gather(*(bot.send_message(person, str(n)) for n in range(3)))
    assert loop.time() - started < 0.6
    assert not budget.chat_free(person) and budget.chat_free(other)
    # A broadcast send asked first and a 4th reply both wait for a place in the 3 s window;
    # the reply goes first, the broadcast keeps a second after it.
    bulk = asyncio.create_task(bot.send_message(person, "bulk", rate_limit_args=BULK))
    await asyncio.sleep(0.05)
    fourth = await bot.send_message(person, "fourth")
    assert not bulk.done()
    assert (await bulk).message_id > fourth.message_id
    times = sorted((await client.traffic())["times"])
    assert len(times) == 5
    assert times[3] - times[0] >= 3.0  # the 4th waited until the 1st left the window
    assert times[4] - times[3] >= 1.0
    assert (await client.stats())["rate_limited"] == 0


async def test_a_group_gets_20_messages_a_minute_replies_included() -> None:
    budget = SendBudget(10, group_per_minute=3)
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def request() -> dict:
        calls.append(loop.time())
        return {}

    for _ in range(3):
        await budget.process_request(request, (), {}, "sendMessage", {"chat_id": -100}, None)
    assert budget.chat_free(-200) and not budget.chat_free(-100)
    asked = asyncio.ensure_future(
        budget.process_request(request, (), {}, "sendMessage", {"chat_id": -100}, None)
    )
    await asyncio.sleep(0.2)
    assert not asked.done() and len(calls) == 3  # the fourth waits for the minute
    asked.cancel()


async def test_before_send_runs_once_the_place_is_granted(emulator, budget_bot) -> None:
    _, client = emulator
    bot, budget = budget_bot
    loop = asyncio.get_running_loop()
    person = PEOPLE[0]
    await bot.send_message(person, "a reply")
    asked = loop.time()
    renewed: list[float] = []

    async def renew() -> bool:
        renewed.append(loop.time())
        return True

    # The bulk send waits a second for the person's chat: the renewal comes after that wait.
    await bot.send_message(person, "bulk", rate_limit_args={**BULK, "before_send": renew})
    assert len(renewed) == 1 and renewed[0] - asked >= 0.9

    async def no_longer_held() -> bool:
        return False

    before = budget.sent["bulk"]
    with pytest.raises(NotSent):
        await bot.send_message(
            PEOPLE[1], "not ours", rate_limit_args={**BULK, "before_send": no_longer_held}
        )
    assert budget.sent["bulk"] == before and len((await client.traffic())["times"]) == 2
    # The place was given back: the next bulk send to someone else goes at once.
    assert budget.chat_free(PEOPLE[1])
    asked = loop.time()
    await bot.send_message(PEOPLE[2], "next", rate_limit_args=BULK)
    assert loop.time() - asked < 0.3


async def test_sub_millisecond_waits_last_a_millisecond(monkeypatch) -> None:
    budget = SendBudget(10)
    timeouts: list[float] = []
    real_wait_for = asyncio.wait_for

    async def recording_wait_for(awaitable, timeout):  # type: ignore[no-untyped-def]
        timeouts.append(timeout)
        return await real_wait_for(awaitable, timeout)

    monkeypatch.setattr(asyncio, "wait_for", recording_wait_for)
    await budget._wait_change(0.00001)
    assert timeouts == [0.001]


async def test_without_an_overall_rate_replies_go_at_once_and_bulk_keeps_its_pace(
    emulator,
) -> None:
    server, client = emulator
    await client.configure(global_rate=None, per_chat_rate=None)
    budget = SendBudget(0, bulk_rate=5)
    bot = ExtBot(server.token, base_url=server.base_url, rate_limiter=budget)
    loop = asyncio.get_running_loop()
    async with bot:
        started = loop.time()
        await asyncio.gather(*(bot.send_message(t, TEXT) for t in PEOPLE[:20]))
        assert loop.time() - started < 1.0
        started = loop.time()
        await asyncio.gather(*(bot.send_message(t, TEXT, rate_limit_args=BULK) for t in PEOPLE[:6]))
        assert loop.time() - started >= 1.0  # 5 per second, and a second after the replies
