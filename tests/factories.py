"""Small builders of test data, written through the real models and units of work."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from bot.clock import ManualClock
from storage.db import Database
from storage.models import Territory, Theme, Venue, Workshop

# A Tuesday morning in Paris, far from any DST change.
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_keys = itertools.count(1)


def new_clock() -> ManualClock:
    return ManualClock(T0)


async def seed_place(db: Database, *, area: str = "Montreynaud") -> tuple[int, int, int]:
    """A neighbourhood, a venue in it and a theme; returns their ids."""
    n = next(_keys)
    async with db.write() as session:
        territory = Territory(key=f"area-{n}", name=area)
        session.add(territory)
        await session.flush()
        venue = Venue(
            key=f"venue-{n}",
            territory_id=territory.id,
            name=f"EPN {area}",
            address="1 place de la Mairie, 42000 Saint-Étienne",
            latitude=45.44,
            longitude=4.39,
            opening_notes={"fr": "Du lundi au vendredi"},
            accessibility_notes={"fr": "Accès de plain-pied", "en": "Step-free access"},
        )
        theme = Theme(
            key=f"theme-{n}",
            name={
                "fr": "Démarches en ligne",
                "en": "Online procedures",
                "ar": "الإجراءات عبر الإنترنت",
            },
            need_category="navigation_sur_internet",
        )
        session.add_all([venue, theme])
        await session.flush()
        return territory.id, venue.id, theme.id


async def seed_workshop(
    db: Database,
    clock: ManualClock,
    *,
    capacity: int = 10,
    starts_in: timedelta = timedelta(days=3),
    place: tuple[int, int, int] | None = None,
    title: str = "Faire ses démarches en ligne",
    seats_taken: int = 0,
    status: str = "scheduled",
) -> int:
    _, venue_id, theme_id = place or await seed_place(db)
    starts_at = clock.now() + starts_in
    async with db.write() as session:
        workshop = Workshop(
            key=f"workshop-{next(_keys)}",
            title={"fr": title, "en": f"EN {title}", "ar": f"AR {title}"},
            description={"fr": "Un atelier pour apprendre ensemble."},
            theme_id=theme_id,
            venue_id=venue_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(hours=2),
            capacity=capacity,
            seats_taken=seats_taken,
            status=status,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        session.add(workshop)
        await session.flush()
        return workshop.id
