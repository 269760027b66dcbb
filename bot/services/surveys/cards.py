"""What the surveys show: the data a handler renders, never a write.

A question card (`AskedQuestion`: the question, its answer buttons, what is ticked so far, the
workshop it is about) and the three messages the outbox sends about surveys, by kind: the
invitation to a poll, the response card of a completed answer set, and the digest of a run,
all for handlers/surveys.py to put into words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
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
from storage.db import Database
from storage.models import (
    ParticipationStatus,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyParticipation,
    SurveyRun,
    Territory,
    Theme,
    Workshop,
)

# Outbox kinds, rendered by handlers/surveys.py.
INVITATION = "survey_invitation"
RESPONSE_CARD = "survey_response"
DIGEST = "survey_digest"


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


async def options_for(
    session: AsyncSession, question: QuestionDef, need_category: str | None
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


class SurveyCards:
    """The outbox's survey messages, read when they are sent (so they show the latest)."""

    def __init__(self, db: Database, clock: Clock, catalog: SurveyCatalog) -> None:
        self._db = db
        self._clock = clock
        self._catalog = catalog

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
        if row is None or row.survey_key not in self._catalog.surveys:
            return None
        if row.status == ParticipationStatus.COMPLETED:
            return None
        if row.closes_at is not None and row.closes_at <= now:
            return None
        return InvitationView(
            participation_id, self._catalog[row.survey_key], row.title, row.starts_at, row.status
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
            if head is None or head.survey_key not in self._catalog.surveys:
                return None
            survey = self._catalog[head.survey_key]
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
                options = await options_for(session, question, head.need_category)
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
                self._catalog,
                run_id,
                is_sqlite=self._db.is_sqlite,
                options_for=options_for,
            )
