"""The survey engine: who is asked what, where each person is, and what they answered.

A participation (one per person and survey run, a unique index) records where the person is
(`current_question`, shown at `asked_at`), so a restart resumes where they were; each answer
is saved as it comes. Every operation locks the participation row first, so concurrent taps
of one person are applied one after the other.

Anonymous surveys: the answer set has no resident, only the workshop and the week. Nothing
anonymous is ever written in a transaction that also writes a row tied to the person: on
PostgreSQL every row keeps the id of the transaction that last wrote it (xmin), so such a
transaction would tie the answers to the person for good. While a person answers, their
answers wait in a buffer of their own (a ConversationState row, conversation
"survey:<run id>"); finishing marks the participation completed and the buffer complete. The
sweep then moves the complete buffers of a run into answer sets in ONE transaction for at
least `min_group_size` people at once, in shuffled order, deleting the buffers in that same
transaction (see flush_anonymous_answers). Anonymous participations keep no start or end
time either, so that the order of answer sets cannot be matched with people.

Scheduled work (invitations after workshops, follow-ups, digests when a run closes) is
decided by sweeps that read the database and the injected clock: re-running a sweep, or two
instances running it, changes nothing (unique runs, participations and outbox dedupe keys,
and an atomic claim of each digest).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import String, bindparam, cast, delete, func, literal, null, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.conversations import SURVEY_TEXT
from bot.services.outbox import enqueue_once
from bot.services.registration import consenting_resident
from bot.services.reminders import ReminderPolicy
from bot.services.surveys.definitions import (
    SCALE,
    YES_NO,
    Option,
    QuestionDef,
    QuestionType,
    SurveyCatalog,
    SurveyDef,
)
from bot.services.surveys.digest import RunDigest, read_digest
from bot.services.surveys.written_question import (
    awaited,
    question_shown,
    survey_finished,
)
from bot.settings import Settings
from storage.db import Database
from storage.models import (
    ConversationState,
    ParticipationStatus,
    Registration,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyParticipation,
    SurveyRun,
    Territory,
    Theme,
    Workshop,
    WorkshopStatus,
)
from storage.types import UTCDateTime

POST_WORKSHOP = "post_workshop"
AUTONOMY_BEFORE = "autonomy_before"
FOLLOW_UP = "follow_up"
NEEDS = "needs"

# Outbox kinds, rendered by handlers/surveys.py.
INVITATION = "survey_invitation"
RESPONSE_CARD = "survey_response"
DIGEST = "survey_digest"

# The buffer of a person's anonymous answers (ConversationState.conversation / .state).
BUFFER_PREFIX = "survey:"
ANSWERING = "answering"
COMPLETE = "complete"


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
class AskedQuestion:
    participation_id: int
    survey: SurveyDef
    question: QuestionDef
    index: int  # position in the survey, carried by the buttons
    options: tuple[Option, ...]
    ticked: frozenset[str]  # multiple choice: what is ticked so far
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None  # the {date} of the survey's texts
    first: bool  # the first question: the survey's intro goes with it


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
class InvitationView:
    participation_id: int
    survey: SurveyDef
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None
    status: str


@dataclass(frozen=True)
class CardLine:
    question: QuestionDef
    options: tuple[Option, ...]
    choices: tuple[str, ...]
    number: int | None
    text: str | None
    skipped: bool


@dataclass(frozen=True)
class ResponseCard:
    survey: SurveyDef
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None
    person: str | None  # None when anonymous (or the person is gone)
    lines: tuple[CardLine, ...]


@dataclass(frozen=True)
class SweepReport:
    invited: int  # invitations queued (post-workshop polls and follow-ups)
    digests: int  # digests queued
    cards: int = 0  # response cards of anonymous answers just moved out of their buffers

    @property
    def queued(self) -> bool:
        return bool(self.invited or self.digests or self.cards)


@dataclass(frozen=True)
class WaitingText:
    """The participation whose text question was shown last, and when."""

    participation_id: int
    asked_at: datetime


@dataclass
class _Run:
    """A locked participation and what its run is about (inside one unit of work)."""

    participation: SurveyParticipation
    telegram_id: int
    survey: SurveyDef
    run_id: int
    workshop_id: int | None
    closes_at: datetime | None
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None
    need_category: str | None


def week_of(moment: datetime, settings: Settings) -> date:
    """The Monday of the local week: the only time an anonymous answer set keeps."""
    day = moment.astimezone(settings.tz).date()
    return day - timedelta(days=day.weekday())


# Statements of the survey questions asked right after each registration, built once with bound
# parameters: building a statement costs more than running it (bench/journey.py).
_WORKSHOP_START = select(Workshop.starts_at).where(Workshop.id == bindparam("workshop_id"))
_REGISTRATIONS_OF = (
    select(func.count())
    .select_from(Registration)
    .where(Registration.resident_id == bindparam("resident_id"))
)
_WORKSHOP_RUN = select(SurveyRun.id).where(
    SurveyRun.survey_key == bindparam("survey_key"),
    SurveyRun.workshop_id == bindparam("workshop_id"),
)
_ALWAYS_OPEN_RUN = select(SurveyRun.id).where(
    SurveyRun.survey_key == bindparam("survey_key"), SurveyRun.workshop_id.is_(None)
)
_PARTICIPATION = select(SurveyParticipation.id).where(
    SurveyParticipation.run_id == bindparam("run_id"),
    SurveyParticipation.resident_id == bindparam("resident_id"),
)
_PARTICIPATION_STATUS = select(SurveyParticipation.status).where(
    SurveyParticipation.id == bindparam("participation_id")
)
_LOCKED_PARTICIPATION = (
    select(
        SurveyParticipation,
        SurveyRun.survey_key,
        SurveyRun.workshop_id,
        SurveyRun.closes_at,
    )
    .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
    .join(Resident, Resident.id == SurveyParticipation.resident_id)
    .where(
        SurveyParticipation.id == bindparam("participation_id"),
        Resident.telegram_id == bindparam("telegram_id"),
        Resident.consented_at.is_not(None),
    )
    .with_for_update(of=SurveyParticipation)
)
_RUN_WORKSHOP = (
    select(Workshop.title, Workshop.starts_at, Theme.need_category)
    .join(Theme, Theme.id == Workshop.theme_id)
    .where(Workshop.id == bindparam("workshop_id"))
)


class SurveyService:
    def __init__(
        self, db: Database, clock: Clock, catalog: SurveyCatalog, settings: Settings
    ) -> None:
        self._db = db
        self._clock = clock
        self.catalog = catalog
        self._settings = settings
        self._insert = sqlite_insert if db.is_sqlite else pg_insert
        # Quiet hours are read by the reminders' policy: one definition of "quiet".
        self._quiet = ReminderPolicy(settings.reminder_offsets, settings.quiet_hours, settings.tz)

    # -- starting -------------------------------------------------------------------------

    async def start(self, telegram_id: int, participation_id: int) -> Step:
        """Start (or resume where the person stopped) the survey of an invitation."""
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            return await self._begin(session, run, now)

    async def start_needs(self, telegram_id: int) -> Step:
        """/needs: the needs survey, started or resumed (one answer set per person)."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            if resident_id is None:
                return Step(StepOutcome.UNKNOWN)
            run_id = await self._run_for(session, NEEDS, None, None, now)
            participation_id = await self._participation_for(session, run_id, resident_id, now)
            run = await self._locked(session, telegram_id, participation_id)
            assert run is not None
            return await self._begin(session, run, now)

    async def ask_autonomy_before(self, telegram_id: int, workshop_id: int) -> Step:
        """After a confirmed registration: the 1-5 autonomy question, open until the start."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            starts_at = await session.scalar(_WORKSHOP_START, {"workshop_id": workshop_id})
            if resident_id is None or starts_at is None:
                return Step(StepOutcome.UNKNOWN)
            run_id = await self._run_for(session, AUTONOMY_BEFORE, workshop_id, starts_at, now)
            participation_id = await self._participation_for(session, run_id, resident_id, now)
            run = await self._locked(session, telegram_id, participation_id)
            assert run is not None
            return await self._begin(session, run, now)

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
            run_id = await self._run_for(session, NEEDS, None, None, now)
            participation_id = await self._participation_for(session, run_id, resident_id, now)
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
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            blocked = self._finished_or_closed(run, now)
            if blocked is not None:
                return blocked
            if run.participation.status == ParticipationStatus.INVITED:
                run.participation.status = ParticipationStatus.DECLINED
            return self._step(StepOutcome.LATER, run)

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
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            question = self._current_if(run, now, question_key)
            if isinstance(question, Step):
                return question
            return await self._record_and_advance(session, run, question, value, now)

    async def pick(
        self, telegram_id: int, participation_id: int, question_index: int, option_index: int
    ) -> Step:
        """A tapped answer button: picks an option, or ticks/unticks it (multiple choice)."""
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            question = self._current_if(run, now, index=question_index)
            if isinstance(question, Step):
                return question
            options = await self._options(session, run, question)
            if not 0 <= option_index < len(options):
                return await self._refuse(session, run, Problem.UNKNOWN_CHOICE)
            key = options[option_index].key
            if question.type is QuestionType.MULTIPLE:
                return await self._toggle(session, run, question, key, now)
            value: int | str = int(key) if question.type is QuestionType.SCALE else key
            return await self._record_and_advance(session, run, question, value, now)

    async def done(self, telegram_id: int, participation_id: int, question_index: int) -> Step:
        """ "Done" under a multiple choice: the ticked choices are the answer."""
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            question = self._current_if(run, now, index=question_index)
            if isinstance(question, Step):
                return question
            if question.type is not QuestionType.MULTIPLE:
                return await self._refuse(session, run, Problem.WRONG_TYPE)
            ticked = await self._ticked(session, run, question)
            if not ticked:
                if not question.optional:
                    return await self._refuse(session, run, Problem.NOTHING_TICKED)
                await self._save(session, run, question, now, skipped=True)
                return await self._advance(session, run, question, None, now)
            return await self._advance(session, run, question, set(ticked), now)

    async def skip(self, telegram_id: int, participation_id: int, question_index: int) -> Step:
        """The skip button of an optional question."""
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            question = self._current_if(run, now, index=question_index)
            if isinstance(question, Step):
                return question
            if not question.optional:
                return await self._refuse(session, run, Problem.NOT_OPTIONAL)
            await self._save(session, run, question, now, skipped=True)
            return await self._advance(session, run, question, None, now)

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
        now = self._clock.now()
        async with self._db.write() as session:
            run = await self._locked(session, telegram_id, participation_id)
            if run is None:
                return Step(StepOutcome.UNKNOWN)
            question = self._current_if(run, now)
            if isinstance(question, Step):
                return question
            if question.type is not QuestionType.TEXT:
                return self._step(StepOutcome.STALE, run)
            return await self._record_and_advance(session, run, question, text or "", now)

    # -- what the outbox renders ----------------------------------------------------------

    async def invitation(self, participation_id: int) -> InvitationView | None:
        """An invitation still worth sending: not answered, run still open."""
        now = self._clock.now()
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(
                        SurveyParticipation.status,
                        SurveyRun.survey_key,
                        SurveyRun.closes_at,
                        Workshop.title,
                        Workshop.starts_at,
                    )
                    .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
                    .outerjoin(Workshop, Workshop.id == SurveyRun.workshop_id)
                    .where(SurveyParticipation.id == participation_id)
                )
            ).one_or_none()
        if row is None or row.survey_key not in self.catalog.surveys:
            return None
        if row.status == ParticipationStatus.COMPLETED:
            return None
        if row.closes_at is not None and row.closes_at <= now:
            return None
        return InvitationView(
            participation_id, self.catalog[row.survey_key], row.title, row.starts_at, row.status
        )

    async def response_card(self, answer_set_id: int) -> ResponseCard | None:
        """A completed answer set, question by question, for the facilitators' channel."""
        async with self._db.read() as session:
            head = (
                await session.execute(
                    select(
                        SurveyRun.survey_key,
                        SurveyRun.workshop_id,
                        Workshop.title,
                        Workshop.starts_at,
                        Theme.need_category,
                        Resident.first_name,
                    )
                    .select_from(SurveyAnswerSet)
                    .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
                    .outerjoin(Workshop, Workshop.id == SurveyRun.workshop_id)
                    .outerjoin(Theme, Theme.id == Workshop.theme_id)
                    .outerjoin(Resident, Resident.id == SurveyAnswerSet.resident_id)
                    .where(SurveyAnswerSet.id == answer_set_id, SurveyAnswerSet.completed)
                )
            ).one_or_none()
            if head is None or head.survey_key not in self.catalog.surveys:
                return None
            survey = self.catalog[head.survey_key]
            answers = {
                a.question_key: a
                for a in await session.scalars(
                    select(SurveyAnswer).where(SurveyAnswer.answer_set_id == answer_set_id)
                )
            }
            lines = []
            for question in survey.questions:
                answer = answers.get(question.key)
                if answer is None:
                    continue
                options = await self._options_for(session, question, head.need_category)
                lines.append(
                    CardLine(
                        question=question,
                        options=options,
                        choices=tuple(answer.choices or ()),
                        number=answer.number,
                        text=answer.free_text,
                        skipped=answer.skipped,
                    )
                )
        return ResponseCard(
            survey=survey,
            workshop_title=head.title,
            workshop_starts_at=head.starts_at,
            person=None if survey.anonymous else head.first_name,
            lines=tuple(lines),
        )

    async def digest(self, run_id: int) -> RunDigest | None:
        """The figures of a run for the facilitators' channel."""
        async with self._db.read() as session:
            return await read_digest(
                session,
                self.catalog,
                run_id,
                is_sqlite=self._db.is_sqlite,
                options_for=self._options_for,
            )

    # -- sweeps ---------------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Everything due now: invitations after workshops, follow-ups, anonymous answers
        moved out of their buffers, digests (after the last answers of their run moved)."""
        invited = await self.invite_after_workshops(POST_WORKSHOP, self._settings.survey_delay)
        invited += await self.invite_after_workshops(FOLLOW_UP, self._settings.follow_up_after)
        now = self._clock.now()
        cards = await self.flush_anonymous_answers(now)
        digests = await self.close_due_runs(now)
        return SweepReport(invited, digests, cards)

    async def flush_anonymous_answers(self, now: datetime | None = None) -> int:
        """Move complete anonymous answer buffers into answer sets; returns cards queued.

        Per run, one transaction takes the complete buffers of at least `min_group_size`
        people at once: it writes their answer sets in shuffled order (week only, no
        resident) and deletes their buffers. That transaction writes no live row tied to a
        person, and the participations were last written when each person finished, in
        transactions that wrote nothing anonymous: nothing left in the database ties one
        person to one answer set, only the batch to the run it belongs to.

        When the run has closed, whatever remains is moved even when fewer people are left
        (their figures are then protected by the small-count hiding of the statistics),
        and unfinished buffers are deleted: unfinished answers never count.
        """
        now = now or self._clock.now()
        minimum = self._settings.min_group_size
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    ConversationState.conversation,
                    func.count().filter(ConversationState.state == COMPLETE).label("complete"),
                )
                .where(ConversationState.conversation.startswith(BUFFER_PREFIX))
                .group_by(ConversationState.conversation)
            )
            waiting = {
                int(row.conversation.removeprefix(BUFFER_PREFIX)): row.complete for row in rows
            }
            if not waiting:
                return 0
            closed = set(
                await session.scalars(
                    select(SurveyRun.id).where(
                        SurveyRun.id.in_(waiting), SurveyRun.closes_at <= now
                    )
                )
            )
        cards = 0
        for run_id, complete in sorted(waiting.items()):
            if run_id in closed or complete >= minimum:
                cards += await self._flush_run(run_id, closing=run_id in closed, now=now)
        return cards

    async def _flush_run(self, run_id: int, *, closing: bool, now: datetime) -> int:
        """One transaction: the complete buffers of a run become answer sets (see above)."""
        conversation = f"{BUFFER_PREFIX}{run_id}"
        settings = self._settings
        async with self._db.write() as session:
            buffers = list(
                await session.execute(
                    select(ConversationState.user_id, ConversationState.data)
                    .where(
                        ConversationState.conversation == conversation,
                        ConversationState.state == COMPLETE,
                    )
                    .with_for_update()
                )
            )
            if not closing and len(buffers) < settings.min_group_size:
                return 0  # another instance moved some meanwhile
            run = (
                await session.execute(
                    select(SurveyRun.survey_key, SurveyRun.workshop_id).where(
                        SurveyRun.id == run_id
                    )
                )
            ).one()
            random.SystemRandom().shuffle(buffers)
            card = (
                run.survey_key in self.catalog.surveys
                and self.catalog[run.survey_key].channel_card
                and "responses" in settings.channel_notices
                and settings.admin_chat_id is not None
            )
            cards = 0
            for _, data in buffers:
                answer_set = SurveyAnswerSet(
                    run_id=run_id,
                    resident_id=None,
                    workshop_id=run.workshop_id,
                    time_bucket=date.fromisoformat(data["week"]),
                    completed=True,
                )
                session.add(answer_set)
                await session.flush()
                for question_key, answer in data.get("answers", {}).items():
                    await self._upsert_answer(session, answer_set.id, question_key, **answer)
                if card:
                    cards += await self._queue_card(session, answer_set.id, now)
            deleted = delete(ConversationState).where(
                ConversationState.conversation == conversation
            )
            if not closing:
                deleted = deleted.where(
                    ConversationState.user_id.in_([user_id for user_id, _ in buffers])
                )
            await session.execute(deleted)
            return cards

    async def invite_after_workshops(self, survey_key: str, delay: timedelta) -> int:
        """Open the run of each workshop whose poll is due and invite who attended.

        A workshop's poll is open from `delay` after its end (or the end of quiet hours
        then) for POLL_OPEN_FOR: the window is the workshop's, read from the database, so a
        sweep finds it whatever its period and however long the bot was stopped. A sweep
        that comes late opens the run for what is left of its window; after the whole
        window, the run is created closed (`opened_at` = `closes_at`: nobody is invited to
        a closed poll) and its digest tells the channel the poll was missed. People marked
        present later, while the run is open, are invited by a later sweep, but only if
        their invitation can go out (quiet hours) before the close. Returns the number of
        invitations queued.
        """
        now = self._clock.now()
        send_at = self._outside_quiet_hours(now)
        attended = (
            select(Registration.id)
            .where(Registration.workshop_id == Workshop.id, Registration.attended_at.is_not(None))
            .exists()
        )
        has_run = (
            select(SurveyRun.id)
            .where(SurveyRun.survey_key == survey_key, SurveyRun.workshop_id == Workshop.id)
            .exists()
        )
        async with self._db.write() as session:
            due = await session.execute(
                select(Workshop.id, Workshop.ends_at).where(
                    Workshop.ends_at <= now - delay,
                    Workshop.status != WorkshopStatus.CANCELLED,
                    attended,
                    ~has_run,
                )
            )
            new_runs = []
            for workshop_id, ends_at in due:
                closes_at = self._poll_close(ends_at + delay)
                new_runs.append(
                    {
                        "survey_key": survey_key,
                        "workshop_id": workshop_id,
                        "opened_at": min(send_at, closes_at),
                        "closes_at": closes_at,
                    }
                )
            if new_runs:
                await session.execute(
                    self._insert(SurveyRun)
                    .values(new_runs)
                    .on_conflict_do_nothing(
                        index_elements=["survey_key", "workshop_id"],
                        index_where=SurveyRun.workshop_id.is_not(None),
                    )
                )
            attendees = (
                select(
                    SurveyRun.id,
                    Registration.resident_id,
                    literal(ParticipationStatus.INVITED.value),
                    literal(now, UTCDateTime()),
                )
                .join(Registration, Registration.workshop_id == SurveyRun.workshop_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    SurveyRun.survey_key == survey_key,
                    SurveyRun.closes_at > send_at,
                    Registration.attended_at.is_not(None),
                    # Not people who withdrew their consent, nor erased ones (tombstones).
                    Resident.consented_at.is_not(None),
                )
                .distinct()
            )
            invited = (
                await session.execute(
                    self._insert(SurveyParticipation)
                    .from_select(["run_id", "resident_id", "status", "invited_at"], attendees)
                    .on_conflict_do_nothing(index_elements=["run_id", "resident_id"])
                    .returning(SurveyParticipation.id, SurveyParticipation.resident_id)
                )
            ).all()
            for row in invited:
                await enqueue_once(
                    session,
                    resident_id=row.resident_id,
                    kind=INVITATION,
                    payload={"participation_id": row.id},
                    dedupe_key=f"{INVITATION}:{row.id}",
                    not_before=send_at,
                    created_at=now,
                )
            return len(invited)

    async def close_due_runs(self, now: datetime | None = None) -> int:
        """Claim the runs whose time is up and queue their digest to the channel.

        The claim (`digest_sent_at` set where it was NULL) is one conditional UPDATE: two
        instances never queue two digests. A run whose anonymous answers still wait in
        buffers is claimed only once they have moved (flush_anonymous_answers), so that its
        digest counts them.
        """
        now = now or self._clock.now()
        buffered = (
            select(ConversationState.user_id)
            .where(
                ConversationState.conversation
                == literal(BUFFER_PREFIX) + cast(SurveyRun.id, String)
            )
            .exists()
        )
        async with self._db.write() as session:
            claimed = list(
                await session.scalars(
                    update(SurveyRun)
                    .where(
                        SurveyRun.closes_at <= now,
                        SurveyRun.digest_sent_at.is_(None),
                        SurveyRun.survey_key.in_(self.catalog.keys_where(digest=True)),
                        ~buffered,
                    )
                    .values(digest_sent_at=now)
                    .returning(SurveyRun.id)
                    .execution_options(synchronize_session=False)
                )
            )
            admin = self._settings.admin_chat_id
            if not claimed or admin is None:
                return 0
            for run_id in claimed:
                await enqueue_once(
                    session,
                    chat_id=admin,
                    kind=DIGEST,
                    payload={"run_id": run_id},
                    dedupe_key=f"{DIGEST}:{run_id}",
                    not_before=now,
                    created_at=now,
                )
            return len(claimed)

    def _poll_close(self, opens_at: datetime) -> datetime:
        """When a poll due at `opens_at` closes: POLL_OPEN_FOR after it can first be sent."""
        return self._outside_quiet_hours(opens_at) + self._settings.poll_open_for

    def _outside_quiet_hours(self, moment: datetime) -> datetime:
        """An invitation due during quiet hours waits for their end (nobody is woken up)."""
        period = self._quiet.quiet_period(moment)
        return moment if period is None else period[1]

    # -- the steps inside a unit of work --------------------------------------------------

    async def _locked(
        self, session: AsyncSession, telegram_id: int, participation_id: int
    ) -> _Run | None:
        """The person's participation, locked for this unit of work, with its run."""
        params = {"participation_id": participation_id, "telegram_id": telegram_id}
        row = (await session.execute(_LOCKED_PARTICIPATION, params)).one_or_none()
        if row is None or row.survey_key not in self.catalog.surveys:
            return None
        title = starts_at = category = None
        if row.workshop_id is not None:
            workshop = (
                await session.execute(_RUN_WORKSHOP, {"workshop_id": row.workshop_id})
            ).one()
            title, starts_at, category = workshop.title, workshop.starts_at, workshop.need_category
        return _Run(
            participation=row[0],
            telegram_id=telegram_id,
            survey=self.catalog[row.survey_key],
            run_id=row[0].run_id,
            workshop_id=row.workshop_id,
            closes_at=row.closes_at,
            workshop_title=title,
            workshop_starts_at=starts_at,
            need_category=category,
        )

    def _step(self, outcome: StepOutcome, run: _Run, **values: Any) -> Step:
        return Step(
            outcome,
            participation_id=run.participation.id,
            survey=run.survey,
            workshop_title=run.workshop_title,
            workshop_starts_at=run.workshop_starts_at,
            **values,
        )

    def _finished_or_closed(self, run: _Run, now: datetime) -> Step | None:
        if run.participation.status == ParticipationStatus.COMPLETED:
            return self._step(StepOutcome.ALREADY_DONE, run)
        if run.closes_at is not None and run.closes_at <= now:
            return self._step(StepOutcome.CLOSED, run)
        return None

    def _current_if(
        self, run: _Run, now: datetime, question_key: str | None = None, index: int | None = None
    ) -> QuestionDef | Step:
        """The current question if the action is about it; otherwise the Step to return."""
        blocked = self._finished_or_closed(run, now)
        if blocked is not None:
            return blocked
        current = run.participation.current_question
        question = run.survey.question(current) if current else None
        if question is None:
            return self._step(StepOutcome.STALE, run)
        if question_key is not None and question_key != question.key:
            return self._step(StepOutcome.STALE, run)
        if index is not None and index != run.survey.index_of(question.key):
            return self._step(StepOutcome.STALE, run)
        return question

    async def _begin(self, session: AsyncSession, run: _Run, now: datetime) -> Step:
        blocked = self._finished_or_closed(run, now)
        if blocked is not None:
            return blocked
        participation = run.participation
        current = participation.current_question
        if current is None or run.survey.question(current) is None:
            # Not started yet, or the question was removed from the definition since: from
            # the top (answers already given are kept and shown again as they were).
            participation.status = ParticipationStatus.IN_PROGRESS
            participation.current_question = run.survey.questions[0].key
            if participation.started_at is None and not run.survey.anonymous:
                participation.started_at = now
        return await self._ask(session, run)

    async def _ask(
        self, session: AsyncSession, run: _Run, outcome: StepOutcome = StepOutcome.ASK, **extra: Any
    ) -> Step:
        current = run.participation.current_question
        question = run.survey.question(current or "")
        assert question is not None
        run.participation.asked_at = self._clock.now()
        await question_shown(
            session, run.telegram_id, run.participation.id, question, run.participation.asked_at
        )
        index = run.survey.index_of(question.key)
        asked = AskedQuestion(
            participation_id=run.participation.id,
            survey=run.survey,
            question=question,
            index=index,
            options=await self._options(session, run, question),
            ticked=frozenset(await self._ticked(session, run, question)),
            workshop_title=run.workshop_title,
            workshop_starts_at=run.workshop_starts_at,
            first=index == 0,
        )
        return self._step(outcome, run, question=asked, **extra)

    async def _refuse(
        self, session: AsyncSession, run: _Run, problem: Problem, **extra: Any
    ) -> Step:
        return await self._ask(session, run, StepOutcome.INVALID, problem=problem, **extra)

    async def _options(
        self, session: AsyncSession, run: _Run, question: QuestionDef
    ) -> tuple[Option, ...]:
        return await self._options_for(session, question, run.need_category)

    async def _options_for(
        self, session: AsyncSession, question: QuestionDef, need_category: str | None
    ) -> tuple[Option, ...]:
        """The answer buttons, in order: dynamic choices first, then the static ones."""
        if question.type is QuestionType.SCALE:
            return tuple(Option(str(n), None) for n in SCALE)
        if question.type is QuestionType.YES_NO:
            return tuple(Option(key, None) for key in YES_NO)
        static = tuple(Option(c.key, c.text.as_dict()) for c in question.choices)
        static_keys = {option.key for option in static}
        dynamic: tuple[Option, ...] = ()
        if question.choices_from == "territories":
            rows = await session.execute(
                select(Territory.key, Territory.name).order_by(Territory.name, Territory.id)
            )
            dynamic = tuple(Option(key, name) for key, name in rows if key not in static_keys)
        elif question.choices_from == "workshop_topics":
            topics = question.topics.get(need_category or "") or question.topics["default"]
            dynamic = tuple(Option(c.key, c.text.as_dict()) for c in topics)
        return dynamic + static

    async def _ticked(self, session: AsyncSession, run: _Run, question: QuestionDef) -> list[str]:
        if question.type is not QuestionType.MULTIPLE:
            return []
        if run.survey.anonymous:
            buffer = await self._buffer(session, run)
            answer = buffer.data.get("answers", {}).get(question.key) if buffer else None
            return list((answer or {}).get("choices") or [])
        set_id = run.participation.answer_set_id
        if set_id is None:
            return []
        choices = await session.scalar(
            select(SurveyAnswer.choices).where(
                SurveyAnswer.answer_set_id == set_id, SurveyAnswer.question_key == question.key
            )
        )
        return list(choices or [])

    async def _toggle(
        self, session: AsyncSession, run: _Run, question: QuestionDef, key: str, now: datetime
    ) -> Step:
        ticked = set(await self._ticked(session, run, question))
        ticked ^= {key}
        order = [option.key for option in await self._options(session, run, question)]
        choices = [k for k in order if k in ticked]
        await self._save(session, run, question, now, choices=choices)
        return await self._ask(session, run)

    async def _record_and_advance(
        self,
        session: AsyncSession,
        run: _Run,
        question: QuestionDef,
        value: int | str | Sequence[str],
        now: datetime,
    ) -> Step:
        kind = question.type
        if kind is QuestionType.TEXT:
            if not isinstance(value, str):
                return await self._refuse(session, run, Problem.WRONG_TYPE)
            text = value.strip()
            if not text:
                return await self._refuse(session, run, Problem.EMPTY)
            if len(text) > question.text_limit:
                return await self._refuse(session, run, Problem.TOO_LONG, text_length=len(text))
            await self._save(session, run, question, now, text=text)
            return await self._advance(session, run, question, None, now)
        if kind is QuestionType.SCALE:
            if isinstance(value, bool) or not isinstance(value, int):
                return await self._refuse(session, run, Problem.WRONG_TYPE)
            if value not in SCALE:
                return await self._refuse(session, run, Problem.UNKNOWN_CHOICE)
            await self._save(session, run, question, now, number=value)
            return await self._advance(session, run, question, {str(value)}, now)
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
            return await self._refuse(session, run, Problem.WRONG_TYPE)
        if kind is not QuestionType.MULTIPLE and not isinstance(value, str):
            return await self._refuse(session, run, Problem.WRONG_TYPE)
        order = [option.key for option in await self._options(session, run, question)]
        if any(key not in order for key in keys):
            return await self._refuse(session, run, Problem.UNKNOWN_CHOICE)
        if not keys:
            return await self._refuse(session, run, Problem.NOTHING_TICKED)
        choices = [key for key in order if key in keys]
        await self._save(session, run, question, now, choices=choices)
        return await self._advance(session, run, question, set(choices), now)

    async def _save(
        self,
        session: AsyncSession,
        run: _Run,
        question: QuestionDef,
        now: datetime,
        *,
        choices: list[str] | None = None,
        number: int | None = None,
        text: str | None = None,
        skipped: bool = False,
    ) -> None:
        """Upsert the answer to one question, creating the answer set on the first answer
        (anonymous: in the person's buffer, see the module docstring)."""
        participation = run.participation
        answer = {"choices": choices, "number": number, "text": text, "skipped": skipped}
        if run.survey.anonymous:
            buffer = await self._buffer(session, run)
            if buffer is None:
                buffer = ConversationState(
                    user_id=run.telegram_id,
                    conversation=f"{BUFFER_PREFIX}{run.run_id}",
                    state=ANSWERING,
                    data={"answers": {}},
                    updated_at=now,
                )
                session.add(buffer)
            answers = dict(buffer.data.get("answers", {}))
            answers[question.key] = answer
            buffer.data = {**buffer.data, "answers": answers}
            buffer.updated_at = now
            return
        if participation.answer_set_id is None:
            answer_set = SurveyAnswerSet(
                run_id=run.run_id,
                resident_id=None if run.survey.anonymous else participation.resident_id,
                workshop_id=run.workshop_id,
                time_bucket=week_of(now, self._settings),
                completed=False,
            )
            session.add(answer_set)
            await session.flush()
            participation.answer_set_id = answer_set.id
        await self._upsert_answer(session, participation.answer_set_id, question.key, **answer)

    async def _upsert_answer(
        self,
        session: AsyncSession,
        answer_set_id: int,
        question_key: str,
        *,
        choices: list[str] | None,
        number: int | None,
        text: str | None,
        skipped: bool,
    ) -> None:
        values = {
            # SQL NULL, not JSON null: digests count choices with json_each and friends.
            "choices": choices if choices is not None else null(),
            "number": number,
            "free_text": text,
            "skipped": skipped,
        }
        statement = self._insert(SurveyAnswer).values(
            answer_set_id=answer_set_id, question_key=question_key, **values
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["answer_set_id", "question_key"], set_=values
            )
        )

    async def _buffer(self, session: AsyncSession, run: _Run) -> ConversationState | None:
        """The person's buffer of anonymous answers for this run (their row: locked with
        the participation, which every operation locks first)."""
        return await session.get(
            ConversationState, (run.telegram_id, f"{BUFFER_PREFIX}{run.run_id}")
        )

    async def _queue_card(self, session: AsyncSession, answer_set_id: int, now: datetime) -> int:
        queued = await enqueue_once(
            session,
            chat_id=self._settings.admin_chat_id,
            kind=RESPONSE_CARD,
            payload={"answer_set_id": answer_set_id},
            dedupe_key=f"{RESPONSE_CARD}:{answer_set_id}",
            not_before=now,
            created_at=now,
        )
        return int(queued)

    async def _advance(
        self,
        session: AsyncSession,
        run: _Run,
        question: QuestionDef,
        answer: set[str] | None,
        now: datetime,
    ) -> Step:
        following = run.survey.following(question, answer)
        if following is not None:
            run.participation.current_question = following.key
            return await self._ask(session, run)
        return await self._complete(session, run, now)

    async def _complete(self, session: AsyncSession, run: _Run, now: datetime) -> Step:
        """The last answer: the participation is completed. Anonymous answers stay in the
        buffer, marked complete, until the sweep moves them with other people's (this
        transaction writes no anonymous row); other answers are complete at once."""
        participation = run.participation
        survey = run.survey
        participation.status = ParticipationStatus.COMPLETED
        participation.current_question = None
        participation.asked_at = None
        await survey_finished(
            session, self.catalog, run.telegram_id, participation.resident_id, participation.id
        )
        if survey.anonymous:
            buffer = await self._buffer(session, run)
            assert buffer is not None  # every question answered or skipped wrote to it
            buffer.state = COMPLETE
            buffer.data = {**buffer.data, "week": week_of(now, self._settings).isoformat()}
            buffer.updated_at = now
            return self._step(StepOutcome.FINISHED, run)
        answer_set_id = participation.answer_set_id
        assert answer_set_id is not None  # every question answered or skipped wrote a row
        await session.execute(
            update(SurveyAnswerSet)
            .where(SurveyAnswerSet.id == answer_set_id)
            .values(completed=True)
        )
        participation.completed_at = now
        settings = self._settings
        card = (
            survey.channel_card
            and "responses" in settings.channel_notices
            and settings.admin_chat_id is not None
        )
        if card:
            await self._queue_card(session, answer_set_id, now)
        return self._step(StepOutcome.FINISHED, run, card_queued=card)

    async def _run_for(
        self,
        session: AsyncSession,
        survey_key: str,
        workshop_id: int | None,
        closes_at: datetime | None,
        now: datetime,
    ) -> int:
        """The run of a survey (for a workshop, or the always-open one), created if needed."""
        if workshop_id is None:
            existing, params = _ALWAYS_OPEN_RUN, {"survey_key": survey_key}
        else:
            existing, params = _WORKSHOP_RUN, {"survey_key": survey_key, "workshop_id": workshop_id}
        run_id = await session.scalar(existing, params)
        if run_id is not None:  # the usual case: only the first person creates it
            return run_id
        if workshop_id is None:
            target = {
                "index_elements": ["survey_key"],
                "index_where": SurveyRun.workshop_id.is_(None),
            }
        else:
            target = {
                "index_elements": ["survey_key", "workshop_id"],
                "index_where": SurveyRun.workshop_id.is_not(None),
            }
        await session.execute(
            self._insert(SurveyRun)
            .values(
                survey_key=survey_key, workshop_id=workshop_id, opened_at=now, closes_at=closes_at
            )
            .on_conflict_do_nothing(**target)
        )
        run_id = await session.scalar(existing, params)
        assert run_id is not None
        return run_id

    async def _participation_for(
        self, session: AsyncSession, run_id: int, resident_id: int, now: datetime
    ) -> int:
        """One participation per person and run: a double tap finds the existing one."""
        params = {"run_id": run_id, "resident_id": resident_id}
        participation_id = await session.scalar(_PARTICIPATION, params)
        if participation_id is not None:
            return participation_id
        await session.execute(
            self._insert(SurveyParticipation)
            .values(
                run_id=run_id,
                resident_id=resident_id,
                status=ParticipationStatus.INVITED,
                invited_at=now,
            )
            .on_conflict_do_nothing(index_elements=["run_id", "resident_id"])
        )
        participation_id = await session.scalar(_PARTICIPATION, params)
        assert participation_id is not None
        return participation_id
