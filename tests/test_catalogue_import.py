"""The catalogue import: the shipped sample, upserts by key, and all-or-nothing error reports."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect, select, update

from bot.clock import ManualClock
from bot.services.taxonomy import NEED_CATEGORIES
from bot.services.workshops.catalogue_entries import CatalogueError, CatalogueFile
from bot.services.workshops.catalogue_file import SAMPLE_CATALOGUE, load_catalogue
from bot.services.workshops.importer import ImportReport, import_catalogue
from bot.settings import SUPPORTED_LANGUAGES
from storage.db import Database
from storage.models import Territory, Theme, Venue, Workshop

PARIS = ZoneInfo("Europe/Paris")
# A Tuesday five days before the end of summer time (Sunday 25 October 2026), so that the
# sample's five weeks straddle the change of offset.
IMPORT_DAY = date(2026, 10, 20)
NOW = datetime(2026, 10, 20, 8, 0, tzinfo=UTC)
KINDS = ("territories", "venues", "themes", "workshops")

SMALL_CATALOGUE = """\
    territories:
      - key: north
        name: North
    venues:
      - key: hall
        territory: north
        name: Hall
        address: 1 rue de la Paix, 42000 Saint-Étienne
        latitude: 45.44
        longitude: 4.39
        accessibility_notes: {fr: "De plain-pied.", en: "Step-free."}
    themes:
      - key: phone
        name: {fr: Téléphone, en: Phone}
        need_category: prendre_en_main_du_materiel
    workshops:
      - key: phone-1
        title: {fr: Mon téléphone, en: My phone}
        theme: phone
        venue: hall
        date: 2026-12-03
        start: 14:00
        end: "16:00"
        capacity: 10
      - key: phone-2
        title: {fr: Mon téléphone (suite)}
        theme: phone
        venue: hall
        date: 2026-12-10
        start: "9:30"
        duration_minutes: 90
        capacity: 6
"""


def write(tmp_path: Path, text: str, name: str = "catalogue.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path, today: date = IMPORT_DAY) -> CatalogueFile:
    return load_catalogue(path, default_language="fr", tz=PARIS, today=today)


def counts(
    created: tuple[int, ...] = (0, 0, 0, 0),
    updated: tuple[int, ...] = (0, 0, 0, 0),
    unchanged: tuple[int, ...] = (0, 0, 0, 0),
) -> ImportReport:
    return ImportReport(
        created=dict(zip(KINDS, created, strict=True)),
        updated=dict(zip(KINDS, updated, strict=True)),
        unchanged=dict(zip(KINDS, unchanged, strict=True)),
    )


async def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every column of every catalogue row, to prove that a refused import wrote nothing."""
    tables: dict[str, list[dict[str, Any]]] = {}
    async with db.read() as session:
        for model in (Territory, Venue, Theme, Workshop):
            attributes = [column.key for column in inspect(model).column_attrs]
            rows = await session.scalars(select(model).order_by(model.id))
            tables[model.__tablename__] = [
                {name: getattr(row, name) for name in attributes} for row in rows
            ]
    return tables


async def workshops_by_key(db: Database) -> dict[str, Workshop]:
    async with db.read() as session:
        return {w.key: w for w in await session.scalars(select(Workshop))}


async def take_seats(db: Database, key: str, seats: int, waitlist_seq: int = 0) -> None:
    async with db.write() as session:
        await session.execute(
            update(Workshop)
            .where(Workshop.key == key)
            .values(seats_taken=seats, waitlist_seq=waitlist_seq)
        )


# --- The shipped sample ---------------------------------------------------------------------


@pytest.mark.storage
async def test_sample_imports(db: Database) -> None:
    clock = ManualClock(NOW)
    report = await import_catalogue(
        db, load(SAMPLE_CATALOGUE), clock=clock, source_name=str(SAMPLE_CATALOGUE)
    )

    assert report == counts(created=(4, 6, 8, 16))
    assert report.summary() == (
        "created: 4 territories, 6 venues, 8 themes, 16 workshops; updated: none; unchanged: none; "
        "notices to the people registered: none"
    )
    async with db.read() as session:
        territories = {t.key for t in await session.scalars(select(Territory))}
        venues = list(await session.scalars(select(Venue)))
        themes = list(await session.scalars(select(Theme)))
    assert territories == {"montreynaud", "tarentaize-beaubrun", "cret-de-roc", "sud-est"}
    assert len(venues) == 6
    for venue in venues:
        assert 45.40 < venue.latitude < 45.48 and 4.36 < venue.longitude < 4.43
        assert set(venue.opening_notes) == set(venue.accessibility_notes) == {"fr", "en", "ar"}
    assert all(theme.need_category in NEED_CATEGORIES for theme in themes)
    assert all(set(theme.name) == set(SUPPORTED_LANGUAGES) for theme in themes)

    workshops = await workshops_by_key(db)
    assert sorted(w.capacity for w in workshops.values()).count(2) == 1
    for workshop in workshops.values():
        local_start = workshop.starts_at.astimezone(PARIS)
        assert workshop.ends_at - workshop.starts_at == timedelta(hours=2)
        assert local_start.weekday() < 5, workshop.key
        assert 9 <= local_start.hour and workshop.ends_at.astimezone(PARIS).hour <= 18
        assert IMPORT_DAY < local_start.date() <= IMPORT_DAY + timedelta(days=35)
        assert workshop.capacity == 2 or 6 <= workshop.capacity <= 15
        assert set(workshop.title) == set(workshop.description) == set(SUPPORTED_LANGUAGES)
        assert (workshop.status, workshop.seats_taken, workshop.waitlist_seq) == ("scheduled", 0, 0)
        assert workshop.created_at == workshop.updated_at == NOW

    # 10:00 the next Wednesday, still summer time (UTC+2); 14:00 on the Tuesday after the change
    # of offset, winter time (UTC+1).
    assert workshops["arnaques-cret-de-roc-1"].starts_at == datetime(2026, 10, 21, 8, tzinfo=UTC)
    assert workshops["arnaques-cret-de-roc-1"].capacity == 2
    assert workshops["smartphone-montreynaud-1"].starts_at == datetime(2026, 10, 27, 13, tzinfo=UTC)


@pytest.mark.storage
async def test_reimporting_the_same_file_changes_nothing(db: Database) -> None:
    clock = ManualClock(NOW)
    await import_catalogue(db, load(SAMPLE_CATALOGUE), clock=clock, source_name="sample")
    before = await snapshot(db)

    clock.advance(timedelta(hours=3))
    report = await import_catalogue(db, load(SAMPLE_CATALOGUE), clock=clock, source_name="sample")

    assert report == counts(unchanged=(4, 6, 8, 16))
    assert report.summary() == (
        "created: none; updated: none; unchanged: 4 territories, 6 venues, 8 themes, 16 workshops; "
        "notices to the people registered: none"
    )
    assert await snapshot(db) == before


@pytest.mark.storage
async def test_relative_dates_follow_the_day_of_import(db: Database) -> None:
    clock = ManualClock(NOW)
    await import_catalogue(db, load(SAMPLE_CATALOGUE), clock=clock, source_name="sample")

    # The next morning (09:00 in Paris), an hour before the first workshop begins.
    clock.advance(timedelta(hours=23))
    later = load(SAMPLE_CATALOGUE, today=IMPORT_DAY + timedelta(days=1))
    report = await import_catalogue(db, later, clock=clock, source_name="sample")

    # The Wednesday workshop of in_days 1 moves a week on; the Tuesday one stays put.
    assert report.updated["workshops"] >= 1
    workshops = await workshops_by_key(db)
    assert workshops["arnaques-cret-de-roc-1"].starts_at == datetime(2026, 10, 28, 9, tzinfo=UTC)
    assert workshops["arnaques-cret-de-roc-1"].updated_at == clock.now()
    assert workshops["smartphone-montreynaud-1"].updated_at == NOW


# --- Upserts by key ---------------------------------------------------------------------------


@pytest.mark.storage
async def test_updated_fields_are_written_and_seats_kept(db: Database, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    path = write(tmp_path, SMALL_CATALOGUE)
    report = await import_catalogue(db, load(path), clock=clock, source_name=str(path))
    assert report == counts(created=(1, 1, 1, 2))
    await take_seats(db, "phone-1", seats=4, waitlist_seq=3)

    clock.advance(timedelta(days=2))
    changed = (
        SMALL_CATALOGUE.replace("capacity: 10", "capacity: 12")
        .replace("en: My phone}", "en: My smartphone}")
        .replace("1 rue de la Paix", "3 rue de la Paix")
    )
    path = write(tmp_path, changed)
    report = await import_catalogue(db, load(path), clock=clock, source_name=str(path))

    assert report == counts(updated=(0, 1, 0, 1), unchanged=(1, 0, 1, 1))
    workshops = await workshops_by_key(db)
    first, second = workshops["phone-1"], workshops["phone-2"]
    assert first.capacity == 12
    assert first.title == {"fr": "Mon téléphone", "en": "My smartphone"}
    assert (first.seats_taken, first.waitlist_seq) == (4, 3)
    assert (first.created_at, first.updated_at) == (NOW, clock.now())
    assert second.updated_at == NOW
    async with db.read() as session:
        venue = await session.scalar(select(Venue).where(Venue.key == "hall"))
    assert venue is not None and venue.address.startswith("3 rue de la Paix")


@pytest.mark.storage
async def test_small_catalogue_times_and_status(db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, SMALL_CATALOGUE)
    await import_catalogue(db, load(path), clock=ManualClock(NOW), source_name=str(path))

    workshops = await workshops_by_key(db)
    # An unquoted 14:00 is a time of day, not the YAML 1.1 base-60 integer 840.
    assert workshops["phone-1"].starts_at == datetime(2026, 12, 3, 13, tzinfo=UTC)
    assert workshops["phone-1"].ends_at == datetime(2026, 12, 3, 15, tzinfo=UTC)
    assert workshops["phone-2"].starts_at == datetime(2026, 12, 10, 8, 30, tzinfo=UTC)
    assert workshops["phone-2"].ends_at == datetime(2026, 12, 10, 10, tzinfo=UTC)


@pytest.mark.storage
async def test_status_is_kept_unless_the_file_gives_one(db: Database, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    path = write(tmp_path, SMALL_CATALOGUE)
    await import_catalogue(db, load(path), clock=clock, source_name=str(path))
    async with db.write() as session:
        await session.execute(
            update(Workshop).where(Workshop.key == "phone-2").values(status="done")
        )

    cancelled = SMALL_CATALOGUE.replace("capacity: 10", "capacity: 10\n        status: cancelled")
    path = write(tmp_path, cancelled)
    report = await import_catalogue(db, load(path), clock=clock, source_name=str(path))

    assert report.updated["workshops"] == 1 and report.unchanged["workshops"] == 1
    workshops = await workshops_by_key(db)
    assert workshops["phone-1"].status == "cancelled"
    assert workshops["phone-2"].status == "done"


@pytest.mark.storage
async def test_a_file_may_refer_to_entries_already_in_the_database(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    path = write(tmp_path, SMALL_CATALOGUE)
    await import_catalogue(db, load(path), clock=clock, source_name=str(path))

    path = write(
        tmp_path,
        """\
        workshops:
          - key: phone-3
            title: {fr: Mon téléphone}
            theme: phone
            venue: hall
            date: 2026-12-17
            start: "14:00"
            end: "16:00"
            capacity: 8
        """,
        name="more.yaml",
    )
    report = await import_catalogue(db, load(path), clock=clock, source_name=str(path))

    assert report == counts(created=(0, 0, 0, 1))
    assert set(await workshops_by_key(db)) == {"phone-1", "phone-2", "phone-3"}


# --- Errors ---------------------------------------------------------------------------------


def test_bad_fields_are_all_reported_with_file_entry_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        territories:
          - key: north
            name: North
          - key: north
            name: Nord
        venues:
          - key: hall
            territory: north
            name: Hall
            address: 1 rue de la Paix
            latitude: 95
            longitude: 4.39
        themes:
          - key: phone
            name: {en: Phone, de: Telefon}
            need_category: prendre_en_main_du_material
        workshops:
          - key: Phone_1
            title: {fr: "  "}
            theme: phone
            venue: hall
            date: 2026-12-03
            start: "14:00"
            end: "16:00"
            capacity: 0
            capacty: 3
          - key: phone-2
            title: {fr: Atelier}
            theme: phone
            venue: hall
            date: 2027-03-28
            start: "02:30"
            end: "04:00"
            capacity: 5
          - key: phone-3
            title: {fr: Atelier}
            theme: phone
            venue: hall
            date: 2026-12-03
            in_days: 3
            start: "14:00"
            duration_minutes: 60
            capacity: 5
          - key: phone-4
            title: Atelier
            theme: phone
            venue: hall
            date: 2026-12-03
            start: 14h00
            duration_minutes: 60
            capacity: 5
        worskhops: []
        """,
    )
    with pytest.raises(CatalogueError) as caught:
        load(path)

    f = str(path)
    assert caught.value.lines == [
        f"{f}: worskhops: unknown field (did you mean 'workshops'?)",
        f"{f}: territories[2] (key=north): key: 'north' is already used by territories[1]",
        f"{f}: venues[1] (key=hall): latitude: must be at most 90",
        f"{f}: themes[1] (key=phone): name: unknown language 'de' (allowed: fr, en, ar); "
        "the fr text is required",
        f"{f}: themes[1] (key=phone): need_category: unknown category "
        "'prendre_en_main_du_material' (did you mean 'prendre_en_main_du_materiel'?)",
        f"{f}: workshops[1] (key=Phone_1): key: must be a short key: lowercase letters a-z, "
        "digits and hyphens, starting with a letter or a digit, at most 64 characters",
        f"{f}: workshops[1] (key=Phone_1): title: fr: must not be empty",
        f"{f}: workshops[1] (key=Phone_1): capacity: must be at least 1",
        f"{f}: workshops[1] (key=Phone_1): capacty: unknown field (did you mean 'capacity'?)",
        f"{f}: workshops[2] (key=phone-2): start: 02:30 does not exist on 2027-03-28 in "
        "Europe/Paris (the clocks go forward); choose another time",
        f"{f}: workshops[3] (key=phone-3): date, in_days: give exactly one of them",
        f"{f}: workshops[4] (key=phone-4): title: must give one text per language, "
        "e.g. fr: Bonjour",
        f'{f}: workshops[4] (key=phone-4): start: must be a time of day written like "14:00"',
    ]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("02:30", "04:00", "start: 02:30 happens twice on 2026-10-25 in Europe/Paris"),
        ("01:00", "02:15", "end: 02:15 happens twice on 2026-10-25 in Europe/Paris"),
        ("16:00", "14:00", "end: must be after start"),
    ],
)
def test_ambiguous_or_reversed_times_are_refused(
    tmp_path: Path, start: str, end: str, message: str
) -> None:
    path = write(
        tmp_path,
        f"""\
        workshops:
          - key: night
            title: {{fr: Atelier}}
            theme: phone
            venue: hall
            date: 2026-10-25
            start: "{start}"
            end: "{end}"
            capacity: 5
        """,
    )
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert len(caught.value.lines) == 1
    assert caught.value.lines[0].startswith(f"{path}: workshops[1] (key=night): {message}")


def test_a_duration_is_real_time_across_the_change_of_offset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        workshops:
          - key: night
            title: {fr: Atelier}
            theme: phone
            venue: hall
            date: 2026-10-25
            start: "01:00"
            duration_minutes: 180
            capacity: 5
        """,
    )
    (workshop,) = load(path).workshops
    assert workshop.starts_at == datetime(2026, 10, 24, 23, tzinfo=UTC)
    assert workshop.ends_at == datetime(2026, 10, 25, 2, tzinfo=UTC)  # 03:00 winter time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "workshops:\n  - key: a\n   title: x\n",
            "line 3: invalid YAML: did not find expected '-' indicator",
        ),
        (
            "territories:\n  - key: a\n    name: A\n    name: B\n",
            "line 4: invalid YAML: field 'name' is written twice",
        ),
        (
            "- key: a\n",
            "the file must be a mapping with the sections territories, venues, themes, "
            "workshops (found a list)",
        ),
        (
            "# nothing yet\n",
            "the file must be a mapping with the sections territories, venues, themes, "
            "workshops (it is empty)",
        ),
        ("workshops:\n  key: a\n", "workshops: must be a list of entries"),
        ("territories:\n  - north\n", "territories[1]: must be a mapping of fields"),
    ],
)
def test_unreadable_files_are_reported_with_the_file_name(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [f"{path}: {expected}"]


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [f"{path}: file not found"]
    assert str(caught.value) == f"{path}: file not found"


@pytest.mark.storage
async def test_conflicts_with_the_database_refuse_the_whole_import(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    path = write(tmp_path, SMALL_CATALOGUE)
    await import_catalogue(db, load(path), clock=clock, source_name=str(path))
    await take_seats(db, "phone-1", seats=7)
    before = await snapshot(db)

    bad = (
        SMALL_CATALOGUE.replace("capacity: 10", "capacity: 5")
        .replace("name: Hall", "name: Grand Hall")
        .replace("territory: north", "territory: nort")
        .replace("venue: hall\n        date: 2026-12-10", "venue: hal\n        date: 2026-12-10")
    )
    path = write(tmp_path, bad)
    catalogue = load(path)  # the file itself is well formed
    clock.advance(timedelta(hours=1))
    with pytest.raises(CatalogueError) as caught:
        await import_catalogue(db, catalogue, clock=clock, source_name="catalogue.yaml")

    assert caught.value.lines == [
        "catalogue.yaml: venues[1] (key=hall): territory: unknown territory 'nort' "
        "(did you mean 'north'?)",
        "catalogue.yaml: workshops[1] (key=phone-1): capacity: 5 is below the 7 seats "
        "already taken; keep at least 7",
        "catalogue.yaml: workshops[2] (key=phone-2): venue: unknown venue 'hal' "
        "(did you mean 'hall'?)",
    ]
    assert await snapshot(db) == before


@pytest.mark.storage
async def test_a_bad_file_leaves_the_database_unchanged(db: Database, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    await import_catalogue(db, load(SAMPLE_CATALOGUE), clock=clock, source_name="sample")
    before = await snapshot(db)

    text = SAMPLE_CATALOGUE.read_text(encoding="utf-8")
    # A valid change (a territory renamed) next to a bad field: neither is written.
    bad = text.replace("capacity: 12", "capacity: 0", 1).replace(
        'name: "Montreynaud"', 'name: "Montreynaud-Nord"'
    )
    path = write(tmp_path, bad, name="saint-etienne.yaml")
    with pytest.raises(CatalogueError) as caught:
        await import_catalogue(db, load(path), clock=clock, source_name=str(path))

    assert caught.value.lines == [
        f"{path}: workshops[3] (key=caf-tarentaize-1): capacity: must be at least 1"
    ]
    assert await snapshot(db) == before


# --- Values that must be one line, never a traceback -------------------------------------------

ONE_WORKSHOP = """\
workshops:
  - key: phone-1
    title: {{fr: Mon téléphone}}
    theme: phone
    venue: hall
    {field}
    start: "14:00"
    end: "16:00"
    capacity: 5
"""


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("date: 2026-13-45", "date: 2026-13-45 is not a day of the calendar"),
        ("date: 2026-02-30", "date: 2026-02-30 is not a day of the calendar"),
        ("date: 2026-12-03T10:00:00", "date: must be a date written like 2026-12-03"),
        ("date: 20261203", "date: must be a date written like 2026-12-03"),
        ("in_days: 1\n    duration_minutes: 1" + "0" * 5000, "line 7: invalid YAML: cannot read"),
    ],
)
def test_impossible_values_are_one_line_naming_the_entry_and_field(
    tmp_path: Path, field: str, expected: str
) -> None:
    path = write(tmp_path, ONE_WORKSHOP.format(field=field))
    with pytest.raises(CatalogueError) as caught:
        load(path)
    (line,) = caught.value.lines
    if expected.startswith("line "):
        assert line.startswith(f"{path}: {expected}")
    else:
        assert line.startswith(f"{path}: workshops[1] (key=phone-1): {expected}")


@pytest.mark.parametrize("start", ["25:00", "14:60", "2pm"])
def test_impossible_times_are_one_line(tmp_path: Path, start: str) -> None:
    text = ONE_WORKSHOP.format(field="date: 2026-12-03").replace('"14:00"', start)
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [
        f'{path}: workshops[1] (key=phone-1): start: must be a time of day written like "14:00"'
    ]


@pytest.mark.parametrize(
    ("day", "start", "end", "expected"),
    [
        ("0001-01-01", "00:05", '"16:00"', "start: 00:05 on 0001-01-01 is out of range"),
        ("9999-12-31", "23:00", '"23:30"\n    duration_minutes: 60', "end, duration_minutes:"),
        (
            "9999-12-31",
            "23:00",
            "null\n    duration_minutes: 120",
            "duration_minutes: the end is out of range",
        ),
    ],
)
def test_days_at_the_ends_of_the_calendar_are_one_line(
    tmp_path: Path, day: str, start: str, end: str, expected: str
) -> None:
    text = (
        ONE_WORKSHOP.format(field=f"date: {day}")
        .replace('"14:00"', f'"{start}"')
        .replace('"16:00"', end)
    )
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load(path)
    (line,) = caught.value.lines
    assert line.startswith(f"{path}: workshops[1] (key=phone-1): {expected}")


def test_a_deeply_nested_file_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "workshops: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [f"{path}: line 1: invalid YAML: exceeded maximum nesting depth"]


def test_a_date_written_in_a_text_stays_text(tmp_path: Path) -> None:
    text = ONE_WORKSHOP.format(field="date: 2026-12-03").replace(
        "{fr: Mon téléphone}", "{fr: 2026-12-03}"
    )
    (workshop,) = load(write(tmp_path, text)).workshops
    assert workshop.title == {"fr": "2026-12-03"}


def test_a_nul_character_is_refused_before_postgresql_refuses_it(tmp_path: Path) -> None:
    """SQLite would store it, PostgreSQL refuses it: the file is refused on both, at its field."""
    text = ONE_WORKSHOP.format(field="date: 2026-12-03").replace(
        "{fr: Mon téléphone}", '{fr: "Mon\\0téléphone"}'
    )
    text += 'territories:\n  - key: north\n    name: "No\\0rth"\n'
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [
        f"{path}: territories[1] (key=north): name: must not contain the NUL character (\\0)",
        f"{path}: workshops[1] (key=phone-1): title: fr: must not contain the NUL character (\\0)",
    ]
