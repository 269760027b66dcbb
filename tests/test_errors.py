"""The global error handler: apology, compact channel notice (rate-limited), blocked people.

A handler that fails (a test command added to the real application, or a real button whose
edit the emulator refuses) and a JobQueue job that fails all reach it; the channel is a
group in the emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from emulator.client import EmulatorClient, SimulatedGroup
from emulator.server import BotApiEmulator
from sqlalchemy import select
from telegram import Update
from telegram.error import Forbidden, NetworkError
from telegram.ext import CommandHandler

from bot.logs import configure_logging
from bot.plumbing.context import BotApplication, BotContext
from bot.runtime.app import build_application
from bot.runtime.runner import running
from bot.services.residents import ResidentService
from handlers.errors import ErrorNotices
from storage.models import Resident
from tests.e2e import settings_for
from tests.factories import new_clock, seed_workshop

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

ADMIN_CHAT_ID = -100777
SORRY = "Désolé, un problème est arrivé"
SECRET = "Alice Martin 06 12 34 56 78"  # what must never reach the channel


async def fail_with_data(update: Update, context: BotContext) -> None:
    """A bug whose message carries personal data."""
    raise RuntimeError(f"could not handle {SECRET}")


async def fail_blocked(update: Update, context: BotContext) -> None:
    raise Forbidden("Forbidden: bot was blocked by the user")


async def failing_job(context: BotContext) -> None:
    raise ValueError(SECRET)


class NoticeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_notice_per_kind_per_interval_counting_the_others() -> None:
    clock = NoticeClock()
    notices = ErrorNotices(timedelta(minutes=5), clock=clock)
    boom = ("RuntimeError", "handlers.resident.show_card")
    assert notices.admit(boom) == 0
    assert notices.admit(("KeyError", "handlers.resident.show_card")) == 0  # another kind
    clock.now += 60
    assert notices.admit(boom) is None
    assert notices.admit(boom) is None
    clock.now += 240
    assert notices.admit(boom) == 2  # the next notice says two were left out
    assert notices.admit(boom) is None


@asynccontextmanager
async def bot_with_failures(
    database_url: str, **overrides: object
) -> AsyncIterator[tuple[BotApplication, EmulatorClient, SimulatedGroup]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        channel = client.group(ADMIN_CHAT_ID, "Facilitateurs")
        await channel.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
        settings = settings_for(server, database_url, admin_chat_id=ADMIN_CHAT_ID, **overrides)
        application = build_application(settings, clock=new_clock())
        # After the guard and the activity tracking (a private update marks its sender
        # reachable again), before the features: where a real handler's reply would fail.
        application.add_handler(CommandHandler("boom", fail_with_data), group=-80)
        application.add_handler(CommandHandler("blocked", fail_blocked), group=-80)
        async with running(application):
            yield application, client, channel


async def test_a_failing_handler_apologises_and_tells_the_channel_without_data(
    db, database_url, caplog
):
    caplog.set_level(logging.ERROR, logger="handlers.errors")
    async with bot_with_failures(database_url) as (_, client, channel):
        person = client.user(31, "Alice", "fr")
        await person.send("/boom")
        await person.wait_message(contains=SORRY)
        notice = await channel.wait_message(contains="Erreur", timeout=10)
        text = notice.text or ""
        match = re.search(r"Erreur (\w+) : RuntimeError dans (\S+)\.", text)
        assert match, text
        error_id, place = match.groups()
        assert place == "tests.test_errors.fail_with_data"  # the handler
        for private in ("Alice", "06 12", "31", "could not handle"):
            assert private not in text.replace(error_id, "")
        # The log line has the same id and the full trace.
        record = next(r for r in caplog.records if error_id in r.getMessage())
        assert record.exc_info is not None and SECRET in str(record.exc_info[1])

        # The same error again within the interval: an apology each time, no new notice.
        await person.send("/boom")
        await person.wait_message(contains=SORRY)
        await person.send("/boom")
        await person.wait_message(contains=SORRY)
        lines = [m.text or "" for m in await channel.messages() if "Erreur" in (m.text or "")]
        assert len(lines) == 1


async def test_a_button_that_failed_after_answering_still_gets_the_apology(db, database_url):
    """The handler answered the button (its toast), then failed: Telegram refuses a second
    answer to the same press, and that must not cost the person the apology."""
    await ResidentService(db, new_clock()).give_consent(35, "Lina", "fr")
    async with bot_with_failures(database_url) as (_, client, channel):
        person = client.user(35, "Lina", "fr")
        await person.send("/menu")
        menu = await person.wait_message()
        await client.fail_next("editMessageText", 400)  # the list replaces the menu: refused
        query = await person.press("📅 Voir les ateliers", message_id=menu.message_id)
        await person.wait_message(contains=SORRY, timeout=10)
        answer = await person.callback_answer(query)  # the handler's, before it failed
        assert not answer.show_alert
        notice = await channel.wait_message(contains="Erreur", timeout=10)
        assert "BadRequest dans handlers.resident" in (notice.text or "")


async def test_a_button_that_failed_before_answering_is_answered_and_apologised_for(
    db, database_url
):
    """The workshop card is shown before its button is answered: when showing it fails, the
    apology answers the button (no spinner left) and says sorry."""
    clock = new_clock()
    await ResidentService(db, clock).give_consent(36, "Omar", "fr")
    await seed_workshop(db, clock, title="Atelier courriel")
    async with bot_with_failures(database_url) as (_, client, _channel):
        person = client.user(36, "Omar", "fr")
        await person.send("/menu")
        menu = await person.wait_message()
        await person.press("📅 Voir les ateliers", message_id=menu.message_id)
        await person.wait_event(kind="edit")
        await client.fail_next("editMessageText", 400)
        query = await person.press("Atelier courriel", message_id=menu.message_id)
        sorry = await person.wait_event(kind="message", contains=SORRY, timeout=10)
        answer = await person.callback_answer(query)
        assert answer.seq < sorry.seq and not answer.show_alert and not answer.text


async def test_the_next_notice_after_the_interval_says_how_many_were_left_out(db, database_url):
    async with bot_with_failures(database_url) as (application, client, channel):
        person = client.user(32, "Omar", "fr")
        for _ in range(3):
            await person.send("/boom")
            await person.wait_message(contains=SORRY)
        notices: ErrorNotices = application.bot_data["error_notices"]
        notices.interval = timedelta(0)  # the interval has passed
        await person.send("/boom")
        await person.wait_message(contains=SORRY)
        await channel.wait_message(contains="Erreur", timeout=10)
        last = await channel.wait_message(contains="Erreur", timeout=10)
        assert "2 autres erreurs du même genre" in (last.text or "")


async def test_a_failing_job_reaches_the_same_handler(db, database_url):
    async with bot_with_failures(database_url) as (application, _, channel):
        assert application.job_queue is not None
        application.job_queue.run_once(failing_job, when=0.05, name="nightly-purge")
        notice = await channel.wait_message(contains="Erreur", timeout=10)
        assert "ValueError dans job nightly-purge" in (notice.text or "")
        assert "Alice" not in (notice.text or "")


async def test_a_person_who_blocked_the_bot_is_marked_inactive(db, database_url):
    clock = new_clock()
    await ResidentService(db, clock).give_consent(33, "Nadia", "fr")
    async with bot_with_failures(database_url) as (_, client, channel):
        person = client.user(33, "Nadia", "fr")
        await person.send("/blocked")
        for _ in range(100):
            async with db.read() as session:
                active = await session.scalar(
                    select(Resident.is_active).where(Resident.telegram_id == 33)
                )
            if not active:
                break
            await asyncio.sleep(0.05)
        assert active is False
        # Not a bug: no notice to the channel.
        assert not [m for m in await channel.messages() if "Erreur" in (m.text or "")]


async def test_polling_failures_are_one_line_and_one_notice(db, database_url, caplog):
    """What run_polling passes on when getUpdates fails during an outage."""
    caplog.set_level(logging.WARNING, logger="handlers.errors")
    async with bot_with_failures(database_url) as (application, _, channel):
        for _ in range(3):
            await application.process_error(None, NetworkError("Bad Gateway"))
        notice = await channel.wait_message(contains="Erreur", timeout=10)
        assert "NetworkError dans python-telegram-bot" in (notice.text or "")
        await asyncio.sleep(0.2)
        assert len([m for m in await channel.messages() if "Erreur" in (m.text or "")]) == 1
    lines = [r for r in caplog.records if "unreachable while fetching updates" in r.getMessage()]
    assert len(lines) == 3 and all(r.exc_info is None for r in lines)


async def test_the_error_id_is_a_field_of_the_json_log_line(db, database_url, capsys):
    """LOG_FORMAT=json: the collector gets the error id as its own field, with the trace."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", [], "json")
    try:
        async with bot_with_failures(database_url) as (_, client, channel):
            person = client.user(34, "Alice", "fr")
            await person.send("/boom")
            await person.wait_message(contains=SORRY)
            notice = await channel.wait_message(contains="Erreur", timeout=10)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    match = re.search(r"Erreur (\w+) :", notice.text or "")
    assert match, notice.text
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [entry] = [e for e in entries if e.get("error_id") == match.group(1)]
    assert entry["logger"] == "handlers.errors" and entry["level"] == "ERROR"
    assert match.group(1) in entry["message"] and "RuntimeError" in entry["exc_info"]
