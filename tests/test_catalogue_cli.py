"""`capacity-bot import` as an operator runs it: real processes, real exit codes, real database."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.test_cli import _cli

WORKSHOP = """\
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
themes:
  - key: phone
    name: {{fr: Téléphone}}
    need_category: prendre_en_main_du_materiel
workshops:
  - key: phone-1
    title: {{fr: Mon téléphone}}
    theme: phone
    venue: hall
    date: {day}
    start: "14:00"
    end: "16:00"
    capacity: 10
"""


def _count(tmp_path: Path, table: str) -> int:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("day", ["2026-13-45", "2026-02-30"])
async def test_an_impossible_date_is_one_line_and_exit_1(tmp_path: Path, day: str) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(WORKSHOP.format(day=day), encoding="utf-8")
    assert (await _cli(tmp_path, "migrate"))[0] == 0
    code, out, err = await _cli(tmp_path, "import", str(path))
    assert code == 1, err
    assert err.splitlines() == [
        f"{path}: workshops[1] (key=phone-1): date: {day} is not a day of the calendar",
        "Nothing was imported.",
    ]
    assert out == ""
    assert _count(tmp_path, "territories") == 0


def _write(tmp_path: Path, day: date) -> Path:
    path = tmp_path / "catalogue.yaml"
    path.write_text(WORKSHOP.format(day=day.isoformat()), encoding="utf-8")
    return path


async def test_a_dry_run_prints_the_counts_and_writes_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, date.today() + timedelta(days=30))
    code, _, err = await _cli(tmp_path, "import", "--dry-run", str(path))
    assert code == 2  # no schema yet, and a dry run does not create it
    assert err.splitlines() == [
        "capacity-bot: DATABASE_URL: the database's schema is not up to date, and a dry run "
        "changes nothing; expected a migrated database (run `capacity-bot migrate` first)"
    ]

    assert (await _cli(tmp_path, "migrate"))[0] == 0
    code, out, err = await _cli(tmp_path, "import", "--dry-run", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "Dry run, nothing was written. The import would give: created: 1 territory, 1 venue, "
        "1 theme, 1 workshop; updated: none; unchanged: none; "
        "notices to the people registered: none"
    ]
    assert _count(tmp_path, "workshops") == 0


async def test_a_past_workshop_needs_allow_past(tmp_path: Path) -> None:
    day = date.today() - timedelta(days=30)
    path = _write(tmp_path, day)
    code, _, err = await _cli(tmp_path, "import", str(path))
    assert code == 1
    assert err.splitlines() == [
        f"catalogue.yaml: workshops[1] (key=phone-1): date: {day} 14:00 is in the past; "
        "use --allow-past to import a workshop already held",
        "Nothing was imported.",
    ]
    assert _count(tmp_path, "workshops") == 0

    code, out, _ = await _cli(tmp_path, "import", "--allow-past", str(path))
    assert code == 0 and out.startswith("created: 1 territory, 1 venue, 1 theme, 1 workshop;")
    assert _count(tmp_path, "workshops") == 1


async def test_a_database_refusal_names_its_cause_not_the_url(tmp_path: Path) -> None:
    assert (await _cli(tmp_path, "migrate"))[0] == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        connection.execute(
            "CREATE TRIGGER frozen BEFORE INSERT ON territories "
            "BEGIN SELECT RAISE(ABORT, 'the territories are frozen'); END"
        )
    path = _write(tmp_path, date.today() + timedelta(days=30))
    code, _, err = await _cli(tmp_path, "import", str(path))
    assert code == 1
    assert err.splitlines() == [
        f"{path}: the database refused the import (the territories are frozen)",
        "Nothing was imported.",
    ]
    assert _count(tmp_path, "territories") == 0


async def test_a_file_over_the_bound_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("# " + "x" * 6_000_000 + "\n", encoding="utf-8")
    code, _, err = await _cli(tmp_path, "import", str(path))
    assert code == 1
    assert err.splitlines()[0].startswith(f"{path}: the file is larger than 5 MB")
    assert len(err.splitlines()) == 2
