"""Where time travel can go: the moments that matter in the life of a playground workshop.

The targets are read from the database for the workshop followed: the soonest one (not yet
over) at which a playground resident holds a seat, or else the one that ended last. Its next
reminder (as the reminder planner decides it, with the same filters), its end (stopping at its
start on the way, so that the check-in prompt goes out) and the close of its survey. A journey
ends where a person must act: the survey's target is first the moment its invitation goes out
(the journey halts there so that the poll can be answered), and only once the poll is open its
close. Nothing here knows of Telegram or HTTP: the playground turns a plan into clock moves and
job runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bot.clock import Clock
from bot.services.reminders import ReminderPolicy
from storage.db import Database
from storage.models import (
    Registration,
    RegistrationStatus,
    Resident,
    SurveyRun,
    Workshop,
    WorkshopStatus,
)

REMINDER = "reminder"
WORKSHOP_END = "workshop-end"
SURVEY_CLOSE = "survey-close"
TARGETS = (REMINDER, WORKSHOP_END, SURVEY_CLOSE)

# Why a target is missing: keys of locales/*/playground.yaml, shown under the disabled button.
NO_SEAT = "playground.travel.reason.no_seat"
STARTED = "playground.travel.reason.started"
OVER = "playground.travel.reason.over"
NO_REMINDER_LEFT = "playground.travel.reason.no_reminder_left"
NO_SURVEY_OPEN = "playground.travel.reason.no_survey_open"
NOBODY_CAME = "playground.travel.reason.nobody_came"


@dataclass(frozen=True)
class Target:
    """One place to travel to: ``stops`` in order (the last is the target), or a reason."""

    stops: tuple[datetime, ...] = ()
    reason: str | None = None
    reason_params: dict[str, str] = field(default_factory=dict)

    @property
    def at(self) -> datetime | None:
        return self.stops[-1] if self.stops else None


@dataclass(frozen=True)
class FocusWorkshop:
    """The workshop the targets are about (``over``: it ended, none is to come)."""

    workshop_id: int
    title: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    over: bool = False


@dataclass(frozen=True)
class TravelPlan:
    """The targets at one moment: computed afresh for each page refresh and each journey,
    since every travel (and every tap in a chat) may change them."""

    workshop: FocusWorkshop | None
    targets: dict[str, Target]

    def moments(self) -> list[datetime]:
        """Every stop of every target, soonest first: a step ("+1 day") halts at each one
        it passes, so that nothing they trigger is skipped."""
        return sorted({stop for target in self.targets.values() for stop in target.stops})


class TravelPlanner:
    """Computes the travel targets for the seats of the given Telegram users."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        policy: ReminderPolicy,
        *,
        telegram_ids: Sequence[int],
        survey_delay: timedelta,
        digest_surveys: Sequence[str],
    ) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy
        self._telegram_ids = tuple(telegram_ids)
        self._survey_delay = survey_delay
        self._digest_surveys = tuple(digest_surveys)

    async def plan(self) -> TravelPlan:
        now = self._clock.now()
        async with self._db.read() as session:
            # The seats the bot writes to: the reminder planner and the check-in prompts skip
            # people who stopped all messages or withdrew their consent, and so does this.
            seats = list(
                await session.execute(
                    select(
                        Workshop.id,
                        Workshop.title,
                        Workshop.starts_at,
                        Workshop.ends_at,
                        Registration.promoted_at,
                        func.coalesce(Registration.confirmed_at, Registration.created_at).label(
                            "seated_at"
                        ),
                    )
                    .join(Registration, Registration.workshop_id == Workshop.id)
                    .join(Resident, Resident.id == Registration.resident_id)
                    .where(
                        Resident.telegram_id.in_(self._telegram_ids),
                        Resident.is_active.is_(True),
                        Resident.consented_at.is_not(None),
                        Registration.status == RegistrationStatus.CONFIRMED,
                        Workshop.status == WorkshopStatus.SCHEDULED,
                    )
                )
            )
            survey_close = await session.scalar(
                select(func.min(SurveyRun.closes_at))
                .join(Registration, Registration.workshop_id == SurveyRun.workshop_id)
                .join(Resident, Resident.id == Registration.resident_id)
                .where(
                    Resident.telegram_id.in_(self._telegram_ids),
                    Registration.status == RegistrationStatus.CONFIRMED,
                    SurveyRun.survey_key.in_(self._digest_surveys),
                    SurveyRun.closes_at > now,
                    SurveyRun.digest_sent_at.is_(None),
                )
            )
            # Workshops that ended, whose survey the sweep has yet to open: it opens only when
            # somebody came (was marked present), as SurveyService.invite_after_workshops does.
            awaiting = {
                seat.id for seat in seats if seat.ends_at <= now < seat.ends_at + self._survey_delay
            }
            attended = set()
            if awaiting:
                attended = set(
                    await session.scalars(
                        select(Registration.workshop_id)
                        .where(
                            Registration.workshop_id.in_(awaiting),
                            Registration.attended_at.is_not(None),
                        )
                        .distinct()
                    )
                )
        workshop = _focus(seats, now)
        focus_seats = [seat for seat in seats if workshop and seat.id == workshop.workshop_id]
        return TravelPlan(
            workshop=workshop,
            targets={
                REMINDER: self._next_reminder(workshop, focus_seats, now),
                WORKSHOP_END: _workshop_end(workshop, now),
                SURVEY_CLOSE: self._survey_close(survey_close, seats, awaiting, attended),
            },
        )

    def _next_reminder(
        self, workshop: FocusWorkshop | None, seats: Sequence[Any], now: datetime
    ) -> Target:
        """The soonest moment after now when the reminder planner queues a reminder.

        ReminderPolicy.decide only changes its answer at a reminder's due time or at a seat's
        time, so those moments are the only ones to try.
        """
        if workshop is None:
            return Target(reason=NO_SEAT)
        if workshop.over:
            return Target(reason=OVER)
        if workshop.starts_at <= now:
            return Target(reason=STARTED)
        moments = {
            self._policy.due_at(workshop.starts_at, offset) for offset in self._policy.offsets
        }
        moments |= {seat.seated_at for seat in seats}
        for moment in sorted(m for m in moments if now < m < workshop.starts_at):
            for seat in seats:
                decisions = self._policy.decide(
                    workshop.starts_at, seat.seated_at, seat.promoted_at is not None, moment
                )
                if any(decision.send and decision.due > now for decision in decisions):
                    return Target((moment,))
        return Target(reason=NO_REMINDER_LEFT)

    def _survey_close(
        self,
        open_close: datetime | None,
        seats: Sequence[Any],
        awaiting: set[int],
        attended: set[int],
    ) -> Target:
        """The close of an open survey; else the moment the survey of a workshop that just
        ended reaches the people who came (the sweep opens it then): the journey halts there,
        before the close, so that they can answer (the next journey goes on to the close)."""
        if open_close is not None:
            return Target((open_close,))
        ended = sorted(
            seat.ends_at for seat in seats if seat.id in awaiting and seat.id in attended
        )
        if ended:
            opens = ended[0] + self._survey_delay
            period = self._policy.quiet_period(opens)  # an invitation waits for the morning
            return Target((opens if period is None else period[1],))
        if awaiting:
            return Target(reason=NOBODY_CAME)
        hours = str(round(self._survey_delay / timedelta(hours=1), 1)).removesuffix(".0")
        return Target(reason=NO_SURVEY_OPEN, reason_params={"hours": hours})


def _focus(seats: Sequence[Any], now: datetime) -> FocusWorkshop | None:
    """The soonest workshop not yet over; else the one that ended last (its survey is next)."""
    upcoming = [seat for seat in seats if seat.ends_at > now]
    if upcoming:
        seat = min(upcoming, key=lambda s: (s.starts_at, s.id))
        return FocusWorkshop(seat.id, seat.title, seat.starts_at, seat.ends_at)
    if not seats:
        return None
    seat = max(seats, key=lambda s: (s.ends_at, s.id))
    return FocusWorkshop(seat.id, seat.title, seat.starts_at, seat.ends_at, over=True)


def _workshop_end(workshop: FocusWorkshop | None, now: datetime) -> Target:
    """The end, by way of the start (the check-in prompt goes out while it runs)."""
    if workshop is None:
        return Target(reason=NO_SEAT)
    if workshop.over:
        return Target(reason=OVER)
    if workshop.starts_at > now:
        return Target((workshop.starts_at, workshop.ends_at))
    return Target((workshop.ends_at,))
