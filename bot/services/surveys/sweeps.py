"""Scheduled survey work: polls opened after workshops, follow-ups, runs closed with a digest.

What is due is decided by sweeps that read the database and the injected clock: re-running a
sweep, or two instances running it, changes nothing (unique runs, participations and outbox
dedupe keys, and an atomic claim of each digest). The job that runs them is in
handlers/surveys.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, cast, literal, select, update

from bot.clock import Clock
from bot.services.outbox import enqueue_once
from bot.services.reminders import ReminderPolicy
from bot.services.surveys.answers import BUFFER_PREFIX, AnswerStore
from bot.services.surveys.cards import DIGEST, INVITATION
from bot.services.surveys.definitions import FOLLOW_UP, POST_WORKSHOP, SurveyCatalog
from bot.services.surveys.participations import DialectInsert
from bot.settings import Settings
from storage.db import Database
from storage.models import (
    ConversationState,
    ParticipationStatus,
    Registration,
    Resident,
    SurveyParticipation,
    SurveyRun,
    Workshop,
    WorkshopStatus,
)
from storage.types import UTCDateTime


@dataclass(frozen=True)
class SweepReport:
    invited: int  # invitations queued (post-workshop polls and follow-ups)
    digests: int  # digests queued
    cards: int = 0  # response cards of anonymous answers just moved out of their buffers

    @property
    def queued(self) -> bool:
        return bool(self.invited or self.digests or self.cards)


class SurveySweeps:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalog: SurveyCatalog,
        settings: Settings,
        answers: AnswerStore,
        insert: DialectInsert,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = catalog
        self._settings = settings
        self._answers = answers
        self._insert = insert
        # Quiet hours are read by the reminders' policy: one definition of "quiet".
        self._quiet = ReminderPolicy(settings.reminder_offsets, settings.quiet_hours, settings.tz)

    async def sweep(self) -> SweepReport:
        """Everything due now: invitations after workshops, follow-ups, anonymous answers
        moved out of their buffers, digests (after the last answers of their run moved)."""
        invited = await self.invite_after_workshops(POST_WORKSHOP, self._settings.survey_delay)
        invited += await self.invite_after_workshops(FOLLOW_UP, self._settings.follow_up_after)
        now = self._clock.now()
        cards = await self._answers.flush_anonymous_answers(now)
        digests = await self.close_due_runs(now)
        return SweepReport(invited, digests, cards)

    async def invite_after_workshops(self, survey_key: str, delay: timedelta) -> int:
        """Open the run of each workshop whose poll is due and invite who attended.

        A workshop's poll is open from `delay` after its end (or the end of quiet hours
        then) for POLL_OPEN_FOR: the window is the workshop's, read from the database, so a
        sweep finds it whatever its period and however long the bot was stopped. A sweep
        that comes late opens the run for what is left of its window; after the whole
        window, the run is created closed (`opened_at` = `closes_at`: nobody is invited to
        a closed poll) and its digest tells the channel the poll was missed. People marked
        present later, while the run is open, are invited by a later sweep, but only if
        their invitation can go out (quiet hours) before the close. Returns the number of
        invitations queued.
        """
        now = self._clock.now()
        send_at = self._outside_quiet_hours(now)
        attended = (
            select(Registration.id)
            .where(Registration.workshop_id == Workshop.id, Registration.attended_at.is_not(None))
            .exists()
        )
        has_run = (
            select(SurveyRun.id)
            .where(SurveyRun.survey_key == survey_key, SurveyRun.workshop_id == Workshop.id)
            .exists()
        )
        async with self._db.write() as session:
            due = await session.execute(
                select(Workshop.id, Workshop.ends_at).where(
                    Workshop.ends_at <= now - delay,
                    Workshop.status != WorkshopStatus.CANCELLED,
                    attended,
                    ~has_run,
                )
            )
            new_runs = []
            for workshop_id, ends_at in due:
                closes_at = self._poll_close(ends_at + delay)
                new_runs.append(
                    {
                        "survey_key": survey_key,
                        "workshop_id": workshop_id,
                        "opened_at": min(send_at, closes_at),
                        "closes_at": closes_at,
                    }
                )
            if new_runs:
                await session.execute(
                    self._insert(SurveyRun)
                    .values(new_runs)
                    .on_conflict_do_nothing(
                        index_elements=["survey_key", "workshop_id"],
                        index_where=SurveyRun.workshop_id.is_not(None),
                    )
                )
            attendees = (
                select(
                    SurveyRun.id,
                    Registration.resident_id,
                    literal(ParticipationStatus.INVITED.value),
                    literal(now, UTCDateTime()),
                )
                .join(Registration, Registration.workshop_id == SurveyRun.workshop_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    SurveyRun.survey_key == survey_key,
                    SurveyRun.closes_at > send_at,
                    Registration.attended_at.is_not(None),
                    # Not people who withdrew their consent, nor erased ones (tombstones).
                    Resident.consented_at.is_not(None),
                )
                .distinct()
            )
            invited = (
                await session.execute(
                    self._insert(SurveyParticipation)
                    .from_select(["run_id", "resident_id", "status", "invited_at"], attendees)
                    .on_conflict_do_nothing(index_elements=["run_id", "resident_id"])
                    .returning(SurveyParticipation.id, SurveyParticipation.resident_id)
                )
            ).all()
            for row in invited:
                await enqueue_once(
                    session,
                    resident_id=row.resident_id,
                    kind=INVITATION,
                    payload={"participation_id": row.id},
                    dedupe_key=f"{INVITATION}:{row.id}",
                    not_before=send_at,
                    created_at=now,
                )
            return len(invited)

    async def close_due_runs(self, now: datetime) -> int:
        """Claim the runs whose time is up and queue their digest to the channel.

        The claim (`digest_sent_at` set where it was NULL) is one conditional UPDATE: two
        instances never queue two digests. A run whose anonymous answers still wait in
        buffers is claimed only once they have moved (flush_anonymous_answers), so that its
        digest counts them.
        """
        buffered = (
            select(ConversationState.user_id)
            .where(
                ConversationState.conversation
                == literal(BUFFER_PREFIX) + cast(SurveyRun.id, String)
            )
            .exists()
        )
        async with self._db.write() as session:
            claimed = list(
                await session.scalars(
                    update(SurveyRun)
                    .where(
                        SurveyRun.closes_at <= now,
                        SurveyRun.digest_sent_at.is_(None),
                        SurveyRun.survey_key.in_(self._catalog.keys_where(digest=True)),
                        ~buffered,
                    )
                    .values(digest_sent_at=now)
                    .returning(SurveyRun.id)
                    .execution_options(synchronize_session=False)
                )
            )
            admin = self._settings.admin_chat_id
            if not claimed or admin is None:
                return 0
            for run_id in claimed:
                await enqueue_once(
                    session,
                    chat_id=admin,
                    kind=DIGEST,
                    payload={"run_id": run_id},
                    dedupe_key=f"{DIGEST}:{run_id}",
                    not_before=now,
                    created_at=now,
                )
            return len(claimed)

    def _poll_close(self, opens_at: datetime) -> datetime:
        """When a poll due at `opens_at` closes: POLL_OPEN_FOR after it can first be sent."""
        return self._outside_quiet_hours(opens_at) + self._settings.poll_open_for

    def _outside_quiet_hours(self, moment: datetime) -> datetime:
        """An invitation due during quiet hours waits for their end (nobody is woken up)."""
        period = self._quiet.quiet_period(moment)
        return moment if period is None else period[1]
