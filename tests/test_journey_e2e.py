"""The resident journey end to end: real PTB, real HTTP to the Bot API emulator, real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.settings import Settings
from storage.db import Database
from storage.models import Registration, Resident
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock, seed_place, seed_workshop

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    settings: Settings
    db: Database
    clock: ManualClock


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        yield World(emulator, client, settings_for(emulator, database_url), db, new_clock())


@pytest.fixture
async def bot(world: World) -> AsyncIterator[None]:
    async with bot_running(world.settings, world.clock):
        yield


async def next_edit(user: SimulatedUser) -> ChatMessage:
    """The bot edits the message whose button was pressed: wait for that edit."""
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def consent_and_choose(user: SimulatedUser, accept: str, language: str) -> None:
    # Generous waits: they end as soon as the bot answers, and fifty people at once on a
    # busy two-core machine can take more than the default five seconds.
    await user.send("/start")
    await user.wait_message(timeout=30)
    await user.press(accept)
    await user.wait_event(kind="edit", timeout=30)
    await user.press(language)
    await user.wait_event(kind="edit", timeout=30)


async def registrations_of(db: Database, telegram_id: int) -> list[tuple[str, int | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(Registration.status, Registration.waitlist_position)
            .join(Resident, Resident.id == Registration.resident_id)
            .where(Resident.telegram_id == telegram_id)
            .order_by(Registration.id)
        )
        return [tuple(r) for r in rows]


async def test_french_resident_signs_up_in_three_taps(world: World, bot: None) -> None:
    await seed_workshop(world.db, world.clock, capacity=8, title="Mon smartphone au quotidien")
    alice = world.client.user(1001, "Alice", "fr")

    await alice.send("/start")
    welcome = await alice.wait_message()
    assert "Bonjour" in welcome.text and "Vos données" in welcome.text
    assert welcome.button_texts()[:2] == ["✅ Oui, je suis d'accord", "❌ Non merci"]
    async with world.db.read() as session:  # nothing stored before consent
        assert await session.scalar(select(func.count()).select_from(Resident)) == 0

    await alice.press("✅ Oui, je suis d'accord")
    language_question = await next_edit(alice)
    assert "langue" in language_question.text
    await alice.press("Français")
    menu = await next_edit(alice)
    assert "français" in menu.text

    taps = 0
    await alice.press("📅 Voir les ateliers")
    taps += 1
    listing = await next_edit(alice)
    assert "Les prochains ateliers" in listing.text and "1 atelier." in listing.text
    await alice.press("Mon smartphone au quotidien")
    taps += 1
    card = await next_edit(alice)
    assert "Il reste 8 places" in card.text
    assert "EPN Montreynaud" in card.text
    await alice.press("✅ Je m'inscris")
    taps += 1
    confirmation = await alice.wait_message(contains="vous êtes inscrit(e)")
    assert "Mon smartphone au quotidien" in confirmation.text
    assert taps <= 4
    assert await registrations_of(world.db, 1001) == [("confirmed", None)]
    card_now = next(m for m in await alice.messages() if m.message_id == card.message_id)
    assert "Vous êtes inscrit(e)" in card_now.text and "Il reste" not in card_now.text


async def test_workshop_card_shows_paris_time_and_the_venue_on_a_map(world: World, bot: None):
    # 13:00 UTC on 4 December is 14:00 in Paris (UTC+1 in winter).
    world.clock.set(world.clock.now().replace(day=1, hour=13, minute=0))
    await seed_workshop(world.db, world.clock, starts_in=timedelta(days=3), title="Atelier e-mail")
    bob = world.client.user(1002, "Bob", "en")
    await consent_and_choose(bob, "Yes", "English")
    await bob.press("See the workshops")
    await next_edit(bob)
    await bob.press("Atelier e-mail")
    card = await next_edit(bob)
    assert "Friday 4 December" in card.text
    assert "14:00" in card.text and "16:00" in card.text
    await bob.press("map")
    venue = await bob.wait_message()
    assert venue.kind == "venue"
    assert venue.venue["title"] == "EPN Montreynaud"


async def test_full_workshop_waitlist_and_promotion_across_languages(world: World, bot: None):
    await seed_workshop(world.db, world.clock, capacity=1, title="Sécurité en ligne")
    alice = world.client.user(2001, "Alice", "fr")
    bob = world.client.user(2002, "Bob", "en")
    await consent_and_choose(alice, "✅ Oui", "Français")
    await consent_and_choose(bob, "Yes", "English")

    await alice.press("📅 Voir les ateliers")
    await next_edit(alice)
    await alice.press("Sécurité en ligne")
    await next_edit(alice)
    await alice.press("✅ Je m'inscris")
    await alice.wait_message(contains="inscrit(e)")

    await bob.press("See the workshops")
    await next_edit(bob)
    await bob.press("Sécurité en ligne")
    full_card = await next_edit(bob)
    assert "full" in full_card.text.lower()
    await bob.press("waiting list")
    waiting = await bob.wait_message(contains="waiting list")
    assert (
        "number 1" in waiting.text.lower() or "no. 1" in waiting.text.lower() or "1" in waiting.text
    )
    assert await registrations_of(world.db, 2002) == [("waitlisted", 1)]

    await alice.send("/mine")
    mine = await alice.wait_message(contains="Vos inscriptions")
    assert "Sécurité en ligne" in mine.text
    await alice.press("❌ Annuler")
    question = await next_edit(alice)
    assert "vraiment annuler" in question.text
    await alice.press("Oui, j'annule")
    done = await next_edit(alice)
    assert "C'est annulé" in done.text

    promoted = await bob.wait_message(contains="Good news", timeout=15)
    assert "Sécurité en ligne" in promoted.text or "EN Sécurité en ligne" in promoted.text
    assert await registrations_of(world.db, 2002) == [("confirmed", None)]
    assert await registrations_of(world.db, 2001) == [("cancelled", None)]


async def test_arabic_journey(world: World, bot: None) -> None:
    await seed_workshop(world.db, world.clock, capacity=3, title="Démarches CAF")
    amina = world.client.user(3001, "Amina", "ar")
    await amina.send("/start")
    welcome = await amina.wait_message()
    assert any("\u0600" <= ch <= "\u06ff" for ch in welcome.text)
    await amina.press(welcome.button_texts()[0])
    await next_edit(amina)
    await amina.press("العربية")
    menu = await next_edit(amina)
    await amina.press(menu.buttons[0][0].text)
    await next_edit(amina)
    await amina.press("AR Démarches CAF")
    card = await next_edit(amina)
    await amina.press(card.buttons[0][0].text)
    await amina.wait_message()
    assert await registrations_of(world.db, 3001) == [("confirmed", None)]


async def test_a_restart_in_the_middle_of_the_journey(world: World) -> None:
    await seed_workshop(world.db, world.clock, capacity=4, title="Atelier CV")
    carla = world.client.user(4001, "Carla", "fr")
    async with bot_running(world.settings, world.clock):
        await consent_and_choose(carla, "✅ Oui", "Français")
        await carla.press("📅 Voir les ateliers")
        await next_edit(carla)
        await carla.press("Atelier CV")
        await next_edit(carla)
    # The bot is down; Carla taps the button of the card she still sees, then it comes back.
    await carla.press("✅ Je m'inscris")
    async with bot_running(world.settings, world.clock):
        await carla.wait_message(contains="inscrit(e)", timeout=15)
    assert await registrations_of(world.db, 4001) == [("confirmed", None)]


async def test_forged_foreign_and_stale_buttons_are_refused(world: World, bot: None) -> None:
    workshop = await seed_workshop(world.db, world.clock, capacity=4, title="Atelier photo")
    dan = world.client.user(5001, "Dan", "fr")
    eve = world.client.user(5002, "Eve", "fr")
    await consent_and_choose(dan, "✅ Oui", "Français")
    await consent_and_choose(eve, "✅ Oui", "Français")
    await dan.press("📅 Voir les ateliers")
    await next_edit(dan)
    await dan.press("Atelier photo")
    card = await next_edit(dan)
    register_data = next(
        b.callback_data for row in card.buttons for b in row if "inscris" in b.text
    )

    # Eve replays Dan's button data on her own message: refused, nothing registered.
    eve_menu = await eve.last()
    query = await eve.press_data(register_data, message_id=eve_menu.message_id)
    answer = await eve.callback_answer(query)
    assert "plus valable" in answer.text
    # Forged data: tampered workshop id, garbage, oversized.
    tampered = register_data.replace(f"|{workshop}|", f"|{workshop + 1}|")
    for forged in (tampered, "1|r|1|0|0|0|AAAAAAAA", "hello", "9" * 64):
        query = await dan.press_data(forged, message_id=card.message_id)
        answer = await dan.callback_answer(query)
        assert "plus valable" in answer.text
    assert await registrations_of(world.db, 5001) == []
    assert await registrations_of(world.db, 5002) == []


async def test_free_text_and_unknown_commands_get_a_nudge(world: World, bot: None) -> None:
    fred = world.client.user(6001, "Fred", "fr")
    await fred.send("bonjour, je voudrais un atelier")
    assert "Oui, je suis d'accord" in (await fred.wait_message()).button_texts()[0]
    await consent_and_choose(fred, "✅ Oui", "Français")
    await fred.send("bonjour, je voudrais un atelier")
    nudge = await fred.wait_message()
    assert "bouton" in nudge.text and "📅 Voir les ateliers" in nudge.button_texts()
    await fred.send("/nimportequoi")
    assert "commande" in (await fred.wait_message()).text


async def test_declining_consent_stores_nothing(world: World, bot: None) -> None:
    gina = world.client.user(6002, "Gina", "en")
    await gina.send("/start")
    await gina.wait_message()
    await gina.press("No")
    declined = await next_edit(gina)
    assert "/start" in declined.text
    async with world.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Resident)) == 0


async def test_command_menus_in_every_language(world: World, bot: None) -> None:
    default = await world.client.commands()
    english = await world.client.commands(language_code="en")
    arabic = await world.client.commands(language_code="ar")
    assert [c["command"] for c in default] == [
        "start",
        "workshops",
        "mine",
        "needs",
        "checkin",
        "language",
        "help",
        "privacy",
        "mydata",
        "forget",
        "claim",
    ]
    assert default[1]["description"] == "Voir les ateliers"
    assert english[1]["description"] != default[1]["description"]
    assert arabic[1]["description"] not in (default[1]["description"], english[1]["description"])


async def test_filters_by_neighbourhood_and_theme_with_pages(world: World, bot: None) -> None:
    north = await seed_place(world.db, area="Montreynaud")
    south = await seed_place(world.db, area="Beaulieu")
    for day in range(7):
        await seed_workshop(
            world.db,
            world.clock,
            place=north,
            starts_in=timedelta(days=day + 1),
            title=f"Nord {day}",
        )
    await seed_workshop(world.db, world.clock, place=south, title="Sud unique")
    hugo = world.client.user(7001, "Hugo", "fr")
    await consent_and_choose(hugo, "✅ Oui", "Français")
    await hugo.press("📅 Voir les ateliers")
    first = await next_edit(hugo)
    assert "8 ateliers." in first.text and "Page 1 sur 2" in first.text
    await hugo.press("Après ▶️")
    second = await next_edit(hugo)
    assert "Page 2 sur 2" in second.text
    await hugo.press("📍 Quartier")
    areas = await next_edit(hugo)
    assert {"Montreynaud", "Beaulieu"} <= set(areas.button_texts())
    await hugo.press("Beaulieu")
    filtered = await next_edit(hugo)
    assert "1 atelier." in filtered.text and "Beaulieu" in filtered.text
    assert any("Sud unique" in t for t in filtered.button_texts())
    assert not any("Nord" in t for t in filtered.button_texts())


async def test_fifty_residents_tap_register_at_once_for_the_last_five_seats(
    world: World, bot: None
):
    workshop = await seed_workshop(world.db, world.clock, capacity=5, title="Atelier tablette")
    people = [world.client.user(8000 + i, f"P{i}", "fr") for i in range(50)]
    await asyncio.gather(*(consent_and_choose(p, "✅ Oui", "Français") for p in people))

    async def open_card(person: SimulatedUser) -> None:
        await person.press("📅 Voir les ateliers")
        await person.wait_event(kind="edit", timeout=30)
        await person.press("Atelier tablette")
        await person.wait_event(kind="edit", timeout=30)

    await asyncio.gather(*(open_card(p) for p in people))
    await asyncio.gather(*(p.press("✅ Je m'inscris") for p in people))
    answers = await asyncio.gather(*(p.wait_message(timeout=30) for p in people))
    confirmed = [a for a in answers if "vous êtes inscrit(e)" in a.text]
    waitlisted = [a for a in answers if "liste d'attente" in a.text]
    assert (len(confirmed), len(waitlisted)) == (5, 45)
    async with world.db.read() as session:
        positions = list(
            await session.scalars(
                select(Registration.waitlist_position).where(
                    Registration.workshop_id == workshop, Registration.status == "waitlisted"
                )
            )
        )
    assert sorted(positions) == list(range(1, 46))


async def test_help_and_privacy_answer_before_and_after_consent(world: World, bot: None) -> None:
    ivy = world.client.user(9001, "Ivy", "en")
    await ivy.send("/privacy")
    notice = await ivy.wait_message()
    assert "Your personal data" in notice.text and "12 months" in notice.text
    await ivy.send("/help")
    help_before = await ivy.wait_message()
    assert "Yes, I agree" in help_before.button_texts()[0]
    await consent_and_choose(ivy, "Yes", "English")
    await ivy.send("/help")
    help_after = await ivy.wait_message()
    assert "See the workshops" in " ".join(help_after.button_texts())
