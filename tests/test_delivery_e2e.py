"""Outbox delivery through the emulator: nothing lost while down, blocked people dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from storage.db import Database
from storage.models import OutboxMessage, Resident
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock, seed_workshop

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        yield server, client


async def promote_while_the_bot_is_down(db: Database, clock, people: list[int]) -> int:
    """Seat people[0], waitlist the others, then people[0] cancels: people[1] is promoted."""
    residents = ResidentService(db, clock)
    registrations = RegistrationService(db, clock)
    workshop = await seed_workshop(db, clock, capacity=1, title="Atelier banque en ligne")
    for person in people:
        await residents.give_consent(person, f"P{person}", "fr")
        await registrations.register(person, workshop)
    result = await registrations.cancel(people[0], workshop)
    assert result.promoted_resident_id is not None
    return workshop


async def outbox_rows(db: Database) -> list[tuple[str, int]]:
    async with db.read() as session:
        rows = await session.execute(select(OutboxMessage.status, OutboxMessage.attempts))
        return [tuple(r) for r in rows]


async def test_a_notice_decided_while_the_bot_was_down_is_sent_once_it_starts(
    db, database_url, emulator
):
    server, client = emulator
    clock = new_clock()
    await promote_while_the_bot_is_down(db, clock, [11, 12])
    promoted = client.user(12, "Lina", "fr")
    await promoted.register()
    settings = settings_for(server, database_url, outbox_sweep_seconds=0.2)
    async with bot_running(settings, clock):
        notice = await promoted.wait_message(contains="Bonne nouvelle", timeout=10)
        assert "Atelier banque en ligne" in notice.text
        assert "❌ Annuler ma place" in notice.button_texts()
    async with bot_running(settings, clock):  # a restart sends nothing again
        pass
    assert await outbox_rows(db) == [("sent", 1)]
    assert len([m for m in await promoted.messages() if "Bonne nouvelle" in (m.text or "")]) == 1


async def test_a_person_who_blocked_the_bot_is_marked_inactive_and_not_retried(
    db, database_url, emulator
):
    server, client = emulator
    clock = new_clock()
    await promote_while_the_bot_is_down(db, clock, [21, 22])
    blocked = client.user(22, "Omar", "fr")
    await blocked.register()
    await blocked.block()
    settings = settings_for(server, database_url, outbox_sweep_seconds=0.2)
    async with bot_running(settings, clock):
        for _ in range(50):
            if (await outbox_rows(db))[0][0] != "pending":
                break
            await asyncio.sleep(0.1)
    assert await outbox_rows(db) == [("dropped", 1)]
    async with db.read() as session:
        active = await session.scalar(select(Resident.is_active).where(Resident.telegram_id == 22))
    assert active is False


async def test_too_many_requests_postpones_without_losing_the_notice(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    await promote_while_the_bot_is_down(db, clock, [31, 32])
    promoted = client.user(32, "Zoé", "fr")
    await promoted.register()
    await client.fail_next("sendMessage", 429, retry_after=3)
    settings = settings_for(server, database_url, outbox_sweep_seconds=0.2)
    async with bot_running(settings, clock):
        for _ in range(50):  # wait until the 429 was received and the row postponed
            async with db.read() as session:
                postponed = await session.scalar(select(OutboxMessage.not_before))
            if postponed > clock.now():
                break
            await asyncio.sleep(0.05)
        assert await outbox_rows(db) == [("pending", 0)]  # a 429 costs no attempt
        clock.advance(timedelta(seconds=4))  # retry_after has passed
        notice = await promoted.wait_message(contains="Bonne nouvelle", timeout=10)
    assert notice is not None
    assert await outbox_rows(db) == [("sent", 1)]
