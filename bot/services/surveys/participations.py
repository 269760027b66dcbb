"""Where a person is in a survey: runs and participations, found, created and locked.

A survey run is one poll of a survey (for one workshop, or the always-open one); a
participation (one per person and run, a unique index) records where the person is
(`current_question`, shown at `asked_at`), so a restart resumes where they were. Both are
created by whoever comes first: a concurrent double tap finds the rows the other one made.

Every action of a person locks their participation row first (`lock`, giving a `Turn`), so
concurrent taps of one person are applied one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.surveys.definitions import SurveyCatalog, SurveyDef
from storage.models import (
    ParticipationStatus,
    Resident,
    SurveyParticipation,
    SurveyRun,
    Theme,
    Workshop,
)

# SQLite's or PostgreSQL's insert(), chosen once by the service: both have ON CONFLICT.
DialectInsert = Callable[..., Any]

# Statements of the survey questions asked right after each registration, built once with bound
# parameters: building a statement costs more than running it (bench/journey.py).
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


@dataclass
class Turn:
    """One action of a person: their participation, locked in this unit of work, with its
    run and the moment the action began."""

    session: AsyncSession
    now: datetime
    participation: SurveyParticipation
    telegram_id: int
    survey: SurveyDef
    run_id: int
    workshop_id: int | None
    closes_at: datetime | None
    workshop_title: dict[str, str] | None
    workshop_starts_at: datetime | None
    need_category: str | None


class Participations:
    def __init__(self, catalog: SurveyCatalog, insert: DialectInsert) -> None:
        self._catalog = catalog
        self._insert = insert

    async def lock(
        self, session: AsyncSession, telegram_id: int, participation_id: int, now: datetime
    ) -> Turn | None:
        """The person's participation, locked for this unit of work, with its run; None when
        it is not theirs, they withdrew their consent, or its survey is no longer shipped."""
        params = {"participation_id": participation_id, "telegram_id": telegram_id}
        row = (await session.execute(_LOCKED_PARTICIPATION, params)).one_or_none()
        if row is None or row.survey_key not in self._catalog.surveys:
            return None
        title = starts_at = category = None
        if row.workshop_id is not None:
            workshop = (
                await session.execute(_RUN_WORKSHOP, {"workshop_id": row.workshop_id})
            ).one()
            title, starts_at, category = workshop.title, workshop.starts_at, workshop.need_category
        return Turn(
            session=session,
            now=now,
            participation=row[0],
            telegram_id=telegram_id,
            survey=self._catalog[row.survey_key],
            run_id=row[0].run_id,
            workshop_id=row.workshop_id,
            closes_at=row.closes_at,
            workshop_title=title,
            workshop_starts_at=starts_at,
            need_category=category,
        )

    async def run_for(
        self,
        session: AsyncSession,
        survey_key: str,
        workshop_id: int | None,
        closes_at: datetime | None,
        now: datetime,
    ) -> int:
        """The run of a survey (for a workshop, or the always-open one), created if needed."""
        params: dict[str, Any]
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

    async def participation_for(
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
