"""Staff roles on the real database (SQLite and PostgreSQL): seeding, grants, revocations,
their audit trail and the notices they queue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.residents import ResidentService
from bot.services.staff import ROLE_NOTICE, RoleOutcome, StaffMenu, StaffService
from storage.db import Database
from storage.models import OutboxMessage, RoleChange, StaffMember
from tests.factories import T0, new_clock

pytestmark = pytest.mark.storage

BOSS, OTHER, TARGET = 100, 200, 3_000_000_000  # TARGET is above 2**31, as real ids can be


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


@pytest.fixture
async def staff(db: Database, clock: ManualClock) -> StaffService:
    service = StaffService(db, clock)
    await service.seed((("coordinator", BOSS),))
    return service


async def audit(db: Database) -> list[tuple[int, str, str, int | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(
                RoleChange.telegram_id, RoleChange.role, RoleChange.action, RoleChange.changed_by
            ).order_by(RoleChange.id)
        )
        return [tuple(row) for row in rows]


async def roles(db: Database) -> set[tuple[int, str]]:
    async with db.read() as session:
        rows = await session.execute(select(StaffMember.telegram_id, StaffMember.role))
        return {(telegram_id, role) for telegram_id, role in rows}


async def notices(db: Database) -> list[tuple[int | None, dict]]:
    async with db.read() as session:
        rows = await session.execute(
            select(OutboxMessage.chat_id, OutboxMessage.payload)
            .where(OutboxMessage.kind == ROLE_NOTICE)
            .order_by(OutboxMessage.id)
        )
        return [tuple(row) for row in rows]


async def test_seeding_records_each_role_once_without_an_author(db, clock):
    staff = StaffService(db, clock)
    members = (("coordinator", BOSS), ("mediator", OTHER), ("facilitator", OTHER))
    await staff.seed(members)
    clock.advance(timedelta(hours=1))
    await staff.seed(members)  # a restart
    assert await roles(db) == {(BOSS, "coordinator"), (OTHER, "mediator"), (OTHER, "facilitator")}
    assert sorted(await audit(db)) == [
        (BOSS, "coordinator", "grant", None),
        (OTHER, "facilitator", "grant", None),
        (OTHER, "mediator", "grant", None),
    ]
    async with db.read() as session:
        assert set(await session.scalars(select(RoleChange.at))) == {T0}
    assert await notices(db) == []  # nobody is messaged for the configuration


async def test_a_configured_role_taken_back_in_chat_stays_taken_back_after_a_restart(db, staff):
    await staff.seed((("coordinator", BOSS), ("mediator", OTHER)))
    assert await staff.revoke(BOSS, OTHER, "mediator") is RoleOutcome.DONE
    await staff.seed((("coordinator", BOSS), ("mediator", OTHER)))
    assert await roles(db) == {(BOSS, "coordinator")}
    assert [row[2] for row in await audit(db) if row[0] == OTHER] == ["grant", "revoke"]


async def test_a_coordinator_grants_and_revokes_with_an_audit_row_and_a_notice(db, staff):
    assert await staff.grant(BOSS, TARGET, "mediator") is RoleOutcome.DONE
    assert await staff.has_role(TARGET, "mediator")
    assert not await staff.has_role(TARGET, "facilitator")
    assert await staff.revoke(BOSS, TARGET, "mediator") is RoleOutcome.DONE
    assert not await staff.has_role(TARGET, "mediator")
    assert (await audit(db))[1:] == [
        (TARGET, "mediator", "grant", BOSS),
        (TARGET, "mediator", "revoke", BOSS),
    ]
    assert await notices(db) == [
        (TARGET, {"role": "mediator", "action": "grant"}),
        (TARGET, {"role": "mediator", "action": "revoke"}),
    ]


async def test_changes_that_change_nothing_are_refused_and_leave_no_trace(db, staff):
    await staff.grant(BOSS, TARGET, "facilitator")
    before = (await roles(db), await audit(db), await notices(db))
    assert await staff.grant(BOSS, TARGET, "facilitator") is RoleOutcome.ALREADY_HELD
    assert await staff.revoke(BOSS, TARGET, "mediator") is RoleOutcome.NOT_HELD
    assert await staff.revoke(BOSS, BOSS, "coordinator") is RoleOutcome.LAST_COORDINATOR
    # Only coordinators may change roles, facilitators included.
    assert await staff.grant(TARGET, OTHER, "mediator") is RoleOutcome.NOT_ALLOWED
    assert await staff.revoke(OTHER, TARGET, "facilitator") is RoleOutcome.NOT_ALLOWED
    assert (await roles(db), await audit(db), await notices(db)) == before


async def test_a_coordinator_may_step_down_once_there_is_another(db, staff):
    assert await staff.grant(BOSS, OTHER, "coordinator") is RoleOutcome.DONE
    assert await staff.revoke(BOSS, BOSS, "coordinator") is RoleOutcome.DONE
    assert await staff.revoke(OTHER, OTHER, "coordinator") is RoleOutcome.LAST_COORDINATOR
    assert await roles(db) == {(OTHER, "coordinator")}


async def test_two_coordinators_revoking_each_other_at_once_leave_one(db, staff):
    await staff.grant(BOSS, OTHER, "coordinator")
    outcomes = await asyncio.gather(
        staff.revoke(BOSS, OTHER, "coordinator"), staff.revoke(OTHER, BOSS, "coordinator")
    )
    assert sorted(outcomes) == sorted([RoleOutcome.DONE, RoleOutcome.NOT_ALLOWED])
    assert len(await roles(db)) == 1


async def test_menus_carry_roles_and_the_resident_language(db, clock, staff):
    await staff.grant(BOSS, OTHER, "mediator")
    await staff.grant(BOSS, OTHER, "facilitator")
    await ResidentService(db, clock).give_consent(OTHER, "Nadia", "ar")
    assert await staff.menus() == [
        StaffMenu(BOSS, frozenset({"coordinator"}), None),
        StaffMenu(OTHER, frozenset({"mediator", "facilitator"}), "ar"),
    ]
    assert await staff.menu_of(TARGET) == StaffMenu(TARGET, frozenset(), None)
