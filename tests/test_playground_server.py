"""The playground's web server over HTTP, with the real emulator and the real bot behind it.

What a page does (send text, press buttons, download files, travel in time) goes through
the server's API as the browser would, and what the bot answers is read from the
server-sent event stream, as the page reads it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from emulator.client import EmulatorClient
from offline.playground import feed as feed_module
from offline.playground import server as server_module
from offline.playground.feed import SUBSCRIBER_QUEUE
from offline.playground.run import Playground, playground
from offline.playground.server import PlaygroundServer
from offline.playground.time_machine import TimeMachine
from sqlalchemy import select

from bot.plumbing.context import SERVICES_KEY
from bot.settings import ConfigurationError, load_settings
from bot.text.i18n import Translator
from storage.models import Workshop, WorkshopStatus

pytestmark = pytest.mark.e2e

AMINA = 100_001
WAIT_S = 10.0  # the longest wait for the bot's answer: a bound, never a pause
T = Translator.load()


@dataclass
class Page:
    """What a browser page does: API calls, and the event stream it follows."""

    http: aiohttp.ClientSession
    url: str
    stream: aiohttp.ClientResponse
    snapshot: dict[str, Any]
    world: Playground

    async def post(self, path: str, body: object) -> aiohttp.ClientResponse:
        return await self.http.post(self.url + path, json=body)

    async def next_event(
        self, wanted: Callable[[dict[str, Any]], bool], stream: aiohttp.ClientResponse | None = None
    ) -> dict[str, Any]:
        """The next event of the stream that ``wanted`` accepts (others are skipped)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                line = (await (stream or self.stream).content.readline()).decode()
                if not line:
                    raise AssertionError("the event stream ended")
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if wanted(event):
                        return event

    async def bot_message(
        self, chat: str, *, kind: str = "message", having: str = ""
    ) -> dict[str, Any]:
        """The next message of the bot in that chat (with ``having`` in its text or buttons)."""
        event = await self.next_event(
            lambda e: (
                e["type"] == kind
                and e["chat"] == chat
                and e["message"]["from"] == "bot"
                and having in json.dumps(e["message"], ensure_ascii=False)
            )
        )
        return event["message"]

    @asynccontextmanager
    async def another_stream(self) -> AsyncIterator[tuple[aiohttp.ClientResponse, dict]]:
        """A second page: its stream and the snapshot it starts with."""
        stream = await self.http.get(self.url + "api/events")
        try:
            first = (await stream.content.readline()).decode()
            yield stream, json.loads(first.removeprefix("data: "))
        finally:
            stream.close()

    async def chats_now(self) -> dict[str, list[dict[str, Any]]]:
        """The chats as a page connecting now sees them."""
        async with self.another_stream() as (_, snapshot):
            return snapshot["chats"]


@asynccontextmanager
async def opened(tmp_path: Path, **options: Any) -> AsyncIterator[Page]:
    settings = load_settings(flood_rate=100, flood_burst=1000)
    database = f"sqlite+aiosqlite:///{tmp_path}/playground.sqlite3"
    async with (
        playground(settings, database, port=0, today=date.today(), **options) as world,
        aiohttp.ClientSession() as http,
    ):
        url = world.server.url
        stream = await http.get(url + "api/events")
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        first = (await stream.content.readline()).decode()
        snapshot = json.loads(first.removeprefix("data: "))
        assert snapshot["type"] == "snapshot"
        try:
            yield Page(http, url, stream, snapshot, world)
        finally:
            stream.close()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with opened(tmp_path) as ready:
        yield ready


async def until(condition: Callable[[], bool]) -> None:
    """Waits for a condition of the server's state (bounded by WAIT_S, never a fixed pause)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 (server state, no event to wait on)
            await asyncio.sleep(0.01)


async def consented(page: Page) -> tuple[dict[str, Any], dict[str, Any]]:
    """Amina starts and accepts the notice: the notice, then the message as edited."""
    assert (await page.post("api/chats/resident-1/messages", {"text": "/start"})).status == 200
    notice = await page.bot_message("resident-1")
    accept = notice["buttons"][0][0]
    body = {"message_id": notice["message_id"], "data": accept["data"]}
    assert (await page.post("api/chats/resident-1/callbacks", body)).status == 200
    return notice, await page.bot_message("resident-1", kind="edit")


async def press(page: Page, chat: str, message: dict[str, Any], label: str) -> None:
    data = next(b["data"] for row in message["buttons"] for b in row if label in b["text"])
    body = {"message_id": message["message_id"], "data": data}
    assert (await page.post(f"api/chats/{chat}/callbacks", body)).status == 200


async def seat_amina(page: Page) -> int:
    """Amina consents and takes a seat at the soonest workshop; its id."""
    await consented(page)
    services = page.world.application.bot_data[SERVICES_KEY]
    now = page.world.clock.now()
    async with services.db.read() as session:
        workshop = await session.scalar(
            select(Workshop.id)
            .where(Workshop.status == WorkshopStatus.SCHEDULED, Workshop.starts_at > now)
            .order_by(Workshop.starts_at)
            .limit(1)
        )
    assert workshop is not None
    assert (await services.registrations.register(AMINA, workshop)).outcome.value == "confirmed"
    return workshop


async def clock(page: Page) -> dict[str, Any]:
    async with page.http.get(page.url + "api/clock") as response:
        assert response.status == 200
        return await response.json()


async def test_the_page_and_its_strings_are_served(page: Page) -> None:
    async with page.http.get(page.url) as response:
        html = await response.text()
    assert '<select id="ui-language">' in html
    # The page starts with the French strings in it (no first request that could fail).
    assert '"playground.travel.title": "Voyage dans le temps"' in html
    for name in ("app.js", "style.css"):
        async with page.http.get(f"{page.url}static/{name}") as response:
            assert response.status == 200
    async with page.http.get(page.url + "api/ui/ar") as response:
        ui = await response.json()
    assert ui["dir"] == "rtl"
    assert ui["strings"]["playground.travel.title"] == "السفر عبر الزمن"
    assert [chat["key"] for chat in ui["chats"]] == [
        "resident-1",
        "resident-2",
        "mediator",
        "coordinator",
        "channel",
    ]
    assert page.snapshot["chats"]["resident-1"] == []
    assert page.snapshot["alive"] is True


async def test_text_and_buttons_reach_the_bot_and_its_answers_reach_the_page(page: Page) -> None:
    assert (await page.post("api/chats/resident-1/messages", {"text": "/start"})).status == 200
    mine = await page.next_event(lambda e: e["type"] == "message" and e["chat"] == "resident-1")
    assert mine["message"] | {"message_id": 0} == {
        "message_id": 0,
        "from": "user",
        "text": "/start",
        "entities": [],
        "edited": False,
        "buttons": [],
    }
    notice = await page.bot_message("resident-1")
    assert "Êtes-vous d'accord" in notice["text"]
    assert {"type": "bold"}.items() <= notice["entities"][0].items()

    accept = notice["buttons"][0][0]
    body = {"message_id": notice["message_id"], "data": accept["data"]}
    assert (await page.post("api/chats/resident-1/callbacks", body)).status == 200
    toast = await page.next_event(lambda e: e["type"] == "toast")
    assert toast["chat"] == "resident-1" and toast["text"]
    edited = await page.bot_message("resident-1", kind="edit")
    assert edited["message_id"] == notice["message_id"] and edited["edited"]

    history = (await page.chats_now())["resident-1"]
    assert [m["from"] for m in history] == ["user", "bot"]
    assert history[1]["text"] == edited["text"]  # updated in place, not added

    # Karima's Telegram is in Arabic: the bot answers her in Arabic.
    assert (await page.post("api/chats/resident-2/messages", {"text": "/start"})).status == 200
    assert "مرحبًا" in (await page.bot_message("resident-2"))["text"]


async def test_bad_requests_are_refused_and_change_nothing(page: Page) -> None:
    notice, edited = await consented(page)
    valid_data = edited["buttons"][0][0]["data"]
    state = page.world.emulator.state
    seq, updates = state.seq, len(state.updates)

    async def refused(response: aiohttp.ClientResponse, code: str, status: int = 400) -> None:
        assert response.status == status
        assert response.content_type == "application/json"
        assert (await response.json())["code"] == code

    await refused(await page.post("api/chats/stranger/messages", {"text": "hi"}), "unknown_chat")
    await refused(await page.post("api/chats/channel/messages", {"text": "hi"}), "read_only_chat")
    await refused(
        await page.post("api/chats/resident-1/messages", {"text": "é" * 4097}), "text_too_long"
    )
    # 2049 emoji are 2049 characters but 4098 UTF-16 units, as Telegram counts them.
    await refused(
        await page.post("api/chats/resident-1/messages", {"text": "🙂" * 2049}), "text_too_long"
    )
    await refused(
        await page.post("api/chats/resident-1/messages", {"text": "x" * 70_000}), "too_large", 413
    )
    await refused(await page.post("api/chats/resident-1/messages", {"text": "  "}), "empty_text")
    await refused(
        await page.http.post(page.url + "api/chats/resident-1/messages", data="text=hi"),
        "bad_request",
    )
    forged = {"message_id": edited["message_id"], "data": valid_data + "x"}
    await refused(await page.post("api/chats/resident-1/callbacks", forged), "unknown_button")
    for message_id in (str(edited["message_id"]), True):
        not_a_number = {"message_id": message_id, "data": valid_data}
        await refused(
            await page.post("api/chats/resident-1/callbacks", not_a_number), "unknown_button"
        )
    # A real button, but shown to Amina: it cannot be pressed in Karima's chat.
    elsewhere = {"message_id": notice["message_id"], "data": valid_data}
    await refused(await page.post("api/chats/resident-2/callbacks", elsewhere), "unknown_button")
    # The consent buttons were replaced by the edit: no longer on the message.
    stale = {"message_id": notice["message_id"], "data": notice["buttons"][0][0]["data"]}
    await refused(await page.post("api/chats/resident-1/callbacks", stale), "unknown_button")
    async with page.http.get(page.url + "api/chats/resident-1/files/DOC-forged") as response:
        await refused(response, "unknown_file")
    await refused(await page.post("api/travel", {"to": "yesterday"}), "unknown_travel")
    await refused(await page.post("api/travel", {"to": "reminder"}), "no_target")
    async with page.http.get(page.url + "api/clock", headers={"Host": "evil.example"}) as r:
        await refused(r, "bad_host")

    assert (state.seq, len(state.updates)) == (seq, updates)
    assert page.world.clock.offset.total_seconds() == 0

    # The longest message Telegram takes is taken.
    longest = {"text": "é" * 4096}
    assert (await page.post("api/chats/resident-1/messages", longest)).status == 200


async def test_a_bug_in_a_handler_is_a_logged_json_500(
    page: Page, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: TimeMachine) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TimeMachine, "state", broken)
    async with page.http.get(page.url + "api/clock") as response:
        assert response.status == 500
        assert (await response.json())["code"] == "internal"
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


async def test_documents_and_charts_are_served_with_their_names_and_types(page: Page) -> None:
    await consented(page)
    assert (await page.post("api/chats/resident-1/messages", {"text": "/mydata"})).status == 200
    document = (await page.bot_message("resident-1", having="my-data.json"))["document"]
    assert document["name"] == "my-data.json"

    async with page.http.get(page.url + document["url"].removeprefix("/")) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment;")
        assert 'filename="my-data.json"' in response.headers["Content-Disposition"]
        data = json.loads(await response.read())
    assert data  # the person's data, as the bot wrote it
    file_id = document["url"].rsplit("/", 1)[1]
    async with page.http.get(f"{page.url}api/chats/resident-2/files/{file_id}") as response:
        assert response.status == 400  # a file of Amina's chat, asked for in Karima's

    # The coordinator's charts are pictures shown in the page: inline PNG.
    assert (await page.post("api/chats/coordinator/messages", {"text": "/stats"})).status == 200
    charts_label = T.label("fr", "stats.charts")
    menu = await page.bot_message("coordinator", having=charts_label)
    await press(page, "coordinator", menu, charts_label)
    chart = await page.next_event(
        lambda e: e["type"] == "message" and e["chat"] == "coordinator" and "photo" in e["message"]
    )
    async with page.http.get(page.url + chart["message"]["photo"]["url"].removeprefix("/")) as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        assert r.headers["Content-Disposition"].startswith("inline;")
        assert (await r.read()).startswith(b"\x89PNG")


async def test_time_travel_brings_the_reminder_then_the_check_in_prompt(page: Page) -> None:
    workshop = await seat_amina(page)
    state = await clock(page)
    assert state["workshop"]["id"] == workshop
    assert "at" in state["targets"]["reminder"]

    answer = await page.post("api/travel", {"to": "reminder"})
    assert answer.status == 200
    travelled = await answer.json()
    assert travelled["offset_ms"] > 0
    reminder = await page.bot_message("resident-1", having=T.label("fr", "reminder.coming_button"))
    assert reminder["buttons"]
    venue = await page.next_event(
        lambda e: e["type"] == "message" and e["chat"] == "resident-1" and "venue" in e["message"]
    )
    assert venue["message"]["venue"]["map"].startswith("https://www.openstreetmap.org/?mlat=")

    assert (await page.post("api/travel", {"to": "workshop-end"})).status == 200
    here = T.label("fr", "attendance.here_button")
    prompt = await page.bot_message("resident-1", having=here)
    ends_at = datetime.fromisoformat(travelled["targets"]["workshop-end"]["at"])
    assert page.world.clock.now() >= ends_at
    after = await clock(page)
    # Over, and said so: no more "no seat" once the workshop has ended.
    assert after["workshop"]["over"] is True
    assert after["targets"]["reminder"]["reason"] == "playground.travel.reason.over"
    assert after["targets"]["survey-close"]["reason"] == "playground.travel.reason.nobody_came"

    # Amina taps "I'm here" (still open an hour after the end): the survey can be travelled to.
    # The journey halts at its opening, where Amina must act (her invitation); the next one
    # goes on to its close (the digest in the channel).
    await press(page, "resident-1", prompt, here)
    checked_in = T.label("fr", "attendance.checked_in_toast")
    await page.next_event(lambda e: e["type"] == "toast" and e["text"] == checked_in)
    opening = datetime.fromisoformat((await clock(page))["targets"]["survey-close"]["at"])
    assert (await page.post("api/travel", {"to": "survey-close"})).status == 200
    await page.bot_message("resident-1", having=T.label("fr", "surveys.start"))
    halted = await clock(page)
    closing = datetime.fromisoformat(halted["targets"]["survey-close"]["at"])
    assert opening <= datetime.fromisoformat(halted["now"]) < closing
    assert (await page.post("api/travel", {"to": "survey-close"})).status == 200
    await page.bot_message("channel", having="Bilan")


async def test_a_day_s_jump_halts_at_the_start_for_the_check_in_prompt(page: Page) -> None:
    await seat_amina(page)
    assert (await page.post("api/travel", {"to": "reminder"})).status == 200
    starts_at = datetime.fromisoformat((await clock(page))["targets"]["workshop-end"]["at"])
    # Two days from the first reminder: the workshop starts and ends on the way.
    for _ in range(2):
        before = page.world.clock.now()
        assert (await page.post("api/travel", {"to": "day"})).status == 200
        assert page.world.clock.now() - before >= timedelta(days=1)
    assert page.world.clock.now() > starts_at
    await page.bot_message("resident-1", having=T.label("fr", "attendance.here_button"))


async def test_travel_waits_for_the_scheduler_s_own_runs(page: Page) -> None:
    """A jump while a scheduled job (a delivery) is in flight would make its lease look
    lapsed: travel holds the scheduler and waits for that run to end before moving."""
    application = page.world.application
    assert application.job_queue is not None
    scheduler = application.job_queue.scheduler
    started, release = asyncio.Event(), asyncio.Event()

    async def in_flight(context: object) -> None:
        started.set()
        await release.wait()

    application.job_queue.run_once(in_flight, when=0, name="in-flight")
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    journey = asyncio.create_task(page.post("api/travel", {"to": "hour"}))
    await until(lambda: scheduler.state == STATE_PAUSED)
    assert page.world.clock.offset == timedelta(0)  # not while the run is in flight

    release.set()
    async with asyncio.timeout(WAIT_S):
        assert (await journey).status == 200
    assert page.world.clock.offset >= timedelta(minutes=59)
    assert scheduler.state == STATE_RUNNING


async def test_pages_that_leave_or_lag_are_let_go_and_the_feed_survives_odd_events(
    page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = page.world.server.feed
    async with page.another_stream():
        assert feed.subscribers == 2
    # The page closed its stream: the next event finds it gone and lets it go.
    assert (await page.post("api/chats/resident-1/messages", {"text": "/start"})).status == 200
    await until(lambda: feed.subscribers == 1)

    # An event the page cannot draw is skipped, and the later ones still arrive.
    real = feed_module.page_message

    def picky(key: str, payload: dict[str, Any], *, from_bot: bool) -> dict[str, Any]:
        if payload.get("text") == "odd":
            raise KeyError("an unexpected event shape")
        return real(key, payload, from_bot=from_bot)

    monkeypatch.setattr(feed_module, "page_message", picky)
    assert (await page.post("api/chats/resident-2/messages", {"text": "odd"})).status == 200
    assert (await page.post("api/chats/resident-2/messages", {"text": "/start"})).status == 200
    assert "مرحبًا" in (await page.bot_message("resident-2"))["text"]
    assert feed.alive

    # Pages that stop reading are dropped when their queue is full (this test's own page is
    # not reading either), and their streams end: they reconnect to a fresh snapshot.
    _, lagging = feed.subscribe()
    for number in range(SUBSCRIBER_QUEUE + 1):
        feed.publish({"type": "test", "n": number})
    assert feed.subscribers == 0
    assert lagging.qsize() == SUBSCRIBER_QUEUE
    assert [lagging.get_nowait() for _ in range(SUBSCRIBER_QUEUE)][-1] is None

    # Stopping ends every stream, a full one too.
    _, full = feed.subscribe()
    for number in range(SUBSCRIBER_QUEUE):
        feed.publish({"type": "test", "n": number})
    await feed.stop()
    assert [full.get_nowait() for _ in range(full.qsize())][-1] is None


async def test_a_feed_that_fails_says_so_and_follows_again(
    page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = EmulatorClient.events
    failures = [RuntimeError("the emulator answered something odd")]

    async def failing_once(self: EmulatorClient, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(EmulatorClient, "events", failing_once)
    # The feed's long poll ends with this message: its next poll fails.
    assert (await page.post("api/chats/resident-1/messages", {"text": "/start"})).status == 200
    assert (await page.next_event(lambda e: e["type"] == "feed")) == {
        "type": "feed",
        "alive": False,
    }
    assert (await page.next_event(lambda e: e["type"] == "feed")) == {"type": "feed", "alive": True}
    assert (await page.post("api/chats/resident-2/messages", {"text": "/start"})).status == 200
    assert "مرحبًا" in (await page.bot_message("resident-2"))["text"]


async def test_a_button_of_a_message_the_chat_no_longer_keeps_is_refused(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path, history_limit=4) as page:
        assert page.snapshot["history_limit"] == 4
        _, language_question = await consented(page)
        for text in ("un", "deux"):  # each with the bot's answer: the notice is trimmed
            assert (await page.post("api/chats/resident-1/messages", {"text": text})).status == 200
            await page.bot_message("resident-1")
        chats = await page.chats_now()
        kept = [m["message_id"] for m in chats["resident-1"]]
        assert language_question["message_id"] not in kept
        assert len(kept) == 4
        # Its button was valid (the bot still shows it); the page no longer has the message.
        button = language_question["buttons"][0][0]["data"]
        body = {"message_id": language_question["message_id"], "data": button}
        response = await page.post("api/chats/resident-1/callbacks", body)
        assert response.status == 400
        assert (await response.json())["code"] == "unknown_button"


def test_missing_page_files_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(server_module.STATIC_FILES, "missing.js", "text/javascript")
    with pytest.raises(ConfigurationError, match=r"^playground page: .*static/missing\.js"):
        PlaygroundServer(None, None)  # type: ignore[arg-type]
