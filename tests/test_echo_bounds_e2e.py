"""Answers that quote what a person typed stay short, whatever they typed (issue 13, item 8):
the quote is cut to QUOTE_LIMIT characters with an ellipsis, HTML-escaped and isolated."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator

from bot.text.user_text import QUOTE_LIMIT
from storage.db import Database
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

BOSS = 100
# The longest answer with a quote: its fixed words, the list of roles, and the quote.
SHORT_ENOUGH = 400


@pytest.fixture
async def boss(db: Database, database_url: str) -> AsyncIterator[SimulatedUser]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(emulator, database_url, staff=f"coordinator:{BOSS}")
        user = client.user(BOSS, "Claire", "fr")
        await user.register()
        async with bot_running(settings, new_clock()):
            yield user


@pytest.mark.parametrize(
    ("command", "answer", "typed"),
    [
        ("/grant {long} 1", "Je ne connais pas le rôle", "<b>" + "x" * 5000),
        ("/revoke mediator {long}", "n'est pas un identifiant Telegram", "9" * 5000),
        ("/stats 30d {long}", "Je ne connais pas le quartier", "<i>" + "y" * 5500),
    ],
)
async def test_a_long_argument_is_quoted_short_and_escaped(boss, command, answer, typed):
    await boss.send(command.format(long=typed))
    reply = await boss.wait_message(contains=answer)
    assert reply.text is not None and len(reply.text) < SHORT_ENOUGH
    quote = typed[: QUOTE_LIMIT - 1] + "…"
    assert f"\u2068{quote}\u2069" in reply.text
    assert reply.html is not None and "<b>x" not in reply.html and "<i>y" not in reply.html
