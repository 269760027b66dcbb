"""The guard end to end: foreign groups and channels, being added by strangers, floods and
edited messages, through the Bot API emulator over real HTTP, on both databases.

Silence is checked by waiting briefly for a bot event that must not come, after the bot has
fetched the update (the emulator's pending updates are down to zero).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from emulator.client import ChatView, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import func, select
from telegram import Update

from bot.clock import ManualClock
from bot.plumbing.context import BotApplication
from bot.settings import Settings
from storage.db import Database
from storage.models import Base
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

ADMIN_CHAT = -100777
STAFF = 9001
SLOW_DOWN = "beaucoup de messages à la fois"


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    database_url: str
    clock: ManualClock

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"admin_chat_id": ADMIN_CHAT, "staff": f"coordinator:{STAFF}"}
        values.update(overrides)
        return settings_for(self.emulator, self.database_url, **values)


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        yield World(emulator, client, db, database_url, new_clock())


async def table_counts(db: Database) -> dict[str, int]:
    """Rows in every table: what an ignored update must leave untouched."""
    async with db.read() as session:
        return {
            table.name: await session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


async def fetched(client: EmulatorClient) -> None:
    """Wait until the bot has fetched every pending update, then let the handlers run."""
    deadline = time.monotonic() + 5
    while (await client.stats())["pending_updates"]:
        assert time.monotonic() < deadline, "the bot did not fetch its updates"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)


async def nothing_from_the_bot(view: ChatView) -> None:
    with pytest.raises(AssertionError, match="no new"):
        await view.wait_event(timeout=0.3)


def bot_added(application: BotApplication, chat: dict, by: SimulatedUser, update_id: int) -> Update:
    """The my_chat_member update Telegram sends when someone adds the bot to a chat."""
    bot = {"id": application.bot.id, "is_bot": True, "first_name": "Bot"}
    return Update.de_json(
        {
            "update_id": update_id,
            "my_chat_member": {
                "chat": chat,
                "from": by.fields | {"is_bot": False},
                "date": int(time.time()),
                "old_chat_member": {"user": bot, "status": "left"},
                "new_chat_member": {"user": bot, "status": "member"},
            },
        },
        application.bot,
    )


async def test_foreign_groups_and_channels_are_ignored_and_strangers_cannot_keep_the_bot(
    world: World,
) -> None:
    stranger = world.client.user(301, "Sami", "fr")
    staff = world.client.user(STAFF, "Claire", "fr")
    group = world.client.group(-2001, "Quartier")
    staff_group = world.client.group(-2002, "Équipe élargie")
    channel = world.client.channel(-1003, "Une chaîne")
    async with bot_running(world.settings(), world.clock) as application:
        before = await table_counts(world.db)
        await group.send(stranger, "/start")
        await group.send(stranger, "bonjour à tous")
        await group.send(stranger, "/broadcast", reply_to=None)
        await channel.post("/start")
        await staff_group.send(staff, "/stats")
        await fetched(world.client)
        for view in (group, channel, staff_group):
            await nothing_from_the_bot(view)

        # Added to a group by someone who is not staff: the bot leaves at once.
        await application.update_queue.put(
            bot_added(application, group.chat | {"id": -2001}, stranger, 10**6)
        )
        assert (await group.wait_event(kind="leave")).kind == "leave"
        # Added by staff: it stays, and still answers nothing there.
        await application.update_queue.put(
            bot_added(application, staff_group.chat | {"id": -2002}, staff, 10**6 + 1)
        )
        await staff_group.send(staff, "/help")
        await fetched(world.client)
        await nothing_from_the_bot(staff_group)
        assert await table_counts(world.db) == before

        # Private chats still work.
        await stranger.send("/start")
        await stranger.wait_message(contains="Êtes-vous d'accord")


async def test_a_flooding_person_is_slowed_down_without_slowing_others(world: World) -> None:
    flooder = world.client.user(401, "Flo", "fr")
    calm = world.client.user(402, "Camille", "en")
    async with bot_running(world.settings(flood_rate=2, flood_burst=5), world.clock):
        await flooder.send("/start")
        prompt = await flooder.wait_message(contains="Êtes-vous d'accord")
        sends = [flooder.send(f"message {n}") for n in range(40)]
        presses = [flooder.press("Non merci", message_id=prompt.message_id) for _ in range(5)]
        query_ids = (await asyncio.gather(*sends, *presses))[40:]

        # Someone else is answered at once while the flood is being dropped.
        started = time.monotonic()
        await calm.send("/start")
        await calm.wait_message(contains="Do you agree")
        assert time.monotonic() - started < 1.0

        await fetched(world.client)
        answers = [m for m in await flooder.messages() if m.message_id != prompt.message_id]
        slow_downs = [m for m in answers if SLOW_DOWN in (m.text or "")]
        assert len(slow_downs) == 1  # told once, in their language
        # The burst, plus what the rate gave back meanwhile; the rest was dropped.
        assert len(answers) - len(slow_downs) <= 5 + 2 * 3
        # Dropped presses are answered at most once a second (tests/test_flood.py), so that a
        # flood cannot spend the bot's overall rate on answers; the first one is answered.
        answered = 0
        for query_id in query_ids:
            try:
                await flooder.callback_answer(str(query_id), timeout=0.5)
                answered += 1
            except AssertionError:
                pass
        assert answered >= 1

        # After a short pause the person is served again.
        await asyncio.sleep(1.0)
        await flooder.send("/help")
        await flooder.wait_message(contains="Comment ça marche")


async def test_edited_messages_are_not_run_again(world: World) -> None:
    person = world.client.user(501, "Edith", "fr")
    async with bot_running(world.settings(), world.clock):
        sent = await person.send("/help")
        await person.wait_message(contains="Comment ça marche")
        before = await table_counts(world.db)
        await person.send_edited(sent, "/start")
        hint = await person.wait_message(contains="messages modifiés")
        assert "Envoyez plutôt un nouveau message" in hint.text
        await fetched(world.client)
        await nothing_from_the_bot(person)  # no consent prompt: the edit did not run /start
        assert await table_counts(world.db) == before
