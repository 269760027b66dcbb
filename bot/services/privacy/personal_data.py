"""Privacy rights (RGPD): access (/mydata), erasure (/forget), withdrawal of consent, and the
operator's texts of the privacy notice.

Erasure keeps statistics true without keeping the person: future places are cancelled exactly
as a cancellation would (the seat goes to the first person waiting), everything personal is
deleted, and the resident row becomes an anonymous tombstone (no Telegram id, name, language,
phone or dates of activity) to which past registrations and attendance stay attached, so that
they are still counted. The person can /start again later as a new resident.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.services.registration import LIVE, RegistrationService
from bot.services.residents import NOTICE_VERSION
from bot.settings import SUPPORTED_LANGUAGES, ConfigurationError
from storage.db import Database
from storage.models import (
    ConsentEvent,
    ConversationState,
    OutboxMessage,
    Registration,
    RegistrationStatus,
    RelayedMessage,
    Resident,
    StaffMember,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyParticipation,
    SurveyRun,
    Venue,
    Workshop,
)
from storage.results import affected_rows

# Parts of the notice an operator may rewrite in PRIVACY_NOTICE_FILE, per language. The
# retention periods are not among them: they are said from the settings, so they stay true.
NOTICE_PARTS = ("controller", "purpose", "legal_basis", "data", "recipients", "rights", "dpo")
NOTICE_PART_MAX = 1000


def load_privacy_notice(path: Path | None) -> dict[str, dict[str, str]]:
    """The operator's texts ({language: {part: HTML-escaped text}}) from PRIVACY_NOTICE_FILE.

    A bad file raises ConfigurationError in one line naming the file and the key.
    """
    if path is None:
        return {}

    def bad(key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"PRIVACY_NOTICE_FILE is invalid ({path.name}: {key}: {problem}); expected a YAML "
            f"mapping of languages ({', '.join(SUPPORTED_LANGUAGES)}) to texts for "
            f"{', '.join(NOTICE_PARTS)}"
        )

    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise bad("file", f"cannot be read: {type(exc).__name__}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise bad(where, "not valid YAML") from None
    if not isinstance(tree, dict) or not tree:
        raise bad("top", "expected a mapping of languages")
    texts: dict[str, dict[str, str]] = {}
    for language, parts in tree.items():
        if language not in SUPPORTED_LANGUAGES:
            raise bad(str(language), "unknown language")
        if not isinstance(parts, dict) or not parts:
            raise bad(str(language), "expected a mapping of notice parts")
        for part, text in parts.items():
            key = f"{language}.{part}"
            if part not in NOTICE_PARTS:
                raise bad(key, "unknown part")
            if not isinstance(text, str) or not text.strip():
                raise bad(key, "expected a text")
            if len(text) > NOTICE_PART_MAX:
                raise bad(key, f"longer than {NOTICE_PART_MAX} characters")
            # Operators write plain text: it is escaped, never read as HTML.
            texts.setdefault(language, {})[part] = html.escape(text.strip(), quote=False)
    return texts


@dataclass(frozen=True)
class PrivacyStatus:
    """What /privacy may offer: nothing is held before consent."""

    known: bool  # a resident row exists (so /mydata and /forget have something to act on)
    consented: bool
    staff: bool = False  # holds a role: their Telegram id stays in the team's records


@dataclass(frozen=True)
class ErasureReport:
    cancelled_places: int  # future seats and waitlist places given up
    answer_sets: int  # non-anonymous survey answers deleted (one per survey)
    kept_registrations: int  # past registrations kept, anonymous, for the statistics
    kept_attendances: int
    staff: bool = False  # held a role: roles and the team's history keep their Telegram id


async def erase_resident(
    session: AsyncSession,
    registrations: RegistrationService,
    resident_id: int,
    now: datetime,
    *,
    condition: Any = None,
) -> ErasureReport | None:
    """Erase one resident in the caller's transaction (one transaction for everything).

    The tombstone is written first by a conditional UPDATE (`erased_at IS NULL`, plus
    `condition` when given), which also claims the person: a second instance, or a double
    tap, erases nothing twice. None when the claim failed.
    """
    resident = (
        await session.execute(
            select(Resident.telegram_id).where(Resident.id == resident_id).with_for_update()
        )
    ).one_or_none()
    if resident is None:
        return None
    telegram_id = resident.telegram_id
    claimed = await affected_rows(
        session,
        update(Resident)
        .where(
            Resident.id == resident_id,
            Resident.erased_at.is_(None),
            *([condition] if condition is not None else []),
        )
        .values(
            telegram_id=None,
            first_name=None,
            language=None,
            phone=None,
            claim_code=None,
            enrolled_by=None,
            last_seen_at=None,
            consented_at=None,
            retention_notice_at=None,
            is_active=False,
            wants_announcements=False,
            erased_at=now,
        )
        .execution_options(synchronize_session=False),
    )
    if claimed != 1:
        return None
    # Future places are given up as by a cancellation: seat freed, first person waiting
    # promoted (and told), channel notified without a name.
    places = (
        await session.execute(
            select(Registration.id, Registration.status, Registration.workshop_id, Workshop.status)
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .where(
                Registration.resident_id == resident_id,
                Registration.status.in_(LIVE),
                Workshop.starts_at > now,
            )
            .order_by(Registration.id)
        )
    ).all()
    for place in places:
        await registrations.cancel_place(session, place[0], place[1], place[2], place[3], now)
    answer_sets = await affected_rows(
        session, delete(SurveyAnswerSet).where(SurveyAnswerSet.resident_id == resident_id)
    )
    await session.execute(
        delete(SurveyParticipation).where(SurveyParticipation.resident_id == resident_id)
    )
    if telegram_id is not None:
        # Conversations in progress, and anonymous answers still waiting in the person's
        # buffer (they were never anonymous yet).
        await session.execute(
            delete(ConversationState).where(ConversationState.user_id == telegram_id)
        )
    await session.execute(delete(RelayedMessage).where(RelayedMessage.resident_id == resident_id))
    # Every message to the person, sent or not: payloads hold mediators' replies. A
    # broadcast's figures lose the person, which is what erasure means.
    await session.execute(delete(OutboxMessage).where(OutboxMessage.resident_id == resident_id))
    await session.execute(delete(ConsentEvent).where(ConsentEvent.resident_id == resident_id))
    kept = (
        await session.execute(
            select(func.count(), func.count(Registration.attended_at))
            .join(Workshop, Workshop.id == Registration.workshop_id)
            .where(Registration.resident_id == resident_id, Workshop.starts_at <= now)
        )
    ).one()
    staff = telegram_id is not None and await _holds_a_role(session, telegram_id)
    return ErasureReport(
        cancelled_places=len(places),
        answer_sets=answer_sets,
        kept_registrations=int(kept[0]),
        kept_attendances=int(kept[1]),
        staff=staff,
    )


async def _holds_a_role(session: AsyncSession, telegram_id: int) -> bool:
    role = await session.scalar(
        select(StaffMember.role).where(StaffMember.telegram_id == telegram_id).limit(1)
    )
    return role is not None


class PrivacyService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        registrations: RegistrationService,
        tz: ZoneInfo,
        notice_texts: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._registrations = registrations
        self._tz = tz
        # The operator's texts of the notice (PRIVACY_NOTICE_FILE), by language and part.
        self.notice_texts = notice_texts or {}

    async def status(self, telegram_id: int) -> PrivacyStatus:
        async with self._db.read() as session:
            consented_at = await session.execute(
                select(Resident.consented_at).where(Resident.telegram_id == telegram_id)
            )
            row = consented_at.one_or_none()
            staff = await _holds_a_role(session, telegram_id)
        return PrivacyStatus(
            known=row is not None, consented=row is not None and row[0] is not None, staff=staff
        )

    async def withdraw_consent(self, telegram_id: int) -> bool:
        """Consent withdrawn: no message of any kind is sent any more (the outbox and every
        audience require consent). False when there was no consent to withdraw.

        Confirmed seats are kept (the person may still come); waitlist places are given up,
        as by a cancellation, since a seat given later could not be announced to them.
        """
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await session.scalar(
                update(Resident)
                .where(Resident.telegram_id == telegram_id, Resident.consented_at.is_not(None))
                .values(consented_at=None, last_seen_at=now, retention_notice_at=None)
                .returning(Resident.id)
            )
            if resident_id is None:
                return False
            session.add(
                ConsentEvent(
                    resident_id=resident_id, kind="withdrawn", notice_version=NOTICE_VERSION, at=now
                )
            )
            waiting = (
                await session.execute(
                    select(Registration.id, Registration.workshop_id, Workshop.status)
                    .join(Workshop, Workshop.id == Registration.workshop_id)
                    .where(
                        Registration.resident_id == resident_id,
                        Registration.status == RegistrationStatus.WAITLISTED,
                        Workshop.starts_at > now,
                    )
                    .order_by(Registration.id)
                )
            ).all()
            for place in waiting:
                await self._registrations.cancel_place(
                    session, place[0], RegistrationStatus.WAITLISTED, place[1], place[2], now
                )
            return True

    async def erase(self, telegram_id: int) -> ErasureReport | None:
        """/forget: erase the person in one transaction; None when nothing is held."""
        now = self._clock.now()
        async with self._db.write() as session:
            resident_id = await session.scalar(
                select(Resident.id).where(Resident.telegram_id == telegram_id)
            )
            if resident_id is None:
                return None
            return await erase_resident(session, self._registrations, resident_id, now)

    async def export(self, telegram_id: int) -> dict[str, Any] | None:
        """Everything held about the person, as a JSON-ready document; None if nothing is."""
        async with self._db.read() as session:
            resident = await session.scalar(
                select(Resident).where(Resident.telegram_id == telegram_id)
            )
            if resident is None:
                return None
            rid = resident.id
            registrations = await session.execute(
                select(
                    Workshop.title,
                    Workshop.starts_at,
                    Workshop.ends_at,
                    Venue.name,
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
                .join(Venue, Venue.id == Workshop.venue_id)
                .where(Registration.resident_id == rid)
                .order_by(Workshop.starts_at, Registration.id)
            )
            answers = await session.execute(
                select(
                    SurveyAnswerSet.id,
                    SurveyRun.survey_key,
                    SurveyAnswerSet.time_bucket,
                    SurveyAnswerSet.completed,
                    SurveyAnswer.question_key,
                    SurveyAnswer.choices,
                    SurveyAnswer.number,
                    SurveyAnswer.free_text,
                    SurveyAnswer.skipped,
                )
                .join(SurveyRun, SurveyRun.id == SurveyAnswerSet.run_id)
                .outerjoin(SurveyAnswer, SurveyAnswer.answer_set_id == SurveyAnswerSet.id)
                .where(SurveyAnswerSet.resident_id == rid)
                .order_by(SurveyAnswerSet.id, SurveyAnswer.id)
            )
            participations = await session.execute(
                select(
                    SurveyRun.survey_key,
                    SurveyParticipation.status,
                    SurveyParticipation.invited_at,
                    SurveyParticipation.completed_at,
                )
                .join(SurveyRun, SurveyRun.id == SurveyParticipation.run_id)
                .where(SurveyParticipation.resident_id == rid)
                .order_by(SurveyParticipation.id)
            )
            consents = await session.execute(
                select(ConsentEvent.kind, ConsentEvent.notice_version, ConsentEvent.at)
                .where(ConsentEvent.resident_id == rid)
                .order_by(ConsentEvent.at, ConsentEvent.id)
            )
            relayed = await session.scalar(
                select(func.count()).where(RelayedMessage.resident_id == rid)
            )
            conversations = await session.execute(
                select(ConversationState.conversation, ConversationState.updated_at)
                .where(ConversationState.user_id == telegram_id)
                .order_by(ConversationState.conversation)
            )
            roles = list(
                await session.scalars(
                    select(StaffMember.role)
                    .where(StaffMember.telegram_id == telegram_id)
                    .order_by(StaffMember.role)
                )
            )
            language = resident.language or "fr"
            answer_sets: dict[int, dict[str, Any]] = {}
            for a in answers:
                entry = answer_sets.setdefault(
                    a.id,
                    {
                        "survey": a.survey_key,
                        "week": a.time_bucket.isoformat(),
                        "completed": a.completed,
                        "answers": [],
                    },
                )
                if a.question_key is not None:
                    entry["answers"].append(
                        {
                            "question": a.question_key,
                            "choices": a.choices,
                            "number": a.number,
                            "text": a.free_text,
                            "skipped": a.skipped,
                        }
                    )
            document: dict[str, Any] = {
                "generated_at": self._iso(self._clock.now()),
                "profile": {
                    "telegram_id": resident.telegram_id,
                    "first_name": resident.first_name,
                    "language": resident.language,
                    "phone": resident.phone,
                    "enrolled_at_a_desk": resident.enrolled_by is not None,
                    "created_at": self._iso(resident.created_at),
                    "last_seen_at": self._iso(resident.last_seen_at),
                    "consented_at": self._iso(resident.consented_at),
                    "reachable": resident.is_active,
                    "wants_announcements": resident.wants_announcements,
                    "retention_notice_at": self._iso(resident.retention_notice_at),
                },
                "registrations": [
                    {
                        "workshop": r.title.get(language) or r.title.get("fr"),
                        "starts_at": self._iso(r.starts_at),
                        "ends_at": self._iso(r.ends_at),
                        "venue": r.name,
                        "status": r.status,
                        "registered_at": self._iso(r.created_at),
                        "confirmed_at": self._iso(r.confirmed_at),
                        "cancelled_at": self._iso(r.cancelled_at),
                        "promoted_from_waitlist_at": self._iso(r.promoted_at),
                        "said_coming_at": self._iso(r.coming_confirmed_at),
                        "attended": r.attended_at is not None,
                        "attended_at": self._iso(r.attended_at),
                        "attendance_recorded_by": r.attendance_source,
                    }
                    for r in registrations
                ],
                "survey_answers": list(answer_sets.values()),
                "survey_participations": [
                    {
                        "survey": p.survey_key,
                        "status": p.status,
                        "invited_at": self._iso(p.invited_at),
                        "completed_at": self._iso(p.completed_at),
                    }
                    for p in participations
                ],
                "consent_history": [
                    {"event": c.kind, "notice_version": c.notice_version, "at": self._iso(c.at)}
                    for c in consents
                ],
                "messages_to_a_mediator": int(relayed or 0),
                "conversations_in_progress": [
                    {"conversation": c.conversation, "updated_at": self._iso(c.updated_at)}
                    for c in conversations
                ],
            }
            if roles:
                document["staff_roles"] = roles
            return document

    def _iso(self, moment: datetime | None) -> str | None:
        return moment.astimezone(self._tz).isoformat() if moment is not None else None
