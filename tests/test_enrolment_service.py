"""Desk enrolment and claiming by code, straight on the service (both backends)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.services.enrolment import (
    CLAIM_CODE_LENGTH,
    ClaimOutcome,
    EnrolmentService,
    EnrolOutcome,
    normalise_phone,
)
from bot.services.registration import PROMOTION_NOTICE, RegistrationService, seat_or_waitlist
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import CHECKIN_ALPHABET, ConsentEvent, Registration, Resident
from tests.factories import new_clock, seed_workshop
from tests.workshop_admin_helpers import (
    MEDIATOR,
    outbox_of,
    places,
    sign_up,
    telegram_ids_of,
    workshop_row,
)

pytestmark = pytest.mark.storage


def test_phone_numbers_are_normalised_loosely() -> None:
    assert normalise_phone("06 12 34 56 78") == "+33612345678"
    assert normalise_phone("06.12.34.56.78") == "+33612345678"
    assert normalise_phone("+33 6 12 34 56 78") == "+33612345678"
    assert normalise_phone("0033612345678") == "+33612345678"
    assert normalise_phone("12345") is None
    assert normalise_phone("00 12 34 56 78") is None


async def desk_residents(db: Database) -> int:
    async with db.read() as session:
        return await session.scalar(
            select(func.count()).select_from(Resident).where(Resident.telegram_id.is_(None))
        )


async def test_desk_enrolment_takes_a_seat_then_the_waitlist(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=1)
    service = EnrolmentService(db, clock)

    seated = await service.enrol(MEDIATOR, "Yvette", "+33612345678", workshop_id)
    waiting = await service.enrol(MEDIATOR, "Karim", None, workshop_id)

    assert seated.outcome is EnrolOutcome.CONFIRMED
    assert waiting.outcome is EnrolOutcome.WAITLISTED and waiting.waitlist_rank == 1
    for code in (seated.claim_code, waiting.claim_code):
        assert code is not None and len(code) == CLAIM_CODE_LENGTH
        assert set(code) <= set(CHECKIN_ALPHABET)
    assert seated.claim_code != waiting.claim_code
    assert (await workshop_row(db, workshop_id)).seats_taken == 1
    async with db.read() as session:
        yvette = await session.scalar(select(Resident).where(Resident.first_name == "Yvette"))
    assert yvette is not None and yvette.telegram_id is None
    assert yvette.enrolled_by == MEDIATOR and yvette.consented_at == clock.now()
    assert yvette.phone == "+33612345678"


async def test_no_desk_enrolment_in_a_closed_workshop(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, status="cancelled")
    result = await EnrolmentService(db, clock).enrol(MEDIATOR, "Yvette", None, workshop_id)
    assert result.outcome is EnrolOutcome.CLOSED
    assert await desk_residents(db) == 0


async def test_a_claim_moves_the_record_once(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock)
    service = EnrolmentService(db, clock)
    enrolled = await service.enrol(MEDIATOR, "Yvette", "+33612345678", workshop_id)
    assert enrolled.claim_code is not None
    await ResidentService(db, clock).give_consent(501, "Yvette", "fr")

    wrong = await service.claim(501, "ZZZZ2222")
    claimed = await service.claim(501, enrolled.claim_code.lower())
    again = await service.claim(501, enrolled.claim_code)

    assert wrong.outcome is ClaimOutcome.INVALID
    assert claimed.outcome is ClaimOutcome.CLAIMED and claimed.registrations == 1
    assert again.outcome is ClaimOutcome.INVALID
    assert await places(db, workshop_id) == {501: "confirmed"}
    assert await desk_residents(db) == 0
    async with db.read() as session:
        yvette = await session.scalar(select(Resident).where(Resident.telegram_id == 501))
    assert yvette is not None and yvette.phone == "+33612345678"
    assert [p.workshop_id for p in await RegistrationService(db, clock).my_places(501)] == [
        workshop_id
    ]


async def test_a_claim_needs_consent(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock)
    service = EnrolmentService(db, clock)
    enrolled = await service.enrol(MEDIATOR, "Yvette", None, workshop_id)
    assert enrolled.claim_code is not None
    assert (await service.claim(777, enrolled.claim_code)).outcome is ClaimOutcome.NO_CONSENT
    assert await desk_residents(db) == 1  # the code is still valid


async def test_a_claim_merges_into_an_existing_record(db: Database) -> None:
    """Same workshop in both records: the better place is kept, a freed seat is passed on."""
    clock = new_clock()
    both_seated = await seed_workshop(db, clock, capacity=2, title="Les deux assis")
    desk_seated = await seed_workshop(db, clock, capacity=1, title="Guichet assis")
    only_desk = await seed_workshop(db, clock, title="Seulement au guichet")
    service = EnrolmentService(db, clock)
    # Léa (601) signed up herself and was also enrolled at the desk: both hold a seat.
    await sign_up(db, clock, 601, both_seated)
    desk = await service.enrol(MEDIATOR, "Léa", None, both_seated)
    assert desk.claim_code is not None
    await sign_up(db, clock, 602, both_seated)  # waits for a seat
    # The desk record also holds the only seat of a second workshop and a third workshop.
    async with db.write() as session:
        desk_id = await session.scalar(select(Resident.id).where(Resident.first_name == "Léa"))
        assert desk_id is not None
        await seat_or_waitlist(session, desk_seated, desk_id, clock.now())
        await seat_or_waitlist(session, only_desk, desk_id, clock.now())
    await sign_up(db, clock, 601, desk_seated)  # full: her own record waits there
    clock.advance(timedelta(minutes=1))

    result = await service.claim(601, desk.claim_code)

    assert result.outcome is ClaimOutcome.CLAIMED
    # Both seated: her own seat stays, the desk seat goes to 602, who is told.
    assert await places(db, both_seated) == {601: "confirmed", 602: "confirmed"}
    notices = await outbox_of(db, PROMOTION_NOTICE)
    assert await telegram_ids_of(db, [n.resident_id for n in notices]) == {602}
    # A desk seat beats her own waitlist place, which becomes history.
    async with db.read() as session:
        mine = (
            await session.execute(
                select(Registration.workshop_id, Registration.status)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(Resident.telegram_id == 601)
            )
        ).all()
    assert sorted(mine) == sorted(
        [
            (both_seated, "confirmed"),
            (both_seated, "cancelled"),  # the desk seat given up
            (desk_seated, "confirmed"),
            (desk_seated, "cancelled"),  # her own waitlist place
            (only_desk, "confirmed"),
        ]
    )
    assert (await workshop_row(db, desk_seated)).seats_taken == 1
    assert (await workshop_row(db, both_seated)).seats_taken == 2
    assert await desk_residents(db) == 0


async def test_a_claim_keeps_the_consent_given_at_the_desk(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock)
    service = EnrolmentService(db, clock)
    enrolled = await service.enrol(MEDIATOR, "Yvette", "+33612345678", workshop_id)
    assert enrolled.claim_code is not None
    desk_consent_at = clock.now()
    clock.advance(timedelta(days=1))
    await ResidentService(db, clock).give_consent(501, "Yvette", "fr")

    assert (await service.claim(501, enrolled.claim_code)).outcome is ClaimOutcome.CLAIMED

    async with db.read() as session:
        yvette = await session.scalar(select(Resident.id).where(Resident.telegram_id == 501))
        events = (
            await session.execute(
                select(ConsentEvent.resident_id, ConsentEvent.kind, ConsentEvent.at).order_by(
                    ConsentEvent.at
                )
            )
        ).all()
    assert [(e.resident_id, e.kind) for e in events] == [(yvette, "given"), (yvette, "given")]
    assert events[0].at == desk_consent_at
