"""The global error handler: the person gets an apology, the log gets the trace."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType, ParseMode
from telegram.error import TelegramError

from bot.context import BotContext

log = logging.getLogger(__name__)


async def on_error(update: object, context: BotContext) -> None:
    """Log the failure and apologise in the person's language, never leaving them in silence."""
    log.error("error while handling an update", exc_info=context.error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    if update.effective_chat.type != ChatType.PRIVATE:
        return
    services = context.services
    user = update.effective_user
    profile = await services.residents.profile(user.id) if user else None
    language = services.translator.resolve_language(
        profile.language if profile else None, user.language_code if user else None
    )
    try:
        if update.callback_query is not None:
            await update.callback_query.answer()
        await context.bot.send_message(
            update.effective_chat.id,
            services.translator.text(language, "error.sorry"),
            parse_mode=ParseMode.HTML,
        )
    except TelegramError:
        log.warning("could not send the apology", exc_info=True)
