"""Reminders before a workshop: when each one is due, and the sweep that queues them.

The database is the source of truth. A clock-driven sweep looks for the reminders that are
due now and writes each one to the outbox under a dedupe key made of the registration, the
offset and the workshop's start time: re-running the sweep, or running it in two instances at
once, queues nothing twice, and when a workshop moves its reminders are planned again for the
new time (those for the old time are dropped when they come up for sending).

Rules, in the order the sweep applies them:
- a reminder due during quiet hours goes out just before they begin (20:55 the evening before);
- only reminders whose nominal time (the start minus the offset) comes after the person got
  their seat count (registering 3 h before a workshop earns no 24 h reminder); when the time
  moved out of quiet hours had already passed at the seat (a seat taken at 21:30 for 09:00
  the next day), the reminder goes at the end of quiet hours, or at once;
- a person promoted from the waitlist after a reminder was due gets one reminder at once for
  all they missed (in the morning if the promotion came during quiet hours);
- when several reminders are overdue together (the bot was down), only the most recent is
  sent; the older ones are recorded as dropped so that they are never sent. A reminder
  queued for later (the end of quiet hours) and not yet claimed is dropped, in the same
  transaction, when a more recent reminder of the same registration is queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.outbox import ID_BATCH, queue_once
from bot.services.registration import FIRST_WAITING
from storage.db import Database
from storage.models import (
    OutboxMessage,
    OutboxStatus,
    Registration,
    RegistrationStatus,
    Resident,
    Venue,
    Workshop,
    WorkshopStatus,
)

REMINDER = "reminder"
# A reminder pushed out of quiet hours goes this long before they begin.
QUIET_MARGIN = timedelta(minutes=5)
# Up to this late, a reminder is on time (the sweep runs every minute); later, it is a
# catch-up after downtime, which waits for the end of quiet hours.
LATE_GRACE = timedelta(minutes=15)
SUPERSEDED = "superseded by a more recent reminder"


@dataclass(frozen=True)
class ReminderDecision:
    """What the sweep does about one offset of one registration at this moment."""

    offset: timedelta
    due: datetime
    send: bool  # False: an older overdue reminder, recorded so it is never sent


@dataclass(frozen=True)
class ReminderPolicy:
    """Offsets, quiet hours and the zone they are read in (settings.reminder_offsets...)."""

    offsets: tuple[timedelta, ...]  # largest first
    quiet_hours: tuple[time, time] | None
    tz: ZoneInfo

    def quiet_period(self, moment: datetime) -> tuple[datetime, datetime] | None:
        """The quiet period (start, end) that contains `moment`, or None outside them."""
        if self.quiet_hours is None:
            return None
        begin, end = self.quiet_hours
        local = moment.astimezone(self.tz)
        day = local.date()
        if begin < end:
            start_day = day if begin <= local.time() < end else None
        elif local.time() >= begin:
            start_day = day
        elif local.time() < end:
            start_day = day - timedelta(days=1)
        else:
            start_day = None
        if start_day is None:
            return None
        end_day = start_day if begin < end else start_day + timedelta(days=1)
        return (
            datetime.combine(start_day, begin, tzinfo=self.tz).astimezone(UTC),
            datetime.combine(end_day, end, tzinfo=self.tz).astimezone(UTC),
        )

    @property
    def horizon(self) -> timedelta:
        """How far ahead a workshop can have a reminder due now (quiet hours move them earlier)."""
        quiet = timedelta(0)
        if self.quiet_hours is not None:
            begin, end = (datetime.combine(date.min, t) for t in self.quiet_hours)
            quiet = (end - begin) % timedelta(days=1) + timedelta(hours=1)  # a DST night
        return self.offsets[0] + quiet + QUIET_MARGIN

    def due_at(self, starts_at: datetime, offset: timedelta) -> datetime:
        """When the reminder `offset` before `starts_at` goes out, quiet hours considered."""
        due = starts_at - offset
        period = self.quiet_period(due)
        return due if period is None else period[0] - QUIET_MARGIN

    def decide(
        self, starts_at: datetime, seated_at: datetime, promoted: bool, now: datetime
    ) -> list[ReminderDecision]:
        """The reminders of one registration that are due at `now` (sent or superseded)."""
        due_now: list[tuple[timedelta, datetime]] = []
        for offset in self.offsets:
            due = self.due_at(starts_at, offset)
            if starts_at - offset <= seated_at and not promoted:
                continue  # they got their seat after this reminder's time
            if due <= seated_at:
                # Missed while waiting (caught up at the promotion), or moved before quiet
                # hours to a time before the seat: due at the seat (send_at keeps it quiet).
                due = seated_at
            if due <= now:
                due_now.append((offset, due))
        if not due_now:
            return []
        latest = max(due_now, key=lambda item: (item[1], -item[0]))
        return [ReminderDecision(offset, due, offset == latest[0]) for offset, due in due_now]

    def send_at(self, due: datetime, now: datetime, starts_at: datetime) -> datetime:
        """When a reminder found due at `now` may go: now, unless that would wake someone."""
        if now - due <= LATE_GRACE and self.quiet_period(due) is None:
            return now
        period = self.quiet_period(now)
        if period is not None and period[1] < starts_at:
            return period[1]
        return now


@dataclass(frozen=True)
class Visit:
    """A person's seat at a workshop, with what a reminder or a calendar file shows."""

    registration_id: int
    workshop_id: int
    title: dict[str, str]
    description: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    venue_name: str
    address: str
    latitude: float
    longitude: float
    updated_at: datetime


def reminder_key(registration_id: int, offset: timedelta, starts_at: datetime) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{REMINDER}:{registration_id}:{minutes}m:{_instant(starts_at)}"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def visit_query() -> Select[*tuple[Any, ...]]:
    """Registration, workshop and venue columns; filter it on the registration."""
    return (
        select(
            Registration.id.label("registration_id"),
            Registration.status.label("registration_status"),
            Workshop.id.label("workshop_id"),
            Workshop.status.label("workshop_status"),
            Workshop.title,
            Workshop.description,
            Workshop.starts_at,
            Workshop.ends_at,
            Workshop.updated_at,
            Venue.name.label("venue_name"),
            Venue.address,
            Venue.latitude,
            Venue.longitude,
        )
        .join(Workshop, Workshop.id == Registration.workshop_id)
        .join(Venue, Venue.id == Workshop.venue_id)
    )


def to_visit(row: Any) -> Visit:
    return Visit(
        registration_id=row.registration_id,
        workshop_id=row.workshop_id,
        title=row.title,
        description=row.description,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        venue_name=row.venue_name,
        address=row.address,
        latitude=row.latitude,
        longitude=row.longitude,
        updated_at=row.updated_at,
    )


class ReminderService:
    def __init__(self, db: Database, clock: Clock, policy: ReminderPolicy) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy

    async def plan_due_reminders(self) -> int:
        """Queue every reminder due now; returns how many were queued for sending."""
        now = self._clock.now()
        policy = self.policy
        async with self._db.write() as session:
            candidates = await session.execute(
                select(
                    Registration.id,
                    Registration.resident_id,
                    Registration.workshop_id,
                    Registration.promoted_at,
                    func.coalesce(Registration.confirmed_at, Registration.created_at).label(
                        "seated_at"
                    ),
                    Workshop.starts_at,
                )
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    Registration.status == RegistrationStatus.CONFIRMED,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at > now,
                    Workshop.starts_at <= now + policy.horizon,
                    Resident.is_active.is_(True),
                    Resident.consented_at.is_not(None),
                )
            )
            rows: dict[str, dict[str, Any]] = {}
            older: dict[str, list[str]] = {}  # a reminder to send -> the keys it supersedes
            for c in candidates:
                promoted = c.promoted_at is not None
                for decision in policy.decide(c.starts_at, c.seated_at, promoted, now):
                    key = reminder_key(c.id, decision.offset, c.starts_at)
                    rows[key] = _outbox_row(c, decision, key, now, policy)
                    if decision.send:
                        older[key] = [
                            reminder_key(c.id, offset, c.starts_at)
                            for offset in policy.offsets
                            if offset > decision.offset
                        ]
            if not rows:
                return 0
            queued = await queue_once(session, rows)
            await _drop_pending(session, [k for key in queued for k in older.get(key, ())], now)
            return len(queued)

    async def visit_for_reminder(self, registration_id: int, starts_at: datetime) -> Visit | None:
        """The visit a queued reminder is about, or None if the reminder became pointless.

        Pointless: the seat was given up, the workshop was cancelled, has started, or moved
        (its reminders for the new time are planned separately).
        """
        now = self._clock.now()
        async with self._db.read() as session:
            row = (
                await session.execute(visit_query().where(Registration.id == registration_id))
            ).one_or_none()
        if (
            row is None
            or row.registration_status != RegistrationStatus.CONFIRMED
            or row.workshop_status != WorkshopStatus.SCHEDULED
            or row.starts_at <= now
            or row.starts_at != starts_at
        ):
            return None
        return to_visit(row)

    async def visit_of(self, telegram_id: int, workshop_id: int) -> Visit | None:
        """The person's seat at a workshop that is still to come or running, if they have one."""
        async with self._db.read() as session:
            row = await _live_visit(session, telegram_id, workshop_id, self._clock.now())
        return to_visit(row) if row else None

    async def someone_waiting(self, workshop_id: int) -> bool:
        """Whether a seat given up now goes to someone on the waitlist (the person that
        promote_from_waitlist would promote): only then is a resident told so."""
        async with self._db.read() as session:
            return await session.scalar(FIRST_WAITING, {"workshop_id": workshop_id}) is not None

    async def confirm_coming(self, telegram_id: int, workshop_id: int) -> Visit | None:
        """Record that the person answered "I'm coming"; None if they hold no seat any more."""
        now = self._clock.now()
        async with self._db.write() as session:
            row = await _live_visit(session, telegram_id, workshop_id, now)
            if row is None:
                return None
            await session.execute(
                update(Registration)
                .where(
                    Registration.id == row.registration_id,
                    Registration.status == RegistrationStatus.CONFIRMED,
                    Registration.coming_confirmed_at.is_(None),
                )
                .values(coming_confirmed_at=now)
            )
        return to_visit(row)


async def _live_visit(
    session: AsyncSession, telegram_id: int, workshop_id: int, now: datetime
) -> Any:
    return (
        await session.execute(
            visit_query()
            .join(Resident, Resident.id == Registration.resident_id)
            .where(
                Resident.telegram_id == telegram_id,
                Registration.workshop_id == workshop_id,
                Registration.status == RegistrationStatus.CONFIRMED,
                Workshop.status == WorkshopStatus.SCHEDULED,
                Workshop.ends_at > now,
            )
        )
    ).one_or_none()


async def _drop_pending(session: AsyncSession, keys: list[str], now: datetime) -> None:
    """Drop the reminders of `keys` still waiting to be sent and not claimed by a worker."""
    for start in range(0, len(keys), ID_BATCH):
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.dedupe_key.in_(keys[start : start + ID_BATCH]),
                OutboxMessage.status == OutboxStatus.PENDING,
                or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
            )
            .values(status=OutboxStatus.DROPPED, last_error=SUPERSEDED)
        )


def _outbox_row(
    candidate: Any, decision: ReminderDecision, key: str, now: datetime, policy: ReminderPolicy
) -> dict[str, Any]:
    payload = {
        "registration_id": candidate.id,
        "workshop_id": candidate.workshop_id,
        "starts_at": candidate.starts_at.astimezone(UTC).isoformat(),
        "offset_minutes": int(decision.offset.total_seconds()) // 60,
    }
    row: dict[str, Any] = {
        "resident_id": candidate.resident_id,
        "kind": REMINDER,
        "payload": payload,
        "dedupe_key": key,
        "created_at": now,
    }
    if decision.send:
        row |= {
            "status": OutboxStatus.PENDING,
            "not_before": policy.send_at(decision.due, now, candidate.starts_at),
            "last_error": None,
        }
    else:
        row |= {"status": OutboxStatus.DROPPED, "not_before": now, "last_error": SUPERSEDED}
    return row
