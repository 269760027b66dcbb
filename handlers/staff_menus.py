"""Command menus per chat: a staff member sees the resident commands, then their own.

Telegram shows a chat's own menu (BotCommandScopeChat) before the default one, so staff
commands are set on each staff member's private chat only; the default menu, which every
resident sees, never lists them. Menus are set at start and after every grant or revoke.

Telegram refuses the menu of someone who never opened the bot ("chat not found"): the menu
then waits in the database (bot/services/staff.py) and is set on the person's next update
in a private chat (`set_waiting_menu`, its own handler group). Whether a menu waits is known
without a query, so a resident's tap costs nothing more.
"""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeChat, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import TypeHandler

import handlers  # RESIDENT_COMMANDS and STAFF_COMMANDS, read at call time (import cycle)
from bot.plumbing.context import BotContext, BotHandler, BotJobQueue, Services
from bot.services.staff import COORDINATOR, StaffMenu
from bot.text.i18n import Translator

log = logging.getLogger(__name__)

# After the activity handler (-90), before every feature: the menu is there for the answer.
MENU_GROUP = -85
# Another instance may have queued a menu: this one reloads who waits, every so often.
RELOAD_WAITING_MENUS_S = 60.0


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


async def refresh_staff_menu(bot: Bot, services: Services, telegram_id: int) -> bool:
    """After a grant or revoke: True when the menu is set, False when it waits for the
    person's next update (the change itself stands either way)."""
    return await _apply_or_defer(bot, services, await services.staff.menu_of(telegram_id))


async def set_staff_menus(bot: Bot, services: Services) -> None:
    """At start: every staff member's menu; one failure does not stop the others."""
    await services.staff.load_pending_menus()
    for menu in await services.staff.menus():
        await _apply_or_defer(bot, services, menu)


async def set_waiting_menu(update: Update, context: BotContext) -> None:
    """The person writes to the bot in private: set their menu if Telegram refused it before."""
    user, chat = update.effective_user, update.effective_chat
    staff = context.services.staff
    if user is None or chat is None or chat.type != ChatType.PRIVATE:
        return
    if not staff.menu_pending(user.id):
        return
    menu = await staff.claim_pending_menu(user.id)
    if menu is not None:
        await _apply_or_defer(context.bot, context.services, menu)


def waiting_menu_handler() -> BotHandler:
    return TypeHandler(Update, set_waiting_menu)


def schedule_waiting_menus_reload(job_queue: BotJobQueue) -> None:
    job_queue.run_repeating(
        _reload_waiting_menus,
        interval=RELOAD_WAITING_MENUS_S,
        first=RELOAD_WAITING_MENUS_S,
        name="staff-menus-reload",
    )


async def _reload_waiting_menus(context: BotContext) -> None:
    await context.services.staff.load_pending_menus()


async def _apply_or_defer(bot: Bot, services: Services, menu: StaffMenu) -> bool:
    """Set the menu now (True), or, when Telegram refuses, keep it for the next update."""
    try:
        await apply_staff_menu(bot, services, menu)
    except TelegramError as exc:
        log.warning(
            "could not set the command menu of %s (set at their next update): %s",
            services.pseudonym(menu.telegram_id),
            exc,
        )
        await services.staff.menu_refused(menu.telegram_id)
        return False
    if services.staff.menu_pending(menu.telegram_id):
        await services.staff.menu_applied(menu.telegram_id)
    return True
