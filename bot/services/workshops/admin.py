"""Workshops managed in chat by the staff: guided creation, changes and cancellation.

The steps of a guided conversation live in ConversationState rows (bot/services/conversations.py),
so a restart in the middle loses nothing. Every change of a workshop is one unit of work that also
queues, in the outbox, a notice to each person registered or waitlisted: the notice is sent
even if the process dies right after the commit, and its dedupe key names the change, so a
replayed change never notifies twice. Lowering the capacity is a conditional update
(`WHERE seats_taken <= new capacity`): the database, not a Python check, refuses to go below
the confirmed seats.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.registration import LIVE, promote_from_waitlist
from storage.db import Database
from storage.models import (
    OutboxMessage,
    Registration,
    RegistrationStatus,
    Resident,
    StaffMember,
    StaffRole,
    Theme,
    Venue,
    Workshop,
    WorkshopStatus,
)
from storage.results import affected_rows

CHANGE_NOTICE = "workshop_changed"
MAX_CAPACITY = 500
MAX_DURATION_MINUTES = 8 * 60
MAX_TITLE_CHARS = 120
PAGE_SIZE = 6


class Change(StrEnum):
    """What a change notice is about."""

    TIME = "time"
    VENUE = "venue"
    CANCELLED = "cancelled"


class EditOutcome(StrEnum):
    DONE = "done"
    UNCHANGED = "unchanged"  # the new value is the current one: nobody is told
    CLOSED = "closed"  # cancelled, done, started or unknown: it cannot be changed
    BELOW_CONFIRMED = "below_confirmed"  # capacity under the confirmed seats
    IN_THE_PAST = "in_the_past"


@dataclass(frozen=True)
class EditResult:
    outcome: EditOutcome
    notified: int = 0  # people told of the change
    promoted: int = 0  # people moved from the waitlist to a seat
    confirmed: int = 0  # confirmed seats, to explain a refused capacity


@dataclass(frozen=True)
class Choice:
    """A theme or a venue offered as a button."""

    id: int
    name: dict[str, str] | str


@dataclass(frozen=True)
class ManagedWorkshop:
    id: int
    title: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    venue_id: int
    venue_name: str
    capacity: int
    seats_taken: int
    waitlisted: int
    status: str


@dataclass(frozen=True)
class Draft:
    """A workshop being created, as the guided conversation collected it."""

    title: str
    theme_id: int
    venue_id: int
    starts_at: datetime
    duration_minutes: int
    capacity: int


# ---------------------------------------------------------------- parsing typed answers


def parse_day(text: str) -> date | None:
    """DD/MM/YYYY (also with - or . and a two-digit year), or None."""
    match = re.fullmatch(r"\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})\s*", text)
    if match is None:
        return None
    day, month, year = (int(g) for g in match.groups())
    try:
        return date(year + 2000 if year < 100 else year, month, day)
    except ValueError:
        return None


def parse_clock_time(text: str) -> time | None:
    """HH:MM (also 14h30, 14h, 14.30), or None."""
    match = re.fullmatch(r"\s*(\d{1,2})\s*[:hH.]\s*(\d{2})?\s*", text)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def parse_duration(text: str) -> int | None:
    """Minutes: "90", "1h30", "2h" or "1:30"; between 15 minutes and 8 hours."""
    cleaned = text.strip().lower().replace(" ", "")
    match = re.fullmatch(r"(\d{1,2})[h:](\d{2})?|(\d{1,3})(?:min)?", cleaned)
    if match is None:
        return None
    if match.group(3) is not None:
        minutes = int(match.group(3))
    else:
        minutes = int(match.group(1)) * 60 + int(match.group(2) or 0)
    return minutes if 15 <= minutes <= MAX_DURATION_MINUTES else None


def parse_capacity(text: str) -> int | None:
    cleaned = text.strip()
    if not cleaned.isdigit() or len(cleaned) > 4:
        return None
    value = int(cleaned)
    return value if 1 <= value <= MAX_CAPACITY else None


def time_stamp(moment: datetime) -> str:
    """A start time as it appears in the dedupe key of a time-change notice (UTC minutes)."""
    return f"{moment.astimezone(UTC):%Y%m%d%H%M}"


def time_change_stamp(starts_at: datetime, now: datetime) -> str:
    """The stamp of a move; the change time makes a move back to an earlier start a new change,
    told again."""
    return f"{time_stamp(starts_at)}:{now:%Y%m%d%H%M%S}"


def venue_change_stamp(venue_id: int, now: datetime) -> str:
    """The stamp of a change of venue; the change time makes a move back to an earlier venue a
    new change, told again."""
    return f"{venue_id}:{now:%Y%m%d%H%M%S}"


def local_moment(day: date, at: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=tz)


def day_number(day: date) -> int:
    """A day as an integer (YYYYMMDD), the form it takes in a button."""
    return day.year * 10000 + day.month * 100 + day.day


def day_from_number(value: int) -> date | None:
    try:
        return date(value // 10000, value // 100 % 100, value % 100)
    except ValueError:
        return None


# ---------------------------------------------------------------- the service


class WorkshopAdmin:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def themes(self) -> list[Choice]:
        async with self._db.read() as session:
            rows = await session.execute(select(Theme.id, Theme.name).order_by(Theme.id))
            return [Choice(r.id, r.name) for r in rows]

    async def venues(self) -> list[Choice]:
        async with self._db.read() as session:
            rows = await session.execute(select(Venue.id, Venue.name).order_by(Venue.name))
            return [Choice(r.id, r.name) for r in rows]

    async def upcoming(self, page: int) -> tuple[list[ManagedWorkshop], bool]:
        """Scheduled workshops not started yet, soonest first; and whether more follow."""
        async with self._db.read() as session:
            rows = await session.execute(
                _managed_query()
                .where(
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at > self._clock.now(),
                )
                .order_by(Workshop.starts_at, Workshop.id)
                .offset(page * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
            found = [_managed(r) for r in rows]
        return found[:PAGE_SIZE], len(found) > PAGE_SIZE

    async def workshop(self, workshop_id: int) -> ManagedWorkshop | None:
        async with self._db.read() as session:
            row = (
                await session.execute(_managed_query().where(Workshop.id == workshop_id))
            ).one_or_none()
        return _managed(row) if row else None

    async def notice_facts(self, registration_id: int) -> tuple[ManagedWorkshop, bool] | None:
        """The workshop a change notice is about, and whether the person's place is live."""
        async with self._db.read() as session:
            row = (
                await session.execute(
                    _managed_query()
                    .add_columns(Registration.status.label("registration_status"))
                    .join(Registration, Registration.workshop_id == Workshop.id)
                    .where(Registration.id == registration_id)
                )
            ).one_or_none()
        return (_managed(row), row.registration_status in LIVE) if row else None

    async def create(self, draft: Draft, created_by: int) -> int | None:
        """Create the workshop; None when it would start in the past.

        The creator is its facilitator if they hold that role; the key is generated from the
        day and a random part, so it never changes and never clashes with imported keys.
        """
        now = self._clock.now()
        if draft.starts_at <= now:
            return None
        async with self._db.write() as session:
            is_facilitator = await session.scalar(
                select(func.count())
                .select_from(StaffMember)
                .where(
                    StaffMember.telegram_id == created_by,
                    StaffMember.role == StaffRole.FACILITATOR,
                )
            )
            title = draft.title.strip()[:MAX_TITLE_CHARS]
            workshop = Workshop(
                key=f"chat-{draft.starts_at:%Y%m%d}-{secrets.token_hex(4)}",
                title={"fr": title, "en": title, "ar": title},
                description={},
                theme_id=draft.theme_id,
                venue_id=draft.venue_id,
                starts_at=draft.starts_at,
                ends_at=draft.starts_at + timedelta(minutes=draft.duration_minutes),
                capacity=draft.capacity,
                status=WorkshopStatus.SCHEDULED,
                facilitator_id=created_by if is_facilitator else None,
                created_at=now,
                updated_at=now,
            )
            session.add(workshop)
            await session.flush()
            return workshop.id

    async def move(self, workshop_id: int, starts_at: datetime) -> EditResult:
        """New day and time, same duration; everyone registered or waitlisted is told."""
        now = self._clock.now()
        if starts_at <= now:
            return EditResult(EditOutcome.IN_THE_PAST)
        async with self._db.write() as session:
            current = await _open_workshop(session, workshop_id, now)
            if current is None:
                return EditResult(EditOutcome.CLOSED)
            if current.starts_at == starts_at:
                return EditResult(EditOutcome.UNCHANGED)
            changed = await affected_rows(
                session,
                update(Workshop)
                .where(
                    Workshop.id == workshop_id,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at == current.starts_at,
                )
                .values(
                    starts_at=starts_at,
                    ends_at=starts_at + (current.ends_at - current.starts_at),
                    updated_at=now,
                ),
            )
            if changed != 1:
                return EditResult(EditOutcome.CLOSED)
            stamp = time_change_stamp(starts_at, now)
            notified = await queue_change_notices(
                session, workshop_id, Change.TIME, stamp, now, is_sqlite=self._db.is_sqlite
            )
            return EditResult(EditOutcome.DONE, notified=notified)

    async def change_venue(self, workshop_id: int, venue_id: int) -> EditResult:
        now = self._clock.now()
        async with self._db.write() as session:
            current = await _open_workshop(session, workshop_id, now)
            if current is None or await session.get(Venue, venue_id) is None:
                return EditResult(EditOutcome.CLOSED)
            if current.venue_id == venue_id:
                return EditResult(EditOutcome.UNCHANGED)
            await session.execute(
                update(Workshop)
                .where(Workshop.id == workshop_id)
                .values(venue_id=venue_id, updated_at=now)
            )
            stamp = venue_change_stamp(venue_id, now)
            notified = await queue_change_notices(
                session, workshop_id, Change.VENUE, stamp, now, is_sqlite=self._db.is_sqlite
            )
            return EditResult(EditOutcome.DONE, notified=notified)

    async def change_capacity(self, workshop_id: int, capacity: int) -> EditResult:
        """Refused below the confirmed seats; a raise gives seats to the waitlist, in order."""
        now = self._clock.now()
        async with self._db.write() as session:
            current = await _open_workshop(session, workshop_id, now)
            if current is None:
                return EditResult(EditOutcome.CLOSED)
            changed = await affected_rows(
                session,
                update(Workshop)
                .where(
                    Workshop.id == workshop_id,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.seats_taken <= capacity,
                )
                .values(capacity=capacity, updated_at=now),
            )
            if changed != 1:
                return EditResult(EditOutcome.BELOW_CONFIRMED, confirmed=current.seats_taken)
            promoted = 0
            while await promote_from_waitlist(session, workshop_id, now) is not None:
                promoted += 1
            return EditResult(EditOutcome.DONE, promoted=promoted)

    async def cancel(self, workshop_id: int) -> EditResult:
        """Call the workshop off; registrations stay as they are, everyone is told."""
        now = self._clock.now()
        async with self._db.write() as session:
            changed = await affected_rows(
                session,
                update(Workshop)
                .where(
                    Workshop.id == workshop_id,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at > now,
                )
                .values(status=WorkshopStatus.CANCELLED, updated_at=now),
            )
            if changed != 1:
                return EditResult(EditOutcome.CLOSED)
            notified = await queue_change_notices(
                session, workshop_id, Change.CANCELLED, "", now, is_sqlite=self._db.is_sqlite
            )
            return EditResult(EditOutcome.DONE, notified=notified)


async def queue_change_notices(
    session: AsyncSession,
    workshop_id: int,
    change: Change,
    stamp: str,
    now: datetime,
    *,
    is_sqlite: bool,
) -> int:
    """One notice per person registered or waitlisted who can be reached on Telegram, in the
    caller's unit of work (also the catalogue import's, so that both tell people alike).

    Returns how many notices were queued (a notice already queued is not counted).
    """
    people = (
        await session.execute(
            select(Registration.id, Registration.resident_id)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(
                Registration.workshop_id == workshop_id,
                Registration.status.in_(LIVE),
                Resident.telegram_id.is_not(None),
            )
        )
    ).all()
    if not people:
        return 0
    insert = sqlite_insert if is_sqlite else pg_insert
    queued = await session.execute(
        insert(OutboxMessage)
        .values(
            [
                {
                    "resident_id": p.resident_id,
                    "kind": CHANGE_NOTICE,
                    "payload": {
                        "workshop_id": workshop_id,
                        "registration_id": p.id,
                        "change": change.value,
                        "stamp": stamp,
                    },
                    "dedupe_key": f"{CHANGE_NOTICE}:{workshop_id}:{change}:{stamp}:{p.id}",
                    "not_before": now,
                    "created_at": now,
                }
                for p in people
            ]
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxMessage.id)
    )
    return len(queued.all())


@dataclass(frozen=True)
class _Open:
    starts_at: datetime
    ends_at: datetime
    venue_id: int
    seats_taken: int


async def _open_workshop(session: AsyncSession, workshop_id: int, now: datetime) -> _Open | None:
    """The workshop if it can still be changed (scheduled, not started); locks its row."""
    row = (
        await session.execute(
            select(Workshop.starts_at, Workshop.ends_at, Workshop.venue_id, Workshop.seats_taken)
            .where(
                Workshop.id == workshop_id,
                Workshop.status == WorkshopStatus.SCHEDULED,
                Workshop.starts_at > now,
            )
            .with_for_update()
        )
    ).one_or_none()
    return _Open(row.starts_at, row.ends_at, row.venue_id, row.seats_taken) if row else None


def _managed_query() -> Select[*tuple[Any, ...]]:
    """A managed workshop's columns (read by `_managed`); ten of them, more than
    SQLAlchemy's typed overloads of select() name, so the row is typed as Any."""
    waitlisted = (
        select(func.count())
        .where(
            Registration.workshop_id == Workshop.id,
            Registration.status == RegistrationStatus.WAITLISTED,
        )
        .correlate(Workshop)
        .scalar_subquery()
    )
    return select(
        Workshop.id,
        Workshop.title,
        Workshop.starts_at,
        Workshop.ends_at,
        Workshop.venue_id,
        Venue.name.label("venue_name"),
        Workshop.capacity,
        Workshop.seats_taken,
        waitlisted.label("waitlisted"),
        Workshop.status,
    ).join(Venue, Venue.id == Workshop.venue_id)


def _managed(row: Any) -> ManagedWorkshop:
    return ManagedWorkshop(
        id=row.id,
        title=row.title,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        venue_id=row.venue_id,
        venue_name=row.venue_name,
        capacity=row.capacity,
        seats_taken=row.seats_taken,
        waitlisted=row.waitlisted,
        status=row.status,
    )
