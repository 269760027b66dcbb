"""Staff command menus: which commands, in which order, and start-up surviving a failed menu."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from telegram import BotCommand, BotCommandScopeChat
from telegram.error import BadRequest

from bot.logs import log_pseudonym
from bot.services.staff import StaffService
from bot.text.i18n import Translator
from handlers import RESIDENT_COMMANDS, STAFF_COMMANDS
from handlers.staff_menus import set_staff_menus, staff_command_names
from storage.db import Database
from tests.factories import new_clock


def test_coordinators_get_every_staff_command_in_the_table_order():
    assert staff_command_names(frozenset({"coordinator"})) == STAFF_COMMANDS["coordinator"]
    assert (
        staff_command_names(frozenset({"coordinator", "mediator"}))
        == (STAFF_COMMANDS["coordinator"])
    )


def test_other_roles_get_the_union_of_their_commands_once_each():
    both = staff_command_names(frozenset({"facilitator", "mediator"}))
    assert both == tuple(dict.fromkeys(STAFF_COMMANDS["mediator"] + STAFF_COMMANDS["facilitator"]))
    assert len(both) == len(set(both))
    assert staff_command_names(frozenset()) == ()


class FlakyBot:
    """Records menus; Telegram refuses the chat of one person (who never opened the bot)."""

    def __init__(self, refused_chat: int) -> None:
        self.refused_chat = refused_chat
        self.menus: dict[int, list[BotCommand]] = {}

    async def set_my_commands(self, commands: list[BotCommand], scope: BotCommandScopeChat):
        if scope.chat_id == self.refused_chat:
            raise BadRequest("Chat not found")
        self.menus[int(scope.chat_id)] = commands
        return True


@pytest.mark.storage
async def test_one_refused_menu_at_start_is_logged_and_the_others_are_set(db: Database, caplog):
    staff = StaffService(db, new_clock())
    await staff.seed((("coordinator", 1), ("mediator", 2), ("facilitator", 3)))
    token = "123456:menus-test-token"
    services = SimpleNamespace(
        staff=staff,
        translator=Translator.load("fr"),
        settings=SimpleNamespace(default_language="fr"),
        pseudonym=lambda telegram_id: log_pseudonym(telegram_id, token),
    )
    bot = FlakyBot(refused_chat=2)
    with caplog.at_level(logging.WARNING, logger="handlers.staff_menus"):
        await set_staff_menus(bot, services)  # type: ignore[arg-type]
    assert sorted(bot.menus) == [1, 3]
    assert staff.menu_pending(2) and not staff.menu_pending(3)
    assert [c.command for c in bot.menus[3]] == [*RESIDENT_COMMANDS, *STAFF_COMMANDS["facilitator"]]
    assert bot.menus[3][0].description == "Commencer"  # in the default language
    assert [r.getMessage() for r in caplog.records] == [
        f"could not set the command menu of {log_pseudonym(2, token)}"
        " (set at their next update): Chat not found"
    ]
