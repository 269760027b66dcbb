"""The survey engine: what a person's tap or message does to their survey.

`SurveyService` is the one object the rest of the bot uses. The answer flow is here: starting
or resuming a survey, answering, picking and ticking choices, skipping, a written answer,
moving to the following question and finishing. Each action locks the person's participation
first (participations.py), then, for an answer, checks that it is about the current question
(`_at_question`): a button of an older message, a closed run or a finished survey get a Step
saying so, nothing is written. Where answers are kept, anonymous ones included, is
answers.py; what a question and the outbox's messages show, cards.py; the scheduled work
(polls after workshops, follow-ups, digests), sweeps.py. The service hands those on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.conversations import SURVEY_TEXT
from bot.services.registration import consenting_resident
from bot.services.surveys.answers import AnswerStore
from bot.services.surveys.cards import (
    AskedQuestion,
    InvitationView,
    ResponseCard,
    SurveyCards,
    options_for,
)
from bot.services.surveys.definitions import (
    AUTONOMY_BEFORE,
    NEEDS,
    SCALE,
    Option,
    QuestionDef,
    QuestionType,
    SurveyCatalog,
    SurveyDef,
)
from bot.services.surveys.digest import RunDigest
from bot.services.surveys.participations import Participations, Turn
from bot.services.surveys.sweeps import SurveySweeps, SweepReport
from bot.services.surveys.written_question import awaited, question_shown
from bot.settings import Settings
from storage.db import Database
from storage.models import (
    ConversationState,
    ParticipationStatus,
    Registration,
    Resident,
    SurveyParticipation,
    SurveyRun,
    Workshop,
)


class StepOutcome(StrEnum):
    ASK = "ask"  # show `question` (the current one after the action)
    FINISHED = "finished"  # the person just answered the last question
    LATER = "later"  # the person said "not now" to an invitation
    ALREADY_DONE = "already_done"
    CLOSED = "closed"  # the run closed: no more answers
    STALE = "stale"  # a button of a question that is no longer the current one
    INVALID = "invalid"  # the answer was refused (`problem`); ask `question` again
    UNKNOWN = "unknown"  # no such participation for this person (or no consent)


class Problem(StrEnum):
    UNKNOWN_CHOICE = "unknown_choice"
    WRONG_TYPE = "wrong_type"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_OPTIONAL = "not_optional"
    NOTHING_TICKED = "nothing_ticked"


@dataclass(frozen=True)
class Step:
    outcome: StepOutcome
    participation_id: int | None = None
    survey: SurveyDef | None = None
    question: AskedQuestion | None = None
    problem: Problem | None = None
    text_length: int | None = None  # for TOO_LONG
    workshop_title: dict[str, str] | None = None
    workshop_starts_at: datetime | None = None
    card_queued: bool = False  # a response card went to the outbox: deliver now


@dataclass(frozen=True)
class WaitingText:
    """The participation whose text question was shown last, and when."""

    participation_id: int
    asked_at: datetime


# Statements of the survey questions asked right after each registration, built once with bound
# parameters: building a statement costs more than running it (bench/journey.py).
_WORKSHOP_START = select(Workshop.starts_at).where(Workshop.id == bindparam("workshop_id"))
_REGISTRATIONS_OF = (
    select(func.count())
    .select_from(Registration)
    .where(Registration.resident_id == bindparam("resident_id"))
)
_PARTICIPATION_STATUS = select(SurveyParticipation.status).where(
    SurveyParticipation.id == bindparam("participation_id")
)


class SurveyService:
    def __init__(
        self, db: Database, clock: Clock, catalog: SurveyCatalog, settings: Settings
    ) -> None:
        self._db = db
        self._clock = clock
        self.catalog = catalog
        insert = sqlite_insert if db.is_sqlite else pg_insert
        self._participations = Participations(catalog, insert)
        self._answers = AnswerStore(db, catalog, settings, insert)
        self._cards = SurveyCards(db, clock, catalog)
        self._sweeps = SurveySweeps(db, clock, catalog, settings, self._answers, insert)

    # -- starting -------------------------------------------------------------------------

    async def start(self, telegram_id: int, participation_id: int) -> Step:
        """Start (or resume where the person stopped) the survey of an invitation."""
        async with self._turn(telegram_id, participation_id) as turn:
            if isinstance(turn, Step):
                return turn
            return await self._begin(turn)

    async def start_needs(self, telegram_id: int) -> Step:
        """/needs: the needs survey, started or resumed (one answer set per person)."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            if resident_id is None:
                return Step(StepOutcome.UNKNOWN)
            return await self._begin_in_run(
                session, telegram_id, resident_id, NEEDS, None, None, now
            )

    async def ask_autonomy_before(self, telegram_id: int, workshop_id: int) -> Step:
        """After a confirmed registration: the 1-5 autonomy question, open until the start."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            starts_at = await session.scalar(_WORKSHOP_START, {"workshop_id": workshop_id})
            if resident_id is None or starts_at is None:
                return Step(StepOutcome.UNKNOWN)
            return await self._begin_in_run(
                session, telegram_id, resident_id, AUTONOMY_BEFORE, workshop_id, starts_at, now
            )

    async def offer_needs_after_first_registration(self, telegram_id: int) -> int | None:
        """The needs survey is offered once, after a person's first registration ever: the
        participation to offer (status invited), or None."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            if resident_id is None:
                return None
            registrations = await session.scalar(_REGISTRATIONS_OF, {"resident_id": resident_id})
            if registrations != 1:
                return None
            participations = self._participations
            run_id = await participations.run_for(session, NEEDS, None, None, now)
            participation_id = await participations.participation_for(
                session, run_id, resident_id, now
            )
            status = await session.scalar(
                _PARTICIPATION_STATUS, {"participation_id": participation_id}
            )
            return participation_id if status == ParticipationStatus.INVITED else None

    async def pending_needs_offer(self, telegram_id: int) -> int | None:
        """The needs participation still waiting for a first "yes" or "not now", if any."""
        async with self._db.read() as session:
            return await session.scalar(
                select(SurveyParticipation.id)
                .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
                .join(Resident, Resident.id == SurveyParticipation.resident_id)
                .where(
                    Resident.telegram_id == telegram_id,
                    SurveyRun.survey_key == NEEDS,
                    SurveyRun.workshop_id.is_(None),
                    SurveyParticipation.status == ParticipationStatus.INVITED,
                )
            )

    async def decline(self, telegram_id: int, participation_id: int) -> Step:
        """ "Not now": an invitation not yet started is marked declined (it can start later)."""
        async with self._turn(telegram_id, participation_id) as turn:
            if isinstance(turn, Step):
                return turn
            blocked = self._finished_or_closed(turn)
            if blocked is not None:
                return blocked
            if turn.participation.status == ParticipationStatus.INVITED:
                turn.participation.status = ParticipationStatus.DECLINED
            return self._step(StepOutcome.LATER, turn)

    # -- answering ------------------------------------------------------------------------

    async def answer(
        self,
        telegram_id: int,
        participation_id: int,
        question_key: str,
        value: int | str | Sequence[str],
    ) -> Step:
        """Record the answer to the current question and move on; a wrong answer is refused.

        `value`: 1-5 for a scale, "yes"/"no", a choice key, the list of choice keys of a
        multiple choice, or the text of a text question.
        """
        async with self._at_question(telegram_id, participation_id, key=question_key) as at:
            if isinstance(at, Step):
                return at
            turn, question = at
            return await self._record_and_advance(turn, question, value)

    async def pick(
        self, telegram_id: int, participation_id: int, question_index: int, option_index: int
    ) -> Step:
        """A tapped answer button: picks an option, or ticks/unticks it (multiple choice)."""
        async with self._at_question(telegram_id, participation_id, index=question_index) as at:
            if isinstance(at, Step):
                return at
            turn, question = at
            options = await self._options(turn, question)
            if not 0 <= option_index < len(options):
                return await self._refuse(turn, Problem.UNKNOWN_CHOICE)
            key = options[option_index].key
            if question.type is QuestionType.MULTIPLE:
                return await self._toggle(turn, question, key)
            value: int | str = int(key) if question.type is QuestionType.SCALE else key
            return await self._record_and_advance(turn, question, value)

    async def done(self, telegram_id: int, participation_id: int, question_index: int) -> Step:
        """ "Done" under a multiple choice: the ticked choices are the answer."""
        async with self._at_question(telegram_id, participation_id, index=question_index) as at:
            if isinstance(at, Step):
                return at
            turn, question = at
            if question.type is not QuestionType.MULTIPLE:
                return await self._refuse(turn, Problem.WRONG_TYPE)
            ticked = await self._answers.ticked(turn, question)
            if not ticked:
                if not question.optional:
                    return await self._refuse(turn, Problem.NOTHING_TICKED)
                await self._answers.save(turn, question, skipped=True)
                return await self._advance(turn, question, None)
            return await self._advance(turn, question, set(ticked))

    async def skip(self, telegram_id: int, participation_id: int, question_index: int) -> Step:
        """The skip button of an optional question."""
        async with self._at_question(telegram_id, participation_id, index=question_index) as at:
            if isinstance(at, Step):
                return at
            turn, question = at
            if not question.optional:
                return await self._refuse(turn, Problem.NOT_OPTIONAL)
            await self._answers.save(turn, question, skipped=True)
            return await self._advance(turn, question, None)

    async def awaiting_text(self, telegram_id: int) -> WaitingText | None:
        """The participation waiting for a written answer, if any: only the question shown
        last among the person's surveys (its "survey_text" conversation), and only for
        TEXT_ANSWER_WINDOW after it was shown."""
        now = self._clock.now()
        async with self._db.read() as session:
            waiting = await session.get(ConversationState, (telegram_id, SURVEY_TEXT))
            participation_id = (
                None if waiting is None else awaited(waiting.data, waiting.updated_at, now)
            )
            if participation_id is None:
                return None
            last = (
                await session.execute(
                    select(
                        SurveyParticipation.id,
                        SurveyParticipation.current_question,
                        SurveyParticipation.asked_at,
                        SurveyRun.survey_key,
                        SurveyRun.closes_at,
                    )
                    .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
                    .where(
                        SurveyParticipation.id == participation_id,
                        SurveyParticipation.status == ParticipationStatus.IN_PROGRESS,
                    )
                )
            ).one_or_none()
        if last is None or last.asked_at is None:
            return None
        if last.closes_at is not None and last.closes_at <= now:
            return None
        survey = self.catalog.surveys.get(last.survey_key)
        question = survey.question(last.current_question or "") if survey else None
        if question is None or question.type is not QuestionType.TEXT:
            return None
        return WaitingText(last.id, last.asked_at)

    async def answer_text(self, telegram_id: int, participation_id: int, text: str | None) -> Step:
        """A written message for the current text question (None: not a text message)."""
        async with self._at_question(telegram_id, participation_id) as at:
            if isinstance(at, Step):
                return at
            turn, question = at
            if question.type is not QuestionType.TEXT:
                return self._step(StepOutcome.STALE, turn)
            return await self._record_and_advance(turn, question, text or "")

    # -- handed on: what the outbox renders (cards.py), the scheduled work (sweeps.py) ---

    async def invitation(self, participation_id: int) -> InvitationView | None:
        """An invitation still worth sending: not answered, run still open."""
        return await self._cards.invitation(participation_id)

    async def response_card(self, answer_set_id: int) -> ResponseCard | None:
        """A completed answer set, question by question, for the facilitators' channel."""
        return await self._cards.response_card(answer_set_id)

    async def digest(self, run_id: int) -> RunDigest | None:
        """The figures of a run for the facilitators' channel."""
        return await self._cards.digest(run_id)

    async def sweep(self) -> SweepReport:
        """Everything due now: invitations after workshops, follow-ups, anonymous answers
        moved out of their buffers, digests (after the last answers of their run moved)."""
        return await self._sweeps.sweep()

    async def flush_anonymous_answers(self, now: datetime | None = None) -> int:
        """Move complete anonymous answer buffers into answer sets; returns cards queued."""
        return await self._answers.flush_anonymous_answers(now or self._clock.now())

    async def invite_after_workshops(self, survey_key: str, delay: timedelta) -> int:
        """Open the run of each workshop whose poll is due and invite who attended."""
        return await self._sweeps.invite_after_workshops(survey_key, delay)

    async def close_due_runs(self, now: datetime | None = None) -> int:
        """Claim the runs whose time is up and queue their digest to the channel."""
        return await self._sweeps.close_due_runs(now or self._clock.now())

    # -- one action: the participation locked, the question checked -----------------------

    @asynccontextmanager
    async def _turn(self, telegram_id: int, participation_id: int) -> AsyncIterator[Turn | Step]:
        """The person's participation locked in a unit of work of its own (so that their
        concurrent taps apply one after the other), or the Step UNKNOWN to return when it is
        not theirs. Returning inside the block commits."""
        now = self._clock.now()
        async with self._db.write() as session:
            turn = await self._participations.lock(session, telegram_id, participation_id, now)
            yield Step(StepOutcome.UNKNOWN) if turn is None else turn

    @asynccontextmanager
    async def _at_question(
        self,
        telegram_id: int,
        participation_id: int,
        *,
        key: str | None = None,
        index: int | None = None,
    ) -> AsyncIterator[tuple[Turn, QuestionDef] | Step]:
        """An answer: the locked participation and its current question, when the answer is
        about it (by question `key` or button `index`; neither: whatever is current), or the
        Step to return at once (unknown, already done, closed, or stale)."""
        async with self._turn(telegram_id, participation_id) as turn:
            if isinstance(turn, Step):
                yield turn
            else:
                yield self._current_question(turn, key, index)

    def _current_question(
        self, turn: Turn, key: str | None, index: int | None
    ) -> tuple[Turn, QuestionDef] | Step:
        blocked = self._finished_or_closed(turn)
        if blocked is not None:
            return blocked
        current = turn.participation.current_question
        question = turn.survey.question(current) if current else None
        if question is None:
            return self._step(StepOutcome.STALE, turn)
        if key is not None and key != question.key:
            return self._step(StepOutcome.STALE, turn)
        if index is not None and index != turn.survey.index_of(question.key):
            return self._step(StepOutcome.STALE, turn)
        return turn, question

    def _finished_or_closed(self, turn: Turn) -> Step | None:
        if turn.participation.status == ParticipationStatus.COMPLETED:
            return self._step(StepOutcome.ALREADY_DONE, turn)
        if turn.closes_at is not None and turn.closes_at <= turn.now:
            return self._step(StepOutcome.CLOSED, turn)
        return None

    def _step(self, outcome: StepOutcome, turn: Turn, **values: Any) -> Step:
        return Step(
            outcome,
            participation_id=turn.participation.id,
            survey=turn.survey,
            workshop_title=turn.workshop_title,
            workshop_starts_at=turn.workshop_starts_at,
            **values,
        )

    # -- the steps inside a unit of work --------------------------------------------------

    async def _begin_in_run(
        self,
        session: AsyncSession,
        telegram_id: int,
        resident_id: int,
        survey_key: str,
        workshop_id: int | None,
        closes_at: datetime | None,
        now: datetime,
    ) -> Step:
        """Start or resume the person's survey in its run, both created if needed."""
        participations = self._participations
        run_id = await participations.run_for(session, survey_key, workshop_id, closes_at, now)
        participation_id = await participations.participation_for(session, run_id, resident_id, now)
        turn = await participations.lock(session, telegram_id, participation_id, now)
        assert turn is not None
        return await self._begin(turn)

    async def _begin(self, turn: Turn) -> Step:
        blocked = self._finished_or_closed(turn)
        if blocked is not None:
            return blocked
        participation = turn.participation
        current = participation.current_question
        if current is None or turn.survey.question(current) is None:
            # Not started yet, or the question was removed from the definition since: from
            # the top (answers already given are kept and shown again as they were).
            participation.status = ParticipationStatus.IN_PROGRESS
            participation.current_question = turn.survey.questions[0].key
            if participation.started_at is None and not turn.survey.anonymous:
                participation.started_at = turn.now
        return await self._ask(turn)

    async def _ask(self, turn: Turn, outcome: StepOutcome = StepOutcome.ASK, **extra: Any) -> Step:
        current = turn.participation.current_question
        question = turn.survey.question(current or "")
        assert question is not None
        turn.participation.asked_at = self._clock.now()
        await question_shown(
            turn.session,
            turn.telegram_id,
            turn.participation.id,
            question,
            turn.participation.asked_at,
        )
        index = turn.survey.index_of(question.key)
        asked = AskedQuestion(
            participation_id=turn.participation.id,
            survey=turn.survey,
            question=question,
            index=index,
            options=await self._options(turn, question),
            ticked=frozenset(await self._answers.ticked(turn, question)),
            workshop_title=turn.workshop_title,
            workshop_starts_at=turn.workshop_starts_at,
            first=index == 0,
        )
        return self._step(outcome, turn, question=asked, **extra)

    async def _refuse(self, turn: Turn, problem: Problem, **extra: Any) -> Step:
        return await self._ask(turn, StepOutcome.INVALID, problem=problem, **extra)

    async def _options(self, turn: Turn, question: QuestionDef) -> tuple[Option, ...]:
        return await options_for(turn.session, question, turn.need_category)

    async def _toggle(self, turn: Turn, question: QuestionDef, key: str) -> Step:
        ticked = set(await self._answers.ticked(turn, question))
        ticked ^= {key}
        order = [option.key for option in await self._options(turn, question)]
        choices = [k for k in order if k in ticked]
        await self._answers.save(turn, question, choices=choices)
        return await self._ask(turn)

    async def _record_and_advance(
        self, turn: Turn, question: QuestionDef, value: int | str | Sequence[str]
    ) -> Step:
        save = self._answers.save
        kind = question.type
        if kind is QuestionType.TEXT:
            if not isinstance(value, str):
                return await self._refuse(turn, Problem.WRONG_TYPE)
            text = value.strip()
            if not text:
                return await self._refuse(turn, Problem.EMPTY)
            if len(text) > question.text_limit:
                return await self._refuse(turn, Problem.TOO_LONG, text_length=len(text))
            await save(turn, question, text=text)
            return await self._advance(turn, question, None)
        if kind is QuestionType.SCALE:
            if isinstance(value, bool) or not isinstance(value, int):
                return await self._refuse(turn, Problem.WRONG_TYPE)
            if value not in SCALE:
                return await self._refuse(turn, Problem.UNKNOWN_CHOICE)
            await save(turn, question, number=value)
            return await self._advance(turn, question, {str(value)})
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
            return await self._refuse(turn, Problem.WRONG_TYPE)
        if kind is not QuestionType.MULTIPLE and not isinstance(value, str):
            return await self._refuse(turn, Problem.WRONG_TYPE)
        order = [option.key for option in await self._options(turn, question)]
        if any(key not in order for key in keys):
            return await self._refuse(turn, Problem.UNKNOWN_CHOICE)
        if not keys:
            return await self._refuse(turn, Problem.NOTHING_TICKED)
        choices = [key for key in order if key in keys]
        await save(turn, question, choices=choices)
        return await self._advance(turn, question, set(choices))

    async def _advance(self, turn: Turn, question: QuestionDef, answer: set[str] | None) -> Step:
        following = turn.survey.following(question, answer)
        if following is not None:
            turn.participation.current_question = following.key
            return await self._ask(turn)
        card_queued = await self._answers.finish(turn)
        return self._step(StepOutcome.FINISHED, turn, card_queued=card_queued)
