"""Talk to a mediator: a resident's message goes to the facilitators' channel as a card, and a
facilitator's reply to that card comes back to the resident, in the resident's language.

The "write your message" step lives in the database (bot/services/mediator_relay.py), so a
restart between the prompt and the message loses nothing. The message reaches
`capture_message` through the free-text router (handlers/free_text.py), which offers it first
to whichever of this prompt and a written survey question was shown last.
"""

from __future__ import annotations

import logging

from telegram import Update, User
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    MessageHandler,
    filters,
)

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.conversations import Conversation
from bot.services.mediator_relay import (
    REPLY_KIND,
    AskOutcome,
    ReplyOutcome,
    Sender,
    TakeOutcome,
)
from bot.services.outbox import ClaimedMessage
from bot.text.i18n import LANGUAGE_NAMES
from handlers import views
from handlers.channel import person_name
from handlers.common import Reply, pressed_button
from handlers.notices import renders

log = logging.getLogger(__name__)

define_actions(
    {
        "mediator_ask": ("M", ()),  # open the "write your message" step
        "mediator_cancel": ("Mc", ()),  # leave it without sending anything
    }
)
CALLBACK_PATTERN = r"^1\|M"


def _cancel_keyboard(r: Reply) -> views.Keyboard:
    return [[r.button(r.label("relay.cancel"), "mediator_cancel")]]


async def on_button(update: Update, context: BotContext) -> None:
    """The "talk to a mediator" and "cancel" buttons."""
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if await views.consent_required(r):
        return
    relay = context.services.mediator_relay
    if callback.action == "mediator_cancel":
        await relay.cancel(r.user_id)
        await r.toast()
        await r.show(*views.main_menu(r, r.t("relay.cancelled")))
        return
    if context.services.settings.admin_chat_id is None:
        await r.toast(r.label("relay.unavailable"), alert=True)
        return
    outcome = await relay.ask(r.user_id)
    await r.toast()
    if outcome is AskOutcome.LIMITED:
        await r.send(*views.main_menu(r, r.t("relay.limited")))
    elif outcome is AskOutcome.READY:
        await r.send(r.t("relay.ask"), _cancel_keyboard(r))
    else:
        await r.send(*views.consent_prompt(r))


async def capture_message(update: Update, context: BotContext, conversation: Conversation) -> None:
    """The person's message after "write your message" (routed by handlers/free_text.py):
    relay it and stop the other handlers. An expired prompt does not take it."""
    message, user = update.effective_message, update.effective_user
    services = context.services
    if message is None or user is None or services.settings.admin_chat_id is None:
        return
    relay = services.mediator_relay
    if not relay.is_fresh(conversation.updated_at):
        return
    r = await Reply.for_update(update, context)
    if message.text is None:  # a voice message, a photo, a sticker...
        await r.send(r.t("relay.text_only"), _cancel_keyboard(r))
        raise ApplicationHandlerStop
    result = await relay.take(user.id, message.text, shown_at=conversation.updated_at)
    match result.outcome:
        case TakeOutcome.NOT_WAITING:
            return
        case TakeOutcome.EMPTY:
            await r.send(r.t("relay.empty"), _cancel_keyboard(r))
        case TakeOutcome.TOO_LONG:
            await r.send(r.t("relay.too_long", limit=relay.max_chars), _cancel_keyboard(r))
        case TakeOutcome.LIMITED:
            await r.send(*views.main_menu(r, r.t("relay.limited")))
        case TakeOutcome.RELAY:
            assert result.sender is not None
            await _relay(r, result.sender, user, message.text)
    raise ApplicationHandlerStop


async def _relay(r: Reply, sender: Sender, user: User, text: str) -> None:
    """Post the card in the channel, then consume the prompt and remember the card for the
    replies (one transaction), and tell the person.

    Sent directly, not through the outbox, which cannot hand back the card's message id.
    The prompt is consumed only after Telegram accepted the card: if the send fails, nothing
    is lost, the person is told that nothing was sent and can send the message again.
    """
    services = r.context.services
    settings = services.settings
    assert settings.admin_chat_id is not None
    facilitators = Reply.for_recipient(r.context, settings.admin_chat_id, settings.default_language)
    card = facilitators.t(
        "relay.card",
        name=person_name(facilitators, sender.first_name or user.first_name),
        language=LANGUAGE_NAMES[r.language],
        text=text,
    )
    try:
        posted = await r.context.bot.send_message(
            settings.admin_chat_id, card, parse_mode=ParseMode.HTML
        )
    except TelegramError as exc:
        log.warning("could not post a mediator card in the admin chat: %s", exc)
        await r.send(r.t("relay.failed"), _cancel_keyboard(r))
        return
    await services.mediator_relay.relayed(
        user.id, sender.resident_id, settings.admin_chat_id, posted.message_id
    )
    await r.send(*views.main_menu(r, r.t("relay.sent")))


async def on_admin_reply(update: Update, context: BotContext) -> None:
    """A facilitator replied to a message in the admin chat: if it is a relayed card, the
    reply goes back to the resident (through the outbox) and the facilitator gets an ack."""
    message = update.effective_message
    settings = context.services.settings
    if (
        message is None
        or message.reply_to_message is None
        or settings.admin_chat_id is None
        or message.chat_id != settings.admin_chat_id
    ):
        return
    relay = context.services.mediator_relay
    result = await relay.queue_reply(
        message.chat_id,
        message.reply_to_message.message_id,
        message.text,
        dedupe_key=f"{REPLY_KIND}:{message.chat_id}:{message.message_id}",
    )
    if result.outcome is ReplyOutcome.NOT_RELAYED:
        return
    r = Reply.for_recipient(context, message.chat_id, settings.default_language)
    if result.outcome is ReplyOutcome.QUEUED:
        kick_delivery(context)
        ack = r.t("relay.ack", name=person_name(r, result.first_name))
    elif result.outcome is ReplyOutcome.TOO_LONG:
        ack = r.t("relay.ack_too_long", limit=relay.max_reply_chars)
    elif result.outcome is ReplyOutcome.NOT_TEXT:
        ack = r.t("relay.ack_not_text")
    else:
        ack = r.t("relay.ack_unreachable")
    await message.reply_text(ack, parse_mode=ParseMode.HTML, do_quote=True)


@renders(REPLY_KIND)
async def render_mediator_reply(
    context: BotContext, message: ClaimedMessage
) -> list[Outgoing] | None:
    assert message.chat_id is not None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    return [
        Outgoing.message(
            r.t("relay.reply", text=message.payload["text"]),
            [[r.button(r.label("relay.answer"), "mediator_ask")]],
        )
    ]


def mediator_handlers() -> list[BotHandler]:
    """Group 0, before the resident handlers: the buttons, and replies in the admin chat."""
    return [
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
        MessageHandler(
            (filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST)
            & filters.REPLY
            & ~filters.ChatType.PRIVATE,
            on_admin_reply,
        ),
    ]
