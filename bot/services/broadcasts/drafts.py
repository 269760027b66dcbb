"""Broadcasts: composing an announcement, choosing its audience, previewing it, and confirming
it (queueing it) or discarding it.

Composition is a ConversationState row (conversation "broadcast"), so a restart in the middle
of writing loses nothing. Confirming turns it, in one transaction, into a Broadcast and one
outbox row per recipient, written by a single INSERT ... SELECT: the recipients are chosen and
counted by the database and never loaded into Python. What follows, the sending's domain half
(audiences, progress, stop, report), is sending.py; BroadcastService, the one service the
handlers and the sender hold, is both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from html import unescape
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    and_,
    cast,
    delete,
    func,
    literal,
    select,
    true,
    update,
)

from bot.services.broadcasts.sending import KIND, BroadcastSending
from bot.services.conversations import BROADCAST, put
from storage.models import (
    Broadcast,
    BroadcastStatus,
    ConversationState,
    OutboxMessage,
    OutboxStatus,
    Territory,
    Workshop,
)
from storage.results import affected_rows

CONVERSATION = BROADCAST
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
DRAFT_KEPT_FOR = timedelta(hours=24)


class Step(StrEnum):
    TEXT = "text"  # waiting for the text (or a photo with a caption)
    PHOTO = "photo"  # waiting for an optional photo
    AUDIENCE = "audience"  # choosing the audience
    PREVIEW = "preview"  # shown; waiting for confirm or cancel


class TakeOutcome(StrEnum):
    NEXT = "next"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_COMPOSING = "not_composing"


@dataclass(frozen=True)
class Draft:
    step: Step
    text: str | None
    photo_file_id: str | None
    audience: dict[str, Any] | None


@dataclass(frozen=True)
class TakeResult:
    outcome: TakeOutcome
    draft: Draft | None = None
    limit: int = 0


class BroadcastService(BroadcastSending):
    """Composing, previewing and confirming a broadcast; the sending half is inherited."""

    # -- composing ----------------------------------------------------------------------

    async def begin(self, user_id: int) -> None:
        """Start (or restart) composing: the next text or photo is the message."""
        await self._save(user_id, Step.TEXT, {})

    async def draft(self, user_id: int) -> Draft | None:
        """The person's draft; one left untouched for a day is forgotten, so that a text
        typed days later is not taken for an announcement."""
        async with self._db.read() as session:
            row = await session.get(ConversationState, (user_id, CONVERSATION))
            return None if row is None else self.draft_from(row.state, row.data, row.updated_at)

    def draft_from(self, state: str, data: dict[str, Any], updated_at: datetime) -> Draft | None:
        """The draft of a conversation row already read (by the free-text router)."""
        if updated_at < self._clock.now() - DRAFT_KEPT_FOR:
            return None
        return _draft(state, data)

    async def discard(self, user_id: int) -> bool:
        async with self._db.write() as session:
            deleted = await affected_rows(
                session, delete(ConversationState).where(_state_of(user_id))
            )
            return deleted == 1

    async def take_text(
        self, user_id: int, text: str, visible_length: int, *, draft: Draft | None = None
    ) -> TakeResult:
        """The message text (HTML), while composing; next comes the optional photo.

        Telegram's limits count the visible characters, not the HTML markup. `draft`: as the
        free-text router read it (then it is not read again).
        """
        draft = draft or await self.draft(user_id)
        if draft is None or draft.step is not Step.TEXT:
            return TakeResult(TakeOutcome.NOT_COMPOSING)
        if not text.strip() or visible_length == 0:
            return TakeResult(TakeOutcome.EMPTY)
        if visible_length > TEXT_LIMIT:
            return TakeResult(TakeOutcome.TOO_LONG, limit=TEXT_LIMIT)
        new = await self._save(user_id, Step.PHOTO, {"text": text}, expected=Step.TEXT)
        return TakeResult(TakeOutcome.NEXT, new) if new else TakeResult(TakeOutcome.NOT_COMPOSING)

    async def take_photo(
        self,
        user_id: int,
        file_id: str,
        caption: str | None,
        caption_length: int,
        *,
        draft: Draft | None = None,
    ) -> TakeResult:
        """A photo: with a caption while the text is awaited, or after the text (which must
        then fit in a caption). `draft`: as the free-text router read it."""
        draft = draft or await self.draft(user_id)
        if draft is None or draft.step not in (Step.TEXT, Step.PHOTO):
            return TakeResult(TakeOutcome.NOT_COMPOSING)
        if draft.step is Step.TEXT:
            text, length = caption, caption_length
        else:
            text, length = draft.text, len(_visible(draft.text or ""))
        if not text or not text.strip():
            return TakeResult(TakeOutcome.EMPTY)
        if length > CAPTION_LIMIT:
            return TakeResult(TakeOutcome.TOO_LONG, limit=CAPTION_LIMIT)
        new = await self._save(
            user_id, Step.AUDIENCE, {"text": text, "photo": file_id}, expected=draft.step
        )
        return TakeResult(TakeOutcome.NEXT, new) if new else TakeResult(TakeOutcome.NOT_COMPOSING)

    async def skip_photo(self, user_id: int) -> Draft | None:
        draft = await self.draft(user_id)
        if draft is None or draft.step is not Step.PHOTO:
            return None
        return await self._save(user_id, Step.AUDIENCE, {"text": draft.text}, expected=Step.PHOTO)

    async def choose_audience(self, user_id: int, audience: dict[str, Any]) -> Draft | None:
        """Set the audience and move to the preview (or change it from the preview)."""
        draft = await self.draft(user_id)
        if draft is None or draft.step not in (Step.AUDIENCE, Step.PREVIEW):
            return None
        data = {"text": draft.text, "audience": audience}
        if draft.photo_file_id:
            data["photo"] = draft.photo_file_id
        return await self._save(user_id, Step.PREVIEW, data, expected=draft.step)

    async def back_to_audience(self, user_id: int) -> Draft | None:
        draft = await self.draft(user_id)
        if draft is None or draft.step is not Step.PREVIEW:
            return None
        data: dict[str, Any] = {"text": draft.text}
        if draft.photo_file_id:
            data["photo"] = draft.photo_file_id
        return await self._save(user_id, Step.AUDIENCE, data, expected=Step.PREVIEW)

    async def _save(
        self, user_id: int, step: Step, data: dict[str, Any], *, expected: Step | None = None
    ) -> Draft | None:
        """Upsert the draft; with `expected`, only if it is still at that step (double taps)."""
        now = self._clock.now()
        async with self._db.write() as session:
            if expected is None:
                await put(session, user_id, CONVERSATION, step, data, now)
            else:
                moved = await affected_rows(
                    session,
                    update(ConversationState)
                    .where(_state_of(user_id), ConversationState.state == expected)
                    .values(state=step, data=data, updated_at=now),
                )
                if moved != 1:
                    return None
        return _draft(step, data)

    # -- preview ------------------------------------------------------------------------

    async def territories(self) -> list[tuple[int, str]]:
        """Every neighbourhood of the programme, by name."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(Territory.id, Territory.name).order_by(Territory.name, Territory.id)
            )
            return [(r.id, r.name) for r in rows]

    async def audience_subject(self, audience: dict[str, Any]) -> str | dict[str, str] | None:
        """What an audience is about: a neighbourhood's name or a workshop's title."""
        kind = audience.get("kind")
        async with self._db.read() as session:
            if kind == "territory":
                return await session.scalar(
                    select(Territory.name).where(Territory.id == int(audience["id"]))
                )
            if kind in ("registrants", "waitlist"):
                return await session.scalar(
                    select(Workshop.title).where(Workshop.id == int(audience["id"]))
                )
        return None

    async def count(self, audience: dict[str, Any]) -> int:
        async with self._db.read() as session:
            subquery = self._recipients(audience).subquery()
            return int(await session.scalar(select(func.count()).select_from(subquery)) or 0)

    # -- confirming ---------------------------------------------------------------------

    async def confirm(self, user_id: int, *, progress_message_id: int | None = None) -> int | None:
        """Turn the previewed draft into a broadcast with one outbox row per recipient.

        One transaction: the draft is consumed by a conditional DELETE (a double tap queues
        nothing twice), the rows are written by INSERT ... SELECT, and the message that will
        show the progress (the preview's, in the person's chat) is recorded with them, so that
        the sender finds it before its first send, whatever happens next. Returns the
        broadcast id, or None when there was no draft at the preview step.
        """
        now = self._clock.now()
        async with self._db.write() as session:
            row = (
                await session.execute(
                    delete(ConversationState)
                    .where(_state_of(user_id), ConversationState.state == Step.PREVIEW)
                    .returning(ConversationState.data)
                )
            ).one_or_none()
            if row is None:
                return None
            data = row.data
            broadcast = Broadcast(
                created_by=user_id,
                message_text=data["text"],
                photo_file_id=data.get("photo"),
                audience=data["audience"],
                status=BroadcastStatus.SENDING,
                recipients=0,
                progress_chat_id=user_id,
                progress_message_id=progress_message_id,
                created_at=now,
                confirmed_at=now,
            )
            session.add(broadcast)
            await session.flush()
            recipients = self._recipients(data["audience"]).subquery()
            rows = select(
                recipients.c.id,
                literal(KIND, String),
                literal(broadcast.id),
                literal({}, JSON),
                literal(f"{KIND}:{broadcast.id}:", String) + cast(recipients.c.id, String),
                literal(OutboxStatus.PENDING.value, String),
                literal(now, OutboxMessage.not_before.type),
                literal(0),
                literal(now, OutboxMessage.created_at.type),
            ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
            inserted = await affected_rows(
                session,
                self._insert()(OutboxMessage)
                .from_select(
                    [
                        "resident_id",
                        "kind",
                        "broadcast_id",
                        "payload",
                        "dedupe_key",
                        "status",
                        "not_before",
                        "attempts",
                        "created_at",
                    ],
                    rows,
                )
                .on_conflict_do_nothing(index_elements=["dedupe_key"]),
            )
            broadcast.recipients = max(inserted, 0)
            return broadcast.id


def _visible(html_text: str) -> str:
    """The characters Telegram counts in an HTML text: without tags, entities decoded."""
    return unescape(re.sub(r"<[^<>]*>", "", html_text))


def _state_of(user_id: int) -> ColumnElement[bool]:
    return and_(
        ConversationState.user_id == user_id, ConversationState.conversation == CONVERSATION
    )


def _draft(state: str, data: dict[str, Any]) -> Draft:
    return Draft(Step(state), data.get("text"), data.get("photo"), data.get("audience"))
