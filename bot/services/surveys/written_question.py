"""The survey question that waits for a written answer, as a conversation (kind "survey_text").

Only the question shown last among a person's surveys can take a typed message, and only for
TEXT_ANSWER_WINDOW after it was shown. The engine keeps the conversation row in step with the
participations, in the unit of work that shows a question or completes a survey: showing a
text question opens it (at the time shown), showing any other question closes it, and
finishing a survey hands it back to the question shown last among the others, if that one
waits for text. The free-text router (handlers/free_text.py) reads it with the person's other
conversations; the engine then checks that the question is still current before saving.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.conversations import SURVEY_TEXT, end, put
from bot.services.surveys.definitions import QuestionDef, QuestionType, SurveyCatalog
from storage.models import ParticipationStatus, SurveyParticipation, SurveyRun

# A typed message answers a text question only this long after the question was shown.
TEXT_ANSWER_WINDOW = timedelta(hours=24)
WAITING = "waiting"


async def question_shown(
    session: AsyncSession,
    telegram_id: int,
    participation_id: int,
    question: QuestionDef,
    at: datetime,
) -> None:
    """A question was just shown: it is the one shown last, so it decides."""
    if question.type is QuestionType.TEXT:
        data = {"participation_id": participation_id, "question": question.key}
        await put(session, telegram_id, SURVEY_TEXT, WAITING, data, at)
    else:
        await end(session, telegram_id, SURVEY_TEXT)


async def survey_finished(
    session: AsyncSession,
    catalog: SurveyCatalog,
    telegram_id: int,
    resident_id: int,
    participation_id: int,
) -> None:
    """A survey was just completed: the question shown last among the person's other surveys
    in progress decides (at the time it was shown)."""
    last = (
        await session.execute(
            select(
                SurveyParticipation.id,
                SurveyParticipation.current_question,
                SurveyParticipation.asked_at,
                SurveyRun.survey_key,
            )
            .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
            .where(
                SurveyParticipation.resident_id == resident_id,
                SurveyParticipation.id != participation_id,
                SurveyParticipation.status == ParticipationStatus.IN_PROGRESS,
                SurveyParticipation.asked_at.is_not(None),
            )
            .order_by(SurveyParticipation.asked_at.desc(), SurveyParticipation.id.desc())
            .limit(1)
        )
    ).one_or_none()
    survey = catalog.surveys.get(last.survey_key) if last is not None else None
    question = survey.question(last.current_question or "") if survey and last else None
    if last is None or question is None or last.asked_at is None:
        await end(session, telegram_id, SURVEY_TEXT)
        return
    await question_shown(session, telegram_id, last.id, question, last.asked_at)


def awaited(data: dict[str, Any], shown_at: datetime, now: datetime) -> int | None:
    """The participation whose question waits for this text, if it was shown recently enough
    (a text days later is not an answer to a forgotten question)."""
    if shown_at <= now - TEXT_ANSWER_WINDOW:
        return None
    return int(data["participation_id"])
