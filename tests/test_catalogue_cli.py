"""`capacity-bot import` as an operator runs it: real processes, real exit codes, real database."""

from __future__ import annotations

import sqlite3
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
