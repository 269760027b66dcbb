"""Helpers for the channel and mediator relay tests."""

from __future__ import annotations

from sqlalchemy import select

from storage.db import Database
from storage.models import OutboxMessage

ADMIN_CHAT_ID = -100123


async def outbox_of_kind(db: Database, kind: str) -> list[OutboxMessage]:
    async with db.read() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
        )
        return list(rows)
