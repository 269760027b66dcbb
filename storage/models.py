"""The database schema, as typed SQLAlchemy models.

The schema itself refuses the states that must never exist: two live registrations of one
person for one workshop, more confirmed seats than capacity, two people at one waitlist
position. Services rely on these constraints as the last line of defence against races.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
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
        list[str]: JSON(),
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


class AttendanceSource(StrEnum):
    CODE = "code"  # the participant sent /checkin CODE
    BUTTON = "button"  # the participant tapped the check-in button during the workshop
    ROLL = "roll"  # a facilitator ticked them in /attendance


class StaffRole(StrEnum):
    MEDIATOR = "mediator"
    FACILITATOR = "facilitator"
    COORDINATOR = "coordinator"


class BroadcastStatus(StrEnum):
    DRAFT = "draft"  # being composed; nothing queued
    SENDING = "sending"  # confirmed: one outbox row per recipient
    DONE = "done"
    CANCELLED = "cancelled"


class ParticipationStatus(StrEnum):
    INVITED = "invited"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DECLINED = "declined"


# Check-in codes are read aloud and typed on phones: no 0/O, 1/I/L.
CHECKIN_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def new_checkin_code() -> str:
    return "".join(secrets.choice(CHECKIN_ALPHABET) for _ in range(5))


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
    # Shown to the facilitator, sent by participants with /checkin to be marked present.
    checkin_code: Mapped[str] = mapped_column(String(8), default=new_checkin_code)
    # The facilitator in charge (Telegram id): they see this workshop's statistics.
    facilitator_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
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
    # Announcements (broadcasts) can be turned off by the person; reminders are not affected.
    wants_announcements: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    # Enrolled at an EPN desk by a mediator (no Telegram yet): phone is optional, and the
    # one-time claim code lets the person attach the record to their Telegram later.
    phone: Mapped[str | None] = mapped_column(String(32))
    enrolled_by: Mapped[int | None] = mapped_column(BigInteger)
    claim_code: Mapped[str | None] = mapped_column(String(16), unique=True)
    # Indexed for /stats (new residents in a period): without it, a full scan (issue 6).
    created_at: Mapped[datetime] = mapped_column(index=True)
    # The retention clock (RGPD): the last interaction, written at most about once an hour.
    last_seen_at: Mapped[datetime | None]
    # When the person was told they will be erased in a week unless they come back; cleared
    # by any interaction (bot/services/privacy/retention.py).
    retention_notice_at: Mapped[datetime | None] = mapped_column(index=True)
    # Set when the person was erased (/forget or retention): the row is then an anonymous
    # tombstone that keeps past registrations and attendance countable, nothing personal.
    erased_at: Mapped[datetime | None]


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
    # The person answered "I'm coming" to a reminder.
    coming_confirmed_at: Mapped[datetime | None]
    # Attendance: who came, how it was recorded, and by which facilitator for a roll call.
    attended_at: Mapped[datetime | None]
    attendance_source: Mapped[str | None] = mapped_column(String(16))
    attendance_marked_by: Mapped[int | None] = mapped_column(BigInteger)

    workshop: Mapped[Workshop] = relationship(lazy="raise")
    resident: Mapped[Resident] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(RegistrationStatus)})", name="status_known"),
        CheckConstraint(
            f"attendance_source IS NULL OR attendance_source IN ({_in(AttendanceSource)})",
            name="attendance_source_known",
        ),
        CheckConstraint(
            "(attended_at IS NULL) = (attendance_source IS NULL)", name="attendance_has_source"
        ),
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
    # A resident (their chat and language are read at send time) or a fixed chat, such as
    # the facilitators' channel.
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    # Set on the rows of a broadcast, one per recipient, for pacing, progress and reports.
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True
    )
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
        CheckConstraint("resident_id IS NOT NULL OR chat_id IS NOT NULL", name="has_recipient"),
        Index("ix_outbox_status_not_before", "status", "not_before"),
        Index("ix_outbox_resident_id", "resident_id"),
    )


class StaffMember(Base):
    """A role held by a Telegram user: mediators, facilitators and coordinators."""

    __tablename__ = "staff_roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    # None when the role comes from the STAFF setting.
    granted_by: Mapped[int | None] = mapped_column(BigInteger)
    granted_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(f"role IN ({_in(StaffRole)})", name="role_known"),
        Index("uq_staff_roles_person_role", "telegram_id", "role", unique=True),
    )


class SurveyRun(Base):
    """One occurrence of a survey: the poll of one workshop, or an always-open survey."""

    __tablename__ = "survey_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_key: Mapped[str] = mapped_column(String(64))
    workshop_id: Mapped[int | None] = mapped_column(ForeignKey("workshops.id"))
    opened_at: Mapped[datetime]
    closes_at: Mapped[datetime | None]
    digest_sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_survey_runs_survey_workshop",
            "survey_key",
            "workshop_id",
            unique=True,
            sqlite_where=text("workshop_id IS NOT NULL"),
            postgresql_where=text("workshop_id IS NOT NULL"),
        ),
        Index(
            "uq_survey_runs_open_survey",
            "survey_key",
            unique=True,
            sqlite_where=text("workshop_id IS NULL"),
            postgresql_where=text("workshop_id IS NULL"),
        ),
        Index("ix_survey_runs_closes_at", "closes_at"),
    )


class SurveyParticipation(Base):
    """That a person was asked, and where they are in the survey.

    For an anonymous survey this is the only link to the person: the answers wait in the
    person's buffer (a ConversationState row), then move, with other people's, to answer sets
    without a resident (bot/services/surveys/answers.py); answer_set_id stays empty.
    """

    __tablename__ = "survey_participations"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("survey_runs.id", ondelete="CASCADE"))
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    current_question: Mapped[str | None] = mapped_column(String(64))
    answer_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("survey_answer_sets.id", ondelete="SET NULL")
    )
    invited_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # When the current question was shown (cleared at the end): a typed message answers it
    # only for a while, and only the question shown last.
    asked_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(ParticipationStatus)})", name="status_known"),
        Index("uq_survey_participations_run_resident", "run_id", "resident_id", unique=True),
        Index("ix_survey_participations_resident_id", "resident_id"),
    )


class SurveyAnswerSet(Base):
    """One person's answers to one survey occurrence; no resident when anonymous."""

    __tablename__ = "survey_answer_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("survey_runs.id", ondelete="CASCADE"))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id", ondelete="SET NULL"))
    workshop_id: Mapped[int | None] = mapped_column(ForeignKey("workshops.id"))
    # The week (Monday) of the answers: coarse enough that time cannot single a person out.
    time_bucket: Mapped[date] = mapped_column(Date)
    completed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    __table_args__ = (
        Index("ix_survey_answer_sets_run_id", "run_id"),
        Index("ix_survey_answer_sets_resident_id", "resident_id"),
    )


class SurveyAnswer(Base):
    """The answer to one question; saved as soon as it is given."""

    __tablename__ = "survey_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    answer_set_id: Mapped[int] = mapped_column(
        ForeignKey("survey_answer_sets.id", ondelete="CASCADE")
    )
    question_key: Mapped[str] = mapped_column(String(64))
    choices: Mapped[list[str] | None] = mapped_column(JSON)  # single and multiple choice, yes/no
    number: Mapped[int | None] = mapped_column(Integer)  # 1-5 scales
    free_text: Mapped[str | None] = mapped_column(Text)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    __table_args__ = (
        Index("uq_survey_answers_set_question", "answer_set_id", "question_key", unique=True),
    )


class ConversationState(Base):
    """Where a person is in a multi-step conversation, kept across restarts."""

    __tablename__ = "conversation_states"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class RelayedMessage(Base):
    """A resident's message relayed to the facilitators' channel, so replies can go back."""

    __tablename__ = "relayed_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    # Telegram message ids are per chat: a card is found by both.
    chat_id: Mapped[int] = mapped_column(BigInteger)
    channel_message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("uq_relayed_messages_chat_message", "chat_id", "channel_message_id", unique=True),
        Index("ix_relayed_messages_resident_created", "resident_id", "created_at"),
    )


class PendingStaffMenu(Base):
    """A staff member whose command menu Telegram refused (they had not opened the bot yet):
    set on their next update. In the database, so a restart or another instance knows."""

    __tablename__ = "staff_menus_pending"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    since: Mapped[datetime]


class RoleChange(Base):
    """Every grant and revocation of a staff role, with who did it (audit trail)."""

    __tablename__ = "role_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, index=True)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(8))
    # None when the change comes from the STAFF setting.
    changed_by: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(f"role IN ({_in(StaffRole)})", name="role_known"),
        CheckConstraint("action IN ('grant', 'revoke')", name="action_known"),
    )


class Broadcast(Base):
    """An announcement by a mediator or coordinator to a segment of residents."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    message_text: Mapped[str] = mapped_column(Text)
    photo_file_id: Mapped[str | None] = mapped_column(String(256))
    # The audience as chosen: {"kind": "all" | "territory" | "registrants" | "waitlist" |
    # "need" | "language", plus its parameter}.
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(
        String(16), default=BroadcastStatus.DRAFT, server_default=BroadcastStatus.DRAFT
    )
    recipients: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The sender's live progress message, edited as the broadcast goes.
    progress_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(BroadcastStatus)})", name="status_known"),
        CheckConstraint("recipients >= 0", name="recipients_non_negative"),
    )
