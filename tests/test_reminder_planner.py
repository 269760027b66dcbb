"""The reminder sweep against a real database, driven by a manual clock.

The sweep is run as the JobQueue would run it (every few minutes of simulated time), and the
outbox tells what was queued, when, and what was recorded as never to be sent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.clock import ManualClock
from bot.services.registration import RegistrationService
from bot.services.reminders import ReminderService
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import OutboxMessage, Registration, Workshop
from tests.factories import new_clock, seed_place
from tests.reminder_helpers import (
    move_workshop,
    paris,
    queued,
    registration_id,
    reminder_service,
    take_seat,
    workshop_at,
)

pytestmark = pytest.mark.storage

H = timedelta(hours=1)
THURSDAY_2PM = paris(2026, 12, 3, 14, 0)  # the clock starts on Tuesday 1 December, 10:00


async def sweep_until(
    planner: ReminderService, clock: ManualClock, until: datetime, step: timedelta
) -> dict[datetime, int]:
    """Run the sweep every `step` up to `until`; returns when it queued something, and how much."""
    queued_at: dict[datetime, int] = {}
    while clock.now() < until:
        clock.advance(step)
        count = await planner.plan_due_reminders()
        if count:
            queued_at[clock.now()] = count
    return queued_at


async def test_each_reminder_is_queued_once_at_its_time_and_not_after_cancelling(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM)
    for person in (1, 2):
        assert await take_seat(db, clock, person, workshop) == "confirmed"

    first = await sweep_until(planner, clock, paris(2026, 12, 2, 18, 0), 10 * timedelta(minutes=1))
    assert first == {paris(2026, 12, 2, 14, 0): 2}
    # Person 2 cancels before their reminder was delivered: it will be dropped at send time.
    await RegistrationService(db, clock).cancel(2, workshop)
    cancelled = await registration_id(db, 2, workshop)
    kept = await registration_id(db, 1, workshop)
    assert await planner.visit_for_reminder(cancelled, THURSDAY_2PM) is None
    visit = await planner.visit_for_reminder(kept, THURSDAY_2PM)
    assert visit is not None and visit.starts_at == THURSDAY_2PM

    second = await sweep_until(planner, clock, THURSDAY_2PM + H, 10 * timedelta(minutes=1))
    assert second == {paris(2026, 12, 3, 12, 0): 1}
    rows = await queued(db)
    assert [(r.telegram_id, r.offset_minutes, r.not_before) for r in rows] == [
        (1, 24 * 60, paris(2026, 12, 2, 14, 0)),
        (2, 24 * 60, paris(2026, 12, 2, 14, 0)),
        (1, 2 * 60, paris(2026, 12, 3, 12, 0)),
    ]
    # Once started, the reminders of the workshop are pointless.
    assert await planner.visit_for_reminder(kept, THURSDAY_2PM) is None


async def test_reminders_follow_a_change_of_time(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM)
    await take_seat(db, clock, 1, workshop)
    await sweep_until(planner, clock, paris(2026, 12, 2, 15, 0), 30 * timedelta(minutes=1))
    assert len(await queued(db)) == 1

    await move_workshop(db, clock, workshop, 24 * H)  # now on Friday at 14:00
    friday = THURSDAY_2PM + 24 * H
    mine = await registration_id(db, 1, workshop)
    assert await planner.visit_for_reminder(mine, THURSDAY_2PM) is None  # the old one: dropped
    moved = await sweep_until(planner, clock, friday, 30 * timedelta(minutes=1))
    assert moved == {THURSDAY_2PM: 1, paris(2026, 12, 4, 12, 0): 1}
    rows = await queued(db)
    assert [(r.offset_minutes, r.starts_at) for r in rows] == [
        (24 * 60, THURSDAY_2PM.isoformat()),
        (24 * 60, friday.isoformat()),
        (2 * 60, friday.isoformat()),
    ]


async def test_a_reminder_due_at_night_goes_out_at_8_55_pm_the_evening_before(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    nine_am = paris(2026, 12, 3, 9, 0)  # its 2 h reminder would wake people at 07:00
    workshop = await workshop_at(db, clock, nine_am)
    await take_seat(db, clock, 1, workshop)
    clock.set(paris(2026, 12, 2, 8, 0))
    timeline = await sweep_until(planner, clock, nine_am, 5 * timedelta(minutes=1))
    assert timeline == {paris(2026, 12, 2, 9, 0): 1, paris(2026, 12, 2, 20, 55): 1}
    assert [r.not_before for r in await queued(db)] == list(timeline)


async def test_someone_who_registers_3_hours_before_gets_only_the_2_hour_reminder(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM)
    clock.set(THURSDAY_2PM - 3 * H)
    await take_seat(db, clock, 1, workshop)
    timeline = await sweep_until(planner, clock, THURSDAY_2PM, 10 * timedelta(minutes=1))
    assert timeline == {paris(2026, 12, 3, 12, 0): 1}
    assert [r.offset_minutes for r in await queued(db)] == [120]


async def test_after_downtime_only_the_most_recent_overdue_reminder_is_sent(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM)
    await take_seat(db, clock, 1, workshop)
    clock.set(THURSDAY_2PM - 90 * timedelta(minutes=1))  # the bot was down since Tuesday
    assert await planner.plan_due_reminders() == 1
    assert await planner.plan_due_reminders() == 0
    rows = {r.offset_minutes: (r.status, r.not_before) for r in await queued(db)}
    assert rows == {120: ("pending", clock.now()), 1440: ("dropped", clock.now())}


async def test_a_reminder_overdue_at_night_waits_for_the_morning(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM)
    await take_seat(db, clock, 1, workshop)
    clock.set(paris(2026, 12, 2, 23, 30))  # down from Wednesday noon to 23:30
    assert await planner.plan_due_reminders() == 1
    [row] = await queued(db)
    assert (row.offset_minutes, row.status, row.not_before) == (
        1440,
        "pending",
        paris(2026, 12, 3, 8, 0),
    )


async def test_a_person_promoted_late_gets_one_reminder_at_once(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    place = await seed_place(db)
    evening = await workshop_at(db, clock, THURSDAY_2PM, capacity=1, place=place)
    last_minute = await workshop_at(db, clock, THURSDAY_2PM + 2 * H, capacity=1, place=place)
    for workshop in (evening, last_minute):
        assert await take_seat(db, clock, 1, workshop) == "confirmed"
        assert await take_seat(db, clock, 2, workshop) == "waitlisted"
    registrations = RegistrationService(db, clock)

    async def plan_at(moment: datetime) -> int:
        clock.set(moment)
        return await planner.plan_due_reminders()

    assert await plan_at(paris(2026, 12, 2, 14, 0)) == 1  # person 1, 24 h before each
    assert await plan_at(paris(2026, 12, 2, 16, 0)) == 1
    # Promoted on Wednesday evening, 18 hours before: the missed 24 h reminder comes at once,
    # the 2 h reminder at its time.
    clock.set(paris(2026, 12, 2, 20, 0))
    assert (await registrations.cancel(1, evening)).promoted_resident_id is not None
    assert await plan_at(paris(2026, 12, 2, 20, 0)) == 1
    assert await plan_at(paris(2026, 12, 3, 12, 0)) == 1
    assert await plan_at(paris(2026, 12, 3, 14, 0)) == 1  # person 1's 2 h reminder
    # Promoted 1 hour before, after both reminder times: one reminder, at once.
    clock.set(paris(2026, 12, 3, 15, 0))
    assert (await registrations.cancel(1, last_minute)).promoted_resident_id is not None
    assert await plan_at(paris(2026, 12, 3, 15, 0)) == 1
    assert await plan_at(paris(2026, 12, 3, 15, 1)) == 0

    promoted = [
        (r.starts_at, r.offset_minutes, r.status, r.not_before)
        for r in await queued(db)
        if r.telegram_id == 2
    ]
    evening_at, last_minute_at = THURSDAY_2PM.isoformat(), (THURSDAY_2PM + 2 * H).isoformat()
    # Nothing is delivered in this test: the catch-up still pending when the 2 h reminder
    # is queued is dropped then (it would duplicate it).
    assert sorted(promoted) == [
        (evening_at, 120, "pending", paris(2026, 12, 3, 12, 0)),
        (evening_at, 1440, "dropped", paris(2026, 12, 2, 20, 0)),
        (last_minute_at, 120, "pending", paris(2026, 12, 3, 15, 0)),
        (last_minute_at, 1440, "dropped", paris(2026, 12, 3, 15, 0)),
    ]


async def test_two_planners_on_two_engines_queue_each_reminder_once(db: Database, database_url):
    clock = new_clock()
    place = await seed_place(db)
    workshops = [
        await workshop_at(db, clock, THURSDAY_2PM + n * H, place=place, capacity=20)
        for n in range(3)
    ]
    for person in range(40):
        await take_seat(db, clock, 100 + person, workshops[person % 3])
    other_engine = Database(database_url)  # as a second running instance would have
    planners = [reminder_service(db, clock), reminder_service(other_engine, clock)]
    try:
        clock.set(THURSDAY_2PM - 21 * H)  # the 24 h reminders of all three workshops are due
        first = await asyncio.gather(*(p.plan_due_reminders() for p in planners * 3))
        clock.set(THURSDAY_2PM - H / 2)  # the 2 h reminders of the first two are due
        second = await asyncio.gather(*(p.plan_due_reminders() for p in planners * 3))
    finally:
        await other_engine.dispose()
    assert (sum(first), sum(second)) == (40, 14 + 13)
    rows = await queued(db)
    assert len(rows) == 40 + 27 and {r.status for r in rows if r.offset_minutes == 120} == {
        "pending"
    }
    # Not delivered in this test, the 24 h reminders of those who got a 2 h one are dropped.
    assert sum(r.status == "dropped" for r in rows) == 27
    assert len({(r.telegram_id, r.offset_minutes, r.starts_at) for r in rows}) == len(rows)


async def test_inactive_people_and_cancelled_workshops_get_no_reminder(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    place = await seed_place(db)
    workshop = await workshop_at(db, clock, THURSDAY_2PM, place=place)
    await take_seat(db, clock, 1, workshop)
    await take_seat(db, clock, 2, workshop)
    residents = ResidentService(db, clock)
    blocked = await residents.profile(2)
    assert blocked is not None
    await residents.mark_unreachable(blocked.id)
    called_off = await workshop_at(db, clock, THURSDAY_2PM, place=place)
    await take_seat(db, clock, 1, called_off)
    async with db.write() as session:
        await session.execute(
            update(Workshop).where(Workshop.id == called_off).values(status="cancelled")
        )
    clock.set(THURSDAY_2PM - 23 * H)
    assert await planner.plan_due_reminders() == 1
    assert [(r.telegram_id, r.starts_at) for r in await queued(db)] == [
        (1, THURSDAY_2PM.isoformat())
    ]
    async with db.read() as session:
        reminded = await session.scalar(select(OutboxMessage.payload["workshop_id"].as_integer()))
    assert reminded == workshop


async def test_im_coming_is_recorded_once_and_only_for_a_seat_holder(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, THURSDAY_2PM, capacity=1)
    await take_seat(db, clock, 1, workshop)
    await take_seat(db, clock, 2, workshop)  # waitlisted
    first = await planner.confirm_coming(1, workshop)
    assert first is not None and first.workshop_id == workshop
    answered_at = clock.now()
    clock.advance(H)
    assert await planner.confirm_coming(1, workshop) is not None
    assert await planner.confirm_coming(2, workshop) is None
    assert await planner.confirm_coming(3, workshop) is None  # not even a resident
    async with db.read() as session:
        coming = dict(
            (await session.execute(select(Registration.id, Registration.coming_confirmed_at))).all()
        )
    assert coming == {first.registration_id: answered_at, first.registration_id + 1: None}


async def test_a_catch_up_waiting_for_the_morning_gives_way_to_the_next_reminder(db: Database):
    """Review finding 3: Thursday 10:00, one seat; the holder cancels on Wednesday at 23:00.
    The promoted person's missed 24 h reminder waits for 08:00, when the 2 h reminder is
    due too: only the 2 h one is sent."""
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, paris(2026, 12, 3, 10, 0), capacity=1)
    assert await take_seat(db, clock, 1, workshop) == "confirmed"
    assert await take_seat(db, clock, 2, workshop) == "waitlisted"
    clock.set(paris(2026, 12, 2, 23, 0))
    assert (await RegistrationService(db, clock).cancel(1, workshop)).promoted_resident_id
    await sweep_until(planner, clock, paris(2026, 12, 3, 9, 0), timedelta(minutes=15))
    promoted = [(r.offset_minutes, r.status, r.not_before) for r in await queued(db)]
    assert sorted(p for p in promoted if p[1] == "pending") == [
        (120, "pending", paris(2026, 12, 3, 8, 0))
    ]
    assert (1440, "dropped", paris(2026, 12, 3, 8, 0)) in promoted


async def test_a_seat_taken_after_the_reminder_moved_before_quiet_hours(db: Database):
    """Review finding 4: a seat taken at 21:30 for 09:00 the next day. The 2 h reminder (07:00,
    quiet) would move to 20:55 the evening before, earlier than the seat: it goes at 08:00."""
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, paris(2026, 12, 2, 9, 0))
    clock.set(paris(2026, 12, 1, 21, 30))
    assert await take_seat(db, clock, 1, workshop) == "confirmed"
    queued_at = await sweep_until(planner, clock, paris(2026, 12, 2, 9, 0), timedelta(minutes=5))
    assert list(queued_at.values()) == [1]
    assert [(r.offset_minutes, r.status, r.not_before) for r in await queued(db)] == [
        (120, "pending", paris(2026, 12, 2, 8, 0))
    ]


async def test_a_seat_taken_just_before_quiet_hours_gets_its_reminder_at_once(db: Database):
    clock = new_clock()
    planner = reminder_service(db, clock)
    workshop = await workshop_at(db, clock, paris(2026, 12, 2, 9, 0))
    clock.set(paris(2026, 12, 1, 20, 57))  # after 20:55, still outside quiet hours
    assert await take_seat(db, clock, 1, workshop) == "confirmed"
    clock.advance(timedelta(minutes=1))
    assert await planner.plan_due_reminders() == 1
    assert [(r.offset_minutes, r.not_before) for r in await queued(db)] == [(120, clock.now())]
