"""Surveys end to end: the real bot over HTTP against the Bot API emulator, the real database.

The facilitators' channel is an emulator group with a negative id (ADMIN_CHAT_ID). Scheduled
work is triggered by calling the sweep with the manual clock; delivery runs on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedGroup, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select, update

from bot.clock import ManualClock
from bot.services.surveys.cards import RESPONSE_CARD
from bot.settings import Settings
from bot.text.split import TELEGRAM_TEXT_LIMIT, telegram_length
from bot.text.user_text import isolated
from storage.db import Database
from storage.models import OutboxMessage, Resident, SurveyAnswer, SurveyAnswerSet
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_place, seed_workshop
from tests.survey_helpers import (
    ADMIN_CHAT,
    registered,
    resident,
    survey_service,
    workshop_end,
)

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    database_url: str
    clock: ManualClock
    channel: SimulatedGroup

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"admin_chat_id": ADMIN_CHAT, "outbox_sweep_seconds": 0.2}
        values.update(overrides)
        return settings_for(self.emulator, self.database_url, **values)


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        channel = client.group(ADMIN_CHAT, "Facilitateurs")
        await channel.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
        yield World(emulator, client, db, database_url, new_clock(), channel)


async def next_edit(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def invitation_ids(db: Database) -> dict[int, int]:
    """Participation ids of the queued invitations, by Telegram id."""
    async with db.read() as session:
        rows = await session.execute(
            select(Resident.telegram_id, OutboxMessage.payload)
            .join(Resident, Resident.id == OutboxMessage.resident_id)
            .where(OutboxMessage.kind == "survey_invitation")
        )
        return {telegram_id: payload["participation_id"] for telegram_id, payload in rows}


async def test_the_poll_in_french_across_a_restart_then_card_and_digest(world: World) -> None:
    workshop = await seed_workshop(
        world.db, world.clock, starts_in=timedelta(hours=1), title="Mon smartphone au quotidien"
    )
    await registered(world.db, world.clock, 1001, workshop, name="Alice")
    await registered(world.db, world.clock, 1002, workshop, name="Bruno")
    alice = world.client.user(1001, "Alice", "fr")
    await alice.register()
    world.clock.set(await workshop_end(world.db, workshop) + timedelta(hours=2))
    settings = world.settings()

    async with bot_running(settings, world.clock) as application:
        await services_of(application).surveys.sweep()
        invitation = await alice.wait_message(contains="Merci d'être venu(e)", timeout=10)
        assert "Mon smartphone au quotidien" in invitation.text and "anonymes" in invitation.text
        assert invitation.button_texts() == ["▶️ Répondre", "Pas maintenant"]
        await alice.press("▶️ Répondre")
        first = await next_edit(alice)
        assert "Avez-vous aimé l'atelier ?" in first.text and "1 = pas du tout" in first.text
        assert first.button_texts() == ["😞 1", "🙁 2", "😐 3", "🙂 4", "😄 5"]
        await alice.press("😄 5")
        assert "utile" in (await next_edit(alice)).text
        await alice.press("🙂 4")
        choices = await next_edit(alice)
        assert "essayer de faire seul(e)" in choices.text
        assert choices.button_texts()[0] == "☐ Refaire ce qu'on a vu ensemble"
        assert choices.button_texts()[-2:] == ["✅ C'est fait", "⏭ Passer cette question"]
        await alice.press("☐ Refaire ce qu'on a vu ensemble")
        await alice.press("☐ ✏️ Autre chose")
        await next_edit(alice)
        ticked = await next_edit(alice)
        assert "☑ Refaire ce qu'on a vu ensemble" in ticked.button_texts()
        assert "☑ ✏️ Autre chose" in ticked.button_texts()

    # The bot is down; Alice taps "Done" on the question she still sees, then it comes back.
    await alice.press("✅ C'est fait")
    async with bot_running(settings, world.clock) as application:
        written = await next_edit(alice)
        assert "Qu'allez-vous essayer d'autre ?" in written.text and written.buttons == []
        await alice.send("x" * 301)
        again = await alice.wait_message(contains="un peu long")
        assert "301 caractères" in again.text and "essayer d'autre" in again.text
        await alice.send("Envoyer des photos à ma fille")
        autonomy = await alice.wait_message(contains="capable de le faire seul(e)")
        assert "« Mon smartphone au quotidien »" in autonomy.text
        await alice.press("🙂 4")
        comment = await next_edit(alice)
        assert "Un dernier mot" in comment.text
        await alice.press("⏭ Passer cette question")
        thanks = await next_edit(alice)
        assert "Merci beaucoup" in thanks.text and thanks.buttons == []

        # An old button now changes nothing, and says so politely.
        old = first.buttons[0][0].callback_data
        assert old is not None
        answer = await alice.callback_answer(
            await alice.press_data(old, message_id=thanks.message_id)
        )
        assert answer.show_alert and "déjà répondu" in (answer.text or "")
        forged = old.replace("|0|", "|1|", 1)  # another question, same signature
        answer = await alice.callback_answer(
            await alice.press_data(forged, message_id=thanks.message_id)
        )
        assert answer.show_alert and "plus valable" in (answer.text or "")

        # Anonymous answers wait to be moved with other people's (fewer than
        # min_group_size finished): the card comes when the poll closes, before the digest.
        await services_of(application).surveys.sweep()
        async with world.db.read() as session:
            assert (
                await session.scalar(
                    select(OutboxMessage.id).where(OutboxMessage.kind == RESPONSE_CARD)
                )
                is None
            )
        world.clock.advance(timedelta(hours=48))
        await services_of(application).surveys.sweep()
        card = await world.channel.wait_message(contains="Nouvelle réponse", timeout=10)
        assert "Réponse anonyme" in card.text and "Alice" not in card.text
        assert "• Satisfaction : 😄 5" in card.text
        assert (
            f"• Autre chose à essayer : « {isolated('Envoyer des photos à ma fille')} »"
            in card.text
        )
        assert "• Commentaire : passée" in card.text
        digest = await world.channel.wait_message(contains="Bilan", timeout=10)
    assert "Atelier « Mon smartphone au quotidien »" in digest.text
    assert "Ont répondu : 1 sur 2" in digest.text
    assert "Moyenne : 5,0 / 5" in digest.text
    assert "😄 5 ▇▇▇▇▇▇▇▇▇▇ 1" in digest.text and "😞 1 ▁▁▁▁▁▁▁▁▁▁ 0" in digest.text
    assert "▇▇▇▇▇▇▇▇▇▇ 1 · Refaire ce qu'on a vu ensemble" in digest.text
    assert f"💬 « {isolated('Envoyer des photos à ma fille')} »" in digest.text


async def test_the_needs_survey_in_english_across_a_restart(world: World) -> None:
    await seed_place(world.db, area="Montreynaud")
    await resident(world.db, world.clock, 2001, "Bob", "en")
    bob = world.client.user(2001, "Bob", "en")
    settings = world.settings()
    async with bot_running(settings, world.clock):
        await bob.send("/needs")
        first = await bob.wait_message(contains="What is hard for you?")
        assert "5 short questions" in first.text
        assert "☐ 📧 E-mail" in first.button_texts()
        await bob.press("☐ 📧 E-mail")
        await next_edit(bob)
        await bob.press("✅ Done")
        help_kind = await next_edit(bob)
        assert "What kind of help" in help_kind.text
        # A button of the question already answered: a polite alert, nothing changes.
        old = first.buttons[0][0].callback_data
        assert old is not None
        stale = await bob.callback_answer(await bob.press_data(old, message_id=first.message_id))
        assert stale.show_alert and "already answered this question" in (stale.text or "")
    async with bot_running(settings, world.clock):
        await bob.send("/needs")  # resumes where he stopped
        resumed = await bob.wait_message(contains="What kind of help")
        await bob.press("✅ Done", message_id=resumed.message_id)
        refused = await bob.wait_event(kind="callback_answer")
        assert refused.show_alert and "at least one answer" in (refused.text or "")
        await bob.press("☐ 📞 Remotely (phone, video)", message_id=resumed.message_id)
        await next_edit(bob)
        await bob.press("✅ Done", message_id=resumed.message_id)
        assert "Which days" in (await next_edit(bob)).text
        await bob.press("☐ Saturday", message_id=resumed.message_id)
        await next_edit(bob)
        await bob.press("✅ Done", message_id=resumed.message_id)
        assert "time of day" in (await next_edit(bob)).text
        await bob.press("☐ 🌅 In the morning", message_id=resumed.message_id)
        await next_edit(bob)
        await bob.press("✅ Done", message_id=resumed.message_id)
        area = await next_edit(bob)
        assert area.button_texts() == [
            "Montreynaud",
            "🏘 Another neighbourhood",
            "⏭ Skip this question",
        ]
        await bob.press("Montreynaud", message_id=resumed.message_id)
        thanks = await next_edit(bob)
        assert "Thank you 🙏" in thanks.text
        card = await world.channel.wait_message(contains="Nouvelle réponse", timeout=10)
        assert f"👤 {isolated('Bob')}" in card.text and "• Quartier : Montreynaud" in card.text
        assert "• Difficile : 📧 Les e-mails" in card.text
        await bob.send("/needs")
        assert "already told us" in (await bob.wait_message()).text
    async with world.db.read() as session:
        saved = dict(
            (
                await session.execute(
                    select(SurveyAnswer.question_key, SurveyAnswer.choices)
                    .join(SurveyAnswerSet)
                    .where(SurveyAnswerSet.resident_id.is_not(None))
                )
            ).all()
        )
    assert saved == {
        "hard_tasks": ["email"],
        "help_kind": ["a_distance"],
        "days": ["saturday"],
        "times": ["morning"],
        "neighbourhood": saved["neighbourhood"],
    }
    assert saved["neighbourhood"][0].startswith("area-")  # the territory's key


async def test_after_signing_up_the_before_question_then_the_needs_offer(world: World) -> None:
    await seed_workshop(world.db, world.clock, title="Atelier e-mail")
    carla = world.client.user(3001, "Carla", "fr")
    async with bot_running(world.settings(), world.clock):
        await carla.send("/start")
        await carla.wait_message()
        await carla.press("✅ Oui, je suis d'accord")
        await next_edit(carla)
        await carla.press("Français")
        await next_edit(carla)
        await carla.press("📅 Voir les ateliers")
        await next_edit(carla)
        await carla.press("Atelier e-mail")
        await next_edit(carla)
        await carla.press("✅ Je m'inscris")
        await carla.wait_message(contains="vous êtes inscrit(e)")
        before = await carla.wait_message(contains="capable de le faire seul(e)")
        assert "Une petite question avant l'atelier" in before.text
        assert "« Atelier e-mail »" in before.text
        await carla.press("😐 3")
        thanks = await next_edit(carla)
        assert "Merci, c'est noté" in thanks.text
        assert "ce qui est difficile pour vous" in thanks.text
        assert thanks.button_texts() == ["▶️ Répondre", "Pas maintenant"]
        await carla.press("Pas maintenant")
        later = await next_edit(carla)
        assert "pas de souci" in later.text and later.button_texts() == ["▶️ Répondre"]
        await carla.press("▶️ Répondre")
        assert "Qu'est-ce qui est difficile pour vous ?" in (await next_edit(carla)).text
    async with world.db.read() as session:
        before_answer = (
            await session.execute(
                select(SurveyAnswerSet.resident_id, SurveyAnswer.number)
                .select_from(SurveyAnswer)
                .join(SurveyAnswerSet)
            )
        ).one()
    assert before_answer.number == 3 and before_answer.resident_id is not None


async def test_invitations_to_people_who_left_are_dropped(world: World) -> None:
    workshop = await seed_workshop(world.db, world.clock, starts_in=timedelta(hours=1))
    for telegram_id in (4002, 4003):
        await registered(world.db, world.clock, telegram_id, workshop)
    async with world.db.write() as session:  # one withdrew consent, one blocked the bot
        await session.execute(
            update(Resident).where(Resident.telegram_id == 4002).values(consented_at=None)
        )
        await session.execute(
            update(Resident).where(Resident.telegram_id == 4003).values(is_active=False)
        )
    world.clock.set(await workshop_end(world.db, workshop) + timedelta(hours=2))
    surveys = survey_service(world.db, world.clock)
    await surveys.sweep()
    # Dina was marked present later: her invitation is queued, and delivered, after theirs.
    await registered(world.db, world.clock, 4001, workshop, name="Dina")
    await surveys.sweep()
    dina = world.client.user(4001, "Dina", "fr")
    await dina.register()
    async with bot_running(world.settings(), world.clock):
        await dina.wait_message(contains="Merci d'être venu(e)", timeout=10)
    async with world.db.read() as session:
        statuses = dict(
            (
                await session.execute(
                    select(Resident.telegram_id, OutboxMessage.status).join(
                        Resident, Resident.id == OutboxMessage.resident_id
                    )
                )
            ).all()
        )
    # Without consent, nobody is invited at all (issue 5); a blocked person's row is dropped.
    assert statuses == {4001: "sent", 4003: "dropped"}


async def answered_poll(world: World, workshop: int, people: range, comment_size: int) -> None:
    """Everyone in `people` attended and answered the poll, with a long distinct comment."""
    surveys = survey_service(world.db, world.clock, channel_notices="none")
    for telegram_id in people:
        await registered(world.db, world.clock, telegram_id, workshop)
    world.clock.set(await workshop_end(world.db, workshop) + timedelta(hours=2))
    await surveys.sweep()
    ids = await invitation_ids(world.db)
    for telegram_id in people:
        pid = ids[telegram_id]
        await surveys.start(telegram_id, pid)
        await surveys.answer(telegram_id, pid, "satisfaction", 1 + telegram_id % 5)
        await surveys.answer(telegram_id, pid, "usefulness", 4)
        await surveys.answer(telegram_id, pid, "try_alone", ["practise"])
        await surveys.answer(telegram_id, pid, "autonomy", 3)
        text = f"Avis {telegram_id} : " + "très bien " * comment_size
        await surveys.answer(telegram_id, pid, "comment", text.strip())


async def test_long_digests_are_split_under_the_limit_or_sent_as_a_file(world: World) -> None:
    long_run = await seed_workshop(
        world.db, world.clock, title="Atelier long", starts_in=timedelta(hours=1)
    )
    await answered_poll(world, long_run, range(1, 13), 45)  # about 6 000 characters
    very_long = await seed_workshop(world.db, world.clock, title="Atelier très long")
    await answered_poll(world, very_long, range(100, 130), 45)  # about 14 000 characters
    world.clock.advance(timedelta(hours=48))
    await survey_service(world.db, world.clock).sweep()

    comment = "très bien " * 44 + "très bien\u2069 »"  # free text ends its isolate
    async with bot_running(world.settings(), world.clock):
        parts: list[ChatMessage] = []
        while not (
            any(p.kind == "document" for p in parts)
            and all(f"Avis {n} : {comment}" in _texts(parts) for n in range(1, 13))
        ):
            parts.append(await world.channel.wait_message(timeout=10))
    texts = [p.text or "" for p in parts if p.kind == "text"]
    assert all(telegram_length(text) <= TELEGRAM_TEXT_LIMIT for text in texts)
    long_digest = [t for t in texts if "Avis" in t or "Atelier « Atelier long »" in t]
    assert len(long_digest) >= 2  # split in several messages...
    assert "Ont répondu : 12 sur 12" in long_digest[0]
    for n in range(1, 13):  # ...each comment whole in one of them, none cut
        assert sum(f"Avis {n} : {comment}" in t for t in long_digest) == 1

    (document,) = [p for p in parts if p.kind == "document"]
    (summary,) = [t for t in texts if "fichier" in t]
    assert "Atelier « Atelier très long »" in summary and "Ont répondu : 30 sur 30" in summary
    content = (await world.channel.download(document)).decode()
    assert "<b>" not in content and "Ont répondu : 30 sur 30" in content
    for n in range(100, 130):
        assert f"Avis {n} : {comment}" in content


def _texts(messages: list[ChatMessage]) -> str:
    return "\n".join(m.text or "" for m in messages if m.kind == "text")
