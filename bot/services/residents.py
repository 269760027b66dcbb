"""Residents: consent and language. Nobody is stored before they consent."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from bot.clock import Clock
from storage.db import Database
from storage.models import ConsentEvent, Resident

# Bumped when the privacy notice changes in substance, so consent history says what was agreed.
NOTICE_VERSION = "2026-11"


@dataclass(frozen=True)
class ResidentProfile:
    id: int
    telegram_id: int
    first_name: str | None
    language: str | None
    consented: bool


def _profile(resident: Resident) -> ResidentProfile:
    assert resident.telegram_id is not None
    return ResidentProfile(
        id=resident.id,
        telegram_id=resident.telegram_id,
        first_name=resident.first_name,
        language=resident.language,
        consented=resident.consented_at is not None,
    )


class ResidentService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def profile(self, telegram_id: int) -> ResidentProfile | None:
        async with self._db.read() as session:
            resident = await session.scalar(
                select(Resident).where(Resident.telegram_id == telegram_id)
            )
            return _profile(resident) if resident else None

    async def give_consent(
        self, telegram_id: int, first_name: str | None, language: str
    ) -> ResidentProfile:
        """Record consent (idempotent: a second tap changes nothing)."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident = await session.scalar(
                select(Resident).where(Resident.telegram_id == telegram_id)
            )
            if resident is None:
                resident = Resident(
                    telegram_id=telegram_id,
                    first_name=first_name,
                    language=language,
                    created_at=now,
                    is_active=True,
                )
                session.add(resident)
                await session.flush()
            if resident.consented_at is None:
                resident.consented_at = now
                resident.is_active = True
                session.add(
                    ConsentEvent(
                        resident_id=resident.id, kind="given", notice_version=NOTICE_VERSION, at=now
                    )
                )
            resident.last_seen_at = now
            return _profile(resident)

    async def set_language(self, telegram_id: int, language: str) -> bool:
        """Remember the person's language; False when they are not a (consenting) resident."""
        async with self._db.write() as session:
            result = await session.execute(
                update(Resident)
                .where(Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None))
                .values(language=language, last_seen_at=self._clock.now())
            )
            return result.rowcount == 1

    async def mark_unreachable(self, resident_id: int) -> None:
        """Telegram said the person blocked the bot or left: stop writing to them."""
        async with self._db.write() as session:
            await session.execute(
                update(Resident).where(Resident.id == resident_id).values(is_active=False)
            )
