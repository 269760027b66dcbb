"""Workshops managed in chat, end to end: the real bot over HTTP against the Bot API emulator.

Guided creation with refused answers and a restart in the middle; changes that notify exactly
the people registered or waitlisted, once each, in their language; refusals for residents.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from emulator.client import ChatMessage, SimulatedUser
from sqlalchemy import select

from bot.plumbing.callbacks import CallbackCodec
from bot.services.registration import PROMOTION_NOTICE, RegistrationService
from bot.services.workshops.admin import CHANGE_NOTICE
from storage.db import Database
from storage.models import Workshop
from tests.e2e import bot_running
from tests.factories import seed_place, seed_workshop
from tests.workshop_admin_helpers import (
    COORDINATOR,
    MEDIATOR,
    outbox_of,
    places,
    sign_up,
    staff_world,
    workshop_row,
)
from tests.workshop_admin_helpers import StaffWorld as World

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with staff_world(
        db, database_url, f"coordinator:{COORDINATOR},mediator:{MEDIATOR}"
    ) as world:
        yield world


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def answer(user: SimulatedUser, text: str, expected: str) -> ChatMessage:
    await user.send(text)
    return await user.wait_message(contains=expected)


async def test_guided_creation_with_refused_answers_and_a_restart(world: World) -> None:
    await seed_place(world.db)
    await seed_place(world.db, area="Tarentaize")
    coordinator = world.client.user(COORDINATOR, "Claire", "fr")
    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "/newworkshop", "Nouvel atelier")
        await answer(coordinator, "ab", "entre 3 et 120 caractères")
        theme = await answer(coordinator, "Mon premier courriel", "Quel est le thème")
        assert "Démarches en ligne" in theme.button_texts()
        await answer(coordinator, "Démarches", "touchez un bouton")
        await coordinator.press("Démarches en ligne")
        venues = await coordinator.wait_message(contains="Où a lieu")
        assert {"EPN Montreynaud", "EPN Tarentaize"} <= set(venues.button_texts())
        await coordinator.press("EPN Tarentaize")
        days = await coordinator.wait_message(contains="Quel jour")
        assert len(days.button_texts()) == 14 + 1  # two weeks, and cancel
        await answer(coordinator, "31/02/2026", "pas compris cette date")
        await answer(coordinator, "15/11/2026", "déjà passée")
        await answer(coordinator, "03/12/2026", "À quelle heure")

    # The bot restarts in the middle: the conversation goes on where it was.
    async with bot_running(world.settings, world.clock):
        await answer(coordinator, "25:00", "pas compris cette heure")
        await answer(coordinator, "14:00", "Combien de temps")
        await answer(coordinator, "toute la journée", "pas compris cette durée")
        await coordinator.press("1h30")
        await coordinator.wait_message(contains="Combien de places")
        await answer(coordinator, "0", "nombre entier de 1 à 500")
        summary = await answer(coordinator, "12", "Vérifiez l'atelier")
        assert "Mon premier courriel" in summary.text
        assert "EPN Tarentaize" in summary.text and "Démarches en ligne" in summary.text
        assert "jeudi 3 décembre, de 14:00 à 15:30" in summary.text
        assert "Places : 12" in summary.text
        assert summary.button_texts() == ["✅ Créer", "✏️ Recommencer", "✖️ Annuler"]
        await coordinator.press("✅ Créer")
        assert "est créé" in (await edited(coordinator)).text

        async with world.db.read() as session:
            created = (await session.scalars(select(Workshop))).one()
        assert created.title["fr"] == "Mon premier courriel"
        assert created.starts_at == datetime(2026, 12, 3, 13, 0, tzinfo=UTC)  # 14:00 in Paris
        assert created.ends_at - created.starts_at == timedelta(minutes=90)
        assert (created.capacity, created.status, created.facilitator_id) == (12, "scheduled", None)

        # A resident now finds it in the list.
        await sign_up(world.db, world.clock, 42, created.id)
        assert await places(world.db, created.id) == {42: "confirmed"}

        # Once created, typed text goes back to the ordinary handlers (the privacy notice,
        # since this coordinator never signed up as a resident).
        await answer(coordinator, "bonjour", "Êtes-vous d'accord")


async def test_a_time_change_and_a_cancellation_tell_the_right_people(world: World) -> None:
    workshop_id = await seed_workshop(world.db, world.clock, capacity=2, title="Tablette")
    await sign_up(world.db, world.clock, 101, workshop_id, "fr")
    await sign_up(world.db, world.clock, 102, workshop_id, "en")
    await sign_up(world.db, world.clock, 103, workshop_id, "en")  # waitlisted
    await sign_up(world.db, world.clock, 104, workshop_id, "fr")  # waitlisted, then gone
    await RegistrationService(world.db, world.clock).cancel(104, workshop_id)
    people = {
        tid: world.client.user(tid, f"P{tid}", lang)
        for tid, lang in ((101, "fr"), (102, "en"), (103, "en"), (104, "fr"))
    }
    await world.client.register(*people.values())
    mediator = world.client.user(MEDIATOR, "Mehdi", "fr")
    async with bot_running(world.settings, world.clock):
        await mediator.send("/editworkshop")
        await mediator.wait_message(contains="Quel atelier")
        await mediator.press("Tablette")
        card = await edited(mediator)
        assert "2 places prises sur 2" in card.text and "1 personne en liste d'attente" in card.text
        await mediator.press("📅 Changer la date ou l'heure")
        await mediator.wait_message(contains="nouvelle date")
        await answer(mediator, "demain midi", "Je n'ai pas compris")
        done = await answer(mediator, "10/12/2026 10:00", "C'est fait")
        assert "3 personnes inscrites ou en attente vont être prévenues" in done.text

        moved_fr = await people[101].wait_message(contains="Changement d'horaire")
        assert "jeudi 10 décembre, de 10:00 à 12:00" in moved_fr.text
        for tid in (102, 103):
            moved_en = await people[tid].wait_message(contains="New time")
            assert "Thursday 10 December, from 10:00 to 12:00" in moved_en.text

        await mediator.press("❌ Annuler l'atelier")
        question = await edited(mediator)
        assert "3 personnes sont inscrites ou en attente" in question.text
        await mediator.press("❌ Oui, annuler l'atelier")
        await mediator.wait_message(contains="C'est fait")
        await people[101].wait_message(contains="Atelier annulé")
        for tid in (102, 103):
            await people[tid].wait_message(contains="Workshop cancelled")

        assert await people[104].messages() == []  # the one who had left heard nothing
        for tid in (101, 102, 103):  # each told once of each change
            assert len(await people[tid].messages()) == 2
    notices = await outbox_of(world.db, CHANGE_NOTICE)
    assert len(notices) == 6 and {n.status for n in notices} == {"sent"}
    assert await places(world.db, workshop_id) == {
        101: "confirmed",
        102: "confirmed",
        103: "waitlisted",
        104: "cancelled",
    }
    assert (await workshop_row(world.db, workshop_id)).status == "cancelled"


async def test_capacity_changes_are_explained_and_promote_in_order(world: World) -> None:
    workshop_id = await seed_workshop(world.db, world.clock, capacity=2, title="Smartphone")
    for tid in (201, 202, 203, 204):
        await sign_up(world.db, world.clock, tid, workshop_id)
        world.clock.advance(timedelta(minutes=1))
    waiting_first = world.client.user(203, "P203", "fr")
    await waiting_first.register()
    coordinator = world.client.user(COORDINATOR, "Claire", "fr")
    async with bot_running(world.settings, world.clock):
        await coordinator.send("/editworkshop")
        await coordinator.wait_message(contains="Quel atelier")
        await coordinator.press("Smartphone")
        await edited(coordinator)
        await coordinator.press("👥 Changer le nombre de places")
        await coordinator.wait_message(contains="Combien de places maintenant")
        refused = await answer(coordinator, "1", "Impossible")
        assert "2 personnes ont déjà une place confirmée" in refused.text
        assert (await workshop_row(world.db, workshop_id)).capacity == 2
        done = await answer(coordinator, "3", "C'est fait")
        assert "1 personne de la liste d'attente a maintenant une place" in done.text
        await waiting_first.wait_message(contains="place")
    assert await places(world.db, workshop_id) == {
        201: "confirmed",
        202: "confirmed",
        203: "confirmed",
        204: "waitlisted",
    }
    promotions = await outbox_of(world.db, PROMOTION_NOTICE)
    assert [p.status for p in promotions] == ["sent"]


async def test_residents_are_refused_commands_and_forged_buttons(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="handlers.common")
    workshop_id = await seed_workshop(world.db, world.clock, title="Tablette")
    await sign_up(world.db, world.clock, 301, workshop_id)
    resident = world.client.user(301, "Rita", "fr")
    coordinator = world.client.user(COORDINATOR, "Claire", "fr")
    async with bot_running(world.settings, world.clock):
        for command in ("/newworkshop", "/editworkshop", "/enrol"):
            await answer(resident, command, "réservée à l'équipe")
        # A real staff button pressed by a resident (signed for someone else) is stale...
        await coordinator.send("/editworkshop")
        menu = await coordinator.wait_message(contains="Quel atelier")
        data = menu.buttons[0][0].callback_data
        assert data is not None
        query = await resident.press_data(data, message_id=menu.message_id)
        assert "plus valable" in (await resident.callback_answer(query)).text
        # ...and one correctly signed for the resident is refused by role.
        codec = CallbackCodec(world.settings.effective_token.encode())
        for action, args in (("we_cancel_yes", (workshop_id,)), ("enrol_consent", ())):
            forged = codec.encode(301, action, *args)
            query = await resident.press_data(forged, message_id=menu.message_id)
            assert "réservée à l'équipe" in (await resident.callback_answer(query)).text
    assert (await workshop_row(world.db, workshop_id)).status == "scheduled"
    refusals = [r.getMessage() for r in caplog.records if "missing role" in r.getMessage()]
    assert len(refusals) == 5 and not any("301" in line for line in refusals)
