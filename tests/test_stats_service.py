"""/stats figures on a small hand-built data set (tests/stats_helpers.py), on both backends.

The expected numbers below were computed by hand from the data set's description; None is a
figure hidden because it is about fewer than MIN_GROUP_SIZE (5) people.
"""

from __future__ import annotations

import time
from datetime import date
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from bench.seed_stats import SeedSizes, seed_stats
from bot.clock import ManualClock
from bot.services.stats.figures import StatsService
from bot.services.stats.scope import Period, PeriodError, StatsScope, folded, parse_period
from storage.db import Database
from tests.stats_helpers import FACILITATOR, T0, seed_hand_data

PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 12, 1)


def service(db: Database) -> StatsService:
    return StatsService(db, ManualClock(T0), PARIS, min_group_size=5)


def default_scope(**values: int | None) -> StatsScope:
    return StatsScope(parse_period(None, TODAY), **values)


def test_periods() -> None:
    assert parse_period(None, TODAY) == Period(date(2026, 9, 3), TODAY)
    assert parse_period("30d", TODAY) == Period(date(2026, 11, 2), TODAY)
    assert parse_period("2026-11", TODAY) == Period(date(2026, 11, 1), date(2026, 11, 30))
    assert parse_period("2026-12", TODAY) == Period(date(2026, 12, 1), date(2026, 12, 31))
    assert parse_period("2026-10-01..2026-12-31", TODAY) == Period(
        date(2026, 10, 1), date(2026, 12, 31)
    )
    for wrong in ("2026-13", "0d", "2026-12-31..2026-10-01", "last week", "2026-02-30..2026-03-01"):
        with pytest.raises(PeriodError):
            parse_period(wrong, TODAY)
    assert folded("Côte-Chaude") == folded("COTE-CHAUDE")


def test_period_bounds_are_paris_midnights() -> None:
    start, end = Period(date(2026, 10, 1), date(2026, 10, 31)).bounds(PARIS)
    # Summer time on 1 October, winter time on 1 November.
    assert start.isoformat() == "2026-09-30T22:00:00+00:00"
    assert end.isoformat() == "2026-10-31T23:00:00+00:00"


async def test_overview_matches_the_hand_computed_figures(db: Database) -> None:
    await seed_hand_data(db)
    overview = await service(db).overview(default_scope())
    figures = overview.figures
    assert overview.new_residents == 14  # R11-R24
    assert overview.workshops_held == 2  # W1, W2 (W4 is before the period)
    assert figures.residents == 23  # R1-R23
    assert figures.registrations == 25  # 10 + 5 + 10
    assert figures.cancellations is None  # 2 (hidden)
    assert figures.promotions is None  # 1 (hidden)
    assert figures.waitlist is None  # 4 (hidden: the group of 4)
    assert figures.confirmed == 13  # 8 + 5
    assert figures.attended == 10  # 6 + 4
    assert figures.attendance_rate == pytest.approx(10 / 13)
    assert figures.no_show_rate == pytest.approx(3 / 13)


async def test_breakdowns_match_and_hide_small_groups(db: Database) -> None:
    data = await seed_hand_data(db)
    stats = service(db)
    workshops = {g.group_id: g.figures for g in await stats.by_workshop(default_scope())}
    assert set(workshops) == {data.workshops["W1"], data.workshops["W2"], data.workshops["W3"]}
    w1, w2, w3 = (workshops[data.workshops[k]] for k in ("W1", "W2", "W3"))
    assert (w1.residents, w1.registrations, w1.cancellations, w1.promotions) == (10, 10, None, None)
    assert (w1.confirmed, w1.attended) == (8, 6)
    assert w1.attendance_rate == pytest.approx(0.75)
    assert w1.no_show_rate == pytest.approx(0.25)
    assert (w2.residents, w2.registrations, w2.confirmed, w2.attended) == (5, 5, 5, None)
    assert w2.attendance_rate == pytest.approx(0.8)  # the group (5 seats) is shown
    assert (w3.registrations, w3.waitlist, w3.confirmed) == (10, None, 0)
    assert w3.attendance_rate is None  # not held yet

    areas = {g.label: g.figures for g in await stats.by_territory(default_scope())}
    assert areas["Côte-Chaude"].residents == 13  # R1-R13
    assert areas["Côte-Chaude"].registrations == 15
    assert areas["Côte-Chaude"].attendance_rate == pytest.approx(10 / 13)
    assert areas["Tarentaize-Beaubrun"].registrations == 10
    assert areas["Tarentaize-Beaubrun"].waitlist is None

    venues = {g.label: g.figures.registrations for g in await stats.by_venue(default_scope())}
    assert venues == {"EPN epn-cote": 15, "EPN epn-tarentaize": 10}
    themes = {g.label["en"]: g.figures for g in await stats.by_theme(default_scope())}
    assert themes["E-mail"].registrations == 20
    assert themes["Health"].registrations == 5
    assert themes["Health"].attended is None  # 4


async def test_a_group_of_four_is_hidden_with_a_smaller_threshold_shown(db: Database) -> None:
    await seed_hand_data(db)
    lenient = StatsService(db, ManualClock(T0), PARIS, min_group_size=2)
    figures = (await lenient.overview(default_scope())).figures
    assert (figures.waitlist, figures.cancellations, figures.promotions) == (4, 2, None)


async def test_facilitators_see_only_their_workshops(db: Database) -> None:
    data = await seed_hand_data(db)
    stats = service(db)
    scope = default_scope(facilitator_id=FACILITATOR)
    overview = await stats.overview(scope)
    assert overview.figures.registrations == 20  # W1 + W3
    assert overview.figures.residents == 20  # R1-R10, R14-R23
    assert overview.new_residents == 10  # R14-R23 (R11-R13 only came to W2)
    assert overview.workshops_held == 1
    assert (overview.figures.confirmed, overview.figures.attended) == (8, 6)
    assert {g.group_id for g in await stats.by_workshop(scope)} == {
        data.workshops["W1"],
        data.workshops["W3"],
    }
    poll = await stats.survey_results(scope)
    assert poll.respondents == 6  # W1 only
    other = await stats.overview(default_scope(facilitator_id=FACILITATOR + 1))
    assert other.figures.registrations == 0 and other.new_residents == 0


async def test_neighbourhood_filter(db: Database) -> None:
    data = await seed_hand_data(db)
    stats = service(db)
    for written in ("cote chaude", "COTE-chaude", "côte-chaude", "cote-chaude"):
        found = await stats.find_territory(written)
        assert found is not None and found.territory_id == data.territory_a, written
    assert await stats.find_territory("côte") is None
    assert (await stats.find_territory("tarentaize")).territory_id == data.territory_b
    overview = await stats.overview(default_scope(territory_id=data.territory_a))
    assert overview.figures.registrations == 15
    assert overview.new_residents is None  # 3: R11-R13, hidden
    needs = await stats.needs(default_scope(territory_id=data.territory_a))
    assert needs.respondents == 6
    assert [(row.need, row.count) for row in needs.ranked] == [
        ("email", 6),
        ("sante", 5),
        ("argent_impots", None),
    ]


async def test_survey_results(db: Database) -> None:
    await seed_hand_data(db)
    poll = await service(db).survey_results(default_scope())
    assert poll.respondents == 10
    scales = {scale.question_key: scale for scale in poll.scales}
    satisfaction = scales["satisfaction"]
    assert satisfaction.answered == 10
    assert satisfaction.average == pytest.approx(4.5)  # (26 + 19) / 10
    assert satisfaction.distribution == (0, 0, None, None, 6)  # 0, 0, 1, 3, 6
    assert scales["autonomy"].average == pytest.approx((24 + 12) / 10)
    choices = [(c.question_key, c.choice, c.count) for c in poll.choices]
    assert choices == [("try_alone", "redo", 5), ("try_alone", "practise", None)]


async def test_needs_ranking_and_uncovered_needs(db: Database) -> None:
    data = await seed_hand_data(db)
    needs = await service(db).needs(default_scope())
    assert needs.respondents == 12
    assert [(row.territory_id, row.need, row.count) for row in needs.ranked] == [
        (data.territory_a, "email", 6),
        (data.territory_a, "sante", 5),
        (data.territory_a, "argent_impots", None),
        (data.territory_b, "papiers_elections_citoyennete", 5),
        (data.territory_b, "email", None),
        (None, "securite_numerique", None),
    ]
    # Only "email" has an upcoming workshop (W3); national order of the taxonomy.
    assert needs.uncovered == (
        "sante",
        "securite_numerique",
        "papiers_elections_citoyennete",
        "argent_impots",
    )


async def test_autonomy_before_and_after_per_theme(db: Database) -> None:
    await seed_hand_data(db)
    themes = {t.theme["en"]: t for t in await service(db).autonomy(default_scope())}
    email = themes["E-mail"]
    assert email.before == pytest.approx(2.0)  # R1-R6 only: R7 did not come
    assert email.before_answers == 6
    assert email.after == pytest.approx(4.0)
    assert email.after_answers == 6
    health = themes["Health"]
    assert (health.before, health.before_answers, health.after, health.after_answers) == (
        None,
        None,
        None,
        None,
    )


async def test_timeline_groups_paris_days(db: Database) -> None:
    await seed_hand_data(db)
    points = await service(db).timeline(StatsScope(parse_period("30d", TODAY)))
    assert points[0].starts_on == date(2026, 11, 2) and len(points) == 30
    by_day = {p.starts_on: p.registrations for p in points if p.registrations != 0}
    # W1's 10 on 11-01 are before the 30 days; W2's 5 on 11-15; W3's 6 + 4.
    assert by_day == {date(2026, 11, 15): 5, date(2026, 11, 25): 6, date(2026, 11, 26): None}


class StatementCounter:
    """Counts the SELECT statements sent to the database."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            self.count += 1


VIEWS = (
    "overview",
    "by_workshop",
    "by_venue",
    "by_territory",
    "by_theme",
    "survey_results",
    "needs",
    "autonomy",
    "timeline",
)


async def _statements_per_view(db: Database, stats: StatsService, scope: StatsScope) -> dict:
    counter = StatementCounter(db)
    counts = {}
    for view in VIEWS:
        before = counter.count
        started = time.perf_counter()
        await getattr(stats, view)(scope)
        counts[view] = counter.count - before
        counts[f"{view}_ms"] = (time.perf_counter() - started) * 1000
    return counts


async def test_each_view_uses_a_bounded_number_of_queries(db: Database, backend: str) -> None:
    await seed_hand_data(db)
    stats = service(db)
    small = await _statements_per_view(db, stats, default_scope())
    report = await seed_stats(db, T0, SeedSizes.scaled(0.05))
    assert report.registrations == 5_000
    large = await _statements_per_view(db, stats, default_scope())
    for view in VIEWS:
        assert small[view] == large[view], view
        assert 1 <= large[view] <= 4, view
    print(
        f"\n[{backend}] {report.registrations} registrations, {report.survey_answers} answers: "
        + ", ".join(f"{view} {large[f'{view}_ms']:.0f} ms" for view in VIEWS)
    )
