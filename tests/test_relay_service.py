"""The mediator relay's rules, on the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.clock import ManualClock
from bot.services.mediator_relay import (
    REPLY_KIND,
    AskOutcome,
    MediatorRelay,
    ReplyOutcome,
    TakeOutcome,
)
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import Resident
from tests.factories import new_clock
from tests.relay_helpers import outbox_of_kind

pytestmark = pytest.mark.storage


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


@pytest.fixture
async def relay(db: Database, clock: ManualClock) -> MediatorRelay:
    await ResidentService(db, clock).give_consent(7, "Alice", "fr")
    return MediatorRelay(db, clock)


async def relay_one(relay: MediatorRelay, channel_message_id: int) -> int:
    """Ask, write, post: returns the resident's id."""
    assert await relay.ask(7) is AskOutcome.READY
    result = await relay.take(7, f"message {channel_message_id}")
    assert result.outcome is TakeOutcome.RELAY and result.sender is not None
    await relay.record(result.sender.resident_id, channel_message_id)
    return result.sender.resident_id


async def test_only_a_consenting_resident_can_ask(relay: MediatorRelay) -> None:
    assert await relay.ask(8) is AskOutcome.NOT_RESIDENT
    assert not await relay.is_waiting(8)


async def test_the_prompt_takes_one_good_message(relay: MediatorRelay) -> None:
    assert not await relay.is_waiting(7)
    assert (await relay.take(7, "hello")).outcome is TakeOutcome.NOT_WAITING
    assert await relay.ask(7) is AskOutcome.READY
    assert await relay.is_waiting(7)
    assert (await relay.take(7, "  \n ")).outcome is TakeOutcome.EMPTY
    assert (await relay.take(7, "x" * 1001)).outcome is TakeOutcome.TOO_LONG
    assert await relay.is_waiting(7)  # asked again, still waiting
    result = await relay.take(7, "x" * 1000)
    assert result.outcome is TakeOutcome.RELAY
    assert result.sender is not None
    assert (result.sender.first_name, result.sender.language) == ("Alice", "fr")
    assert not await relay.is_waiting(7)
    assert (await relay.take(7, "again")).outcome is TakeOutcome.NOT_WAITING


async def test_a_prompt_can_be_cancelled_and_expires(
    relay: MediatorRelay, clock: ManualClock
) -> None:
    await relay.ask(7)
    await relay.cancel(7)
    assert not await relay.is_waiting(7)
    await relay.ask(7)
    clock.advance(timedelta(hours=24, seconds=1))
    assert not await relay.is_waiting(7)
    assert (await relay.take(7, "a day later")).outcome is TakeOutcome.NOT_WAITING


async def test_at_most_five_messages_an_hour(relay: MediatorRelay, clock: ManualClock) -> None:
    for n in range(1, 5):
        resident_id = await relay_one(relay, n)
        clock.advance(timedelta(minutes=5))
    assert await relay.ask(7) is AskOutcome.READY  # the fifth prompt is open...
    await relay.record(resident_id, 99)  # ...and a fifth card was posted meanwhile
    assert (await relay.take(7, "a sixth")).outcome is TakeOutcome.LIMITED
    assert not await relay.is_waiting(7)
    assert await relay.ask(7) is AskOutcome.LIMITED
    clock.advance(timedelta(minutes=41))  # the first card is now more than an hour old
    assert await relay.ask(7) is AskOutcome.READY


async def test_a_reply_to_a_card_is_queued_once_for_its_resident(
    db: Database, relay: MediatorRelay
) -> None:
    await relay_one(relay, 42)
    assert (await relay.queue_reply(41, "hi", "k0")).outcome is ReplyOutcome.NOT_RELAYED
    assert (await relay.queue_reply(42, None, "k1")).outcome is ReplyOutcome.NOT_TEXT
    assert (await relay.queue_reply(42, "x" * 3501, "k2")).outcome is ReplyOutcome.TOO_LONG
    first = await relay.queue_reply(42, "Venez mardi <14h> & bienvenue", "reply:1")
    again = await relay.queue_reply(42, "Venez mardi <14h> & bienvenue", "reply:1")
    assert (first.outcome, first.first_name) == (ReplyOutcome.QUEUED, "Alice")
    assert again.outcome is ReplyOutcome.QUEUED
    rows = await outbox_of_kind(db, REPLY_KIND)
    assert [(row.payload, row.chat_id, row.status) for row in rows] == [
        ({"text": "Venez mardi <14h> & bienvenue"}, None, "pending")
    ]
    assert rows[0].resident_id is not None


async def test_no_reply_is_queued_for_someone_who_left(db: Database, relay: MediatorRelay) -> None:
    await relay_one(relay, 42)
    async with db.write() as session:
        await session.execute(update(Resident).values(is_active=False))
    result = await relay.queue_reply(42, "Bonjour", "reply:2")
    assert result.outcome is ReplyOutcome.UNREACHABLE
    assert await outbox_of_kind(db, REPLY_KIND) == []
