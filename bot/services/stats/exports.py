"""CSV exports for coordinators (everything) and facilitators (their workshops only).

Files are UTF-8 with a byte order mark (spreadsheet software then reads accents right),
comma-separated with standard quoting, one file per table. People appear only under a
pseudonym: an HMAC-SHA256 of the resident id with a key derived from the bot token, cut to
12 hex characters. It is the same in every export (rows of one person can be followed from
file to file) and cannot be turned back into the person without the token. No Telegram id,
name or phone number is ever written; anonymous survey answers have no person column at all.
The past registrations of an erased resident (/forget, retention) say "erased" instead of a
pseudonym, so that an older export cannot be linked to them.

Rows are streamed from the database in chunks and written to a temporary folder, so an
export never holds a whole table in memory; the caller sends the files and removes the folder.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import aliased

from bot.services.stats.survey_answers import NEEDS
from storage.db import Database
from storage.models import (
    Registration,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
    Territory,
    Theme,
    Venue,
    Workshop,
)

CHUNK = 2_000
PSEUDONYM_CHARS = 12
BOM = "\ufeff"
# The person column of an erased resident's past registrations (kept for the figures).
ERASED = "erased"


@dataclass(frozen=True)
class ExportFile:
    name: str
    path: Path
    rows: int  # data rows, header excluded


class Pseudonyms:
    """Stable, non-reversible ids of residents for exported files."""

    def __init__(self, bot_token: str) -> None:
        key = hashlib.sha256(b"capacity-bot exports\0" + bot_token.encode()).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def of(self, resident_id: int | None) -> str:
        if resident_id is None:
            return ""
        mac = self._mac.copy()
        mac.update(str(resident_id).encode())
        return mac.hexdigest()[:PSEUDONYM_CHARS]


ANSWER_HEADER = (
    "answer_set",
    "survey",
    "workshop",
    "week",
    "question",
    "choices",
    "number",
    "text",
    "skipped",
)


# A file to write: its header, the query streamed, and how a row becomes a CSV line.
Table = tuple[list[str], Select[*tuple[Any, ...]], Callable[[Any], list[Any]]]


class ExportService:
    def __init__(self, db: Database, tz: ZoneInfo, bot_token: str, min_group_size: int = 5) -> None:
        self._db = db
        self._tz = tz
        self._min_group_size = min_group_size
        self.pseudonyms = Pseudonyms(bot_token)

    @asynccontextmanager
    async def export(self, facilitator_id: int | None = None) -> AsyncIterator[list[ExportFile]]:
        """Write the files (a facilitator: only their workshops, and no needs file) into a
        temporary folder that is removed when the block ends."""
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="capacity-export-"))
        try:
            files = [
                await self._write(folder, "workshops.csv", *self._workshops(facilitator_id)),
                await self._write(
                    folder, "registrations.csv", *self._registrations(facilitator_id)
                ),
                await self._write(
                    folder, "survey_answers.csv", *self._named_answers(facilitator_id)
                ),
                await self._write(
                    folder,
                    "survey_answers_anonymous.csv",
                    *self._anonymous_answers(facilitator_id),
                ),
            ]
            if facilitator_id is None:
                files.append(await self._write(folder, "needs.csv", *self._needs()))
            yield files
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _write(
        self,
        folder: Path,
        name: str,
        header: Sequence[str],
        query: Select[*tuple[Any, ...]],
        shape: Callable[[Any], Iterable[Any]],
    ) -> ExportFile:
        """Stream `query` in chunks into `folder/name`; rows are shaped and written off the
        event loop, so the bot keeps answering during a large export."""
        path = folder / name
        handle: TextIO = await asyncio.to_thread(open, path, "w", encoding="utf-8", newline="")
        rows = 0
        try:
            writer = csv.writer(handle)
            await asyncio.to_thread(handle.write, BOM)
            await asyncio.to_thread(writer.writerow, header)
            async with self._db.read() as session:
                # Core rows (no ORM layer), fetched CHUNK at a time from a server-side cursor.
                connection = await session.connection()
                result = await connection.stream(query.execution_options(yield_per=CHUNK))
                async for chunk in result.partitions(CHUNK):
                    # Shaping and writing a chunk take tens of milliseconds: off the loop.
                    await asyncio.to_thread(writer.writerows, map(shape, chunk))
                    rows += len(chunk)
        finally:
            await asyncio.to_thread(handle.close)
        return ExportFile(name, path, rows)

    def _when(self, moment: datetime | None) -> str:
        return moment.astimezone(self._tz).isoformat(timespec="minutes") if moment else ""

    def _scoped(
        self, query: Select[*tuple[Any, ...]], facilitator_id: int | None
    ) -> Select[*tuple[Any, ...]]:
        if facilitator_id is None:
            return query
        return query.where(Workshop.facilitator_id == facilitator_id)

    # -- the tables -----------------------------------------------------------------------

    def _workshops(self, facilitator_id: int | None) -> Table:
        header = [
            "workshop",
            "title",
            "theme",
            "need_category",
            "venue",
            "neighbourhood",
            "starts_at",
            "ends_at",
            "status",
            "capacity",
            "seats_taken",
        ]
        query = self._scoped(
            select(
                Workshop.key,
                Workshop.title,
                Theme.key.label("theme"),
                Theme.need_category,
                Venue.key.label("venue"),
                Territory.key.label("territory"),
                Workshop.starts_at,
                Workshop.ends_at,
                Workshop.status,
                Workshop.capacity,
                Workshop.seats_taken,
            )
            .join(Theme, Theme.id == Workshop.theme_id)
            .join(Venue, Venue.id == Workshop.venue_id)
            .join(Territory, Territory.id == Venue.territory_id)
            .order_by(Workshop.starts_at, Workshop.id),
            facilitator_id,
        )

        def shape(row: Any) -> list[Any]:
            title = row.title.get("fr") or next(iter(row.title.values()), "")
            return [
                row.key,
                title,
                row.theme,
                row.need_category or "",
                row.venue,
                row.territory,
                self._when(row.starts_at),
                self._when(row.ends_at),
                row.status,
                row.capacity,
                row.seats_taken,
            ]

        return header, query, shape

    def _registrations(self, facilitator_id: int | None) -> Table:
        header = [
            "registration",
            "workshop",
            "person",
            "status",
            "registered_at",
            "confirmed_at",
            "cancelled_at",
            "promoted_at",
            "coming_confirmed_at",
            "attended",
            "attendance_source",
        ]
        query = self._scoped(
            select(
                Registration.id,
                Workshop.key,
                Registration.resident_id,
                Resident.erased_at,
                Registration.status,
                Registration.created_at,
                Registration.confirmed_at,
                Registration.cancelled_at,
                Registration.promoted_at,
                Registration.coming_confirmed_at,
                Registration.attended_at,
                Registration.attendance_source,
            )
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .join(Resident, Resident.id == Registration.resident_id)
            .order_by(Registration.id),
            facilitator_id,
        )

        def shape(row: Any) -> list[Any]:
            # Unpacked by position: much cheaper than attribute access at 100,000 rows.
            registration, workshop, resident, erased_at, status, *moments, attended, source = row
            return [
                registration,
                workshop,
                # An erased person's past places are still counted, but under no pseudonym:
                # the one of older exports would link them to the anonymous record.
                ERASED if erased_at is not None else self.pseudonyms.of(resident),
                status,
                *map(self._when, moments),
                "yes" if attended else "no",
                source or "",
            ]

        return header, query, shape

    @staticmethod
    def _answer_columns() -> list[Any]:
        return [
            SurveyAnswerSet.id.label("answer_set"),
            SurveyRun.survey_key,
            Workshop.key.label("workshop"),
            SurveyAnswerSet.time_bucket,
            SurveyAnswer.question_key,
            SurveyAnswer.choices,
            SurveyAnswer.number,
            SurveyAnswer.free_text,
            SurveyAnswer.skipped,
        ]

    @staticmethod
    def _answer_values(row: Any) -> list[Any]:
        """The answer columns: the last ones of the row (a person column may come first)."""
        answer_set, survey, workshop, week, question, choices, number, text, skipped = row[-9:]
        return [
            answer_set,
            survey,
            workshop or "",
            week.isoformat(),
            question,
            "|".join(choices or ()),
            "" if number is None else number,
            text or "",
            "yes" if skipped else "no",
        ]

    def _answers(self, facilitator_id: int | None, *columns: Any) -> Select[*tuple[Any, ...]]:
        query = (
            select(*columns, *self._answer_columns())
            .select_from(SurveyAnswer)
            .join(SurveyAnswerSet, SurveyAnswerSet.id == SurveyAnswer.answer_set_id)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .outerjoin(Workshop, Workshop.id == SurveyAnswerSet.workshop_id)
            .where(SurveyAnswerSet.completed)
            .order_by(SurveyAnswer.id)
        )
        if facilitator_id is not None:
            query = query.where(Workshop.facilitator_id == facilitator_id)
        return query

    def _named_answers(self, facilitator_id: int | None) -> Table:
        """Surveys that keep the person (the autonomy question at sign-up, the needs, the
        follow-up), under their pseudonym."""
        header = ["person", *ANSWER_HEADER]
        query = self._answers(facilitator_id, SurveyAnswerSet.resident_id).where(
            SurveyAnswerSet.resident_id.is_not(None)
        )
        return (
            header,
            query,
            lambda row: [self.pseudonyms.of(row[0]), *self._answer_values(row)],
        )

    def _anonymous_answers(self, facilitator_id: int | None) -> Table:
        """The post-workshop poll: no person column, only the workshop and the week.

        A survey, workshop and week answered by fewer than `min_group_size` people is left
        out for every viewer: a facilitator could match a handful of answers, free text
        included, to the attendees they know. There is no answer-set column, and rows are
        sorted by question and answer, so one person's answers cannot be put together.
        """
        anonymous = (SurveyAnswerSet.completed, SurveyAnswerSet.resident_id.is_(None))
        groups = (
            select(
                SurveyAnswerSet.run_id,
                SurveyAnswerSet.workshop_id,
                SurveyAnswerSet.time_bucket,
            )
            .where(*anonymous)
            .group_by(
                SurveyAnswerSet.run_id, SurveyAnswerSet.workshop_id, SurveyAnswerSet.time_bucket
            )
            .having(func.count(SurveyAnswerSet.id.distinct()) >= self._min_group_size)
            .subquery("big_enough")
        )
        query = (
            self._answers(facilitator_id)
            .where(*anonymous)
            .join(
                groups,
                (groups.c.run_id == SurveyAnswerSet.run_id)
                & (groups.c.time_bucket == SurveyAnswerSet.time_bucket)
                & groups.c.workshop_id.is_not_distinct_from(SurveyAnswerSet.workshop_id),
            )
            .order_by(None)
            .order_by(
                SurveyRun.survey_key,
                Workshop.key,
                SurveyAnswerSet.time_bucket,
                SurveyAnswer.question_key,
                SurveyAnswer.number,
                SurveyAnswer.free_text,
                SurveyAnswer.skipped,
                SurveyAnswer.id,
            )
        )
        return list(ANSWER_HEADER[1:]), query, lambda row: self._answer_values(row)[1:]

    def _needs(self) -> Table:
        """One row per answer to the needs survey: the needs named, the neighbourhood given."""
        hard = aliased(SurveyAnswer)
        place = aliased(SurveyAnswer)
        header = ["person", "week", "neighbourhood", "needs", "other_need"]
        other = aliased(SurveyAnswer)
        query = (
            select(
                SurveyAnswerSet.resident_id,
                SurveyAnswerSet.time_bucket,
                place.choices.label("place"),
                hard.choices.label("needs"),
                other.free_text.label("other"),
            )
            .select_from(SurveyAnswerSet)
            .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
            .join(
                hard,
                (hard.answer_set_id == SurveyAnswerSet.id) & (hard.question_key == "hard_tasks"),
            )
            .outerjoin(
                place,
                (place.answer_set_id == SurveyAnswerSet.id)
                & (place.question_key == "neighbourhood"),
            )
            .outerjoin(
                other,
                (other.answer_set_id == SurveyAnswerSet.id) & (other.question_key == "hard_other"),
            )
            .where(SurveyRun.survey_key == NEEDS, SurveyAnswerSet.completed)
            .order_by(SurveyAnswerSet.id)
        )

        def shape(row: Any) -> list[Any]:
            return [
                self.pseudonyms.of(row.resident_id),
                row.time_bucket.isoformat(),
                "|".join(row.place or ()),
                "|".join(row.needs or ()),
                row.other or "",
            ]

        return header, query, shape
