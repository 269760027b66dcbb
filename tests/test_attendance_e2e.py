"""Attendance end to end: /checkin, the check-in button and the roll call, through the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.plumbing.context import BotApplication, Services
from bot.text.user_text import isolated
from handlers.attendance import PROMPT_JOB
from storage.db import Database
from storage.models import Registration, Resident, Workshop
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock
from tests.reminder_helpers import paris, run_job_now, take_seat, workshop_at

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

START = paris(2026, 12, 1, 14, 0)  # the clock starts at 10:00 the same day
END = START + timedelta(hours=2)
MINUTE = timedelta(minutes=1)
FACILITATOR = 9001


@dataclass
class World:
    client: EmulatorClient
    db: Database
    clock: ManualClock
    services: Services
    application: BotApplication
    workshop: int
    code: str


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    clock = new_clock()
    workshop = await workshop_at(db, clock, START, title="Atelier e-mail")
    for person, language in ((3001, "fr"), (3002, "en"), (3003, "fr")):
        assert await take_seat(db, clock, person, workshop, language) == "confirmed"
    async with db.read() as session:
        code = await session.scalar(select(Workshop.checkin_code).where(Workshop.id == workshop))
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        await client.register(
            client.user(3001, "Ana", "fr"),
            client.user(3002, "Ben", "en"),
            client.user(3003, "Cleo", "fr"),
        )
        settings = settings_for(
            emulator, database_url, outbox_sweep_seconds=0.2, staff=f"facilitator:{FACILITATOR}"
        )
        async with bot_running(settings, clock) as application:
            yield World(client, db, clock, services_of(application), application, workshop, code)


async def answer_to(user: SimulatedUser, text: str) -> str:
    await user.send(text)
    message = await user.wait_message()
    assert message.text is not None
    return message.text


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def attendance(db: Database, telegram_id: int) -> tuple:
    async with db.read() as session:
        row = (
            await session.execute(
                select(
                    Registration.attended_at,
                    Registration.attendance_source,
                    Registration.attendance_marked_by,
                )
                .join(Resident, Resident.id == Registration.resident_id)
                .where(Resident.telegram_id == telegram_id)
            )
        ).one()
    return tuple(row)


async def test_check_in_with_the_code(world: World) -> None:
    ana = world.client.user(3001, "Ana", "fr")
    assert "/checkin K7M2Q" in await answer_to(ana, "/checkin")
    assert "pas un code" in await answer_to(ana, "/checkin 🙂 bonjour ça va ?!")
    too_early = await answer_to(ana, f"/checkin {world.code}")
    assert "à partir de 13:30" in too_early and "mardi 1 décembre" in too_early
    world.clock.set(START - 5 * MINUTE)
    assert "Je ne connais pas ce code" in await answer_to(ana, "/checkin ZZZZZ")
    assert await attendance(world.db, 3001) == (None, None, None)
    spaced = f"{world.code[:3].lower()} {world.code[3:].lower()}"
    welcome = await answer_to(ana, f"/checkin {spaced}")
    assert "présent(e)" in welcome and "Atelier e-mail" in welcome
    assert "déjà noté(e) présent(e)" in await answer_to(ana, f"/checkin {world.code}")
    assert await attendance(world.db, 3001) == (START - 5 * MINUTE, "code", None)

    world.clock.set(END + timedelta(hours=1, minutes=1))
    late = world.client.user(3003, "Cleo", "fr")
    assert "n'est plus ouverte" in await answer_to(late, f"/checkin {world.code}")
    assert await attendance(world.db, 3003) == (None, None, None)


async def test_check_in_with_the_button_offered_when_the_workshop_starts(world: World) -> None:
    ben = world.client.user(3002, "Ben", "en")
    cleo = world.client.user(3003, "Cleo", "fr")
    world.clock.set(START)
    run_job_now(world.application, PROMPT_JOB)  # the job that runs every minute
    prompt = await ben.wait_message(contains="starting", timeout=10)
    assert prompt.button_texts() == ["✋ I'm here"]
    query = await ben.press("✋ I'm here")
    assert "marked present" in (await ben.callback_answer(query)).text
    assert "Thank you, you are marked present" in (await edited(ben)).text
    assert await attendance(world.db, 3002) == (START, "button", None)

    late_prompt = await cleo.wait_message(contains="L'atelier commence", timeout=10)
    world.clock.set(END + timedelta(hours=1, minutes=1))
    query = await cleo.press("✋ Je suis là", message_id=late_prompt.message_id)
    answer = await cleo.callback_answer(query)
    assert answer.show_alert and "plus ouverte" in answer.text
    assert "n'est plus ouverte" in (await edited(cleo)).text
    assert await attendance(world.db, 3003) == (None, None, None)
    assert await world.services.attendance.plan_checkin_prompts() == 0


async def test_roll_call_by_a_facilitator_and_refused_to_a_resident(world: World) -> None:
    fay = world.client.user(FACILITATOR, "Fay", "fr")
    ana = world.client.user(3001, "Ana", "fr")
    assert "Aucun atelier" in await answer_to(fay, "/attendance")  # not started yet
    world.clock.set(START + 10 * MINUTE)
    await world.services.attendance.check_in_by_code(3001, world.code)

    await fay.send("/attendance")
    listing = await fay.wait_message()
    assert "Faire l'appel" in listing.text
    await fay.press("Atelier e-mail")
    roll = await edited(fay)
    assert f"Code de présence : {world.code}" in roll.text
    assert "Présents : 1 sur 3" in roll.text
    assert roll.button_texts()[:3] == [
        f"✅ {isolated('P3001')}",
        f"⬜ {isolated('P3002')}",
        f"⬜ {isolated('P3003')}",
    ]
    await fay.press(f"⬜ {isolated('P3003')}")
    ticked = await edited(fay)
    assert (
        f"✅ {isolated('P3003')}" in ticked.button_texts() and "Présents : 2 sur 3" in ticked.text
    )
    assert await attendance(world.db, 3003) == (START + 10 * MINUTE, "roll", FACILITATOR)
    await fay.press(f"✅ {isolated('P3003')}")
    assert f"⬜ {isolated('P3003')}" in (await edited(fay)).button_texts()
    assert await attendance(world.db, 3003) == (None, None, None)

    # A resident: the command is refused, and so are roll-call buttons, forged or not.
    assert "réservée aux animateurs" in await answer_to(ana, "/attendance")
    own_message = await ana.last()
    tick_cleo = next(b.callback_data for row in ticked.buttons for b in row if "P3003" in b.text)
    assert tick_cleo is not None
    async with world.db.read() as session:
        cleo_seat = await session.scalar(
            select(Registration.id)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == 3003)
        )
    signed_for_ana = world.services.callbacks.encode(3001, "roll_set", cleo_seat, 1)
    for data, expected in (
        (tick_cleo, "plus valable"),  # Fay's button replayed by Ana
        (f"1|Ar|{cleo_seat}|1|AAAAAAAA", "plus valable"),  # forged signature
        (signed_for_ana, "réservée aux animateurs"),  # well signed, but Ana is no facilitator
    ):
        query = await ana.press_data(data, message_id=own_message.message_id)
        answer = await ana.callback_answer(query)
        assert answer.show_alert and expected in answer.text
    assert await attendance(world.db, 3003) == (None, None, None)
