"""The emulator refuses what Telegram refuses: a chat's command menu for a chat the bot has
never seen, and texts over 4,096 UTF-16 code units once the entities are parsed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import telegram
from emulator import BotApiEmulator, EmulatorClient
from telegram.error import BadRequest

TOKEN = "123456:TEST-TOKEN"
STRANGER, ALICE = 555, 1001


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator(token=TOKEN) as server:
        yield server


@pytest.fixture
async def client(emulator: BotApiEmulator) -> AsyncIterator[EmulatorClient]:
    async with EmulatorClient(emulator.side_url) as side:
        yield side


@pytest.fixture
async def bot(emulator: BotApiEmulator) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=emulator.base_url) as ptb_bot:
        yield ptb_bot


async def test_a_chat_menu_needs_a_chat_the_bot_knows(
    bot: telegram.Bot, client: EmulatorClient
) -> None:
    scope = telegram.BotCommandScopeChat(STRANGER)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.set_my_commands([("grant", "Donner un rôle")], scope=scope)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.delete_my_commands(scope=scope)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.get_my_commands(scope=scope)
    assert await client.commands(f"chat:{STRANGER}") == []

    await client.user(ALICE, "Alice", "fr").register()  # she opened the bot
    scope = telegram.BotCommandScopeChat(ALICE)
    assert await bot.set_my_commands([("grant", "Donner un rôle")], scope=scope)
    assert await client.commands(f"chat:{ALICE}") == [
        {"command": "grant", "description": "Donner un rôle"}
    ]
    assert await bot.delete_my_commands(scope=scope)
    assert await client.commands(f"chat:{ALICE}") == []


async def test_text_length_counts_utf16_units_after_entity_parsing(
    bot: telegram.Bot, client: EmulatorClient
) -> None:
    await client.user(ALICE, "Alice", "fr").register()
    emoji = "😀"  # one code point, two UTF-16 units
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(ALICE, emoji * 2048 + "x")
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(ALICE, "<b>" + emoji * 2049 + "</b>", parse_mode="HTML")
    sent = await bot.send_message(ALICE, "<b>" + emoji * 2048 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.edit_message_text(emoji * 2048 + "x", ALICE, sent.message_id)
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_document(ALICE, b"data", filename="a.txt", caption=emoji * 512 + "x")
    await bot.send_document(ALICE, b"data", filename="a.txt", caption=emoji * 512)
