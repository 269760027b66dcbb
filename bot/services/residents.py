"""Residents: consent and language. Nobody is stored before they consent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, true, update

from bot.clock import Clock
from storage.db import Database
from storage.models import ConsentEvent, Resident
from storage.results import affected_rows

# Bumped when the privacy notice changes in substance, so consent history says what was agreed.
NOTICE_VERSION = "2026-11"
# last_seen_at is the retention clock: it is written at most this often per person, so that an
# ordinary tap costs no write (a retention notice only goes to people away for months, so the
# first tap after it always writes, and clears it).
SEEN_PRECISION = timedelta(hours=1)


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


# Read at the start of every tap (the person's language and consent), so built once: building
# a statement costs more than running it (bench/journey.py).
_PROFILE = select(
    Resident.id,
    Resident.telegram_id,
    Resident.first_name,
    Resident.language,
    Resident.consented_at.is_not(None).label("consented"),
).where(Resident.telegram_id == bindparam("telegram_id"))


class ResidentService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # Telegram id -> when this process last recorded them as seen (bounded below).
        self._seen: dict[int, datetime] = {}

    async def seen(self, telegram_id: int, *, private: bool = True) -> None:
        """Any interaction: move the retention clock and cancel a pending retention notice.

        A private update also proves the person can be written to again (marked unreachable
        after a 403, they came back): a consenting resident becomes reachable.

        One conditional UPDATE, at most about once per SEEN_PRECISION per person and process
        (it matches nothing for someone who is not a resident). The time is remembered only
        once the write succeeded, so that a failed write is retried at the next update.
        """
        now = self._clock.now()
        last = self._seen.get(telegram_id)
        if last is not None and now - SEEN_PRECISION < last <= now:
            return
        may_write_to = and_(Resident.consented_at.is_not(None), Resident.erased_at.is_(None))
        values: dict[str, Any] = {"last_seen_at": now, "retention_notice_at": None}
        stale = [
            Resident.last_seen_at.is_(None),
            Resident.last_seen_at < now - SEEN_PRECISION,
            Resident.last_seen_at > now,
            Resident.retention_notice_at.is_not(None),
        ]
        if private:
            values["is_active"] = case((may_write_to, true()), else_=Resident.is_active)
            stale.append(and_(Resident.is_active.is_(False), may_write_to))
        async with self._db.write() as session:
            await session.execute(
                update(Resident)
                .where(Resident.telegram_id == telegram_id, or_(*stale))
                .values(values)
                .execution_options(synchronize_session=False)
            )
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[telegram_id] = now

    async def set_reachable(self, telegram_id: int, reachable: bool) -> None:
        """Telegram said the person blocked the bot (False) or unblocked it (True).

        Not an interaction: it does not move the retention clock.
        """
        async with self._db.write() as session:
            await session.execute(
                update(Resident)
                .where(Resident.telegram_id == telegram_id, Resident.is_active != reachable)
                .values(is_active=reachable)
            )

    async def profile(self, telegram_id: int) -> ResidentProfile | None:
        async with self._db.snapshot() as session:
            row = (await session.execute(_PROFILE, {"telegram_id": telegram_id})).one_or_none()
        if row is None:
            return None
        return ResidentProfile(
            id=row.id,
            telegram_id=row.telegram_id,
            first_name=row.first_name,
            language=row.language,
            consented=bool(row.consented),
        )

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
            changed = await affected_rows(
                session,
                update(Resident)
                .where(Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None))
                .values(language=language, last_seen_at=self._clock.now()),
            )
            return changed == 1

    async def mark_unreachable(self, resident_id: int) -> None:
        """Telegram said the person blocked the bot or left: stop writing to them."""
        async with self._db.write() as session:
            await session.execute(
                update(Resident).where(Resident.id == resident_id).values(is_active=False)
            )
