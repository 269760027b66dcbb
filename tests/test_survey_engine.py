"""The survey engine on the real database (SQLite and PostgreSQL): flows, resume, anonymity."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from sqlalchemy import select, text

from bot.clock import ManualClock
from bot.services.surveys.cards import INVITATION, RESPONSE_CARD
from bot.services.surveys.engine import Problem, StepOutcome, SurveyService
from storage.db import Database
from storage.models import (
    ConversationState,
    OutboxMessage,
    Registration,
    Resident,
    SurveyAnswer,
    SurveyRun,
)
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
    assert (await surveys.awaiting_text(1)).participation_id == pid
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


async def _invited(db, clock, surveys, people: range) -> tuple[int, dict[int, int]]:
    """A workshop attended by `people`, its poll sent: (workshop, participation by person)."""
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    for person in people:
        await registered(db, clock, person, workshop)
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    assert (await surveys.sweep()).invited == len(people)
    async with db.read() as session:
        rows = (
            await session.execute(
                select(Resident.telegram_id, OutboxMessage.payload)
                .join(Resident, Resident.id == OutboxMessage.resident_id)
                .where(OutboxMessage.kind == INVITATION)
            )
        ).all()
    return workshop, {person: payload["participation_id"] for person, payload in rows}


async def _answer_poll(surveys, person: int, pid: int, comment: str):
    step = await surveys.start(person, pid)
    assert step.survey.anonymous and step.question.question.key == "satisfaction"
    await surveys.answer(person, pid, "satisfaction", 5)
    await surveys.answer(person, pid, "usefulness", 4)
    await surveys.answer(person, pid, "try_alone", ["redo"])  # default topics: no "other"
    await surveys.answer(person, pid, "autonomy", 4)
    return await surveys.answer(person, pid, "comment", comment)


async def _xmins(db, table: str) -> set[str]:
    """PostgreSQL: the ids of the transactions that wrote the live rows of `table`."""
    async with db.read() as session:
        return set((await session.execute(text(f"SELECT xmin::text FROM {table}"))).scalars())


async def _cards(db) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(
            await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == RESPONSE_CARD))
        )


async def test_anonymous_answers_are_buffered_then_moved_in_shuffled_batches(db, clock):
    """Review finding 1: no anonymous row is written by a transaction that also writes a row
    tied to the person (PostgreSQL's xmin would link them for good)."""
    surveys = survey_service(db, clock, survey_delay="2h", min_group_size=3)
    workshop, pids = await _invited(db, clock, surveys, range(1, 6))

    step = await _answer_poll(surveys, 1, pids[1], "Très bien, merci")
    assert step.outcome is StepOutcome.FINISHED and not step.card_queued
    assert await answer_sets(db) == [] and await answers(db) == {}  # still in the buffer
    assert (await surveys.sweep()).cards == 0  # one person: not moved yet
    assert await answer_sets(db) == []
    await _answer_poll(surveys, 2, pids[2], "Super")
    # The fourth person stops halfway; their answer stays in their buffer.
    await surveys.start(4, pids[4])
    await surveys.answer(4, pids[4], "satisfaction", 2)
    await _answer_poll(surveys, 3, pids[3], "Merci")
    assert await answer_sets(db) == []

    report = await surveys.sweep()  # three people finished: moved together
    assert report.cards == 3 and report.queued
    sets = await answer_sets(db)
    assert len(sets) == 3 and all(s["completed"] for s in sets)
    assert [s["resident_id"] for s in sets] == [None, None, None]
    assert {s["workshop_id"] for s in sets} == {workshop}
    assert all(s["time_bucket"] == date(2026, 11, 30) for s in sets)  # the Monday
    assert sorted(a["free_text"] for a in await _comments(db)) == [
        "Merci",
        "Super",
        "Très bien, merci",
    ]
    cards = await _cards(db)
    assert len(cards) == 3
    assert all(c.resident_id is None and set(c.payload) == {"answer_set_id"} for c in cards)
    rows = {row["resident_id"]: row for row in await participations(db)}
    finished = [row for row in rows.values() if row["status"] == "completed"]
    assert len(finished) == 3
    for row in finished:
        assert row["answer_set_id"] is None
        assert (row["started_at"], row["completed_at"], row["asked_at"]) == (None, None, None)
    async with db.read() as session:
        buffers = (await session.execute(select(ConversationState.user_id))).scalars().all()
    assert buffers == [4]  # only the unfinished one

    if not db.is_sqlite:
        batch = await _xmins(db, "survey_answer_sets") | await _xmins(db, "survey_answers")
        assert len(batch) == 1  # the three people share one transaction
        person_rows = await _xmins(db, "survey_participations") | await _xmins(
            db, "conversation_states"
        )
        assert not batch & person_rows
        async with db.read() as session:
            linked = await session.execute(
                text(
                    "SELECT r.telegram_id, a.free_text FROM survey_participations p"
                    " JOIN residents r ON r.id = p.resident_id"
                    " JOIN survey_answer_sets s ON s.xmin = p.xmin"
                    " JOIN survey_answers a ON a.answer_set_id = s.id"
                    " AND a.question_key = 'comment'"
                )
            )
            assert linked.all() == []  # the review's query finds nobody

    # A fifth person finishes alone; when the poll closes, what remains moves anyway and
    # the unfinished buffer is deleted; the digest counts everyone who finished.
    await _answer_poll(surveys, 5, pids[5], "Bien")
    assert (await surveys.sweep()).cards == 0
    clock.advance(timedelta(hours=48))
    report = await surveys.sweep()
    assert (report.cards, report.digests) == (1, 1)
    async with db.read() as session:
        assert (await session.execute(select(ConversationState.user_id))).all() == []
        run_id = await session.scalar(select(SurveyRun.id).where(SurveyRun.workshop_id == workshop))
    digest = await surveys.digest(run_id)
    assert digest is not None and digest.respondents == 4
    assert (await surveys.answer(4, pids[4], "usefulness", 3)).outcome is StepOutcome.CLOSED


async def test_a_run_with_buffered_answers_waits_for_them_before_its_digest(db, clock):
    surveys = survey_service(db, clock, survey_delay="2h", min_group_size=5)
    _, pids = await _invited(db, clock, surveys, range(1, 3))
    await _answer_poll(surveys, 1, pids[1], "Très bien")
    clock.advance(timedelta(hours=48))
    assert await surveys.close_due_runs() == 0  # its answer has not moved yet
    assert await surveys.flush_anonymous_answers() == 1
    assert await surveys.close_due_runs() == 1


async def _comments(db) -> list[dict]:
    async with db.read() as session:
        rows = await session.scalars(
            select(SurveyAnswer).where(SurveyAnswer.question_key == "comment")
        )
        return [{"free_text": row.free_text} for row in rows]


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


async def test_a_written_answer_goes_to_the_question_shown_last_within_a_day(db, clock):
    """Review finding 2: with two surveys waiting for text, the question shown last takes it,
    and only for 24 hours."""
    surveys = survey_service(db, clock, survey_delay="2h")
    _, pids = await _invited(db, clock, surveys, range(1, 2))
    step = await surveys.start_needs(1)
    needs = step.participation_id
    step = await surveys.pick(1, needs, step.question.index, option_index(step, "other"))
    step = await surveys.done(1, needs, step.question.index)
    assert step.question.question.key == "hard_other"
    assert (await surveys.awaiting_text(1)).participation_id == needs

    clock.advance(timedelta(minutes=1))
    poll = pids[1]
    await surveys.start(1, poll)
    await surveys.answer(1, poll, "satisfaction", 5)
    assert await surveys.awaiting_text(1) is None  # the question shown last has buttons
    await surveys.answer(1, poll, "usefulness", 4)
    await surveys.answer(1, poll, "try_alone", ["redo"])
    await surveys.answer(1, poll, "autonomy", 4)
    assert (await surveys.awaiting_text(1)).participation_id == poll  # the comment

    clock.advance(timedelta(minutes=1))
    assert (await surveys.start_needs(1)).question.question.key == "hard_other"  # shown again
    assert (await surveys.awaiting_text(1)).participation_id == needs
    clock.advance(timedelta(hours=24))
    assert await surveys.awaiting_text(1) is None
