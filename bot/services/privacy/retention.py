"""Retention (RGPD): residents inactive for RETENTION_MONTHS are erased, after a week's notice;
free-text survey answers are blanked after FREE_TEXT_RETENTION_MONTHS.

A person's last activity is their last interaction (`last_seen_at`, else when they were
created) or the end of a workshop they hold a place in, whichever is later. The daily run:

1. notices: inactive for RETENTION_MONTHS minus a week -> `retention_notice_at` set by one
   conditional UPDATE (the claim) and a message queued in the outbox (unique dedupe key);
2. erasure: noticed a week ago or more and still inactive -> erased exactly like /forget,
   one transaction per person, claimed by the conditional tombstone UPDATE;
   A failed erasure is logged (pseudonym) and counted; the others, and the next steps, go on;
3. free text older than its retention (by its answer set's week) -> NULL, anonymous or not;
   survey buffers (anonymous answers waiting, keyed by Telegram id) untouched for as long ->
   deleted; other conversations (staff drafts, the mediator prompt) past their day -> deleted;
4. finished outbox rows (sent, dropped, failed) older than OUTBOX_RETENTION -> deleted, in
   batches of OUTBOX_BATCH rows, one transaction each (a huge table is never locked long).
   Old by every date they hold (queued, due, sent): a row finished late keeps its own age.
   A broadcast's rows go once the broadcast has been closed for as long (its progress and
   report count them). Dedupe keys go with them: the one-off decisions (promotions, notices,
   broadcasts...) never come back, and the sweeps that dedupe by the outbox alone can no
   longer queue the row by then (see Settings._outbox_retention_floor);
5. payloads of the finished outbox rows left, older than a week -> {} (the rows, and so
   their dedupe keys, stay until step 4: nothing is sent twice; a mediator's reply is not kept);
6. one line of counts to the facilitators' channel when something was purged or failed.

Any interaction clears `retention_notice_at` (ResidentService.seen), which cancels the erasure.
Every step is a conditional UPDATE: re-running it, or two instances running it at once, does
nothing twice.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, String, and_, cast, delete, func, not_, or_, select, update
from sqlalchemy.orm import aliased

from bot.clock import Clock
from bot.services.broadcasts.drafts import DRAFT_KEPT_FOR
from bot.services.conversations import CONVERSATION_KEPT_FOR
from bot.services.outbox import enqueue_once
from bot.services.privacy.personal_data import erase_resident
from bot.services.registration import RegistrationService
from bot.services.surveys.answers import BUFFER_PREFIX
from storage.db import Database
from storage.models import (
    Broadcast,
    ConversationState,
    OutboxMessage,
    OutboxStatus,
    Registration,
    RegistrationStatus,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    Workshop,
)
from storage.results import affected_rows

log = logging.getLogger(__name__)

NOTICE_AHEAD = timedelta(days=7)
# Every conversation but the survey buffers is over after a day (staff drafts, /broadcast,
# the "write to a mediator" prompt): what is left of it is only personal data.
CONVERSATION_EXPIRY = max(CONVERSATION_KEPT_FOR, DRAFT_KEPT_FOR)
# A finished outbox row keeps its dedupe key; its payload (a mediator's reply...) goes.
PAYLOAD_KEPT_FOR = timedelta(days=7)
OUTBOX_KEPT_FOR = timedelta(days=30)  # the default of OUTBOX_RETENTION
OUTBOX_BATCH = 1000  # finished outbox rows deleted per transaction
FINISHED = (OutboxStatus.SENT, OutboxStatus.DROPPED, OutboxStatus.FAILED)
RETENTION_NOTICE = "retention_notice"
RETENTION_REPORT = "retention_report"
ERASE_BATCH = 200


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier (the last day if it is shorter)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class RetentionReport:
    noticed: int  # people told they will be erased in a week
    erased: int
    free_texts: int  # free-text answers blanked
    conversations: int = 0  # survey buffers past retention and expired drafts deleted
    payloads: int = 0  # payloads of finished outbox messages emptied
    outbox_rows: int = 0  # finished outbox rows deleted (routine, like payloads)
    failed: int = 0  # erasures that failed (logged; tried again at the next run)

    @property
    def purged(self) -> bool:
        """Worth a line in the facilitators' channel (emptied payloads are routine)."""
        return bool(self.erased or self.free_texts or self.conversations or self.failed)


class RetentionService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        registrations: RegistrationService,
        *,
        retention_months: int,
        free_text_retention_months: int,
        admin_chat_id: int | None,
        tz: ZoneInfo,
        outbox_retention: timedelta = OUTBOX_KEPT_FOR,
        outbox_batch: int = OUTBOX_BATCH,
    ) -> None:
        self._db = db
        self._clock = clock
        self._registrations = registrations
        self._months = retention_months
        self._free_text_months = free_text_retention_months
        self._admin_chat_id = admin_chat_id
        self._tz = tz
        self._outbox_retention = outbox_retention
        self._outbox_batch = outbox_batch

    def _inactive_since(self, cutoff: datetime) -> ColumnElement[bool]:
        """No interaction since `cutoff`, and no place in a workshop ending after it."""
        place = aliased(Registration)
        recent_place = (
            select(place.id)
            .join(Workshop, Workshop.id == place.workshop_id)
            .where(
                place.resident_id == Resident.id,
                place.status != RegistrationStatus.CANCELLED,
                Workshop.ends_at >= cutoff,
            )
            .exists()
        )
        return and_(
            Resident.erased_at.is_(None),
            func.coalesce(Resident.last_seen_at, Resident.created_at) < cutoff,
            not_(recent_place),
        )

    async def run(self, pseudonym: Callable[[int], str] | None = None) -> RetentionReport:
        """The daily run (see the module docstring); `pseudonym` names people in the logs."""
        now = self._clock.now()
        noticed = await self._send_notices(now)
        erased, failed = await self._erase_after_notice(now, pseudonym)
        free_texts = await self._blank_free_text(now)
        conversations = await self._delete_old_conversations(now)
        outbox_rows = await self._delete_finished_rows(now)
        payloads = await self._empty_finished_payloads(now)
        report = RetentionReport(
            noticed=noticed,
            erased=erased,
            free_texts=free_texts,
            conversations=conversations,
            payloads=payloads,
            outbox_rows=outbox_rows,
            failed=failed,
        )
        if report.purged and self._admin_chat_id is not None:
            async with self._db.write() as session:
                await enqueue_once(
                    session,
                    chat_id=self._admin_chat_id,
                    kind=RETENTION_REPORT,
                    payload={
                        "erased": erased,
                        "free_texts": free_texts,
                        "noticed": noticed,
                        "conversations": conversations,
                        "failed": failed,
                    },
                    dedupe_key=f"{RETENTION_REPORT}:{now.isoformat()}",
                    not_before=now,
                    created_at=now,
                )
        return report

    async def _send_notices(self, now: datetime) -> int:
        notice_cutoff = months_before(now, self._months) + NOTICE_AHEAD
        async with self._db.write() as session:
            # A notice that no longer applies (the operator lengthened the retention) is
            # withdrawn, so that nobody is erased on an outdated notice.
            await session.execute(
                update(Resident)
                .where(
                    Resident.retention_notice_at.is_not(None),
                    not_(self._inactive_since(notice_cutoff)),
                )
                .values(retention_notice_at=None)
                .execution_options(synchronize_session=False)
            )
            claimed = (
                await session.execute(
                    update(Resident)
                    .where(
                        Resident.retention_notice_at.is_(None),
                        self._inactive_since(notice_cutoff),
                    )
                    .values(retention_notice_at=now)
                    .returning(
                        Resident.id,
                        Resident.telegram_id,
                        Resident.consented_at,
                        Resident.is_active,
                    )
                    .execution_options(synchronize_session=False)
                )
            ).all()
            sent = 0
            for row in claimed:
                # Without consent (withdrawn) or Telegram (enrolled at a desk), nobody is
                # written to: the erasure simply follows a week later.
                if row.telegram_id is None or row.consented_at is None or not row.is_active:
                    continue
                await enqueue_once(
                    session,
                    resident_id=row.id,
                    kind=RETENTION_NOTICE,
                    payload={"erase_on": (now + NOTICE_AHEAD).isoformat()},
                    dedupe_key=f"{RETENTION_NOTICE}:{row.id}:{now.isoformat()}",
                    not_before=now,
                    created_at=now,
                )
                sent += 1
            return sent

    async def _erase_after_notice(
        self, now: datetime, pseudonym: Callable[[int], str] | None
    ) -> tuple[int, int]:
        """(erased, failed): one person's failure is logged and the run goes on."""
        cutoff = months_before(now, self._months)
        due = and_(
            Resident.retention_notice_at <= now - NOTICE_AHEAD,
            self._inactive_since(cutoff),
        )
        erased = failed = 0
        after = 0  # keyset: a failed person is not selected again in this run
        while True:
            async with self._db.read() as session:
                batch = (
                    await session.execute(
                        select(Resident.id, Resident.telegram_id)
                        .where(due, Resident.id > after)
                        .order_by(Resident.id)
                        .limit(ERASE_BATCH)
                    )
                ).all()
            for resident_id, telegram_id in batch:
                after = resident_id
                try:
                    # One transaction per person; the condition is checked again by the claim.
                    async with self._db.write() as session:
                        report = await erase_resident(
                            session, self._registrations, resident_id, now, condition=due
                        )
                except Exception as exc:  # one person must not stop the run
                    failed += 1
                    who = (
                        pseudonym(telegram_id)
                        if pseudonym is not None and telegram_id is not None
                        else f"record {resident_id}"
                    )
                    log.warning(
                        "retention: could not erase %s (%s); tried again at the next run",
                        who,
                        type(exc).__name__,
                    )
                    continue
                erased += report is not None
            if len(batch) < ERASE_BATCH:
                return erased, failed

    async def _blank_free_text(self, now: datetime) -> int:
        oldest_kept: date = months_before(now.astimezone(self._tz), self._free_text_months).date()
        async with self._db.write() as session:
            return await affected_rows(
                session,
                update(SurveyAnswer)
                .where(
                    SurveyAnswer.free_text.is_not(None),
                    SurveyAnswer.answer_set_id.in_(
                        select(SurveyAnswerSet.id).where(SurveyAnswerSet.time_bucket < oldest_kept)
                    ),
                )
                .values(free_text=None)
                .execution_options(synchronize_session=False),
            )

    async def _delete_old_conversations(self, now: datetime) -> int:
        """Survey buffers (anonymous answers waiting, free text included) untouched for the
        free-text retention, and every other conversation past its expiry."""
        oldest_buffer = months_before(now, self._free_text_months)
        buffer = ConversationState.conversation.startswith(BUFFER_PREFIX, autoescape=True)
        async with self._db.write() as session:
            return await affected_rows(
                session,
                delete(ConversationState)
                .where(
                    or_(
                        and_(buffer, ConversationState.updated_at < oldest_buffer),
                        and_(
                            not_(buffer), ConversationState.updated_at < now - CONVERSATION_EXPIRY
                        ),
                    )
                )
                .execution_options(synchronize_session=False),
            )

    async def _delete_finished_rows(self, now: datetime) -> int:
        """Finished outbox rows older than OUTBOX_RETENTION, batch after batch."""
        cutoff = now - self._outbox_retention
        closed_broadcasts = select(Broadcast.id).where(Broadcast.finished_at < cutoff)
        old = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status.in_(FINISHED),
                OutboxMessage.not_before < cutoff,
                OutboxMessage.created_at < cutoff,
                or_(OutboxMessage.sent_at.is_(None), OutboxMessage.sent_at < cutoff),
                or_(
                    OutboxMessage.broadcast_id.is_(None),
                    OutboxMessage.broadcast_id.in_(closed_broadcasts),
                ),
            )
            .limit(self._outbox_batch)
        )
        deleted = 0
        while True:
            async with self._db.write() as session:
                batch = await affected_rows(
                    session,
                    delete(OutboxMessage)
                    .where(OutboxMessage.id.in_(old))
                    .execution_options(synchronize_session=False),
                )
            deleted += batch
            if batch < self._outbox_batch:
                return deleted

    async def _empty_finished_payloads(self, now: datetime) -> int:
        async with self._db.write() as session:
            return await affected_rows(
                session,
                update(OutboxMessage)
                .where(
                    OutboxMessage.status.in_(FINISHED),
                    OutboxMessage.created_at < now - PAYLOAD_KEPT_FOR,
                    cast(OutboxMessage.payload, String) != "{}",
                )
                .values(payload={})
                .execution_options(synchronize_session=False),
            )

    async def notice_still_due(self, resident_id: int) -> bool:
        """Whether a queued notice still makes sense (the person has not come back since)."""
        async with self._db.read() as session:
            noticed = await session.scalar(
                select(Resident.retention_notice_at).where(
                    Resident.id == resident_id, Resident.erased_at.is_(None)
                )
            )
        return noticed is not None
