"""The survey engine on the real database (SQLite and PostgreSQL): flows, resume, anonymity."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.surveys import (
    INVITATION,
    RESPONSE_CARD,
    Problem,
    StepOutcome,
    SurveyService,
)
from storage.db import Database
from storage.models import OutboxMessage, Registration, Resident
from tests.factories import new_clock, seed_place, seed_workshop
from tests.survey_helpers import (
    ADMIN_CHAT,
    answer_sets,
    answers,
    participations,
    registered,
    resident,
    survey_service,
    workshop_end,
)

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


@pytest.fixture
def surveys(db: Database, clock: ManualClock) -> SurveyService:
    return survey_service(db, clock)


def option_index(step, key: str) -> int:
    return [option.key for option in step.question.options].index(key)


async def test_needs_survey_in_full_with_a_jump_a_re_asked_text_and_a_skip(db, clock, surveys):
    await seed_place(db, area="Montreynaud")
    await resident(db, clock, 1)

    step = await surveys.start_needs(1)
    assert step.outcome is StepOutcome.ASK and step.question.first
    assert step.question.question.key == "hard_tasks"
    assert step.question.options[-1].key == "other"
    pid, index = step.participation_id, step.question.index

    step = await surveys.pick(1, pid, index, option_index(step, "email"))
    step = await surveys.pick(1, pid, index, option_index(step, "other"))
    assert step.question.ticked == {"email", "other"}
    step = await surveys.pick(1, pid, index, option_index(step, "sante"))
    step = await surveys.pick(1, pid, index, option_index(step, "sante"))  # untick
    assert step.question.ticked == {"email", "other"}
    assert (await answers(db))["hard_tasks"]["choices"] == ["email", "other"]  # saved as ticked

    step = await surveys.done(1, pid, index)
    assert step.question.question.key == "hard_other"  # the jump on "other"
    assert await surveys.awaiting_text(1) == pid
    step = await surveys.answer_text(1, pid, "   ")
    assert (step.outcome, step.problem) == (StepOutcome.INVALID, Problem.EMPTY)
    step = await surveys.answer_text(1, pid, "x" * 301)
    assert (step.outcome, step.problem, step.text_length) == (
        StepOutcome.INVALID,
        Problem.TOO_LONG,
        301,
    )
    assert step.question.question.key == "hard_other"  # asked again
    step = await surveys.answer_text(1, pid, "  Remplir un formulaire de la mairie ")
    assert step.question.question.key == "help_kind"
    assert await surveys.awaiting_text(1) is None

    step = await surveys.answer(1, pid, "help_kind", ["a_distance", "collectif"])
    step = await surveys.answer(1, pid, "days", ["tuesday"])
    step = await surveys.answer(1, pid, "times", ["morning", "afternoon"])
    assert step.question.question.key == "neighbourhood"
    assert [o.text for o in step.question.options] == [
        "Montreynaud",
        {"fr": "🏘 Un autre quartier", "en": "🏘 Another neighbourhood", "ar": "🏘 حي آخر"},
    ]
    step = await surveys.skip(1, pid, step.question.index)
    assert step.outcome is StepOutcome.FINISHED and step.card_queued

    saved = await answers(db)
    assert saved["hard_tasks"]["choices"] == ["email", "other"]
    assert saved["hard_other"]["free_text"] == "Remplir un formulaire de la mairie"
    assert saved["help_kind"]["choices"] == ["collectif", "a_distance"]  # in button order
    assert saved["neighbourhood"]["skipped"] and saved["neighbourhood"]["choices"] is None
    (answer_set,) = await answer_sets(db)
    assert answer_set["completed"] and answer_set["resident_id"] is not None
    (participation,) = await participations(db)
    assert participation["status"] == "completed" and participation["current_question"] is None
    assert participation["answer_set_id"] == answer_set["id"]  # not anonymous: kept
    assert (await surveys.start_needs(1)).outcome is StepOutcome.ALREADY_DONE
    async with db.read() as session:
        card = (await session.scalars(select(OutboxMessage))).one()
    assert (card.kind, card.chat_id, card.resident_id) == (RESPONSE_CARD, ADMIN_CHAT, None)


async def test_without_other_the_text_question_is_not_asked(db, clock, surveys):
    await resident(db, clock, 1)
    step = await surveys.start_needs(1)
    step = await surveys.answer(1, step.participation_id, "hard_tasks", ["email"])
    assert step.question.question.key == "help_kind"


async def test_bad_answers_are_refused_and_nothing_is_saved(db, clock, surveys):
    await resident(db, clock, 1)
    pid = (await surveys.start_needs(1)).participation_id
    refused = [
        await surveys.answer(1, pid, "hard_tasks", ["email", "not_a_category"]),
        await surveys.answer(1, pid, "hard_tasks", []),
        await surveys.answer(1, pid, "hard_tasks", 3),
        await surveys.pick(1, pid, 0, 99),
        await surveys.skip(1, pid, 0),
        await surveys.done(1, pid, 0),
    ]
    assert [(s.outcome, s.problem) for s in refused] == [
        (StepOutcome.INVALID, Problem.UNKNOWN_CHOICE),
        (StepOutcome.INVALID, Problem.NOTHING_TICKED),
        (StepOutcome.INVALID, Problem.WRONG_TYPE),
        (StepOutcome.INVALID, Problem.UNKNOWN_CHOICE),
        (StepOutcome.INVALID, Problem.NOT_OPTIONAL),
        (StepOutcome.INVALID, Problem.NOTHING_TICKED),
    ]
    assert all(s.question.question.key == "hard_tasks" for s in refused)
    stale = [
        await surveys.answer(1, pid, "days", ["monday"]),  # not the current question
        await surveys.pick(1, pid, 3, 0),
        await surveys.answer_text(1, pid, "hello"),
    ]
    assert [s.outcome for s in stale] == [StepOutcome.STALE] * 3
    assert await answers(db) == {}
    # Someone else's participation, or no consent: unknown.
    await resident(db, clock, 2)
    assert (await surveys.pick(2, pid, 0, 0)).outcome is StepOutcome.UNKNOWN
    assert (await surveys.start_needs(3)).outcome is StepOutcome.UNKNOWN


async def test_a_scale_and_a_finished_survey(db, clock, surveys):
    workshop = await seed_workshop(db, clock)
    await resident(db, clock, 1)
    step = await surveys.ask_autonomy_before(1, workshop)
    assert [o.key for o in step.question.options] == ["1", "2", "3", "4", "5"]
    assert step.workshop_title["fr"] == "Faire ses démarches en ligne"
    assert (await surveys.answer(1, step.participation_id, "autonomy", 6)).problem is (
        Problem.UNKNOWN_CHOICE
    )
    finished = await surveys.pick(1, step.participation_id, 0, 1)
    assert finished.outcome is StepOutcome.FINISHED
    assert not finished.card_queued  # no card for the sign-up question
    assert (await answers(db))["autonomy"]["number"] == 2
    # A second registration to the same workshop does not ask again; a late tap is stale.
    assert (await surveys.ask_autonomy_before(1, workshop)).outcome is StepOutcome.ALREADY_DONE
    assert (await surveys.pick(1, step.participation_id, 0, 4)).outcome is (
        StepOutcome.ALREADY_DONE
    )
    assert (await answers(db))["autonomy"]["number"] == 2


async def test_the_question_before_a_workshop_closes_when_it_starts(db, clock, surveys):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await resident(db, clock, 1)
    step = await surveys.ask_autonomy_before(1, workshop)
    clock.advance(timedelta(hours=1))
    assert (await surveys.pick(1, step.participation_id, 0, 3)).outcome is StepOutcome.CLOSED
    assert await answers(db) == {}


async def test_resume_after_a_restart_with_a_new_service(db, database_url, clock, surveys):
    await resident(db, clock, 1)
    step = await surveys.start_needs(1)
    pid = step.participation_id
    step = await surveys.answer(1, pid, "hard_tasks", ["email"])
    await surveys.pick(1, pid, step.question.index, 2)  # ticks "demarche", not done yet

    restarted_db = Database(database_url)  # as after a restart: new engine, new service
    try:
        restarted = survey_service(restarted_db, clock)
        step = await restarted.start(1, pid)
        assert step.question.question.key == "help_kind"
        assert step.question.ticked == {"demarche"}
        step = await restarted.done(1, pid, step.question.index)
        assert step.question.question.key == "days"
    finally:
        await restarted_db.dispose()


async def test_one_answer_set_per_person_even_with_double_taps(db, database_url, clock):
    """Two instances (two engines) receive the same taps at the same time."""
    await resident(db, clock, 1)
    other_db = Database(database_url)
    try:
        first, second = survey_service(db, clock), survey_service(other_db, clock)
        starts = await asyncio.gather(first.start_needs(1), second.start_needs(1))
        assert starts[0].participation_id == starts[1].participation_id
        pid = starts[0].participation_id
        taps = await asyncio.gather(
            first.answer(1, pid, "hard_tasks", ["email"]),
            second.answer(1, pid, "hard_tasks", ["sante"]),
        )
        assert sorted(s.outcome for s in taps) == [StepOutcome.ASK, StepOutcome.STALE]
    finally:
        await other_db.dispose()
    assert len(await participations(db)) == 1
    assert len(await answer_sets(db)) == 1
    assert len(await answers(db)) == 1


async def test_anonymous_answers_carry_no_link_to_the_person(db, clock):
    surveys = survey_service(db, clock, survey_delay="2h")
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await registered(db, clock, 1, workshop)
    await registered(db, clock, 2, workshop)
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    assert (await surveys.sweep()).invited == 2
    async with db.read() as session:
        invitations = list(
            await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == INVITATION))
        )
    by_resident = {row.resident_id: row.payload["participation_id"] for row in invitations}
    async with db.read() as session:
        ids = dict((await session.execute(select(Resident.telegram_id, Resident.id))).all())

    pid = by_resident[ids[1]]
    step = await surveys.start(1, pid)
    assert step.survey.anonymous and step.question.question.key == "satisfaction"
    step = await surveys.answer(1, pid, "satisfaction", 5)
    assert (await participations(db))[0]["answer_set_id"] is not None  # while answering
    step = await surveys.answer(1, pid, "usefulness", 4)
    step = await surveys.answer(1, pid, "try_alone", ["redo"])  # default topics: no "other"
    step = await surveys.answer(1, pid, "autonomy", 4)
    step = await surveys.answer(1, pid, "comment", "Très bien, merci")
    assert step.outcome is StepOutcome.FINISHED
    # The second person stops halfway.
    other = by_resident[ids[2]]
    await surveys.start(2, other)
    await surveys.answer(2, other, "satisfaction", 2)

    rows = {row["resident_id"]: row for row in await participations(db)}
    assert rows[ids[1]]["status"] == "completed"
    assert rows[ids[1]]["answer_set_id"] is None
    assert rows[ids[1]]["started_at"] is None and rows[ids[1]]["completed_at"] is None
    assert rows[ids[2]]["answer_set_id"] is not None  # still answering
    sets = await answer_sets(db)
    assert [s["resident_id"] for s in sets] == [None, None]
    assert {s["workshop_id"] for s in sets} == {workshop}
    assert all(s["time_bucket"] == date(2026, 11, 30) for s in sets)  # the Monday
    async with db.read() as session:
        card = (
            await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == RESPONSE_CARD))
        ).one()
    assert card.resident_id is None and set(card.payload) == {"answer_set_id"}

    # When the poll closes, the unfinished answers lose their pointer too.
    clock.advance(timedelta(hours=48))
    assert (await surveys.sweep()).digests == 1
    assert [row["answer_set_id"] for row in await participations(db)] == [None, None]
    assert (await surveys.answer(2, other, "usefulness", 3)).outcome is StepOutcome.CLOSED


async def test_the_needs_offer_follows_the_first_registration_only(db, clock, surveys):
    await resident(db, clock, 1)
    assert await surveys.offer_needs_after_first_registration(1) is None  # no registration
    first = await seed_workshop(db, clock)
    second = await seed_workshop(db, clock)
    async with db.write() as session:
        resident_id = await session.scalar(select(Resident.id).where(Resident.telegram_id == 1))
        session.add(
            Registration(
                workshop_id=first,
                resident_id=resident_id,
                status="confirmed",
                created_at=clock.now(),
            )
        )
    offer = await surveys.offer_needs_after_first_registration(1)
    assert offer is not None and await surveys.pending_needs_offer(1) == offer
    assert (await surveys.decline(1, offer)).outcome is StepOutcome.LATER
    assert await surveys.pending_needs_offer(1) is None
    async with db.write() as session:
        session.add(
            Registration(
                workshop_id=second,
                resident_id=resident_id,
                status="confirmed",
                created_at=clock.now(),
            )
        )
    assert await surveys.offer_needs_after_first_registration(1) is None
    # "Not now" is not "never": the person can still start it.
    assert (await surveys.start(1, offer)).outcome is StepOutcome.ASK
