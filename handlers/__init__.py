"""The only place where handlers are registered, and the command menus they come with."""

from __future__ import annotations

from telegram import BotCommand

from bot.context import BotApplication
from bot.i18n import Translator
from handlers.resident import resident_handlers

# Commands shown in the menu of every resident, in this order; descriptions are the
# `commands.<name>` messages of the locales.
RESIDENT_COMMANDS = (
    "start",
    "workshops",
    "mine",
    "needs",
    "checkin",
    "language",
    "help",
    "privacy",
)


def register_handlers(application: BotApplication) -> None:
    """Wire every handler. Order matters: the first matching handler of a group wins."""
    application.add_handlers(resident_handlers())


def command_menus(translator: Translator) -> dict[str | None, list[BotCommand]]:
    """The command menu in each language; None is the default (the default language)."""
    menus: dict[str | None, list[BotCommand]] = {}
    for language in translator.languages:
        commands = [
            BotCommand(name, translator.label(language, f"commands.{name}"))
            for name in RESIDENT_COMMANDS
        ]
        menus[language] = commands
        if language == translator.default_language:
            menus[None] = commands
    return menus
