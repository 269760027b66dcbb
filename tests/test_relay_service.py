"""The mediator relay's rules, on the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

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
from storage.models import ConversationState, RelayedMessage, Resident
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


CHANNEL = -100555


async def relay_one(relay: MediatorRelay, channel_message_id: int, chat_id: int = CHANNEL) -> int:
    """Ask, write, post: returns the resident's id."""
    assert await relay.ask(7) is AskOutcome.READY
    result = await relay.take(7, f"message {channel_message_id}")
    assert result.outcome is TakeOutcome.RELAY and result.sender is not None
    await relay.relayed(7, result.sender.resident_id, chat_id, channel_message_id)
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
    assert await relay.is_waiting(7)  # until Telegram accepted the card
    await relay.relayed(7, result.sender.resident_id, CHANNEL, 5)
    assert not await relay.is_waiting(7)
    assert (await relay.take(7, "again")).outcome is TakeOutcome.NOT_WAITING


async def test_a_card_that_could_not_be_posted_loses_nothing(
    db: Database, relay: MediatorRelay
) -> None:
    """Taking the message writes nothing: if the post fails (or the process dies before
    it), the prompt is still open and the same message can be sent again."""
    await relay.ask(7)
    first = await relay.take(7, "Bonjour, j'ai besoin d'aide")
    assert first.outcome is TakeOutcome.RELAY  # ...and the post to the channel fails here
    assert await relay.is_waiting(7)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(RelayedMessage)) == 0
    again = await relay.take(7, "Bonjour, j'ai besoin d'aide")
    assert again.outcome is TakeOutcome.RELAY and again.sender is not None
    await relay.relayed(7, again.sender.resident_id, CHANNEL, 12)
    assert not await relay.is_waiting(7)


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


async def test_at_most_five_messages_an_hour(
    db: Database, relay: MediatorRelay, clock: ManualClock
) -> None:
    for n in range(1, 5):
        resident_id = await relay_one(relay, n)
        clock.advance(timedelta(minutes=5))
    assert await relay.ask(7) is AskOutcome.READY  # the fifth prompt is open...
    await relay.relayed(7, resident_id, CHANNEL, 99)  # ...and a fifth card was posted meanwhile
    assert await relay.ask(7) is AskOutcome.LIMITED
    clock.advance(timedelta(minutes=1))
    assert await relay.ask(7) is AskOutcome.LIMITED  # a sixth prompt is refused...
    async with db.write() as session:  # ...and one opened earlier is taken back
        session.add(
            ConversationState(
                user_id=7,
                conversation="mediator",
                state="awaiting_message",
                data={},
                updated_at=clock.now(),
            )
        )
    assert (await relay.take(7, "a sixth")).outcome is TakeOutcome.LIMITED
    assert not await relay.is_waiting(7)
    assert await relay.ask(7) is AskOutcome.LIMITED
    clock.advance(timedelta(minutes=40))  # the first card is now more than an hour old
    assert await relay.ask(7) is AskOutcome.READY


async def test_a_reply_to_a_card_is_queued_once_for_its_resident(
    db: Database, relay: MediatorRelay
) -> None:
    await relay_one(relay, 42)
    assert (await relay.queue_reply(CHANNEL, 41, "hi", "k0")).outcome is ReplyOutcome.NOT_RELAYED
    assert (await relay.queue_reply(CHANNEL, 42, None, "k1")).outcome is ReplyOutcome.NOT_TEXT
    too_long = await relay.queue_reply(CHANNEL, 42, "x" * 3501, "k2")
    assert too_long.outcome is ReplyOutcome.TOO_LONG
    first = await relay.queue_reply(CHANNEL, 42, "Venez mardi <14h> & bienvenue", "reply:1")
    again = await relay.queue_reply(CHANNEL, 42, "Venez mardi <14h> & bienvenue", "reply:1")
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
    result = await relay.queue_reply(CHANNEL, 42, "Bonjour", "reply:2")
    assert result.outcome is ReplyOutcome.UNREACHABLE
    assert await outbox_of_kind(db, REPLY_KIND) == []


async def test_cards_are_known_by_chat_and_message_id(db: Database, relay: MediatorRelay) -> None:
    """Telegram message ids are per chat: after the channel changed, a reply to message 42 of
    the new chat is not routed to the resident behind card 42 of the old one, and a new
    card may have the same id as an old one."""
    await relay_one(relay, 42, chat_id=CHANNEL)
    new_channel = CHANNEL - 1
    assert (await relay.queue_reply(new_channel, 42, "hi", "k3")).outcome is (
        ReplyOutcome.NOT_RELAYED
    )
    await relay_one(relay, 42, chat_id=new_channel)  # no IntegrityError
    assert (await relay.queue_reply(new_channel, 42, "hi", "k4")).outcome is ReplyOutcome.QUEUED
    assert (await relay.queue_reply(CHANNEL, 42, "hi", "k5")).outcome is ReplyOutcome.QUEUED
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(RelayedMessage)) == 2
