"""The emulator's deleted messages: a person deletes one, and Telegram's refusals follow."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import telegram
from emulator import BotApiEmulator, EmulatorClient, EmulatorError
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest

TOKEN = "123456:TEST-TOKEN"
MENU = InlineKeyboardMarkup([[InlineKeyboardButton("Menu", callback_data="menu")]])


@pytest.fixture
async def world() -> AsyncIterator[tuple[telegram.Bot, EmulatorClient]]:
    async with BotApiEmulator(token=TOKEN) as server, EmulatorClient(server.side_url) as client:
        bot = telegram.Bot(TOKEN, base_url=server.base_url)
        await bot.initialize()
        try:
            yield bot, client
        finally:
            await bot.shutdown()


async def test_a_message_the_person_deleted_can_no_longer_be_edited_nor_deleted(world) -> None:
    bot, client = world
    alice = client.user(1001, "Alice", "fr")
    await alice.register()
    sent = await bot.send_message(1001, "Le menu", reply_markup=MENU)
    kept = await bot.send_message(1001, "Gardé")

    await alice.delete(sent.message_id)
    assert [m.message_id for m in await alice.messages()] == [kept.message_id]
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("Nouveau", chat_id=1001, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_reply_markup(chat_id=1001, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(1001, sent.message_id)
    # What remains is still the bot's to edit.
    await bot.edit_message_text("Gardé, modifié", chat_id=1001, message_id=kept.message_id)
    assert (await alice.last()).text == "Gardé, modifié"


async def test_deleting_an_unknown_message_is_refused(world) -> None:
    _, client = world
    alice = client.user(1002, "Alice", "fr")
    first = await alice.send("bonjour")
    await alice.delete(first)  # a person may delete their own messages too
    assert await alice.messages(include_user=True) == []
    with pytest.raises(EmulatorError, match="404: chat 1002 has no message"):
        await alice.delete(first)
    with pytest.raises(EmulatorError, match="404: unknown chat 999"):
        await client.user(999).delete(1)
