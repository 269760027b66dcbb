"""/broadcast: compose an announcement, choose its audience, preview, confirm, follow it live.

Composition is kept in the database (bot/services/broadcasts/drafts.py), so a restart in the middle
loses nothing. Typed text and photos reach `capture` through the free-text router
(handlers/free_text.py) only while the person is composing. Every staff call, buttons
included, checks the role again. What the broadcast sender shows (the announcement, the
progress, the report) is in handlers/broadcast_progress.py.

Residents get each announcement with a "🔕 Stop announcements" button, and can turn
announcements back on from that message or from the language screen.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import InlineKeyboardButton, Update
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    filters,
)

from bot.plumbing.broadcast_sending import kick_broadcasts
from bot.plumbing.callbacks import Callback, define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.services.broadcasts.drafts import Draft, Step, TakeOutcome
from bot.services.broadcasts.sending import (
    NEEDS_SURVEY,
)
from bot.services.conversations import Conversation
from bot.text.i18n import LANGUAGE_NAMES, Html
from handlers import views
from handlers.broadcast_progress import broadcast_outgoing
from handlers.common import Reply, pressed_button, require_role

log = logging.getLogger(__name__)

define_actions(
    {
        "broadcast_nophoto": ("B0", ()),  # send without a photo
        "broadcast_kind": ("Bk", ("id",)),  # audience kind (AUDIENCE_KINDS index)
        "broadcast_to": ("Bt", ("id", "id")),  # audience kind, then its territory/workshop/need
        "broadcast_lang": ("Bl", ("lang",)),  # the audience is one language
        "broadcast_page": ("Bw", ("id", "id")),  # workshops for registrants/waitlist: kind, page
        "broadcast_back": ("Bb", ()),  # back to the choice of audience
        "broadcast_confirm": ("Bc", ()),
        "broadcast_cancel": ("Bx", ()),  # discard the draft
        "broadcast_stop": ("Bs", ("id",)),  # stop a broadcast in flight
        "broadcast_optout": ("Bo", ()),  # a resident: no more announcements
        "broadcast_optin": ("Bi", ()),  # a resident: announcements again
        "broadcast_settings": ("Bn", ()),  # a resident: the announcements switch
    }
)
CALLBACK_PATTERN = r"^1\|B"
PRIVATE = filters.ChatType.PRIVATE
STAFF_ROLES = ("mediator",)  # coordinators may do everything
# Audience kinds by button index (callback data carries the index).
KINDS = ("all", "territory", "registrants", "waitlist", "need", "language")
NEEDS_QUESTION = "hard_tasks"
_STAFF_ACTIONS = frozenset(
    {
        "broadcast_nophoto",
        "broadcast_kind",
        "broadcast_to",
        "broadcast_lang",
        "broadcast_page",
        "broadcast_back",
        "broadcast_confirm",
        "broadcast_cancel",
        "broadcast_stop",
    }
)


def _cancel_row(r: Reply) -> list[InlineKeyboardButton]:
    return [r.button(r.label("broadcast.button.cancel"), "broadcast_cancel")]


# -- composing ------------------------------------------------------------------------------


async def broadcast_command(update: Update, context: BotContext) -> None:
    """/broadcast: start composing (mediators and coordinators)."""
    r = await Reply.for_update(update, context)
    if not await require_role(r, "/broadcast", *STAFF_ROLES):
        return
    await context.services.broadcasts.begin(r.user_id)
    await r.send(r.t("broadcast.ask_text"), [_cancel_row(r)])


async def capture(update: Update, context: BotContext, conversation: Conversation) -> None:
    """The text or photo of a draft (routed by handlers/free_text.py); at another step, or
    another kind of message, it is not for the draft."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or (message.text is None and not message.photo):
        return
    service = context.services.broadcasts
    draft = service.draft_from(conversation.state, conversation.data, conversation.updated_at)
    if draft is None or draft.step not in (Step.TEXT, Step.PHOTO):
        return
    r = await Reply.for_update(update, context)
    if not await require_role(r, "a broadcast draft", *STAFF_ROLES):
        await service.discard(user.id)
        raise ApplicationHandlerStop
    if message.photo:
        caption = message.caption_html if message.caption else None
        result = await service.take_photo(
            user.id, message.photo[-1].file_id, caption, len(message.caption or ""), draft=draft
        )
    elif message.text is not None and draft.step is Step.TEXT:
        result = await service.take_text(user.id, message.text_html, len(message.text), draft=draft)
    elif draft.step is Step.PHOTO:
        await r.send(r.t("broadcast.ask_photo"), _photo_keyboard(r))
        raise ApplicationHandlerStop
    else:
        await r.send(r.t("broadcast.text_only"), [_cancel_row(r)])
        raise ApplicationHandlerStop
    match result.outcome:
        case TakeOutcome.NOT_COMPOSING:
            return
        case TakeOutcome.EMPTY:
            await r.send(r.t("broadcast.empty"), [_cancel_row(r)])
        case TakeOutcome.TOO_LONG:
            key = (
                "broadcast.too_long_caption"
                if message.photo or draft.step is Step.PHOTO
                else "broadcast.too_long"
            )
            keyboard = _photo_keyboard(r) if draft.step is Step.PHOTO else [_cancel_row(r)]
            await r.send(r.t(key, limit=result.limit), keyboard)
        case TakeOutcome.NEXT:
            assert result.draft is not None
            if result.draft.step is Step.PHOTO:
                await r.send(r.t("broadcast.ask_photo"), _photo_keyboard(r))
            else:
                await r.send(*_audience_menu(r))
    raise ApplicationHandlerStop


def _photo_keyboard(r: Reply) -> views.Keyboard:
    return [[r.button(r.label("broadcast.button.no_photo"), "broadcast_nophoto")], _cancel_row(r)]


def _audience_menu(r: Reply) -> tuple[str, views.Keyboard]:
    keyboard = [
        [r.button(r.label(f"broadcast.button.kind_{kind}"), "broadcast_kind", index)]
        for index, kind in enumerate(KINDS)
    ]
    keyboard.append(_cancel_row(r))
    return r.t("broadcast.ask_audience"), keyboard


def _need_choices(r: Reply) -> list[tuple[str, dict[str, str]]]:
    """The hard tasks of the needs survey (key, texts), "something else" left out."""
    question = r.context.services.surveys.catalog[NEEDS_SURVEY].question(NEEDS_QUESTION)
    assert question is not None
    return [(c.key, c.text.as_dict()) for c in question.choices if c.key != "other"]


async def _audience_choices(r: Reply, kind_index: int, page: int = 0) -> None:
    """The second step of an audience: which neighbourhood, workshop, need or language."""
    services = r.context.services
    translator = services.translator
    kind = KINDS[kind_index]
    keyboard: views.Keyboard = []
    if kind == "territory":
        for territory_id, name in await services.broadcasts.territories():
            keyboard.append(
                [r.button(views.shorten(name), "broadcast_to", kind_index, territory_id)]
            )
    elif kind in ("registrants", "waitlist"):
        result = await services.catalogue.upcoming(0, 0, page)
        tz = services.settings.tz
        for item in result.items:
            label = (
                f"{translator.short_date(r.language, item.starts_at, tz)} · "
                f"{views.shorten(translator.localized(item.title, r.language), 28)}"
            )
            keyboard.append([r.button(label, "broadcast_to", kind_index, item.id)])
        navigation = []
        if result.page > 0:
            navigation.append(
                r.button(r.t("list.previous"), "broadcast_page", kind_index, result.page - 1)
            )
        if result.page + 1 < result.page_count:
            navigation.append(
                r.button(r.t("list.next"), "broadcast_page", kind_index, result.page + 1)
            )
        if navigation:
            keyboard.append(navigation)
    elif kind == "need":
        for index, (_, texts) in enumerate(_need_choices(r)):
            label = views.shorten(translator.localized(texts, r.language))
            keyboard.append([r.button(label, "broadcast_to", kind_index, index)])
    elif kind == "language":
        keyboard.append(
            [r.button(name, "broadcast_lang", code) for code, name in LANGUAGE_NAMES.items()]
        )
    if not keyboard:
        text = r.t("broadcast.nothing_to_choose")
    else:
        text = r.t(f"broadcast.choose_{kind}")
    keyboard.append([r.button(r.label("broadcast.button.back"), "broadcast_back")])
    keyboard.append(_cancel_row(r))
    await r.show(text, keyboard)


async def _describe(r: Reply, audience: dict[str, Any]) -> str:
    services = r.context.services
    kind = audience["kind"]
    params: dict[str, object] = {}
    if kind in ("territory", "registrants", "waitlist"):
        subject = await services.broadcasts.audience_subject(audience)
        params["name"] = services.translator.localized(subject or "?", r.language)
    elif kind == "need":
        texts = dict(_need_choices(r)).get(str(audience["key"]), {})
        params["name"] = services.translator.localized(texts or "?", r.language)
    elif kind == "language":
        params["name"] = LANGUAGE_NAMES.get(str(audience["code"]), "?")
    return r.t(f"broadcast.audience.{kind}", **params)


async def _preview(r: Reply, draft: Draft) -> None:
    """The message exactly as residents will get it, then the count and the choice."""
    assert draft.audience is not None and draft.text is not None
    services = r.context.services
    count = await services.broadcasts.count(draft.audience)
    await r.toast()
    await r.show(r.t("broadcast.preview_below"))
    outgoing = broadcast_outgoing(r, draft.text, draft.photo_file_id)
    assert r.chat_id is not None
    await getattr(r.context.bot, outgoing.method)(r.chat_id, **outgoing.kwargs)
    summary = "\n".join(
        [
            r.t("broadcast.summary_audience", audience=Html(await _describe(r, draft.audience))),
            r.p("broadcast.summary_count", count),
        ]
    )
    keyboard = [[r.button(r.label("broadcast.button.change_audience"), "broadcast_back")]]
    if count > 0:
        keyboard.insert(0, [r.button(r.label("broadcast.button.confirm"), "broadcast_confirm")])
    keyboard.append(_cancel_row(r))
    await r.send(summary, keyboard)


# -- buttons ------------------------------------------------------------------------------


async def on_button(update: Update, context: BotContext) -> None:
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if callback.action in _STAFF_ACTIONS:
        if not await require_role(r, "a broadcast button", *STAFF_ROLES):
            return
        await _STAFF[callback.action](r, callback)
        return
    if await views.consent_required(r):
        return
    await _RESIDENT[callback.action](r, callback)


async def _no_photo(r: Reply, _cb: Callback) -> None:
    draft = await r.context.services.broadcasts.skip_photo(r.user_id)
    await r.toast()
    if draft is None:
        await r.show(r.t("broadcast.stale"))
        return
    await r.show(*_audience_menu(r))


async def _kind(r: Reply, cb: Callback) -> None:
    index = cb.int_arg(0)
    draft = await r.context.services.broadcasts.draft(r.user_id)
    if draft is None or draft.step not in (Step.AUDIENCE, Step.PREVIEW) or index >= len(KINDS):
        await r.toast(r.label("button.stale"), alert=True)
        return
    if KINDS[index] == "all":
        await _choose(r, {"kind": "all"})
        return
    await r.toast()
    await _audience_choices(r, index)


async def _page(r: Reply, cb: Callback) -> None:
    index = cb.int_arg(0)
    if index >= len(KINDS):
        await r.toast(r.label("button.stale"), alert=True)
        return
    await r.toast()
    await _audience_choices(r, index, cb.int_arg(1))


async def _to(r: Reply, cb: Callback) -> None:
    index, value = cb.int_arg(0), cb.int_arg(1)
    kind = KINDS[index] if index < len(KINDS) else None
    if kind in ("territory", "registrants", "waitlist"):
        await _choose(r, {"kind": kind, "id": value})
    elif kind == "need" and value < len(needs := _need_choices(r)):
        await _choose(r, {"kind": "need", "key": needs[value][0]})
    else:
        await r.toast(r.label("button.stale"), alert=True)


async def _lang(r: Reply, cb: Callback) -> None:
    await _choose(r, {"kind": "language", "code": str(cb.args[0])})


async def _choose(r: Reply, audience: dict[str, Any]) -> None:
    draft = await r.context.services.broadcasts.choose_audience(r.user_id, audience)
    if draft is None:
        await r.toast(r.label("button.stale"), alert=True)
        return
    await _preview(r, draft)


async def _back(r: Reply, _cb: Callback) -> None:
    service = r.context.services.broadcasts
    draft = await service.draft(r.user_id)
    if draft is not None and draft.step is Step.PREVIEW:
        draft = await service.back_to_audience(r.user_id)
    if draft is None or draft.step is not Step.AUDIENCE:
        await r.toast(r.label("button.stale"), alert=True)
        return
    await r.toast()
    await r.show(*_audience_menu(r))


def _pressed_message_id(r: Reply) -> int | None:
    query = r.update.callback_query if r.update else None
    return query.message.message_id if query is not None and query.message is not None else None


async def _shown_in_pressed(r: Reply) -> int | None:
    """The broadcast whose progress message holds the pressed button, if any: only the
    broadcast sender edits that message (its edits must not be overtaken)."""
    message_id = _pressed_message_id(r)
    if message_id is None or r.chat_id is None:
        return None
    return await r.context.services.broadcasts.shown_in(r.chat_id, message_id)


async def _cancel(r: Reply, _cb: Callback) -> None:
    """Discard the draft. Pressed on an older message once a broadcast is confirmed, it
    says the truth: the broadcast is being sent, and Stop is the way to end it."""
    service = r.context.services.broadcasts
    if await service.discard(r.user_id):
        await r.toast()
        await r.show(r.t("broadcast.discarded"))
        return
    sending = await service.sending_by(r.user_id)
    if sending is None:
        await r.toast()
        if await _shown_in_pressed(r) is None:
            await r.show(r.t("broadcast.stale"))
        return
    await r.toast(r.label("broadcast.toast.being_sent"), alert=True)
    shown = await _shown_in_pressed(r)
    if shown is not None:
        # Its preview, not yet turned into the progress message: the sender does it now.
        kick_broadcasts(r.context, confirmed=shown)
        return
    await r.show(
        r.t("broadcast.being_sent"),
        [[r.button(r.label("broadcast.button.stop"), "broadcast_stop", sending)]],
    )


async def _confirm(r: Reply, _cb: Callback) -> None:
    """Queue the broadcast; its preview becomes the progress message, shown (and kept up to
    date) by the broadcast sender alone."""
    broadcast_id = await r.context.services.broadcasts.confirm(
        r.user_id, progress_message_id=_pressed_message_id(r)
    )
    if broadcast_id is None:
        await r.toast(r.label("button.stale"), alert=True)
        return
    await r.toast(r.label("broadcast.toast.confirmed"))
    kick_broadcasts(r.context, confirmed=broadcast_id)


async def _stop(r: Reply, cb: Callback) -> None:
    broadcast_id = cb.int_arg(0)
    stopped = await r.context.services.broadcasts.cancel(broadcast_id)
    if stopped:
        await r.toast(r.label("broadcast.toast.stopped"))
        kick_broadcasts(r.context, stopped=broadcast_id)
    else:
        await r.toast(r.label("broadcast.toast.already_over"), alert=True)
    if await _shown_in_pressed(r) is None:
        # Stop offered by an old Cancel button: that message must not keep a live Stop.
        key = "broadcast.toast.stopped" if stopped else "broadcast.toast.already_over"
        await r.show(r.t(key))


# -- residents ----------------------------------------------------------------------------


async def _optout(r: Reply, _cb: Callback) -> None:
    await r.context.services.broadcasts.set_announcements(r.user_id, False)
    await r.toast(r.label("broadcast.toast.turned_off"))
    await r.send(
        r.t("broadcast.turned_off"),
        [[r.button(r.label("broadcast.button.optin"), "broadcast_optin")]],
    )


async def _optin(r: Reply, _cb: Callback) -> None:
    await r.context.services.broadcasts.set_announcements(r.user_id, True)
    await r.toast(r.label("broadcast.toast.turned_on"))
    await r.show(*settings_view(r, True))


async def _settings(r: Reply, _cb: Callback) -> None:
    wanted = await r.context.services.broadcasts.wants_announcements(r.user_id)
    await r.toast()
    await r.show(*settings_view(r, wanted is not False))


def settings_view(r: Reply, wanted: bool) -> tuple[str, views.Keyboard]:
    if wanted:
        text, button = r.t("broadcast.settings_on"), ("broadcast.button.optout", "broadcast_optout")
    else:
        text, button = r.t("broadcast.settings_off"), ("broadcast.button.optin", "broadcast_optin")
    return text, [
        [r.button(r.label(button[0]), button[1])],
        [r.button(r.t("menu.back_to_menu"), "menu")],
    ]


_STAFF = {
    "broadcast_nophoto": _no_photo,
    "broadcast_kind": _kind,
    "broadcast_to": _to,
    "broadcast_lang": _lang,
    "broadcast_page": _page,
    "broadcast_back": _back,
    "broadcast_confirm": _confirm,
    "broadcast_cancel": _cancel,
    "broadcast_stop": _stop,
}
_RESIDENT = {
    "broadcast_optout": _optout,
    "broadcast_optin": _optin,
    "broadcast_settings": _settings,
}


def broadcast_handlers() -> list[BotHandler]:
    """Group 0, before the resident handlers: the command and the buttons."""
    return [
        CommandHandler("broadcast", broadcast_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
