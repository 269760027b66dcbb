"""Staff roles: who may take the roll, broadcast, read statistics or give roles.

Roles live in staff_roles; every grant and revocation is also written to role_changes (who,
what, when) in the same transaction, with a notice to the person concerned in the outbox.
The first roles come from the STAFF setting; after that, coordinators give and take roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import groupby

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.dml import Insert as PgInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.dml import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from storage.db import Database
from storage.models import (
    OutboxMessage,
    PendingStaffMenu,
    Resident,
    RoleChange,
    StaffMember,
    StaffRole,
)
from storage.results import affected_rows

# Outbox kind of the short message telling someone a role was given or taken back.
ROLE_NOTICE = "role_change"
COORDINATOR = StaffRole.COORDINATOR.value


class RoleOutcome(StrEnum):
    DONE = "done"
    ALREADY_HELD = "already_held"  # granting a role the person has: nothing changes
    NOT_HELD = "not_held"  # revoking a role the person does not have: nothing changes
    LAST_COORDINATOR = "last_coordinator"  # the programme must keep one coordinator
    NOT_ALLOWED = "not_allowed"  # the actor is not (or no longer) a coordinator


@dataclass(frozen=True)
class StaffMenu:
    """What a person's command menu is made of: their roles and their language, if known."""

    telegram_id: int
    roles: frozenset[str]
    language: str | None


class StaffService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # Who has a command menu waiting (PendingStaffMenu), known without a query: this is
        # asked on every update. Loaded at start and reloaded now and then (another instance
        # may have added someone); kept in step with this instance's own changes.
        self._pending_menus: set[int] = set()

    def _insert(self, table: type[StaffMember | PendingStaffMenu]) -> SqliteInsert | PgInsert:
        """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
        return (sqlite_insert if self._db.is_sqlite else pg_insert)(table)

    async def seed(self, members: tuple[tuple[str, int], ...]) -> None:
        """Give the roles of the STAFF setting, each only the first time (idempotent).

        A role that a coordinator later took back is not given again at the next start:
        once a person and role have a history, the chat decides, not the configuration.
        """
        if not members:
            return
        now = self._clock.now()
        pairs = {(user_id, role) for role, user_id in members}
        async with self._db.write() as session:
            history = await session.execute(
                select(RoleChange.telegram_id, RoleChange.role)
                .where(tuple_(RoleChange.telegram_id, RoleChange.role).in_(pairs))
                .distinct()
            )
            known = {(user_id, role) for user_id, role in history}
            new = sorted(pairs - known)
            if not new:
                return
            inserted = (
                await session.execute(
                    self._insert(StaffMember)
                    .values(
                        [
                            {"telegram_id": user_id, "role": role, "granted_at": now}
                            for user_id, role in new
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["telegram_id", "role"])
                    .returning(StaffMember.telegram_id, StaffMember.role)
                )
            ).all()
            session.add_all(
                RoleChange(telegram_id=user_id, role=role, action="grant", changed_by=None, at=now)
                for user_id, role in inserted
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
        return bool(held & {*roles, COORDINATOR})

    async def grant(self, actor_id: int, target_id: int, role: str) -> RoleOutcome:
        """A coordinator gives `role` to `target_id`: recorded and notified, or nothing."""
        StaffRole(role)  # an unknown role is a programming error: handlers check the name
        now = self._clock.now()
        async with self._db.write() as session:
            if actor_id not in await _coordinators(session):
                return RoleOutcome.NOT_ALLOWED
            given = await session.scalar(
                self._insert(StaffMember)
                .values(telegram_id=target_id, role=role, granted_by=actor_id, granted_at=now)
                .on_conflict_do_nothing(index_elements=["telegram_id", "role"])
                .returning(StaffMember.id)
            )
            if given is None:
                return RoleOutcome.ALREADY_HELD
            await _record(session, actor_id, target_id, role, "grant", now)
            return RoleOutcome.DONE

    async def revoke(self, actor_id: int, target_id: int, role: str) -> RoleOutcome:
        """A coordinator takes `role` back, never the last coordinator role of the programme."""
        StaffRole(role)
        now = self._clock.now()
        async with self._db.write() as session:
            coordinators = await _coordinators(session)
            if actor_id not in coordinators:
                return RoleOutcome.NOT_ALLOWED
            if role == COORDINATOR and coordinators == {target_id}:
                return RoleOutcome.LAST_COORDINATOR
            removed = await affected_rows(
                session,
                delete(StaffMember).where(
                    StaffMember.telegram_id == target_id, StaffMember.role == role
                ),
            )
            if removed != 1:
                return RoleOutcome.NOT_HELD
            await _record(session, actor_id, target_id, role, "revoke", now)
            return RoleOutcome.DONE

    async def menu_of(self, telegram_id: int) -> StaffMenu:
        async with self._db.read() as session:
            roles = frozenset(
                await session.scalars(
                    select(StaffMember.role).where(StaffMember.telegram_id == telegram_id)
                )
            )
            language = await session.scalar(
                select(Resident.language).where(Resident.telegram_id == telegram_id)
            )
            return StaffMenu(telegram_id, roles, language)

    async def menus(self) -> list[StaffMenu]:
        """Every staff member's roles and language (a handful of people: one small query)."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(StaffMember.telegram_id, StaffMember.role, Resident.language)
                .outerjoin(Resident, Resident.telegram_id == StaffMember.telegram_id)
                .order_by(StaffMember.telegram_id)
            )
            menus = []
            for telegram_id, group in groupby(rows.all(), key=lambda row: row.telegram_id):
                held = list(group)
                roles = frozenset(row.role for row in held)
                menus.append(StaffMenu(telegram_id, roles, held[0].language))
            return menus

    async def load_pending_menus(self) -> None:
        async with self._db.read() as session:
            pending = set(await session.scalars(select(PendingStaffMenu.telegram_id)))
        self._pending_menus = pending

    def menu_pending(self, telegram_id: int) -> bool:
        """Whether this person's menu waits for their next update (no database query)."""
        return telegram_id in self._pending_menus

    async def menu_refused(self, telegram_id: int) -> None:
        """Telegram refused the person's menu: set it at their next update (idempotent)."""
        async with self._db.write() as session:
            await session.execute(
                self._insert(PendingStaffMenu)
                .values(telegram_id=telegram_id, since=self._clock.now())
                .on_conflict_do_nothing(index_elements=["telegram_id"])
            )
        self._pending_menus.add(telegram_id)

    async def menu_applied(self, telegram_id: int) -> None:
        """The person's menu is set: nothing waits any more."""
        await self._unmark_menu(telegram_id)

    async def claim_pending_menu(self, telegram_id: int) -> StaffMenu | None:
        """The menu to set now, if it was waiting; None when nothing waits (or another
        instance took it a moment ago). Whoever claims it sets it, or marks it refused again."""
        if not await self._unmark_menu(telegram_id):
            return None
        return await self.menu_of(telegram_id)

    async def _unmark_menu(self, telegram_id: int) -> bool:
        """Forget that the person's menu waits; True when it did."""
        self._pending_menus.discard(telegram_id)
        async with self._db.write() as session:
            removed = await affected_rows(
                session, delete(PendingStaffMenu).where(PendingStaffMenu.telegram_id == telegram_id)
            )
        return removed == 1


async def _coordinators(session: AsyncSession) -> set[int]:
    """The coordinators, locked until the change commits, always in the same order: two
    changes at once (two coordinators revoking each other) wait for each other, and the
    second one sees the first one's result."""
    return set(
        await session.scalars(
            select(StaffMember.telegram_id)
            .where(StaffMember.role == COORDINATOR)
            .order_by(StaffMember.id)
            .with_for_update()
        )
    )


async def _record(
    session: AsyncSession,
    actor_id: int,
    target_id: int,
    role: str,
    action: str,
    now: datetime,
) -> None:
    """The audit row, and the notice to the person (dropped if they never talked to the bot)."""
    change = RoleChange(
        telegram_id=target_id, role=role, action=action, changed_by=actor_id, at=now
    )
    session.add(change)
    await session.flush()
    session.add(
        OutboxMessage(
            chat_id=target_id,
            kind=ROLE_NOTICE,
            payload={"role": role, "action": action},
            dedupe_key=f"role-change:{change.id}",
            not_before=now,
            created_at=now,
        )
    )
