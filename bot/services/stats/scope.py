"""What a statistics view is about, and what of it may be shown: the period (local days), the
neighbourhood, the facilitator's own workshops, and the rule that hides small counts.

Shared by every family of views (activity.py, survey_answers.py) and by the handlers that
parse what a person typed after /stats; kept apart so that the privacy rule and the meaning
of a period are written once.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select

from bot.clock import Clock
from storage.db import Database
from storage.models import Venue, Workshop

DEFAULT_DAYS = 90


class PeriodError(ValueError):
    """The period written after /stats is not one of the accepted shapes."""


@dataclass(frozen=True)
class Period:
    """Local days, both included."""

    first_day: date
    last_day: date

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """UTC start (included) and end (excluded) of the local days."""
        return local_midnight(self.first_day, tz), local_midnight(
            self.last_day + timedelta(days=1), tz
        )


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which a local day begins."""
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


class StatsReader:
    """What every family of views reads with: the database, the clock, the local time zone of
    the programme, and the small-count rule."""

    def __init__(self, db: Database, clock: Clock, tz: ZoneInfo, min_group_size: int) -> None:
        self._db = db
        self._clock = clock
        self._tz = tz
        self.privacy = Privacy(min_group_size)

    def today(self) -> date:
        return self._clock.now().astimezone(self._tz).date()

    def _scoped(self, query: Select[Any], scope: StatsScope) -> Select[Any]:
        if scope.facilitator_id is not None:
            query = query.where(Workshop.facilitator_id == scope.facilitator_id)
        if scope.territory_id is not None:
            query = query.where(Venue.territory_id == scope.territory_id)
        return query
