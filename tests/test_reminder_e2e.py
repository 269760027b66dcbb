"""Reminders end to end: the real bot over HTTP against the Bot API emulator, a manual clock.

The sweep is called directly (as the JobQueue job would call it) and delivery runs on its own
short sweep, so a test never waits on wall time for a reminder to become due.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.outbox import LEASE, Outbox
from bot.services.registration import RegistrationService
from bot.settings import Settings
from handlers.reminders import PLANNER_JOB
from storage.db import Database
from storage.models import OutboxMessage, Registration, Resident
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock
from tests.reminder_helpers import (
    paris,
    reminder_service,
    run_job_now,
    take_seat,
    workshop_at,
)

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

THURSDAY_2PM = paris(2026, 12, 3, 14, 0)
DUE_24H = paris(2026, 12, 2, 14, 0)


@dataclass
class World:
    client: EmulatorClient
    settings: Settings
    db: Database
    clock: ManualClock


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(emulator, database_url, outbox_sweep_seconds=0.2)
        yield World(client, settings, db, new_clock())


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


def unfold(ics: str) -> dict[str, str]:
    lines = ics.replace("\r\n ", "").split("\r\n")
    event = lines[lines.index("BEGIN:VEVENT") + 1 : lines.index("END:VEVENT")]
    return dict(line.split(":", 1) for line in event)


async def statuses(db: Database) -> dict[int, tuple[str, str | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(Resident.telegram_id, OutboxMessage.status, OutboxMessage.claimed_by).join(
                Resident, Resident.id == OutboxMessage.resident_id
            )
        )
        return {r.telegram_id: (r.status, r.claimed_by) for r in rows}


async def until_settled(db: Database) -> dict[int, tuple[str, str | None]]:
    """The outbox once no row is pending (delivery runs every 0.2 s)."""
    for _ in range(100):
        rows = await statuses(db)
        if all(status != "pending" for status, _ in rows.values()):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox still pending: {rows}")


async def test_reminder_im_coming_calendar_then_i_cant_come_promotes_the_waitlist(world: World):
    db, clock = world.db, world.clock
    workshop = await workshop_at(db, clock, THURSDAY_2PM, capacity=1, title="Atelier e-mail")
    assert await take_seat(db, clock, 1001, workshop) == "confirmed"
    assert await take_seat(db, clock, 1002, workshop, language="en") == "waitlisted"
    alice = world.client.user(1001, "Alice", "fr")
    bob = world.client.user(1002, "Bob", "en")
    await world.client.register(alice, bob)

    async with bot_running(world.settings, clock) as application:
        services = services_of(application)
        clock.set(DUE_24H)
        run_job_now(application, PLANNER_JOB)  # the planner job, then delivery at once
        reminder = await alice.wait_message(contains="Rappel", timeout=10)
        assert "Atelier e-mail" in reminder.text
        assert "jeudi 3 décembre" in reminder.text and "14:00" in reminder.text
        assert "EPN Montreynaud" in reminder.text
        assert reminder.button_texts() == ["👍 Je viens", "😕 Je ne peux plus venir"]
        venue = await alice.wait_message()
        assert venue.kind == "venue" and venue.venue is not None
        assert venue.venue["title"] == "EPN Montreynaud"
        assert venue.venue["location"]["latitude"] == pytest.approx(45.44)

        query = await alice.press("👍 Je viens", message_id=reminder.message_id)
        assert "bientôt" in (await alice.callback_answer(query)).text
        noted = await edited(alice)
        assert "Vous avez dit que vous venez" in noted.text
        assert noted.button_texts() == ["😕 Je ne peux plus venir"]
        document = await alice.wait_message(contains="agenda de votre téléphone")
        assert document.kind == "document" and document.document is not None
        assert document.document["file_name"] == f"atelier-{workshop}.ics"
        assert document.document["mime_type"] == "text/calendar"
        raw = await alice.download(document)
        ics = raw.decode()
        assert ics.startswith("BEGIN:VCALENDAR\r\n") and ics.count("\n") == ics.count("\r\n")
        props = unfold(ics)
        async with db.read() as session:
            seat = (
                await session.execute(
                    select(Registration.id, Registration.coming_confirmed_at).where(
                        Registration.workshop_id == workshop, Registration.status == "confirmed"
                    )
                )
            ).one()
        assert seat.coming_confirmed_at == DUE_24H
        assert props["UID"] == f"workshop-{workshop}-{seat.id}@capacity-bot"
        assert props["DTSTART;TZID=Europe/Paris"] == "20261203T140000"
        assert props["DTEND;TZID=Europe/Paris"] == "20261203T160000"
        assert props["SUMMARY"] == "Atelier e-mail"
        assert "TZID:Europe/Paris" in ics and "BEGIN:DAYLIGHT" in ics

        await alice.press("😕 Je ne peux plus venir", message_id=reminder.message_id)
        question = await edited(alice)
        assert "Voulez-vous annuler votre place" in question.text
        await alice.press("Non, je viens", message_id=reminder.message_id)
        assert (await edited(alice)).button_texts() == reminder.button_texts()
        await alice.press("😕 Je ne peux plus venir", message_id=reminder.message_id)
        await edited(alice)
        await alice.press("Oui, j'annule ma place", message_id=reminder.message_id)
        assert "C'est annulé" in (await edited(alice)).text
        promoted = await bob.wait_message(contains="Good news", timeout=5)
        assert "EN Atelier e-mail" in promoted.text

        # Promoted less than 24 h before: Bob gets his reminder at once, in English.
        assert await services.reminders.plan_due_reminders() == 1
        catch_up = await bob.wait_message(contains="Reminder", timeout=10)
        assert catch_up.button_texts() == ["👍 I'm coming", "😕 I can't come anymore"]
        assert await services.reminders.plan_due_reminders() == 0

    async with db.read() as session:
        places = dict(
            (
                await session.execute(
                    select(Resident.telegram_id, Registration.status).join(
                        Resident, Resident.id == Registration.resident_id
                    )
                )
            ).all()
        )
    assert places == {1001: "cancelled", 1002: "confirmed"}


async def test_a_reminder_claimed_by_a_dead_instance_is_sent_once_and_a_cancelled_one_never(
    world: World,
):
    db, clock = world.db, world.clock
    workshop = await workshop_at(db, clock, THURSDAY_2PM, title="Atelier banque en ligne")
    await take_seat(db, clock, 2001, workshop)
    await take_seat(db, clock, 2002, workshop)
    kept = world.client.user(2001, "Carla", "fr")
    gone = world.client.user(2002, "Dan", "fr")
    await world.client.register(kept, gone)

    clock.set(DUE_24H)
    assert await reminder_service(db, clock).plan_due_reminders() == 2
    dead = Outbox(db, clock, "dead-instance")
    claimed = await dead.claim_due()  # ...and the process is killed before sending
    assert len(claimed) == 2
    await RegistrationService(db, clock).cancel(2002, workshop)
    clock.advance(LEASE + timedelta(seconds=1))

    async with bot_running(world.settings, clock):
        reminder = await kept.wait_message(contains="Rappel", timeout=10)
        assert "Atelier banque en ligne" in reminder.text
        rows = await until_settled(db)
    assert rows[2001][0] == "sent" and rows[2001][1] != "dead-instance"
    assert rows[2002][0] == "dropped"
    assert not await dead.mark_sent(claimed[0].id)  # its lease is gone: no double bookkeeping

    async with bot_running(world.settings, clock) as application:  # a restart: nothing again
        assert await services_of(application).reminders.plan_due_reminders() == 0
    texts = [m.text or "" for m in await kept.messages()]
    assert sum("Rappel" in text for text in texts) == 1
    assert await gone.messages() == []


async def test_the_registration_confirmation_offers_the_calendar_file(world: World):
    db, clock = world.db, world.clock
    await workshop_at(db, clock, THURSDAY_2PM, title="Mon smartphone au quotidien")
    erin = world.client.user(3001, "Erin", "en")
    async with bot_running(world.settings, clock):
        await erin.send("/start")
        await erin.wait_message()
        await erin.press("Yes")
        await edited(erin)
        await erin.press("English")
        await edited(erin)
        await erin.press("See the workshops")
        await edited(erin)
        await erin.press("Mon smartphone au quotidien")
        await edited(erin)
        await erin.press("Book my place")
        confirmation = await erin.wait_message(contains="you have a place")
        assert "📅 Add to my calendar" in confirmation.button_texts()
        await erin.press("📅 Add to my calendar", message_id=confirmation.message_id)
        document = await erin.wait_message(contains="Tap the file")
        assert document.kind == "document" and document.document is not None
        assert document.document["file_name"].startswith("workshop-")
        props = unfold((await erin.download(document)).decode())
        assert props["DTSTART;TZID=Europe/Paris"] == "20261203T140000"
        assert props["SUMMARY"] == "EN Mon smartphone au quotidien"
        assert "Free workshop" in props["DESCRIPTION"]
