"""Channel notices are decided by the registration transactions (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.services.channel import NOTICE_KIND, ChannelNotices
from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from bot.settings import CHANNEL_NOTICE_KINDS
from storage.db import Database
from storage.models import Registration, Resident
from tests.factories import new_clock, seed_workshop
from tests.relay_helpers import ADMIN_CHAT_ID, outbox_of_kind

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


def registrations_with(
    db: Database,
    clock: ManualClock,
    kinds: tuple[str, ...] = CHANNEL_NOTICE_KINDS,
    chat_id: int | None = ADMIN_CHAT_ID,
) -> RegistrationService:
    return RegistrationService(db, clock, channel=ChannelNotices(db, chat_id, kinds))


async def consenting(db: Database, clock: ManualClock, *telegram_ids: int) -> None:
    residents = ResidentService(db, clock)
    for telegram_id in telegram_ids:
        await residents.give_consent(telegram_id, f"P{telegram_id}", "fr")


async def resident_id(db: Database, telegram_id: int) -> int:
    async with db.read() as session:
        found = await session.scalar(select(Resident.id).where(Resident.telegram_id == telegram_id))
        assert found is not None
        return found


async def notices(db: Database) -> list[dict]:
    rows = await outbox_of_kind(db, NOTICE_KIND)
    assert all(row.chat_id == ADMIN_CHAT_ID and row.resident_id is None for row in rows)
    return [row.payload for row in rows]


async def test_each_change_queues_one_notice_in_its_own_transaction(db, clock):
    registrations = registrations_with(db, clock)
    workshop = await seed_workshop(db, clock, capacity=2)
    await consenting(db, clock, 1, 2, 3)
    alice, bob, carol = [await resident_id(db, t) for t in (1, 2, 3)]

    await registrations.register(1, workshop)
    # Right after the call, before anything is delivered: the row is already committed.
    assert await notices(db) == [
        {
            "event": "confirmed",
            "workshop_id": workshop,
            "resident_id": alice,
            "seats_left": 1,
            "waitlist_rank": None,
        }
    ]
    await registrations.register(2, workshop)
    await registrations.register(3, workshop)
    await registrations.cancel(1, workshop)

    payloads = await notices(db)
    assert [(p["event"], p["resident_id"]) for p in payloads] == [
        ("confirmed", alice),
        ("confirmed", bob),
        ("waitlisted", carol),
        ("cancelled", alice),
    ]
    assert payloads[1]["seats_left"] == 0
    assert payloads[2]["waitlist_rank"] == 1
    assert payloads[3]["promoted_resident_id"] == carol  # one line: "seat given to Carol"


async def test_a_registration_that_changes_nothing_queues_nothing(db, clock):
    registrations = registrations_with(db, clock)
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(db, clock, 1, 2)
    await registrations.register(1, workshop)
    await registrations.register(2, workshop)
    await registrations.register(1, workshop)  # already confirmed
    await registrations.register(2, workshop)  # already waiting
    await registrations.cancel(1, workshop)
    await registrations.cancel(1, workshop)  # nothing left to cancel
    await registrations.register(99, workshop)  # no consent
    assert [p["event"] for p in await notices(db)] == ["confirmed", "waitlisted", "cancelled"]


async def test_leaving_the_waitlist_and_a_cancellation_without_anyone_waiting(db, clock):
    registrations = registrations_with(db, clock)
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(db, clock, 1, 2)
    await registrations.register(1, workshop)
    await registrations.register(2, workshop)
    await registrations.cancel(2, workshop)  # leaves the waitlist
    await registrations.cancel(1, workshop)  # nobody waits any more: the seat is free
    left, cancelled = (await notices(db))[2:]
    assert (left["event"], left["seats_left"]) == ("left_waitlist", None)
    assert (cancelled["event"], cancelled["seats_left"]) == ("cancelled", 1)
    assert cancelled["promoted_resident_id"] is None


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("cancellations", "promotions"), ["cancelled"]),
        (("registrations", "promotions"), ["confirmed", "waitlisted", "promoted"]),
        (("registrations", "cancellations"), ["confirmed", "waitlisted", "cancelled"]),
        ((), []),
    ],
)
async def test_each_kind_can_be_turned_off(db, clock, kinds, expected):
    registrations = registrations_with(db, clock, kinds)
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(db, clock, 1, 2)
    await registrations.register(1, workshop)
    await registrations.register(2, workshop)
    await registrations.cancel(1, workshop)
    payloads = await notices(db)
    assert [p["event"] for p in payloads] == expected
    bob = await resident_id(db, 2)
    for payload in payloads:
        if payload["event"] == "cancelled":
            # The cancellation names who got the seat only when promotions are wanted.
            promoted = bob if "promotions" in kinds else None
            assert payload["promoted_resident_id"] == promoted
        if payload["event"] == "promoted":
            assert payload["resident_id"] == bob


async def test_without_an_admin_chat_nothing_is_queued(db, clock):
    registrations = registrations_with(db, clock, chat_id=None)
    workshop = await seed_workshop(db, clock, capacity=1)
    await consenting(db, clock, 1, 2)
    await registrations.register(1, workshop)
    await registrations.register(2, workshop)
    await registrations.cancel(1, workshop)
    assert await notices(db) == []
    # The resident's own promotion notice is not affected.
    assert len(await outbox_of_kind(db, "waitlist_promoted")) == 1


async def test_a_crash_before_the_commit_leaves_neither_the_change_nor_the_notice(
    db, clock, monkeypatch
):
    """The notice is written by the registration's own transaction, never on its own."""
    channel = ChannelNotices(db, ADMIN_CHAT_ID, CHANNEL_NOTICE_KINDS)
    enqueue = channel._enqueue

    async def enqueue_then_crash(*args: object, **kwargs: object) -> None:
        await enqueue(*args, **kwargs)
        raise RuntimeError("the process dies before the commit")

    monkeypatch.setattr(channel, "_enqueue", enqueue_then_crash)
    workshop = await seed_workshop(db, clock, capacity=3)
    await consenting(db, clock, 1)
    with pytest.raises(RuntimeError):
        await RegistrationService(db, clock, channel=channel).register(1, workshop)
    assert await notices(db) == []
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Registration)) == 0


async def test_the_notice_line_names_people_at_send_time(db, clock):
    registrations = registrations_with(db, clock)
    channel = ChannelNotices(db, ADMIN_CHAT_ID, CHANNEL_NOTICE_KINDS)
    workshop = await seed_workshop(db, clock, capacity=1, title="Atelier smartphone")
    await consenting(db, clock, 1, 2)
    await registrations.register(1, workshop)
    await registrations.register(2, workshop)
    await registrations.cancel(1, workshop)
    facts = await channel.facts((await notices(db))[-1])
    assert facts is not None
    assert (facts.person, facts.promoted, facts.promoted_person) == ("P1", True, "P2")
    assert facts.title["fr"] == "Atelier smartphone"
    assert facts.venue_name == "EPN Montreynaud"
