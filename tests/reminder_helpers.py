"""Test helpers for reminders and attendance: people with seats, outbox rows, Paris times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.clock import ManualClock
from bot.plumbing.context import BotApplication
from bot.services.registration import RegistrationService
from bot.services.reminders import ReminderPolicy, ReminderService
from bot.services.residents import ResidentService
from bot.settings import Settings
from storage.db import Database
from storage.models import OutboxMessage, Registration, Resident, Workshop
from tests.factories import seed_workshop

PARIS = ZoneInfo("Europe/Paris")


def paris(*args: int) -> datetime:
    """A Paris wall-clock time as an aware UTC datetime (what the database holds)."""
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def run_job_now(application: BotApplication, name: str) -> None:
    """Run a repeating JobQueue job now instead of at its next tick (as kick_delivery does)."""
    assert application.job_queue is not None
    jobs = application.job_queue.get_jobs_by_name(name)
    assert jobs, f"no job named {name!r} is scheduled"
    for job in jobs:
        job.job.modify(next_run_time=datetime.now(job.job.next_run_time.tzinfo))


def reminder_service(db: Database, clock: ManualClock, **settings: object) -> ReminderService:
    values = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    policy = ReminderPolicy(values.reminder_offsets, values.quiet_hours, values.tz)
    return ReminderService(db, clock, policy)


async def workshop_at(db: Database, clock: ManualClock, starts_at: datetime, **kw: object) -> int:
    return await seed_workshop(db, clock, starts_in=starts_at - clock.now(), **kw)  # type: ignore[arg-type]


async def take_seat(
    db: Database, clock: ManualClock, telegram_id: int, workshop_id: int, language: str = "fr"
) -> str:
    """Consent and register (seat or waitlist); returns the outcome."""
    await ResidentService(db, clock).give_consent(telegram_id, f"P{telegram_id}", language)
    result = await RegistrationService(db, clock).register(telegram_id, workshop_id)
    return result.outcome.value


async def registration_id(db: Database, telegram_id: int, workshop_id: int) -> int:
    async with db.read() as session:
        found = await session.scalar(
            select(Registration.id)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == telegram_id, Registration.workshop_id == workshop_id)
            .order_by(Registration.id.desc())
            .limit(1)
        )
    assert found is not None
    return found


@dataclass(frozen=True)
class Queued:
    telegram_id: int
    offset_minutes: int
    status: str
    not_before: datetime
    starts_at: str


async def queued(db: Database, kind: str = "reminder") -> list[Queued]:
    """The outbox rows of one kind, oldest first."""
    async with db.read() as session:
        rows = await session.execute(
            select(
                Resident.telegram_id,
                OutboxMessage.payload,
                OutboxMessage.status,
                OutboxMessage.not_before,
            )
            .join(Resident, Resident.id == OutboxMessage.resident_id)
            .where(OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        return [
            Queued(
                r.telegram_id,
                int(r.payload.get("offset_minutes", 0)),
                r.status,
                r.not_before,
                r.payload["starts_at"],
            )
            for r in rows
        ]


async def move_workshop(db: Database, clock: ManualClock, workshop_id: int, by: timedelta) -> None:
    """An operator changes the time of a workshop."""
    async with db.write() as session:
        workshop = await session.get(Workshop, workshop_id)
        assert workshop is not None
        workshop.starts_at += by
        workshop.ends_at += by
        workshop.updated_at = clock.now()
