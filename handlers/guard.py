"""The first handler of every update: which chats the bot listens to at all, and how fast.

Registered alone in the lowest group (GUARD_GROUP), before every feature, it ends the
processing of an update (ApplicationHandlerStop) when:
- the chat is neither a private chat nor the facilitators' channel (ADMIN_CHAT_ID): a group, a
  supergroup or another channel is ignored, nothing answered, nothing stored; when someone who
  is not staff adds the bot to one, the bot leaves it (added by staff, it stays and still
  ignores everything there);
- the update has no chat (inline queries, polls...): the bot offers none of these;
- the person is over their flood budget (bot/plumbing/flood.py): the update is dropped before any
  database work, a pressed button is answered so it stops spinning, and the person is told to
  slow down at most once per FLOOD_NOTICE_INTERVAL_S, in their language;
- the message is an edit: an edited /command or typed answer is never acted on a second time
  (PTB's CommandHandler handles edits by default); in a private chat the person gets a hint.

The flood verdict is taken on arrival by PerPersonUpdateProcessor (bot/plumbing/ordering.py), so a
flood is dropped without waiting in the person's queue; see `install_guard`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, cast

from telegram import ChatMember, Update, User
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, TypeHandler

from bot.plumbing.context import SERVICES_KEY, BotApplication, BotContext, Services
from bot.plumbing.flood import FloodControl
from bot.plumbing.ordering import PerPersonUpdateProcessor
from bot.settings import STAFF_ROLES
from handlers.common import Reply, answer_button

log = logging.getLogger(__name__)

GUARD_GROUP = -100  # before every feature (the lowest of them is -60)
FLOOD_KEY = "flood_control"
FLOOD_NOTICE_INTERVAL_S = 60.0
# Statuses of a member who is in the chat (Telegram's ChatMember.status).
_IN_CHAT = frozenset(
    {ChatMember.OWNER, ChatMember.ADMINISTRATOR, ChatMember.MEMBER, ChatMember.RESTRICTED}
)


def install_guard(application: BotApplication) -> None:
    """Register the guard and let the update processor take flood verdicts on arrival."""
    application.add_handler(TypeHandler(Update, guard), group=GUARD_GROUP)
    processor = application.update_processor
    if isinstance(processor, PerPersonUpdateProcessor):
        processor.admission = partial(_admit_on_arrival, application)


def flood_control(bot_data: dict[Any, Any]) -> FloodControl | None:
    """The application's flood buckets (kept in its bot_data), made from the settings once
    the services exist.

    It takes the bot_data rather than the application: a context's `application` is typed
    with PTB's unsolved context type variable, while its `bot_data` is the application's own
    dict."""
    flood: FloodControl | None = bot_data.get(FLOOD_KEY)
    if flood is None:
        services: Services | None = bot_data.get(SERVICES_KEY)
        if services is None:
            return None
        flood = FloodControl(
            services.settings.flood_rate,
            services.settings.flood_burst,
            notice_interval=FLOOD_NOTICE_INTERVAL_S,
        )
        bot_data[FLOOD_KEY] = flood
    return flood


def _admit_on_arrival(application: BotApplication, update: object) -> bool:
    if not isinstance(update, Update) or update.effective_user is None:
        return True
    flood = flood_control(application.bot_data)
    if flood is None:
        return True
    return flood.decide_early(update.update_id, update.effective_user.id)


async def guard(update: Update, context: BotContext) -> None:
    """Let through what the features handle; drop the rest before it costs anything."""
    services = context.services
    chat, user = update.effective_chat, update.effective_user
    flood = flood_control(context.bot_data)
    within_budget = flood is None or user is None or flood.verdict(update.update_id, user.id)

    if update.my_chat_member is not None and chat is not None and chat.type != ChatType.PRIVATE:
        await _membership_changed(update, context)
        raise ApplicationHandlerStop
    if chat is None or (
        chat.type != ChatType.PRIVATE and chat.id != services.settings.admin_chat_id
    ):
        log.debug("ignored an update from outside the bot's chats")
        await answer_button(update)  # it goes no further
        raise ApplicationHandlerStop
    if chat.type == ChatType.PRIVATE and (user is None or user.is_bot):
        raise ApplicationHandlerStop
    if not within_budget:
        assert user is not None and flood is not None
        if update.callback_query is not None and flood.should_answer(user.id):
            await answer_button(update)  # it goes no further
        if chat.type == ChatType.PRIVATE and flood.should_notice(user.id):
            log.info("slowing down %s: too many updates", services.pseudonym(user.id))
            r = await Reply.for_update(update, context)
            await _send_quietly(r, "guard.slow_down")
        raise ApplicationHandlerStop
    if update.edited_message is not None or update.edited_channel_post is not None:
        if chat.type == ChatType.PRIVATE:
            r = await Reply.for_update(update, context)
            await _send_quietly(r, "guard.edited")
        raise ApplicationHandlerStop


async def _membership_changed(update: Update, context: BotContext) -> None:
    """The bot was added to (or removed from) a group or channel: leave unless staff added it."""
    change = update.my_chat_member
    assert change is not None
    added = (
        change.new_chat_member.status in _IN_CHAT and change.old_chat_member.status not in _IN_CHAT
    )
    services = context.services
    if not added or change.chat.id == services.settings.admin_chat_id:
        return
    # The Bot API always sends "from" here and PTB types from_user as a User, but PTB builds
    # it from the JSON with de_json_optional: an update without "from" (hostile input) gives
    # None, which the guard must survive.
    adder = cast("User | None", change.from_user)
    if adder is not None and await services.staff.has_role(adder.id, *STAFF_ROLES):
        log.info("added to a %s by staff: staying, ignoring it", change.chat.type)
        return
    who = services.pseudonym(adder.id) if adder is not None else "someone unknown"
    log.info("leaving a %s: added by %s, who is not staff", change.chat.type, who)
    try:
        await context.bot.leave_chat(change.chat.id)
    except TelegramError as exc:
        log.warning("could not leave a %s: %s", change.chat.type, exc)


async def _send_quietly(r: Reply, key: str) -> None:
    try:
        await r.send(r.t(key))
    except TelegramError as exc:
        log.info("could not send %s: %s", key, exc)
