"""The global error handler: the person gets an apology, the channel a notice, the log the trace.

Every exception a handler or a JobQueue job lets out reaches `on_error` (python-telegram-bot
passes job errors to the error handlers too, with `context.job` set). It:

- logs the full trace with a short random error id;
- apologises to the person in their language (private chats only; `error.sorry`);
- tells the facilitators' channel (ADMIN_CHAT_ID) in one line: the error id, the exception
  class and where it happened (the handler, or the job's name). Never the exception's
  message: messages routinely carry data (a KeyError shows the key it missed, a database
  error the values of the row, Telegram's 400 a piece of the text), and the channel is read
  by more people than the logs. The id leads from the notice to the trace in the log;
- at most one notice per kind (exception class and place) per ERROR_NOTICE_INTERVAL; the
  next one says how many were left out meanwhile;
- a 403 "blocked by the user" from a person's private chat marks them inactive (no apology:
  it could not reach them).

The notice is sent directly, best effort, in one attempt: not through the outbox, because the
database may be what failed. A failed notice is logged and forgotten.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType

from telegram import Update
from telegram.constants import ChatType, ParseMode
from telegram.error import Forbidden, NetworkError, TelegramError

from bot.plumbing.context import SERVICES_KEY, BotContext, Services
from bot.plumbing.request import single_attempt
from handlers.common import answer_button

log = logging.getLogger(__name__)

NOTICES_KEY = "error_notices"
# Library frames, skipped to find the place of an error (the first other frame: the handler).
LIBRARY_MODULES = (
    "telegram",
    "asyncio",
    "contextlib",
    "apscheduler",
    "aiohttp",
    "httpx",
    "httpcore",
)
NOT_A_PLACE = (__name__, "bot.plumbing.request")
BLOCKED_MARKERS = ("blocked by the user", "user is deactivated")


def new_error_id() -> str:
    """A short random id, shown in the channel and written in the log line with the trace."""
    return secrets.token_hex(4)


@dataclass
class ErrorNotices:
    """Rate limit of the channel notices: one per kind per interval, counting the rest."""

    interval: timedelta
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _suppressed: dict[tuple[str, str], int] = field(default_factory=dict)

    def admit(self, kind: tuple[str, str]) -> int | None:
        """None when a notice of this kind went out less than `interval` ago (it is counted);
        else the number of notices left out since the last one (a notice may go now)."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval.total_seconds():
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)


def error_place(context: BotContext, error: BaseException | None) -> str:
    """The job's name, or the first function of ours in the trace (the handler)."""
    if context.job is not None:
        return f"job {context.job.name}"
    traceback: TracebackType | None = error.__traceback__ if error else None
    while traceback is not None:
        frame = traceback.tb_frame
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] not in LIBRARY_MODULES and module not in NOT_A_PLACE:
            return f"{module}.{frame.f_code.co_qualname}"
        traceback = traceback.tb_next
    return "python-telegram-bot"  # fetching updates, or PTB's own machinery


def _notices(context: BotContext, services: Services) -> ErrorNotices:
    notices = context.application.bot_data.get(NOTICES_KEY)
    if notices is None:
        notices = ErrorNotices(services.settings.error_notice_interval)
        context.application.bot_data[NOTICES_KEY] = notices
    return notices


async def on_error(update: object, context: BotContext) -> None:
    """Log the failure and apologise in the person's language, never leaving them in silence."""
    error = context.error
    error_id = new_error_id()
    place = error_place(context, error)
    kind = type(error).__name__ if error is not None else "Error"
    services: Services | None = context.application.bot_data.get(SERVICES_KEY)
    # The update when it comes from a private chat (a person to answer), else None.
    private = (
        update
        if isinstance(update, Update)
        and update.effective_chat is not None
        and update.effective_chat.type == ChatType.PRIVATE
        else None
    )
    if (
        private is not None
        and isinstance(error, Forbidden)
        and any(marker in error.message.lower() for marker in BLOCKED_MARKERS)
    ):
        await _mark_blocked(private, services)
        return
    if update is None and context.job is None and isinstance(error, NetworkError):
        # Fetching updates failed (python-telegram-bot retries with backoff): one line each
        # time, not a trace, for as long as the Bot API is unreachable.
        log.warning(
            "error %s: Bot API unreachable while fetching updates (%s)",
            error_id,
            kind,
            extra={"error_id": error_id},
        )
    else:
        # error_id also as a field: LOG_FORMAT=json emits it on its own, for the collector.
        log.error(
            "error %s (%s in %s)",
            error_id,
            kind,
            place,
            exc_info=error,
            extra={"error_id": error_id},
        )
    if services is None:  # before start-up finished: nobody to apologise to, no channel yet
        return
    if private is not None:
        await _apologise(private, context, services)
    await _notify_channel(context, services, error_id, kind, place)


async def _mark_blocked(update: Update, services: Services | None) -> None:
    user = update.effective_user
    if services is None or user is None:
        return
    try:
        profile = await services.residents.profile(user.id)
        if profile is not None:
            await services.residents.mark_unreachable(profile.id)
    except Exception:  # the next send to them will try again
        log.warning("could not mark a person who blocked the bot inactive", exc_info=True)
        return
    log.info("%s blocked the bot: marked inactive", services.pseudonym(user.id))


async def _apologise(update: Update, context: BotContext, services: Services) -> None:
    user = update.effective_user
    chat = update.effective_chat
    assert chat is not None
    try:
        profile = await services.residents.profile(user.id) if user else None
    except Exception:  # the database may be what failed: apologise in Telegram's language
        log.warning("could not read the profile for the apology", exc_info=True)
        profile = None
    language = services.translator.resolve_language(
        profile.language if profile else None, user.language_code if user else None
    )
    # Best effort, apart from the apology: the failed handler has often answered the
    # button already, Telegram refuses a second answer, and the apology must go all the same.
    await answer_button(update)
    try:
        await context.bot.send_message(
            chat.id, services.translator.text(language, "error.sorry"), parse_mode=ParseMode.HTML
        )
    except TelegramError:
        log.warning("could not send the apology", exc_info=True)


async def _notify_channel(
    context: BotContext, services: Services, error_id: str, kind: str, place: str
) -> None:
    chat_id = services.settings.admin_chat_id
    if chat_id is None:
        return
    suppressed = _notices(context, services).admit((kind, place))
    if suppressed is None:
        return
    translator = services.translator
    language = services.settings.default_language
    text = translator.text(language, "errors.notice", error_id=error_id, kind=kind, place=place)
    if suppressed:
        text += "\n" + translator.plural(language, "errors.suppressed", suppressed)
    try:
        with single_attempt():  # best effort: the Bot API may be what is failing
            await context.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
    except TelegramError as exc:
        log.warning(
            "could not send the notice of error %s: %s",
            error_id,
            type(exc).__name__,
            extra={"error_id": error_id},
        )
