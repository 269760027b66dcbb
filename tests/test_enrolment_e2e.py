"""Desk enrolment and /claim, end to end through the Bot API emulator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from emulator.client import ChatMessage, SimulatedUser

from bot.services.residents import ResidentService
from bot.text.user_text import isolated
from storage.db import Database
from tests.e2e import bot_running
from tests.factories import seed_workshop
from tests.workshop_admin_helpers import MEDIATOR, places, sign_up, staff_world, workshop_row
from tests.workshop_admin_helpers import StaffWorld as World

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

CODE = re.compile(r"Code à donner à la personne : ([A-Z0-9]{8})")


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with staff_world(db, database_url, f"mediator:{MEDIATOR}") as world:
        yield world


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def answer(user: SimulatedUser, text: str, expected: str) -> ChatMessage:
    await user.send(text)
    return await user.wait_message(contains=expected)


async def enrol_at_desk(mediator: SimulatedUser, name: str, phone: str | None, title: str) -> str:
    """The whole /enrol conversation; returns the claim code shown to the mediator."""
    await answer(mediator, "/enrol", "prénom de la personne")
    await answer(mediator, name, "numéro de téléphone")
    if phone is None:
        await mediator.press("Pas de téléphone")
        await mediator.wait_message(contains="est-elle d'accord")
    else:
        await answer(mediator, "12 34", "ne ressemble pas à un numéro français")
        await answer(mediator, phone, "est-elle d'accord")
    await mediator.press("✅ Oui, elle est d'accord")
    assert "À quel atelier" in (await edited(mediator)).text
    await mediator.press(title)
    done = await edited(mediator)
    match = CODE.search(done.text or "")
    assert match is not None, done.text
    return match.group(1)


async def test_desk_enrolment_with_a_waitlist_then_claims(world: World) -> None:
    workshop_id = await seed_workshop(world.db, world.clock, capacity=1, title="Tablette")
    mediator = world.client.user(MEDIATOR, "Mehdi", "fr")
    async with bot_running(world.settings, world.clock):
        yvette_code = await enrol_at_desk(mediator, "Yvette", "06 12 34 56 78", "Tablette")
        assert f"{isolated('Yvette')}</b> a une place" in (await mediator.last()).html
        karim_code = await enrol_at_desk(mediator, "Karim", None, "Tablette")
        assert "liste d'attente (position 1)" in (await mediator.last()).text
        assert (await workshop_row(world.db, workshop_id)).seats_taken == 1

        # Yvette gets Telegram: after consent, /claim attaches the desk record (new account).
        await ResidentService(world.db, world.clock).give_consent(701, "Yvette", "fr")
        yvette = world.client.user(701, "Yvette", "fr")
        await answer(yvette, "/claim", "/claim suivi du code")
        await answer(yvette, "/claim ZZZZ2222", "n'est pas valable")
        done = await answer(yvette, f"/claim {yvette_code.lower()}", "C'est fait")
        assert "(1 atelier)" in done.text
        await answer(yvette, f"/claim {yvette_code}", "n'est pas valable")  # single use
        mine = await answer(yvette, "/mine", "Tablette")
        assert "Tablette" in mine.text

        # Karim already uses the bot in English: his desk place merges into his account.
        other = await seed_workshop(world.db, world.clock, title="Courriel")
        await sign_up(world.db, world.clock, 702, other, "en")
        karim = world.client.user(702, "Karim", "en")
        await answer(karim, f"/claim {karim_code}", "Done!")
        # Someone who never accepted the privacy notice is asked to, first.
        stranger = world.client.user(703, "Sam", "fr")
        await answer(stranger, f"/claim {karim_code}", "acceptez d'abord")

    assert await places(world.db, workshop_id) == {701: "confirmed", 702: "waitlisted"}
    assert await places(world.db, other) == {702: "confirmed"}
