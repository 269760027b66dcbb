"""Browsing the catalogue: upcoming workshops, filters and workshop cards (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    ScalarSelect,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    func,
    or_,
    select,
)
from sqlalchemy.orm import aliased

from bot.clock import Clock
from storage.db import Database
from storage.models import (
    LocalizedText,
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
MAX_PAGE = 10_000  # far beyond any catalogue; keeps the offset a small integer


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


def _summary_columns() -> Select[*tuple[Any, ...]]:
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


def _summary(row: Row[*tuple[Any, ...]]) -> WorkshopSummary:
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


_AHEAD = Registration.__table__.alias("ahead")


def waitlist_rank_subquery(
    position: SQLColumnExpression[int | None],
    workshop_id: SQLColumnExpression[int] = Registration.workshop_id,
) -> ScalarSelect[int]:
    """How many people wait ahead of `position`, plus one: the place shown to a person."""
    ahead = _AHEAD
    return (
        select(func.count() + 1)
        .where(
            ahead.c.workshop_id == workshop_id,
            ahead.c.status == RegistrationStatus.WAITLISTED,
            ahead.c.waitlist_position < position,
        )
        .scalar_subquery()
    )


def _card_statement() -> Select[*tuple[Any, ...]]:
    """A workshop card and the person's own place, in one statement built once: the card is
    read on almost every tap of the sign-up journey (bench/journey.py), and building a
    statement costs more than running it."""
    mine = aliased(Registration, name="mine")
    me = select(Resident.id).where(Resident.telegram_id == bindparam("telegram_id"))
    waiting = Registration.__table__.alias("waiting")
    waitlist_length = (
        select(func.count())
        .where(
            waiting.c.workshop_id == Workshop.id,
            waiting.c.status == RegistrationStatus.WAITLISTED,
        )
        .scalar_subquery()
    )
    return (
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
            mine.status.label("my_status"),
            waitlist_rank_subquery(mine.waitlist_position, mine.workshop_id).label("my_rank"),
            waitlist_length.label("waitlist_length"),
        )
        .outerjoin(
            mine,
            and_(
                mine.workshop_id == Workshop.id,
                mine.resident_id == me.scalar_subquery(),
                mine.status.in_([RegistrationStatus.CONFIRMED, RegistrationStatus.WAITLISTED]),
            ),
        )
        .where(Workshop.id == bindparam("workshop_id"))
    )


_CARD = _card_statement()


def _filtered(statement: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """Upcoming workshops, in a neighbourhood and of a theme when given (0: all)."""
    territory_id = bindparam("territory_id", type_=Integer)
    theme_id = bindparam("theme_id", type_=Integer)
    return statement.where(
        Workshop.status == WorkshopStatus.SCHEDULED,
        Workshop.starts_at > bindparam("now"),
        or_(territory_id == 0, Venue.territory_id == territory_id),
        or_(theme_id == 0, Workshop.theme_id == theme_id),
    )


# One page of the catalogue with the number of matching workshops, in one statement built once
# (the list is shown on every "back to the list" of the sign-up journey).
_PAGE = (
    _filtered(_summary_columns().add_columns(func.count().over().label("total")))
    .order_by(Workshop.starts_at, Workshop.id)
    .limit(PAGE_SIZE)
    .offset(bindparam("offset", type_=Integer))
)
_COUNT = _filtered(
    select(func.count()).select_from(Workshop).join(Venue, Venue.id == Workshop.venue_id)
)


class WorkshopCatalogue:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def _upcoming(self, territory_id: int, theme_id: int) -> list[ColumnElement[bool]]:
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
        params = {"now": self._clock.now(), "territory_id": territory_id, "theme_id": theme_id}
        page = min(max(page, 0), MAX_PAGE)
        async with self._db.snapshot() as session:
            rows = (await session.execute(_PAGE, {**params, "offset": page * PAGE_SIZE})).all()
        if not rows and page > 0:
            # Past the last page (workshops started or were cancelled since): the last one.
            async with self._db.read() as session:
                total = await session.scalar(_COUNT, params) or 0
                page = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1) - 1
                rows = (await session.execute(_PAGE, {**params, "offset": page * PAGE_SIZE})).all()
        if not rows:
            page = 0
        total = rows[0].total if rows else 0
        page_count = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        return WorkshopPage([_summary(r) for r in rows], page, page_count, total)

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
    ) -> tuple[str | None, LocalizedText | None]:
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
        async with self._db.snapshot() as session:
            params = {"workshop_id": workshop_id, "telegram_id": telegram_id}
            row = (await session.execute(_CARD, params)).one_or_none()
        if row is None:
            return None
        my_status = row.my_status
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
            my_waitlist_rank=row.my_rank if my_status == RegistrationStatus.WAITLISTED else None,
            waitlist_length=row.waitlist_length or 0,
            is_open=row.status == WorkshopStatus.SCHEDULED and row.starts_at > self._clock.now(),
        )
