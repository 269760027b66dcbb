"""Import of the workshop catalogue (territories, venues, themes, workshops): applying a checked
file to the database.

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

The file itself is read and checked by catalogue_file.py (load_catalogue), against the rules of
catalogue_entries.py; this module holds what only the database and the clock can tell and the
transaction that writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.registration import LIVE
from bot.services.workshops.admin import (
    Change,
    queue_change_notices,
    time_change_stamp,
    venue_change_stamp,
)
from bot.services.workshops.catalogue_entries import (
    KINDS,
    CatalogueEntry,
    CatalogueError,
    CatalogueFile,
    WorkshopEntry,
    did_you_mean,
    problem_line,
)
from storage.db import Database
from storage.models import Registration, Territory, Theme, Venue, Workshop, WorkshopStatus

_SINGULAR = {
    "territories": "territory",
    "venues": "venue",
    "themes": "theme",
    "workshops": "workshop",
}
# Keys per `IN (...)`: within the 999 variables of SQLite's oldest default limit (32,766 since
# 3.32, some builds more) and PostgreSQL's 32,767 parameters per statement.
KEYS_PER_QUERY = 500


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

    def check(section: str, index: int, entry: CatalogueEntry, kind: str, key: str) -> None:
        if key not in known[kind]:
            message = f"unknown {kind} {key!r}{did_you_mean(key, known[kind])}"
            label = f"{section}[{index + 1}] (key={entry.key})"
            problems.append(problem_line(source, label, kind, message))

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
            problems.append(
                problem_line(source, label, *_in_the_past(workshop, moving=row is not None))
            )
        if row is not None and workshop.capacity < row.seats_taken:
            message = (
                f"{workshop.capacity} is below the {row.seats_taken} seats already taken; "
                f"keep at least {row.seats_taken}"
            )
            problems.append(problem_line(source, label, "capacity", message))
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
