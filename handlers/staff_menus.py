"""Command menus per chat: a staff member sees the resident commands, then their own.

Telegram shows a chat's own menu (BotCommandScopeChat) before the default one, so staff
commands are set on each staff member's private chat only; the default menu, which every
resident sees, never lists them. Menus are set at start and after every grant or revoke.
"""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeChat
from telegram.error import TelegramError

import handlers  # RESIDENT_COMMANDS and STAFF_COMMANDS, read at call time (import cycle)
from bot.context import Services
from bot.i18n import Translator
from bot.services.staff import COORDINATOR, StaffMenu

log = logging.getLogger(__name__)


def staff_command_names(roles: frozenset[str]) -> tuple[str, ...]:
    """The staff commands of these roles, each once, in the order of STAFF_COMMANDS."""
    if COORDINATOR in roles:
        return handlers.STAFF_COMMANDS[COORDINATOR]
    names: dict[str, None] = {}
    for role, commands in handlers.STAFF_COMMANDS.items():
        if role in roles:
            names.update(dict.fromkeys(commands))
    return tuple(names)


def staff_menu_commands(
    translator: Translator, language: str, roles: frozenset[str]
) -> list[BotCommand]:
    resident = [
        BotCommand(name, translator.label(language, f"commands.{name}"))
        for name in handlers.RESIDENT_COMMANDS
    ]
    staff = [
        BotCommand(name, translator.label(language, f"staff_commands.{name}"))
        for name in staff_command_names(roles)
    ]
    return resident + staff


async def apply_staff_menu(bot: Bot, services: Services, menu: StaffMenu) -> None:
    """Set the person's chat menu, or remove it when they hold no role any more."""
    scope = BotCommandScopeChat(menu.telegram_id)
    if not menu.roles:
        await bot.delete_my_commands(scope=scope)
        return
    language = menu.language or services.settings.default_language
    commands = staff_menu_commands(services.translator, language, menu.roles)
    await bot.set_my_commands(commands, scope=scope)


async def refresh_staff_menu(bot: Bot, services: Services, telegram_id: int) -> None:
    """After a grant or revoke; a failure is logged, the change itself stands."""
    await _apply_or_log(bot, services, await services.staff.menu_of(telegram_id))


async def set_staff_menus(bot: Bot, services: Services) -> None:
    """At start: every staff member's menu; one failure does not stop the others."""
    for menu in await services.staff.menus():
        await _apply_or_log(bot, services, menu)


async def _apply_or_log(bot: Bot, services: Services, menu: StaffMenu) -> None:
    try:
        await apply_staff_menu(bot, services, menu)
    except TelegramError as exc:
        log.warning(
            "could not set the command menu of %s: %s", services.pseudonym(menu.telegram_id), exc
        )
