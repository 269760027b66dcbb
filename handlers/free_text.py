"""One router for what a person types in private: which feature's conversation gets it.

A private message that is not a command costs ONE read: the person's open conversations
(bot/services/conversations.py), already in the order of PRECEDENCE written there. Each is
offered the message in turn, through its feature's capture; a capture that takes the message
stops the update (ApplicationHandlerStop, PTB's own way), one that returns hands it to the
next (a photo in a staff step, a draft already at its audience, a prompt or a survey question
left too long ago). A message no conversation takes goes on to the ordinary handlers of
group 0 (the resident's menu and nudge).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.ext import MessageHandler, filters

from bot.plumbing.context import BotContext, BotHandler
from bot.services.conversations import (
    BROADCAST,
    EDIT_WORKSHOP,
    ENROL,
    MEDIATOR,
    NEW_WORKSHOP,
    SURVEY_TEXT,
    Conversation,
)
from handlers import broadcasts, mediator, surveys, workshop_admin

# Before every feature of group 0, after the guard, the activity clock and the staff menus.
FREE_TEXT_GROUP = -60

Capture = Callable[[Update, BotContext, Conversation], Awaitable[None]]

# The feature that reads each kind of conversation (every kind of ROUTED has one: tested).
CAPTURES: dict[str, Capture] = {
    BROADCAST: broadcasts.capture,
    NEW_WORKSHOP: workshop_admin.capture_text,
    EDIT_WORKSHOP: workshop_admin.capture_text,
    ENROL: workshop_admin.capture_text,
    MEDIATOR: mediator.capture_message,
    SURVEY_TEXT: surveys.capture_written_answer,
}


async def route(update: Update, context: BotContext) -> None:
    """A private message: offered to the person's open conversations, in precedence order."""
    user = update.effective_user
    if user is None:
        return
    for conversation in await context.services.conversations.open(user.id):
        await CAPTURES[conversation.kind](update, context, conversation)


def free_text_handler() -> BotHandler:
    """Group FREE_TEXT_GROUP: every private message but commands (and edits, stopped by the
    guard before)."""
    return MessageHandler(
        filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE & ~filters.COMMAND, route
    )
