"""Outbox delivery through the emulator: nothing lost while down, blocked people dropped,
a row that cannot be rendered failing alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.services.outbox import FAILURE_REPORT, MAX_ATTEMPTS
from bot.services.registration import PROMOTION_NOTICE, RegistrationService
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import OutboxMessage, Resident
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock, seed_workshop
from tests.relay_helpers import ADMIN_CHAT_ID, outbox_of_kind
from tests.virtual_time import VirtualTimer

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
    # The budget's 3 s pause is jumped over (its own tests check it is kept).
    timer = VirtualTimer(auto=True, follow_real_time=True)
    async with bot_running(settings, clock, timer=timer) as application:
        for _ in range(50):  # wait until the 429 was received and the row postponed
            async with db.read() as session:
                postponed = await session.scalar(select(OutboxMessage.not_before))
            if postponed > clock.now():
                break
            await asyncio.sleep(0.05)
        assert await outbox_rows(db) == [("pending", 0)]  # a 429 costs no attempt
        clock.advance(timedelta(seconds=4))  # retry_after has passed
        notice = await promoted.wait_message(contains="Bonne nouvelle", timeout=10)
        assert application.bot.rate_limiter.rate_limited == 1
    assert notice is not None
    assert await outbox_rows(db) == [("sent", 1)]


async def queue_broken_rows(db: Database, clock, telegram_id: int) -> list[int]:
    """Three rows that cannot be rendered, due just before the promotion (claimed with it,
    ahead of it): an unknown kind, a payload without its key, a read that raises (a
    workshop id beyond any integer column, refused by both databases)."""
    async with db.read() as session:
        resident_id = await session.scalar(
            select(Resident.id).where(Resident.telegram_id == telegram_id)
        )
    due = clock.now() - timedelta(seconds=1)
    rows = [
        OutboxMessage(resident_id=resident_id, kind="no_such_kind", payload={}),
        OutboxMessage(resident_id=resident_id, kind=PROMOTION_NOTICE, payload={}),
        OutboxMessage(
            resident_id=resident_id, kind=PROMOTION_NOTICE, payload={"workshop_id": 2**70}
        ),
    ]
    async with db.write() as session:
        for row in rows:
            row.not_before, row.created_at = due, due
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def rows_by_id(db: Database, ids: list[int]) -> list[OutboxMessage]:
    async with db.read() as session:
        found = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.id.in_(ids)).order_by(OutboxMessage.id)
        )
        return list(found)


async def test_rows_that_cannot_be_rendered_fail_alone_and_are_reported_once(
    db, database_url, emulator
):
    """Claimed in one batch with a waitlist promotion, three broken rows neither stop it nor
    each other: the promotion arrives; each broken row is retried with a growing backoff,
    fails for good at the attempt limit, and is reported once to the facilitators' channel."""
    server, client = emulator
    clock = new_clock()
    channel = client.group(ADMIN_CHAT_ID, "Facilitateurs")
    await channel.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
    await promote_while_the_bot_is_down(db, clock, [41, 42])
    promoted = client.user(42, "Lina", "fr")
    await promoted.register()
    broken = await queue_broken_rows(db, clock, 42)
    settings = settings_for(
        server, database_url, admin_chat_id=ADMIN_CHAT_ID, outbox_sweep_seconds=0.2
    )
    delays: list[set[float]] = []
    async with bot_running(settings, clock):
        notice = await promoted.wait_message(contains="Bonne nouvelle", timeout=10)
        assert "Atelier banque en ligne" in notice.text
        for _ in range(MAX_ATTEMPTS):
            for _ in range(100):  # until every broken row has been tried and let go
                rows = await rows_by_id(db, broken)
                if all(r.claimed_until is None and r.last_error for r in rows) and (
                    all(r.status == "failed" for r in rows)
                    or all(r.not_before > clock.now() for r in rows)
                ):
                    break
                await asyncio.sleep(0.05)
            if all(r.status == "failed" for r in rows):
                break
            delays.append({(r.not_before - clock.now()).total_seconds() for r in rows})
            clock.advance(max(r.not_before for r in rows) - clock.now())
        for _ in range(3):
            await channel.wait_message(timeout=10)
        clock.advance(timedelta(minutes=10))  # later sweeps report nothing again
        await asyncio.sleep(0.5)
    assert delays == [{2.0}, {4.0}, {8.0}, {16.0}]  # backoff, doubling
    rows = await rows_by_id(db, broken)
    assert [(r.status, r.attempts) for r in rows] == [("failed", MAX_ATTEMPTS)] * 3
    assert [r.last_error for r in rows] == ["ValueError", "KeyError", rows[2].last_error]
    assert rows[2].last_error in ("OverflowError", "DBAPIError")
    lines = [m.text or "" for m in await channel.messages()]
    assert len(lines) == 3, lines
    for row, line in zip(rows, lines, strict=True):
        assert "Message non envoyé" in line and f"n°{row.id}" in line
        assert row.kind in line and row.last_error in line
    assert [r.status for r in await outbox_of_kind(db, FAILURE_REPORT)] == ["sent"] * 3
    messages = [m for m in await promoted.messages() if "Bonne nouvelle" in (m.text or "")]
    assert len(messages) == 1
