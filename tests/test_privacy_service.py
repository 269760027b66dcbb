"""Privacy services on both backends: access, erasure, withdrawal of consent, retention."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from bot.clock import ManualClock
from bot.services.broadcasts.drafts import BroadcastService
from bot.services.channel import ChannelNotices
from bot.services.outbox import Outbox
from bot.services.privacy.personal_data import PrivacyService, load_privacy_notice
from bot.services.privacy.retention import (
    RETENTION_NOTICE,
    RETENTION_REPORT,
    RetentionService,
    months_before,
)
from bot.services.registration import PROMOTION_NOTICE, RegistrationService
from bot.services.residents import ResidentService
from bot.services.stats.figures import StatsService
from bot.services.stats.scope import Period, StatsScope
from bot.settings import CHANNEL_NOTICE_KINDS, ConfigurationError
from storage.db import Database
from storage.models import (
    ConsentEvent,
    ConversationState,
    OutboxMessage,
    Registration,
    RelayedMessage,
    Resident,
    StaffMember,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
    Workshop,
)
from tests.factories import new_clock, seed_workshop
from tests.reminder_helpers import paris, reminder_service, take_seat, workshop_at
from tests.survey_helpers import ADMIN_CHAT, registered, survey_service, workshop_end

pytestmark = pytest.mark.storage

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


def registrations(db: Database, clock: ManualClock) -> RegistrationService:
    return RegistrationService(
        db, clock, channel=ChannelNotices(db, ADMIN_CHAT, CHANNEL_NOTICE_KINDS)
    )


def privacy(db: Database, clock: ManualClock) -> PrivacyService:
    return PrivacyService(db, clock, registrations(db, clock), PARIS)


def retention(db: Database, clock: ManualClock) -> RetentionService:
    return RetentionService(
        db,
        clock,
        registrations(db, clock),
        retention_months=12,
        free_text_retention_months=6,
        admin_chat_id=ADMIN_CHAT,
        tz=PARIS,
    )


async def consent(db: Database, clock: ManualClock, telegram_id: int, name: str = "Alice") -> int:
    return (await ResidentService(db, clock).give_consent(telegram_id, name, "fr")).id


async def answers(
    db: Database, resident_id: int | None, week: date, free_text: str, survey: str = "needs"
) -> int:
    """An answer set (anonymous when resident_id is None) with a choice and a free text."""
    async with db.write() as session:
        run_id = await session.scalar(select(SurveyRun.id).where(SurveyRun.survey_key == survey))
        if run_id is None:
            run = SurveyRun(survey_key=survey, opened_at=new_clock().now())
            session.add(run)
            await session.flush()
            run_id = run.id
        answer_set = SurveyAnswerSet(
            run_id=run_id, resident_id=resident_id, time_bucket=week, completed=True
        )
        session.add(answer_set)
        await session.flush()
        session.add_all(
            [
                SurveyAnswer(answer_set_id=answer_set.id, question_key="hard", choices=["email"]),
                SurveyAnswer(
                    answer_set_id=answer_set.id, question_key="other", free_text=free_text
                ),
            ]
        )
        return answer_set.id


async def count(db: Database, model: type, *where: object) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def outbox_rows(db: Database, kind: str) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )


async def test_mydata_holds_everything_about_the_person_and_nothing_of_others(db, clock):
    past = await seed_workshop(db, clock, starts_in=timedelta(days=-7), title="Atelier passé")
    coming = await seed_workshop(db, clock, starts_in=timedelta(days=2), title="Mon smartphone")
    alice = await registered(db, clock, 1001, past, name="Alice")
    await registered(db, clock, 1002, past, name="Bob")
    assert (await registrations(db, clock).register(1001, coming)).outcome == "confirmed"
    await answers(db, alice, date(2026, 11, 30), "Les impôts en ligne")
    await answers(db, None, date(2026, 11, 30), "anonyme")
    async with db.write() as session:
        session.add(StaffMember(telegram_id=1001, role="mediator", granted_at=clock.now()))
        session.add(
            RelayedMessage(
                resident_id=alice, chat_id=ADMIN_CHAT, channel_message_id=5, created_at=clock.now()
            )
        )
    service = privacy(db, clock)
    assert await service.withdraw_consent(1001)
    await consent(db, clock, 1001)

    document = await service.export(1001)

    assert document is not None
    assert document["profile"]["telegram_id"] == 1001
    assert document["profile"]["first_name"] == "Alice"
    assert document["profile"]["created_at"] == "2026-12-01T10:00:00+01:00"  # Paris time
    titles = [(r["workshop"], r["status"], r["attended"]) for r in document["registrations"]]
    assert titles == [("Atelier passé", "confirmed", True), ("Mon smartphone", "confirmed", False)]
    assert document["registrations"][1]["starts_at"] == "2026-12-03T10:00:00+01:00"
    [answer_set] = document["survey_answers"]
    assert answer_set["survey"] == "needs"
    assert {a["question"]: a["text"] or a["choices"] for a in answer_set["answers"]} == {
        "hard": ["email"],
        "other": "Les impôts en ligne",
    }
    assert [e["event"] for e in document["consent_history"]] == ["given", "withdrawn", "given"]
    assert document["messages_to_a_mediator"] == 1
    assert document["staff_roles"] == ["mediator"]
    assert "anonyme" not in str(document) and "Bob" not in str(document)
    assert await service.export(9999) is None


async def test_forget_frees_the_seat_promotes_the_waitlist_and_leaves_a_tombstone(db, clock):
    past = await seed_workshop(db, clock, starts_in=timedelta(days=-7))
    coming = await seed_workshop(db, clock, capacity=1, starts_in=timedelta(days=2))
    today = clock.now()
    clock.set(today - timedelta(days=8))  # people signed up for the past workshop in November
    alice = await registered(db, clock, 1001, past, name="Alice")
    for other in range(1002, 1006):
        await registered(db, clock, other, past, attended=other % 2 == 0)
    clock.set(today)
    booking = registrations(db, clock)
    assert (await booking.register(1001, coming)).outcome == "confirmed"
    assert (await booking.register(1002, coming)).outcome == "waitlisted"
    await answers(db, alice, date(2026, 11, 23), "personnel")
    anonymous = await answers(db, None, date(2026, 11, 23), "anonyme", survey="post_workshop")
    async with db.write() as session:
        session.add(
            ConversationState(
                user_id=1001, conversation="survey:9", state="q", data={}, updated_at=clock.now()
            )
        )
        session.add(
            OutboxMessage(
                resident_id=alice,
                kind="reminder",
                payload={},
                dedupe_key="reminder:test",
                not_before=clock.now(),
                created_at=clock.now(),
            )
        )
    stats = StatsService(db, clock, PARIS, 1)
    scope = StatsScope(Period(date(2026, 11, 1), date(2026, 11, 30)))

    async def figures() -> tuple:
        # "waitlist" is who waits now for a coming workshop: Bob no longer does.
        overview = await stats.overview(scope)
        return replace(overview.figures, waitlist=0), overview, await stats.by_workshop(scope)

    before = await figures()

    report = await privacy(db, clock).erase(1001)

    assert report is not None
    assert (report.cancelled_places, report.answer_sets) == (1, 1)
    assert (report.kept_registrations, report.kept_attendances) == (1, 1)
    async with db.read() as session:
        tombstone = await session.get(Resident, alice)
        assert tombstone is not None and tombstone.erased_at == clock.now()
        personal = (
            tombstone.telegram_id,
            tombstone.first_name,
            tombstone.language,
            tombstone.phone,
            tombstone.consented_at,
            tombstone.last_seen_at,
        )
        assert personal == (None,) * 6
        assert not tombstone.is_active and not tombstone.wants_announcements
        seats = await session.scalar(select(Workshop.seats_taken).where(Workshop.id == coming))
        bob = await session.scalar(
            select(Registration.status)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == 1002, Registration.workshop_id == coming)
        )
    assert (seats, bob) == (1, "confirmed")
    assert len(await outbox_rows(db, PROMOTION_NOTICE)) == 1
    [notice] = [
        r for r in await outbox_rows(db, "channel_notice") if "promoted_resident_id" in r.payload
    ]
    assert notice.payload["promoted_resident_id"] is not None
    assert await count(db, SurveyAnswerSet, SurveyAnswerSet.resident_id == alice) == 0
    assert await count(db, SurveyAnswer, SurveyAnswer.answer_set_id == anonymous) == 2
    assert await count(db, ConversationState, ConversationState.user_id == 1001) == 0
    assert await count(db, OutboxMessage, OutboxMessage.resident_id == alice) == 0
    assert await count(db, ConsentEvent, ConsentEvent.resident_id == alice) == 0
    assert await count(db, Registration, Registration.resident_id == alice) == 2  # kept
    # The past month's figures are what they were; the tombstone is nobody to write to.
    after = await figures()
    assert after[0] == before[0] and after[2][0] == before[2][0]
    assert before[2][0].group_id == past and before[2][0].figures.attended == 3
    assert after[1].new_residents == before[1].new_residents == 5
    assert await BroadcastService(db, clock).count({"kind": "all"}) == 4
    # Coming back later: a new resident, nothing tied to the old record.
    assert await consent(db, clock, 1001) != alice
    assert await privacy(db, clock).erase(9999) is None


async def test_withdrawal_stops_reminders(db, clock):
    coming = await workshop_at(db, clock, paris(2026, 12, 3, 14, 0))
    assert await take_seat(db, clock, 1001, coming) == "confirmed"
    assert await take_seat(db, clock, 1002, coming) == "confirmed"
    planner = reminder_service(db, clock)
    clock.set(paris(2026, 12, 2, 14, 0))  # the 24 h reminder
    assert await planner.plan_due_reminders() == 2
    assert await privacy(db, clock).withdraw_consent(1001)
    assert not await privacy(db, clock).withdraw_consent(1001)  # nothing left to withdraw

    outbox = Outbox(db, clock, "worker")
    claimed = await outbox.claim_due()
    reachable = {m.chat_id: m.resident_active for m in claimed}
    assert reachable == {1001: False, 1002: True}  # delivery drops the first one
    for message in claimed:
        assert await outbox.mark_sent(message.id)
    clock.set(paris(2026, 12, 3, 12, 0))  # the 2 h reminder: queued for Bob only
    assert await planner.plan_due_reminders() == 1
    assert [m.chat_id for m in await outbox.claim_due()] == [1002]
    async with db.read() as session:
        kinds = list(await session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)))
    assert kinds == ["given", "given", "withdrawn"]


async def test_withdrawal_stops_broadcasts_and_survey_invitations(db, clock):
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    await registered(db, clock, 1001, workshop)
    await registered(db, clock, 1002, workshop)
    broadcasts = BroadcastService(db, clock)
    assert await broadcasts.count({"kind": "all"}) == 2
    await privacy(db, clock).withdraw_consent(1001)
    assert await broadcasts.count({"kind": "all"}) == 1
    assert await broadcasts.count({"kind": "registrants", "id": workshop}) == 1
    clock.set(await workshop_end(db, workshop) + timedelta(hours=2))
    assert (await survey_service(db, clock).sweep()).invited == 1


async def test_retention_notice_then_erasure_a_week_later(db, database_url, clock):
    old = await seed_workshop(db, clock, starts_in=timedelta(days=-1))
    idle = await registered(db, clock, 1001, old, name="Idle")
    await registered(db, clock, 1002, old, name="Busy")
    later = await seed_workshop(db, clock, starts_in=timedelta(days=200))
    await registered(db, clock, 1003, later, attended=False)  # a place keeps the data
    await answers(db, idle, date(2026, 11, 23), "mes besoins")
    due = months_before(clock.now(), -12) - timedelta(days=7)  # 12 months after, minus 7 days
    clock.set(due + timedelta(minutes=1))
    await ResidentService(db, clock).seen(1002)

    other = Database(database_url)  # a second instance running the same job
    try:
        reports = await asyncio.gather(retention(db, clock).run(), retention(other, clock).run())
    finally:
        await other.dispose()
    assert sum(r.noticed for r in reports) == 1
    assert sum(r.erased for r in reports) == 0
    assert sum(r.free_texts for r in reports) == 1  # a year-old free text, meanwhile
    [notice] = await outbox_rows(db, RETENTION_NOTICE)
    assert notice.resident_id == idle
    assert (await retention(db, clock).run()).noticed == 0  # once only

    clock.advance(timedelta(days=7))
    report = await retention(db, clock).run()
    assert (report.erased, report.noticed) == (1, 0)
    async with db.read() as session:
        tombstone = await session.get(Resident, idle)
        assert tombstone is not None and tombstone.telegram_id is None
        assert tombstone.erased_at == clock.now()
        people = set(await session.scalars(select(Resident.telegram_id)))
    assert people == {None, 1002, 1003}
    assert await count(db, SurveyAnswerSet, SurveyAnswerSet.resident_id == idle) == 0
    channel = (await outbox_rows(db, RETENTION_REPORT))[-1]
    assert channel.chat_id == ADMIN_CHAT
    assert channel.payload == {
        "erased": 1,
        "free_texts": 0,
        "noticed": 0,
        "conversations": 0,
        "failed": 0,
    }
    assert len(await outbox_rows(db, RETENTION_REPORT)) == 2  # the free text, then Idle
    assert (await retention(db, clock).run()).erased == 0


async def test_coming_back_after_the_notice_cancels_the_erasure(db, clock):
    alice = await consent(db, clock, 1001)
    clock.set(months_before(clock.now(), -12) - timedelta(days=6))
    assert (await retention(db, clock).run()).noticed == 1
    clock.advance(timedelta(days=2))
    await ResidentService(db, clock).seen(1001)  # any interaction (the "Keep my data" button)
    assert not await retention(db, clock).notice_still_due(alice)
    clock.advance(timedelta(days=6))
    report = await retention(db, clock).run()
    assert (report.erased, report.noticed) == (0, 0)
    async with db.read() as session:
        resident = await session.scalar(select(Resident).where(Resident.telegram_id == 1001))
    assert resident is not None and resident.retention_notice_at is None


async def test_seen_writes_at_most_once_an_hour(db, clock):
    await consent(db, clock, 1001)
    residents = ResidentService(db, clock)
    clock.advance(timedelta(minutes=30))
    await residents.seen(1001)
    async with db.write() as session:  # would be overwritten by a write
        await session.execute(update(Resident).values(last_seen_at=clock.now() - timedelta(days=1)))
    await residents.seen(1001)
    async with db.read() as session:
        stale = await session.scalar(select(Resident.last_seen_at))
    assert stale == clock.now() - timedelta(days=1)  # cached: no second write this hour
    clock.advance(timedelta(hours=1))
    await residents.seen(1001)
    async with db.read() as session:
        assert await session.scalar(select(Resident.last_seen_at)) == clock.now()


async def test_free_text_is_blanked_after_its_retention_anonymous_or_not(db, clock):
    alice = await consent(db, clock, 1001)
    old_week, recent_week = date(2026, 5, 25), date(2026, 6, 8)  # 6 months before: 2026-06-01
    old_named = await answers(db, alice, old_week, "ancien")
    old_anonymous = await answers(db, None, old_week, "ancien anonyme", survey="post_workshop")
    recent = await answers(db, None, recent_week, "récent", survey="post_workshop")

    report = await retention(db, clock).run()

    assert (report.free_texts, report.erased) == (2, 0)
    async with db.read() as session:
        rows = await session.execute(
            select(SurveyAnswer.answer_set_id, SurveyAnswer.free_text, SurveyAnswer.choices)
        )
        by_set: dict[int, list] = {}
        for set_id, text, choices in rows:
            by_set.setdefault(set_id, []).append(text or choices)
    assert by_set[old_named] in ([["email"], None], [None, ["email"]])
    assert "ancien" not in str(by_set[old_named]) and "ancien" not in str(by_set[old_anonymous])
    assert "récent" in str(by_set[recent])
    assert ["email"] in by_set[old_anonymous]  # choices are kept
    [channel] = await outbox_rows(db, RETENTION_REPORT)
    assert channel.payload["free_texts"] == 2
    assert (await retention(db, clock).run()).free_texts == 0


def test_privacy_notice_file_overrides_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "notice.yaml"
    good.write_text('fr:\n  controller: "Mairie <test>"\n  dpo: "dpo@example.org"\n')
    assert load_privacy_notice(good) == {
        "fr": {"controller": "Mairie &lt;test&gt;", "dpo": "dpo@example.org"}
    }
    assert load_privacy_notice(None) == {}
    cases = {
        "fr:\n  controler: x\n": "notice.yaml: fr.controler: unknown part",
        "de:\n  controller: x\n": "notice.yaml: de: unknown language",
        "fr:\n  dpo: ''\n": "notice.yaml: fr.dpo: expected a text",
        "fr: [a\n": "notice.yaml: line",
        "- fr\n": "notice.yaml: top:",
    }
    for content, expected in cases.items():
        good.write_text(content)
        with pytest.raises(ConfigurationError) as error:
            load_privacy_notice(good)
        message = str(error.value)
        assert message.startswith("PRIVACY_NOTICE_FILE is invalid") and expected in message
        assert "\n" not in message
