"""The views of /stats drawn from survey answers: the post-workshop poll, the needs named in
the needs survey by neighbourhood, and autonomy before and after a workshop, by theme.

One family of views of StatsService (figures.py), kept with its own figures and queries;
answers are counted in SQL, JSON lists of choices included, on both backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, func, select, true
from sqlalchemy.orm import aliased

from bot.services.stats.scope import StatsReader, StatsScope
from bot.services.taxonomy import NEED_CATEGORIES
from storage.models import (
    Registration,
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


class SurveyAnswerViews(StatsReader):
    """The figures of the post-workshop poll, the needs survey and the autonomy question."""

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
