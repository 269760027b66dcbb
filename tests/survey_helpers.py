"""Builders for the survey tests: the service with test settings, attendees, table snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.residents import ResidentService
from bot.services.surveys.definitions import load_surveys
from bot.services.surveys.engine import SurveyService
from bot.settings import Settings, load_settings
from storage.db import Database
from storage.models import (
    AttendanceSource,
    Registration,
    RegistrationStatus,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyParticipation,
    Workshop,
)

# The facilitators' channel in tests: a group, so a negative id.
ADMIN_CHAT = -100777


def survey_settings(
    database_url: str = "sqlite+aiosqlite:///:memory:", **overrides: Any
) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "admin_chat_id": ADMIN_CHAT}
    values.update(overrides)
    return load_settings(**values)


def survey_service(db: Database, clock: ManualClock, **overrides: Any) -> SurveyService:
    return SurveyService(db, clock, load_surveys(), survey_settings(**overrides))


async def resident(
    db: Database, clock: ManualClock, telegram_id: int, name: str = "Ana", language: str = "fr"
) -> int:
    return (await ResidentService(db, clock).give_consent(telegram_id, name, language)).id


async def registered(
    db: Database,
    clock: ManualClock,
    telegram_id: int,
    workshop_id: int,
    *,
    attended: bool = True,
    name: str | None = None,
    language: str = "fr",
) -> int:
    """A consenting resident with a confirmed seat, marked present (or not)."""
    resident_id = await resident(db, clock, telegram_id, name or f"P{telegram_id}", language)
    async with db.write() as session:
        starts_at = await session.scalar(
            select(Workshop.starts_at).where(Workshop.id == workshop_id)
        )
        session.add(
            Registration(
                workshop_id=workshop_id,
                resident_id=resident_id,
                status=RegistrationStatus.CONFIRMED,
                created_at=clock.now(),
                confirmed_at=clock.now(),
                attended_at=starts_at + timedelta(minutes=5) if attended else None,
                attendance_source=AttendanceSource.CODE if attended else None,
            )
        )
    return resident_id


async def workshop_end(db: Database, workshop_id: int) -> datetime:
    async with db.read() as session:
        ends_at = await session.scalar(select(Workshop.ends_at).where(Workshop.id == workshop_id))
    assert ends_at is not None
    return ends_at


async def participations(db: Database) -> list[dict[str, Any]]:
    async with db.read() as session:
        rows = await session.scalars(select(SurveyParticipation).order_by(SurveyParticipation.id))
        return [_columns(row) for row in rows]


async def answer_sets(db: Database) -> list[dict[str, Any]]:
    async with db.read() as session:
        rows = await session.scalars(select(SurveyAnswerSet).order_by(SurveyAnswerSet.id))
        return [_columns(row) for row in rows]


async def answers(db: Database) -> dict[str, dict[str, Any]]:
    """Answers by question key (tests with one answer set)."""
    async with db.read() as session:
        rows = await session.scalars(select(SurveyAnswer).order_by(SurveyAnswer.id))
        return {row.question_key: _columns(row) for row in rows}


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}
