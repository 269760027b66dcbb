"""Sign-up at the EPN desk for people without Telegram, and claiming that record later.

A mediator enrols the person: a Resident row without a Telegram id (consent collected at the
desk, by the mediator), and a registration taken through the same seat and waitlist rules as
any other (`seat_or_waitlist`), so desk sign-ups count in every figure. The person gets a
one-time claim code; `/claim CODE` from their own Telegram moves the desk record onto their
account. The code is consumed by a conditional update, so it works once even when two claims
race.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.registration import (
    LIVE,
    RegisterOutcome,
    consenting_resident,
    promote_from_waitlist,
    release_seat,
    seat_or_waitlist,
)
from bot.services.residents import NOTICE_VERSION
from storage.db import Database
from storage.models import (
    CHECKIN_ALPHABET,
    ConsentEvent,
    Registration,
    RegistrationStatus,
    Resident,
    Workshop,
    WorkshopStatus,
)

CLAIM_CODE_LENGTH = 8
MAX_NAME_CHARS = 60
_CODE_ATTEMPTS = 3


class EnrolOutcome(StrEnum):
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    CLOSED = "closed"  # the workshop is cancelled, started or unknown


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    INVALID = "invalid"  # wrong, or already used
    NO_CONSENT = "no_consent"  # the person must accept the privacy notice first


@dataclass(frozen=True)
class EnrolResult:
    outcome: EnrolOutcome
    claim_code: str | None = None
    waitlist_rank: int | None = None


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    registrations: int = 0  # live places now on the person's account from the desk record


def new_claim_code() -> str:
    """Eight characters without look-alikes (no 0/O, 1/I/L): easy to copy from paper."""
    return "".join(secrets.choice(CHECKIN_ALPHABET) for _ in range(CLAIM_CODE_LENGTH))


def normalise_code(text: str) -> str:
    return re.sub(r"[\s\-]", "", text).upper()


def normalise_name(text: str) -> str | None:
    name = " ".join(text.split())
    return name if 1 <= len(name) <= MAX_NAME_CHARS and not name.startswith("/") else None


def normalise_phone(text: str) -> str | None:
    """A French number, loosely: 10 digits starting with 0, or +33 and 9 digits.

    Stored as +33XXXXXXXXX; anything else is refused so that a mistyped number is re-asked.
    """
    digits = re.sub(r"[\s.\-()]", "", text)
    if re.fullmatch(r"0[1-9]\d{8}", digits):
        return "+33" + digits[1:]
    if re.fullmatch(r"(\+|00)33[1-9]\d{8}", digits):
        return "+33" + digits[-9:]
    return None


class EnrolmentService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def enrol(
        self, mediator_id: int, first_name: str, phone: str | None, workshop_id: int
    ) -> EnrolResult:
        """Record the person (consent given at the desk) and take a seat or a waitlist place."""
        for attempt in range(_CODE_ATTEMPTS):
            try:
                return await self._enrol(mediator_id, first_name, phone, workshop_id)
            except IntegrityError:
                # Only a claim code drawn twice can clash here (the person is new): draw again.
                if attempt == _CODE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _enrol(
        self, mediator_id: int, first_name: str, phone: str | None, workshop_id: int
    ) -> EnrolResult:
        now = self._clock.now()
        async with self._db.write() as session:
            is_open = await session.scalar(
                select(Workshop.id).where(
                    Workshop.id == workshop_id,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at > now,
                )
            )
            if is_open is None:
                return EnrolResult(EnrolOutcome.CLOSED)
            code = new_claim_code()
            resident = Resident(
                telegram_id=None,
                first_name=first_name,
                phone=phone,
                enrolled_by=mediator_id,
                claim_code=code,
                consented_at=now,
                created_at=now,
                is_active=True,
            )
            session.add(resident)
            await session.flush()
            session.add(
                ConsentEvent(
                    resident_id=resident.id, kind="given", notice_version=NOTICE_VERSION, at=now
                )
            )
            place = await seat_or_waitlist(session, workshop_id, resident.id, now)
            if place.outcome is RegisterOutcome.CONFIRMED:
                return EnrolResult(EnrolOutcome.CONFIRMED, code)
            return EnrolResult(EnrolOutcome.WAITLISTED, code, place.waitlist_rank)

    async def claim(self, telegram_id: int, code: str) -> ClaimResult:
        """Move the desk record with this code onto the person's own record, then delete it.

        Places for a workshop the person already holds are merged: the better place is kept
        (a seat beats a waitlist place; on a tie, the person's own), the other one goes, and a
        seat given up that way goes to the first person waiting.
        """
        now = self._clock.now()
        async with self._db.write() as session:
            own_id = await consenting_resident(session, telegram_id)
            if own_id is None:
                return ClaimResult(ClaimOutcome.NO_CONSENT)
            desk = (
                await session.execute(
                    update(Resident)
                    .where(
                        Resident.claim_code == normalise_code(code),
                        Resident.telegram_id.is_(None),
                    )
                    .values(claim_code=None)
                    .returning(Resident.id, Resident.phone)
                )
            ).one_or_none()
            if desk is None:
                return ClaimResult(ClaimOutcome.INVALID)
            await _merge_places(session, desk.id, own_id, now)
            moved = await session.execute(
                update(Registration)
                .where(Registration.resident_id == desk.id)
                .values(resident_id=own_id)
                .returning(Registration.status)
            )
            live = sum(1 for status in moved.scalars() if status in LIVE)
            if desk.phone is not None:
                await session.execute(
                    update(Resident)
                    .where(Resident.id == own_id, Resident.phone.is_(None))
                    .values(phone=desk.phone)
                )
            # The consent given at the desk is part of the person's history: it moves too,
            # rather than going with the desk record's cascade.
            await session.execute(
                update(ConsentEvent)
                .where(ConsentEvent.resident_id == desk.id)
                .values(resident_id=own_id)
            )
            await session.execute(delete(Resident).where(Resident.id == desk.id))
            return ClaimResult(ClaimOutcome.CLAIMED, registrations=live)


async def _merge_places(session: AsyncSession, desk_id: int, own_id: int, now: datetime) -> None:
    """Settle the workshops where both records hold a live place: one place is kept."""
    desk_reg = Registration.__table__.alias("desk_reg")
    own_reg = Registration.__table__.alias("own_reg")
    clashes = await session.execute(
        select(
            desk_reg.c.id.label("desk_id"),
            desk_reg.c.status.label("desk_status"),
            own_reg.c.id.label("own_id"),
            own_reg.c.status.label("own_status"),
            desk_reg.c.workshop_id,
        )
        .join(own_reg, own_reg.c.workshop_id == desk_reg.c.workshop_id)
        .where(
            desk_reg.c.resident_id == desk_id,
            own_reg.c.resident_id == own_id,
            desk_reg.c.status.in_(LIVE),
            own_reg.c.status.in_(LIVE),
        )
    )
    for clash in clashes.all():
        desk_wins = (
            clash.desk_status == RegistrationStatus.CONFIRMED
            and clash.own_status == RegistrationStatus.WAITLISTED
        )
        dropped_id = clash.own_id if desk_wins else clash.desk_id
        dropped_status = clash.own_status if desk_wins else clash.desk_status
        # The dropped place becomes history: cancelled, with no waitlist ticket.
        await session.execute(
            update(Registration)
            .where(Registration.id == dropped_id)
            .values(status=RegistrationStatus.CANCELLED, cancelled_at=now, waitlist_position=None)
        )
        if dropped_status == RegistrationStatus.CONFIRMED:
            await release_seat(session, clash.workshop_id)
            await promote_from_waitlist(session, clash.workshop_id, now)
