"""The outbox: messages decided by a transaction, delivered later by a worker.

Rows are claimed with a lease in one atomic statement (FOR UPDATE SKIP LOCKED on PostgreSQL,
a BEGIN IMMEDIATE transaction on SQLite), so two workers, or two running instances, never
claim the same row, and a worker that dies releases its rows when the lease runs out. A row is
marked sent only after Telegram accepted the message: delivery is at-least-once, and
duplicates are bounded by the sends in flight when a process is killed.

Every claim spends one of a row's MAX_ATTEMPTS, whatever happens next: a row whose sender died
at each of its attempts is failed by the claim that would have handed it out once more. A row
failed for good (a refused message, its attempts spent) is reported to the facilitators'
channel by one FAILURE_REPORT row, queued by the very transaction that fails it: once, never
per attempt. Broadcast rows are left out (their broadcast's report counts them), and so are
the reports themselves (a channel that refuses them would get reports of reports).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from storage.db import Database
from storage.models import Broadcast, BroadcastStatus, OutboxMessage, OutboxStatus, Resident
from storage.results import affected_rows

LEASE = timedelta(minutes=2)  # the default of OUTBOX_LEASE
ID_BATCH = 500  # keys per IN (...) list, well under the drivers' parameter limits
MAX_ATTEMPTS = 5
FAILURE_REPORT = "outbox_failed"  # one line to the facilitators' channel per row failed for good
ABANDONED = "no answer"  # why a row whose sender died at each of its attempts failed

log = logging.getLogger(__name__)


async def enqueue_once(session: AsyncSession, **values: Any) -> bool:
    """Insert an outbox row (OutboxMessage columns) in the caller's transaction, unless one
    with the same dedupe key exists; returns whether it was inserted."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    inserted = await session.execute(
        insert(OutboxMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxMessage.id)
    )
    return inserted.scalar_one_or_none() is not None


async def queue_once(session: AsyncSession, rows: dict[str, dict[str, Any]]) -> list[str]:
    """Insert outbox rows (by dedupe key) that are not there yet; returns the keys of those
    inserted pending (to be sent).

    Keys already present are looked up first so that a sweep re-run every minute writes
    nothing; the insert still ignores conflicts, for another instance sweeping at once.
    """
    rows = dict(rows)
    keys = list(rows)
    for start in range(0, len(keys), ID_BATCH):
        batch = keys[start : start + ID_BATCH]
        found = await session.scalars(
            select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.in_(batch))
        )
        for key in found:
            rows.pop(key or "", None)
    queued = []
    for key in sorted(rows):
        if await enqueue_once(session, **rows[key]) and rows[key]["status"] == OutboxStatus.PENDING:
            queued.append(key)
    return queued


# What a failed row's report says about it (see Outbox._report).
_REPORTED = (
    OutboxMessage.id,
    OutboxMessage.kind,
    OutboxMessage.attempts,
    OutboxMessage.broadcast_id,
)


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    resident_id: int | None  # None for a message to a fixed chat (the facilitators' channel)
    chat_id: int | None  # None when the person is gone: the message is dropped
    language: str | None
    resident_active: bool
    broadcast_id: int | None = None  # set on the rows of a broadcast (one per recipient)
    wants_announcements: bool = True  # the person may have turned announcements off since


class Outbox:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        worker_id: str,
        *,
        lease: timedelta = LEASE,
        report_to: int | None = None,
    ) -> None:
        """`report_to`: the facilitators' channel (ADMIN_CHAT_ID), told of failed rows."""
        self._lease = lease
        self._report_to = report_to
        self._db = db
        self._clock = clock
        self.worker_id = worker_id
        # Rows being sent: renewed just before their sends, not finished yet (see renew).
        self._sending: set[int] = set()

    @property
    def sending(self) -> frozenset[int]:
        """The rows this worker is sending now (release_claims keeps them)."""
        return frozenset(self._sending)

    async def claim_due(self, limit: int = 50, *, broadcast: bool = False) -> list[ClaimedMessage]:
        """Claim up to `limit` due messages for this worker, oldest first.

        Broadcast rows are paced by their own sender (bot/plumbing/broadcast_sending.py): the generic
        delivery claims only the others (`broadcast=False`), the broadcast sender only rows of
        broadcasts still being sent (`broadcast=True`).
        """
        now = self._clock.now()
        of_broadcasts = (
            OutboxMessage.broadcast_id.in_(
                select(Broadcast.id).where(Broadcast.status == BroadcastStatus.SENDING)
            )
            if broadcast
            else OutboxMessage.broadcast_id.is_(None)
        )
        async with self._db.write() as session:
            ids: list[int] = []
            while len(ids) < limit:
                due = (
                    select(OutboxMessage.id, OutboxMessage.attempts)
                    .where(
                        OutboxMessage.status == OutboxStatus.PENDING,
                        OutboxMessage.not_before <= now,
                        or_(
                            OutboxMessage.claimed_until.is_(None),
                            OutboxMessage.claimed_until < now,
                        ),
                        of_broadcasts,
                    )
                    .order_by(OutboxMessage.not_before, OutboxMessage.id)
                    .limit(limit - len(ids))
                    .with_for_update(skip_locked=True)
                )
                found = (await session.execute(due)).all()
                fresh = [r.id for r in found if r.attempts < MAX_ATTEMPTS]
                # Claimed MAX_ATTEMPTS times and never finished: its sender died each time.
                spent = [r.id for r in found if r.attempts >= MAX_ATTEMPTS]
                if fresh:
                    await session.execute(
                        update(OutboxMessage)
                        .where(OutboxMessage.id.in_(fresh))
                        .values(
                            claimed_until=now + self._lease,
                            claimed_by=self.worker_id,
                            attempts=OutboxMessage.attempts + 1,
                        )
                    )
                    ids += fresh
                if not spent:
                    break
                failed = await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(spent))
                    .values(status=OutboxStatus.FAILED, claimed_until=None, last_error=ABANDONED)
                    .returning(*_REPORTED)
                    .execution_options(synchronize_session=False)
                )
                await self._report(session, failed.all(), ABANDONED, now)
            if not ids:
                return []
            rows = await session.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.kind,
                    OutboxMessage.payload,
                    OutboxMessage.attempts,
                    OutboxMessage.resident_id,
                    OutboxMessage.chat_id,
                    Resident.telegram_id,
                    Resident.language,
                    Resident.is_active,
                    Resident.consented_at,
                    Resident.wants_announcements,
                    OutboxMessage.broadcast_id,
                )
                .outerjoin(Resident, Resident.id == OutboxMessage.resident_id)
                .where(OutboxMessage.id.in_(ids))
                .order_by(OutboxMessage.not_before, OutboxMessage.id)
            )
            return [
                ClaimedMessage(
                    id=r.id,
                    kind=r.kind,
                    payload=r.payload,
                    attempts=r.attempts,
                    resident_id=r.resident_id,
                    chat_id=r.chat_id if r.chat_id is not None else r.telegram_id,
                    language=r.language,
                    resident_active=r.resident_id is None
                    or (bool(r.is_active) and r.consented_at is not None),
                    broadcast_id=r.broadcast_id,
                    wants_announcements=r.wants_announcements is not False,
                )
                for r in rows
            ]

    async def renew(self, message_id: int, *, broadcast_sending: bool = False) -> bool:
        """Extend this worker's lease on a row just before sending it.

        False when the row is no longer held by this worker (its lease ran out and another
        worker claimed it, or it was finished), or, with `broadcast_sending`, when its
        broadcast is no longer being sent (stopped, possibly by another instance): the
        caller must then not send it. True marks the row as being sent until it is finished
        (mark_sent, drop, fail, retry_later, postpone).
        """
        conditions = [
            OutboxMessage.id == message_id,
            OutboxMessage.claimed_by == self.worker_id,
            OutboxMessage.status == OutboxStatus.PENDING,
        ]
        if broadcast_sending:
            conditions.append(
                OutboxMessage.broadcast_id.in_(
                    select(Broadcast.id).where(Broadcast.status == BroadcastStatus.SENDING)
                )
            )
        async with self._db.write() as session:
            renewed = (
                await affected_rows(
                    session,
                    update(OutboxMessage)
                    .where(*conditions)
                    .values(claimed_until=self._clock.now() + self._lease)
                    .execution_options(synchronize_session=False),
                )
                == 1
            )
        if renewed:
            self._sending.add(message_id)
        return renewed

    async def _finish(self, message_id: int, *, cause: str = "", **values: Any) -> bool:
        """Update a row this worker still holds; False if its lease was lost meanwhile.

        A row failed here is reported (see _report) in the same transaction, with `cause`.
        """
        async with self._db.write() as session:
            finished = (
                await session.execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.id == message_id,
                        OutboxMessage.claimed_by == self.worker_id,
                        OutboxMessage.status == OutboxStatus.PENDING,
                    )
                    .values(claimed_until=None, **values)
                    .returning(*_REPORTED)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            if finished and values.get("status") == OutboxStatus.FAILED:
                await self._report(session, finished, cause, self._clock.now())
        # Only once written: a shutdown releasing claims meanwhile still keeps this row.
        self._sending.discard(message_id)
        return bool(finished)

    async def _report(
        self,
        session: AsyncSession,
        failed: Sequence[Row[*tuple[Any, ...]]],
        cause: str,
        now: datetime,
    ) -> None:
        """Queue one line for the facilitators' channel per row just failed for good: which
        row and why (an exception class or Telegram's verdict, never the row's content)."""
        for row in failed:
            log.warning(
                "outbox %s (%s) failed for good after %d attempts: %s",
                row.id,
                row.kind,
                row.attempts,
                cause,
            )
        reported = [
            {
                "chat_id": self._report_to,
                "kind": FAILURE_REPORT,
                "payload": {
                    "row": row.id,
                    "kind": row.kind,
                    "attempts": row.attempts,
                    "error": cause,
                },
                "not_before": now,
                "created_at": now,
            }
            for row in failed
            if row.broadcast_id is None and row.kind != FAILURE_REPORT
        ]
        if reported and self._report_to is not None:
            await session.execute(insert(OutboxMessage), reported)

    async def mark_sent(self, message_id: int) -> bool:
        return await self._finish(message_id, status=OutboxStatus.SENT, sent_at=self._clock.now())

    async def drop(self, message_id: int, reason: str) -> bool:
        """The message became pointless (or its recipient unreachable): never send it."""
        return await self._finish(message_id, status=OutboxStatus.DROPPED, last_error=reason)

    async def fail(self, message_id: int, error: str, *, cause: str | None = None) -> bool:
        """Telegram refused the message itself: sending it again as is would fail again.

        `cause` is what the channel's report says (by default `error`): a short verdict
        such as an exception class, never text that may quote the message.
        """
        return await self._finish(
            message_id,
            status=OutboxStatus.FAILED,
            last_error=error,
            cause=error if cause is None else cause,
        )

    async def retry_later(self, message: ClaimedMessage, delay: timedelta, error: str) -> bool:
        """Release the claim for a later attempt, or fail for good after MAX_ATTEMPTS.

        `error` is short (an exception class): it is also what the channel's report says.
        """
        if message.attempts >= MAX_ATTEMPTS:
            return await self._finish(
                message.id, status=OutboxStatus.FAILED, last_error=error, cause=error
            )
        return await self._finish(
            message.id, not_before=self._clock.now() + delay, last_error=error
        )

    async def postpone(self, message_id: int, delay: timedelta) -> bool:
        """Telegram asked to slow down: try again later without spending an attempt."""
        return await self._finish(
            message_id,
            not_before=self._clock.now() + delay,
            attempts=OutboxMessage.attempts - 1,
        )

    async def release_claims(self) -> int:
        """Give back the rows this worker still holds (a graceful shutdown): pending rows
        become claimable at once by the next start or another instance, instead of after
        their lease. Rows already sent or finished are untouched, and so are the rows being
        sent (`sending`: a shutdown that ran out of time may leave a send in flight): another
        instance claiming one now could send it a second time, so they keep their lease,
        whose expiry hands them over. A released row was not tried: its claim's attempt is
        given back. Returns how many rows were released."""
        keep = self.sending
        async with self._db.write() as session:
            return await affected_rows(
                session,
                update(OutboxMessage)
                .where(
                    OutboxMessage.claimed_by == self.worker_id,
                    OutboxMessage.status == OutboxStatus.PENDING,
                    OutboxMessage.claimed_until.is_not(None),
                    *([OutboxMessage.id.not_in(keep)] if keep else []),
                )
                .values(claimed_until=None, claimed_by=None, attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False),
            )
