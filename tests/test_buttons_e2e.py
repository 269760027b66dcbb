"""Buttons pressed from outside the happy path, end to end: real PTB, the emulator, the database.

- a valid button on a message the person deleted before the bot answered, or one Telegram no
  longer lets the bot edit: the action is done and its result comes as a new message (the
  edit Telegram refuses is not an error);
- the same screen shown again ("message is not modified") changes nothing and is no error;
- callback data holding a lone surrogate gets the "no longer valid" alert, like forged data.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.plumbing.context import BotApplication
from bot.runtime.runner import start_polling
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import Registration, Resident
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock, seed_workshop

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

SORRY = "Désolé, un problème est arrivé"
STALE = "Ce bouton n'est plus valable"


@dataclass
class World:
    application: BotApplication
    client: EmulatorClient
    db: Database
    clock: ManualClock


@pytest.fixture
async def world(db: Database, database_url: str, caplog) -> AsyncIterator[World]:
    caplog.set_level(logging.ERROR, logger="handlers.errors")
    clock = new_clock()
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        async with bot_running(settings_for(emulator, database_url), clock) as application:
            yield World(application, client, db, clock)
    # Nothing here is a bug: the error handler was never reached.
    assert [r.getMessage() for r in caplog.records if r.name == "handlers.errors"] == []


async def consented_menu(world: World, user_id: int) -> tuple[SimulatedUser, ChatMessage]:
    """A resident who agreed to the notice earlier, and the main menu /menu gives them."""
    await ResidentService(world.db, world.clock).give_consent(user_id, "Lina", "fr")
    person = world.client.user(user_id, "Lina", "fr")
    await person.send("/menu")
    menu = await person.wait_message()
    assert "📅 Voir les ateliers" in menu.button_texts()
    return person, menu


def data_of(message: ChatMessage, label: str) -> str:
    data = next(b.callback_data for row in message.buttons for b in row if label in b.text)
    assert data is not None
    return data


@asynccontextmanager
async def updates_held(application: BotApplication) -> AsyncIterator[None]:
    """The bot fetches no update inside: what the person does meanwhile reaches it after,
    as when they are quicker than its answer."""
    assert application.updater is not None
    await application.updater.stop()
    try:
        yield
    finally:
        await start_polling(application)


async def test_a_button_on_a_message_deleted_meanwhile_acts_and_answers_anew(world: World):
    await seed_workshop(world.db, world.clock, capacity=5, title="Atelier tablette")
    person, _ = await consented_menu(world, 8101)
    await person.press("📅 Voir les ateliers")
    await person.wait_event(kind="edit")
    await person.press("Atelier tablette")
    card = (await person.wait_event(kind="edit")).message
    assert card is not None and "Il reste 5 places" in (card.text or "")

    async with updates_held(world.application):
        query = await person.press("✅ Je m'inscris", message_id=card.message_id)
        await person.delete(card.message_id)

    # Done: the registration is stored and the button answered.
    assert "inscrit" in (await person.callback_answer(query, timeout=10)).text
    async with world.db.read() as session:
        statuses = await session.scalars(
            select(Registration.status)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == 8101)
        )
        assert list(statuses) == ["confirmed"]
    # The card the edit would have shown, as a new message, buttons included.
    new_card = await person.wait_message(contains="Vous êtes inscrit(e)", timeout=10)
    assert new_card.message_id > card.message_id and "Atelier tablette" in (new_card.text or "")
    assert any("Annuler" in text for text in new_card.button_texts())
    await person.wait_message(contains="vous êtes inscrit(e)")  # the confirmation, as always
    assert not [m for m in await person.messages() if SORRY in (m.text or "")]


async def test_a_message_telegram_no_longer_lets_edit_gets_a_new_one(world: World):
    """Telegram's other refusal for a message out of reach (too old, for one)."""
    person, menu = await consented_menu(world, 8104)
    await world.client.fail_next(
        "editMessageText", 400, description="Bad Request: message can't be edited"
    )
    query = await person.press("📅 Voir les ateliers", message_id=menu.message_id)
    listing = await person.wait_message(contains="Les prochains ateliers")
    assert listing.message_id > menu.message_id
    assert not (await person.callback_answer(query)).show_alert


async def test_the_same_screen_again_is_no_error_and_no_new_message(world: World):
    person, menu = await consented_menu(world, 8102)
    list_data = data_of(menu, "Voir les ateliers")
    await person.press_data(list_data, message_id=menu.message_id)
    listing = (await person.wait_event(kind="edit")).message
    assert listing is not None and listing.message_id == menu.message_id
    before = await person.messages()

    # The same button again (a double tap): Telegram answers "message is not modified".
    query = await person.press_data(list_data, message_id=menu.message_id)
    answer = await person.callback_answer(query)
    assert not answer.show_alert
    assert await person.messages() == before


async def test_callback_data_with_a_lone_surrogate_is_refused_politely(world: World):
    person, menu = await consented_menu(world, 8103)
    forged = data_of(menu, "Voir les ateliers")[:4] + "\udcff"  # "1|w|" and a lone surrogate
    query = await person.press_data(forged, message_id=menu.message_id)
    answer = await person.callback_answer(query)
    assert answer.show_alert and STALE in (answer.text or "")
    assert (await person.last()).message_id == menu.message_id  # nothing new, no apology
