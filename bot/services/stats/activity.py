"""The activity views of /stats: registrations, cancellations, promotions, the waitlist and
attendance, overall, by workshop, venue, neighbourhood or theme, and over time.

One family of views of StatsService (figures.py), kept with its own figures and queries:
each view is one to three GROUP BY queries over the registrations of the workshops in scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, case, distinct, exists, func, or_, select

from bot.services.stats.scope import Period, StatsReader, StatsScope, local_midnight
from storage.models import (
    Registration,
    RegistrationStatus,
    Resident,
    Territory,
    Theme,
    Venue,
    Workshop,
    WorkshopStatus,
)

# A registration's events (sign-up, cancellation, promotion, check-in) happen before its
# workshop ends; a day of grace covers a late roll call. Workshops that ended earlier than
# the period minus this are left out of the scan.
LATE_ROLL_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class Figures:
    """Activity of a group; None means hidden (fewer than MIN_GROUP_SIZE people)."""

    residents: int | None  # active: registered or attended in the period
    registrations: int | None
    cancellations: int | None
    promotions: int | None
    waitlist: int | None  # waiting now, for workshops still to come
    confirmed: int | None  # seats of the workshops that ended in the period
    attended: int | None
    attendance_rate: float | None
    no_show_rate: float | None


@dataclass(frozen=True)
class Overview:
    figures: Figures
    new_residents: int | None
    workshops_held: int  # workshops that ended in the period (not about people: never hidden)


@dataclass(frozen=True)
class GroupFigures:
    """One line of a breakdown: a workshop, a venue, a neighbourhood or a theme."""

    group_id: int
    label: dict[str, str] | str
    starts_at: datetime | None  # workshops only
    figures: Figures


# A grouped row's label and start (GroupFigures' fields between the id and the figures).
GroupLabel = Callable[[Row[Any]], tuple[dict[str, str] | str, datetime | None]]


@dataclass(frozen=True)
class TimelinePoint:
    starts_on: date
    registrations: int | None


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class ActivityViews(StatsReader):
    """The activity figures, overall and by group, and the registrations over time."""

    def _activity(self, scope: StatsScope) -> list[ColumnElement[Any]]:
        start, end = scope.period.bounds(self._tz)
        now = self._clock.now()

        def within(column: Any) -> ColumnElement[bool]:
            return and_(column >= start, column < end)

        ended = and_(
            Workshop.ends_at >= start,
            Workshop.ends_at < min(end, now),
            Workshop.status != WorkshopStatus.CANCELLED,
            Registration.status == RegistrationStatus.CONFIRMED,
        )
        active = or_(within(Registration.created_at), within(Registration.attended_at))
        return [
            func.count(distinct(case((active, Registration.resident_id)))).label("residents"),
            _count_if(within(Registration.created_at)).label("registrations"),
            _count_if(within(Registration.cancelled_at)).label("cancellations"),
            _count_if(within(Registration.promoted_at)).label("promotions"),
            _count_if(
                and_(
                    Registration.status == RegistrationStatus.WAITLISTED,
                    Workshop.status == WorkshopStatus.SCHEDULED,
                    Workshop.starts_at > now,
                )
            ).label("waitlist"),
            _count_if(ended).label("confirmed"),
            _count_if(and_(ended, Registration.attended_at.is_not(None))).label("attended"),
        ]

    def _activity_rows(self, scope: StatsScope, *group_by: Any) -> Select[Any]:
        """Registrations of the workshops in scope, with the activity figures per group."""
        start, _ = scope.period.bounds(self._tz)
        query = (
            select(*group_by, *self._activity(scope))
            .select_from(Registration)
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(Workshop.ends_at >= start - LATE_ROLL_GRACE)
        )
        return self._scoped(query, scope).group_by(*group_by)

    def _figures(self, row: Any) -> Figures:
        p = self.privacy
        confirmed, attended = int(row.confirmed), int(row.attended)
        return Figures(
            residents=p.count(row.residents),
            registrations=p.count(row.registrations),
            cancellations=p.count(row.cancellations),
            promotions=p.count(row.promotions),
            waitlist=p.count(row.waitlist),
            confirmed=p.count(confirmed),
            attended=p.count(attended),
            attendance_rate=p.rate(attended, confirmed),
            no_show_rate=p.rate(confirmed - attended, confirmed),
        )

    async def overview(self, scope: StatsScope) -> Overview:
        """Three queries: the activity, the workshops held, the new residents."""
        start, end = scope.period.bounds(self._tz)
        now = self._clock.now()
        in_scope = self._scoped(
            select(Registration.id)
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(Registration.resident_id == Resident.id),
            scope,
        )
        new_residents = select(func.count()).where(
            Resident.created_at >= start, Resident.created_at < end
        )
        if scope.facilitator_id is not None or scope.territory_id is not None:
            new_residents = new_residents.where(exists(in_scope))
        held = self._scoped(
            select(func.count())
            .select_from(Workshop)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(
                Workshop.ends_at >= start,
                Workshop.ends_at < min(end, now),
                Workshop.status != WorkshopStatus.CANCELLED,
            ),
            scope,
        )
        async with self._db.read() as session:
            activity = (await session.execute(self._activity_rows(scope))).one()
            workshops_held = await session.scalar(held)
            new = await session.scalar(new_residents)
        return Overview(self._figures(activity), self.privacy.count(new), int(workshops_held or 0))

    async def by_workshop(self, scope: StatsScope) -> list[GroupFigures]:
        grouped = self._activity_rows(scope, Registration.workshop_id.label("group_id")).subquery()
        query = (
            select(grouped, Workshop.title, Workshop.starts_at)
            .join(Workshop, Workshop.id == grouped.c.group_id)
            .order_by(Workshop.starts_at, Workshop.id)
        )
        return await self._groups(query, lambda row: (row.title, row.starts_at))

    async def by_venue(self, scope: StatsScope) -> list[GroupFigures]:
        grouped = self._activity_rows(scope, Workshop.venue_id.label("group_id")).subquery()
        query = (
            select(grouped, Venue.name)
            .join(Venue, Venue.id == grouped.c.group_id)
            .order_by(Venue.name)
        )
        return await self._groups(query, lambda row: (row.name, None))

    async def by_territory(self, scope: StatsScope) -> list[GroupFigures]:
        grouped = self._activity_rows(scope, Venue.territory_id.label("group_id")).subquery()
        query = (
            select(grouped, Territory.name)
            .join(Territory, Territory.id == grouped.c.group_id)
            .order_by(Territory.name)
        )
        return await self._groups(query, lambda row: (row.name, None))

    async def by_theme(self, scope: StatsScope) -> list[GroupFigures]:
        grouped = self._activity_rows(scope, Workshop.theme_id.label("group_id")).subquery()
        query = (
            select(grouped, Theme.name)
            .join(Theme, Theme.id == grouped.c.group_id)
            .order_by(Theme.key)
        )
        return await self._groups(query, lambda row: (row.name, None))

    async def _groups(self, query: Select[Any], label: GroupLabel) -> list[GroupFigures]:
        """One query; the grouped rows are only shaped here."""
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return [GroupFigures(row.group_id, *label(row), figures=self._figures(row)) for row in rows]

    async def timeline(self, scope: StatsScope) -> list[TimelinePoint]:
        """Registrations per local day (a month or less), week (a year or less) or month.

        The buckets are local-time boundaries computed here and compared in SQL, so both
        backends group by the same Paris days whatever the daylight saving time.
        """
        buckets = self._buckets(scope.period)
        start, end = scope.period.bounds(self._tz)
        bounds = [local_midnight(day, self._tz) for day in buckets[1:]]
        index = case(
            *((Registration.created_at < bound, i) for i, bound in enumerate(bounds)),
            else_=len(bounds),
        ).label("bucket")
        query = self._scoped(
            select(index, func.count())
            .select_from(Registration)
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(
                Registration.created_at >= start,
                Registration.created_at < end,
                Workshop.ends_at >= start - LATE_ROLL_GRACE,
            ),
            scope,
        ).group_by(index)
        async with self._db.read() as session:
            counts = dict((await session.execute(query)).all())
        return [
            TimelinePoint(day, self.privacy.count(counts.get(i, 0)))
            for i, day in enumerate(buckets)
        ]

    @staticmethod
    def _buckets(period: Period) -> list[date]:
        """First days of the buckets covering the period."""
        span = (period.last_day - period.first_day).days + 1
        day = period.first_day
        if span <= 31:
            step = 1
        elif span <= 366:
            step = 7
            day -= timedelta(days=day.weekday())
        else:
            firsts = []
            day = day.replace(day=1)
            while day <= period.last_day:
                firsts.append(day)
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            return firsts
        firsts = []
        while day <= period.last_day:
            firsts.append(day)
            day += timedelta(days=step)
        return firsts
