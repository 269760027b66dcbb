"""Workshop management rules, straight on the service (both backends, manual clock)."""

from __future__ import annotations

from datetime import UTC, date, time, timedelta

import pytest

from bot.services.registration import PROMOTION_NOTICE, RegisterOutcome, RegistrationService
from bot.services.staff import StaffService
from bot.services.workshops.admin import (
    CHANGE_NOTICE,
    Draft,
    EditOutcome,
    WorkshopAdmin,
    parse_capacity,
    parse_clock_time,
    parse_day,
    parse_duration,
)
from storage.db import Database
from tests.factories import new_clock, seed_place, seed_workshop
from tests.workshop_admin_helpers import (
    FACILITATOR,
    MEDIATOR,
    outbox_of,
    places,
    sign_up,
    telegram_ids_of,
    workshop_row,
)

pytestmark = pytest.mark.storage


def test_typed_answers_are_read_loosely_and_refused_when_wrong() -> None:
    assert parse_day("15/12/2026") == date(2026, 12, 15)
    assert parse_day("1-2-27") == date(2027, 2, 1)
    assert parse_day("31/02/2026") is None
    assert parse_day("demain") is None
    assert parse_clock_time("14:30") == time(14, 30)
    assert parse_clock_time("9h") == time(9, 0)
    assert parse_clock_time("25:00") is None
    assert parse_duration("90") == 90
    assert parse_duration("1h30") == 90
    assert parse_duration("2h") == 120
    assert parse_duration("5") is None  # under 15 minutes
    assert parse_duration("12h") is None
    assert parse_capacity("12") == 12
    assert parse_capacity("0") is None
    assert parse_capacity("501") is None
    assert parse_capacity("douze") is None


async def test_create_sets_the_facilitator_and_refuses_the_past(db: Database) -> None:
    clock = new_clock()
    _, venue_id, theme_id = await seed_place(db)
    await StaffService(db, clock).seed((("facilitator", FACILITATOR),))
    admin = WorkshopAdmin(db, clock)
    draft = Draft(
        "Mon premier courriel", theme_id, venue_id, clock.now() + timedelta(days=2), 90, 8
    )

    by_facilitator = await admin.create(draft, FACILITATOR)
    by_mediator = await admin.create(draft, MEDIATOR)
    past = await admin.create(
        Draft("Trop tard", theme_id, venue_id, clock.now() - timedelta(hours=1), 60, 8), MEDIATOR
    )

    assert past is None
    assert by_facilitator is not None and by_mediator is not None
    first, second = await workshop_row(db, by_facilitator), await workshop_row(db, by_mediator)
    assert first.facilitator_id == FACILITATOR and second.facilitator_id is None
    assert first.status == "scheduled" and first.capacity == 8 and first.seats_taken == 0
    assert first.ends_at - first.starts_at == timedelta(minutes=90)
    assert set(first.title.values()) == {"Mon premier courriel"}
    assert first.key != second.key and first.key.startswith("chat-")
    assert len(first.checkin_code) == 5


async def test_capacity_below_the_confirmed_seats_is_refused(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=3)
    for person in (1, 2, 3):
        assert await sign_up(db, clock, person, workshop_id) is RegisterOutcome.CONFIRMED

    result = await WorkshopAdmin(db, clock).change_capacity(workshop_id, 2)

    assert result.outcome is EditOutcome.BELOW_CONFIRMED and result.confirmed == 3
    workshop = await workshop_row(db, workshop_id)
    assert (workshop.capacity, workshop.seats_taken) == (3, 3)
    assert await outbox_of(db, CHANGE_NOTICE) == []


async def test_raising_the_capacity_promotes_the_first_people_waiting(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=1)
    for person in (1, 2, 3, 4):
        await sign_up(db, clock, person, workshop_id)
        clock.advance(timedelta(minutes=1))
    await RegistrationService(db, clock).cancel(2, workshop_id)  # leaves the waitlist

    result = await WorkshopAdmin(db, clock).change_capacity(workshop_id, 3)

    assert result.outcome is EditOutcome.DONE and result.promoted == 2
    assert await places(db, workshop_id) == {
        1: "confirmed",
        2: "cancelled",
        3: "confirmed",
        4: "confirmed",
    }
    notices = await outbox_of(db, PROMOTION_NOTICE)
    assert await telegram_ids_of(db, [n.resident_id for n in notices]) == {3, 4}
    assert (await workshop_row(db, workshop_id)).seats_taken == 3


async def test_a_move_notifies_the_registered_and_waiting_once(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=2)
    for person in (1, 2, 3, 4):
        await sign_up(db, clock, person, workshop_id)
    await RegistrationService(db, clock).cancel(1, workshop_id)  # 3 takes the seat
    admin = WorkshopAdmin(db, clock)
    new_start = clock.now() + timedelta(days=5)

    first = await admin.move(workshop_id, new_start)
    again = await admin.move(workshop_id, new_start)

    assert first.outcome is EditOutcome.DONE and first.notified == 3
    assert again.outcome is EditOutcome.UNCHANGED
    notices = await outbox_of(db, CHANGE_NOTICE)
    assert len(notices) == 3
    assert await telegram_ids_of(db, [n.resident_id for n in notices]) == {2, 3, 4}
    workshop = await workshop_row(db, workshop_id)
    assert workshop.starts_at == new_start
    assert workshop.ends_at - workshop.starts_at == timedelta(hours=2)
    assert (await admin.move(workshop_id, clock.now() - timedelta(days=1))).outcome is (
        EditOutcome.IN_THE_PAST
    )


async def test_cancelling_keeps_the_registrations_and_tells_everyone(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=1)
    for person in (1, 2):
        await sign_up(db, clock, person, workshop_id)
    admin = WorkshopAdmin(db, clock)

    result = await admin.cancel(workshop_id)
    twice = await admin.cancel(workshop_id)

    assert result.outcome is EditOutcome.DONE and result.notified == 2
    assert twice.outcome is EditOutcome.CLOSED
    assert await places(db, workshop_id) == {1: "confirmed", 2: "waitlisted"}
    assert (await workshop_row(db, workshop_id)).status == "cancelled"
    assert [n.payload["change"] for n in await outbox_of(db, CHANGE_NOTICE)] == [
        "cancelled",
        "cancelled",
    ]
    assert (await admin.change_capacity(workshop_id, 5)).outcome is EditOutcome.CLOSED


async def test_a_venue_change_is_told_each_time(db: Database) -> None:
    clock = new_clock()
    place = await seed_place(db)
    _, other_venue, _ = await seed_place(db, area="Tarentaize")
    workshop_id = await seed_workshop(db, clock, place=place)
    await sign_up(db, clock, 1, workshop_id)
    admin = WorkshopAdmin(db, clock)

    moved = await admin.change_venue(workshop_id, other_venue)
    same = await admin.change_venue(workshop_id, other_venue)
    clock.advance(timedelta(minutes=5))
    back = await admin.change_venue(workshop_id, place[1])

    assert (moved.outcome, same.outcome, back.outcome) == (
        EditOutcome.DONE,
        EditOutcome.UNCHANGED,
        EditOutcome.DONE,
    )
    assert len(await outbox_of(db, CHANGE_NOTICE)) == 2


async def test_a_move_back_and_forth_is_told_each_time(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock)
    await sign_up(db, clock, 1, workshop_id)
    admin = WorkshopAdmin(db, clock)
    first_start = (await workshop_row(db, workshop_id)).starts_at
    later = first_start + timedelta(hours=1)

    results = []
    for start in (later, first_start, later):
        clock.advance(timedelta(minutes=5))
        results.append(await admin.move(workshop_id, start))

    assert [(r.outcome, r.notified) for r in results] == [(EditOutcome.DONE, 1)] * 3
    notices = await outbox_of(db, CHANGE_NOTICE)
    assert len(notices) == 3
    assert len({n.dedupe_key for n in notices}) == 3
    assert notices[-1].payload["stamp"].startswith(f"{later.astimezone(UTC):%Y%m%d%H%M}")
