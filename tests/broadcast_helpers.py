"""Builders for broadcast tests: many residents at once, needs answers, registrations."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, insert, select

from bot.clock import ManualClock
from storage.db import Database
from storage.models import (
    OutboxMessage,
    Registration,
    Resident,
    StaffMember,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
)


async def seed_residents(
    db: Database,
    clock: ManualClock,
    telegram_ids: list[int],
    *,
    language: str = "fr",
    **values: object,
) -> list[int]:
    """Consenting residents in one statement; returns their ids in the same order."""
    now = clock.now()
    rows = [
        {
            "telegram_id": telegram_id,
            "first_name": f"P{telegram_id}",
            "language": language,
            "consented_at": now,
            "created_at": now,
            **values,
        }
        for telegram_id in telegram_ids
    ]
    async with db.write() as session:
        await session.execute(insert(Resident), rows)
        found = dict(
            (
                await session.execute(
                    select(Resident.telegram_id, Resident.id).where(
                        Resident.telegram_id.in_(telegram_ids)
                    )
                )
            ).all()
        )
    return [found[t] for t in telegram_ids]


async def register(
    db: Database, clock: ManualClock, workshop_id: int, resident_ids: list[int], status: str
) -> None:
    async with db.write() as session:
        await session.execute(
            insert(Registration),
            [
                {
                    "workshop_id": workshop_id,
                    "resident_id": resident_id,
                    "status": status,
                    "created_at": clock.now(),
                    "waitlist_position": position if status == "waitlisted" else None,
                }
                for position, resident_id in enumerate(resident_ids, start=1)
            ],
        )


async def answer_needs(
    db: Database, clock: ManualClock, resident_id: int, question: str, choices: list[str]
) -> None:
    """A needs-survey answer of a person (the survey is not anonymous)."""
    async with db.write() as session:
        run_id = await session.scalar(select(SurveyRun.id).where(SurveyRun.survey_key == "needs"))
        if run_id is None:
            run = SurveyRun(survey_key="needs", opened_at=clock.now())
            session.add(run)
            await session.flush()
            run_id = run.id
        answer_set = await session.scalar(
            select(SurveyAnswerSet).where(
                SurveyAnswerSet.run_id == run_id, SurveyAnswerSet.resident_id == resident_id
            )
        )
        if answer_set is None:
            answer_set = SurveyAnswerSet(
                run_id=run_id, resident_id=resident_id, time_bucket=date(2026, 11, 30)
            )
            session.add(answer_set)
            await session.flush()
        session.add(
            SurveyAnswer(answer_set_id=answer_set.id, question_key=question, choices=choices)
        )


async def make_staff(db: Database, clock: ManualClock, telegram_id: int, role: str) -> None:
    async with db.write() as session:
        session.add(StaffMember(telegram_id=telegram_id, role=role, granted_at=clock.now()))


async def outbox_counts(db: Database, broadcast_id: int) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count())
            .where(OutboxMessage.broadcast_id == broadcast_id)
            .group_by(OutboxMessage.status)
        )
        return {status: count for status, count in rows}
