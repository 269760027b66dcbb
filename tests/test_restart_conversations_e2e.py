"""Conversations survive restarts: the whole Application stops mid-conversation, a new one
starts on the same database, and the person goes on where they were. Staff conversations
left untouched for a day expire, and the person is told.

Covered elsewhere with the same method: a half-answered survey (test_survey_e2e.py, the poll
and /needs across a restart), a guided /newworkshop (test_workshop_admin_e2e.py) and the
"write to a mediator" step (test_relay_mediator_e2e.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from emulator.client import ChatMessage, SimulatedUser
from sqlalchemy import select

from storage.db import Database
from storage.models import ConversationState
from tests.broadcast_helpers import seed_residents
from tests.e2e import bot_running
from tests.factories import seed_place, seed_workshop
from tests.workshop_admin_helpers import COORDINATOR, MEDIATOR, places, staff_world, workshop_row
from tests.workshop_admin_helpers import StaffWorld as World

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with staff_world(
        db, database_url, f"coordinator:{COORDINATOR},mediator:{MEDIATOR}"
    ) as world:
        yield world


async def edited(user: SimulatedUser, contains: str) -> ChatMessage:
    event = await user.wait_event(kind="edit", contains=contains)
    assert event.message is not None
    return event.message


async def answer(user: SimulatedUser, text: str, expected: str) -> ChatMessage:
    await user.send(text)
    return await user.wait_message(contains=expected)


async def conversations_of(db: Database, telegram_id: int) -> dict[str, str]:
    async with db.read() as session:
        rows = await session.execute(
            select(ConversationState.conversation, ConversationState.state).where(
                ConversationState.user_id == telegram_id
            )
        )
        return {conversation: state for conversation, state in rows}


async def test_a_broadcast_being_composed_survives_a_restart(world: World) -> None:
    await seed_residents(world.db, world.clock, [61, 62])
    residents = [world.client.user(t, f"P{t}", "fr") for t in (61, 62)]
    await world.client.register(*residents)
    mediator = world.client.user(MEDIATOR, "Mehdi", "fr")
    async with bot_running(world.settings, world.clock):
        await answer(mediator, "/broadcast", "Nouvelle annonce")
        await answer(mediator, "Fête du numérique samedi", "Ajouter une photo")
    assert await conversations_of(world.db, MEDIATOR) == {"broadcast": "photo"}

    async with bot_running(world.settings, world.clock):
        await mediator.press("Sans photo")
        await edited(mediator, "Qui doit la recevoir")
        await mediator.press("Tout le monde")
        await mediator.wait_message(contains="Destinataires")
        await mediator.press("Confirmer et envoyer")
        for resident in residents:
            await resident.wait_message(contains="Fête du numérique samedi")
    assert await conversations_of(world.db, MEDIATOR) == {}


async def test_a_desk_enrolment_survives_a_restart(world: World) -> None:
    workshop_id = await seed_workshop(world.db, world.clock, title="Tablette")
    mediator = world.client.user(MEDIATOR, "Mehdi", "fr")
    async with bot_running(world.settings, world.clock):
        await answer(mediator, "/enrol", "prénom de la personne")
        await answer(mediator, "Yvette", "numéro de téléphone")
    assert await conversations_of(world.db, MEDIATOR) == {"enrol": "phone"}

    async with bot_running(world.settings, world.clock):
        await answer(mediator, "06 12 34 56 78", "est-elle d'accord")
        await mediator.press("✅ Oui, elle est d'accord")
        await edited(mediator, "À quel atelier")
        await mediator.press("Tablette")
        await edited(mediator, "Code à donner")
    assert await places(world.db, workshop_id) == {None: "confirmed"}


async def test_a_workshop_change_in_progress_survives_a_restart(world: World) -> None:
    workshop_id = await seed_workshop(world.db, world.clock, capacity=2, title="Smartphone")
    coordinator = world.client.user(COORDINATOR, "Claire", "fr")
    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "/editworkshop", "Quel atelier")
        await coordinator.press("Smartphone")
        await edited(coordinator, "Smartphone")
        await coordinator.press("👥 Changer le nombre de places")
        await coordinator.wait_message(contains="Combien de places maintenant")

    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "6", "C'est fait")
    assert (await workshop_row(world.db, workshop_id)).capacity == 6


async def test_a_forgotten_staff_conversation_expires_and_the_person_is_told(world: World) -> None:
    await seed_place(world.db)
    coordinator = world.client.user(COORDINATOR, "Claire", "fr")
    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "/newworkshop", "Nouvel atelier")
        theme = await answer(coordinator, "Mon premier courriel", "Quel est le thème")

    # A day and a bit later (and a restart), the text is not taken for the forgotten step.
    world.clock.advance(timedelta(hours=25))
    async with bot_running(world.settings, world.clock):
        told = await answer(coordinator, "Atelier tablette", "a expiré")
        assert "/newworkshop" in told.text
        assert await conversations_of(world.db, COORDINATOR) == {}
        # The old buttons of the expired draft do nothing either.
        query = await coordinator.press("Démarches en ligne", message_id=theme.message_id)
        toast = await coordinator.callback_answer(query)
        assert "ne correspond plus" in (toast.text or "")
        # And text goes back to the ordinary handlers (the privacy notice for this person).
        await answer(coordinator, "bonjour", "Êtes-vous d'accord")

    # Within the day, the conversation goes on as usual.
    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "/newworkshop", "Nouvel atelier")
        world.clock.advance(timedelta(hours=23))
        await answer(coordinator, "Mon premier courriel", "Quel est le thème")
