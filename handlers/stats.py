"""`/stats` and `/export` for coordinators (everything) and facilitators (their workshops).

Every call, every button press included, re-reads the person's roles: a kept or hand-made
button does nothing for someone who is not (or no longer) staff. The period and the
neighbourhood travel in the signed callback data, so the view buttons need no stored state.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, time

from babel.numbers import format_decimal, format_percent
from telegram import InputFile, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.services.stats.activity import GroupFigures
from bot.services.stats.scope import (
    Period,
    PeriodError,
    StatsScope,
    looks_like_period,
    parse_period,
)
from bot.services.stats.survey_answers import AutonomyByTheme, NeedsRanking, SurveyResults
from bot.services.surveys.definitions import QuestionDef
from bot.services.taxonomy import NEED_CATEGORIES
from bot.text.i18n import Html
from bot.text.user_text import quoted
from handlers.common import Reply, refuse_role
from handlers.views import Keyboard

log = logging.getLogger(__name__)
PRIVATE = filters.ChatType.PRIVATE

define_actions(
    {
        # view (index in VIEWS), first day, last day (yyyymmdd), neighbourhood (0 = all)
        "stats_view": ("Tv", ("id", "id", "id", "id")),
        # first day, last day, neighbourhood: the charts as pictures
        "stats_charts": ("Tc", ("id", "id", "id")),
    }
)
CALLBACK_PATTERN = r"^1\|T[vc]\|"
VIEWS = (
    "overview",
    "workshops",
    "venues",
    "neighbourhoods",
    "themes",
    "surveys",
    "needs",
    "autonomy",
)
COORDINATOR_ONLY_VIEWS = frozenset({"needs"})  # about residents in general, not workshops
MAX_GROUPS = 20  # lines of a breakdown in one message (the rest is in /export)
CHART_NEEDS = 6  # needs drawn in the chart (the most named)
NEEDS_PER_AREA = 6  # the most named needs of each neighbourhood in the needs view


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a coordinator sees everything, a facilitator their own workshops."""

    user_id: int
    coordinator: bool

    @property
    def facilitator_id(self) -> int | None:
        return None if self.coordinator else self.user_id


async def _viewer(r: Reply, what: str) -> Viewer | None:
    """The person's statistics role, or None after a polite refusal (logged, no identity)."""
    roles = await r.context.services.staff.roles_of(r.user_id)
    if "coordinator" in roles:
        return Viewer(r.user_id, coordinator=True)
    if "facilitator" in roles:
        return Viewer(r.user_id, coordinator=False)
    await refuse_role(r, what, ("coordinator", "facilitator"))
    return None


def _day_number(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _day(number: int) -> date:
    return date(number // 10_000, number // 100 % 100, number % 100)


# -- formatting ---------------------------------------------------------------------------


class Formatter:
    """Numbers and labels of the statistics in the reader's language."""

    def __init__(self, r: Reply) -> None:
        self.r = r
        self.min = r.context.services.settings.min_group_size

    def n(self, value: int | None) -> str:
        return Html(self.r.t("stats.hidden", min=self.min)) if value is None else str(value)

    def rate(self, value: float | None) -> str:
        if value is None:
            return self.r.t("stats.hidden_rate")
        return format_percent(value, locale=self.r.language)

    def average(self, value: float | None) -> str:
        if value is None:
            return self.r.t("stats.hidden_rate")
        return format_decimal(value, format="0.0", locale=self.r.language)

    def name(self, label: dict[str, str] | str) -> str:
        return self.r.context.services.translator.localized(label, self.r.language)

    def date(self, day: date) -> str:
        tz = self.r.context.services.settings.tz
        noon = datetime.combine(day, time(12), tzinfo=tz)
        return self.r.context.services.translator.short_date(self.r.language, noon, tz)

    def moment(self, when: datetime) -> str:
        tz = self.r.context.services.settings.tz
        return self.r.context.services.translator.short_date(self.r.language, when, tz)


def _question(r: Reply, survey: str, key: str) -> QuestionDef | None:
    catalog = r.context.services.surveys.catalog
    return catalog[survey].question(key) if survey in catalog.surveys else None


def _choice_label(r: Reply, question: QuestionDef | None, key: str) -> str:
    """The text of a choice as the person saw it (static or per-topic choices)."""
    if question is not None:
        choices = [*question.choices, *(c for topic in question.topics.values() for c in topic)]
        for choice in choices:
            if choice.key == key:
                return r.context.services.translator.localized(choice.text.as_dict(), r.language)
    return NEED_CATEGORIES.get(key, key)


def _need_label(r: Reply, key: str) -> str:
    return _choice_label(r, _question(r, "needs", "hard_tasks"), key)


async def _header(r: Reply, view: str, scope: StatsScope, viewer: Viewer) -> str:
    f = Formatter(r)
    area = r.t("stats.all_areas")
    if scope.territory_id is not None:
        territory = await r.context.services.stats.territory(scope.territory_id)
        area = territory.name if territory else area
    lines = [
        r.t(
            "stats.header",
            view=r.label(f"stats.view.{view}"),
            first=f.date(scope.period.first_day),
            last=f.date(scope.period.last_day),
            area=area,
        )
    ]
    if not viewer.coordinator:
        lines.append(r.t("stats.own_workshops"))
    return "\n".join(lines)


def _group_lines(r: Reply, groups: list[GroupFigures], *, dated: bool) -> list[str]:
    f = Formatter(r)
    if not groups:
        return [r.t("stats.empty")]
    lines = [r.t("stats.legend")]
    for group in groups[:MAX_GROUPS]:
        name = f.name(group.label)
        if dated and group.starts_at is not None:
            name = f"{f.moment(group.starts_at)} · {name}"
        figures = group.figures
        lines.append(
            r.t(
                "stats.group",
                name=name,
                residents=f.n(figures.residents),
                registrations=f.n(figures.registrations),
                cancellations=f.n(figures.cancellations),
                waitlist=f.n(figures.waitlist),
                promotions=f.n(figures.promotions),
                attendance=f.rate(figures.attendance_rate),
                no_show=f.rate(figures.no_show_rate),
            )
        )
    if len(groups) > MAX_GROUPS:
        lines.append(r.t("stats.more", lines=len(groups) - MAX_GROUPS))
    return lines


async def view_text(r: Reply, view: str, scope: StatsScope, viewer: Viewer) -> str:
    """The text of one view: a few grouped queries, then formatting only."""
    stats = r.context.services.stats
    f = Formatter(r)
    lines = [await _header(r, view, scope, viewer), ""]
    if view == "overview":
        overview = await stats.overview(scope)
        figures = overview.figures
        lines += [
            r.t("stats.new_residents", value=f.n(overview.new_residents)),
            r.t("stats.active_residents", value=f.n(figures.residents)),
            r.t("stats.registrations", value=f.n(figures.registrations)),
            r.t("stats.cancellations", value=f.n(figures.cancellations)),
            r.t("stats.waitlist", value=f.n(figures.waitlist)),
            r.t("stats.promotions", value=f.n(figures.promotions)),
            r.t("stats.workshops_held", value=str(overview.workshops_held)),
            r.t(
                "stats.attendance",
                attended=f.n(figures.attended),
                confirmed=f.n(figures.confirmed),
                rate=f.rate(figures.attendance_rate),
            ),
            r.t("stats.no_show", rate=f.rate(figures.no_show_rate)),
        ]
    elif view == "workshops":
        lines += _group_lines(r, await stats.by_workshop(scope), dated=True)
    elif view == "venues":
        lines += _group_lines(r, await stats.by_venue(scope), dated=False)
    elif view == "neighbourhoods":
        lines += _group_lines(r, await stats.by_territory(scope), dated=False)
    elif view == "themes":
        lines += _group_lines(r, await stats.by_theme(scope), dated=False)
    elif view == "surveys":
        lines += _survey_lines(r, await stats.survey_results(scope))
    elif view == "needs":
        lines += _needs_lines(r, await stats.needs(scope))
    else:
        lines += _autonomy_lines(r, await stats.autonomy(scope))
    lines += ["", r.t("stats.hidden_note", min=f.min)]
    return "\n".join(lines)


def _survey_lines(r: Reply, results: SurveyResults) -> list[str]:
    f = Formatter(r)
    lines = [r.t("stats.poll_respondents", value=f.n(results.respondents))]
    for scale in results.scales:
        question = _question(r, "post_workshop", scale.question_key)
        label = f.name(question.label.as_dict()) if question is not None else scale.question_key
        lines.append(
            r.t(
                "stats.scale",
                question=label,
                average=f.average(scale.average),
                answered=f.n(scale.answered),
                d1=f.n(scale.distribution[0]),
                d2=f.n(scale.distribution[1]),
                d3=f.n(scale.distribution[2]),
                d4=f.n(scale.distribution[3]),
                d5=f.n(scale.distribution[4]),
            )
        )
    for question_key in dict.fromkeys(choice.question_key for choice in results.choices):
        question = _question(r, "post_workshop", question_key)
        label = f.name(question.label.as_dict()) if question is not None else question_key
        lines.append(r.t("stats.choices_title", question=label))
        lines += [
            r.t(
                "stats.choice",
                choice=_choice_label(r, question, choice.choice),
                value=f.n(choice.count),
            )
            for choice in results.choices
            if choice.question_key == question_key
        ]
    return lines


def _needs_lines(r: Reply, needs: NeedsRanking) -> list[str]:
    f = Formatter(r)
    lines = [r.t("stats.needs_respondents", value=f.n(needs.respondents))]
    current: object = object()
    shown = 0
    for row in needs.ranked:
        if row.territory_id != current:
            current, shown = row.territory_id, 0
            lines.append(
                r.t("stats.needs_area", area=row.territory_name or r.t("stats.needs_no_area"))
            )
        shown += 1
        if shown > NEEDS_PER_AREA:
            continue
        lines.append(r.t("stats.choice", choice=_need_label(r, row.need), value=f.n(row.count)))
    if needs.uncovered:
        lines.append("")
        lines.append(
            r.t(
                "stats.uncovered",
                needs=", ".join(_need_label(r, key) for key in needs.uncovered),
            )
        )
    elif needs.ranked:
        lines.append(r.t("stats.all_covered"))
    return lines


def _autonomy_lines(r: Reply, themes: list[AutonomyByTheme]) -> list[str]:
    f = Formatter(r)
    if not themes:
        return [r.t("stats.empty")]
    lines = [r.t("stats.autonomy_intro")]
    lines += [
        r.t(
            "stats.autonomy_line",
            theme=f.name(theme.theme),
            before=f.average(theme.before),
            after=f.average(theme.after),
            before_count=f.n(theme.before_answers),
            after_count=f.n(theme.after_answers),
        )
        for theme in themes
    ]
    return lines


def keyboard(r: Reply, current: str, scope: StatsScope, viewer: Viewer) -> Keyboard:
    first = _day_number(scope.period.first_day)
    last = _day_number(scope.period.last_day)
    area = scope.territory_id or 0
    buttons = [
        r.button(
            ("• " if view == current else "") + r.label(f"stats.view.{view}"),
            "stats_view",
            index,
            first,
            last,
            area,
        )
        for index, view in enumerate(VIEWS)
        if viewer.coordinator or view not in COORDINATOR_ONLY_VIEWS
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([r.button(r.label("stats.charts"), "stats_charts", first, last, area)])
    return rows


# -- commands and buttons -----------------------------------------------------------------


async def stats_command(update: Update, context: BotContext) -> None:
    """/stats [period] [neighbourhood]: the overview, with buttons for the other views."""
    r = await Reply.for_update(update, context)
    viewer = await _viewer(r, "/stats")
    if viewer is None:
        return
    words = list(context.args or [])
    period_text = words.pop(0) if words and looks_like_period(words[0]) else None
    stats = context.services.stats
    try:
        period = parse_period(period_text, stats.today())
    except PeriodError:
        await r.send(r.t("stats.bad_period", text=quoted(period_text or "")))
        return
    territory_id = None
    if words:
        territory = await stats.find_territory(" ".join(words))
        if territory is None:
            names = ", ".join(t.name for t in await stats.territories())
            await r.send(r.t("stats.unknown_area", text=quoted(" ".join(words)), names=names))
            return
        territory_id = territory.territory_id
    scope = StatsScope(period, territory_id, viewer.facilitator_id)
    await r.send(
        await view_text(r, "overview", scope, viewer), keyboard(r, "overview", scope, viewer)
    )


async def on_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    r = await Reply.for_update(update, context)
    callback = context.services.callbacks.decode(r.user_id, query.data)
    if callback is None:
        log.info(
            "refused stale or forged stats button from %s", r.context.services.pseudonym(r.user_id)
        )
        await r.toast(r.label("button.stale"), alert=True)
        return
    viewer = await _viewer(r, "a stats button")
    if viewer is None:
        return
    if callback.action == "stats_view":
        index, first, last, area = (callback.int_arg(i) for i in range(4))
    else:
        index = -1
        first, last, area = (callback.int_arg(i) for i in range(3))
    try:
        period = Period(_day(first), _day(last))
    except ValueError:
        await r.toast(r.label("button.stale"), alert=True)
        return
    scope = StatsScope(period, area or None, viewer.facilitator_id)
    if index >= len(VIEWS) or (
        index >= 0 and VIEWS[index] in COORDINATOR_ONLY_VIEWS and not viewer.coordinator
    ):
        log.info("refused a coordinator view to %s", r.context.services.pseudonym(r.user_id))
        await r.toast(r.label("staff.refused"), alert=True)
        return
    if index >= 0:
        await r.toast()
        view = VIEWS[index]
        await r.show(await view_text(r, view, scope, viewer), keyboard(r, view, scope, viewer))
        return
    await r.toast(r.label("stats.charts_coming"))
    await send_charts(r, scope, viewer)


def _needs_by_area(r: Reply, needs: NeedsRanking) -> tuple[list[str], dict[str, list[int | None]]]:
    """Neighbourhoods, and for each of the most named needs its count in each of them."""
    no_area = r.label("stats.needs_no_area")
    counts = {(row.territory_name or no_area, row.need): row.count for row in needs.ranked}
    areas = list(dict.fromkeys(area for area, _ in counts))
    totals: dict[str, int] = {}
    for (_, need), count in counts.items():
        totals[need] = totals.get(need, 0) + (count or 0)
    top = sorted(totals, key=lambda need: -totals[need])[:CHART_NEEDS]
    parts = {_need_label(r, need): [counts.get((area, need), 0) for area in areas] for need in top}
    return areas, parts


async def send_charts(r: Reply, scope: StatsScope, viewer: Viewer) -> None:
    """The four charts, each drawn in a worker thread, sent as photos."""
    # matplotlib (with numpy) is imported on the first request for charts, in a worker thread,
    # not at start-up: it took 0.65 s of the bot's start and about 40 MB of its memory, for
    # a picture a coordinator asks for now and then (issue 6, bench/resources.py).
    charts = await asyncio.to_thread(importlib.import_module, "bot.services.stats.charts")
    stats = r.context.services.stats
    f = Formatter(r)
    hidden = f"< {f.min}"
    pictures: list[tuple[str, bytes]] = []
    workshops = [g for g in await stats.by_workshop(scope) if g.figures.confirmed != 0]
    pictures.append(
        (
            r.label("stats.chart.attendance"),
            await asyncio.to_thread(
                charts.grouped_bars,
                [f.name(g.label) for g in workshops],
                [[g.figures.confirmed for g in workshops], [g.figures.attended for g in workshops]],
                charts.ChartText(
                    r.label("stats.chart.attendance"),
                    r.label("stats.chart.workshop"),
                    r.label("stats.chart.people"),
                    hidden,
                    (r.label("stats.chart.seats"), r.label("stats.chart.present")),
                ),
            ),
        )
    )
    if viewer.coordinator:
        areas, parts = _needs_by_area(r, await stats.needs(scope))
        pictures.append(
            (
                r.label("stats.chart.needs"),
                await asyncio.to_thread(
                    charts.stacked_bars,
                    areas,
                    parts,
                    charts.ChartText(
                        r.label("stats.chart.needs"),
                        r.label("stats.chart.people"),
                        "",
                        hidden,
                    ),
                ),
            )
        )
    results = await stats.survey_results(scope)
    satisfaction = next((s for s in results.scales if s.question_key == "satisfaction"), None)
    pictures.append(
        (
            r.label("stats.chart.satisfaction"),
            await asyncio.to_thread(
                charts.distribution,
                satisfaction.distribution if satisfaction else (),
                charts.ChartText(
                    r.label("stats.chart.satisfaction"),
                    r.label("stats.chart.score"),
                    r.label("stats.chart.answers"),
                    hidden,
                ),
            ),
        )
    )
    timeline = await stats.timeline(scope)
    pictures.append(
        (
            r.label("stats.chart.registrations"),
            await asyncio.to_thread(
                charts.timeline,
                [point.starts_on for point in timeline],
                [point.registrations for point in timeline],
                charts.ChartText(
                    r.label("stats.chart.registrations"),
                    r.label("stats.chart.period"),
                    r.label("stats.chart.registrations_axis"),
                    hidden,
                ),
            ),
        )
    )
    # The charts answer a button of a message the bot sent to a chat (no inline mode), so
    # the update has one: the same invariant as Reply.send's.
    assert r.chat_id is not None
    for caption, png in pictures:
        await r.context.bot.send_photo(
            r.chat_id, InputFile(png, filename="chart.png"), caption=caption
        )


async def export_command(update: Update, context: BotContext) -> None:
    """/export: CSV files, one per table, sent as documents."""
    r = await Reply.for_update(update, context)
    viewer = await _viewer(r, "/export")
    if viewer is None:
        return
    await r.send(r.t("stats.export_preparing"))
    assert r.chat_id is not None  # a private chat's command (filters=PRIVATE), as r.send asserts
    async with context.services.exports.export(viewer.facilitator_id) as files:
        for file in files:
            with file.path.open("rb") as handle:
                await context.bot.send_document(
                    r.chat_id,
                    InputFile(handle, filename=file.name),
                    caption=r.label("stats.export_caption", rows=file.rows),
                )
    await r.send(r.t("stats.export_done", files=len(files)), None)
    log.info("export sent to %s", r.context.services.pseudonym(r.user_id))


def stats_handlers() -> list[BotHandler]:
    """Register before the resident handlers (their catch-alls would answer first)."""
    return [
        CommandHandler("stats", stats_command, filters=PRIVATE),
        CommandHandler("export", export_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
