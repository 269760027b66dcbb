"""The outbox claims rows atomically: two workers never hold the same row."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.outbox import LEASE, MAX_ATTEMPTS, Outbox
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import OutboxMessage
from tests.factories import new_clock

pytestmark = pytest.mark.storage


async def queue_messages(db: Database, clock: ManualClock, count: int) -> None:
    resident = await ResidentService(db, clock).give_consent(1, "Ana", "fr")
    async with db.write() as session:
        session.add_all(
            OutboxMessage(
                resident_id=resident.id,
                kind="waitlist_promoted",
                payload={"n": n},
                not_before=clock.now(),
                created_at=clock.now(),
            )
            for n in range(count)
        )


async def test_two_workers_on_two_engines_never_claim_the_same_row(db, database_url):
    clock = new_clock()
    await queue_messages(db, clock, 300)
    other_engine = Database(database_url)  # as a second running instance would have
    workers = [Outbox(db, clock, "instance-a"), Outbox(other_engine, clock, "instance-b")]
    claimed: dict[str, list[int]] = {"instance-a": [], "instance-b": []}

    async def drain(outbox: Outbox) -> None:
        while batch := await outbox.claim_due(limit=7):
            claimed[outbox.worker_id] += [m.id for m in batch]
            for message in batch:
                assert await outbox.mark_sent(message.id)

    try:
        await asyncio.gather(*(drain(w) for w in workers), *(drain(w) for w in workers))
    finally:
        await other_engine.dispose()
    every = claimed["instance-a"] + claimed["instance-b"]
    assert len(every) == len(set(every)) == 300
    assert claimed["instance-a"] and claimed["instance-b"]


async def test_a_dead_workers_claim_expires_and_its_late_answer_is_ignored(db):
    clock = new_clock()
    await queue_messages(db, clock, 1)
    dead, alive = Outbox(db, clock, "dead"), Outbox(db, clock, "alive")
    [message] = await dead.claim_due()
    assert await alive.claim_due() == []  # still leased
    clock.advance(LEASE + timedelta(seconds=1))
    [again] = await alive.claim_due()
    assert again.id == message.id and again.attempts == 2
    assert not await dead.mark_sent(message.id)  # lost its lease: no double bookkeeping
    assert await alive.mark_sent(message.id)
    async with db.read() as session:
        row = await session.get(OutboxMessage, message.id)
    assert (row.status, row.claimed_by) == ("sent", "alive")


async def test_retries_are_bounded_and_postponing_costs_no_attempt(db):
    clock = new_clock()
    await queue_messages(db, clock, 1)
    outbox = Outbox(db, clock, "w")
    [message] = await outbox.claim_due()
    assert await outbox.postpone(message.id, timedelta(seconds=30))
    assert await outbox.claim_due() == []
    clock.advance(timedelta(seconds=31))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [message] = await outbox.claim_due()
        assert message.attempts == attempt
        assert await outbox.retry_later(message, timedelta(seconds=1), "timed out")
        clock.advance(timedelta(seconds=2))
    assert await outbox.claim_due() == []
    async with db.read() as session:
        status = await session.scalar(select(OutboxMessage.status))
    assert status == "failed"
