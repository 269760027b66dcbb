"""Statistics for coordinators and facilitators: every figure is counted by the database.

Each view is a bounded number of GROUP BY queries (no query per row, no Python loop over
raw rows): the cost of a view depends on the number of groups shown, not on the number of
registrations or answers. Small counts are hidden here, before anything leaves the service:
a figure about 1 to MIN_GROUP_SIZE - 1 people comes out as None (shown "< 5"), and so does a
rate computed on a hidden group, so that no answer can be traced to a person.

Period: local days (settings.tz), first and last included. Events are counted when their own
time falls in the period (registered, cancelled, promoted, attended); attendance and no-show
rates are about the workshops that ended in the period; the waitlist is the one of now.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    distinct,
    exists,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased

from bot.clock import Clock
from bot.services.taxonomy import NEED_CATEGORIES
from storage.db import Database
from storage.models import (
    Registration,
    RegistrationStatus,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
    Territory,
    Theme,
    Venue,
    Workshop,
    WorkshopStatus,
)

POST_WORKSHOP = "post_workshop"
AUTONOMY_BEFORE = "autonomy_before"
NEEDS = "needs"
SCALE_VALUES = (1, 2, 3, 4, 5)
DEFAULT_DAYS = 90
# A registration's events (sign-up, cancellation, promotion, check-in) happen before its
# workshop ends; a day of grace covers a late roll call. Workshops that ended earlier than
# the period minus this are left out of the scan.
LATE_ROLL_GRACE = timedelta(days=1)


class PeriodError(ValueError):
    """The period written after /stats is not one of the accepted shapes."""


@dataclass(frozen=True)
class Period:
    """Local days, both included."""

    first_day: date
    last_day: date

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """UTC start (included) and end (excluded) of the local days."""
        return _local_midnight(self.first_day, tz), _local_midnight(
            self.last_day + timedelta(days=1), tz
        )


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


_DAYS = re.compile(r"^(\d{1,4})d$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def parse_period(text: str | None, today: date) -> Period:
    """`30d` (the last 30 days, today included), `2026-11` (a month), `2026-10-01..2026-12-31`;
    nothing: the last 90 days."""
    if not text:
        return Period(today - timedelta(days=DEFAULT_DAYS - 1), today)
    value = text.strip().lower()
    if match := _DAYS.match(value):
        days = int(match.group(1))
        if not 1 <= days <= 3660:
            raise PeriodError(text)
        return Period(today - timedelta(days=days - 1), today)
    try:
        if match := _MONTH.match(value):
            first = date(int(match.group(1)), int(match.group(2)), 1)
            following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return Period(first, following - timedelta(days=1))
        if match := _RANGE.match(value):
            first, last = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
            if first <= last:
                return Period(first, last)
    except ValueError:
        pass
    raise PeriodError(text)


def looks_like_period(text: str) -> bool:
    value = text.strip().lower()
    return bool(_DAYS.match(value) or _MONTH.match(value) or _RANGE.match(value))


def folded(text: str) -> str:
    """A name as compared: no case, no accents, dashes as spaces ("Côte-Chaude" == "cote chaude")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.split(r"[\s_-]+", bare)).strip()


@dataclass(frozen=True)
class StatsScope:
    """What a view is about: a period, maybe a neighbourhood, maybe one facilitator's workshops."""

    period: Period
    territory_id: int | None = None
    facilitator_id: int | None = None  # None: every workshop (coordinators)


@dataclass(frozen=True)
class Privacy:
    """Hides figures about fewer than `min_group_size` people (0 is shown: it is nobody)."""

    min_group_size: int

    def count(self, value: int | None) -> int | None:
        value = int(value or 0)
        return None if 0 < value < self.min_group_size else value

    def rate(self, part: int, whole: int) -> float | None:
        """part / whole; none for an empty group, hidden for a hidden group."""
        if whole <= 0 or whole < self.min_group_size:
            return None
        return part / whole

    def average(self, total: float | None, answers: int) -> float | None:
        if not answers or answers < self.min_group_size or total is None:
            return None
        return float(total)


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


@dataclass(frozen=True)
class ScaleSummary:
    question_key: str
    answered: int | None
    average: float | None
    distribution: tuple[int | None, ...]  # counts of 1..5


@dataclass(frozen=True)
class ChoiceCount:
    question_key: str
    choice: str
    count: int | None


@dataclass(frozen=True)
class SurveyResults:
    """The post-workshop poll (anonymous) of the workshops that ended in the period."""

    respondents: int | None
    scales: tuple[ScaleSummary, ...]
    choices: tuple[ChoiceCount, ...]  # most chosen first


@dataclass(frozen=True)
class NeedCount:
    territory_id: int | None  # None: no neighbourhood given, or "another one"
    territory_name: str | None
    need: str
    count: int | None


@dataclass(frozen=True)
class NeedsRanking:
    respondents: int | None
    ranked: tuple[NeedCount, ...]  # by neighbourhood, then most named first
    uncovered: tuple[str, ...]  # named needs that no upcoming workshop's theme covers


@dataclass(frozen=True)
class AutonomyByTheme:
    theme_id: int
    theme: dict[str, str]
    before: float | None
    before_answers: int | None
    after: float | None
    after_answers: int | None


@dataclass(frozen=True)
class TimelinePoint:
    starts_on: date
    registrations: int | None


@dataclass(frozen=True)
class TerritoryChoice:
    territory_id: int
    key: str
    name: str


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class StatsService:
    def __init__(self, db: Database, clock: Clock, tz: ZoneInfo, min_group_size: int) -> None:
        self._db = db
        self._clock = clock
        self._tz = tz
        self.privacy = Privacy(min_group_size)

    def today(self) -> date:
        return self._clock.now().astimezone(self._tz).date()

    # -- neighbourhoods -------------------------------------------------------------------

    async def territories(self) -> list[TerritoryChoice]:
        async with self._db.read() as session:
            rows = await session.execute(
                select(Territory.id, Territory.key, Territory.name).order_by(Territory.name)
            )
            return [TerritoryChoice(*row) for row in rows]

    async def find_territory(self, text: str) -> TerritoryChoice | None:
        """A neighbourhood by key or name, whatever the case and accents."""
        wanted = folded(text)
        for territory in await self.territories():
            if wanted in (folded(territory.key), folded(territory.name)):
                return territory
        return None

    async def territory(self, territory_id: int) -> TerritoryChoice | None:
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Territory.id, Territory.key, Territory.name).where(
                        Territory.id == territory_id
                    )
                )
            ).one_or_none()
            return TerritoryChoice(*row) if row else None

    # -- activity -------------------------------------------------------------------------

    def _scoped(self, query: Select[Any], scope: StatsScope) -> Select[Any]:
        if scope.facilitator_id is not None:
            query = query.where(Workshop.facilitator_id == scope.facilitator_id)
        if scope.territory_id is not None:
            query = query.where(Venue.territory_id == scope.territory_id)
        return query

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

    async def _groups(self, query: Select[Any], label: Any) -> list[GroupFigures]:
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
        bounds = [_local_midnight(day, self._tz) for day in buckets[1:]]
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

    # -- surveys --------------------------------------------------------------------------

    def _poll_sets(self, scope: StatsScope, survey_key: str) -> Select[Any]:
        """Completed answer sets of a survey about the workshops that ended in the period."""
        start, end = scope.period.bounds(self._tz)
        query = (
            select(SurveyAnswerSet.id)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .join(Workshop, Workshop.id == SurveyAnswerSet.workshop_id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(
                SurveyRun.survey_key == survey_key,
                SurveyAnswerSet.completed,
                Workshop.ends_at >= start,
                Workshop.ends_at < end,
            )
        )
        return self._scoped(query, scope)

    async def survey_results(self, scope: StatsScope) -> SurveyResults:
        """Four queries: respondents, scale averages, scale distributions, choice counts."""
        sets = self._poll_sets(scope, POST_WORKSHOP)
        in_sets = SurveyAnswer.answer_set_id.in_(sets.scalar_subquery())
        elements = _json_elements(SurveyAnswer.choices, self._db.is_sqlite)
        p = self.privacy
        async with self._db.read() as session:
            respondents = await session.scalar(select(func.count()).select_from(sets.subquery()))
            averages = (
                await session.execute(
                    select(
                        SurveyAnswer.question_key,
                        func.count(SurveyAnswer.number),
                        func.avg(SurveyAnswer.number),
                    )
                    .where(in_sets, SurveyAnswer.number.is_not(None))
                    .group_by(SurveyAnswer.question_key)
                    .order_by(SurveyAnswer.question_key)
                )
            ).all()
            distribution = {
                (key, number): count
                for key, number, count in await session.execute(
                    select(SurveyAnswer.question_key, SurveyAnswer.number, func.count())
                    .where(in_sets, SurveyAnswer.number.is_not(None))
                    .group_by(SurveyAnswer.question_key, SurveyAnswer.number)
                )
            }
            choices = (
                await session.execute(
                    select(SurveyAnswer.question_key, elements.c.value, func.count().label("n"))
                    .select_from(SurveyAnswer)
                    .join(elements, true())
                    .where(in_sets, SurveyAnswer.choices.is_not(None))
                    .group_by(SurveyAnswer.question_key, elements.c.value)
                    .order_by(SurveyAnswer.question_key, func.count().desc(), elements.c.value)
                )
            ).all()
        return SurveyResults(
            respondents=p.count(respondents),
            scales=tuple(
                ScaleSummary(
                    question_key=key,
                    answered=p.count(answered),
                    average=p.average(average, answered),
                    distribution=tuple(
                        p.count(distribution.get((key, value), 0)) for value in SCALE_VALUES
                    ),
                )
                for key, answered, average in averages
            ),
            choices=tuple(ChoiceCount(key, str(value), p.count(n)) for key, value, n in choices),
        )

    async def needs(self, scope: StatsScope) -> NeedsRanking:
        """Needs named in the needs survey, by the neighbourhood given in the same answers.

        Three queries: respondents, counts by neighbourhood and need, the need categories of
        upcoming workshops (to list the needs nobody covers). Weeks, not days: answer sets
        keep only the Monday of their week.
        """
        first_week = scope.period.first_day - timedelta(days=scope.period.first_day.weekday())
        hard = aliased(SurveyAnswer)
        place = aliased(SurveyAnswer)
        need = _json_elements(hard.choices, self._db.is_sqlite)
        place_key = place.choices[0].as_string()
        sets = (
            select(SurveyAnswerSet.id)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .where(
                SurveyRun.survey_key == NEEDS,
                SurveyAnswerSet.completed,
                SurveyAnswerSet.time_bucket >= first_week,
                SurveyAnswerSet.time_bucket <= scope.period.last_day,
            )
        )
        ranked = (
            select(Territory.id, Territory.name, need.c.value, func.count())
            .select_from(hard)
            .join(need, true())
            .outerjoin(
                place,
                and_(
                    place.answer_set_id == hard.answer_set_id,
                    place.question_key == "neighbourhood",
                ),
            )
            .outerjoin(Territory, Territory.key == place_key)
            .where(
                hard.question_key == "hard_tasks",
                hard.choices.is_not(None),
                hard.answer_set_id.in_(sets.scalar_subquery()),
            )
            .group_by(Territory.id, Territory.name, need.c.value)
            .order_by(
                Territory.name.is_(None),
                Territory.name,
                func.count().desc(),
                need.c.value,
            )
        )
        respondents = select(func.count()).select_from(sets.subquery())
        if scope.territory_id is not None:
            ranked = ranked.where(Territory.id == scope.territory_id)
            in_territory = (
                select(SurveyAnswer.id)
                .join(Territory, Territory.key == SurveyAnswer.choices[0].as_string())
                .where(
                    SurveyAnswer.answer_set_id == SurveyAnswerSet.id,
                    SurveyAnswer.question_key == "neighbourhood",
                    Territory.id == scope.territory_id,
                )
            )
            respondents = select(func.count()).select_from(
                sets.where(exists(in_territory)).subquery()
            )
        covered = self._scoped(
            select(Theme.need_category)
            .distinct()
            .join(Workshop, Workshop.theme_id == Theme.id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .where(
                Workshop.status == WorkshopStatus.SCHEDULED,
                Workshop.starts_at > self._clock.now(),
                Theme.need_category.is_not(None),
            ),
            StatsScope(scope.period, scope.territory_id),
        )
        async with self._db.read() as session:
            answered = await session.scalar(respondents)
            rows = (await session.execute(ranked)).all()
            covered_needs = set(await session.scalars(covered))
        p = self.privacy
        named = {str(row[2]) for row in rows}
        return NeedsRanking(
            respondents=p.count(answered),
            ranked=tuple(
                NeedCount(territory_id, name, str(value), p.count(count))
                for territory_id, name, value, count in rows
            ),
            uncovered=tuple(
                key for key in NEED_CATEGORIES if key in named and key not in covered_needs
            ),
        )

    async def autonomy(self, scope: StatsScope) -> list[AutonomyByTheme]:
        """Autonomy (1-5) at sign-up vs in the poll, per theme, for workshops ended in the period.

        Before: the answers of people who then attended. After: the poll, which only
        attendees receive. Three queries: before, after, the themes' names.
        """
        before_sets = self._poll_sets(scope, AUTONOMY_BEFORE).where(
            exists(
                select(Registration.id).where(
                    Registration.workshop_id == SurveyAnswerSet.workshop_id,
                    Registration.resident_id == SurveyAnswerSet.resident_id,
                    Registration.attended_at.is_not(None),
                )
            )
        )
        after_sets = self._poll_sets(scope, POST_WORKSHOP)

        def per_theme(sets: Select[Any]) -> Select[Any]:
            return (
                select(Workshop.theme_id, func.avg(SurveyAnswer.number), func.count())
                .select_from(SurveyAnswer)
                .join(SurveyAnswerSet, SurveyAnswerSet.id == SurveyAnswer.answer_set_id)
                .join(Workshop, Workshop.id == SurveyAnswerSet.workshop_id)
                .where(
                    SurveyAnswer.question_key == "autonomy",
                    SurveyAnswer.number.is_not(None),
                    SurveyAnswer.answer_set_id.in_(sets.scalar_subquery()),
                )
                .group_by(Workshop.theme_id)
            )

        async with self._db.read() as session:
            before = {t: (a, n) for t, a, n in await session.execute(per_theme(before_sets))}
            after = {t: (a, n) for t, a, n in await session.execute(per_theme(after_sets))}
            theme_ids = sorted(set(before) | set(after))
            names = dict(
                (
                    await session.execute(
                        select(Theme.id, Theme.name)
                        .where(Theme.id.in_(theme_ids))
                        .order_by(Theme.key)
                    )
                ).all()
            )
        p = self.privacy
        return [
            AutonomyByTheme(
                theme_id=theme_id,
                theme=name,
                before=p.average(*before.get(theme_id, (None, 0))),
                before_answers=p.count(before.get(theme_id, (None, 0))[1]),
                after=p.average(*after.get(theme_id, (None, 0))),
                after_answers=p.count(after.get(theme_id, (None, 0))[1]),
            )
            for theme_id, name in names.items()
        ]


def _json_elements(column: Any, is_sqlite: bool) -> Any:
    """The elements of a JSON list as rows with a `value` column, on either backend."""
    function = func.json_each if is_sqlite else func.json_array_elements_text
    return function(column).table_valued("value")
