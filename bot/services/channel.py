"""One-line notices to the facilitators' channel: registrations, cancellations, promotions.

A notice is written to the outbox by the very transaction that changes the registration, so a
crash can neither lose a notice nor announce a change that was rolled back; its dedupe key
(one per registration and event) makes a replayed decision enqueue nothing new. The payload
holds ids and the counts of that moment, never names: the line is rendered at send time, in
the facilitators' language, and a person who erased their data is not named.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.outbox import enqueue_once
from bot.services.workshops.listing import waitlist_rank_subquery
from storage.db import Database
from storage.models import (
    Registration,
    RegistrationStatus,
    Resident,
    Venue,
    Workshop,
)

NOTICE_KIND = "channel_notice"


class NoticeEvent(StrEnum):
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    CANCELLED = "cancelled"  # a seat given up (maybe given to the first person waiting)
    LEFT_WAITLIST = "left_waitlist"
    PROMOTED = "promoted"  # announced alone when cancellations are not announced


@dataclass(frozen=True)
class NoticeFacts:
    """What a notice line says, read at send time."""

    event: NoticeEvent
    person: str | None  # None when the person is gone or has no first name
    title: dict[str, str]
    starts_at: datetime
    venue_name: str
    seats_left: int | None
    waitlist_rank: int | None
    promoted: bool
    promoted_person: str | None


class ChannelNotices:
    """Decides, inside registration transactions, which notices the channel gets."""

    def __init__(self, db: Database, admin_chat_id: int | None, kinds: Iterable[str]) -> None:
        self._db = db
        self._chat_id = admin_chat_id
        self._kinds = frozenset(kinds)

    def enabled(self, kind: str) -> bool:
        """Whether notices of `kind` (registrations, cancellations, promotions) are wanted."""
        return self._chat_id is not None and kind in self._kinds

    async def _enqueue(
        self, session: AsyncSession, key: str, payload: dict[str, Any], now: datetime
    ) -> None:
        await enqueue_once(
            session,
            chat_id=self._chat_id,
            kind=NOTICE_KIND,
            payload=payload,
            dedupe_key=f"{NOTICE_KIND}:{key}",
            not_before=now,
            created_at=now,
        )

    async def registered(
        self, session: AsyncSession, workshop_id: int, resident_id: int, now: datetime
    ) -> None:
        """A new seat or waitlist place, with the seats left or the rank at this moment."""
        if not self.enabled("registrations"):
            return
        row = (
            await session.execute(
                select(
                    Registration.id,
                    Registration.status,
                    waitlist_rank_subquery(Registration.waitlist_position).label("rank"),
                    (Workshop.capacity - Workshop.seats_taken).label("seats_left"),
                )
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .where(
                    Registration.workshop_id == workshop_id,
                    Registration.resident_id == resident_id,
                    Registration.status.in_(
                        (RegistrationStatus.CONFIRMED, RegistrationStatus.WAITLISTED)
                    ),
                )
            )
        ).one()
        confirmed = row.status == RegistrationStatus.CONFIRMED
        payload = {
            "event": NoticeEvent.CONFIRMED if confirmed else NoticeEvent.WAITLISTED,
            "workshop_id": workshop_id,
            "resident_id": resident_id,
            "seats_left": max(row.seats_left, 0) if confirmed else None,
            "waitlist_rank": None if confirmed else row.rank,
        }
        await self._enqueue(session, f"registered:{row.id}", payload, now)

    async def cancelled(
        self,
        session: AsyncSession,
        registration_id: int,
        *,
        was_waitlisted: bool,
        promoted_resident_id: int | None,
        now: datetime,
    ) -> None:
        """One line for a cancellation, naming who got the freed seat (when both are wanted).

        With cancellations turned off, the promotion it caused is still announced alone.
        """
        announce_promotion = promoted_resident_id is not None and self.enabled("promotions")
        if not self.enabled("cancellations"):
            if announce_promotion:
                workshop_id = await session.scalar(
                    select(Registration.workshop_id).where(Registration.id == registration_id)
                )
                assert workshop_id is not None and promoted_resident_id is not None
                await self.promoted(session, workshop_id, promoted_resident_id, now)
            return
        registration = (
            await session.execute(
                select(
                    Registration.workshop_id,
                    Registration.resident_id,
                    (Workshop.capacity - Workshop.seats_taken).label("seats_left"),
                )
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .where(Registration.id == registration_id)
            )
        ).one()
        payload = {
            "event": NoticeEvent.LEFT_WAITLIST if was_waitlisted else NoticeEvent.CANCELLED,
            "workshop_id": registration.workshop_id,
            "resident_id": registration.resident_id,
            "seats_left": None if was_waitlisted else max(registration.seats_left, 0),
            "promoted_resident_id": promoted_resident_id if announce_promotion else None,
        }
        await self._enqueue(session, f"cancelled:{registration_id}", payload, now)

    async def promoted(
        self, session: AsyncSession, workshop_id: int, resident_id: int, now: datetime
    ) -> None:
        """A person waiting got a seat (for promotions that no cancellation line announces)."""
        if not self.enabled("promotions"):
            return
        registration_id = await session.scalar(
            select(Registration.id).where(
                Registration.workshop_id == workshop_id,
                Registration.resident_id == resident_id,
                Registration.status == RegistrationStatus.CONFIRMED,
            )
        )
        payload = {
            "event": NoticeEvent.PROMOTED,
            "workshop_id": workshop_id,
            "resident_id": resident_id,
        }
        await self._enqueue(session, f"promoted:{registration_id}", payload, now)

    async def facts(self, payload: dict[str, Any]) -> NoticeFacts | None:
        """What to say about a queued notice; None when its workshop no longer exists."""
        promoted_id = payload.get("promoted_resident_id")
        async with self._db.read() as session:
            workshop = (
                await session.execute(
                    select(Workshop.title, Workshop.starts_at, Venue.name)
                    .join(Venue, Venue.id == Workshop.venue_id)
                    .where(Workshop.id == payload["workshop_id"])
                )
            ).one_or_none()
            if workshop is None:
                return None
            ids = [i for i in (payload["resident_id"], promoted_id) if i is not None]
            rows = await session.execute(
                select(Resident.id, Resident.first_name).where(Resident.id.in_(ids))
            )
            names = {row.id: row.first_name for row in rows}
        return NoticeFacts(
            event=NoticeEvent(payload["event"]),
            person=names.get(payload["resident_id"]),
            title=workshop.title,
            starts_at=workshop.starts_at,
            venue_name=workshop.name,
            seats_left=payload.get("seats_left"),
            waitlist_rank=payload.get("waitlist_rank"),
            promoted=promoted_id is not None,
            promoted_person=names.get(promoted_id) if promoted_id is not None else None,
        )
