"""The outbox-retention benchmark's core still works (bench/outbox_retention.py), at a tiny
size, on both backends: every broadcast row queued is deleted in time, and the table never
holds more than about a retention period of broadcasts. Not a timing test."""

from __future__ import annotations

import pytest

from bench import outbox_retention
from storage.db import Database

pytestmark = pytest.mark.storage


async def test_the_outbox_stays_bounded_by_the_retention(db: Database, database_url: str) -> None:
    result = await outbox_retention.measure_backend("test", database_url, recipients=20)
    assert result["rows_queued"] == result["rows_deleted"] == 200
    assert result["final_rows"] == 0
    assert result["peak_rows"] == 5 * 20  # the broadcasts of the last 30 days
    assert result["weekly_rows"][:6] == [20, 40, 60, 80, 100, 100]
