"""Attendance: who came to a workshop, by check-in code, check-in button or roll call.

A participant can check in from 30 minutes before the start to one hour after the end, with
the workshop's code (`/checkin K7M2Q`) or the button the bot sends when the workshop starts.
A facilitator can also take the roll. Marking someone present is one conditional update, so
two ways of checking in at once record one attendance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.outbox import queue_once
from bot.services.reminders import Visit, to_visit, visit_query
from storage.db import Database
from storage.models import (
    AttendanceSource,
    OutboxStatus,
    Registration,
    RegistrationStatus,
    Resident,
    Venue,
    Workshop,
    WorkshopStatus,
)
from storage.results import affected_rows

CHECKIN_OPENS_BEFORE = timedelta(minutes=30)
CHECKIN_CLOSES_AFTER = timedelta(hours=1)
# /attendance lists the workshops that ended less than this long ago.
ROLL_KEPT_FOR = timedelta(hours=24)
# A code is looked up among the workshops of this period around now.
CODE_LOOKUP = timedelta(days=60)
CHECKIN_PROMPT = "checkin_prompt"
ROLL_LIST_LIMIT = 20
_CODE = re.compile(r"[A-Z0-9]{1,12}")


class CheckInOutcome(StrEnum):
    CHECKED_IN = "checked_in"
    ALREADY = "already"  # checked in before (by any means)
    UNKNOWN_CODE = "unknown_code"  # no workshop has this code
    NOT_REGISTERED = "not_registered"  # the workshop exists but the person holds no seat
    NOT_OPEN_YET = "not_open_yet"
    CLOSED = "closed"
    INVALID = "invalid"  # does not look like a code at all


@dataclass(frozen=True)
class CheckInResult:
    outcome: CheckInOutcome
    title: dict[str, str] | None = None
    opens_at: datetime | None = None


@dataclass(frozen=True)
class RollWorkshop:
    id: int
    title: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    venue_name: str


@dataclass(frozen=True)
class RollEntry:
    registration_id: int
    first_name: str | None
    present: bool


@dataclass(frozen=True)
class RollCall:
    workshop: RollWorkshop
    checkin_code: str
    entries: list[RollEntry]

    @property
    def present_count(self) -> int:
        return sum(entry.present for entry in self.entries)


def normalize_code(raw: str) -> str | None:
    """The code as stored (upper case, no spaces or dashes), or None if it cannot be one."""
    compact = "".join(raw.split()).replace("-", "").upper()
    return compact if _CODE.fullmatch(compact) else None


def checkin_window(starts_at: datetime, ends_at: datetime) -> tuple[datetime, datetime]:
    return starts_at - CHECKIN_OPENS_BEFORE, ends_at + CHECKIN_CLOSES_AFTER


def prompt_key(registration_id: int, starts_at: datetime) -> str:
    return f"{CHECKIN_PROMPT}:{registration_id}:{starts_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class AttendanceService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def check_in_by_code(self, telegram_id: int, raw_code: str) -> CheckInResult:
        """Mark the person present at their workshop that has this code."""
        code = normalize_code(raw_code)
        if code is None:
            return CheckInResult(CheckInOutcome.INVALID)
        now = self._clock.now()
        async with self._db.write() as session:
            seats = list(
                await session.execute(
                    _seat_query(telegram_id).where(func.upper(Workshop.checkin_code) == code)
                )
            )
            if seats:
                nearest = min(seats, key=lambda seat: abs(seat.starts_at - now))
                return await _mark(session, nearest, now, AttendanceSource.CODE)
            title = await session.scalar(
                select(Workshop.title)
                .where(
                    func.upper(Workshop.checkin_code) == code,
                    Workshop.status != WorkshopStatus.CANCELLED,
                    Workshop.starts_at > now - CODE_LOOKUP,
                    Workshop.starts_at < now + CODE_LOOKUP,
                )
                .order_by(Workshop.starts_at)
                .limit(1)
            )
        if title is None:
            return CheckInResult(CheckInOutcome.UNKNOWN_CODE)
        return CheckInResult(CheckInOutcome.NOT_REGISTERED, title=title)

    async def check_in_by_button(self, telegram_id: int, workshop_id: int) -> CheckInResult:
        """Mark the person present from the "I'm here" button of a check-in prompt."""
        now = self._clock.now()
        async with self._db.write() as session:
            seat = (
                await session.execute(_seat_query(telegram_id).where(Workshop.id == workshop_id))
            ).one_or_none()
            if seat is None:
                return CheckInResult(CheckInOutcome.NOT_REGISTERED)
            return await _mark(session, seat, now, AttendanceSource.BUTTON)

    async def plan_checkin_prompts(self) -> int:
        """Queue "the workshop is starting" with its check-in button for each seat holder."""
        now = self._clock.now()
        async with self._db.write() as session:
            candidates = await session.execute(
                select(
                    Registration.id,
                    Registration.resident_id,
                    Registration.workshop_id,
                    Workshop.starts_at,
                )
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    Registration.status == RegistrationStatus.CONFIRMED,
                    Registration.attended_at.is_(None),
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at <= now,
                    Workshop.starts_at > now - ROLL_KEPT_FOR,
                    Workshop.ends_at > now,
                    Resident.is_active.is_(True),
                    Resident.consented_at.is_not(None),
                )
            )
            rows = {
                prompt_key(c.id, c.starts_at): {
                    "resident_id": c.resident_id,
                    "kind": CHECKIN_PROMPT,
                    "payload": {
                        "registration_id": c.id,
                        "workshop_id": c.workshop_id,
                        "starts_at": c.starts_at.astimezone(UTC).isoformat(),
                    },
                    "dedupe_key": prompt_key(c.id, c.starts_at),
                    "status": OutboxStatus.PENDING,
                    "not_before": now,
                    "created_at": now,
                }
                for c in candidates
            }
            if not rows:
                return 0
            return len(await queue_once(session, rows))

    async def visit_for_prompt(self, registration_id: int, starts_at: datetime) -> Visit | None:
        """The visit a queued check-in prompt is about, or None if it became pointless."""
        now = self._clock.now()
        async with self._db.read() as session:
            row = (
                await session.execute(
                    visit_query()
                    .add_columns(Registration.attended_at)
                    .where(Registration.id == registration_id)
                )
            ).one_or_none()
        if (
            row is None
            or row.registration_status != RegistrationStatus.CONFIRMED
            or row.attended_at is not None
            or row.workshop_status == WorkshopStatus.CANCELLED
            or row.starts_at != starts_at
            or now >= row.ends_at
        ):
            return None
        return to_visit(row)

    async def roll_workshops(self) -> list[RollWorkshop]:
        """Workshops whose roll can be taken: check-in open, or ended less than 24 h ago.

        Those not over yet come first, then the most recent: with many workshops ended in
        the last 24 h, the ones being run now never fall off the list.
        """
        now = self._clock.now()
        async with self._db.read() as session:
            rows = await session.execute(
                _roll_workshop_query(now)
                .order_by(
                    case((Workshop.ends_at > now, 0), else_=1),
                    Workshop.starts_at.desc(),
                    Workshop.id.desc(),
                )
                .limit(ROLL_LIST_LIMIT)
            )
            return [_roll_workshop(row) for row in rows]

    async def roll_call(self, workshop_id: int) -> RollCall | None:
        now = self._clock.now()
        async with self._db.read() as session:
            return await _roll_call(session, workshop_id, now)

    async def set_present(
        self, registration_id: int, present: bool, marked_by: int
    ) -> RollCall | None:
        """A facilitator ticks (or unticks) a person; None when that roll is closed."""
        now = self._clock.now()
        async with self._db.write() as session:
            workshop_id = await session.scalar(
                select(Registration.workshop_id)
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .where(
                    Registration.id == registration_id,
                    Registration.status == RegistrationStatus.CONFIRMED,
                    *_roll_window(now),
                )
            )
            if workshop_id is None:
                return None
            if present:  # someone who checked in themselves keeps their own record
                await session.execute(
                    update(Registration)
                    .where(Registration.id == registration_id, Registration.attended_at.is_(None))
                    .values(
                        attended_at=now,
                        attendance_source=AttendanceSource.ROLL,
                        attendance_marked_by=marked_by,
                    )
                )
            else:
                await session.execute(
                    update(Registration)
                    .where(Registration.id == registration_id)
                    .values(attended_at=None, attendance_source=None, attendance_marked_by=None)
                )
            return await _roll_call(session, workshop_id, now)


def _seat_query(telegram_id: int) -> Select[*tuple[Any, ...]]:
    """The person's confirmed seats at workshops that were not called off."""
    return (
        select(
            Registration.id,
            Registration.attended_at,
            Workshop.title,
            Workshop.starts_at,
            Workshop.ends_at,
        )
        .join(Workshop, Workshop.id == Registration.workshop_id)
        .join(Resident, Resident.id == Registration.resident_id)
        .where(
            Resident.telegram_id == telegram_id,
            Resident.consented_at.is_not(None),
            Registration.status == RegistrationStatus.CONFIRMED,
            Workshop.status != WorkshopStatus.CANCELLED,
        )
    )


async def _mark(
    session: AsyncSession, seat: Any, now: datetime, source: AttendanceSource
) -> CheckInResult:
    opens, closes = checkin_window(seat.starts_at, seat.ends_at)
    if now < opens:
        return CheckInResult(CheckInOutcome.NOT_OPEN_YET, title=seat.title, opens_at=opens)
    if now > closes:
        return CheckInResult(CheckInOutcome.CLOSED, title=seat.title)
    marked = await affected_rows(
        session,
        update(Registration)
        .where(
            Registration.id == seat.id,
            Registration.status == RegistrationStatus.CONFIRMED,
            Registration.attended_at.is_(None),
        )
        .values(attended_at=now, attendance_source=source),
    )
    outcome = CheckInOutcome.CHECKED_IN if marked == 1 else CheckInOutcome.ALREADY
    return CheckInResult(outcome, title=seat.title)


def _roll_window(now: datetime) -> list[Any]:
    return [
        Workshop.status != WorkshopStatus.CANCELLED,
        Workshop.starts_at <= now + CHECKIN_OPENS_BEFORE,
        Workshop.ends_at > now - ROLL_KEPT_FOR,
    ]


def _roll_workshop_query(now: datetime) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Workshop.id,
            Workshop.title,
            Workshop.starts_at,
            Workshop.ends_at,
            Venue.name.label("venue_name"),
        )
        .join(Venue, Venue.id == Workshop.venue_id)
        .where(*_roll_window(now))
    )


def _roll_workshop(row: Any) -> RollWorkshop:
    return RollWorkshop(row.id, row.title, row.starts_at, row.ends_at, row.venue_name)


async def _roll_call(session: AsyncSession, workshop_id: int, now: datetime) -> RollCall | None:
    workshop = (
        await session.execute(
            _roll_workshop_query(now)
            .add_columns(Workshop.checkin_code)
            .where(Workshop.id == workshop_id)
        )
    ).one_or_none()
    if workshop is None:
        return None
    people = await session.execute(
        select(Registration.id, Resident.first_name, Registration.attended_at)
        .join(Resident, Resident.id == Registration.resident_id)
        .where(
            Registration.workshop_id == workshop_id,
            Registration.status == RegistrationStatus.CONFIRMED,
        )
        .order_by(func.lower(func.coalesce(Resident.first_name, "")), Registration.id)
    )
    return RollCall(
        workshop=_roll_workshop(workshop),
        checkin_code=workshop.checkin_code,
        entries=[RollEntry(p.id, p.first_name, p.attended_at is not None) for p in people],
    )
