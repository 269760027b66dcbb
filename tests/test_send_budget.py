"""The shared send budget, under real python-telegram-bot, on virtual time.

Every call goes through PTB and the Bot API emulator over HTTP, while the budget's time is a
`VirtualTimer` that jumps over its waits: no test waits for the seconds of a window, a pace
or a 429 pause. The judge is the record of every request with its start and answer on that
time (`TimedRequest`): a message counts in every one-second window its request overlaps, so
"never more than the limit in any one-second window" holds whatever the network's latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from telegram.error import RetryAfter
from telegram.ext import ExtBot
from telegram.request import BaseRequest, RequestData

from bot.plumbing.request import ResilientRequest, api_method
from bot.plumbing.send_budget import (
    BULK,
    LoopTimer,
    NotSent,
    Pace,
    SendBudget,
    Window,
    counts_as_message,
)
from tests.virtual_time import VirtualTimer

PEOPLE = list(range(7001, 7061))
TEXT = "Bonjour"


@dataclass(frozen=True)
class Request:
    method: str
    chat_id: int | None
    start: float
    end: float
    code: int


class TimedRequest(ResilientRequest):
    """Records each request on the virtual time; `latency`: virtual seconds before it leaves."""

    def __init__(self, timer: VirtualTimer, latency: float = 0.0) -> None:
        super().__init__(retry_rate_limits=False)
        self.timer = timer
        self.latency = latency
        self.log: list[Request] = []

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        start = self.timer.time()
        if self.latency:
            await self.timer.sleep(self.latency)
        with self.timer.busy():  # the time stands still while the emulator answers
            code, payload = await super().do_request(
                url,
                method,
                request_data,
                read_timeout,
                write_timeout,
                connect_timeout,
                pool_timeout,
            )
        chat = request_data.parameters.get("chat_id") if request_data else None
        self.log.append(
            Request(api_method(url), int(chat) if chat else None, start, self.timer.time(), code)
        )
        return code, payload

    def messages(self, chat_id: int | None = None) -> list[Request]:
        """The messages Telegram accepted (to `chat_id` only, if given), in start order."""
        return sorted(
            (
                r
                for r in self.log
                if counts_as_message(r.method)
                and r.code == 200
                and (chat_id is None or r.chat_id == chat_id)
            ),
            key=lambda r: r.start,
        )


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        await client.register(*(client.user(t, f"P{t}", "fr") for t in PEOPLE))
        yield server, client


@pytest.fixture
async def timer() -> AsyncIterator[VirtualTimer]:
    async with VirtualTimer(auto=True).running() as running:
        yield running


@pytest.fixture
async def budget_bot(emulator, timer) -> AsyncIterator[tuple[ExtBot, SendBudget, TimedRequest]]:
    server, _ = emulator
    budget = SendBudget(10, bulk_rate=10, timer=timer)
    request = TimedRequest(timer)
    bot = ExtBot(server.token, base_url=server.base_url, request=request, rate_limiter=budget)
    async with bot:
        yield bot, budget, request


def most_in_one_second(requests: list[Request], period: float = 1.0) -> int:
    """The most requests overlapping any window of `period` seconds (each counts from its
    start to its answer: it may reach Telegram at any moment in between)."""
    return max(
        (
            sum(1 for r in requests if r.start < other.end + period and r.end >= other.end)
            for other in requests
        ),
        default=0,
    )


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


@pytest.mark.parametrize("latency", [0.0, 0.3])
async def test_never_more_than_the_limit_in_any_second(emulator, timer, latency) -> None:
    server, client = emulator
    budget = SendBudget(10, bulk_rate=10, timer=timer)
    request = TimedRequest(timer, latency)
    async with ExtBot(
        server.token, base_url=server.base_url, request=request, rate_limiter=budget
    ) as bot:
        started = timer.time()
        # 25 replies and 10 broadcast sends at once, to 35 different people.
        replies = [bot.send_message(t, TEXT) for t in PEOPLE[:25]]
        bulk = [bot.send_message(t, TEXT, rate_limit_args=BULK) for t in PEOPLE[25:35]]
        await asyncio.gather(*replies, *bulk)
        elapsed = timer.time() - started
    sent = request.messages()
    assert len(sent) == 35 and len((await client.traffic())["times"]) == 35
    assert most_in_one_second(sent) == 10  # the limit, reached and never passed
    assert elapsed >= 2.9  # 35 messages at 10 per second: really paced
    assert budget.sent == {"interactive": 25, "bulk": 10}


async def test_replies_overtake_queued_broadcast_sends(emulator, timer, budget_bot) -> None:
    _, client = emulator
    bot, _, request = budget_bot
    bulk = [
        asyncio.create_task(bot.send_message(t, TEXT, rate_limit_args=BULK)) for t in PEOPLE[:20]
    ]
    await timer.sleep(0.5)  # the broadcast is under way, most of it still queued
    assert 3 <= len(request.messages()) <= 7
    asked = timer.time()
    await asyncio.gather(*(bot.send_message(t, TEXT) for t in PEOPLE[40:43]))
    waited = timer.time() - asked
    assert waited < 0.35  # three replies behind at most one bulk spacing each
    assert sum(not task.done() for task in bulk) >= 10  # the broadcast waits behind them
    await asyncio.gather(*bulk)
    order = (await client.traffic())["chat_ids"]
    last_reply = max(order.index(t) for t in PEOPLE[40:43])
    assert last_reply < 12  # they went out among the first dozen, not after the twenty
    assert most_in_one_second(request.messages()) <= 10


async def test_a_429_pauses_every_message(emulator, timer, budget_bot) -> None:
    _, client = emulator
    bot, budget, request = budget_bot
    await client.fail_next("sendMessage", 429, retry_after=1)
    started = timer.time()
    first = asyncio.create_task(bot.send_message(PEOPLE[0], TEXT))  # the one refused
    await timer.sleep(0.05)
    assert budget.paused_for > 0.9 and budget.rate_limited == 1
    others = [bot.send_message(t, TEXT) for t in PEOPLE[1:4]]
    bulk = bot.send_message(PEOPLE[4], TEXT, rate_limit_args=BULK)
    await asyncio.gather(first, *others, bulk)  # the reply is retried after the pause
    sent = request.messages()
    assert len(sent) == 5 and len((await client.traffic())["times"]) == 5
    # Nothing was accepted during the pause: all five went out together after it (the
    # others, asked for 50 ms after the refused one, would otherwise be a second earlier).
    assert min(r.start for r in sent) - started >= 1.0
    assert max(r.start for r in sent) - min(r.start for r in sent) < 0.5
    # A broadcast send is not retried by the budget: its row goes back to the outbox.
    await client.fail_next("sendMessage", 429, retry_after=1)
    with pytest.raises(RetryAfter):
        await bot.send_message(PEOPLE[5], TEXT, rate_limit_args=BULK)
    assert budget.paused_for > 0.5 and budget.rate_limited == 2
    # Calls that are not messages do not wait for the pause: a button stops spinning at once.
    answered = timer.time()
    await bot.get_me()
    assert timer.time() - answered < 0.3 and budget.paused_for > 0.5


async def test_three_replies_go_at_once_a_fourth_waits_before_bulk(timer, budget_bot) -> None:
    bot, budget, request = budget_bot
    person, other = PEOPLE[0], PEOPLE[1]
    started = timer.time()
    # A reply flow (edit the card, confirm, ask the next question) goes out at once.
    await asyncio.gather(*(bot.send_message(person, str(n)) for n in range(3)))
    assert timer.time() - started < 0.1
    assert not budget.chat_free(person) and budget.chat_free(other)
    # A broadcast send asked first and a 4th reply both wait for a place in the 3 s window;
    # the reply goes first, the broadcast keeps a second after it.
    bulk = asyncio.create_task(bot.send_message(person, "bulk", rate_limit_args=BULK))
    await timer.sleep(0.05)
    fourth = await bot.send_message(person, "fourth")
    assert not bulk.done()
    assert (await bulk).message_id > fourth.message_id
    times = [r.start for r in request.messages(person)]
    assert len(times) == 5
    assert times[3] - times[0] >= 3.0  # the 4th waited until the 1st left the window
    assert times[4] - times[3] >= 1.0
    assert most_in_one_second(request.messages(person), period=3.0) == 3


async def test_a_group_gets_20_messages_a_minute_replies_included(timer) -> None:
    budget = SendBudget(10, group_per_minute=3, timer=timer)
    calls: list[float] = []

    async def request() -> dict:
        calls.append(timer.time())
        return {}

    for _ in range(3):
        await budget.process_request(request, (), {}, "sendMessage", {"chat_id": -100}, None)
    assert budget.chat_free(-200) and not budget.chat_free(-100)
    asked = asyncio.ensure_future(
        budget.process_request(request, (), {}, "sendMessage", {"chat_id": -100}, None)
    )
    await timer.sleep(30)
    assert not asked.done() and len(calls) == 3  # the fourth waits for the minute
    await budget.process_request(request, (), {}, "sendMessage", {"chat_id": -200}, None)
    await asked
    assert len(calls) == 5 and calls[4] - calls[0] >= 60.0  # ...and goes once it has passed
    assert calls[3] - calls[0] < 31  # another group was not held back meanwhile


async def test_before_send_runs_once_the_place_is_granted(emulator, timer, budget_bot) -> None:
    _, client = emulator
    bot, budget, request = budget_bot
    person = PEOPLE[0]
    await bot.send_message(person, "a reply")
    asked = timer.time()
    renewed: list[float] = []

    async def renew() -> bool:
        renewed.append(timer.time())
        return True

    # The bulk send waits a second for the person's chat: the renewal comes after that wait.
    await bot.send_message(person, "bulk", rate_limit_args={**BULK, "before_send": renew})
    assert len(renewed) == 1 and renewed[0] - asked >= 0.9
    assert request.messages(person)[-1].start >= renewed[0]

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
    asked = timer.time()
    await bot.send_message(PEOPLE[2], "next", rate_limit_args=BULK)
    assert timer.time() - asked < 0.15


async def test_sub_millisecond_waits_last_a_millisecond() -> None:
    timeouts: list[float] = []

    class RecordingTimer(LoopTimer):
        async def wait(self, event: asyncio.Event, timeout: float) -> None:
            timeouts.append(timeout)
            await super().wait(event, timeout)

    budget = SendBudget(10, timer=RecordingTimer())
    await budget._wait_change(0.00001)
    assert timeouts == [0.001]


async def test_without_an_overall_rate_replies_go_at_once_and_bulk_keeps_its_pace(
    emulator, timer
) -> None:
    server, _ = emulator
    budget = SendBudget(0, bulk_rate=5, timer=timer)
    request = TimedRequest(timer)
    async with ExtBot(
        server.token, base_url=server.base_url, request=request, rate_limiter=budget
    ) as bot:
        started = timer.time()
        await asyncio.gather(*(bot.send_message(t, TEXT) for t in PEOPLE[:20]))
        assert timer.time() - started < 0.01  # not throttled at all
        started = timer.time()
        await asyncio.gather(*(bot.send_message(t, TEXT, rate_limit_args=BULK) for t in PEOPLE[:6]))
        # 5 per second, and a second after the replies to the same people.
        assert timer.time() - started >= 1.0
    bulk = request.messages()[20:]
    assert len(bulk) == 6 and most_in_one_second(bulk) == 5
