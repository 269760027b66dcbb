"""Privacy, fixes from the review (issue 5 §1) on both backends: what erasure and retention
leave behind, the reachability of a person, withdrawal and the waitlist, the race between
/forget and a registration, a failing erasure, the exports and the upgrade of old data."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection

import bot.services.privacy.retention as retention_module
from bot.clock import ManualClock
from bot.services.privacy.personal_data import erase_resident
from bot.services.privacy.retention import RETENTION_REPORT, months_before
from bot.services.residents import ResidentService
from bot.services.stats.exports import ERASED, ExportService
from storage.db import Database
from storage.models import (
    ConversationState,
    OutboxMessage,
    OutboxStatus,
    Registration,
    Resident,
    StaffMember,
)
from tests.factories import new_clock, seed_workshop
from tests.survey_helpers import registered
from tests.test_privacy_service import (
    answers,
    consent,
    count,
    outbox_rows,
    privacy,
    registrations,
    retention,
)

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


async def resident(db: Database, telegram_id: int) -> Resident:
    async with db.read() as session:
        found = await session.scalar(select(Resident).where(Resident.telegram_id == telegram_id))
    assert found is not None
    return found


async def resident_or_none(db: Database, telegram_id: int) -> Resident | None:
    async with db.read() as session:
        return await session.scalar(select(Resident).where(Resident.telegram_id == telegram_id))


async def place(db: Database, telegram_id: int, workshop_id: int) -> str | None:
    async with db.read() as session:
        return await session.scalar(
            select(Registration.status)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == telegram_id, Registration.workshop_id == workshop_id)
            .order_by(Registration.id.desc())
            .limit(1)
        )


def message(resident_id: int, key: str, status: str, at: datetime, **payload: Any) -> OutboxMessage:
    return OutboxMessage(
        resident_id=resident_id,
        kind="mediator_reply",
        payload=payload,
        dedupe_key=key,
        status=status,
        not_before=at,
        created_at=at,
    )


async def test_forget_deletes_every_message_and_retention_empties_old_payloads(db, clock):
    alice = await consent(db, clock, 1001, "Alice")
    bob = await consent(db, clock, 1002, "Bob")
    now = clock.now()
    old = now - timedelta(days=8)
    async with db.write() as session:
        session.add_all(
            [
                message(alice, "a:sent", OutboxStatus.SENT, old, text="Bonjour Alice"),
                message(alice, "a:dropped", OutboxStatus.DROPPED, now, text="Réponse"),
                message(bob, "b:old-sent", OutboxStatus.SENT, old, text="secret de Bob"),
                message(bob, "b:old-failed", OutboxStatus.FAILED, old, text="échec"),
                message(bob, "b:old-dropped", OutboxStatus.DROPPED, old, text="bloqué"),
                message(bob, "b:recent-sent", OutboxStatus.SENT, now, text="récent"),
                message(bob, "b:old-pending", OutboxStatus.PENDING, old, text="à envoyer"),
            ]
        )

    assert await privacy(db, clock).erase(1001) is not None
    assert await count(db, OutboxMessage, OutboxMessage.resident_id == alice) == 0

    report = await retention(db, clock).run()

    assert report.payloads == 3
    async with db.read() as session:
        rows = await session.execute(
            select(OutboxMessage.dedupe_key, OutboxMessage.payload).where(
                OutboxMessage.resident_id == bob
            )
        )
        payloads = {key: payload for key, payload in rows}
    assert payloads == {
        "b:old-sent": {},  # the row stays: its dedupe key still prevents a second send
        "b:old-failed": {},
        "b:old-dropped": {},
        "b:recent-sent": {"text": "récent"},
        "b:old-pending": {"text": "à envoyer"},
    }
    assert (await retention(db, clock).run()).payloads == 0
    assert await outbox_rows(db, RETENTION_REPORT) == []  # routine: not worth a channel line


async def test_a_private_update_makes_an_unreachable_resident_reachable_again(db, clock):
    alice = await consent(db, clock, 1001)
    withdrawn = await consent(db, clock, 1002)
    assert await privacy(db, clock).withdraw_consent(1002)
    residents = ResidentService(db, clock)
    for resident_id in (alice, withdrawn):
        await residents.mark_unreachable(resident_id)
    clock.advance(timedelta(hours=2))

    await residents.seen(1001, private=False)  # a message in the staff group proves nothing
    assert not (await resident(db, 1001)).is_active
    clock.advance(timedelta(hours=2))
    await residents.seen(1001)
    await residents.seen(1002)

    assert (await resident(db, 1001)).is_active
    assert not (await resident(db, 1002)).is_active  # no consent: stays silent
    assert (await resident(db, 1002)).last_seen_at == clock.now()  # but the clock moved


async def test_blocking_and_unblocking_the_bot_do_not_move_the_retention_clock(db, clock):
    await consent(db, clock, 1001)
    residents = ResidentService(db, clock)
    seen = (await resident(db, 1001)).last_seen_at
    clock.advance(timedelta(days=3))

    await residents.set_reachable(1001, False)
    assert not (await resident(db, 1001)).is_active
    await residents.set_reachable(1001, True)

    after = await resident(db, 1001)
    assert after.is_active and after.last_seen_at == seen


class FailingWrites:
    """A Database whose next write fails before reaching the database."""

    def __init__(self, db: Database, failures: int) -> None:
        self._db = db
        self.failures = failures

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        async with self._db.write() as session:
            yield session


async def test_seen_remembers_a_person_only_once_the_write_succeeded(db, clock):
    await consent(db, clock, 1001)
    clock.advance(timedelta(hours=3))
    flaky = FailingWrites(db, failures=1)
    residents = ResidentService(flaky, clock)  # type: ignore[arg-type]

    with pytest.raises(ConnectionError):
        await residents.seen(1001)
    await residents.seen(1001)  # the same minute: tried again, not skipped for an hour

    assert (await resident(db, 1001)).last_seen_at == clock.now()


async def test_withdrawal_gives_up_waitlist_places_and_keeps_seats(db, clock):
    full = await seed_workshop(db, clock, capacity=1)
    other = await seed_workshop(db, clock, capacity=5)
    booking = registrations(db, clock)
    for telegram_id in (1001, 1002, 1003):
        await consent(db, clock, telegram_id)
    assert (await booking.register(1001, full)).outcome == "confirmed"
    assert (await booking.register(1002, full)).outcome == "waitlisted"
    assert (await booking.register(1003, full)).outcome == "waitlisted"
    assert (await booking.register(1002, other)).outcome == "confirmed"

    assert await privacy(db, clock).withdraw_consent(1002)

    assert await place(db, 1002, full) == "cancelled"
    assert await place(db, 1002, other) == "confirmed"  # as the reply says
    assert (await booking.cancel(1001, full)).promoted_resident_id == (await resident(db, 1003)).id


@pytest.mark.parametrize("lost", ["consent", "erased"])
async def test_promotion_skips_someone_who_could_not_be_told(db, clock, lost):
    workshop = await seed_workshop(db, clock, capacity=1)
    booking = registrations(db, clock)
    for telegram_id in (1001, 1002, 1003):
        await consent(db, clock, telegram_id)
        await booking.register(telegram_id, workshop)
    values: dict[str, Any] = {"consented_at": None}
    if lost == "erased":
        values = {"telegram_id": None, "consented_at": None, "erased_at": clock.now()}
    async with db.write() as session:  # as an older bug, or a manual repair, would leave it
        await session.execute(update(Resident).where(Resident.telegram_id == 1002).values(values))

    result = await booking.cancel(1001, workshop)

    assert result.promoted_resident_id == (await resident(db, 1003)).id
    assert await place(db, 1003, workshop) == "confirmed"


async def test_registration_waits_for_an_erasure_in_progress(db, database_url, clock):
    """Two instances: the registration holds until the erasure commits, then finds nobody.

    On PostgreSQL the FOR SHARE read is what makes it wait (without it, the INSERT's foreign
    key check would let a live place be committed for the tombstone); SQLite has one writer.
    """
    workshop = await seed_workshop(db, clock, capacity=5)
    alice = await consent(db, clock, 1001)
    booking = registrations(db, clock)
    other = Database(database_url)
    try:
        async with other.write() as session:
            assert await erase_resident(session, registrations(other, clock), alice, clock.now())
            register = asyncio.create_task(booking.register(1001, workshop))
            await asyncio.sleep(0.5)
            assert not register.done()  # blocked on the resident row (or SQLite's lock)
        result = await asyncio.wait_for(register, 10)
    finally:
        await other.dispose()

    assert result.outcome == "no_consent"
    assert await count(db, Registration, Registration.resident_id == alice) == 0


async def test_a_failed_erasure_does_not_stop_the_run(db, clock, monkeypatch):
    stuck = await consent(db, clock, 1001)
    await consent(db, clock, 1002)
    clock.set(months_before(clock.now(), -12) - timedelta(days=6))
    assert (await retention(db, clock).run()).noticed == 2
    clock.advance(timedelta(days=7))
    # A free text that reaches its retention with this run, after the erasures.
    week = months_before(clock.now(), 6).date() - timedelta(days=3)
    await answers(db, None, week, "texte libre", survey="post_workshop")

    async def erase_or_fail(session, registrations, resident_id, now, **kw):
        if resident_id == stuck:
            raise RuntimeError("disk full")
        return await erase_resident(session, registrations, resident_id, now, **kw)

    monkeypatch.setattr(retention_module, "erase_resident", erase_or_fail)
    named: list[int] = []

    report = await retention(db, clock).run(pseudonym=lambda i: named.append(i) or "p")

    assert (report.erased, report.failed, report.free_texts) == (1, 1, 1)
    assert named == [1001]  # the log names the person by pseudonym only
    channel = (await outbox_rows(db, RETENTION_REPORT))[-1]
    assert channel.payload | {"noticed": 0} == {
        "erased": 1,
        "failed": 1,
        "free_texts": 1,
        "conversations": 0,
        "noticed": 0,
    }
    monkeypatch.undo()
    assert (await retention(db, clock).run()).erased == 1  # tried again at the next run
    assert (await resident_or_none(db, 1001)) is None


async def test_survey_buffers_and_expired_drafts_are_deleted(db, clock):
    now = clock.now()
    rows = {
        (1001, "survey:1"): now - timedelta(days=200),  # past 6 months: anonymous answers
        (1002, "survey:1"): now - timedelta(days=30),
        (1003, "newworkshop"): now - timedelta(hours=25),
        (1003, "broadcast"): now - timedelta(hours=2),
        (1004, "mediator"): now - timedelta(days=2),
        (1004, "enrol"): now - timedelta(hours=1),
    }
    async with db.write() as session:
        session.add_all(
            ConversationState(
                user_id=user, conversation=name, state="q", data={"t": "x"}, updated_at=at
            )
            for (user, name), at in rows.items()
        )

    report = await retention(db, clock).run()

    assert report.conversations == 3
    async with db.read() as session:
        rows = await session.execute(
            select(ConversationState.user_id, ConversationState.conversation)
        )
        left = {(user, name) for user, name in rows}
    assert left == {(1002, "survey:1"), (1003, "broadcast"), (1004, "enrol")}
    [channel] = await outbox_rows(db, RETENTION_REPORT)
    assert channel.payload["conversations"] == 3
    assert (await retention(db, clock).run()).conversations == 0


async def test_an_erased_resident_has_no_pseudonym_in_exports(db, clock):
    past = await seed_workshop(db, clock, starts_in=timedelta(days=-7))
    await registered(db, clock, 1001, past)
    await registered(db, clock, 1002, past)
    async with db.write() as session:
        session.add(StaffMember(telegram_id=1001, role="mediator", granted_at=clock.now()))
    service = ExportService(db, ZoneInfo("Europe/Paris"), "123:token")

    async def people() -> list[str]:
        async with service.export() as files:
            path = next(f.path for f in files if f.name == "registrations.csv")
            with path.open(encoding="utf-8-sig", newline="") as handle:
                return [row["person"] for row in csv.DictReader(handle)]

    before = await people()
    assert (await privacy(db, clock).status(1001)).staff
    report = await privacy(db, clock).erase(1001)

    assert report is not None and report.staff  # the reply says the role keeps the id
    after = await people()
    assert after == [ERASED, before[1]] and before[0] != ERASED
    assert not (await privacy(db, clock).status(1002)).staff


async def test_upgrade_starts_the_retention_clock_of_existing_residents(
    empty_database_url: str,
) -> None:
    from alembic import command

    from storage.migrate import alembic_config

    database = Database(empty_database_url)

    async def migrate(target: str) -> None:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, target)

        async with database.engine.begin() as conn:
            await conn.run_sync(run)

    try:
        await migrate("0003")
        async with database.engine.begin() as conn:
            for telegram_id, seen in ((1, "'2025-01-01 10:00:00+00'"), (2, "NULL")):
                await conn.execute(
                    text(
                        "INSERT INTO residents (telegram_id, first_name, language, consented_at,"
                        " is_active, wants_announcements, created_at, last_seen_at) VALUES"
                        f" ({telegram_id}, 'A', 'fr', '2025-01-01 10:00:00+00', true, true,"
                        f" '2025-01-01 10:00:00+00', {seen})"
                    )
                )
        before = datetime.now(UTC)
        await migrate("head")
        after = datetime.now(UTC)
        async with database.read() as session:
            seen_at = list(
                await session.scalars(select(Resident.last_seen_at).order_by(Resident.id))
            )
            # Compared in SQL too: the stored form sorts like the values the bot writes.
            recent = await session.scalar(
                select(Resident.id)
                .where(Resident.last_seen_at < before - timedelta(seconds=5))
                .limit(1)
            )
    finally:
        await database.dispose()
    assert len(seen_at) == 2
    for moment in seen_at:
        assert moment is not None and moment.tzinfo is not None
        assert before - timedelta(seconds=5) <= moment <= after + timedelta(seconds=5)
    assert recent is None
