"""Browsing the catalogue: upcoming workshops, filters and workshop cards (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, func, select

from bot.clock import Clock
from storage.db import Database
from storage.models import (
    Registration,
    RegistrationStatus,
    Resident,
    Territory,
    Theme,
    Venue,
    Workshop,
    WorkshopStatus,
)

PAGE_SIZE = 5


@dataclass(frozen=True)
class WorkshopSummary:
    id: int
    title: dict[str, str]
    theme_name: dict[str, str]
    territory_name: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    seats_taken: int

    @property
    def seats_left(self) -> int:
        return max(self.capacity - self.seats_taken, 0)


@dataclass(frozen=True)
class WorkshopPage:
    items: list[WorkshopSummary]
    page: int
    page_count: int
    total: int


@dataclass(frozen=True)
class Choice:
    """A filter option: a neighbourhood or a theme that has upcoming workshops."""

    id: int
    name: str | dict[str, str]  # neighbourhoods are proper nouns; themes are translated


@dataclass(frozen=True)
class WorkshopCard:
    summary: WorkshopSummary
    description: dict[str, str]
    status: str
    venue_name: str
    venue_address: str
    latitude: float
    longitude: float
    accessibility_notes: dict[str, str]
    opening_notes: dict[str, str]
    my_status: str | None  # confirmed / waitlisted / None
    my_waitlist_rank: int | None
    waitlist_length: int
    is_open: bool  # scheduled and not started: registrations accepted


def _summary_columns() -> Select:
    return (
        select(
            Workshop.id,
            Workshop.title,
            Theme.name.label("theme_name"),
            Territory.name.label("territory_name"),
            Workshop.starts_at,
            Workshop.ends_at,
            Workshop.capacity,
            Workshop.seats_taken,
        )
        .join(Theme, Theme.id == Workshop.theme_id)
        .join(Venue, Venue.id == Workshop.venue_id)
        .join(Territory, Territory.id == Venue.territory_id)
    )


def _summary(row) -> WorkshopSummary:
    return WorkshopSummary(
        id=row.id,
        title=row.title,
        theme_name=row.theme_name,
        territory_name=row.territory_name,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        capacity=row.capacity,
        seats_taken=row.seats_taken,
    )


def waitlist_rank_subquery(position):
    """How many people wait ahead of `position`, plus one: the place shown to a person."""
    ahead = Registration.__table__.alias("ahead")
    return (
        select(func.count() + 1)
        .where(
            ahead.c.workshop_id == Registration.workshop_id,
            ahead.c.status == RegistrationStatus.WAITLISTED,
            ahead.c.waitlist_position < position,
        )
        .scalar_subquery()
    )


class WorkshopCatalogue:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def _upcoming(self, territory_id: int, theme_id: int) -> list:
        conditions = [
            Workshop.status == WorkshopStatus.SCHEDULED,
            Workshop.starts_at > self._clock.now(),
        ]
        if territory_id:
            conditions.append(Venue.territory_id == territory_id)
        if theme_id:
            conditions.append(Workshop.theme_id == theme_id)
        return conditions

    async def upcoming(
        self, territory_id: int = 0, theme_id: int = 0, page: int = 0
    ) -> WorkshopPage:
        """One page of upcoming workshops, soonest first; 0 means "all" for a filter."""
        conditions = self._upcoming(territory_id, theme_id)
        async with self._db.read() as session:
            total = await session.scalar(
                select(func.count())
                .select_from(Workshop)
                .join(Venue, Venue.id == Workshop.venue_id)
                .where(*conditions)
            )
            page_count = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
            page = min(max(page, 0), page_count - 1)
            rows = await session.execute(
                _summary_columns()
                .where(*conditions)
                .order_by(Workshop.starts_at, Workshop.id)
                .limit(PAGE_SIZE)
                .offset(page * PAGE_SIZE)
            )
            return WorkshopPage([_summary(r) for r in rows], page, page_count, total or 0)

    async def territories(self, theme_id: int = 0) -> list[Choice]:
        """Neighbourhoods that have upcoming workshops (with the current theme filter)."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(Territory.id, Territory.name)
                .join(Venue, Venue.territory_id == Territory.id)
                .join(Workshop, Workshop.venue_id == Venue.id)
                .where(*self._upcoming(0, theme_id))
                .group_by(Territory.id, Territory.name)
                .order_by(Territory.name)
            )
            return [Choice(r.id, r.name) for r in rows]

    async def themes(self, territory_id: int = 0) -> list[Choice]:
        """Themes that have upcoming workshops (with the current neighbourhood filter)."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(Theme.id, Theme.name, func.min(Workshop.starts_at).label("first"))
                .join(Workshop, Workshop.theme_id == Theme.id)
                .join(Venue, Venue.id == Workshop.venue_id)
                .where(*self._upcoming(territory_id, 0))
                .group_by(Theme.id, Theme.name)
                .order_by("first", Theme.id)
            )
            return [Choice(r.id, r.name) for r in rows]

    async def filter_names(
        self, territory_id: int, theme_id: int
    ) -> tuple[str | None, dict | None]:
        """Names of the active filters, for the list header."""
        async with self._db.read() as session:
            territory = (
                await session.scalar(select(Territory.name).where(Territory.id == territory_id))
                if territory_id
                else None
            )
            theme = (
                await session.scalar(select(Theme.name).where(Theme.id == theme_id))
                if theme_id
                else None
            )
            return territory, theme

    async def card(self, workshop_id: int, telegram_id: int) -> WorkshopCard | None:
        """Everything a workshop card shows, including the person's own place."""
        async with self._db.read() as session:
            row = (
                await session.execute(
                    _summary_columns()
                    .add_columns(
                        Workshop.description,
                        Workshop.status,
                        Venue.name.label("venue_name"),
                        Venue.address,
                        Venue.latitude,
                        Venue.longitude,
                        Venue.accessibility_notes,
                        Venue.opening_notes,
                    )
                    .where(Workshop.id == workshop_id)
                )
            ).one_or_none()
            if row is None:
                return None
            mine = (
                await session.execute(
                    select(
                        Registration.status, waitlist_rank_subquery(Registration.waitlist_position)
                    )
                    .join(Resident, Resident.id == Registration.resident_id)
                    .where(
                        Registration.workshop_id == workshop_id,
                        Resident.telegram_id == telegram_id,
                        Registration.status.in_(
                            [RegistrationStatus.CONFIRMED, RegistrationStatus.WAITLISTED]
                        ),
                    )
                )
            ).one_or_none()
            waitlist_length = await session.scalar(
                select(func.count()).where(
                    and_(
                        Registration.workshop_id == workshop_id,
                        Registration.status == RegistrationStatus.WAITLISTED,
                    )
                )
            )
        my_status = mine[0] if mine else None
        return WorkshopCard(
            summary=_summary(row),
            description=row.description,
            status=row.status,
            venue_name=row.venue_name,
            venue_address=row.address,
            latitude=row.latitude,
            longitude=row.longitude,
            accessibility_notes=row.accessibility_notes,
            opening_notes=row.opening_notes,
            my_status=my_status,
            my_waitlist_rank=mine[1] if my_status == RegistrationStatus.WAITLISTED else None,
            waitlist_length=waitlist_length or 0,
            is_open=row.status == WorkshopStatus.SCHEDULED and row.starts_at > self._clock.now(),
        )
