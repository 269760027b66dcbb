"""The digest of a survey run: respondents, averages, answer counts and free comments.

Everything is counted by the database over the completed answer sets of the run; choices
are JSON lists, unnested with json_each (SQLite) or json_array_elements_text (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.surveys.definitions import (
    Option,
    QuestionDef,
    QuestionType,
    SurveyCatalog,
    SurveyDef,
)
from storage.models import (
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyParticipation,
    SurveyRun,
    Theme,
    Workshop,
)

OptionsFor = Callable[[AsyncSession, QuestionDef, str | None], Awaitable[tuple[Option, ...]]]


@dataclass(frozen=True)
class OptionCount:
    option: Option
    count: int


@dataclass(frozen=True)
class QuestionSummary:
    question: QuestionDef
    answered: int
    skipped: int
    average: float | None  # scales
    counts: tuple[OptionCount, ...]  # every option, zero counts included, in button order
    texts: tuple[str, ...]  # written answers, oldest first
    # The same question asked elsewhere (compare_with) for the same workshop: average, answers.
    before: tuple[float, int] | None


@dataclass(frozen=True)
class RunDigest:
    run_id: int
    survey: SurveyDef
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None
    respondents: int  # completed answer sets
    invited: int  # participations: the attendees asked
    questions: tuple[QuestionSummary, ...]
    closes_at: datetime | None = None
    # The whole window passed before the poll could be sent (the bot was stopped): the run
    # was opened closed, nobody was asked (SurveyService.invite_after_workshops).
    missed: bool = False


async def read_digest(
    session: AsyncSession,
    catalog: SurveyCatalog,
    run_id: int,
    *,
    is_sqlite: bool,
    options_for: OptionsFor,
) -> RunDigest | None:
    head = (
        await session.execute(
            select(
                SurveyRun.survey_key,
                SurveyRun.workshop_id,
                SurveyRun.opened_at,
                SurveyRun.closes_at,
                Workshop.title,
                Workshop.starts_at,
                Theme.need_category,
            )
            .outerjoin(Workshop, Workshop.id == SurveyRun.workshop_id)
            .outerjoin(Theme, Theme.id == Workshop.theme_id)
            .where(SurveyRun.id == run_id)
        )
    ).one_or_none()
    if head is None or head.survey_key not in catalog.surveys:
        return None
    survey = catalog[head.survey_key]
    completed = select(SurveyAnswerSet.id).where(
        SurveyAnswerSet.run_id == run_id, SurveyAnswerSet.completed
    )
    in_run = SurveyAnswer.answer_set_id.in_(completed)

    respondents = await session.scalar(select(func.count()).select_from(completed.subquery()))
    invited = await session.scalar(
        select(func.count())
        .select_from(SurveyParticipation)
        .where(SurveyParticipation.run_id == run_id)
    )
    tallies = {
        row.question_key: row
        for row in await session.execute(
            select(
                SurveyAnswer.question_key,
                func.sum(case((SurveyAnswer.skipped, 0), else_=1)).label("answered"),
                func.sum(case((SurveyAnswer.skipped, 1), else_=0)).label("skipped"),
                func.avg(SurveyAnswer.number).label("average"),
            )
            .where(in_run)
            .group_by(SurveyAnswer.question_key)
        )
    }
    counts: dict[tuple[str, str], int] = {}
    for key, value, count in await session.execute(
        select(SurveyAnswer.question_key, SurveyAnswer.number, func.count())
        .where(in_run, SurveyAnswer.number.is_not(None))
        .group_by(SurveyAnswer.question_key, SurveyAnswer.number)
    ):
        counts[(key, str(value))] = count
    elements = (
        func.json_each(SurveyAnswer.choices)
        if is_sqlite
        else func.json_array_elements_text(SurveyAnswer.choices)
    ).table_valued("value")
    for key, value, count in await session.execute(
        select(SurveyAnswer.question_key, elements.c.value, func.count())
        .select_from(SurveyAnswer)
        .join(elements, true())
        .where(in_run, SurveyAnswer.choices.is_not(None))
        .group_by(SurveyAnswer.question_key, elements.c.value)
    ):
        counts[(key, str(value))] = count
    texts: dict[str, list[str]] = {}
    for key, text in await session.execute(
        select(SurveyAnswer.question_key, SurveyAnswer.free_text)
        .where(in_run, SurveyAnswer.free_text.is_not(None))
        .order_by(SurveyAnswer.id)
    ):
        if text is not None:  # the query keeps only written answers
            texts.setdefault(key, []).append(text)

    summaries = []
    for question in survey.questions:
        tally = tallies.get(question.key)
        options = await options_for(session, question, head.need_category)
        summaries.append(
            QuestionSummary(
                question=question,
                answered=int(tally.answered) if tally else 0,
                skipped=int(tally.skipped) if tally else 0,
                average=float(tally.average) if tally and tally.average is not None else None,
                counts=_option_counts(question, options, counts),
                texts=tuple(texts.get(question.key, ())),
                before=await _compared(session, question, head.workshop_id),
            )
        )
    return RunDigest(
        run_id=run_id,
        survey=survey,
        workshop_title=head.title,
        workshop_starts_at=head.starts_at,
        respondents=respondents or 0,
        invited=invited or 0,
        questions=tuple(summaries),
        closes_at=head.closes_at,
        missed=head.closes_at is not None and head.opened_at >= head.closes_at,
    )


def _option_counts(
    question: QuestionDef, options: tuple[Option, ...], counts: dict[tuple[str, str], int]
) -> tuple[OptionCount, ...]:
    """Every option with its count, zeros included; answers whose option is gone since (a
    neighbourhood removed) are still counted, under their key."""
    if question.type is QuestionType.TEXT:
        return ()
    known = {option.key for option in options}
    gone = sorted(value for key, value in counts if key == question.key and value not in known)
    return tuple(
        OptionCount(option, counts.get((question.key, option.key), 0))
        for option in (*options, *(Option(value, value) for value in gone))
    )


async def _compared(
    session: AsyncSession, question: QuestionDef, workshop_id: int | None
) -> tuple[float, int] | None:
    """Average and count of the question this one is compared with, for the same workshop."""
    if question.compare_with is None or workshop_id is None:
        return None
    survey_key, _, question_key = question.compare_with.partition(".")
    average, count = (
        await session.execute(
            select(func.avg(SurveyAnswer.number), func.count(SurveyAnswer.number))
            .join(SurveyAnswerSet, SurveyAnswerSet.id == SurveyAnswer.answer_set_id)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .where(
                SurveyRun.survey_key == survey_key,
                SurveyRun.workshop_id == workshop_id,
                SurveyAnswerSet.completed,
                SurveyAnswer.question_key == question_key,
                SurveyAnswer.number.is_not(None),
            )
        )
    ).one()
    if not count:
        return None
    return float(average), int(count)
