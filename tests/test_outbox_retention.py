"""Finished outbox rows are deleted after OUTBOX_RETENTION, in bounded batches, without ever
letting a sweep queue the same message again."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.services.outbox import Outbox
from bot.services.privacy.retention import RetentionService
from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from bot.settings import ConfigurationError, load_settings
from handlers.privacy import RETENTION_JOB
from storage.db import Database
from storage.models import Broadcast, OutboxMessage
from tests.e2e import bot_running, emulator_and_client, settings_for
from tests.factories import new_clock
from tests.reminder_helpers import reminder_service, run_job_now, take_seat, workshop_at

pytestmark = pytest.mark.storage

PARIS = ZoneInfo("Europe/Paris")
KEPT = timedelta(days=30)


def retention(db: Database, clock: ManualClock, batch: int = 2) -> RetentionService:
    return RetentionService(
        db,
        clock,
        RegistrationService(db, clock),
        retention_months=12,
        free_text_retention_months=6,
        admin_chat_id=None,
        tz=PARIS,
        outbox_retention=KEPT,
        outbox_batch=batch,
    )


async def remaining(db: Database) -> list[str]:
    async with db.read() as session:
        return sorted(await session.scalars(select(OutboxMessage.dedupe_key)))


async def test_finished_rows_older_than_the_retention_are_deleted_the_others_kept(db):
    clock = new_clock()
    now = clock.now()
    resident = (await ResidentService(db, clock).give_consent(1, "Ana", "fr")).id
    old, young = now - KEPT - timedelta(hours=1), now - KEPT + timedelta(hours=1)
    async with db.write() as session:
        done = Broadcast(
            created_by=9, message_text="Fête", status="done", created_at=old, finished_at=old
        )
        sending = Broadcast(created_by=9, message_text="Marché", status="sending", created_at=old)
        recent = Broadcast(
            created_by=9, message_text="Expo", status="done", created_at=old, finished_at=young
        )
        session.add_all([done, sending, recent])
        await session.flush()

        def row(key: str, status: str, at: datetime, **values: object) -> OutboxMessage:
            values = {"not_before": at, "created_at": at, **values}
            return OutboxMessage(
                resident_id=resident, kind="k", dedupe_key=key, status=status, **values
            )

        session.add_all(
            [
                row("sent-old", "sent", old, sent_at=old),
                row("failed-old", "failed", old),
                row("dropped-old", "dropped", old),
                row("sent-young", "sent", old, sent_at=young),  # sent late: kept its own age
                row("dropped-early", "dropped", old, not_before=young),  # its time to come
                row("pending-old", "pending", old),  # never deleted while waiting
                row("sent-recently-queued", "sent", young, sent_at=young),
                row("broadcast-done-1", "sent", old, sent_at=old, broadcast_id=done.id),
                row("broadcast-done-2", "dropped", old, broadcast_id=done.id),
                row("broadcast-done-3", "failed", old, broadcast_id=done.id),
                # Its broadcast is being sent, or closed too recently: its counts still show.
                row("broadcast-sending", "sent", old, sent_at=old, broadcast_id=sending.id),
                row("broadcast-recent", "sent", old, sent_at=old, broadcast_id=recent.id),
            ]
        )
    report = await retention(db, clock, batch=2).run()
    assert report.outbox_rows == 6
    assert await remaining(db) == [
        "broadcast-recent",
        "broadcast-sending",
        "dropped-early",
        "pending-old",
        "sent-recently-queued",
        "sent-young",
    ]
    assert (await retention(db, clock).run()).outbox_rows == 0  # nothing twice


async def test_a_deleted_reminder_is_never_queued_again(db):
    """The reminder sweep dedupes by the outbox key: its row can go only once the sweep can no
    longer produce it (the workshop has started), which OUTBOX_RETENTION's floor ensures."""
    clock = new_clock()
    workshop = await workshop_at(db, clock, clock.now() + timedelta(days=3))
    assert await take_seat(db, clock, 1001, workshop) == "confirmed"
    planner = reminder_service(db, clock)
    clock.advance(timedelta(days=2, hours=1))  # the 24 h reminder is due
    assert await planner.plan_due_reminders() == 1
    outbox = Outbox(db, clock, "w")
    [reminder] = await outbox.claim_due()
    assert await outbox.mark_sent(reminder.id)
    horizon = planner.policy.horizon
    settings = load_settings(outbox_retention="3d")  # the shortest the default offsets allow
    assert settings.outbox_retention >= horizon
    for step in (timedelta(hours=1), timedelta(days=3)):
        clock.advance(step)
        assert await planner.plan_due_reminders() == 0
        await RetentionService(
            db,
            clock,
            RegistrationService(db, clock),
            retention_months=12,
            free_text_retention_months=6,
            admin_chat_id=None,
            tz=PARIS,
            outbox_retention=settings.outbox_retention,
        ).run()
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert await planner.plan_due_reminders() == 0  # deleted, and not queued again


def test_outbox_retention_setting_is_validated_in_one_line():
    assert load_settings().outbox_retention == timedelta(days=30)
    with pytest.raises(ConfigurationError, match=r"^OUTBOX_RETENTION is invalid .*expected"):
        load_settings(outbox_retention="1d")
    with pytest.raises(ConfigurationError, match=r"^OUTBOX_RETENTION is invalid .*REMINDER"):
        load_settings(reminder_offsets="30d,2h", outbox_retention="30d")
    assert load_settings(reminder_offsets="30d,2h", outbox_retention="32d")


async def test_the_daily_job_deletes_old_rows(db, database_url):
    clock = new_clock()
    resident = (await ResidentService(db, clock).give_consent(1, "Ana", "fr")).id
    old = clock.now() - timedelta(days=11)
    async with db.write() as session:
        session.add(
            OutboxMessage(
                resident_id=resident, kind="k", status="sent", not_before=old, created_at=old
            )
        )
    async with emulator_and_client() as (emulator, _client):
        settings = settings_for(emulator, database_url, outbox_retention="10d")
        async with bot_running(settings, clock) as application:
            run_job_now(application, RETENTION_JOB)
            for _ in range(100):
                if not await remaining(db):
                    break
                await asyncio.sleep(0.05)
    assert await remaining(db) == []
