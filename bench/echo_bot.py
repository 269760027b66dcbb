"""The baseline: a bare python-telegram-bot echo bot, for the journey benchmark.

One MessageHandler and one CallbackQueryHandler, answering at once with no database, no
translation and no signed callback data. It answers a message with a message carrying one
button, and a pressed button as capacity-bot does: answerCallbackQuery, then the message
edited in place with a button to press again (two Bot API calls per tap, like a tap on a
capacity-bot card). Long polling with the same settings as capacity-bot (timeout 10 s, no
pause between polls) and concurrent updates (capacity-bot runs different people at once).

    BOT_TOKEN=... TELEGRAM_BASE_URL=http://127.0.0.1:8081/bot python -m bench.echo_bot
"""

from __future__ import annotations

import logging
import os

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

log = logging.getLogger("echo_bot")


def keyboard(counter: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data=f"echo|{counter}")]])


async def echo_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The person's text comes back, with a button."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        update.effective_message.text or "?", reply_markup=keyboard(0)
    )


async def echo_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button stops spinning and the message shows the pressed data."""
    query = update.callback_query
    assert query is not None
    await query.answer()
    counter = int((query.data or "echo|0").split("|")[1]) + 1
    await query.edit_message_text(f"Pressed {counter} times", reply_markup=keyboard(counter))


async def said_ready(application: Application) -> None:
    log.info("bot ready as @%s", application.bot.username)


def build() -> Application:
    application = (
        Application.builder()
        .token(os.environ["BOT_TOKEN"])
        .base_url(os.environ["TELEGRAM_BASE_URL"])
        .concurrent_updates(True)
        .post_init(said_ready)
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo_message))
    application.add_handler(CallbackQueryHandler(echo_button))
    return application


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    build().run_polling(poll_interval=0.0, timeout=10, allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
