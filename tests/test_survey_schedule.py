"""Survey sweeps with an injected clock: invitations, follow-ups, digests (both backends)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.clock import ManualClock
from bot.services.surveys.cards import DIGEST, INVITATION
from bot.services.surveys.definitions import FOLLOW_UP, POST_WORKSHOP
from bot.services.surveys.engine import StepOutcome
from storage.db import Database
from storage.models import (
    AttendanceSource,
    OutboxMessage,
    Registration,
    Resident,
    SurveyRun,
)
from tests.factories import new_clock, seed_workshop
from tests.survey_helpers import ADMIN_CHAT, registered, survey_service, workshop_end

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


async def outbox(db: Database, kind: str) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )


async def telegram_ids(db: Database, resident_ids: list[int | None]) -> list[int]:
    async with db.read() as session:
        rows = await session.scalars(
            select(Resident.telegram_id).where(Resident.id.in_(resident_ids))
        )
        return sorted(rows)


async def runs(db: Database) -> list[tuple[str, int | None, datetime | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(SurveyRun.survey_key, SurveyRun.workshop_id, SurveyRun.closes_at).order_by(
                SurveyRun.id
            )
        )
        return [tuple(row) for row in rows]


async def test_invitations_go_once_to_attendees_only_after_the_delay(db, database_url, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    cancelled = await seed_workshop(db, clock, starts_in=timedelta(hours=1), status="cancelled")
    await registered(db, clock, 1, workshop)
    await registered(db, clock, 2, workshop)
    await registered(db, clock, 3, workshop, attended=False)
    await registered(db, clock, 4, cancelled)
    ends = await workshop_end(db, workshop)
    first = survey_service(db, clock)

    clock.set(ends + timedelta(hours=1, minutes=59))
    assert (await first.sweep()).invited == 0
    clock.set(ends + timedelta(hours=2))
    other_db = Database(database_url)  # a second running instance
    try:
        second = survey_service(other_db, clock)
        reports = await asyncio.gather(first.sweep(), second.sweep(), first.sweep())
    finally:
        await other_db.dispose()
    assert sum(report.invited for report in reports) == 2
    invitations = await outbox(db, INVITATION)
    assert await telegram_ids(db, [row.resident_id for row in invitations]) == [1, 2]
    assert {row.not_before for row in invitations} == {clock.now()}
    assert await runs(db) == [(POST_WORKSHOP, workshop, clock.now() + timedelta(hours=48))]

    # Someone marked present late is invited by the next sweep, the others not again.
    async with db.write() as session:
        await session.execute(
            update(Registration)
            .where(Registration.attended_at.is_(None))
            .values(attended_at=clock.now(), attendance_source=AttendanceSource.ROLL)
        )
    assert (await first.sweep()).invited == 1
    assert (await first.sweep()).invited == 0
    assert len(await outbox(db, INVITATION)) == 3


async def test_an_invitation_due_in_quiet_hours_waits_for_the_morning(db, clock):
    # T0 is 10:00 in Paris; the workshop ends at 20:30, the poll is due at 22:30.
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=8, minutes=30))
    await registered(db, clock, 1, workshop)
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    assert (await survey_service(db, clock).sweep()).invited == 1
    (invitation,) = await outbox(db, INVITATION)
    morning = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)  # 08:00 in Paris (UTC+1)
    assert invitation.not_before == morning
    assert (await runs(db))[0][2] == morning + timedelta(hours=48)


async def test_the_follow_up_question_comes_a_month_later(db, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await registered(db, clock, 1, workshop)
    surveys = survey_service(db, clock)
    ends = await workshop_end(db, workshop)
    clock.set(ends + timedelta(days=29))
    # The post-workshop window passed long ago: its run is created closed, nobody invited.
    assert (await surveys.sweep()).invited == 0
    assert [run[0] for run in await runs(db)] == [POST_WORKSHOP]
    clock.set(ends + timedelta(days=30))
    assert (await surveys.sweep()).invited == 1
    assert [run[0] for run in await runs(db)] == [POST_WORKSHOP, FOLLOW_UP]
    (invitation,) = await outbox(db, INVITATION)
    pid = invitation.payload["participation_id"]
    step = await surveys.start(1, pid)
    assert step.question.question.key == "alone_since"
    assert [o.key for o in step.question.options] == ["yes", "no"]
    assert (await surveys.pick(1, pid, 0, 0)).outcome is StepOutcome.FINISHED
    clock.advance(timedelta(hours=48))
    assert (await surveys.sweep()).digests == 1
    missed, follow_up = (row.payload["run_id"] for row in await outbox(db, DIGEST))
    assert (await surveys.digest(missed)).missed
    digest = await surveys.digest(follow_up)
    assert [(c.option.key, c.count) for c in digest.questions[0].counts] == [("yes", 1), ("no", 0)]


async def answer_poll(surveys, telegram_id: int, pid: int, satisfaction: int, comment: str | None):
    await surveys.start(telegram_id, pid)
    await surveys.answer(telegram_id, pid, "satisfaction", satisfaction)
    await surveys.answer(telegram_id, pid, "usefulness", 3)
    await surveys.answer(telegram_id, pid, "try_alone", ["redo", "help_someone"])
    await surveys.answer(telegram_id, pid, "autonomy", satisfaction - 1)
    if comment is None:
        return await surveys.skip(telegram_id, pid, 5)
    return await surveys.answer(telegram_id, pid, "comment", comment)


async def test_the_digest_is_claimed_once_with_the_right_figures(db, database_url, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    surveys = survey_service(db, clock)
    for telegram_id in (1, 2, 3):
        await registered(db, clock, telegram_id, workshop)
        before = await surveys.ask_autonomy_before(telegram_id, workshop)
        await surveys.pick(telegram_id, before.participation_id, 0, telegram_id - 1)  # 1, 2, 3
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    await surveys.sweep()
    invitations = await outbox(db, INVITATION)
    by_person = dict(
        zip(
            await telegram_ids(db, [row.resident_id for row in invitations]),
            [row.payload["participation_id"] for row in invitations],
            strict=True,
        )
    )
    finished = await answer_poll(surveys, 1, by_person[1], 5, "Super <atelier> & merci")
    assert finished.outcome is StepOutcome.FINISHED
    await answer_poll(surveys, 2, by_person[2], 4, None)
    # Person 3 never answers.

    clock.advance(timedelta(hours=48))
    other_db = Database(database_url)
    try:
        second = survey_service(other_db, clock)
        reports = await asyncio.gather(surveys.sweep(), second.sweep())
    finally:
        await other_db.dispose()
    assert sum(report.digests for report in reports) == 1
    (row,) = await outbox(db, DIGEST)
    assert row.chat_id == ADMIN_CHAT and row.resident_id is None

    digest = await surveys.digest(row.payload["run_id"])
    assert (digest.respondents, digest.invited) == (2, 3)
    by_key = {summary.question.key: summary for summary in digest.questions}
    satisfaction = by_key["satisfaction"]
    assert satisfaction.average == 4.5 and satisfaction.answered == 2
    assert [c.count for c in satisfaction.counts] == [0, 0, 0, 1, 1]
    assert {c.option.key: c.count for c in by_key["try_alone"].counts} == {
        "redo": 2,
        "practise": 0,
        "help_someone": 2,
        "other": 0,
    }
    assert by_key["autonomy"].average == 3.5
    assert by_key["autonomy"].before == (2.0, 3)  # the same question at sign-up
    assert by_key["comment"].texts == ("Super <atelier> & merci",)
    assert (by_key["comment"].answered, by_key["comment"].skipped) == (1, 1)
    assert by_key["try_other"].answered == 0


async def test_without_a_channel_the_run_closes_without_a_digest(db, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await registered(db, clock, 1, workshop)
    surveys = survey_service(db, clock, admin_chat_id=None)
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    await surveys.sweep()
    clock.advance(timedelta(hours=48))
    assert (await surveys.sweep()).digests == 0
    assert await outbox(db, DIGEST) == []
    async with db.read() as session:
        assert await session.scalar(select(SurveyRun.digest_sent_at)) == clock.now()


async def test_an_invitation_is_not_sent_once_answered_or_closed(db, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await registered(db, clock, 1, workshop)
    await registered(db, clock, 2, workshop)
    surveys = survey_service(db, clock)
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    await surveys.sweep()
    first, second = (row.payload["participation_id"] for row in await outbox(db, INVITATION))
    view = await surveys.invitation(first)
    assert view is not None and view.survey.key == POST_WORKSHOP
    assert view.workshop_title["fr"] == "Faire ses démarches en ligne"
    await answer_poll(surveys, 1, first, 5, None)
    assert await surveys.invitation(first) is None
    assert await surveys.invitation(second) is not None
    clock.advance(timedelta(hours=48))
    assert await surveys.invitation(second) is None
