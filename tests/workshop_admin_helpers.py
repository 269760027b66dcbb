"""Shared builders for the workshop management and desk enrolment tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.registration import RegisterOutcome, RegistrationService
from bot.services.residents import ResidentService
from bot.settings import Settings
from storage.db import Database
from storage.models import OutboxMessage, Registration, Resident, Workshop
from tests.e2e import settings_for
from tests.factories import new_clock

COORDINATOR = 9001
MEDIATOR = 9002
FACILITATOR = 9003


@dataclass
class StaffWorld:
    """The emulator's client and the settings of a bot with staff, on the test's database."""

    client: EmulatorClient
    settings: Settings
    db: Database
    clock: ManualClock


@asynccontextmanager
async def staff_world(db: Database, database_url: str, staff: str) -> AsyncIterator[StaffWorld]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(emulator, database_url, outbox_sweep_seconds=0.2, staff=staff)
        yield StaffWorld(client, settings, db, new_clock())


async def sign_up(
    db: Database, clock: ManualClock, telegram_id: int, workshop_id: int, language: str = "fr"
) -> RegisterOutcome:
    """A resident who consented and registered through the ordinary rules."""
    await ResidentService(db, clock).give_consent(telegram_id, f"P{telegram_id}", language)
    result = await RegistrationService(db, clock).register(telegram_id, workshop_id)
    return result.outcome


async def outbox_of(db: Database, kind: str) -> list[OutboxMessage]:
    async with db.read() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
        )
        return list(rows)


async def telegram_ids_of(db: Database, resident_ids: list[int | None]) -> set[int | None]:
    async with db.read() as session:
        rows = await session.scalars(
            select(Resident.telegram_id).where(Resident.id.in_(resident_ids))
        )
        return set(rows)


async def places(db: Database, workshop_id: int) -> dict[int | None, str]:
    """Telegram id (None for desk records) -> registration status, for one workshop: the live
    registration when there is one (a person may also have cancelled ones, in any row order)."""
    async with db.read() as session:
        rows = await session.execute(
            select(Resident.telegram_id, Registration.status)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Registration.workshop_id == workshop_id)
        )
        statuses: dict[int | None, str] = {}
        for telegram_id, status in rows:
            if statuses.get(telegram_id, "cancelled") == "cancelled":
                statuses[telegram_id] = status
        return statuses


async def workshop_row(db: Database, workshop_id: int) -> Workshop:
    async with db.read() as session:
        workshop = await session.get(Workshop, workshop_id)
        assert workshop is not None
        return workshop
