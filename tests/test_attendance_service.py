"""Attendance rules against a real database: codes, the check-in window, prompts, roll call."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.services.attendance import (
    ROLL_LIST_LIMIT,
    AttendanceService,
    CheckInOutcome,
    normalize_code,
)
from storage.db import Database
from storage.models import Registration, Workshop
from tests.factories import new_clock, seed_place
from tests.reminder_helpers import paris, queued, registration_id, take_seat, workshop_at

pytestmark = pytest.mark.storage

H = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
START = paris(2026, 12, 3, 14, 0)  # ends at 16:00; check-in from 13:30 to 17:00


async def code_of(db: Database, workshop_id: int) -> str:
    async with db.read() as session:
        code = await session.scalar(select(Workshop.checkin_code).where(Workshop.id == workshop_id))
    assert code is not None
    return code


async def attendance_of(db: Database, workshop_id: int) -> dict[int, tuple]:
    async with db.read() as session:
        rows = await session.execute(
            select(
                Registration.id,
                Registration.attended_at,
                Registration.attendance_source,
                Registration.attendance_marked_by,
            ).where(Registration.workshop_id == workshop_id)
        )
        return {r.id: (r.attended_at, r.attendance_source, r.attendance_marked_by) for r in rows}


def test_codes_are_read_without_case_spaces_or_dashes() -> None:
    assert normalize_code(" k7m 2q ") == "K7M2Q"
    assert normalize_code("K7M-2Q") == "K7M2Q"
    assert normalize_code("k7m\t2q") == "K7M2Q"
    for absurd in ("", "   ", "🙂🙂", "K7M2Q!", "' OR 1=1 --", "x" * 13, "éèà"):
        assert normalize_code(absurd) is None, absurd


async def test_check_in_by_code_within_the_window_only(db: Database):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    workshop = await workshop_at(db, clock, START)
    await take_seat(db, clock, 1, workshop)
    code = await code_of(db, workshop)
    typed = f"{code[:2].lower()} {code[2:].lower()}"

    clock.set(START - 31 * MINUTE)
    too_early = await attendance.check_in_by_code(1, typed)
    assert too_early.outcome is CheckInOutcome.NOT_OPEN_YET
    assert too_early.opens_at == START - 30 * MINUTE
    clock.set(START - 30 * MINUTE)
    assert (await attendance.check_in_by_code(1, typed)).outcome is CheckInOutcome.CHECKED_IN
    assert (await attendance.check_in_by_code(1, code)).outcome is CheckInOutcome.ALREADY
    [(attended_at, source, marked_by)] = (await attendance_of(db, workshop)).values()
    assert (attended_at, source, marked_by) == (START - 30 * MINUTE, "code", None)

    late = await workshop_at(db, clock, START + 3 * H)
    await take_seat(db, clock, 1, late)
    clock.set(START + 3 * H + 2 * H + H + MINUTE)  # one minute after it closed
    closed = await attendance.check_in_by_code(1, await code_of(db, late))
    assert closed.outcome is CheckInOutcome.CLOSED and closed.title is not None


async def test_wrong_codes_strangers_and_the_waitlist(db: Database):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    workshop = await workshop_at(db, clock, START, capacity=1)
    await take_seat(db, clock, 1, workshop)
    await take_seat(db, clock, 2, workshop)  # waitlisted
    code = await code_of(db, workshop)
    clock.set(START)
    assert (await attendance.check_in_by_code(1, "ZZZZZ")).outcome is CheckInOutcome.UNKNOWN_CODE
    assert (await attendance.check_in_by_code(1, "no way!")).outcome is CheckInOutcome.INVALID
    waiting = await attendance.check_in_by_code(2, code)
    assert waiting.outcome is CheckInOutcome.NOT_REGISTERED
    assert waiting.title is not None and "démarches" in waiting.title["fr"]
    stranger = await attendance.check_in_by_code(999, code)  # never used the bot
    assert stranger.outcome is CheckInOutcome.NOT_REGISTERED
    assert (await attendance.check_in_by_button(2, workshop)).outcome is (
        CheckInOutcome.NOT_REGISTERED
    )
    assert all(row[0] is None for row in (await attendance_of(db, workshop)).values())


async def test_a_code_and_a_button_at_the_same_moment_record_one_attendance(db: Database):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    workshop = await workshop_at(db, clock, START)
    await take_seat(db, clock, 1, workshop)
    code = await code_of(db, workshop)
    clock.set(START + 10 * MINUTE)
    results = await asyncio.gather(
        attendance.check_in_by_code(1, code),
        attendance.check_in_by_button(1, workshop),
        attendance.check_in_by_code(1, code),
    )
    outcomes = sorted(result.outcome.value for result in results)
    assert outcomes == ["already", "already", "checked_in"]


async def test_check_in_prompts_are_queued_once_when_the_workshop_starts(db: Database):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    workshop = await workshop_at(db, clock, START)
    for person in (1, 2, 3):
        await take_seat(db, clock, person, workshop)
    clock.set(START - 10 * MINUTE)
    await attendance.check_in_by_code(3, await code_of(db, workshop))  # already there
    assert await attendance.plan_checkin_prompts() == 0  # not started yet
    clock.set(START)
    assert await attendance.plan_checkin_prompts() == 2
    clock.advance(MINUTE)
    assert await attendance.plan_checkin_prompts() == 0
    assert sorted(r.telegram_id for r in await queued(db, "checkin_prompt")) == [1, 2]

    first = await registration_id(db, 1, workshop)
    assert await attendance.visit_for_prompt(first, START) is not None
    await attendance.check_in_by_button(1, workshop)
    assert await attendance.visit_for_prompt(first, START) is None  # checked in meanwhile
    second = await registration_id(db, 2, workshop)
    clock.set(START + 2 * H)  # the workshop is over: "it is starting" would be wrong
    assert await attendance.visit_for_prompt(second, START) is None


async def test_roll_call_ticks_and_unticks_and_keeps_self_check_ins(db: Database):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    place = await seed_place(db)
    workshop = await workshop_at(db, clock, START, place=place)
    for person in (1, 2):
        await take_seat(db, clock, person, workshop)
    await workshop_at(db, clock, START + 3 * 24 * H, place=place)  # not yet: not listed
    clock.set(START + 5 * MINUTE)
    await attendance.check_in_by_code(1, await code_of(db, workshop))

    [listed] = await attendance.roll_workshops()
    assert listed.id == workshop
    roll = await attendance.roll_call(workshop)
    assert roll is not None and len(roll.checkin_code) == 5
    assert [(e.first_name, e.present) for e in roll.entries] == [("P1", True), ("P2", False)]

    facilitator = 777
    first, second = (e.registration_id for e in roll.entries)
    roll = await attendance.set_present(second, True, marked_by=facilitator)
    assert roll is not None and roll.present_count == 2
    roll = await attendance.set_present(first, True, marked_by=facilitator)  # changes nothing
    rows = await attendance_of(db, workshop)
    assert rows[first][1:] == ("code", None)
    assert rows[second] == (clock.now(), "roll", facilitator)
    roll = await attendance.set_present(second, False, marked_by=facilitator)
    assert roll is not None and [e.present for e in roll.entries] == [True, False]
    assert (await attendance_of(db, workshop))[second] == (None, None, None)


async def test_the_roll_closes_a_day_after_the_end_and_never_opens_for_a_cancelled_workshop(
    db: Database,
):
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    workshop = await workshop_at(db, clock, START)
    await take_seat(db, clock, 1, workshop)
    mine = await registration_id(db, 1, workshop)
    clock.set(START - 31 * MINUTE)
    assert await attendance.roll_workshops() == []
    clock.set(START + 2 * H + 24 * H - MINUTE)
    assert [w.id for w in await attendance.roll_workshops()] == [workshop]
    clock.advance(2 * MINUTE)
    assert await attendance.roll_workshops() == []
    assert await attendance.roll_call(workshop) is None
    assert await attendance.set_present(mine, True, marked_by=777) is None

    clock.set(START)
    async with db.write() as session:
        await session.execute(
            update(Workshop).where(Workshop.id == workshop).values(status="cancelled")
        )
    assert await attendance.roll_workshops() == []
    assert await attendance.set_present(mine, True, marked_by=777) is None
    assert (await attendance.check_in_by_button(1, workshop)).outcome is (
        CheckInOutcome.NOT_REGISTERED
    )


async def test_running_workshops_come_first_in_a_long_roll_list(db: Database):
    """Review finding 7: with more workshops ended in the last 24 h than the list shows, the
    ones running now are still listed, first, then the most recent."""
    clock = new_clock()
    attendance = AttendanceService(db, clock)
    place = await seed_place(db)
    ended = [
        await workshop_at(db, clock, START - 20 * H + n * (H / 2), place=place) for n in range(22)
    ]
    running = await workshop_at(db, clock, START - H, place=place)
    clock.set(START)
    listed = [w.id for w in await attendance.roll_workshops()]
    assert len(listed) == ROLL_LIST_LIMIT
    assert listed[0] == running
    assert listed[1:] == list(reversed(ended))[: ROLL_LIST_LIMIT - 1]
