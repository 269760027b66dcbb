"""A re-import is an edit of live data: begun workshops stay, people registered are told of a
change as /editworkshop tells them, past dates are refused unless asked for, a dry run writes
nothing."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.workshops.admin import CHANGE_NOTICE, WorkshopAdmin, time_stamp
from bot.services.workshops.catalogue_entries import CatalogueError
from bot.services.workshops.importer import import_catalogue
from storage.db import Database
from storage.models import OutboxMessage, Venue
from tests.e2e import bot_running
from tests.test_catalogue_import import (
    IMPORT_DAY,
    NOW,
    PARIS,
    load,
    snapshot,
    workshops_by_key,
    write,
)
from tests.workshop_admin_helpers import (
    COORDINATOR,
    outbox_of,
    sign_up,
    staff_world,
    telegram_ids_of,
)

# Imported on Tuesday 20 October 2026: "soon" is held the next day, "later" in a month.
RELATIVE = """\
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
  - key: library
    territory: north
    name: Library
    address: 2 rue de la Paix, 42000 Saint-Étienne
    latitude: 45.44
    longitude: 4.39
themes:
  - key: phone
    name: {fr: Téléphone}
    need_category: prendre_en_main_du_materiel
workshops:
  - key: soon
    title: {fr: Mon téléphone}
    theme: phone
    venue: hall
    in_days: 1
    start: "10:00"
    end: "12:00"
    capacity: 10
  - key: later
    title: {fr: Mon téléphone (suite)}
    theme: phone
    venue: hall
    in_days: 30
    start: "14:00"
    end: "16:00"
    capacity: 10
"""


async def first_import(db: Database, tmp_path: Path, clock: ManualClock) -> dict[str, int]:
    """The catalogue imported, with people 1 and 2 in "later" and person 3 in "soon"."""
    path = write(tmp_path, RELATIVE)
    await import_catalogue(db, load(path), clock=clock, source_name=path.name)
    ids = {key: w.id for key, w in (await workshops_by_key(db)).items()}
    for person in (1, 2):
        await sign_up(db, clock, person, ids["later"])
    await sign_up(db, clock, 3, ids["soon"])
    return ids


async def notices(db: Database) -> list[OutboxMessage]:
    return await outbox_of(db, CHANGE_NOTICE)


@pytest.mark.storage
async def test_a_reimport_weeks_later_keeps_the_held_workshop_and_tells_the_moved_ones(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    ids = await first_import(db, tmp_path, clock)
    before = await workshops_by_key(db)

    clock.advance(timedelta(days=21))
    path = write(tmp_path, RELATIVE)
    report = await import_catalogue(
        db, load(path, today=IMPORT_DAY + timedelta(days=21)), clock=clock, source_name="c.yaml"
    )

    after = await workshops_by_key(db)
    # "soon" was held three weeks ago: it is history, not moved to the day after the re-import.
    assert after["soon"].starts_at == before["soon"].starts_at
    assert after["soon"].updated_at == NOW
    # "later" moves 21 days on, and both people registered are told, as by /editworkshop.
    new_start = datetime.combine(date(2026, 12, 10), datetime.min.time().replace(hour=14), PARIS)
    assert after["later"].starts_at == new_start
    assert (report.begun, report.notices, report.workshops_told) == (1, 2, 1)
    assert report.updated["workshops"] == 1 and report.unchanged["workshops"] == 0
    assert report.summary().endswith(
        "kept as they were, having begun: 1 workshop; "
        "notices to the people registered: 2 (about 1 workshop)"
    )
    told = await notices(db)
    assert await telegram_ids_of(db, [n.resident_id for n in told]) == {1, 2}
    stamp = f"{time_stamp(new_start)}:{clock.now():%Y%m%d%H%M%S}"
    for notice in told:
        assert notice.payload == {
            "workshop_id": ids["later"],
            "registration_id": notice.payload["registration_id"],
            "change": "time",
            "stamp": stamp,
        }
        assert notice.dedupe_key == (
            f"{CHANGE_NOTICE}:{ids['later']}:time:{stamp}:{notice.payload['registration_id']}"
        )
        assert notice.not_before == clock.now()


@pytest.mark.storage
async def test_the_import_tells_people_exactly_as_editworkshop(
    db: Database, tmp_path: Path
) -> None:
    """The same move made by /editworkshop and by an import queues the same notices."""
    clock = ManualClock(NOW)
    ids = await first_import(db, tmp_path, clock)
    moved = RELATIVE.replace('in_days: 30\n    start: "14:00"', 'in_days: 31\n    start: "14:00"')
    path = write(tmp_path, moved)
    clock.advance(timedelta(hours=1))

    await import_catalogue(db, load(path), clock=clock, source_name="c.yaml")
    by_import = [(n.resident_id, n.kind, n.payload, n.dedupe_key) for n in await notices(db)]
    new_start = (await workshops_by_key(db))["later"].starts_at
    async with db.write() as session:
        for notice in await session.scalars(select(OutboxMessage)):
            await session.delete(notice)
    await import_catalogue(db, load(write(tmp_path, RELATIVE)), clock=clock, source_name="c")
    async with db.write() as session:
        for notice in await session.scalars(select(OutboxMessage)):
            await session.delete(notice)
    await WorkshopAdmin(db, clock).move(ids["later"], new_start)
    by_edit = [(n.resident_id, n.kind, n.payload, n.dedupe_key) for n in await notices(db)]

    assert len(by_import) == 2
    assert by_import == by_edit


@pytest.mark.storage
async def test_a_new_venue_and_a_cancellation_are_told(db: Database, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    ids = await first_import(db, tmp_path, clock)
    clock.advance(timedelta(hours=1))
    text = RELATIVE.replace(
        "venue: hall\n    in_days: 30", "venue: library\n    in_days: 30"
    ).replace("capacity: 10\n  - key: later", "capacity: 10\n    status: cancelled\n  - key: later")
    report = await import_catalogue(
        db, load(write(tmp_path, text)), clock=clock, source_name="c.yaml"
    )

    async with db.read() as session:
        library = await session.scalar(select(Venue.id).where(Venue.key == "library"))
    told = {
        (n.payload["workshop_id"], n.payload["change"], n.payload["stamp"])
        for n in await notices(db)
    }
    assert told == {
        (ids["later"], "venue", f"{library}:{clock.now():%Y%m%d%H%M%S}"),
        (ids["soon"], "cancelled", ""),
    }
    assert (report.notices, report.workshops_told) == (3, 2)


@pytest.mark.storage
async def test_a_dry_run_reports_the_same_and_writes_nothing(db: Database, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    await first_import(db, tmp_path, clock)
    clock.advance(timedelta(days=21))
    catalogue = load(
        write(tmp_path, RELATIVE + RELATIVE.split("workshops:\n")[1].replace("key: ", "key: new-")),
        today=IMPORT_DAY + timedelta(days=21),
    )
    before = await snapshot(db)

    dry = await import_catalogue(db, catalogue, clock=clock, source_name="c", dry_run=True)

    assert await snapshot(db) == before
    assert await notices(db) == []
    real = await import_catalogue(db, catalogue, clock=clock, source_name="c")
    assert dry == real
    assert (dry.created["workshops"], dry.begun, dry.notices) == (2, 1, 2)
    assert len(await notices(db)) == 2


@pytest.mark.storage
async def test_a_workshop_in_the_past_is_refused_unless_allowed(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    path = write(tmp_path, RELATIVE.replace("in_days: 1\n", "date: 2026-10-01\n"))
    with pytest.raises(CatalogueError) as caught:
        await import_catalogue(db, load(path), clock=clock, source_name="c.yaml")
    assert caught.value.lines == [
        "c.yaml: workshops[1] (key=soon): date: 2026-10-01 10:00 is in the past; "
        "use --allow-past to import a workshop already held"
    ]
    assert await workshops_by_key(db) == {}

    report = await import_catalogue(db, load(path), clock=clock, source_name="c", allow_past=True)
    assert report.created["workshops"] == 2
    assert (await workshops_by_key(db))["soon"].starts_at < clock.now()


@pytest.mark.storage
async def test_an_upcoming_workshop_is_not_moved_into_the_past(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    await first_import(db, tmp_path, clock)
    before = await snapshot(db)
    early = RELATIVE.replace('in_days: 30\n    start: "14:00"', 'in_days: 0\n    start: "09:00"')
    for allow_past in (False, True):
        with pytest.raises(CatalogueError) as caught:
            await import_catalogue(
                db,
                load(write(tmp_path, early)),
                clock=clock,
                source_name="c",
                allow_past=allow_past,
            )
        assert caught.value.lines == [
            "c: workshops[2] (key=later): start: 09:00 today is in the past, and this workshop "
            "has not begun: it cannot be moved into the past (cancel it instead)"
        ]
    assert await snapshot(db) == before and await notices(db) == []


@pytest.mark.storage
async def test_a_begun_workshop_is_not_checked_against_its_seats(
    db: Database, tmp_path: Path
) -> None:
    """A file that lowers a held workshop below its seats is not refused: it is not applied."""
    clock = ManualClock(NOW)
    ids = await first_import(db, tmp_path, clock)
    await sign_up(db, clock, 4, ids["soon"])
    clock.advance(timedelta(days=2))
    smaller = RELATIVE.replace("capacity: 10\n  - key: later", "capacity: 1\n  - key: later")
    catalogue = load(write(tmp_path, smaller), today=IMPORT_DAY + timedelta(days=2))

    report = await import_catalogue(db, catalogue, clock=clock, source_name="c")

    assert report.begun == 1
    assert (await workshops_by_key(db))["soon"].capacity == 10


DATED = RELATIVE.replace("in_days: 1\n", "date: 2026-12-03\n").replace(
    "in_days: 30\n", "date: 2026-12-10\n"
)


@pytest.mark.storage
@pytest.mark.e2e
async def test_people_receive_the_import_s_change_from_the_running_bot(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """The notices an import queues reach the people through the real bot, in their language."""
    async with staff_world(db, database_url, f"coordinator:{COORDINATOR}") as world:
        path = write(tmp_path, DATED)
        await import_catalogue(db, load(path), clock=world.clock, source_name="c")
        later = (await workshops_by_key(db))["later"].id
        await sign_up(db, world.clock, 101, later, "fr")
        await sign_up(db, world.clock, 102, later, "en")
        people = {
            tid: world.client.user(tid, f"P{tid}", lang) for tid, lang in ((101, "fr"), (102, "en"))
        }
        await world.client.register(*people.values())
        moved = DATED.replace(
            'date: 2026-12-10\n    start: "14:00"\n    end: "16:00"',
            'date: 2026-12-11\n    start: "10:00"\n    end: "12:00"',
        )
        async with bot_running(world.settings, world.clock):
            report = await import_catalogue(
                db, load(write(tmp_path, moved)), clock=world.clock, source_name="c"
            )
            assert report.notices == 2
            told_fr = await people[101].wait_message(contains="Changement d'horaire")
            assert "vendredi 11 décembre, de 10:00 à 12:00" in told_fr.text
            told_en = await people[102].wait_message(contains="New time")
            assert "Friday 11 December, from 10:00 to 12:00" in told_en.text
    assert {n.status for n in await notices(db)} == {"sent"}
