"""The resident journey: consent, language, browsing workshops, registering, cancelling."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.plumbing.callbacks import Callback
from bot.plumbing.context import BotContext, BotHandler
from bot.plumbing.delivery import kick_delivery
from bot.services.registration import CancelOutcome, RegisterOutcome
from handlers import views
from handlers.common import Reply, pressed_button
from handlers.privacy import ask_withdraw
from handlers.surveys import after_registration

log = logging.getLogger(__name__)
PRIVATE = filters.ChatType.PRIVATE


async def start(update: Update, context: BotContext) -> None:
    """/start: the welcome and privacy notice with the consent button, or the menu if known."""
    r = await Reply.for_update(update, context)
    if r.consented:
        await r.send(*views.main_menu(r, r.t("start.welcome_back")))
    else:
        await r.send(*views.consent_prompt(r))


async def show_menu(update: Update, context: BotContext) -> None:
    """/menu: the main menu."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    await r.send(*views.main_menu(r))


async def workshops_command(update: Update, context: BotContext) -> None:
    """/workshops: the list of upcoming workshops."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    await _show_list(r, 0, 0, 0)


async def mine_command(update: Update, context: BotContext) -> None:
    """/mine: the person's seats and waitlist places."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    places = await context.services.registrations.my_places(r.user_id)
    await r.send(*views.my_places(r, places))


async def language_command(update: Update, context: BotContext) -> None:
    """/language: choose the language of the bot."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    await r.send(*views.language_choice(r))


async def help_command(update: Update, context: BotContext) -> None:
    """/help: what the bot does and how to use it, in plain words."""
    r = await Reply.for_update(update, context)
    keyboard = views.main_menu(r)[1] if r.consented else views.consent_prompt(r)[1][:2]
    await r.send(r.t("help.text"), keyboard)


async def free_text(update: Update, context: BotContext) -> None:
    """Text that is not a command: a friendly nudge towards the buttons, never silence."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    await r.send(*views.main_menu(r, r.t("fallback.text")))


async def unknown_command(update: Update, context: BotContext) -> None:
    """A command the bot does not know."""
    r = await Reply.for_update(update, context)
    await r.send(
        *views.main_menu(r, r.t("fallback.command")) if r.consented else views.consent_prompt(r)
    )


async def on_button(update: Update, context: BotContext) -> None:
    """Every inline button: decode and check the data, then act."""
    pressed = await pressed_button(update, context, html_stale=True)
    if pressed is None:
        return
    r, callback = pressed
    if callback.action in ("consent", "notice", "help"):
        await _BEFORE_CONSENT[callback.action](r, callback)
        return
    if await views.consent_required(r):
        return
    await _AFTER_CONSENT[callback.action](r, callback)


async def _consent(r: Reply, cb: Callback) -> None:
    if cb.int_arg(0) == 0:
        await r.toast()
        if r.consented:
            # "No thanks" on an old prompt from someone who had agreed: "I have kept nothing
            # about you" would not be true; ask, as /privacy's withdraw button does.
            await ask_withdraw(r)
            return
        await r.show(r.t("consent.declined"))
        return
    user = r.update.effective_user if r.update else None
    r.profile = await r.context.services.residents.give_consent(
        r.user_id, user.first_name if user else None, r.language
    )
    await r.toast(r.label("consent.thanks"))
    await r.show(*views.language_choice(r))


async def _notice_in(r: Reply, cb: Callback) -> None:
    r.language = str(cb.args[0])
    await r.toast()
    await r.show(*views.consent_prompt(r))


async def _help(r: Reply, _cb: Callback) -> None:
    await r.toast()
    keyboard = views.main_menu(r)[1] if r.consented else views.consent_prompt(r)[1][:2]
    await r.send(r.t("help.text"), keyboard)


async def _languages(r: Reply, _cb: Callback) -> None:
    await r.toast()
    await r.show(*views.language_choice(r))


async def _set_language(r: Reply, cb: Callback) -> None:
    language = str(cb.args[0])
    await r.context.services.residents.set_language(r.user_id, language)
    r.language = language
    await r.toast(r.label("language.saved"))
    await r.show(*views.main_menu(r, r.t("language.done")))


async def _menu(r: Reply, _cb: Callback) -> None:
    await r.toast()
    await r.show(*views.main_menu(r))


async def _show_list(r: Reply, territory_id: int, theme_id: int, page: int) -> None:
    catalogue = r.context.services.catalogue
    result = await catalogue.upcoming(territory_id, theme_id, page)
    area, theme = await catalogue.filter_names(territory_id, theme_id)
    await r.show(*views.workshop_list(r, result, territory_id, theme_id, area, theme))


async def _list(r: Reply, cb: Callback) -> None:
    await r.toast()
    await _show_list(r, cb.int_arg(0), cb.int_arg(1), cb.int_arg(2))


async def _pick_area(r: Reply, cb: Callback) -> None:
    theme_id = cb.int_arg(0)
    choices = await r.context.services.catalogue.territories(theme_id)
    await r.toast()
    await r.show(*views.filter_choices(r, choices, kind="area", territory_id=0, theme_id=theme_id))


async def _pick_theme(r: Reply, cb: Callback) -> None:
    territory_id = cb.int_arg(0)
    choices = await r.context.services.catalogue.themes(territory_id)
    await r.toast()
    await r.show(
        *views.filter_choices(r, choices, kind="theme", territory_id=territory_id, theme_id=0)
    )


async def _show_card(r: Reply, workshop_id: int, back: tuple[int, int, int]) -> bool:
    card = await r.context.services.catalogue.card(workshop_id, r.user_id)
    if card is None:
        return False
    await r.show(*views.workshop_card(r, card, back))
    return True


async def _card(r: Reply, cb: Callback) -> None:
    back = (cb.int_arg(1), cb.int_arg(2), cb.int_arg(3))
    if await _show_card(r, cb.int_arg(0), back):
        await r.toast()
    else:
        await r.toast(r.label("button.stale"), alert=True)


async def _register(r: Reply, cb: Callback) -> None:
    workshop_id = cb.int_arg(0)
    back = (cb.int_arg(1), cb.int_arg(2), cb.int_arg(3))
    services = r.context.services
    result = await services.registrations.register(r.user_id, workshop_id)
    outcome = result.outcome
    if outcome is RegisterOutcome.UNKNOWN:
        await r.toast(r.label("button.stale"), alert=True)
        return
    if outcome is RegisterOutcome.NO_CONSENT:
        await r.toast()
        await r.show(*views.consent_prompt(r))
        return
    toasts = {
        RegisterOutcome.CONFIRMED: "register.toast_confirmed",
        RegisterOutcome.WAITLISTED: "register.toast_waitlisted",
        RegisterOutcome.ALREADY_CONFIRMED: "register.already_confirmed",
        RegisterOutcome.ALREADY_WAITLISTED: "register.already_waitlisted",
        RegisterOutcome.CLOSED: "register.closed",
    }
    await r.toast(r.label(toasts[outcome]), alert=outcome is RegisterOutcome.CLOSED)
    card = await services.catalogue.card(workshop_id, r.user_id)
    if card is None:
        return
    await r.show(*views.workshop_card(r, card, back))
    if outcome is RegisterOutcome.CONFIRMED:
        await r.send(*views.registration_confirmed(r, card))
    elif outcome is RegisterOutcome.WAITLISTED:
        await r.send(*views.waitlist_joined(r, card, result.waitlist_rank or 0))
    if outcome in (RegisterOutcome.CONFIRMED, RegisterOutcome.WAITLISTED):
        # The "before" autonomy question, and the needs survey after a first registration.
        await after_registration(r, workshop_id, confirmed=outcome is RegisterOutcome.CONFIRMED)


async def _venue(r: Reply, cb: Callback) -> None:
    card = await r.context.services.catalogue.card(cb.int_arg(0), r.user_id)
    if card is None:
        await r.toast(r.label("button.stale"), alert=True)
        return
    await r.toast()
    assert r.chat_id is not None
    await r.context.bot.send_venue(
        r.chat_id,
        latitude=card.latitude,
        longitude=card.longitude,
        title=card.venue_name,
        address=card.venue_address,
    )


async def _cancel_ask(r: Reply, cb: Callback) -> None:
    workshop_id, origin = cb.int_arg(0), cb.int_arg(1)
    card = await r.context.services.catalogue.card(workshop_id, r.user_id)
    if card is None or card.my_status is None:
        await r.toast(r.label("cancel.nothing"), alert=True)
        return
    await r.toast()
    await r.show(*views.cancel_question(r, card, origin))


async def _cancel_yes(r: Reply, cb: Callback) -> None:
    workshop_id = cb.int_arg(0)
    result = await r.context.services.registrations.cancel(r.user_id, workshop_id)
    if result.outcome is CancelOutcome.NOT_REGISTERED:
        await r.toast(r.label("cancel.nothing"), alert=True)
        return
    if result.outcome is CancelOutcome.STARTED:
        await r.toast(r.label("cancel.started"), alert=True)
        return
    if result.promoted_resident_id is not None:
        kick_delivery(r.context)
    await r.toast(r.label("cancel.toast"))
    key = "cancel.done_waitlist" if result.was_waitlisted else "cancel.done"
    await r.show(
        r.t(key),
        [
            [r.button(r.t("menu.mine"), "mine")],
            [r.button(r.t("menu.workshops"), "list", 0, 0, 0)],
        ],
    )


async def _mine(r: Reply, _cb: Callback) -> None:
    await r.toast()
    places = await r.context.services.registrations.my_places(r.user_id)
    await r.show(*views.my_places(r, places))


_BEFORE_CONSENT = {"consent": _consent, "notice": _notice_in, "help": _help}
_AFTER_CONSENT = {
    "languages": _languages,
    "lang": _set_language,
    "menu": _menu,
    "list": _list,
    "pick_area": _pick_area,
    "pick_theme": _pick_theme,
    "card": _card,
    "register": _register,
    "venue": _venue,
    "cancel_ask": _cancel_ask,
    "cancel_yes": _cancel_yes,
    "mine": _mine,
}


def resident_handlers() -> list[BotHandler]:
    """The resident journey, in private chats. Order matters: commands, buttons, then text."""
    return [
        CommandHandler("start", start, filters=PRIVATE),
        CommandHandler("menu", show_menu, filters=PRIVATE),
        CommandHandler("workshops", workshops_command, filters=PRIVATE),
        CommandHandler("mine", mine_command, filters=PRIVATE),
        CommandHandler("language", language_command, filters=PRIVATE),
        CommandHandler("help", help_command, filters=PRIVATE),
        CallbackQueryHandler(on_button),
        MessageHandler(PRIVATE & filters.COMMAND, unknown_command),
        MessageHandler(PRIVATE & ~filters.COMMAND & ~filters.UpdateType.EDITED, free_text),
    ]
