"""What a workshop catalogue file may say: its sections, the fields of each entry, the checks
one entry passes on its own (keys, languages, dates, times, bounds).

Kept apart from reading the file (catalogue_file.py) and from applying it to the database
(importer.py): these are the rules an operator's file is held to, in one place, with no I/O.
A workshop's local date and times are resolved here to UTC instants, refusing the times that
daylight saving skips or repeats.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.services.taxonomy import NEED_CATEGORIES
from bot.settings import SUPPORTED_LANGUAGES

# The sections of a catalogue file, in the order they are written and imported.
KINDS = ("territories", "venues", "themes", "workshops")
KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
KEY_RULE = (
    "must be a short key: lowercase letters a-z, digits and hyphens, "
    "starting with a letter or a digit, at most 64 characters"
)
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)
# Sanity bounds that catch a typed extra zero or two (1500 seats, a 1200-minute workshop).
MAX_CAPACITY = 500
MAX_DURATION_MINUTES = 12 * 60
_CLOCK_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_CALENDAR_DAY = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
# SQLite stores a NUL in a text, PostgreSQL refuses it: refused in the file, on both.
_NO_NUL = "must not contain the NUL character (\\0)"


class CatalogueError(Exception):
    """The catalogue cannot be imported; `lines` says why, one problem per line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _context(info: ValidationInfo) -> dict[str, Any]:
    if not info.context:
        raise RuntimeError("catalogue entries are validated through load_catalogue()")
    context: dict[str, Any] = info.context  # load_catalogue() passes a dict (pydantic: Any)
    return context


def _require_mapping(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError("must give one text per language, e.g. fr: Bonjour")
    return value


def _check_texts(value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    """Per-language texts: the default language is required, no unknown language, no blank."""
    default = _context(info)["default_language"]
    allowed = ", ".join(SUPPORTED_LANGUAGES)
    problems = [
        f"unknown language {lang!r} (allowed: {allowed})"
        for lang in value
        if lang not in SUPPORTED_LANGUAGES
    ]
    problems += [f"{lang}: must not be empty" for lang, text in value.items() if not text.strip()]
    problems += [f"{lang}: {_NO_NUL}" for lang, text in value.items() if "\0" in text]
    if default not in value:
        problems.append(f"the {default} text is required")
    if problems:
        raise ValueError("; ".join(problems))
    return {lang: text.strip() for lang, text in value.items()}


def _parse_calendar_day(value: Any) -> Any:
    """A day written 2026-12-03; an impossible one (2026-02-30) says so."""
    match = _CALENDAR_DAY.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be a date written like 2026-12-03")
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(f"{value} is not a day of the calendar") from None


def _parse_clock_time(value: Any) -> Any:
    match = _CLOCK_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError('must be a time of day written like "14:00"')
    return dt.time(int(match[1]), int(match[2]))


Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]


def _refuse_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError(_NO_NUL)
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_refuse_nul),
]
Address = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=300),
    AfterValidator(_refuse_nul),
]
Texts = Annotated[dict[str, str], BeforeValidator(_require_mapping), AfterValidator(_check_texts)]
ClockTime = Annotated[dt.time, BeforeValidator(_parse_clock_time)]
CalendarDay = Annotated[dt.date, BeforeValidator(_parse_calendar_day)]


class CatalogueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Key


class TerritoryEntry(CatalogueEntry):
    name: Name


class VenueEntry(CatalogueEntry):
    territory: Key
    name: Name
    address: Address
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    opening_notes: Texts = Field(default_factory=dict)
    accessibility_notes: Texts = Field(default_factory=dict)


class ThemeEntry(CatalogueEntry):
    name: Texts
    need_category: str

    @field_validator("need_category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in NEED_CATEGORIES:
            hint = (
                did_you_mean(value, NEED_CATEGORIES)
                or " (the keys are in bot/services/taxonomy.py)"
            )
            raise ValueError(f"unknown category {value!r}{hint}")
        return value


class WorkshopEntry(CatalogueEntry):
    """A workshop; its local date and times are resolved to aware UTC datetimes on validation.

    The day is either `date`, or `in_days` after the day of import (optionally moved forward to
    the next `weekday`), so that a sample catalogue always lies in the coming weeks.
    """

    title: Texts
    description: Texts = Field(default_factory=dict)
    theme: Key
    venue: Key
    capacity: int = Field(ge=1, le=MAX_CAPACITY)
    status: Literal["scheduled", "cancelled"] | None = None
    date: CalendarDay | None = None
    in_days: int | None = Field(default=None, ge=0, le=366)
    weekday: Weekday | None = None
    start: ClockTime
    end: ClockTime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=MAX_DURATION_MINUTES)

    _starts_at: dt.datetime = PrivateAttr()
    _ends_at: dt.datetime = PrivateAttr()

    @property
    def starts_at(self) -> dt.datetime:
        return self._starts_at

    @property
    def ends_at(self) -> dt.datetime:
        return self._ends_at

    @model_validator(mode="after")
    def _resolve_times(self, info: ValidationInfo) -> WorkshopEntry:
        context = _context(info)
        tz: ZoneInfo = context["tz"]
        day = self._day(context["today"])
        if (self.end is None) == (self.duration_minutes is None):
            raise ValueError("end, duration_minutes: give exactly one of them")
        self._starts_at = _local_to_utc(day, self.start, tz, "start")
        if self.duration_minutes is not None:
            try:
                self._ends_at = self._starts_at + dt.timedelta(minutes=self.duration_minutes)
            except OverflowError:
                raise ValueError("duration_minutes: the end is out of range") from None
        else:
            assert self.end is not None
            self._ends_at = _local_to_utc(day, self.end, tz, "end")
            if self._ends_at <= self._starts_at:
                raise ValueError("end: must be after start")
        return self

    def _day(self, today: dt.date) -> dt.date:
        if (self.date is None) == (self.in_days is None):
            raise ValueError("date, in_days: give exactly one of them")
        if self.date is not None:
            if self.weekday is not None:
                raise ValueError("weekday: only goes with in_days")
            return self.date
        assert self.in_days is not None
        day = today + dt.timedelta(days=self.in_days)
        if self.weekday is not None:
            day += dt.timedelta(days=(WEEKDAYS.index(self.weekday) - day.weekday()) % 7)
        return day


def _local_to_utc(day: dt.date, at: dt.time, tz: ZoneInfo, field_name: str) -> dt.datetime:
    """The UTC instant of a local wall time, refusing the times that DST skips or repeats."""
    local = dt.datetime.combine(day, at, tzinfo=tz)
    try:
        moment = local.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{field_name}: {at:%H:%M} on {day} is out of range") from None
    if moment.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ValueError(
            f"{field_name}: {at:%H:%M} does not exist on {day} in {tz.key} "
            "(the clocks go forward); choose another time"
        )
    if local.replace(fold=1).astimezone(dt.UTC) != moment:
        raise ValueError(
            f"{field_name}: {at:%H:%M} happens twice on {day} in {tz.key} "
            "(the clocks go back); choose another time"
        )
    return moment


class CatalogueFile(BaseModel):
    """A whole catalogue file, validated and with its workshop times resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    territories: tuple[TerritoryEntry, ...] = ()
    venues: tuple[VenueEntry, ...] = ()
    themes: tuple[ThemeEntry, ...] = ()
    workshops: tuple[WorkshopEntry, ...] = ()


ENTRY_MODELS: dict[str, type[CatalogueEntry]] = {
    "territories": TerritoryEntry,
    "venues": VenueEntry,
    "themes": ThemeEntry,
    "workshops": WorkshopEntry,
}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A hint naming the closest of `candidates` (" (did you mean 'x'?)"), or nothing."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def problem_line(source: str, entry: str | None, field_path: str | None, message: str) -> str:
    """One problem as the operator reads it: file, entry, field, what is wrong."""
    return ": ".join(part for part in (source, entry, field_path, message) if part)
