"""The outbox claims rows atomically: two workers never hold the same row."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.delivery import Outgoing, deliver_outbox
from bot.services.outbox import LEASE, MAX_ATTEMPTS, ClaimedMessage, Outbox
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


class RecordingBot:
    """Stands for telegram.Bot in the delivery job: records each send as (worker, text);
    `during_send` runs inside a send (a slow one: the clock moves, another worker runs)."""

    def __init__(self, worker: str, sent: list[tuple[str, str]], during_send=None) -> None:
        self.worker, self.sent, self.during_send = worker, sent, during_send

    async def send_message(self, chat_id: int, *, text: str, **_: object) -> None:
        self.sent.append((self.worker, text))
        if self.during_send is not None:
            await self.during_send(len([w for w, _ in self.sent if w == self.worker]))


async def render_row(context: object, message: ClaimedMessage) -> list[Outgoing]:
    return [Outgoing.message(f"row {message.payload['n']}")]


def delivery_context(db: Database, outbox: Outbox, bot: RecordingBot) -> SimpleNamespace:
    """What deliver_outbox reads from its context: the services, its job's data, the bot."""
    services = SimpleNamespace(outbox=outbox, residents=ResidentService(db, outbox._clock))
    return SimpleNamespace(services=services, job=SimpleNamespace(data=render_row), bot=bot)


async def test_a_batch_outlasting_the_lease_never_sends_a_row_twice(db, database_url):
    """Each send takes 3 s of a 5 s lease: during the second one, the lease on the rest of
    the batch lapses and another instance claims them. Renewed before each send, the row in
    hand stays with its sender; the ones after it go to the other instance alone."""
    clock = new_clock()
    lease = timedelta(seconds=5)
    await queue_messages(db, clock, 3)
    other_engine = Database(database_url)
    sent: list[tuple[str, str]] = []
    second = Outbox(other_engine, clock, "instance-b", lease=lease)

    async def slow_send(sends_so_far: int) -> None:
        clock.advance(timedelta(seconds=3))
        if sends_so_far == 2:  # the lease of the batch's last row ran out meanwhile
            await deliver_outbox(delivery_context(other_engine, second, RecordingBot("b", sent)))

    first = Outbox(db, clock, "instance-a", lease=lease)
    try:
        await deliver_outbox(delivery_context(db, first, RecordingBot("a", sent, slow_send)))
    finally:
        await other_engine.dispose()
    texts = [text for _, text in sent]
    assert sorted(texts) == ["row 0", "row 1", "row 2"]  # each once
    assert sent == [("a", "row 0"), ("a", "row 1"), ("b", "row 2")]
    async with db.read() as session:
        rows = await session.execute(select(OutboxMessage.status, OutboxMessage.claimed_by))
        assert sorted(tuple(r) for r in rows) == [
            ("sent", "instance-a"),
            ("sent", "instance-a"),
            ("sent", "instance-b"),
        ]


async def test_releasing_claims_keeps_the_rows_being_sent(db):
    """A stop that ran out of time releases its claims while a send is in flight: that row
    keeps its lease (another instance sending it now would make a duplicate), the others go."""
    clock = new_clock()
    await queue_messages(db, clock, 3)
    stopping, other = Outbox(db, clock, "instance-a"), Outbox(db, clock, "instance-b")
    in_flight, *rest = await stopping.claim_due()
    assert await stopping.renew(in_flight.id)  # just before its send
    assert stopping.sending == {in_flight.id}
    assert await stopping.release_claims() == 2
    taken = await other.claim_due()
    assert sorted(m.id for m in taken) == sorted(m.id for m in rest)  # not the one in flight
    assert await stopping.mark_sent(in_flight.id)  # its send completes: marked, once
    assert stopping.sending == frozenset()
