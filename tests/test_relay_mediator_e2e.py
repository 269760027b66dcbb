"""Talk to a mediator, end to end: resident -> card in the admin chat -> facilitator's reply ->
resident, through the Bot API emulator, in French and Arabic, in a group and in a channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from emulator.client import ChatView, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.mediator_relay import REPLY_KIND
from bot.services.residents import ResidentService
from bot.settings import Settings
from bot.text.user_text import isolated
from storage.db import Database
from storage.models import SurveyAnswer
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock
from tests.relay_helpers import ADMIN_CHAT_ID, outbox_of_kind

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

ADMIN_CHANNEL_ID = -100777
CARD = "Message pour un médiateur"  # the cards are in the default language (French)


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    database_url: str
    clock: ManualClock

    def settings(self, admin_chat_id: int = ADMIN_CHAT_ID) -> Settings:
        return settings_for(
            self.emulator,
            self.database_url,
            admin_chat_id=admin_chat_id,
            outbox_sweep_seconds=0.2,
        )

    async def resident(self, telegram_id: int, name: str, language: str) -> SimulatedUser:
        await ResidentService(self.db, self.clock).give_consent(telegram_id, name, language)
        return self.client.user(telegram_id, name, language)


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        yield World(emulator, client, db, database_url, new_clock())


async def facilitators_group(world: World) -> tuple[ChatView, SimulatedUser]:
    group = world.client.group(ADMIN_CHAT_ID, "Facilitateurs")
    fatou = world.client.user(500, "Fatou", "fr")
    await group.send(fatou, "Bonjour l'équipe")  # the group exists, the bot is in it
    return group, fatou


async def open_prompt(user: SimulatedUser, button: str, prompt: str) -> None:
    await user.send("/help")
    await user.wait_message(contains="/privacy")
    await user.press(button)
    await user.wait_message(contains=prompt)


async def test_french_round_trip_in_a_group(world: World) -> None:
    group, fatou = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("Je n'arrive pas à ouvrir <ma boîte mail> & mes factures")
        card = await group.wait_message(contains=CARD)
        assert f"{isolated('Alice')} · Français" in card.text
        assert "Je n'arrive pas à ouvrir <ma boîte mail> & mes factures" in card.text
        assert "&lt;ma boîte mail&gt; &amp; mes factures" in card.html
        sent = await alice.wait_message(contains="Votre message est envoyé")
        assert "💬 Parler à un médiateur" in sent.button_texts()  # the menu, to go on

        reply_id = await group.send(
            fatou, "Bonjour Alice, venez mardi à 14h", reply_to=card.message_id
        )
        answer = await alice.wait_message(contains="Réponse d'un médiateur")
        assert answer.text.endswith("Bonjour Alice, venez mardi à 14h")
        assert answer.button_texts() == ["💬 Répondre au médiateur"]
        ack = await group.wait_message(contains=f"Envoyé à {isolated('Alice')}")
        assert ack.reply_to == reply_id
    rows = await outbox_of_kind(world.db, REPLY_KIND)
    assert [row.status for row in rows] == ["sent"]


async def test_arabic_round_trip_in_a_channel(world: World) -> None:
    channel = world.client.channel(ADMIN_CHANNEL_ID, "Canal des médiateurs")
    await channel.post("Canal ouvert")
    layla = await world.resident(2002, "ليلى", "ar")
    async with bot_running(world.settings(ADMIN_CHANNEL_ID), world.clock):
        await open_prompt(layla, "💬 التحدث مع وسيط", "الكتابة إلى وسيط")
        await layla.send("مرحبا، أحتاج مساعدة في البريد الإلكتروني")
        card = await channel.wait_message(contains=CARD)
        assert f"{isolated('ليلى')} · العربية" in card.text
        assert "مرحبا، أحتاج مساعدة في البريد الإلكتروني" in card.text
        await layla.wait_message(contains="تم إرسال رسالتك")

        # In a channel, the facilitator's reply is a channel_post (no user).
        reply_id = await channel.post("Bonjour, venez mercredi", reply_to=card.message_id)
        answer = await layla.wait_message(contains="ردّ من وسيط")
        assert "Bonjour, venez mercredi" in answer.text
        ack = await channel.wait_message(contains=f"Envoyé à {isolated('ليلى')}")
        assert ack.reply_to == reply_id

        await layla.press("💬 الرد على الوسيط")  # and she can write again from the answer
        await layla.wait_message(contains="الكتابة إلى وسيط")


async def test_a_restart_between_the_prompt_and_the_message(world: World) -> None:
    group, _ = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
    await alice.send("Écrit pendant que le bot redémarrait")
    async with bot_running(world.settings(), world.clock):
        card = await group.wait_message(contains=CARD)
        assert "Écrit pendant que le bot redémarrait" in card.text
        await alice.wait_message(contains="Votre message est envoyé")


async def test_too_long_is_asked_again_and_cancel_sends_nothing(world: World) -> None:
    group, _ = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("a" * 1001)
        again = await alice.wait_message(contains="trop long")
        assert "1000 caractères" in again.text
        await alice.send("Une question courte")
        card = await group.wait_message(contains=CARD)
        assert "Une question courte" in card.text
        await alice.wait_message(contains="Votre message est envoyé")

        await alice.press("💬 Parler à un médiateur")
        await alice.wait_message(contains="Écrire à un médiateur")
        await alice.press("✖️ Annuler")
        await alice.wait_event(kind="edit", contains="je n'ai rien envoyé")
        await alice.send("Bonjour")  # an ordinary text again: the usual nudge
        await alice.wait_message(contains="Je ne sais pas lire les messages écrits")
    assert [m.message_id for m in await group.messages()] == [card.message_id]


async def test_replies_to_anything_else_or_elsewhere_are_ignored(world: World) -> None:
    group, fatou = await facilitators_group(world)
    omar = world.client.user(501, "Omar", "fr")
    other = world.client.group(-100999, "Autre groupe")
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("Bonjour, j'ai une question")
        card = await group.wait_message(contains=CARD)
        await alice.wait_message(contains="Votre message est envoyé")

        question = await group.send(fatou, "Qui est là demain ?")
        await group.send(omar, "Moi !", reply_to=question)
        while (await other.send(omar, "bla")) < card.message_id:
            pass  # the other group now has a message with the card's id
        await other.send(omar, "Pas ici", reply_to=card.message_id)
        await group.send(omar, "La vraie réponse", reply_to=card.message_id)
        answer = await alice.wait_message(contains="Réponse d'un médiateur")
        await group.wait_message(contains=f"Envoyé à {isolated('Alice')}")
    assert "La vraie réponse" in answer.text
    assert [m.text for m in await group.messages()][-1] == f"✓ Envoyé à {isolated('Alice')}."
    assert len(await group.messages()) == 2  # the card and the one acknowledgement
    assert await other.messages() == []
    assert len([m for m in await alice.messages() if "Réponse d'un" in (m.text or "")]) == 1
    assert len(await outbox_of_kind(world.db, REPLY_KIND)) == 1


async def test_at_most_five_messages_an_hour(world: World) -> None:
    group, _ = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        for n in range(1, 6):
            await alice.send(f"Question {n}")
            await alice.wait_message(contains="Votre message est envoyé")
            await alice.press("💬 Parler à un médiateur")
            world.clock.advance(timedelta(minutes=1))
            if n < 5:
                await alice.wait_message(contains="Écrire à un médiateur")
        refusal = await alice.wait_message(contains="beaucoup de messages")
        assert "Un médiateur va vous répondre" in refusal.text
        await alice.send("Une sixième question")  # not relayed: the usual nudge
        await alice.wait_message(contains="Je ne sais pas lire les messages écrits")
        world.clock.advance(timedelta(hours=1))
        await alice.press("💬 Parler à un médiateur")
        await alice.wait_message(contains="Écrire à un médiateur")
    assert len(await group.messages()) == 5


async def _needs_up_to_the_written_question(alice: SimulatedUser) -> None:
    """/needs, tick "something else", done: the question that waits for a written answer."""
    await alice.send("/needs")
    await alice.wait_message(contains="Qu'est-ce qui est difficile pour vous ?")
    await alice.press("☐ ✏️ Autre chose")
    await alice.wait_event(kind="edit")
    await alice.press("✅ C'est fait")
    await alice.wait_event(kind="edit", contains="Qu'est-ce qui est difficile d'autre ?")


async def needs_answers(db: Database) -> dict[str, str | None]:
    async with db.read() as session:
        rows = await session.execute(select(SurveyAnswer.question_key, SurveyAnswer.free_text))
        return dict(rows.all())


async def test_a_survey_question_left_days_ago_does_not_take_the_mediator_message(
    world: World,
) -> None:
    """Review finding 2: the most recent explicit prompt wins, and a written survey question
    waits for an answer for 24 hours only."""
    group, _ = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await _needs_up_to_the_written_question(alice)
        world.clock.advance(timedelta(days=3))  # she left it there
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("Bonjour, j'ai besoin d'aide pour la CAF")
        card = await group.wait_message(contains=CARD)
        assert "Bonjour, j'ai besoin d'aide pour la CAF" in card.text
        await alice.wait_message(contains="Votre message est envoyé")
        await alice.send("Merci")  # neither the survey's nor the mediator's any more
        await alice.wait_message(contains="Je ne sais pas lire les messages écrits")
    assert "hard_other" not in await needs_answers(world.db)
    assert len(await group.messages()) == 1


async def test_the_prompt_shown_last_takes_the_text(world: World) -> None:
    group, _ = await facilitators_group(world)
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        # The survey question, then the mediator prompt: the message is for the mediator.
        await _needs_up_to_the_written_question(alice)
        world.clock.advance(timedelta(minutes=1))
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("Pour le médiateur")
        card = await group.wait_message(contains=CARD)
        assert "Pour le médiateur" in card.text
        await alice.wait_message(contains="Votre message est envoyé")
        # The mediator prompt, then a survey question: the message answers the survey.
        world.clock.advance(timedelta(minutes=1))
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        world.clock.advance(timedelta(minutes=1))
        await alice.send("/needs")  # resumes at the written question
        await alice.wait_message(contains="Qu'est-ce qui est difficile d'autre ?")
        await alice.send("Les papiers de la mairie")
        await alice.wait_message(contains="Quelle aide")
    assert (await needs_answers(world.db))["hard_other"] == "Les papiers de la mairie"
    assert len(await group.messages()) == 1


async def test_a_card_that_could_not_be_posted_can_be_sent_again(world: World) -> None:
    """Review finding 5: when Telegram refuses the card, nothing is lost: the person is told
    that nothing was sent, and sending the message again relays it."""
    alice = await world.resident(1001, "Alice", "fr")
    async with bot_running(world.settings(), world.clock):
        await open_prompt(alice, "💬 Parler à un médiateur", "Écrire à un médiateur")
        await alice.send("Ma question")  # the bot is not in the facilitators' group yet
        failed = await alice.wait_message(contains="rien n'a été envoyé")
        assert failed.button_texts() == ["✖️ Annuler"]
        group, _ = await facilitators_group(world)
        await alice.send("Ma question")
        card = await group.wait_message(contains=CARD)
        assert "Ma question" in card.text
        await alice.wait_message(contains="Votre message est envoyé")
