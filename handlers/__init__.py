"""The only place where handlers are registered, and the command menus they come with."""

from __future__ import annotations

from telegram import BotCommand

from bot.plumbing.context import BotApplication
from bot.text.i18n import Translator
from handlers import channel as _channel_renderers  # noqa: F401  (registers its renderer)
from handlers.attendance import attendance_handlers
from handlers.broadcasts import broadcast_handlers
from handlers.free_text import FREE_TEXT_GROUP, free_text_handler
from handlers.guard import install_guard
from handlers.mediator import mediator_handlers
from handlers.privacy import ACTIVITY_GROUP, activity_handler, privacy_handlers
from handlers.reminders import reminder_handlers
from handlers.resident import resident_handlers
from handlers.staff_menus import MENU_GROUP, waiting_menu_handler
from handlers.staff_roles import staff_role_handlers
from handlers.stats import stats_handlers
from handlers.surveys import survey_handlers
from handlers.workshop_admin import workshop_admin_handlers

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
    "mydata",
    "forget",
    "claim",
)

# Staff commands by role, shown only in the chats of the people who hold the role
# (per-chat command scope), after the resident commands; descriptions are the
# `staff_commands.<name>` messages. Coordinators get every staff command.
STAFF_COMMANDS: dict[str, tuple[str, ...]] = {
    "mediator": ("broadcast", "enrol", "newworkshop", "editworkshop"),
    "facilitator": ("attendance", "stats", "export"),
    "coordinator": (
        "attendance",
        "broadcast",
        "enrol",
        "newworkshop",
        "editworkshop",
        "stats",
        "export",
        "grant",
        "revoke",
    ),
}


def register_handlers(application: BotApplication) -> None:
    """Wire every handler. Order matters: the first matching handler of a group wins."""
    # First of all (group -100): foreign chats, floods and edited messages go no further.
    install_guard(application)
    # Every update from a person moves their retention clock (RGPD); never stops the others.
    application.add_handler(activity_handler(), group=ACTIVITY_GROUP)
    # A staff menu that Telegram refused (never opened the bot) is set at the next update.
    application.add_handler(waiting_menu_handler(), group=MENU_GROUP)
    # What a person types in private goes to their open conversation, if one takes it: a
    # broadcast draft, /newworkshop, /editworkshop or /enrol, the message to a mediator, a
    # written survey answer (one read; precedence in bot/services/conversations.py).
    application.add_handler(free_text_handler(), group=FREE_TEXT_GROUP)
    # Group 0 from here: commands and buttons, the first matching handler wins.
    application.add_handlers(workshop_admin_handlers())
    application.add_handlers(staff_role_handlers())
    application.add_handlers(broadcast_handlers())
    application.add_handlers(mediator_handlers())
    application.add_handlers(reminder_handlers())
    application.add_handlers(attendance_handlers())
    application.add_handlers(stats_handlers())
    # /needs and the survey buttons, before the resident's catch-all button.
    application.add_handlers(survey_handlers())
    # /privacy, /mydata, /forget and their buttons, before the resident's catch-all button.
    application.add_handlers(privacy_handlers())
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
