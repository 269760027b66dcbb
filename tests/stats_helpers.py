"""A small data set for the statistics and export tests, with figures computed by hand.

Now is T0 (Tuesday 2026-12-01 09:00 UTC); the default period is the 90 local days up to
today: 2026-09-03 .. 2026-12-01. Two neighbourhoods, two venues, two themes:

- W1 (Côte-Chaude, theme "email", facilitator 777), 2026-11-10: 10 registered on 11-01,
  8 confirmed (R1-R8, R8 moved up from the waitlist on 11-06), 2 cancelled on 11-05 (R9,
  R10); R1-R6 came.
- W2 (Côte-Chaude, theme "sante", no facilitator), 2026-11-20: 5 confirmed on 11-15 (R1,
  R2, R11-R13); R1, R2, R11, R12 came.
- W3 (Tarentaize-Beaubrun, theme "email", facilitator 777), upcoming 2026-12-10: 6
  confirmed (R14-R19) on 11-25, 4 on the waiting list (R20-R23) on 11-26.
- W4 (Tarentaize-Beaubrun, "sante"), 2026-08-01, before the period: R1-R5 came.
- Residents R1-R10 created 2026-06-01; R11-R24 created 2026-11-10 (R24 never registered).
- Poll (anonymous): W1 satisfaction 5,5,4,4,3,5 and autonomy 4,4,3,5,4,4, "try alone"
  redo x5, practise x1; W2 satisfaction 5,5,4,5 and autonomy 3,3,3,3.
- Autonomy at sign-up: W1 R1-R6 2,2,1,3,2,2 and R7 (did not come) 5; W2 R1, R2, R11, R12
  1,2,2,1.
- Needs survey (week of 2026-11-16): 6 in Côte-Chaude (all "email", 5 "sante", 2
  "argent_impots"), 5 in Tarentaize-Beaubrun (all "papiers_elections_citoyennete", 1
  "email"), 1 without a neighbourhood ("securite_numerique").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import null

from storage.db import Database
from storage.models import (
    AttendanceSource,
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

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FACILITATOR = 777
TELEGRAM_BASE = 987_654_300
NAME_PREFIX = "Habitant"


def telegram_id(n: int) -> int:
    return TELEGRAM_BASE + n


def first_name(n: int) -> str:
    return f"{NAME_PREFIX}{n:02d}"


@dataclass(frozen=True)
class StatsData:
    territory_a: int  # Côte-Chaude
    territory_b: int  # Tarentaize-Beaubrun
    workshops: dict[str, int]  # "W1".."W4" -> id
    residents: dict[int, int]  # n -> resident id


def _at(day: str, hour: int = 14) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


async def seed_hand_data(db: Database) -> StatsData:
    async with db.write() as session:
        a = Territory(key="cote-chaude", name="Côte-Chaude")
        b = Territory(key="tarentaize", name="Tarentaize-Beaubrun")
        session.add_all([a, b])
        await session.flush()
        venue_a = _venue("epn-cote", a.id)
        venue_b = _venue("epn-tarentaize", b.id)
        email = Theme(
            key="email", name={"fr": "E-mail", "en": "E-mail", "ar": "بريد"}, need_category="email"
        )
        sante = Theme(
            key="sante", name={"fr": "Santé", "en": "Health", "ar": "صحة"}, need_category="sante"
        )
        session.add_all([venue_a, venue_b, email, sante])
        await session.flush()
        residents = {}
        for n in range(1, 25):
            created = _at("2026-06-01") if n <= 10 else _at("2026-11-10", 10)
            resident = Resident(
                telegram_id=telegram_id(n),
                first_name=first_name(n),
                language="fr",
                consented_at=created,
                phone="+33 6 12 34 56 78" if n == 3 else None,
                created_at=created,
            )
            session.add(resident)
            residents[n] = resident
        workshops = {
            "W1": _workshop("w1", venue_a.id, email.id, "2026-11-10", 10, 8, FACILITATOR, "done"),
            "W2": _workshop("w2", venue_a.id, sante.id, "2026-11-20", 5, 5, None, "done"),
            "W3": _workshop(
                "w3", venue_b.id, email.id, "2026-12-10", 6, 6, FACILITATOR, "scheduled", waitlist=4
            ),
            "W4": _workshop("w4", venue_b.id, sante.id, "2026-08-01", 5, 5, None, "done"),
        }
        session.add_all(workshops.values())
        await session.flush()
        rid = {n: r.id for n, r in residents.items()}
        wid = {k: w.id for k, w in workshops.items()}

        def registration(w: str, n: int, created: datetime, **values: Any) -> Registration:
            return Registration(
                workshop_id=wid[w], resident_id=rid[n], created_at=created, **values
            )

        rows = []
        for n in range(1, 9):
            rows.append(
                registration(
                    "W1",
                    n,
                    _at("2026-11-01"),
                    status="confirmed",
                    confirmed_at=_at("2026-11-01"),
                    promoted_at=_at("2026-11-06") if n == 8 else None,
                    **_came(n <= 6, _at("2026-11-10")),
                )
            )
        for n in (9, 10):
            rows.append(
                registration(
                    "W1", n, _at("2026-11-01"), status="cancelled", cancelled_at=_at("2026-11-05")
                )
            )
        for n in (1, 2, 11, 12, 13):
            rows.append(
                registration(
                    "W2",
                    n,
                    _at("2026-11-15"),
                    status="confirmed",
                    confirmed_at=_at("2026-11-15"),
                    **_came(n != 13, _at("2026-11-20")),
                )
            )
        for n in range(14, 20):
            rows.append(
                registration(
                    "W3", n, _at("2026-11-25"), status="confirmed", confirmed_at=_at("2026-11-25")
                )
            )
        for position, n in enumerate(range(20, 24), start=1):
            rows.append(
                registration(
                    "W3", n, _at("2026-11-26"), status="waitlisted", waitlist_position=position
                )
            )
        for n in range(1, 6):
            rows.append(
                registration(
                    "W4",
                    n,
                    _at("2026-07-20"),
                    status="confirmed",
                    confirmed_at=_at("2026-07-20"),
                    **_came(True, _at("2026-08-01")),
                )
            )
        session.add_all(rows)

        runs = {
            ("post_workshop", "W1"): SurveyRun(
                survey_key="post_workshop", workshop_id=wid["W1"], opened_at=_at("2026-11-10", 18)
            ),
            ("post_workshop", "W2"): SurveyRun(
                survey_key="post_workshop", workshop_id=wid["W2"], opened_at=_at("2026-11-20", 18)
            ),
            ("autonomy_before", "W1"): SurveyRun(
                survey_key="autonomy_before", workshop_id=wid["W1"], opened_at=_at("2026-11-01")
            ),
            ("autonomy_before", "W2"): SurveyRun(
                survey_key="autonomy_before", workshop_id=wid["W2"], opened_at=_at("2026-11-15")
            ),
            ("needs", None): SurveyRun(
                survey_key="needs", workshop_id=None, opened_at=_at("2026-11-01")
            ),
        }
        session.add_all(runs.values())
        await session.flush()

        async def answer_set(
            run: tuple[str, str | None], resident: int | None, answers: dict[str, Any]
        ) -> None:
            _, workshop = run
            answer_set = SurveyAnswerSet(
                run_id=runs[run].id,
                resident_id=rid[resident] if resident else None,
                workshop_id=wid[workshop] if workshop else None,
                time_bucket=date(2026, 11, 16),
                completed=True,
            )
            session.add(answer_set)
            await session.flush()
            for key, value in answers.items():
                session.add(
                    SurveyAnswer(
                        answer_set_id=answer_set.id,
                        question_key=key,
                        number=value if isinstance(value, int) else None,
                        choices=value if isinstance(value, list) else null(),
                        free_text=value if isinstance(value, str) else None,
                    )
                )

        w1_try = ["redo"] * 5 + ["practise"]
        for satisfaction, autonomy, tried in zip(
            (5, 5, 4, 4, 3, 5), (4, 4, 3, 5, 4, 4), w1_try, strict=True
        ):
            await answer_set(
                ("post_workshop", "W1"),
                None,
                {"satisfaction": satisfaction, "autonomy": autonomy, "try_alone": [tried]},
            )
        for satisfaction in (5, 5, 4, 5):
            await answer_set(
                ("post_workshop", "W2"), None, {"satisfaction": satisfaction, "autonomy": 3}
            )
        for n, before in zip(range(1, 8), (2, 2, 1, 3, 2, 2, 5), strict=True):
            await answer_set(("autonomy_before", "W1"), n, {"autonomy": before})
        for n, before in zip((1, 2, 11, 12), (1, 2, 2, 1), strict=True):
            await answer_set(("autonomy_before", "W2"), n, {"autonomy": before})
        for i, n in enumerate(range(1, 7)):
            needs = ["email", *(["sante"] if i < 5 else []), *(["argent_impots"] if i < 2 else [])]
            await answer_set(
                ("needs", None), n, {"hard_tasks": needs, "neighbourhood": ["cote-chaude"]}
            )
        for i, n in enumerate(range(7, 12)):
            needs = ["papiers_elections_citoyennete", *(["email"] if i == 0 else [])]
            await answer_set(
                ("needs", None), n, {"hard_tasks": needs, "neighbourhood": ["tarentaize"]}
            )
        await answer_set(("needs", None), 12, {"hard_tasks": ["securite_numerique"]})
    return StatsData(a.id, b.id, wid, rid)


def _came(present: bool, when: datetime) -> dict[str, Any]:
    if not present:
        return {}
    return {"attended_at": when + timedelta(minutes=5), "attendance_source": AttendanceSource.ROLL}


def _venue(key: str, territory_id: int) -> Venue:
    return Venue(
        key=key,
        territory_id=territory_id,
        name=f"EPN {key}",
        address="Saint-Étienne",
        latitude=45.44,
        longitude=4.39,
    )


def _workshop(
    key: str,
    venue_id: int,
    theme_id: int,
    day: str,
    capacity: int,
    seats: int,
    facilitator: int | None,
    status: str,
    *,
    waitlist: int = 0,
) -> Workshop:
    starts_at = _at(day)
    return Workshop(
        key=key,
        title={"fr": f"Atelier {key}", "en": f"Workshop {key}", "ar": f"ورشة {key}"},
        theme_id=theme_id,
        venue_id=venue_id,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=2),
        capacity=capacity,
        seats_taken=seats,
        waitlist_seq=waitlist,
        status=status,
        facilitator_id=facilitator,
        created_at=_at("2026-05-01"),
        updated_at=_at("2026-05-01"),
    )
