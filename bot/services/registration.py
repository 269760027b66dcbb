"""Registration rules: seats, the waitlist, cancellation and promotion.

Every rule runs in one write transaction and relies on conditional updates, so concurrent
taps can never oversell: `seats_taken = seats_taken + 1 ... WHERE seats_taken < capacity`
is re-checked by PostgreSQL after a blocked update (READ COMMITTED) and serialised by
SQLite's BEGIN IMMEDIATE. The CHECK constraints of the schema stay as the last guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.channel import ChannelNotices
from bot.services.workshops.listing import waitlist_rank_subquery
from storage.db import Database
from storage.models import (
    OutboxMessage,
    Registration,
    RegistrationStatus,
    Resident,
    Venue,
    Workshop,
    WorkshopStatus,
)
from storage.results import affected_rows

LIVE = (RegistrationStatus.CONFIRMED, RegistrationStatus.WAITLISTED)

# The statements of the sign-up journey are built once, with bound parameters: building a
# statement costs more than running it, and these run on most taps (bench/journey.py).
_CONSENTING = select(Resident.id).where(
    Resident.telegram_id == bindparam("telegram_id"),
    Resident.consented_at.is_not(None),
    Resident.erased_at.is_(None),
)
_CONSENTING_FOR_SHARE = _CONSENTING.with_for_update(read=True)
_WORKSHOP_STATE = select(Workshop.status, Workshop.starts_at).where(
    Workshop.id == bindparam("workshop_id")
)
_LIVE_PLACE = select(
    Registration.id,
    Registration.status,
    waitlist_rank_subquery(Registration.waitlist_position).label("rank"),
).where(
    Registration.workshop_id == bindparam("workshop_id"),
    Registration.resident_id == bindparam("resident_id"),
    Registration.status.in_(LIVE),
)
# Core statements on the tables (no ORM bookkeeping); the metadata holds them as `Table`s.
_workshops = Workshop.metadata.tables[Workshop.__tablename__]
_TAKE_SEAT = (
    _workshops.update()
    .where(
        _workshops.c.id == bindparam("workshop_id"),
        _workshops.c.status == WorkshopStatus.SCHEDULED,
        _workshops.c.seats_taken < _workshops.c.capacity,
    )
    .values(seats_taken=_workshops.c.seats_taken + 1)
)
_RELEASE_SEAT = (
    _workshops.update()
    .where(_workshops.c.id == bindparam("workshop_id"))
    .values(seats_taken=_workshops.c.seats_taken - 1)
)
_registrations = Registration.metadata.tables[Registration.__tablename__]
_CANCEL_PLACE = (
    _registrations.update()
    .where(
        _registrations.c.id == bindparam("registration_id"),
        _registrations.c.status == bindparam("registration_status"),
    )
    .values(
        status=RegistrationStatus.CANCELLED,
        cancelled_at=bindparam("now"),
        waitlist_position=None,
    )
)
# The person a freed seat goes to: also asked by "I can't come" before promising the seat.
FIRST_WAITING = (
    select(Registration.id, Registration.resident_id)
    .join(Resident, Resident.id == Registration.resident_id)
    .where(
        Registration.workshop_id == bindparam("workshop_id"),
        Registration.status == RegistrationStatus.WAITLISTED,
        # Defensive: withdrawal and erasure give up waitlist places; someone who would not
        # be told must never be given a seat silently.
        Resident.consented_at.is_not(None),
        Resident.erased_at.is_(None),
    )
    .order_by(Registration.waitlist_position)
    .limit(1)
)
PROMOTION_NOTICE = "waitlist_promoted"


class RegisterOutcome(StrEnum):
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    ALREADY_CONFIRMED = "already_confirmed"
    ALREADY_WAITLISTED = "already_waitlisted"
    CLOSED = "closed"  # cancelled, done or already started
    UNKNOWN = "unknown"  # no such workshop
    NO_CONSENT = "no_consent"


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    NOT_REGISTERED = "not_registered"
    STARTED = "started"


@dataclass(frozen=True)
class RegisterResult:
    outcome: RegisterOutcome
    waitlist_rank: int | None = None


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    was_waitlisted: bool = False
    promoted_resident_id: int | None = None


@dataclass(frozen=True)
class MyPlace:
    workshop_id: int
    title: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    venue_name: str
    status: str
    waitlist_rank: int | None


class RegistrationService:
    def __init__(
        self, db: Database, clock: Clock, *, channel: ChannelNotices | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        # Notices to the facilitators' channel, queued in the same transactions (optional).
        self._channel = channel

    async def register(self, telegram_id: int, workshop_id: int) -> RegisterResult:
        """Take a seat if one is left, else a place on the waitlist."""
        try:
            return await self._register(telegram_id, workshop_id)
        except IntegrityError:
            # A concurrent tap of the same person won the unique index: report their place.
            return await self._existing_place(telegram_id, workshop_id)

    async def _register(self, telegram_id: int, workshop_id: int) -> RegisterResult:
        now = self._clock.now()
        async with self._db.write() as session:
            # Locked (FOR SHARE) until the commit: an erasure or a withdrawal in another
            # instance waits for this place to exist (and then gives it up), or wins first.
            resident_id = await consenting_resident(session, telegram_id, lock=True)
            if resident_id is None:
                return RegisterResult(RegisterOutcome.NO_CONSENT)
            workshop = (
                await session.execute(_WORKSHOP_STATE, {"workshop_id": workshop_id})
            ).one_or_none()
            if workshop is None:
                return RegisterResult(RegisterOutcome.UNKNOWN)
            if workshop.status != WorkshopStatus.SCHEDULED or workshop.starts_at <= now:
                return RegisterResult(RegisterOutcome.CLOSED)
            existing = await _live_place(session, resident_id, workshop_id)
            if existing is not None:
                return existing

            result = await seat_or_waitlist(session, workshop_id, resident_id, now)
            if self._channel is not None:
                await self._channel.registered(session, workshop_id, resident_id, now)
            return result

    async def _existing_place(self, telegram_id: int, workshop_id: int) -> RegisterResult:
        async with self._db.read() as session:
            resident_id = await consenting_resident(session, telegram_id)
            place = await _live_place(session, resident_id, workshop_id) if resident_id else None
        if place is None:
            raise RuntimeError("registration refused by the database without a live place")
        return place

    async def cancel(self, telegram_id: int, workshop_id: int) -> CancelResult:
        """Give up a seat or a waitlist place; a freed seat goes to the first person waiting."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            if resident_id is None:
                return CancelResult(CancelOutcome.NOT_REGISTERED)
            registration = (
                await session.execute(
                    _LIVE_PLACE, {"workshop_id": workshop_id, "resident_id": resident_id}
                )
            ).one_or_none()
            if registration is None:
                return CancelResult(CancelOutcome.NOT_REGISTERED)
            status, starts_at = (
                await session.execute(_WORKSHOP_STATE, {"workshop_id": workshop_id})
            ).one()
            if starts_at <= now and status == WorkshopStatus.SCHEDULED:
                return CancelResult(CancelOutcome.STARTED)
            return await self.cancel_place(
                session, registration.id, registration.status, workshop_id, status, now
            )

    async def cancel_place(
        self,
        session: AsyncSession,
        registration_id: int,
        registration_status: str,
        workshop_id: int,
        workshop_status: str,
        now: datetime,
    ) -> CancelResult:
        """Cancel one live place in the caller's transaction: free the seat, promote the first
        person waiting, tell the channel. Also used by erasure (bot/services/privacy/personal_data.py)."""
        changed = await affected_rows(
            session,
            _CANCEL_PLACE,
            {
                "registration_id": registration_id,
                "registration_status": registration_status,
                "now": now,
            },
        )
        if changed != 1:
            return CancelResult(CancelOutcome.NOT_REGISTERED)
        was_waitlisted = registration_status == RegistrationStatus.WAITLISTED
        promoted = None
        if not was_waitlisted:
            await release_seat(session, workshop_id)
            if workshop_status == WorkshopStatus.SCHEDULED:
                promoted = await promote_from_waitlist(session, workshop_id, now)
        if self._channel is not None:
            await self._channel.cancelled(
                session,
                registration_id,
                was_waitlisted=was_waitlisted,
                promoted_resident_id=promoted,
                now=now,
            )
        return CancelResult(
            CancelOutcome.CANCELLED,
            was_waitlisted=was_waitlisted,
            promoted_resident_id=promoted,
        )

    async def my_places(self, telegram_id: int) -> list[MyPlace]:
        """The person's upcoming seats and waitlist places, soonest first."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    Workshop.id,
                    Workshop.title,
                    Workshop.starts_at,
                    Workshop.ends_at,
                    Venue.name,
                    Registration.status,
                    waitlist_rank_subquery(Registration.waitlist_position).label("rank"),
                )
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .join(Venue, Venue.id == Workshop.venue_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    Resident.telegram_id == telegram_id,
                    Registration.status.in_(LIVE),
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.ends_at > self._clock.now(),
                )
                .order_by(Workshop.starts_at, Workshop.id)
            )
            return [
                MyPlace(
                    workshop_id=r.id,
                    title=r.title,
                    starts_at=r.starts_at,
                    ends_at=r.ends_at,
                    venue_name=r.name,
                    status=r.status,
                    waitlist_rank=r.rank if r.status == RegistrationStatus.WAITLISTED else None,
                )
                for r in rows
            ]


async def consenting_resident(
    session: AsyncSession, telegram_id: int, *, lock: bool = False
) -> int | None:
    """The id of the resident behind a Telegram id, if they gave their consent.

    With `lock`, the row is read FOR SHARE on PostgreSQL, so that it cannot be erased or
    lose its consent before the caller commits: the foreign key check of an INSERT only
    takes KEY SHARE, which an erasure's UPDATE does not wait for. (SQLite ignores it: its
    writers are serialised already.)
    """
    query = _CONSENTING_FOR_SHARE if lock else _CONSENTING
    return await session.scalar(query, {"telegram_id": telegram_id})


async def _live_place(
    session: AsyncSession, resident_id: int, workshop_id: int
) -> RegisterResult | None:
    row = (
        await session.execute(_LIVE_PLACE, {"workshop_id": workshop_id, "resident_id": resident_id})
    ).one_or_none()
    if row is None:
        return None
    if row.status == RegistrationStatus.CONFIRMED:
        return RegisterResult(RegisterOutcome.ALREADY_CONFIRMED)
    return RegisterResult(RegisterOutcome.ALREADY_WAITLISTED, row.rank)


async def seat_or_waitlist(
    session: AsyncSession, workshop_id: int, resident_id: int, now: datetime
) -> RegisterResult:
    """Give the person a seat if one is left, else the next waitlist ticket.

    The caller has checked that the workshop is open and that the person holds no live place
    in it; the unique index on live registrations guards against a concurrent duplicate.
    """
    if await take_seat(session, workshop_id):
        session.add(
            Registration(
                workshop_id=workshop_id,
                resident_id=resident_id,
                status=RegistrationStatus.CONFIRMED,
                created_at=now,
                confirmed_at=now,
            )
        )
        await session.flush()
        return RegisterResult(RegisterOutcome.CONFIRMED)
    ticket = await session.scalar(
        update(Workshop)
        .where(Workshop.id == workshop_id)
        .values(waitlist_seq=Workshop.waitlist_seq + 1)
        .returning(Workshop.waitlist_seq)
    )
    session.add(
        Registration(
            workshop_id=workshop_id,
            resident_id=resident_id,
            status=RegistrationStatus.WAITLISTED,
            created_at=now,
            waitlist_position=ticket,
        )
    )
    await session.flush()
    place = await _live_place(session, resident_id, workshop_id)
    assert place is not None
    return RegisterResult(RegisterOutcome.WAITLISTED, place.waitlist_rank)


async def take_seat(session: AsyncSession, workshop_id: int) -> bool:
    """Take one seat if any is left: the guard that makes overselling impossible."""
    return await affected_rows(session, _TAKE_SEAT, {"workshop_id": workshop_id}) == 1


async def release_seat(session: AsyncSession, workshop_id: int) -> None:
    """Give a seat back; also locks the workshop row so promotions happen one at a time."""
    await session.execute(_RELEASE_SEAT, {"workshop_id": workshop_id})


async def promote_from_waitlist(
    session: AsyncSession, workshop_id: int, now: datetime
) -> int | None:
    """Give a free seat to the first person waiting and queue the notice that tells them.

    The notice is written to the outbox in the same transaction, so it is sent even if the
    process dies right after the commit. Returns the promoted resident's id, if any.
    """
    first = (await session.execute(FIRST_WAITING, {"workshop_id": workshop_id})).one_or_none()
    if first is None or not await take_seat(session, workshop_id):
        return None
    await session.execute(
        update(Registration)
        .where(Registration.id == first.id)
        .values(
            status=RegistrationStatus.CONFIRMED,
            confirmed_at=now,
            promoted_at=now,
            waitlist_position=None,
        )
    )
    session.add(
        OutboxMessage(
            resident_id=first.resident_id,
            kind=PROMOTION_NOTICE,
            payload={"workshop_id": workshop_id, "registration_id": first.id},
            dedupe_key=f"{PROMOTION_NOTICE}:{first.id}",
            not_before=now,
            created_at=now,
        )
    )
    promoted: int = first.resident_id
    return promoted
