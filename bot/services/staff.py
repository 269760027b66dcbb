"""Staff roles: who may take the roll, broadcast, or read statistics."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.clock import Clock
from storage.db import Database
from storage.models import StaffMember


class StaffService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def seed(self, members: tuple[tuple[str, int], ...]) -> None:
        """Give the roles of the STAFF setting (idempotent; never removes a role)."""
        if not members:
            return
        insert = sqlite_insert if self._db.is_sqlite else pg_insert
        async with self._db.write() as session:
            await session.execute(
                insert(StaffMember)
                .values(
                    [
                        {"telegram_id": user_id, "role": role, "granted_at": self._clock.now()}
                        for role, user_id in members
                    ]
                )
                .on_conflict_do_nothing(index_elements=["telegram_id", "role"])
            )

    async def roles_of(self, telegram_id: int) -> frozenset[str]:
        async with self._db.read() as session:
            roles = await session.scalars(
                select(StaffMember.role).where(StaffMember.telegram_id == telegram_id)
            )
            return frozenset(roles)

    async def has_role(self, telegram_id: int, *roles: str) -> bool:
        """True when the person holds any of `roles` (coordinators may do everything)."""
        held = await self.roles_of(telegram_id)
        return bool(held & {*roles, "coordinator"})
