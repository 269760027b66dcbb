"""Import of the workshop catalogue (territories, venues, themes, workshops) from a YAML file.

Operators keep the catalogue in one YAML file and run `capacity-bot import FILE`. The import is
all or nothing: the whole file is checked first and every problem is reported at once, one line
per problem naming the file, the entry (numbered from 1, as a person counts them) and the field;
only a clean file is written, in a single transaction. Entries are matched by their stable key,
so importing the same file twice changes nothing, and entries absent from the file are kept.
A reference (a venue's territory, a workshop's theme or venue) may name an entry of the file or
one already in the database, so that a file may carry only new workshops.

A re-import is an edit of live data: a workshop that has begun is history and is never changed
(a file using `in_days` would otherwise move it weeks later), a workshop dated in the past is
refused unless asked for, and a change of time or venue, or a cancellation, tells the people
registered exactly as /editworkshop does, in the same transaction. A dry run does it all and
rolls back, so that the operator sees what would change and how many people would be told.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.registration import LIVE
from bot.services.taxonomy import NEED_CATEGORIES
from bot.services.workshops.admin import (
    Change,
    queue_change_notices,
    time_change_stamp,
    venue_change_stamp,
)
from bot.settings import SUPPORTED_LANGUAGES
from storage.db import Database
from storage.models import Registration, Territory, Theme, Venue, Workshop, WorkshopStatus

SAMPLE_CATALOGUE = Path(__file__).resolve().parent / "saint-etienne.yaml"

# The sections of a catalogue file, in the order they are written and imported.
KINDS = ("territories", "venues", "themes", "workshops")
_SINGULAR = {
    "territories": "territory",
    "venues": "venue",
    "themes": "theme",
    "workshops": "workshop",
}

KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
_KEY_RULE = (
    "must be a short key: lowercase letters a-z, digits and hyphens, "
    "starting with a letter or a digit, at most 64 characters"
)
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)
# Sanity bounds that catch a typed extra zero or two (1500 seats, a 1200-minute workshop).
MAX_CAPACITY = 500
MAX_DURATION_MINUTES = 12 * 60
# A year of a city's workshops is well under 1 MB. Reading and checking cost seconds and about
# 50 times the file's size in memory per MB (a 52 MB file took 2.5 GB and nearly two minutes):
# the bound keeps a wrong file from taking the host.
MAX_FILE_MB = 5
# Keys per `IN (...)`: within the 999 variables of SQLite's oldest default limit (32,766 since
# 3.32, some builds more) and PostgreSQL's 32,767 parameters per statement.
KEYS_PER_QUERY = 500
_CLOCK_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_CALENDAR_DAY = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# SQLite stores a NUL in a text, PostgreSQL refuses it: refused in the file, on both.
_NO_NUL = "must not contain the NUL character (\\0)"


class CatalogueError(Exception):
    """The catalogue cannot be imported; `lines` says why, one problem per line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _CatalogueLoader(yaml.CSafeLoader):
    """A safe YAML loader that keeps clock times and dates as text and refuses a field written
    twice.

    YAML 1.1 reads an unquoted 14:00 as the base-60 integer 840, silently keeps the last of two
    identical fields, and turns 2026-02-30 into a Python exception with no line: all three would
    turn an operator's slip into a wrong workshop or a traceback. Dates are read by the models.
    Parsing is libyaml's (shipped in PyYAML's wheels): four times faster than pure Python, and
    it bounds the nesting depth, where the pure-Python parser overflows Python's stack.
    """

    # Checked before the int resolver of the same first character, so that 14:00 stays text.
    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [
            *([(_YAML_STR, re.compile(r"^[0-9]{1,2}:[0-9]{2}$"))] if first.isdigit() else []),
            *(resolver for resolver in resolvers if resolver[0] != _YAML_TIMESTAMP),
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value Python cannot hold (an integer of 5,000 digits) is a problem at its line."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            shown = str(node.value)[:20] + ("..." if len(str(node.value)) > 20 else "")
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} ({str(exc).split(';')[0]})", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"field {key_node.value!r} is written twice",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _context(info: ValidationInfo) -> dict[str, Any]:
    if not info.context:
        raise RuntimeError("catalogue entries are validated through load_catalogue()")
    return info.context


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


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Key


class TerritoryEntry(_Entry):
    name: Name


class VenueEntry(_Entry):
    territory: Key
    name: Name
    address: Address
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    opening_notes: Texts = Field(default_factory=dict)
    accessibility_notes: Texts = Field(default_factory=dict)


class ThemeEntry(_Entry):
    name: Texts
    need_category: str

    @field_validator("need_category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in NEED_CATEGORIES:
            hint = (
                _did_you_mean(value, NEED_CATEGORIES)
                or " (the keys are in bot/services/taxonomy.py)"
            )
            raise ValueError(f"unknown category {value!r}{hint}")
        return value


class WorkshopEntry(_Entry):
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


_ENTRY_MODELS: dict[str, type[_Entry]] = {
    "territories": TerritoryEntry,
    "venues": VenueEntry,
    "themes": ThemeEntry,
    "workshops": WorkshopEntry,
}


@dataclass(frozen=True)
class ImportReport:
    """How many entries of each kind the import created, updated and left unchanged; how many
    workshops it left alone because they had begun; how many notices it queued, about how many
    workshops (counts only: the report is printed, and holds no personal data)."""

    created: dict[str, int]
    updated: dict[str, int]
    unchanged: dict[str, int]
    begun: int = 0
    notices: int = 0
    workshops_told: int = 0

    def summary(self) -> str:
        parts = [
            f"{outcome}: {_counts(counts)}"
            for outcome, counts in (
                ("created", self.created),
                ("updated", self.updated),
                ("unchanged", self.unchanged),
            )
        ]
        if self.begun:
            parts.append(f"kept as they were, having begun: {_counts({'workshops': self.begun})}")
        told = f"{self.notices} (about {_counts({'workshops': self.workshops_told})})"
        parts.append(f"notices to the people registered: {told if self.notices else 'none'}")
        return "; ".join(parts)


def _counts(counts: Mapping[str, int]) -> str:
    parts = [
        f"{n} {kind if n != 1 else _SINGULAR[kind]}" for kind in KINDS if (n := counts.get(kind))
    ]
    return ", ".join(parts) or "none"


# --- Reading and validating the file -------------------------------------------------------

# A problem and where it sits (section rank, entry index), to list problems as the file reads.
_Located = tuple[tuple[int, int], str]


def load_catalogue(
    path: Path, *, default_language: str, tz: ZoneInfo, today: dt.date
) -> CatalogueFile:
    """Read and validate a catalogue file (no database); raise CatalogueError with every problem.

    `today` is the local day of import, the origin of `in_days`; times are local to `tz`.
    """
    if default_language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported default language {default_language!r}")
    source = str(path)
    raw = _read_yaml(path, source)
    if not isinstance(raw, dict):
        found = "it is empty" if raw is None else f"found a {type(raw).__name__}"
        sections = ", ".join(KINDS)
        raise CatalogueError(
            [f"{source}: the file must be a mapping with the sections {sections} ({found})"]
        )
    problems = _duplicate_keys(source, raw)
    catalogue: CatalogueFile | None = None
    try:
        catalogue = CatalogueFile.model_validate(
            raw, context={"default_language": default_language, "tz": tz, "today": today}
        )
    except ValidationError as exc:
        problems += [_describe(source, raw, error) for error in exc.errors()]
    if problems or catalogue is None:
        raise CatalogueError([line for _, line in sorted(problems, key=itemgetter(0))])
    return catalogue


def _read_yaml(path: Path, source: str) -> Any:
    limit = MAX_FILE_MB * 1_000_000
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)  # never more, whatever the file (a device, a pipe)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise CatalogueError([f"{source}: file not found"]) from None
    except UnicodeDecodeError:
        raise CatalogueError([f"{source}: not a UTF-8 text file"]) from None
    except OSError as exc:
        raise CatalogueError([f"{source}: cannot read the file ({exc.strerror})"]) from None
    if len(data) > limit:
        raise CatalogueError(
            [
                f"{source}: the file is larger than {MAX_FILE_MB} MB, the most a catalogue may "
                "weigh; split it into several files (a file may refer to entries already imported)"
            ]
        )
    try:
        return yaml.load(text, Loader=_CatalogueLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "unreadable"
        raise CatalogueError([f"{source}: {where}invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise CatalogueError([f"{source}: invalid YAML: {exc}"]) from None


def _entry_label(section: str, index: int, entry: Any) -> str:
    key = entry.get("key") if isinstance(entry, Mapping) else None
    label = f"{section}[{index + 1}]"
    return f"{label} (key={key})" if isinstance(key, str) else label


def _line(source: str, entry: str | None, field_path: str | None, message: str) -> str:
    return ": ".join(part for part in (source, entry, field_path, message) if part)


def _rank(section: str, index: int = -1) -> tuple[int, int]:
    return (KINDS.index(section) if section in KINDS else -1, index)


def _duplicate_keys(source: str, raw: Mapping[str, Any]) -> list[_Located]:
    problems: list[_Located] = []
    for section in KINDS:
        entries = raw.get(section)
        if not isinstance(entries, list):
            continue
        first: dict[str, int] = {}
        for index, entry in enumerate(entries):
            key = entry.get("key") if isinstance(entry, Mapping) else None
            if not isinstance(key, str):
                continue
            if key in first:
                message = f"{key!r} is already used by {section}[{first[key] + 1}]"
                label = _entry_label(section, index, entry)
                problems.append((_rank(section, index), _line(source, label, "key", message)))
            else:
                first[key] = index
    return problems


def _describe(source: str, raw: Mapping[str, Any], error: ErrorDetails) -> _Located:
    """One pydantic error as a line naming the file, the entry and the field."""
    loc = error["loc"]
    section = str(loc[0]) if loc else ""
    if len(loc) >= 2 and isinstance(loc[1], int):
        entries = raw.get(section)
        entry = entries[loc[1]] if isinstance(entries, list) else None
        label = _entry_label(section, loc[1], entry)
        field_path = ".".join(str(part) for part in loc[2:])
        allowed: Sequence[str] = list(_ENTRY_MODELS[section].model_fields)
        rank = _rank(section, loc[1])
    else:
        label, field_path, allowed, rank = None, section, KINDS, _rank(section)
    message = _message(error, field_path.rsplit(".", 1)[-1], allowed)
    return rank, _line(source, label, field_path, message)


def _message(error: ErrorDetails, name: str, allowed: Sequence[str]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    match kind:
        case "missing":
            return "required"
        case "extra_forbidden":
            hint = _did_you_mean(name, allowed) or f" (expected one of: {', '.join(allowed)})"
            return f"unknown field{hint}"
        case "value_error":
            return str(ctx["error"])
        case "greater_than_equal":
            return f"must be at least {ctx['ge']:g}"
        case "less_than_equal":
            return f"must be at most {ctx['le']:g}"
        case "string_too_short":
            return "must not be empty"
        case "string_too_long":
            return f"must be at most {ctx['max_length']} characters"
        case "string_pattern_mismatch":
            return _KEY_RULE
        case "string_type":
            return "must be text"
        case "int_type" | "int_parsing" | "int_from_float":
            return "must be a whole number"
        case "float_type" | "float_parsing" | "finite_number":
            return "must be a number"
        case "literal_error":
            return f"must be one of: {ctx['expected']}"
        case "dict_type":
            return "must be a mapping"
        case "tuple_type" | "list_type":
            return "must be a list of entries"
        case "model_type" | "model_attributes_type":
            return "must be a mapping of fields"
    return error["msg"]


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- Writing to the database ---------------------------------------------------------------

_Row = TypeVar("_Row", Territory, Venue, Theme, Workshop)


@dataclass
class _Rows:
    """The rows of the database that the catalogue names, by key; filled in as the import writes."""

    territories: dict[str, Territory]
    venues: dict[str, Venue]
    themes: dict[str, Theme]
    workshops: dict[str, Workshop]


class _DryRun(Exception):
    """Rolls a dry run's unit of work back, carrying the report of what it would have done."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("dry run")
        self.report = report


async def import_catalogue(
    db: Database,
    catalogue: CatalogueFile,
    *,
    clock: Clock,
    source_name: str,
    allow_past: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Upsert the catalogue by key, in one transaction, telling the people registered.

    Raises CatalogueError, and writes nothing, when the file conflicts with the database: a
    reference to an unknown key, a capacity below the seats already taken, a workshop dated in
    the past (unless `allow_past`). A `dry_run` does everything, then rolls it all back.
    """
    try:
        return await _import(db, catalogue, clock.now(), source_name, allow_past, dry_run)
    except _DryRun as rolled_back:
        return rolled_back.report


async def _import(
    db: Database,
    catalogue: CatalogueFile,
    now: dt.datetime,
    source_name: str,
    allow_past: bool,
    dry_run: bool,
) -> ImportReport:
    async with db.write() as session:
        rows = _Rows(
            territories=await _by_key(
                session,
                Territory,
                {e.key for e in catalogue.territories} | {e.territory for e in catalogue.venues},
            ),
            venues=await _by_key(
                session,
                Venue,
                {e.key for e in catalogue.venues} | {e.venue for e in catalogue.workshops},
            ),
            themes=await _by_key(
                session,
                Theme,
                {e.key for e in catalogue.themes} | {e.theme for e in catalogue.workshops},
            ),
            # Locked, so that no registration takes a seat between the capacity check and the
            # write (PostgreSQL; SQLite write transactions are already exclusive).
            workshops=await _by_key(
                session, Workshop, {e.key for e in catalogue.workshops}, for_update=True
            ),
        )
        problems = _conflicts(source_name, catalogue, rows, now, allow_past)
        if problems:
            raise CatalogueError(problems)
        report = await _Writer(session, rows, now, is_sqlite=db.is_sqlite).write(catalogue)
        if dry_run:
            raise _DryRun(report)
        return report


async def _by_key(
    session: AsyncSession, model: type[_Row], keys: set[str], *, for_update: bool = False
) -> dict[str, _Row]:
    ordered = sorted(keys)
    found: dict[str, _Row] = {}
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        statement = select(model).where(model.key.in_(ordered[start : start + KEYS_PER_QUERY]))
        if for_update:
            statement = statement.with_for_update()
        found.update((row.key, row) for row in await session.scalars(statement))
    return found


def _conflicts(
    source: str, catalogue: CatalogueFile, rows: _Rows, now: dt.datetime, allow_past: bool
) -> list[str]:
    """Problems only the database and the clock reveal: unknown references, a capacity below
    the seats taken, a workshop in the past (a workshop that has begun is left as it is)."""
    known = {
        "territory": {e.key for e in catalogue.territories} | rows.territories.keys(),
        "venue": {e.key for e in catalogue.venues} | rows.venues.keys(),
        "theme": {e.key for e in catalogue.themes} | rows.themes.keys(),
    }
    problems: list[str] = []

    def check(section: str, index: int, entry: _Entry, kind: str, key: str) -> None:
        if key not in known[kind]:
            message = f"unknown {kind} {key!r}{_did_you_mean(key, known[kind])}"
            label = f"{section}[{index + 1}] (key={entry.key})"
            problems.append(_line(source, label, kind, message))

    for index, venue in enumerate(catalogue.venues):
        check("venues", index, venue, "territory", venue.territory)
    for index, workshop in enumerate(catalogue.workshops):
        check("workshops", index, workshop, "theme", workshop.theme)
        check("workshops", index, workshop, "venue", workshop.venue)
        row = rows.workshops.get(workshop.key)
        label = f"workshops[{index + 1}] (key={workshop.key})"
        if row is not None and row.starts_at <= now:
            continue  # begun: left as it is, whatever the file says
        if workshop.starts_at <= now and (row is not None or not allow_past):
            problems.append(_line(source, label, *_in_the_past(workshop, moving=row is not None)))
        if row is not None and workshop.capacity < row.seats_taken:
            message = (
                f"{workshop.capacity} is below the {row.seats_taken} seats already taken; "
                f"keep at least {row.seats_taken}"
            )
            problems.append(_line(source, label, "capacity", message))
    return problems


def _in_the_past(workshop: WorkshopEntry, *, moving: bool) -> tuple[str, str]:
    """The field and the message for a workshop dated in the past.

    `in_days` never goes back, so a past workshop without a date starts earlier today.
    """
    if workshop.date is not None:
        field_name, when = "date", f"{workshop.date} {workshop.start:%H:%M}"
    else:
        field_name, when = "start", f"{workshop.start:%H:%M} today"
    if moving:
        return field_name, (
            f"{when} is in the past, and this workshop has not begun: it cannot be moved into "
            "the past (cancel it instead)"
        )
    return field_name, f"{when} is in the past; use --allow-past to import a workshop already held"


class _Writer:
    """Applies a checked catalogue, counting what it created, updated and left unchanged, and
    telling the people registered to a workshop it moved or cancelled."""

    def __init__(
        self, session: AsyncSession, rows: _Rows, now: dt.datetime, *, is_sqlite: bool
    ) -> None:
        self.session = session
        self.rows = rows
        self.now = now
        self.is_sqlite = is_sqlite
        self.created = dict.fromkeys(KINDS, 0)
        self.updated = dict.fromkeys(KINDS, 0)
        self.unchanged = dict.fromkeys(KINDS, 0)
        self.begun = 0
        # The changes people must be told of: workshop id -> (what changed, its stamp).
        self.changes: dict[int, list[tuple[Change, str]]] = {}

    async def write(self, catalogue: CatalogueFile) -> ImportReport:
        rows = self.rows
        for territory in catalogue.territories:
            self._upsert(
                "territories", rows.territories, Territory, territory.key, name=territory.name
            )
        await self.session.flush()  # new rows get their ids, which the next kinds refer to
        for venue in catalogue.venues:
            self._upsert(
                "venues",
                rows.venues,
                Venue,
                venue.key,
                territory_id=rows.territories[venue.territory].id,
                name=venue.name,
                address=venue.address,
                latitude=venue.latitude,
                longitude=venue.longitude,
                opening_notes=venue.opening_notes,
                accessibility_notes=venue.accessibility_notes,
            )
        for theme in catalogue.themes:
            self._upsert(
                "themes",
                rows.themes,
                Theme,
                theme.key,
                name=theme.name,
                need_category=theme.need_category,
            )
        await self.session.flush()
        for workshop in catalogue.workshops:
            self._upsert_workshop(workshop)
        await self.session.flush()
        notices, workshops_told = await self._tell_the_people_registered()
        return ImportReport(
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            begun=self.begun,
            notices=notices,
            workshops_told=workshops_told,
        )

    async def _tell_the_people_registered(self) -> tuple[int, int]:
        """Queue the notices of /editworkshop for the changed workshops that have people.

        The workshops with people are found first, a batch of keys at a time: a re-import of a
        file using `in_days` moves every upcoming workshop, most of them with nobody yet.
        """
        changed = sorted(self.changes)
        notices = workshops_told = 0
        for start in range(0, len(changed), KEYS_PER_QUERY):
            with_people = await self.session.scalars(
                select(Registration.workshop_id)
                .distinct()
                .where(
                    Registration.workshop_id.in_(changed[start : start + KEYS_PER_QUERY]),
                    Registration.status.in_(LIVE),
                )
            )
            for workshop_id in sorted(with_people):
                queued = 0
                for change, stamp in self.changes[workshop_id]:
                    queued += await queue_change_notices(
                        self.session, workshop_id, change, stamp, self.now, is_sqlite=self.is_sqlite
                    )
                notices += queued
                workshops_told += queued > 0
        return notices, workshops_told

    def _upsert_workshop(self, entry: WorkshopEntry) -> None:
        values: dict[str, Any] = {
            "title": entry.title,
            "description": entry.description,
            "theme_id": self.rows.themes[entry.theme].id,
            "venue_id": self.rows.venues[entry.venue].id,
            "starts_at": entry.starts_at,
            "ends_at": entry.ends_at,
            "capacity": entry.capacity,
        }
        # Without a status in the file, an existing workshop keeps its own (e.g. "done").
        if entry.status is not None:
            values["status"] = entry.status
        existing = self.rows.workshops.get(entry.key)
        before: tuple[dt.datetime, int, str] | None = None
        if existing is None:
            values.setdefault("status", WorkshopStatus.SCHEDULED.value)
            values.update(seats_taken=0, waitlist_seq=0, created_at=self.now)
        elif existing.starts_at <= self.now:
            self.begun += 1  # held or under way: history, never rewritten by a file
            return
        else:
            before = (existing.starts_at, existing.venue_id, existing.status)
        if self._upsert("workshops", self.rows.workshops, Workshop, entry.key, **values):
            self.rows.workshops[entry.key].updated_at = self.now
            if before is not None:
                self._note_changes(self.rows.workshops[entry.key], *before)

    def _note_changes(
        self, row: Workshop, starts_at: dt.datetime, venue_id: int, status: str
    ) -> None:
        """The changes of a workshop that /editworkshop would tell its people of."""
        changes: list[tuple[Change, str]] = []
        if row.status == WorkshopStatus.CANCELLED and status == WorkshopStatus.SCHEDULED:
            changes.append((Change.CANCELLED, ""))
        elif row.status == WorkshopStatus.SCHEDULED:
            if row.starts_at != starts_at:
                changes.append((Change.TIME, time_change_stamp(row.starts_at, self.now)))
            if row.venue_id != venue_id:
                changes.append((Change.VENUE, venue_change_stamp(row.venue_id, self.now)))
        if changes:
            self.changes[row.id] = changes

    def _upsert(
        self, kind: str, rows: dict[str, _Row], model: type[_Row], key: str, **values: Any
    ) -> bool:
        """Create or update the row of `key`; return whether anything was written."""
        row = rows.get(key)
        if row is None:
            rows[key] = model(key=key, **values)
            self.session.add(rows[key])
            self.created[kind] += 1
            return True
        changed = {name: value for name, value in values.items() if getattr(row, name) != value}
        for name, value in changed.items():
            setattr(row, name, value)
        (self.updated if changed else self.unchanged)[kind] += 1
        return bool(changed)
