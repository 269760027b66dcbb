"""Staff menus that Telegram refuses (issue 13, item 4), end to end through the emulator.

Telegram refuses a chat's command menu for someone who never opened the bot. The menu then
waits in the database and is set on the person's first update in a private chat, after a
restart too; nobody is told the commands are in the menu unless Telegram took it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import event, select

from bot.clock import ManualClock
from bot.services.residents import ResidentService
from bot.settings import Settings
from bot.text.i18n import Translator
from handlers import RESIDENT_COMMANDS, STAFF_COMMANDS
from storage.db import Database
from storage.models import PendingStaffMenu
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

BOSS, MEDIATOR, LATE, NEWCOMER, STRANGER = 100, 200, 250, 300, 555
STAFF = f"coordinator:{BOSS},mediator:{MEDIATOR},mediator:{LATE}"
FR = Translator.load("fr")
MENU_LATER = "n'a pas encore ouvert le bot"
SEND_START = "envoyez /start"
CHAT_NOT_FOUND = "Bad Request: chat not found"


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    settings: Settings
    clock: ManualClock

    async def resident(self, telegram_id: int, name: str) -> SimulatedUser:
        await ResidentService(self.db, self.clock).give_consent(telegram_id, name, "fr")
        user = self.client.user(telegram_id, name, "fr")
        await user.register()
        return user

    async def menu(self, telegram_id: int) -> list[str]:
        return [c["command"] for c in await self.client.commands(f"chat:{telegram_id}")]

    async def waiting(self) -> set[int]:
        async with self.db.read() as session:
            return set(await session.scalars(select(PendingStaffMenu.telegram_id)))


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(emulator, database_url, staff=STAFF, outbox_sweep_seconds=0.2)
        yield World(emulator, client, db, settings, new_clock())


def menu_of(*roles: str) -> list[str]:
    staff = dict.fromkeys(c for r, cs in STAFF_COMMANDS.items() if r in roles for c in cs)
    return [*RESIDENT_COMMANDS, *staff]


async def opens_the_bot(user: SimulatedUser) -> None:
    """The person opens the bot and sends /start; the answer comes after their menu is set."""
    await user.register()
    await user.send("/start")
    await user.wait_message()


async def test_a_menu_refused_at_start_is_set_at_the_first_update_after_a_restart(
    world: World, caplog
) -> None:
    await world.resident(BOSS, "Claire")
    with caplog.at_level(logging.WARNING, logger="handlers.staff_menus"):
        async with bot_running(world.settings, world.clock):
            pass
    assert any("could not set the command menu" in r.getMessage() for r in caplog.records)
    assert await world.menu(BOSS) == menu_of("coordinator")
    assert await world.waiting() == {MEDIATOR, LATE}  # neither had opened the bot

    async with bot_running(world.settings, world.clock):  # a new instance remembers
        late = world.client.user(LATE, "Léa", "fr")
        await opens_the_bot(late)
        assert await world.menu(LATE) == menu_of("mediator")
        assert await world.waiting() == {MEDIATOR}
        await late.send("/help")  # nothing waits any more: a later update changes nothing
        await late.wait_message()
    assert await world.menu(LATE) == menu_of("mediator")


async def test_a_grant_to_someone_who_never_opened_the_bot_promises_no_menu(
    world: World,
) -> None:
    boss = await world.resident(BOSS, "Claire")
    newcomer = await world.resident(NEWCOMER, "Karim")
    async with bot_running(world.settings, world.clock):
        await boss.send(f"/grant facilitator {STRANGER}")
        done = await boss.wait_message(contains="C'est fait")
        assert MENU_LATER in done.text
        await boss.send(f"/grant mediator {NEWCOMER}")  # its notice is queued after...
        await boss.wait_message(contains="C'est fait")
        await newcomer.wait_message(contains="médiateur")  # ...so the stranger's was dropped
        assert await world.menu(STRANGER) == []
        assert STRANGER in await world.waiting()

        await opens_the_bot(world.client.user(STRANGER, "Sami", "fr"))
        assert await world.menu(STRANGER) == menu_of("facilitator")
        assert STRANGER not in await world.waiting()


async def test_the_notice_says_the_menu_is_there_only_when_telegram_took_it(
    world: World,
) -> None:
    boss = await world.resident(BOSS, "Claire")
    newcomer = await world.resident(NEWCOMER, "Karim")
    async with bot_running(world.settings, world.clock):
        # Refused twice: after the grant, then just before the notice goes out.
        await world.client.fail_next("setMyCommands", 400, count=2, description=CHAT_NOT_FOUND)
        await boss.send(f"/grant mediator {NEWCOMER}")
        done = await boss.wait_message(contains="C'est fait")
        assert MENU_LATER in done.text
        told = await newcomer.wait_message(contains="médiateur")
        assert SEND_START in told.text and "sont dans le menu" not in told.text
        assert await world.menu(NEWCOMER) == []

        await newcomer.send("/start")
        await newcomer.wait_message()
        assert await world.menu(NEWCOMER) == menu_of("mediator")

        await boss.send(f"/grant facilitator {NEWCOMER}")
        done = await boss.wait_message(contains="C'est fait")
        assert MENU_LATER not in done.text
        told = await newcomer.wait_message(contains="animateur")
        assert "Vos nouvelles commandes sont dans le menu" in told.text
        assert await world.menu(NEWCOMER) == menu_of("mediator", "facilitator")
        assert NEWCOMER not in await world.waiting()


async def test_a_revoked_menu_that_telegram_refused_is_cleared_at_the_next_update(
    world: World,
) -> None:
    boss = await world.resident(BOSS, "Claire")
    mediator = await world.resident(MEDIATOR, "Sam")
    async with bot_running(world.settings, world.clock):
        assert await world.menu(MEDIATOR) == menu_of("mediator")
        await world.client.fail_next("deleteMyCommands", 400, count=2, description=CHAT_NOT_FOUND)
        await boss.send(f"/revoke mediator {MEDIATOR}")
        done = await boss.wait_message(contains="n'a plus le rôle")
        assert MENU_LATER in done.text
        told = await mediator.wait_message(contains="Vous n'avez plus le rôle")
        assert SEND_START in told.text
        assert await world.menu(MEDIATOR) == menu_of("mediator")  # still the old one

        await mediator.send("bonjour")
        await mediator.wait_message()
        assert await world.menu(MEDIATOR) == []
        assert MEDIATOR not in await world.waiting()


async def test_a_residents_tap_does_not_ask_the_database_about_menus(world: World) -> None:
    """Whether a menu waits is known in memory: taps of people without one cost no query."""
    resident = await world.resident(NEWCOMER, "Karim")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    async with bot_running(world.settings, world.clock) as application:
        engine = services_of(application).db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            for command in ("/help", "/workshops", "/mine"):
                await resident.send(command)
                await resident.wait_message()
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert statements  # the taps did reach the database (their own reads)
    assert not [s for s in statements if "staff_menus_pending" in s]
