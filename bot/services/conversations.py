"""Where a person is in a conversation with the bot: the one store, and who gets their text.

Every step that waits for something typed is a ConversationState row, one per (person, kind),
written in the same unit of work as the feature's own change and deleted when the step is
over, so a restart in the middle loses nothing:

- "broadcast": a staff member composing an announcement (bot/services/broadcasts/drafts.py);
- "newworkshop", "editworkshop", "enrol": the staff's guided conversations (`Conversations`);
- "mediator": the "write your message" prompt of the relay (bot/services/mediator_relay.py);
- "survey_text": the survey question shown last, when it waits for a written answer
  (bot/services/surveys/written_question.py).

(The anonymous answers of a survey wait in rows of the same table, "survey:<run id>"; they are
a buffer, not a step, and never take a text.)

A private text is routed by ONE read of the person's open conversations (`Conversations.open`),
ordered by PRECEDENCE below: the router (handlers/free_text.py) offers the text to each in turn
and the first feature that takes it ends the update. Each feature then checks what is its own
(a draft still fresh, a prompt not expired, the survey question still current) in its service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from storage.db import Database
from storage.models import ConversationState

BROADCAST = "broadcast"
NEW_WORKSHOP = "newworkshop"
EDIT_WORKSHOP = "editworkshop"
ENROL = "enrol"
MEDIATOR = "mediator"
SURVEY_TEXT = "survey_text"

# Who gets a private text when several conversations are open: the tiers in this order; within
# a tier, the conversation opened (or moved on) last; at equal times, the order listed. A feature
# that does not take the text (a photo for a staff step, an expired draft, a closed survey)
# hands it to the next one, and a text nobody takes goes on to the ordinary handlers.
PRECEDENCE: tuple[tuple[str, ...], ...] = (
    # A staff member composing an announcement: their text or photo is the announcement.
    (BROADCAST,),
    # The staff's guided conversations (only one is open at a time; their commands clear
    # the others).
    (NEW_WORKSHOP, EDIT_WORKSHOP, ENROL),
    # A resident's explicit prompts: the one shown last takes the text, so a survey question
    # shown after "write your message" gets the answer, and the reverse.
    (MEDIATOR, SURVEY_TEXT),
)
ROUTED = tuple(kind for tier in PRECEDENCE for kind in tier)
_RANK = {
    kind: (tier, place) for tier, kinds in enumerate(PRECEDENCE) for place, kind in enumerate(kinds)
}

# A staff conversation left untouched this long is over: a text typed days later is not
# taken for the answer to a forgotten step (the person is told the draft expired).
CONVERSATION_KEPT_FOR = timedelta(hours=24)


@dataclass(frozen=True)
class Conversation:
    """One open conversation of a person, as read by the router."""

    kind: str
    state: str
    data: dict[str, Any]
    updated_at: datetime  # when the step was opened or last moved on


def by_precedence(conversations: list[Conversation]) -> list[Conversation]:
    """The conversations in the order they are offered a text (see PRECEDENCE)."""
    return sorted(
        conversations,
        key=lambda c: (_RANK[c.kind][0], -c.updated_at.timestamp(), _RANK[c.kind][1]),
    )


@dataclass(frozen=True)
class Step:
    """Where a staff member is in a guided conversation."""

    state: str
    data: dict[str, Any]
    expired: bool = False  # untouched for CONVERSATION_KEPT_FOR: to be cleared, not continued


def staff_step(conversation: Conversation, now: datetime) -> Step:
    return Step(
        conversation.state,
        dict(conversation.data),
        conversation.updated_at < now - CONVERSATION_KEPT_FOR,
    )


def row_of(user_id: int, kind: str) -> ColumnElement[bool]:
    """The row of one conversation of a person."""
    return and_(ConversationState.user_id == user_id, ConversationState.conversation == kind)


async def put(
    session: AsyncSession,
    user_id: int,
    kind: str,
    state: str,
    data: dict[str, Any],
    at: datetime,
) -> None:
    """Open a conversation, or move it to `state`, inside the caller's unit of work."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    statement = insert(ConversationState).values(
        user_id=user_id, conversation=kind, state=state, data=data, updated_at=at
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id", "conversation"],
            set_={"state": state, "data": data, "updated_at": at},
        )
    )


async def end(session: AsyncSession, user_id: int, *kinds: str) -> None:
    """Close conversations of a person, inside the caller's unit of work."""
    await session.execute(
        delete(ConversationState).where(
            ConversationState.user_id == user_id, ConversationState.conversation.in_(kinds)
        )
    )


class Conversations:
    """The open conversations of a person: one read for the router, and the staff's steps."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def open(self, user_id: int) -> list[Conversation]:
        """Every conversation of the person that may take a text, in PRECEDENCE order: the
        one read made for a private text. Expired ones are included (each feature knows how
        long its own step lasts, and what to say when it is over)."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    ConversationState.conversation,
                    ConversationState.state,
                    ConversationState.data,
                    ConversationState.updated_at,
                ).where(
                    ConversationState.user_id == user_id,
                    ConversationState.conversation.in_(ROUTED),
                )
            )
            found = [
                Conversation(r.conversation, r.state, dict(r.data), r.updated_at) for r in rows
            ]
        return by_precedence(found)

    async def get(self, user_id: int, name: str) -> Step | None:
        """The open step of one staff conversation; an expired one is as good as none."""
        async with self._db.read() as session:
            row = await session.get(ConversationState, (user_id, name))
            if row is None:
                return None
            step = staff_step(
                Conversation(name, row.state, row.data, row.updated_at), self._clock.now()
            )
        return None if step.expired else step

    async def set(self, user_id: int, name: str, state: str, data: dict[str, Any]) -> None:
        async with self._db.write() as session:
            await put(session, user_id, name, state, data, self._clock.now())

    async def clear(self, user_id: int, *names: str) -> None:
        async with self._db.write() as session:
            await end(session, user_id, *names)
