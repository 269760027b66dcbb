"""CSV exports: streamed in chunks, pseudonymous, one file per table, on both backends."""

from __future__ import annotations

import csv
import hashlib
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select

import bot.services.stats.exports as exports_module
from bot.services.stats.exports import ExportService, Pseudonyms
from storage.db import Database
from storage.models import SurveyAnswerSet
from tests.stats_helpers import FACILITATOR, seed_hand_data, telegram_id

pytestmark = pytest.mark.storage
TOKEN = "123456:TEST-token-for-the-export-pseudonyms"


def test_pseudonyms_are_stable_keyed_and_short() -> None:
    one, same, other_bot = Pseudonyms(TOKEN), Pseudonyms(TOKEN), Pseudonyms(TOKEN + "x")
    assert one.of(42) == same.of(42) != one.of(43)
    assert one.of(42) != other_bot.of(42)  # the key is the bot's, not a plain hash
    assert one.of(42) != hashlib.sha256(b"42").hexdigest()[:12]
    assert len(one.of(42)) == 12 and int(one.of(42), 16) >= 0
    assert one.of(None) == ""


async def test_files_are_streamed_in_chunks_and_removed_afterwards(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = await seed_hand_data(db)
    monkeypatch.setattr(exports_module, "CHUNK", 4)  # many chunks for 30 registrations
    service = ExportService(db, ZoneInfo("Europe/Paris"), TOKEN)
    async with service.export() as files:
        folder = files[0].path.parent
        by_name = {file.name: file for file in files}
        assert {name: file.rows for name, file in by_name.items()} == {
            "workshops.csv": 4,
            "registrations.csv": 30,
            "survey_answers.csv": 11 + 12 * 2 - 1,  # autonomy (11) + needs (2 answers, R12 1)
            "survey_answers_anonymous.csv": 18,  # W1's poll (6 x 3); W2's 4 people left out
            "needs.csv": 12,
        }
        raw = by_name["registrations.csv"].path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")
        with by_name["registrations.csv"].path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(row["registration"]) for row in rows] == sorted(
            int(row["registration"]) for row in rows
        )
        r1 = service.pseudonyms.of(data.residents[1])
        assert sum(row["person"] == r1 for row in rows) == 3  # W1, W2, W4
        assert str(telegram_id(1)) not in raw.decode("utf-8-sig")
        assert rows[0]["registered_at"].endswith("+01:00")  # Paris time in November
    assert not folder.exists()


async def test_facilitator_export(db: Database) -> None:
    await seed_hand_data(db)
    service = ExportService(db, ZoneInfo("Europe/Paris"), TOKEN)
    async with service.export(FACILITATOR) as files:
        rows = {file.name: file.rows for file in files}
    assert rows == {
        "workshops.csv": 2,
        "registrations.csv": 20,
        "survey_answers.csv": 7,  # autonomy at sign-up for W1 (R1-R7)
        "survey_answers_anonymous.csv": 18,  # W1's poll: 6 x 3 answers
    }


async def test_small_poll_groups_are_left_out_of_the_anonymous_answers(db: Database) -> None:
    data = await seed_hand_data(db)
    async with db.write() as session:  # W1's poll down to 5 people; W2's stays at 4
        one_w1_set = await session.scalar(
            select(func.min(SurveyAnswerSet.id)).where(
                SurveyAnswerSet.resident_id.is_(None),
                SurveyAnswerSet.workshop_id == data.workshops["W1"],
            )
        )
        await session.execute(delete(SurveyAnswerSet).where(SurveyAnswerSet.id == one_w1_set))
    service = ExportService(db, ZoneInfo("Europe/Paris"), TOKEN, min_group_size=5)
    for viewer in (None, FACILITATOR):
        async with service.export(viewer) as files:
            file = {f.name: f for f in files}["survey_answers_anonymous.csv"]
            with file.path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
                header = reader.fieldnames or []
        assert "answer_set" not in header and "person" not in header
        assert header[0] == "survey"
        assert file.rows == len(rows) == 5 * 3
        assert {row["workshop"] for row in rows} == {"w1"}
