"""The database schema, as typed SQLAlchemy models.

The schema itself refuses the states that must never exist: two live registrations of one
person for one workshop, more confirmed seats than capacity, two people at one waitlist
position. Services rely on these constraints as the last line of defence against races.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from storage.types import UTCDateTime

# Stable constraint names, so that Alembic migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Texts written by operators in several languages: {"fr": "...", "en": "...", "ar": "..."}.
LocalizedText = dict[str, str]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        LocalizedText: JSON(),
        dict[str, Any]: JSON(),
    }


class WorkshopStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    DONE = "done"


class RegistrationStatus(StrEnum):
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    CANCELLED = "cancelled"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class Territory(Base):
    """A neighbourhood of the programme (a pilot area)."""

    __tablename__ = "territories"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Venue(Base):
    """A public digital practice space (EPN) where workshops take place."""

    __tablename__ = "venues"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    territory_id: Mapped[int] = mapped_column(ForeignKey("territories.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    opening_notes: Mapped[LocalizedText] = mapped_column(default=dict)
    accessibility_notes: Mapped[LocalizedText] = mapped_column(default=dict)

    territory: Mapped[Territory] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
    )


class Theme(Base):
    """What a workshop is about; `need_category` links it to the national needs taxonomy."""

    __tablename__ = "themes"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[LocalizedText]
    need_category: Mapped[str | None] = mapped_column(String(64))


class Workshop(Base):
    """A world-café workshop session with a fixed number of seats."""

    __tablename__ = "workshops"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[LocalizedText]
    description: Mapped[LocalizedText] = mapped_column(default=dict)
    theme_id: Mapped[int] = mapped_column(ForeignKey("themes.id"), index=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    starts_at: Mapped[datetime] = mapped_column(index=True)
    ends_at: Mapped[datetime]
    capacity: Mapped[int] = mapped_column(Integer)
    # Confirmed registrations, kept by the same transaction that confirms or cancels one; the
    # CHECK below is what makes overselling impossible whatever the application does.
    seats_taken: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Last waitlist ticket handed out; tickets only grow, so positions are never reused.
    waitlist_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    status: Mapped[str] = mapped_column(
        String(16), default=WorkshopStatus.SCHEDULED, server_default=WorkshopStatus.SCHEDULED
    )
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    theme: Mapped[Theme] = relationship(lazy="raise")
    venue: Mapped[Venue] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint("capacity >= 0", name="capacity_non_negative"),
        CheckConstraint("seats_taken >= 0", name="seats_taken_non_negative"),
        CheckConstraint("seats_taken <= capacity", name="seats_within_capacity"),
        CheckConstraint("waitlist_seq >= 0", name="waitlist_seq_non_negative"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint(f"status IN ({_in(WorkshopStatus)})", name="status_known"),
        Index("ix_workshops_status_starts_at", "status", "starts_at"),
    )


class Resident(Base):
    """A person known to the bot. Only created once they consent (RGPD)."""

    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))
    consented_at: Mapped[datetime | None]
    # False once Telegram says the person blocked the bot or deleted their account.
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]


class ConsentEvent(Base):
    """History of consent given and withdrawn, kept for the person's access right."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    notice_version: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]

    __table_args__ = (CheckConstraint("kind IN ('given', 'withdrawn')", name="kind_known"),)


class Registration(Base):
    """One person's place (confirmed or waitlisted) in one workshop, and its history."""

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    workshop_id: Mapped[int] = mapped_column(ForeignKey("workshops.id"))
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    # Ticket drawn from Workshop.waitlist_seq when the person joined the waitlist.
    waitlist_position: Mapped[int | None] = mapped_column(Integer)
    promoted_at: Mapped[datetime | None]

    workshop: Mapped[Workshop] = relationship(lazy="raise")
    resident: Mapped[Resident] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(RegistrationStatus)})", name="status_known"),
        CheckConstraint(
            "(status = 'waitlisted') = (waitlist_position IS NOT NULL)",
            name="waitlist_position_iff_waitlisted",
        ),
        # At most one live registration per person and workshop.
        Index(
            "uq_registrations_live_person_workshop",
            "workshop_id",
            "resident_id",
            unique=True,
            sqlite_where=text("status IN ('confirmed', 'waitlisted')"),
            postgresql_where=text("status IN ('confirmed', 'waitlisted')"),
        ),
        # Waitlist positions are distinct within a workshop.
        Index(
            "uq_registrations_waitlist_position",
            "workshop_id",
            "waitlist_position",
            unique=True,
            sqlite_where=text("status = 'waitlisted'"),
            postgresql_where=text("status = 'waitlisted'"),
        ),
        Index("ix_registrations_resident_status", "resident_id", "status"),
        Index("ix_registrations_workshop_status", "workshop_id", "status"),
    )


class OutboxMessage(Base):
    """A message to deliver later, persisted in the same transaction as its cause.

    Written by the transaction that decides it (a waitlist promotion, and later reminders and
    broadcasts), then claimed atomically and sent by the delivery worker: a crash between the
    decision and the send never loses the message, and a claimed row is sent by one worker only.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Makes a repeated decision (a retried transaction, a re-run sweep) enqueue nothing new.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(
        String(16), default=OutboxStatus.PENDING, server_default=OutboxStatus.PENDING
    )
    not_before: Mapped[datetime]
    # A claim is a lease: a worker that dies leaves rows that become claimable again after it.
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(OutboxStatus)})", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_outbox_status_not_before", "status", "not_before"),
        Index("ix_outbox_resident_id", "resident_id"),
    )
