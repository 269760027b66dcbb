"""Registration rules, on the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.clock import ManualClock
from bot.services.registration import (
    CancelOutcome,
    RegisterOutcome,
    RegistrationService,
)
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import OutboxMessage, Registration, Workshop
from tests.factories import new_clock, seed_workshop

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


@pytest.fixture
def residents(db: Database, clock: ManualClock) -> ResidentService:
    return ResidentService(db, clock)


@pytest.fixture
def registrations(db: Database, clock: ManualClock) -> RegistrationService:
    return RegistrationService(db, clock)


async def consenting(residents: ResidentService, *telegram_ids: int) -> None:
    for telegram_id in telegram_ids:
        await residents.give_consent(telegram_id, f"P{telegram_id}", "fr")


async def test_register_confirms_then_waitlists_when_full(db, clock, residents, registrations):
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(residents, 1, 2, 3)
    assert (await registrations.register(1, workshop)).outcome is RegisterOutcome.CONFIRMED
    second = await registrations.register(2, workshop)
    third = await registrations.register(3, workshop)
    assert (second.outcome, second.waitlist_rank) == (RegisterOutcome.WAITLISTED, 1)
    assert (third.outcome, third.waitlist_rank) == (RegisterOutcome.WAITLISTED, 2)
    again = await registrations.register(1, workshop)
    assert again.outcome is RegisterOutcome.ALREADY_CONFIRMED
    again = await registrations.register(3, workshop)
    assert (again.outcome, again.waitlist_rank) == (RegisterOutcome.ALREADY_WAITLISTED, 2)


async def test_without_consent_nothing_is_stored(db, clock, registrations):
    workshop = await seed_workshop(db, clock)
    result = await registrations.register(99, workshop)
    assert result.outcome is RegisterOutcome.NO_CONSENT
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Registration)) == 0


async def test_cancel_promotes_first_waiting_and_queues_their_notice(
    db, clock, residents, registrations
):
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(residents, 1, 2, 3)
    for person in (1, 2, 3):
        await registrations.register(person, workshop)

    result = await registrations.cancel(1, workshop)

    assert result.outcome is CancelOutcome.CANCELLED
    promoted = await residents.profile(2)
    assert promoted is not None and result.promoted_resident_id == promoted.id
    assert [p.status for p in await registrations.my_places(2)] == ["confirmed"]
    assert [p.waitlist_rank for p in await registrations.my_places(3)] == [1]
    async with db.read() as session:
        notices = (await session.scalars(select(OutboxMessage))).all()
        seats = await session.scalar(select(Workshop.seats_taken).where(Workshop.id == workshop))
    assert [(n.resident_id, n.kind, n.payload["workshop_id"]) for n in notices] == [
        (promoted.id, "waitlist_promoted", workshop)
    ]
    assert seats == 1


async def test_leaving_the_waitlist_frees_no_seat(db, clock, residents, registrations):
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(residents, 1, 2, 3)
    for person in (1, 2, 3):
        await registrations.register(person, workshop)
    result = await registrations.cancel(2, workshop)
    assert (result.outcome, result.was_waitlisted) == (CancelOutcome.CANCELLED, True)
    assert [p.waitlist_rank for p in await registrations.my_places(3)] == [1]
    assert [p.status for p in await registrations.my_places(1)] == ["confirmed"]


async def test_cancel_then_register_again_gets_a_new_place(db, clock, residents, registrations):
    workshop = await seed_workshop(db, clock, capacity=2)
    await consenting(residents, 1)
    await registrations.register(1, workshop)
    await registrations.cancel(1, workshop)
    assert (await registrations.cancel(1, workshop)).outcome is CancelOutcome.NOT_REGISTERED
    assert (await registrations.register(1, workshop)).outcome is RegisterOutcome.CONFIRMED


async def test_closed_workshops_refuse_registration_and_cancellation(
    db, clock, residents, registrations
):
    cancelled = await seed_workshop(db, clock, status="cancelled")
    soon = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await consenting(residents, 1)
    assert (await registrations.register(1, cancelled)).outcome is RegisterOutcome.CLOSED
    assert (await registrations.register(1, soon)).outcome is RegisterOutcome.CONFIRMED
    assert (await registrations.register(1, 123456)).outcome is RegisterOutcome.UNKNOWN
    clock.advance(timedelta(hours=2))
    assert (await registrations.cancel(1, soon)).outcome is CancelOutcome.STARTED
    assert (await registrations.register(1, soon)).outcome is RegisterOutcome.CLOSED


async def test_schema_refuses_overselling_and_double_registration(db, clock, residents):
    workshop = await seed_workshop(db, clock, capacity=1, seats_taken=1)
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await session.execute(
                update(Workshop).where(Workshop.id == workshop).values(seats_taken=2)
            )
    profile = await residents.give_consent(7, "Sam", "fr")
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            for _ in range(2):
                session.add(
                    Registration(
                        workshop_id=workshop,
                        resident_id=profile.id,
                        status="confirmed",
                        created_at=clock.now(),
                    )
                )
            await session.flush()


# --- Concurrency: the last seats, taken by many people at once -------------------------------

PEOPLE = 50
LAST_SEATS = 5


async def last_seats_scenario(db, clock, residents, register) -> tuple[int, list[int]]:
    """50 people tap "register" at once for the last 5 seats; returns what the database holds."""
    workshop = await seed_workshop(db, clock, capacity=12, seats_taken=12 - LAST_SEATS)
    people = range(10_000, 10_000 + PEOPLE)
    await consenting(residents, *people)
    await asyncio.gather(*(register(person, workshop) for person in people))
    async with db.read() as session:
        confirmed = await session.scalar(
            select(func.count()).where(
                Registration.workshop_id == workshop, Registration.status == "confirmed"
            )
        )
        positions = list(
            await session.scalars(
                select(Registration.waitlist_position).where(
                    Registration.workshop_id == workshop, Registration.status == "waitlisted"
                )
            )
        )
    return confirmed or 0, positions


@pytest.mark.parametrize("round_", range(8))
async def test_last_seats_go_to_exactly_five_people(db, clock, residents, registrations, round_):
    results: list[RegisterOutcome] = []

    async def register(person: int, workshop: int) -> None:
        results.append((await registrations.register(person, workshop)).outcome)

    confirmed, positions = await last_seats_scenario(db, clock, residents, register)
    assert confirmed == LAST_SEATS
    assert results.count(RegisterOutcome.CONFIRMED) == LAST_SEATS
    assert results.count(RegisterOutcome.WAITLISTED) == PEOPLE - LAST_SEATS
    assert sorted(positions) == list(range(1, PEOPLE - LAST_SEATS + 1))


async def test_control_the_scenario_catches_the_race_without_the_guard(db, clock, residents):
    """With check-then-act instead of the conditional update, the same scenario oversells."""

    async def naive_register(person: int, workshop: int) -> None:
        resident_id = (await residents.profile(person)).id
        async with db.read() as session:
            capacity, taken = (
                await session.execute(
                    select(Workshop.capacity, Workshop.seats_taken).where(Workshop.id == workshop)
                )
            ).one()
        await asyncio.sleep(0.005)  # the window a real request has between check and write
        async with db.write() as session:
            if taken < capacity:
                await session.execute(
                    update(Workshop)
                    .where(Workshop.id == workshop)
                    .values(seats_taken=Workshop.seats_taken)  # no guard, no count
                )
                session.add(
                    Registration(
                        workshop_id=workshop,
                        resident_id=resident_id,
                        status="confirmed",
                        created_at=clock.now(),
                    )
                )

    confirmed, _ = await last_seats_scenario(db, clock, residents, naive_register)
    assert confirmed > LAST_SEATS, "the scenario must expose a race when the guard is removed"
