"""Where the playground's time travel goes: the targets read from the database, and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from offline.playground.travel import (
    NO_REMINDER_LEFT,
    NO_SEAT,
    NO_SURVEY_OPEN,
    NOBODY_CAME,
    OVER,
    REMINDER,
    STARTED,
    SURVEY_CLOSE,
    WORKSHOP_END,
    TravelPlanner,
)

from bot.clock import ManualClock, TravelClock
from bot.services.attendance import AttendanceService
from bot.services.registration import RegistrationService
from bot.services.reminders import ReminderPolicy, ReminderService
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import SurveyRun
from tests.factories import T0, new_clock, seed_place, seed_workshop
from tests.survey_helpers import survey_service

PARIS = ZoneInfo("Europe/Paris")
POLICY = ReminderPolicy((timedelta(hours=24), timedelta(hours=2)), (time(21), time(8)), PARIS)
AMINA, KARIMA, SOMEONE_ELSE = 100_001, 100_011, 555
SURVEY_DELAY, POLL_OPEN_FOR = timedelta(hours=2), timedelta(hours=48)


def planner(db: Database, clock: ManualClock) -> TravelPlanner:
    return TravelPlanner(
        db,
        clock,
        POLICY,
        telegram_ids=(AMINA, KARIMA),
        survey_delay=SURVEY_DELAY,
        digest_surveys=("post_workshop",),
    )


async def seat(db: Database, clock: ManualClock, telegram_id: int, workshop_id: int) -> None:
    await ResidentService(db, clock).give_consent(telegram_id, "Amina", "fr")
    await RegistrationService(db, clock).register(telegram_id, workshop_id)


@pytest.mark.storage
async def test_without_a_seat_only_the_steps_are_possible(db: Database) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock)
    await seat(db, clock, SOMEONE_ELSE, workshop)  # not a playground resident

    plan = await planner(db, clock).plan()

    assert plan.workshop is None
    assert {key: target.reason for key, target in plan.targets.items()} == {
        REMINDER: NO_SEAT,
        WORKSHOP_END: NO_SEAT,
        SURVEY_CLOSE: NO_SURVEY_OPEN,
    }
    assert plan.targets[SURVEY_CLOSE].reason_params == {"hours": "2"}


@pytest.mark.storage
async def test_the_soonest_seat_gives_its_reminders_then_its_end_by_way_of_its_start(
    db: Database,
) -> None:
    clock = new_clock()
    place = await seed_place(db)
    later = await seed_workshop(db, clock, place=place, starts_in=timedelta(days=6))
    sooner = await seed_workshop(db, clock, place=place, starts_in=timedelta(days=3))
    await seat(db, clock, AMINA, later)
    await seat(db, clock, KARIMA, sooner)
    starts = T0 + timedelta(days=3)  # Friday 10:00 in Paris: reminders Thursday 10:00, 08:00

    plan = await planner(db, clock).plan()

    assert plan.workshop is not None and plan.workshop.workshop_id == sooner
    assert plan.targets[REMINDER].stops == (starts - timedelta(hours=24),)
    assert plan.targets[WORKSHOP_END].stops == (starts, starts + timedelta(hours=2))

    clock.set(starts - timedelta(hours=24))  # the 24 h reminder is now: the 2 h one is next
    assert (await planner(db, clock).plan()).targets[REMINDER].at == starts - timedelta(hours=2)

    clock.set(starts - timedelta(hours=1))
    assert (await planner(db, clock).plan()).targets[REMINDER].reason == NO_REMINDER_LEFT

    clock.set(starts + timedelta(minutes=5))  # running: the end without a stop at the start
    plan = await planner(db, clock).plan()
    assert plan.targets[REMINDER].reason == STARTED
    assert plan.targets[WORKSHOP_END].stops == (starts + timedelta(hours=2),)

    clock.set(starts + timedelta(hours=2))  # over: the next seat is followed
    plan = await planner(db, clock).plan()
    assert plan.workshop is not None and plan.workshop.workshop_id == later

    clock.set(T0 + timedelta(days=6, hours=2))  # the last one over: it stays followed
    plan = await planner(db, clock).plan()
    assert plan.workshop is not None and plan.workshop.workshop_id == later
    assert plan.workshop.over
    assert plan.targets[REMINDER].reason == plan.targets[WORKSHOP_END].reason == OVER


@pytest.mark.storage
async def test_a_reminder_in_quiet_hours_is_where_the_planner_puts_it(
    db: Database,
) -> None:
    clock = new_clock()
    # 07:30 in Paris on Friday: the 24 h reminder would be at 07:30 on Thursday, in quiet
    # hours, so it goes at 20:55 on Wednesday; the 2 h one at 05:30, at 20:55 on Thursday.
    starts = datetime(2026, 12, 4, 7, 30, tzinfo=PARIS).astimezone(UTC)
    workshop = await seed_workshop(db, clock, starts_in=starts - T0)
    await seat(db, clock, AMINA, workshop)
    assert (await planner(db, clock).plan()).targets[REMINDER].at == datetime(
        2026, 12, 2, 20, 55, tzinfo=PARIS
    )


@pytest.mark.storage
async def test_a_seat_taken_after_the_first_reminder_time_gets_only_the_next(
    db: Database,
) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock)  # Friday 10:00 in Paris
    clock.set(datetime(2026, 12, 3, 12, 0, tzinfo=PARIS))  # Thursday noon, after the 24 h time
    await seat(db, clock, KARIMA, workshop)
    plan = await planner(db, clock).plan()
    assert plan.targets[REMINDER].at == datetime(2026, 12, 4, 8, 0, tzinfo=PARIS)


@pytest.mark.storage
async def test_an_open_survey_can_be_travelled_to_its_close(db: Database) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock)
    await seat(db, clock, AMINA, workshop)
    closes = T0 + timedelta(days=6)
    async with db.write() as session:
        session.add(
            SurveyRun(
                survey_key="post_workshop", workshop_id=workshop, opened_at=T0, closes_at=closes
            )
        )

    assert (await planner(db, clock).plan()).targets[SURVEY_CLOSE].stops == (closes,)

    clock.set(closes)
    assert (await planner(db, clock).plan()).targets[SURVEY_CLOSE].reason == NO_SURVEY_OPEN


@pytest.mark.storage
async def test_the_reminder_target_is_when_the_real_planner_queues_it(db: Database) -> None:
    clock = new_clock()
    place = await seed_place(db)
    sooner = await seed_workshop(db, clock, place=place, starts_in=timedelta(days=2))
    later = await seed_workshop(db, clock, place=place, starts_in=timedelta(days=5))
    await seat(db, clock, KARIMA, sooner)
    await seat(db, clock, AMINA, later)
    # Karima blocked the bot: the planner skips her seat, so the travel does too.
    await ResidentService(db, clock).set_reachable(KARIMA, False)
    reminders = ReminderService(db, clock, POLICY)

    for expected_offset in POLICY.offsets:  # 24 h, then 2 h
        target = (await planner(db, clock).plan()).targets[REMINDER]
        assert target.at is not None
        clock.set(target.at - timedelta(seconds=1))
        assert await reminders.plan_due_reminders() == 0
        clock.set(target.at)
        assert await reminders.plan_due_reminders() == 1
        assert target.at == POLICY.due_at(T0 + timedelta(days=5), expected_offset)
    assert (await planner(db, clock).plan()).targets[REMINDER].reason == NO_REMINDER_LEFT


@pytest.mark.storage
async def test_after_the_end_the_survey_target_halts_at_its_opening_then_closes_it(
    db: Database,
) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock)  # Friday 10:00-12:00 in Paris
    await seat(db, clock, AMINA, workshop)
    starts = T0 + timedelta(days=3)
    ends = starts + timedelta(hours=2)

    clock.set(ends)  # nobody checked in: no survey will open
    plan = await planner(db, clock).plan()
    assert plan.targets[SURVEY_CLOSE].reason == NOBODY_CAME
    assert plan.targets[REMINDER].reason == plan.targets[WORKSHOP_END].reason == OVER

    await AttendanceService(db, clock).check_in_by_button(AMINA, workshop)
    target = (await planner(db, clock).plan()).targets[SURVEY_CLOSE]
    opens = ends + SURVEY_DELAY
    # The journey halts where Amina must act: at the poll's opening, not past its close.
    assert target.stops == (opens,)

    # The real sweep, there, opens the survey: the next journey goes on to its close.
    clock.set(opens)
    surveys = survey_service(db, clock)
    assert (await surveys.sweep()).invited == 1
    target = (await planner(db, clock).plan()).targets[SURVEY_CLOSE]
    assert target.stops == (opens + POLL_OPEN_FOR,)
    clock.set(target.at)
    assert (await surveys.sweep()).digests == 1
    assert (await planner(db, clock).plan()).targets[SURVEY_CLOSE].reason == NO_SURVEY_OPEN


@pytest.mark.storage
async def test_the_survey_target_halts_when_the_invitation_can_go_out(db: Database) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=8))  # 18:00-20:00
    await seat(db, clock, AMINA, workshop)
    clock.set(T0 + timedelta(hours=10))
    await AttendanceService(db, clock).check_in_by_button(AMINA, workshop)
    # The poll is due at 22:00, in quiet hours: Amina gets it at 08:00, and travel stops there.
    morning = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    target = (await planner(db, clock).plan()).targets[SURVEY_CLOSE]
    assert target.stops == (morning,)
    clock.set(morning)
    surveys = survey_service(db, clock)
    assert (await surveys.sweep()).invited == 1
    target = (await planner(db, clock).plan()).targets[SURVEY_CLOSE]
    assert target.stops == (morning + POLL_OPEN_FOR,)


@pytest.mark.storage
async def test_a_survey_of_a_cancelled_seat_is_not_a_target(db: Database) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock)
    await seat(db, clock, AMINA, workshop)
    await RegistrationService(db, clock).cancel(AMINA, workshop)
    async with db.write() as session:
        session.add(
            SurveyRun(
                survey_key="post_workshop",
                workshop_id=workshop,
                opened_at=T0,
                closes_at=T0 + timedelta(days=6),
            )
        )
    assert (await planner(db, clock).plan()).targets[SURVEY_CLOSE].reason == NO_SURVEY_OPEN


def test_the_travel_clock_moves_only_forward() -> None:
    base = ManualClock(T0)
    clock = TravelClock(base)
    assert clock.now() == T0

    assert clock.travel_to(T0 + timedelta(hours=3)) == timedelta(hours=3)
    base.advance(timedelta(minutes=1))  # real time goes on under the offset
    assert clock.now() == T0 + timedelta(hours=3, minutes=1)

    assert clock.travel_to(T0) == timedelta(0)  # the past: no move
    clock.advance(timedelta(days=1))
    assert clock.offset == timedelta(days=1, hours=3)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError):
        clock.travel_to(datetime(2027, 1, 1))  # naive
