"""Talk to a mediator: a resident's message to the facilitators' channel, and replies back.

The step "write your message" is a ConversationState row, so it survives a restart. Each
relayed card is remembered (RelayedMessage: chat and message id -> resident; Telegram message
ids are per chat), so that a facilitator's reply to the card can be routed back; the reply goes
through the outbox, with the facilitator's message as dedupe key, so a replayed update never
answers twice.

The card itself is sent directly, not through the outbox: the outbox cannot hand back the
channel message id, which replies are routed by. So that the resident's text is never lost,
`take` only checks the message (the prompt stays open) and `relayed`, called once Telegram
accepted the card, consumes the prompt and records the card in one transaction. If the send
fails, the prompt is still open and the person can simply send their message again. One
person's updates are handled one after the other (bot.plumbing.ordering), so neither the prompt nor the
hourly count (the cards relayed in the last hour) can be raced by the same person, and no
transaction is held over the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.conversations import MEDIATOR, end, put, row_of
from bot.services.outbox import enqueue_once
from bot.services.registration import consenting_resident
from storage.db import Database
from storage.models import ConversationState, RelayedMessage, Resident

CONVERSATION = MEDIATOR
AWAITING_MESSAGE = "awaiting_message"
REPLY_KIND = "mediator_reply"


class AskOutcome(StrEnum):
    READY = "ready"  # the next message of the person will be relayed
    LIMITED = "limited"  # the hourly limit is reached
    NOT_RESIDENT = "not_resident"  # unknown or without consent


class TakeOutcome(StrEnum):
    RELAY = "relay"  # send it, then call `relayed` (the prompt stays open until then)
    NOT_WAITING = "not_waiting"  # no prompt (or an expired one): not for the relay
    EMPTY = "empty"  # ask again, the prompt stays
    TOO_LONG = "too_long"  # ask again, the prompt stays
    LIMITED = "limited"  # refused: the prompt is consumed


class ReplyOutcome(StrEnum):
    QUEUED = "queued"
    NOT_RELAYED = "not_relayed"  # a reply to something that is not a relayed card
    NOT_TEXT = "not_text"
    TOO_LONG = "too_long"
    UNREACHABLE = "unreachable"  # the person blocked the bot or withdrew consent


@dataclass(frozen=True)
class Sender:
    """The resident whose message is relayed."""

    resident_id: int
    first_name: str | None
    language: str | None


@dataclass(frozen=True)
class TakeResult:
    outcome: TakeOutcome
    sender: Sender | None = None


@dataclass(frozen=True)
class ReplyResult:
    outcome: ReplyOutcome
    first_name: str | None = None


class MediatorRelay:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        per_hour: int = 5,
        max_chars: int = 1000,
        max_reply_chars: int = 3500,
        prompt_valid_for: timedelta = timedelta(hours=24),
    ) -> None:
        self._db = db
        self._clock = clock
        self.per_hour = per_hour
        self.max_chars = max_chars
        # Leaves room under Telegram's 4096 characters for the "a mediator answers" heading.
        self.max_reply_chars = max_reply_chars
        # A prompt left unanswered for longer is forgotten: a text days later is not a reply.
        self._prompt_valid_for = prompt_valid_for

    async def ask(self, telegram_id: int) -> AskOutcome:
        """Open the "write your message" step, unless the hourly limit is reached."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await consenting_resident(session, telegram_id)
            if resident_id is None:
                return AskOutcome.NOT_RESIDENT
            if await self._relayed_last_hour(session, resident_id, now) >= self.per_hour:
                return AskOutcome.LIMITED
            await put(session, telegram_id, CONVERSATION, AWAITING_MESSAGE, {}, now)
            return AskOutcome.READY

    async def cancel(self, telegram_id: int) -> None:
        async with self._db.write() as session:
            await end(session, telegram_id, CONVERSATION)

    async def is_waiting(self, telegram_id: int) -> bool:
        """Whether the person's next message is for a mediator (unless a survey question was
        shown since: see bot/services/conversations.py)."""
        async with self._db.read() as session:
            return await self._prompt_open(session, telegram_id, self._clock.now())

    def is_fresh(self, shown_at: datetime) -> bool:
        """Whether a prompt shown then still waits (a text days later is not a reply)."""
        return shown_at > self._clock.now() - self._prompt_valid_for

    async def take(
        self, telegram_id: int, text: str, *, shown_at: datetime | None = None
    ) -> TakeResult:
        """The message awaited by the prompt: an empty or too long one leaves the prompt
        open (ask again), one over the hourly limit consumes it, a good one is to be sent
        (the prompt stays open until `relayed`). `shown_at`: when the prompt was shown, as
        the free-text router read it (then it is not read again); without it, read here."""
        if not text.strip():
            return TakeResult(TakeOutcome.EMPTY)
        if len(text) > self.max_chars:
            return TakeResult(TakeOutcome.TOO_LONG)
        now = self._clock.now()
        async with self._db.write() as session:
            if shown_at is not None:
                waiting = self.is_fresh(shown_at)
            else:
                waiting = await self._prompt_open(session, telegram_id, now)
            if not waiting:
                return TakeResult(TakeOutcome.NOT_WAITING)
            resident = (
                await session.execute(
                    select(Resident.id, Resident.first_name, Resident.language).where(
                        Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None)
                    )
                )
            ).one_or_none()
            if resident is None:
                return TakeResult(TakeOutcome.NOT_WAITING)
            if await self._relayed_last_hour(session, resident.id, now) >= self.per_hour:
                await end(session, telegram_id, CONVERSATION)
                return TakeResult(TakeOutcome.LIMITED)
            return TakeResult(
                TakeOutcome.RELAY, Sender(resident.id, resident.first_name, resident.language)
            )

    async def relayed(
        self, telegram_id: int, resident_id: int, chat_id: int, channel_message_id: int
    ) -> None:
        """The card was accepted by Telegram: the prompt is consumed and the card remembered
        (which resident it stands for), in one transaction."""
        async with self._db.write() as session:
            await end(session, telegram_id, CONVERSATION)
            session.add(
                RelayedMessage(
                    resident_id=resident_id,
                    chat_id=chat_id,
                    channel_message_id=channel_message_id,
                    created_at=self._clock.now(),
                )
            )

    async def queue_reply(
        self, chat_id: int, channel_message_id: int, text: str | None, dedupe_key: str
    ) -> ReplyResult:
        """Queue a facilitator's reply to a relayed card for the resident behind it."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident = (
                await session.execute(
                    select(
                        Resident.id, Resident.first_name, Resident.is_active, Resident.consented_at
                    )
                    .join(RelayedMessage, RelayedMessage.resident_id == Resident.id)
                    .where(
                        RelayedMessage.chat_id == chat_id,
                        RelayedMessage.channel_message_id == channel_message_id,
                    )
                )
            ).one_or_none()
            if resident is None:
                return ReplyResult(ReplyOutcome.NOT_RELAYED)
            if text is None or not text.strip():
                return ReplyResult(ReplyOutcome.NOT_TEXT)
            if len(text) > self.max_reply_chars:
                return ReplyResult(ReplyOutcome.TOO_LONG)
            if not resident.is_active or resident.consented_at is None:
                return ReplyResult(ReplyOutcome.UNREACHABLE, resident.first_name)
            await enqueue_once(
                session,
                resident_id=resident.id,
                kind=REPLY_KIND,
                payload={"text": text},
                dedupe_key=dedupe_key,
                not_before=now,
                created_at=now,
            )
            return ReplyResult(ReplyOutcome.QUEUED, resident.first_name)

    async def _prompt_open(self, session: AsyncSession, telegram_id: int, now: datetime) -> bool:
        prompt = await session.scalar(
            select(ConversationState.user_id).where(
                row_of(telegram_id, CONVERSATION),
                ConversationState.updated_at > now - self._prompt_valid_for,
            )
        )
        return prompt is not None

    async def _relayed_last_hour(
        self, session: AsyncSession, resident_id: int, now: datetime
    ) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(RelayedMessage)
            .where(
                RelayedMessage.resident_id == resident_id,
                RelayedMessage.created_at > now - timedelta(hours=1),
            )
        )
        return count or 0
