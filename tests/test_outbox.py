"""The outbox claims rows atomically: two workers never hold the same row."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.plumbing.delivery import Outgoing, deliver_outbox
from bot.services.outbox import FAILURE_REPORT, LEASE, MAX_ATTEMPTS, ClaimedMessage, Outbox
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import Broadcast, OutboxMessage
from tests.factories import T0, new_clock

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
    assert [m.attempts for m in taken] == [1, 1]  # released untried: the attempt given back
    assert await stopping.mark_sent(in_flight.id)  # its send completes: marked, once
    assert stopping.sending == frozenset()


ADMIN_CHAT = -100777


async def test_a_row_whose_sender_dies_every_time_fails_at_the_attempt_limit(db):
    """A process killed while sending the same row, again and again: each claim after a lease
    expiry spends an attempt, and once they are spent claim_due fails the row for good
    instead of handing it out again, with one line for the facilitators' channel."""
    clock = new_clock()
    await queue_messages(db, clock, 1)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        dying = Outbox(db, clock, f"instance-{attempt}", report_to=ADMIN_CHAT)
        [message] = await dying.claim_due()
        assert message.attempts == attempt
        assert await dying.renew(message.id)  # the send starts; the process dies in it
        clock.advance(LEASE + timedelta(seconds=1))
    survivor = Outbox(db, clock, "survivor", report_to=ADMIN_CHAT)
    [report] = await survivor.claim_due()
    assert (report.kind, report.chat_id, report.resident_id) == (FAILURE_REPORT, ADMIN_CHAT, None)
    assert report.payload == {
        "row": message.id,
        "kind": "waitlist_promoted",
        "attempts": MAX_ATTEMPTS,
        "error": "no answer",
    }
    assert await survivor.mark_sent(report.id)
    assert await survivor.claim_due() == []
    async with db.read() as session:
        row = await session.get(OutboxMessage, message.id)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    clock.advance(LEASE * 10)
    assert await survivor.claim_due() == []  # failed for good, reported once


async def test_a_failure_is_reported_once_and_never_for_a_broadcast_row(db):
    """Failing for good queues one report line per row, in the same transaction as the
    status; a second attempt to finish the row changes nothing. A broadcast row is counted
    in its broadcast's report instead, and a failed report is not reported."""
    clock = new_clock()
    await queue_messages(db, clock, 1)
    outbox = Outbox(db, clock, "w", report_to=ADMIN_CHAT)
    [message] = await outbox.claim_due()
    assert await outbox.fail(
        message.id, "bad request: Bad Request: chat not found", cause="BadRequest"
    )
    assert not await outbox.fail(message.id, "again", cause="BadRequest")
    [report] = await outbox.claim_due()
    assert report.payload == {
        "row": message.id,
        "kind": "waitlist_promoted",
        "attempts": 1,
        "error": "BadRequest",
    }
    assert await outbox.fail(report.id, "bad request: Bad Request: chat not found")
    assert await outbox.claim_due() == []  # no report of a report
    async with db.write() as session:
        broadcast = Broadcast(
            created_by=1, message_text="Fête", status="sending", recipients=1, created_at=T0
        )
        session.add(broadcast)
        await session.flush()
        resident_id = await session.scalar(
            select(OutboxMessage.resident_id).where(OutboxMessage.resident_id.is_not(None))
        )
        session.add(
            OutboxMessage(
                resident_id=resident_id,
                kind="broadcast",
                broadcast_id=broadcast.id,
                not_before=clock.now(),
                created_at=clock.now(),
            )
        )
    [row] = await outbox.claim_due(broadcast=True)
    assert await outbox.fail(row.id, "bad request: Bad Request: chat not found", cause="BadRequest")
    assert await outbox.claim_due() == []
    async with db.read() as session:
        statuses = list(await session.scalars(select(OutboxMessage.status)))
    assert sorted(statuses) == ["failed", "failed", "failed"]
