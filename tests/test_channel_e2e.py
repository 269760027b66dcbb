"""Channel notices through the Bot API emulator: one line per change, in order, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from emulator.client import EmulatorClient, SimulatedGroup, SimulatedUser
from emulator.server import BotApiEmulator

from bot.clock import ManualClock
from bot.services.channel import NOTICE_KIND, ChannelNotices
from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from bot.settings import CHANNEL_NOTICE_KINDS, Settings
from bot.text.user_text import isolated
from storage.db import Database
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_place, seed_workshop
from tests.relay_helpers import ADMIN_CHAT_ID, outbox_of_kind

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

# seed_workshop: three days after T0, Friday 4 December 2026, 10:00 in Paris.
WHERE = "(ven. 4 déc. 10:00, EPN Montreynaud)"
# Names are user input: each line sets them apart with Unicode isolates.
ALICE, BOB, CARLA = isolated("Alice"), isolated("Bob"), isolated("Carla")


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    database_url: str
    clock: ManualClock
    channel: SimulatedGroup

    def settings(self, kinds: tuple[str, ...] = CHANNEL_NOTICE_KINDS) -> Settings:
        return settings_for(
            self.emulator,
            self.database_url,
            admin_chat_id=ADMIN_CHAT_ID,
            channel_notices=kinds,
            outbox_sweep_seconds=0.2,
        )


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        channel = client.group(ADMIN_CHAT_ID, "Facilitateurs")
        await channel.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
        yield World(emulator, client, db, database_url, new_clock(), channel)


async def consenting(world: World, *people: tuple[int, str]) -> None:
    residents = ResidentService(world.db, world.clock)
    for telegram_id, name in people:
        await residents.give_consent(telegram_id, name, "fr")


async def register_through_the_buttons(user: SimulatedUser, title: str) -> None:
    await user.send("/workshops")
    await user.wait_message(contains="Les prochains ateliers")
    await user.press(title)
    await user.wait_event(kind="edit")
    await user.press("✅ Je m'inscris")
    await user.wait_message(contains="vous êtes inscrit")


async def lines(channel: SimulatedGroup, count: int) -> list[str]:
    """Wait for `count` new lines, then return every line the bot wrote in the channel."""
    for _ in range(count):
        await channel.wait_message(timeout=10)
    return [message.text or "" for message in await channel.messages()]


async def test_registration_waitlist_and_cancellation_with_promotion(world: World) -> None:
    workshop = await seed_workshop(world.db, world.clock, capacity=1, title="Atelier smartphone")
    await consenting(world, (1, "Alice"), (2, "Bob"))
    async with bot_running(world.settings(), world.clock) as application:
        await register_through_the_buttons(world.client.user(1, "Alice", "fr"), "Atelier")
        registrations = services_of(application).registrations
        await registrations.register(2, workshop)
        await registrations.register(2, workshop)  # already waiting: no line
        await registrations.cancel(1, workshop)
        seen = await lines(world.channel, 3)
    assert seen == [
        f"✅ {ALICE} — Atelier smartphone {WHERE} · complet",
        f"⏳ {BOB} — Atelier smartphone {WHERE} · liste d'attente n°1",
        f"❌ {ALICE} — Atelier smartphone {WHERE} · annulé · place donnée à {BOB}",
    ]
    rows = await outbox_of_kind(world.db, NOTICE_KIND)
    assert [(row.status, row.attempts) for row in rows] == [("sent", 1)] * 3


async def test_a_kind_turned_off_is_not_announced(world: World) -> None:
    place = await seed_place(world.db)
    full = await seed_workshop(world.db, world.clock, capacity=1, place=place, title="Atelier A")
    other = await seed_workshop(world.db, world.clock, capacity=5, place=place, title="Atelier B")
    await consenting(world, (1, "Alice"), (2, "Bob"), (3, "Carla"))
    async with bot_running(world.settings(("registrations",)), world.clock) as application:
        registrations = services_of(application).registrations
        await registrations.register(1, full)
        await registrations.register(2, full)
        await registrations.cancel(1, full)  # neither the cancellation nor Bob's promotion
        await registrations.register(3, other)  # its line comes after any earlier one
        seen = await lines(world.channel, 3)
    assert seen == [
        f"✅ {ALICE} — Atelier A {WHERE} · complet",
        f"⏳ {BOB} — Atelier A {WHERE} · liste d'attente n°1",
        f"✅ {CARLA} — Atelier B {WHERE} · 4 places libres",
    ]


async def test_a_notice_decided_before_a_crash_is_sent_after_the_restart(world: World) -> None:
    """Decided while the bot is down (as if it died right after the commit): the row is
    there before any delivery, and the line goes out once the bot runs again."""
    workshop = await seed_workshop(world.db, world.clock, capacity=3, title="Atelier courriel")
    await consenting(world, (1, "Alice"))
    channel = ChannelNotices(world.db, ADMIN_CHAT_ID, CHANNEL_NOTICE_KINDS)
    await RegistrationService(world.db, world.clock, channel=channel).register(1, workshop)
    assert [row.status for row in await outbox_of_kind(world.db, NOTICE_KIND)] == ["pending"]
    async with bot_running(world.settings(), world.clock):
        seen = await lines(world.channel, 1)
    assert seen == [f"✅ {ALICE} — Atelier courriel {WHERE} · 2 places libres"]
    assert len(await world.channel.messages()) == 1
    assert [row.status for row in await outbox_of_kind(world.db, NOTICE_KIND)] == ["sent"]


async def test_a_name_with_a_right_to_left_override_stays_inside_its_place(world: World) -> None:
    """A first name is user input: its U+202E must not reverse the rest of the notice."""
    workshop = await seed_workshop(world.db, world.clock, capacity=5, title="Atelier smartphone")
    await consenting(world, (1, "\u202eAlice"), (2, "Bob\u202c\u2069"))
    async with bot_running(world.settings(), world.clock) as application:
        registrations = services_of(application).registrations
        await registrations.register(1, workshop)
        await registrations.register(2, workshop)
        seen = await lines(world.channel, 2)
    # Each name sits between FSI and PDI; the override that is never closed is dropped, and
    # so are the closers in Bob's name, which close nothing.
    assert seen == [
        f"✅ \u2068Alice\u2069 — Atelier smartphone {WHERE} · 4 places libres",
        f"✅ \u2068Bob\u2069 — Atelier smartphone {WHERE} · 3 places libres",
    ]
