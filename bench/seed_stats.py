"""A reproducible data set for the statistics and export benchmarks (issue 6, section 3).

Full size: 20,000 residents, 500 workshops, 100,000 registrations, 50,000 survey answers.
Rows are built deterministically (no randomness: the same sizes give the same figures) and
written with bulk inserts (executemany, in batches) on SQLite or PostgreSQL. Tests call
`seed_stats` with small sizes.

    .venv/bin/python -m bench.seed_stats sqlite+aiosqlite:///./data/bench.sqlite3
    .venv/bin/python -m bench.seed_stats postgresql+asyncpg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, text

from bot.services.taxonomy import NEED_CATEGORIES
from storage.db import Database
from storage.migrate import upgrade_to_head
from storage.models import (
    AttendanceSource,
    Base,
    RegistrationStatus,
    Resident,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
    Territory,
    Theme,
    Venue,
    Workshop,
    WorkshopStatus,
)
from storage.models import Registration as RegistrationRow

BATCH = 5_000
TERRITORIES = 8
VENUES_PER_TERRITORY = 2
CAPACITY = 15
WAITLIST = 10
PARIS = ZoneInfo("Europe/Paris")
NEEDS_CHOICES = (
    "papiers_elections_citoyennete",
    "social_sante",
    "argent_impots",
    "email",
    "prendre_en_main_du_materiel",
    "securite_numerique",
    "sante",
)
THEME_CATEGORIES = tuple(list(NEED_CATEGORIES)[:10])


@dataclass(frozen=True)
class SeedSizes:
    residents: int = 20_000
    workshops: int = 500
    registrations: int = 100_000
    survey_answers: int = 50_000

    @classmethod
    def scaled(cls, factor: float) -> SeedSizes:
        full = cls()
        return cls(
            residents=max(20, int(full.residents * factor)),
            workshops=max(4, int(full.workshops * factor)),
            registrations=max(40, int(full.registrations * factor)),
            survey_answers=max(40, int(full.survey_answers * factor)),
        )


@dataclass(frozen=True)
class SeedReport:
    residents: int
    workshops: int
    registrations: int
    survey_answers: int
    facilitator_id: int  # the facilitator in charge of every fourth workshop
    seconds: float


async def _next_id(session: Any, model: type[Base]) -> int:
    return int(await session.scalar(select(func.coalesce(func.max(model.id), 0)))) + 1  # type: ignore[attr-defined]


async def _bulk(session: Any, model: type[Base], rows: list[dict[str, Any]]) -> None:
    for begin in range(0, len(rows), BATCH):
        await session.execute(insert(model), rows[begin : begin + BATCH])


def _week(moment: datetime) -> date:
    day = moment.astimezone(PARIS).date()
    return day - timedelta(days=day.weekday())


async def seed_stats(
    db: Database,
    now: datetime,
    sizes: SeedSizes = SeedSizes(),
    *,
    facilitator_id: int = 4242,
    analyze: bool = True,
) -> SeedReport:
    """Insert the data set around `now` (workshops from 270 days before to 90 days after).

    On PostgreSQL the tables are then analysed, unless `analyze` is False: a test on the
    session's shared database must not leave planner statistics behind for the tests after it.
    """
    started = time.perf_counter()
    async with db.write() as session:
        ids = {
            model: await _next_id(session, model)
            for model in (
                Territory,
                Venue,
                Theme,
                Workshop,
                Resident,
                RegistrationRow,
                SurveyRun,
                SurveyAnswerSet,
                SurveyAnswer,
            )
        }
        t0, v0, th0, w0 = ids[Territory], ids[Venue], ids[Theme], ids[Workshop]
        r0, g0, run0, set0, a0 = (
            ids[Resident],
            ids[RegistrationRow],
            ids[SurveyRun],
            ids[SurveyAnswerSet],
            ids[SurveyAnswer],
        )
        await _bulk(
            session,
            Territory,
            [
                {"id": t0 + i, "key": f"bench-area-{t0 + i}", "name": f"Quartier {t0 + i}"}
                for i in range(TERRITORIES)
            ],
        )
        venues = TERRITORIES * VENUES_PER_TERRITORY
        await _bulk(
            session,
            Venue,
            [
                {
                    "id": v0 + i,
                    "key": f"bench-venue-{v0 + i}",
                    "territory_id": t0 + i % TERRITORIES,
                    "name": f"EPN {v0 + i}",
                    "address": "Saint-Étienne",
                    "latitude": 45.44,
                    "longitude": 4.39,
                    "opening_notes": {},
                    "accessibility_notes": {},
                }
                for i in range(venues)
            ],
        )
        await _bulk(
            session,
            Theme,
            [
                {
                    "id": th0 + i,
                    "key": f"bench-theme-{th0 + i}",
                    "name": {"fr": f"Thème {i}", "en": f"Theme {i}", "ar": f"موضوع {i}"},
                    "need_category": category,
                }
                for i, category in enumerate(THEME_CATEGORIES)
            ],
        )
        span = timedelta(days=360) / max(1, sizes.workshops)
        first_start = now - timedelta(days=270)
        workshops = []
        for i in range(sizes.workshops):
            starts_at = first_start + span * i
            workshops.append(
                {
                    "id": w0 + i,
                    "key": f"bench-workshop-{w0 + i}",
                    "title": {"fr": f"Atelier {i}", "en": f"Workshop {i}", "ar": f"ورشة {i}"},
                    "description": {},
                    "theme_id": th0 + i % len(THEME_CATEGORIES),
                    "venue_id": v0 + i % venues,
                    "starts_at": starts_at,
                    "ends_at": starts_at + timedelta(hours=2),
                    "capacity": CAPACITY,
                    "seats_taken": 0,
                    "waitlist_seq": 0,
                    "status": (
                        WorkshopStatus.CANCELLED
                        if i % 50 == 49
                        else WorkshopStatus.DONE
                        if starts_at + timedelta(hours=2) <= now
                        else WorkshopStatus.SCHEDULED
                    ),
                    "checkin_code": "BENCH",
                    "facilitator_id": facilitator_id if i % 4 == 0 else None,
                    "created_at": first_start - timedelta(days=30),
                    "updated_at": first_start - timedelta(days=30),
                }
            )
        residents = [
            {
                "id": r0 + i,
                "telegram_id": 900_000_000 + r0 + i,
                "first_name": f"Benchname{r0 + i}",
                "language": ("fr", "en", "ar")[i % 3],
                "consented_at": now
                - timedelta(days=365)
                + timedelta(seconds=i * 1571 % 31_536_000),
                "is_active": True,
                "wants_announcements": True,
                "created_at": now - timedelta(days=365) + timedelta(days=365) * i / sizes.residents,
                "last_seen_at": None,
            }
            for i in range(sizes.residents)
        ]
        await _bulk(session, Resident, residents)

        per_workshop = max(1, sizes.registrations // max(1, sizes.workshops))
        registrations = []
        attendees: dict[int, list[int]] = {}
        for w, workshop in enumerate(workshops):
            starts_at = workshop["starts_at"]
            ended = workshop["ends_at"] <= now and workshop["status"] != WorkshopStatus.CANCELLED
            seats = waiting = 0
            count = per_workshop + (1 if w < sizes.registrations % max(1, sizes.workshops) else 0)
            for i in range(min(count, sizes.residents)):
                resident_id = r0 + (w * 7919 + i) % sizes.residents
                created_at = starts_at - timedelta(days=1 + (i * 37 + w) % 20, minutes=i)
                row: dict[str, Any] = {
                    "id": g0 + len(registrations),
                    "workshop_id": workshop["id"],
                    "resident_id": resident_id,
                    "status": RegistrationStatus.CANCELLED,
                    "created_at": created_at,
                    "confirmed_at": None,
                    "cancelled_at": None,
                    "waitlist_position": None,
                    "promoted_at": None,
                    "coming_confirmed_at": None,
                    "attended_at": None,
                    "attendance_source": None,
                    "attendance_marked_by": None,
                }
                if workshop["status"] == WorkshopStatus.CANCELLED:
                    row["cancelled_at"] = starts_at - timedelta(hours=12)
                elif seats < CAPACITY and i % 5 != 4:
                    seats += 1
                    row["status"] = RegistrationStatus.CONFIRMED
                    row["confirmed_at"] = created_at
                    if i % 7 == 3:
                        row["promoted_at"] = created_at + timedelta(hours=6)
                    if ended and i % 4 != 0:
                        row["attended_at"] = starts_at + timedelta(minutes=10)
                        row["attendance_source"] = AttendanceSource.ROLL
                        attendees.setdefault(w, []).append(resident_id)
                elif seats >= CAPACITY and waiting < WAITLIST and not ended:
                    waiting += 1
                    row["status"] = RegistrationStatus.WAITLISTED
                    row["waitlist_position"] = waiting
                else:
                    row["cancelled_at"] = created_at + timedelta(hours=3)
                registrations.append(row)
            workshop["seats_taken"] = seats
            workshop["waitlist_seq"] = waiting
        await _bulk(session, Workshop, workshops)
        await _bulk(session, RegistrationRow, registrations)

        # The needs survey has one always-open run: reuse it when the database has one.
        needs_run = await session.scalar(
            select(SurveyRun.id).where(
                SurveyRun.survey_key == "needs", SurveyRun.workshop_id.is_(None)
            )
        )
        runs: list[dict[str, Any]] = []
        if needs_run is None:
            needs_run = run0
            runs.append({"id": run0, "survey_key": "needs", "workshop_id": None, "opened_at": now})
        sets: list[dict[str, Any]] = []
        answers: list[dict[str, Any]] = []

        def answer_set(run_id: int, resident_id: int | None, workshop: dict | None) -> int:
            set_id = set0 + len(sets)
            moment = workshop["ends_at"] if workshop else now - timedelta(days=len(sets) % 300)
            sets.append(
                {
                    "id": set_id,
                    "run_id": run_id,
                    "resident_id": resident_id,
                    "workshop_id": workshop["id"] if workshop else None,
                    "time_bucket": _week(moment),
                    "completed": True,
                }
            )
            return set_id

        def answer(
            set_id: int, key: str, *, choices: list[str] | None = None, number: int | None = None
        ) -> None:
            # Only the value given is a column of the row: an omitted JSON column is SQL NULL,
            # as the survey engine writes it (a None would be stored as JSON null).
            value = {"choices": choices} if choices is not None else {"number": number}
            answers.append(
                {
                    "id": a0 + len(answers),
                    "answer_set_id": set_id,
                    "question_key": key,
                    "skipped": False,
                    **value,
                }
            )

        # Half the answers: post-workshop polls (4 answers) and the autonomy question at
        # sign-up (1 answer) of attendees; the other half: the needs survey (5 answers).
        budget_polls = sizes.survey_answers // 2
        for w in attendees:
            workshop = workshops[w]
            runs.append(
                {
                    "id": run0 + 1 + 2 * w,
                    "survey_key": "post_workshop",
                    "workshop_id": workshop["id"],
                    "opened_at": workshop["ends_at"],
                }
            )
            runs.append(
                {
                    "id": run0 + 2 + 2 * w,
                    "survey_key": "autonomy_before",
                    "workshop_id": workshop["id"],
                    "opened_at": workshop["starts_at"] - timedelta(days=2),
                }
            )
        rounds = max((len(people) for people in attendees.values()), default=0)
        pairs = [(n, w) for n in range(rounds) for w in attendees if n < len(attendees[w])]
        for n, w in pairs[: budget_polls // 5]:
            workshop = workshops[w]
            poll = answer_set(run0 + 1 + 2 * w, None, workshop)
            answer(poll, "satisfaction", number=1 + (n * 3 + w) % 5)
            answer(poll, "usefulness", number=1 + (n + w) % 5)
            answer(poll, "autonomy", number=2 + (n + w) % 4)
            answer(poll, "try_alone", choices=[("redo", "practise", "help_someone")[n % 3]])
            before = answer_set(run0 + 2 + 2 * w, attendees[w][n], workshop)
            answer(before, "autonomy", number=1 + (n + w) % 3)
        needs_sets = (sizes.survey_answers - len(answers)) // 5
        for i in range(min(needs_sets, sizes.residents)):
            needs = answer_set(needs_run, r0 + i, None)
            answer(
                needs,
                "hard_tasks",
                choices=[NEEDS_CHOICES[i % len(NEEDS_CHOICES)], NEEDS_CHOICES[(i * 3 + 1) % 7]]
                if i % 7 != (i * 3 + 1) % 7
                else [NEEDS_CHOICES[i % len(NEEDS_CHOICES)]],
            )
            answer(needs, "help_kind", choices=["collectif"])
            answer(needs, "days", choices=["monday"])
            answer(needs, "times", choices=["morning"])
            answer(needs, "neighbourhood", choices=[f"bench-area-{t0 + i % TERRITORIES}"])
        await _bulk(session, SurveyRun, runs)
        await _bulk(session, SurveyAnswerSet, sets)
        await _bulk(session, SurveyAnswer, [a for a in answers if "number" in a])
        await _bulk(session, SurveyAnswer, [a for a in answers if "choices" in a])
        if not db.is_sqlite:
            # Explicit ids do not move PostgreSQL's sequences: put them after the new rows.
            for model in ids:
                table = model.__tablename__  # type: ignore[attr-defined]
                await session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    )
                )
    if analyze and not db.is_sqlite:
        async with db.engine.connect() as connection:
            await connection.execute(text("COMMIT"))
            await connection.execute(text("ANALYZE"))
    return SeedReport(
        residents=len(residents),
        workshops=len(workshops),
        registrations=len(registrations),
        survey_answers=len(answers),
        facilitator_id=facilitator_id,
        seconds=time.perf_counter() - started,
    )


async def _main(url: str, factor: float) -> None:
    db = Database(url)
    try:
        await upgrade_to_head(db.engine)
        report = await seed_stats(db, datetime.now(UTC), SeedSizes.scaled(factor))
    finally:
        await db.dispose()
    print(
        f"seeded {report.residents} residents, {report.workshops} workshops, "
        f"{report.registrations} registrations, {report.survey_answers} survey answers "
        f"in {report.seconds:.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    arguments = parser.parse_args()
    asyncio.run(_main(arguments.database_url, arguments.scale))
