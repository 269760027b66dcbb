"""The only place where handlers are registered, and the command menus they come with."""

from __future__ import annotations

from telegram import BotCommand

from bot.plumbing.context import BotApplication
from bot.text.i18n import Translator
from handlers import channel as _channel_renderers  # noqa: F401  (registers its renderer)
from handlers.attendance import attendance_handlers
from handlers.broadcasts import CAPTURE_GROUP as BROADCAST_CAPTURE_GROUP
from handlers.broadcasts import broadcast_capture_handler, broadcast_handlers
from handlers.guard import install_guard
from handlers.mediator import CAPTURE_GROUP, mediator_capture_handlers, mediator_handlers
from handlers.privacy import ACTIVITY_GROUP, activity_handler, privacy_handlers
from handlers.reminders import reminder_handlers
from handlers.resident import resident_handlers
from handlers.staff_menus import MENU_GROUP, waiting_menu_handler
from handlers.staff_roles import staff_role_handlers
from handlers.stats import stats_handlers
from handlers.surveys import TEXT_CAPTURE_GROUP, survey_handlers, survey_text_handler
from handlers.workshop_admin import STAFF_TEXT_GROUP, staff_text_handler, workshop_admin_handlers

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
    # The message after "talk to a mediator" (group -25) comes before written survey answers
    # (group -20); handlers/mediator.py lets a survey question shown later take the text.
    application.add_handlers(mediator_capture_handlers(), group=CAPTURE_GROUP)
    # Typed answers of /newworkshop, /editworkshop and /enrol; then their commands and buttons.
    application.add_handler(staff_text_handler(), group=STAFF_TEXT_GROUP)
    application.add_handlers(workshop_admin_handlers())
    application.add_handlers(staff_role_handlers())
    # /broadcast: the text or photo of a draft, then the command and its buttons.
    application.add_handler(broadcast_capture_handler(), group=BROADCAST_CAPTURE_GROUP)
    application.add_handlers(broadcast_handlers())
    application.add_handlers(mediator_handlers())
    application.add_handlers(reminder_handlers())
    application.add_handlers(attendance_handlers())
    application.add_handlers(stats_handlers())
    # Written survey answers, before the resident's catch-all nudge; then /needs and buttons.
    application.add_handler(survey_text_handler(), group=TEXT_CAPTURE_GROUP)
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
