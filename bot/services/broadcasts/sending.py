"""Broadcasts, the domain half of sending: whom an audience reaches, how far a broadcast has
gone, stopping it, closing it with its report, and each resident's choice to receive them.

The paced sender (bot/plumbing/broadcast_sending.py) delivers the outbox rows that a confirmed
draft (drafts.py) queued; progress and reports are counted in SQL from the rows' statuses.
Kept apart from composing, since the sender and the composing person never need each other's
half: the sender reads, stops and closes; composing writes the draft and confirms it.

Audiences always leave out people who withdrew consent, blocked the bot (inactive), turned
announcements off, or have no Telegram account (enrolled at a desk).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.clock import Clock
from storage.db import Database
from storage.models import (
    Broadcast,
    BroadcastStatus,
    OutboxMessage,
    OutboxStatus,
    Registration,
    RegistrationStatus,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
    Territory,
    Venue,
    Workshop,
)
from storage.results import affected_rows

KIND = "broadcast"  # outbox rows of a broadcast, rendered and paced by the broadcast sender
REPORT_KIND = "broadcast_report"  # the delivery report to the sender, a normal outbox message
NEEDS_SURVEY = "needs"
HARD_TASKS = "hard_tasks"
NEIGHBOURHOOD = "neighbourhood"

# Why a row was dropped (OutboxMessage.last_error), grouped in reports.
BLOCKED = "blocked"
CANCELLED = "cancelled"
OPTED_OUT = "announcements off"
UNREACHABLE = "unreachable"
# Why a row failed although Telegram never refused it: reading or rendering it went wrong.
NOT_PREPARED = "not prepared"


@dataclass(frozen=True)
class Progress:
    broadcast_id: int
    status: str
    recipients: int
    sent: int
    blocked: int  # blocked the bot, or turned announcements off meanwhile
    failed: int
    cancelled: int  # dropped because the broadcast was stopped
    remaining: int
    created_by: int
    progress_chat_id: int | None
    progress_message_id: int | None
    finished: bool  # closed: its report is queued


@dataclass(frozen=True)
class Failure:
    pseudonym: str
    outcome: str
    error: str


@dataclass(frozen=True)
class BroadcastMessage:
    text: str
    photo_file_id: str | None


class BroadcastSending:
    """The sender's side of broadcasts, and the audiences that drafts are confirmed to."""

    def __init__(self, db: Database, clock: Clock, *, default_language: str = "fr") -> None:
        self._db = db
        self._clock = clock
        self._default_language = default_language

    def _insert(self) -> Any:
        return sqlite_insert if self._db.is_sqlite else pg_insert

    # -- audiences ----------------------------------------------------------------------

    def _recipients(self, audience: dict[str, Any]) -> Select[int]:
        """The ids of the residents an audience reaches, as a SELECT (never run in Python)."""
        reachable = and_(
            Resident.consented_at.is_not(None),
            Resident.is_active.is_(True),
            Resident.wants_announcements.is_(True),
            Resident.telegram_id.is_not(None),
        )
        return select(Resident.id).where(reachable, self._audience_filter(audience))

    def _audience_filter(self, audience: dict[str, Any]) -> ColumnElement[bool]:
        kind = audience.get("kind")
        if kind == "all":
            return true()
        if kind in ("registrants", "waitlist"):
            status = (
                RegistrationStatus.CONFIRMED
                if kind == "registrants"
                else RegistrationStatus.WAITLISTED
            )
            return Resident.id.in_(
                select(Registration.resident_id).where(
                    Registration.workshop_id == int(audience["id"]), Registration.status == status
                )
            )
        if kind == "territory":
            territory_id = int(audience["id"])
            registered_there = (
                select(Registration.resident_id)
                .join(Workshop, Workshop.id == Registration.workshop_id)
                .join(Venue, Venue.id == Workshop.venue_id)
                .where(
                    Venue.territory_id == territory_id,
                    Registration.status != RegistrationStatus.CANCELLED,
                )
            )
            territory_key = select(Territory.key).where(Territory.id == territory_id)
            return or_(
                Resident.id.in_(registered_there),
                Resident.id.in_(self._needs_answer(NEIGHBOURHOOD, territory_key.scalar_subquery())),
            )
        if kind == "need":
            return Resident.id.in_(self._needs_answer(HARD_TASKS, literal(str(audience["key"]))))
        if kind == "language":
            language = str(audience["code"])
            if language == self._default_language:
                return or_(Resident.language == language, Resident.language.is_(None))
            return Resident.language == language
        raise ValueError(f"unknown audience {audience!r}")

    def _needs_answer(self, question: str, value: ColumnElement[Any]) -> Select[int | None]:
        """Residents whose needs-survey answer to `question` includes `value` (a JSON list)."""
        elements = (
            func.json_each(SurveyAnswer.choices)
            if self._db.is_sqlite
            else func.json_array_elements_text(SurveyAnswer.choices)
        ).table_valued("value")
        return (
            select(SurveyAnswerSet.resident_id)
            .select_from(SurveyAnswer)
            .join(elements, true())
            .join(SurveyAnswerSet, SurveyAnswerSet.id == SurveyAnswer.answer_set_id)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .where(
                SurveyRun.survey_key == NEEDS_SURVEY,
                SurveyAnswer.question_key == question,
                SurveyAnswerSet.resident_id.is_not(None),
                SurveyAnswer.choices.is_not(None),
                elements.c.value == value,
            )
        )

    # -- sending ------------------------------------------------------------------------
    async def set_progress_message(self, broadcast_id: int, chat_id: int, message_id: int) -> None:
        async with self._db.write() as session:
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id)
                .values(progress_chat_id=chat_id, progress_message_id=message_id)
            )

    async def shown_in(self, chat_id: int, message_id: int) -> int | None:
        """The broadcast whose progress is shown in this message, if any."""
        async with self._db.read() as session:
            return await session.scalar(
                select(Broadcast.id).where(
                    Broadcast.progress_chat_id == chat_id,
                    Broadcast.progress_message_id == message_id,
                )
            )

    async def sending_by(self, user_id: int) -> int | None:
        """The latest broadcast this person confirmed that is still being sent, if any."""
        async with self._db.read() as session:
            return await session.scalar(
                select(Broadcast.id)
                .where(Broadcast.created_by == user_id, Broadcast.status == BroadcastStatus.SENDING)
                .order_by(Broadcast.id.desc())
                .limit(1)
            )

    async def cancel(self, broadcast_id: int) -> bool:
        """Stop a broadcast in flight: rows not yet claimed are dropped at once; the rows in
        the sender's hands finish, and the sender writes the report."""
        now = self._clock.now()
        async with self._db.write() as session:
            cancelled = await affected_rows(
                session,
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.status == BroadcastStatus.SENDING)
                .values(status=BroadcastStatus.CANCELLED),
            )
            if cancelled != 1:
                return False
            await session.execute(_drop_unclaimed(broadcast_id, now))
            return True

    async def message(self, broadcast_id: int) -> BroadcastMessage | None:
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Broadcast.message_text, Broadcast.photo_file_id).where(
                        Broadcast.id == broadcast_id
                    )
                )
            ).one_or_none()
            return BroadcastMessage(row.message_text, row.photo_file_id) if row else None

    async def unfinished(self) -> list[int]:
        """Broadcasts still sending, or stopped but not yet reported (a handful at most)."""
        async with self._db.read() as session:
            ids = await session.scalars(
                select(Broadcast.id)
                .where(
                    or_(
                        Broadcast.status == BroadcastStatus.SENDING,
                        and_(
                            Broadcast.status == BroadcastStatus.CANCELLED,
                            Broadcast.finished_at.is_(None),
                        ),
                    )
                )
                .order_by(Broadcast.id)
            )
            return list(ids)

    async def progress(self, broadcast_id: int) -> Progress | None:
        async with self._db.read() as session:
            return await _progress(session, broadcast_id)

    async def final_progress(self, broadcast_id: int) -> Progress | None:
        """The final counts of a broadcast with no row left to send and not yet closed, else
        None. A stopped broadcast may still hold rows released by a sender that stopped: they
        are dropped here."""
        now = self._clock.now()
        async with self._db.write() as session:
            await session.execute(
                _drop_unclaimed(
                    broadcast_id,
                    now,
                    OutboxMessage.broadcast_id.in_(
                        select(Broadcast.id).where(Broadcast.status == BroadcastStatus.CANCELLED)
                    ),
                )
            )
            progress = await _progress(session, broadcast_id)
        if progress is None or progress.finished or progress.remaining:
            return None
        return progress

    async def close(self, final: Progress) -> bool:
        """Close a broadcast shown in its `final` state and queue its report (once).

        Only while that state still holds: not closed yet, nothing pending, and the status
        it was shown with (a stop pressed meanwhile must be shown first). False otherwise.
        """
        now = self._clock.now()
        async with self._db.write() as session:
            nothing_pending = ~(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.broadcast_id == final.broadcast_id,
                    OutboxMessage.status == OutboxStatus.PENDING,
                )
                .exists()
            )
            closed = await affected_rows(
                session,
                update(Broadcast)
                .where(
                    Broadcast.id == final.broadcast_id,
                    Broadcast.finished_at.is_(None),
                    Broadcast.status == final.status,
                    Broadcast.status.in_([BroadcastStatus.SENDING, BroadcastStatus.CANCELLED]),
                    nothing_pending,
                )
                .values(
                    finished_at=now,
                    status=case(
                        (Broadcast.status == BroadcastStatus.CANCELLED, BroadcastStatus.CANCELLED),
                        else_=BroadcastStatus.DONE,
                    ),
                ),
            )
            if closed != 1:
                return False
            await session.execute(
                self._insert()(OutboxMessage)
                .values(
                    chat_id=final.created_by,
                    kind=REPORT_KIND,
                    payload={"broadcast_id": final.broadcast_id},
                    dedupe_key=f"{REPORT_KIND}:{final.broadcast_id}",
                    not_before=now,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
            )
            return True

    async def failures(self, broadcast_id: int) -> list[Failure]:
        """Rows that were not delivered, for the report (pseudonymous: no Telegram id)."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(OutboxMessage.resident_id, OutboxMessage.status, OutboxMessage.last_error)
                .where(
                    OutboxMessage.broadcast_id == broadcast_id,
                    OutboxMessage.status.in_([OutboxStatus.FAILED, OutboxStatus.DROPPED]),
                    or_(OutboxMessage.last_error.is_(None), OutboxMessage.last_error != CANCELLED),
                )
                .order_by(OutboxMessage.id)
            )
            return [
                Failure(f"R{resident_id}", str(status), error or "")
                for resident_id, status, error in rows
            ]

    # -- residents' choice --------------------------------------------------------------

    async def set_announcements(self, telegram_id: int, wanted: bool) -> bool:
        """Turn announcements off or on; False when the person is not a consenting resident."""
        async with self._db.write() as session:
            changed = await affected_rows(
                session,
                update(Resident)
                .where(Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None))
                .values(wants_announcements=wanted),
            )
            return changed == 1

    async def wants_announcements(self, telegram_id: int) -> bool | None:
        async with self._db.read() as session:
            return await session.scalar(
                select(Resident.wants_announcements).where(
                    Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None)
                )
            )


def _drop_unclaimed(broadcast_id: int, now: datetime, *also: ColumnElement[bool]) -> Update:
    """Drop the rows of a stopped broadcast that no sender holds (never claimed, or their
    lease lapsed): the rows in a sender's hands finish first."""
    return (
        update(OutboxMessage)
        .where(
            OutboxMessage.broadcast_id == broadcast_id,
            OutboxMessage.status == OutboxStatus.PENDING,
            or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
            *also,
        )
        .values(status=OutboxStatus.DROPPED, last_error=CANCELLED)
    )


async def _progress(session: Any, broadcast_id: int) -> Progress | None:
    head = (
        await session.execute(
            select(
                Broadcast.status,
                Broadcast.recipients,
                Broadcast.created_by,
                Broadcast.progress_chat_id,
                Broadcast.progress_message_id,
                Broadcast.finished_at,
            ).where(Broadcast.id == broadcast_id)
        )
    ).one_or_none()
    if head is None:
        return None
    counts: dict[tuple[str, str | None], int] = {}
    # A handful of groups: statuses, and the few fixed reasons for dropping a row.
    for status, error, count in await session.execute(
        select(OutboxMessage.status, OutboxMessage.last_error, func.count())
        .where(OutboxMessage.broadcast_id == broadcast_id)
        .group_by(OutboxMessage.status, OutboxMessage.last_error)
    ):
        key: tuple[str, str | None]
        if status == OutboxStatus.DROPPED:
            key = (status, CANCELLED if error == CANCELLED else BLOCKED)
        else:
            key = (status, None)
        counts[key] = counts.get(key, 0) + count
    return Progress(
        broadcast_id=broadcast_id,
        status=head.status,
        recipients=head.recipients,
        sent=counts.get((OutboxStatus.SENT, None), 0),
        blocked=counts.get((OutboxStatus.DROPPED, BLOCKED), 0),
        failed=counts.get((OutboxStatus.FAILED, None), 0),
        cancelled=counts.get((OutboxStatus.DROPPED, CANCELLED), 0),
        remaining=counts.get((OutboxStatus.PENDING, None), 0),
        created_by=head.created_by,
        progress_chat_id=head.progress_chat_id,
        progress_message_id=head.progress_message_id,
        finished=head.finished_at is not None,
    )
