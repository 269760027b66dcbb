"""Small helpers shared by handlers: who is speaking, in which language, how to answer."""

from __future__ import annotations

import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.plumbing.callbacks import Callback
from bot.plumbing.context import BotContext
from bot.services.residents import ResidentProfile

log = logging.getLogger(__name__)

# Telegram's refusals to edit a message that is no longer there to edit.
MESSAGE_GONE = ("message to edit not found", "message can't be edited")


class Reply:
    """What a handler answers with: the person's language, and helpers to speak it."""

    def __init__(
        self,
        context: BotContext,
        *,
        user_id: int,
        chat_id: int | None,
        language: str,
        profile: ResidentProfile | None = None,
        update: Update | None = None,
    ) -> None:
        self.context = context
        self.user_id = user_id
        self.chat_id = chat_id
        self.language = language
        self.profile = profile
        self.update = update

    @classmethod
    async def for_update(cls, update: Update, context: BotContext) -> Reply:
        """Speak to the person behind an update: their stored language, else Telegram's."""
        user = update.effective_user
        chat = update.effective_chat
        profile = await context.services.residents.profile(user.id) if user else None
        language = context.services.translator.resolve_language(
            profile.language if profile else None, user.language_code if user else None
        )
        return cls(
            context,
            user_id=user.id if user else 0,
            chat_id=chat.id if chat else None,
            language=language,
            profile=profile,
            update=update,
        )

    @classmethod
    def for_recipient(cls, context: BotContext, chat_id: int, language: str | None) -> Reply:
        """Speak to someone outside of an update (outbox messages)."""
        translator = context.services.translator
        return cls(
            context,
            user_id=chat_id,
            chat_id=chat_id,
            language=translator.resolve_language(language, None),
        )

    @property
    def consented(self) -> bool:
        return self.profile is not None and self.profile.consented

    def t(self, key: str, /, **params: object) -> str:
        return self.context.services.translator.text(self.language, key, **params)

    def label(self, key: str, /, **params: object) -> str:
        """Plain text for buttons and toasts, which Telegram does not parse as HTML."""
        return self.context.services.translator.label(self.language, key, **params)

    def p(self, key: str, count: int, /, **params: object) -> str:
        return self.context.services.translator.plural(self.language, key, count, **params)

    def button(self, label: str, action: str, *args: int | str) -> InlineKeyboardButton:
        data = self.context.services.callbacks.encode(self.user_id, action, *args)
        return InlineKeyboardButton(label, callback_data=data)

    async def send(
        self, text: str, keyboard: list[list[InlineKeyboardButton]] | None = None
    ) -> Message:
        assert self.chat_id is not None
        return await self.context.bot.send_message(
            self.chat_id,
            text,
            parse_mode=ParseMode.HTML,
            reply_markup=InlineKeyboardMarkup(keyboard) if keyboard else None,
        )

    async def show(
        self, text: str, keyboard: list[list[InlineKeyboardButton]] | None = None
    ) -> None:
        """Replace the message whose button was pressed, or send a new one for a command.

        The one place where handlers edit the pressed message. A message that is gone (the
        person deleted it after pressing, or Telegram no longer lets it be edited) gets the
        same content as a new message: what the button did is done and must be shown. The
        same content again (a double tap) is left as it is."""
        query = self.update.callback_query if self.update else None
        if query is None or query.message is None or not isinstance(query.message, Message):
            await self.send(text, keyboard)
            return
        try:
            await query.edit_message_text(
                text,
                parse_mode=ParseMode.HTML,
                reply_markup=InlineKeyboardMarkup(keyboard) if keyboard else None,
            )
        except BadRequest as exc:
            reason = exc.message.lower()
            if "not modified" in reason:
                return
            if not any(marker in reason for marker in MESSAGE_GONE):
                raise
            log.info("the pressed message cannot be edited (%s): sending a new one", reason)
            await self.send(text, keyboard)

    async def toast(self, text: str | None = None, *, alert: bool = False) -> None:
        """Answer the pressed button (Telegram shows a spinner until this is done)."""
        query = self.update.callback_query if self.update else None
        if query is not None:
            await query.answer(text, show_alert=alert)


async def answer_button(update: Update) -> None:
    """Stop a pressed button's spinner, best effort: Telegram takes one answer per press and
    refuses the next ("query is too old..."), which is no reason to stop what follows."""
    if update.callback_query is None:
        return
    try:
        await update.callback_query.answer()
    except TelegramError as exc:
        log.info("could not answer a pressed button: %s", exc)


async def pressed_button(
    update: Update, context: BotContext, *, html_stale: bool = False
) -> tuple[Reply, Callback] | None:
    """The Reply and the decoded data of a pressed button; None (after a "stale" alert)
    when the data is stale or forged. html_stale: word the alert with r.t, not r.label."""
    query = update.callback_query
    assert query is not None
    r = await Reply.for_update(update, context)
    callback = context.services.callbacks.decode(r.user_id, query.data)
    if callback is None:
        log.info("refused stale or forged callback data")
        await r.toast(r.t("button.stale") if html_stale else r.label("button.stale"), alert=True)
        return None
    return r, callback


async def require_role(r: Reply, what: str, *roles: str, refusal: str = "staff.refused") -> bool:
    """The role check of every staff command, button and typed answer: True when the person
    holds one of `roles` (coordinators hold them all), else a polite refusal and False.

    Checked on every call, since a button or a conversation outlives a role taken back."""
    if await r.context.services.staff.has_role(r.user_id, *roles):
        return True
    await refuse_role(r, what, roles, refusal)
    return False


async def refuse_role(
    r: Reply, what: str, roles: tuple[str, ...], refusal: str = "staff.refused"
) -> None:
    """Say `refusal` (an alert under a pressed button, a message otherwise) and log the refusal
    of `what`, with the person's pseudonym only."""
    log.info(
        "refused %s to %s: missing role (needs %s)",
        what,
        r.context.services.pseudonym(r.user_id),
        " or ".join(roles),
    )
    if r.update is not None and r.update.callback_query is not None:
        await r.toast(r.label(refusal), alert=True)
    else:
        await r.send(r.t(refusal))
