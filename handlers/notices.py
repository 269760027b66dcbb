"""Rendering of outbox messages, in the recipient's language at the moment of sending."""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardMarkup
from telegram.constants import ParseMode

from bot.context import BotContext, Services
from bot.services.outbox import ClaimedMessage
from bot.services.registration import PROMOTION_NOTICE
from handlers import views
from handlers.common import Reply


async def render_notice(context: BotContext, message: ClaimedMessage) -> dict[str, Any] | None:
    """Keyword arguments for send_message, or None when the message became pointless."""
    assert message.chat_id is not None
    services: Services = context.services
    r = Reply.for_recipient(context, message.chat_id, message.language)
    if message.kind == PROMOTION_NOTICE:
        card = await services.catalogue.card(int(message.payload["workshop_id"]), message.chat_id)
        if card is None or card.my_status != "confirmed" or not card.is_open:
            return None
        text, keyboard = views.promotion_notice(r, card)
    else:
        raise ValueError(f"unknown outbox message kind {message.kind!r}")
    return {
        "text": text,
        "parse_mode": ParseMode.HTML,
        "reply_markup": InlineKeyboardMarkup(keyboard),
    }
