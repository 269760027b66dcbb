"""/newworkshop and /editworkshop: the staff create, move, resize and cancel workshops in chat.

Where a staff member is in a guided conversation lives in the database (ConversationState),
so typed answers after a restart still land in the right step. Typed answers reach
`capture_text` through the free-text router (handlers/free_text.py); the same capture serves
the desk enrolment (handlers/enrolment.py).
Every command, button and typed answer checks the role again.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any

from telegram import InlineKeyboardButton, Update
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    filters,
)

from bot.plumbing.callbacks import Callback, define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.conversations import EDIT_WORKSHOP, NEW_WORKSHOP, Conversation, staff_step
from bot.services.outbox import ClaimedMessage
from bot.services.workshops.admin import (
    CHANGE_NOTICE,
    MAX_CAPACITY,
    Change,
    Draft,
    EditOutcome,
    EditResult,
    ManagedWorkshop,
    day_from_number,
    day_number,
    local_moment,
    parse_capacity,
    parse_clock_time,
    parse_day,
    parse_duration,
    time_stamp,
)
from handlers import enrolment, views
from handlers.common import Reply, pressed_button, require_role
from handlers.notices import renders
from handlers.reminders import when

log = logging.getLogger(__name__)

define_actions(
    {
        "wa_theme": ("Wt", ("id",)),  # new workshop: the theme
        "wa_venue": ("Wv", ("id",)),  # new workshop: the venue
        "wa_day": ("Wd", ("id",)),  # new workshop: the day, as YYYYMMDD
        "wa_minutes": ("Wm", ("id",)),  # new workshop: the duration in minutes
        "wa_create": ("Wc", ()),  # new workshop: create it as summarised
        "wa_restart": ("Wr", ()),  # new workshop: start again from the title
        "wa_abort": ("Wx", ()),  # leave /newworkshop or /editworkshop
        "we_list": ("Wl", ("id",)),  # edit: the upcoming workshops, page
        "we_pick": ("Wp", ("id",)),  # edit: what to change in this workshop
        "we_when": ("Wh", ("id",)),  # edit: ask the new day and time
        "we_venues": ("Wg", ("id",)),  # edit: offer the venues
        "we_venue": ("Ws", ("id", "id")),  # edit: move to this venue
        "we_capacity": ("Wk", ("id",)),  # edit: ask the new capacity
        "we_cancel": ("Wz", ("id",)),  # edit: ask before cancelling
        "we_cancel_yes": ("Wy", ("id",)),  # edit: cancel the workshop for good
    }
)
CALLBACK_PATTERN = r"^1\|W[a-z]\|"
PRIVATE = filters.ChatType.PRIVATE
NEW = NEW_WORKSHOP
EDIT = EDIT_WORKSHOP
ROLES = ("mediator", "coordinator")
DURATIONS = (60, 90, 120, 180)
DAYS_OFFERED = 14


def _abort_row(r: Reply) -> list[InlineKeyboardButton]:
    return [r.button(r.label("workshop_admin.abort"), "wa_abort")]


def _title(r: Reply, title: dict[str, str]) -> str:
    return r.context.services.translator.localized(title, r.language)


def _day_label(r: Reply, day: date) -> str:
    services = r.context.services
    moment = local_moment(day, datetime.min.time(), services.settings.tz)
    return services.translator.short_date(r.language, moment, services.settings.tz)


def _minutes_label(minutes: int) -> str:
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes % 60 else f"{minutes // 60}h"


# ---------------------------------------------------------------- /newworkshop


async def _ask_step(r: Reply, state: str, data: dict[str, Any], problem: str | None = None) -> None:
    """Show the question of a step, after the reason the last answer was refused, if any."""
    services = r.context.services
    keyboard: views.Keyboard = []
    if state == "theme":
        themes = await services.workshop_admin.themes()
        keyboard = [
            [
                r.button(
                    views.shorten(services.translator.localized(t.name, r.language)),
                    "wa_theme",
                    t.id,
                )
            ]
            for t in themes
        ]
    elif state == "venue":
        venues = await services.workshop_admin.venues()
        keyboard = [[r.button(views.shorten(str(v.name)), "wa_venue", v.id)] for v in venues]
    elif state == "day":
        today = services.clock.now().astimezone(services.settings.tz).date()
        days = [today + timedelta(days=n) for n in range(DAYS_OFFERED)]
        keyboard = [
            [r.button(_day_label(r, d), "wa_day", day_number(d)) for d in days[i : i + 3]]
            for i in range(0, len(days), 3)
        ]
    elif state == "duration":
        keyboard = [[r.button(_minutes_label(m), "wa_minutes", m) for m in DURATIONS]]
    elif state == "confirm":
        await r.send(await _summary(r, data), _confirm_keyboard(r))
        return
    keyboard.append(_abort_row(r))
    text = r.t(f"workshop_admin.ask.{state}", limit=MAX_CAPACITY)
    await r.send(f"{problem}\n\n{text}" if problem else text, keyboard)


def _confirm_keyboard(r: Reply) -> views.Keyboard:
    return [
        [r.button(r.label("workshop_admin.create"), "wa_create")],
        [r.button(r.label("workshop_admin.restart"), "wa_restart")],
        _abort_row(r),
    ]


def _draft(r: Reply, data: dict[str, Any]) -> Draft:
    tz = r.context.services.settings.tz
    day = day_from_number(int(data["day"]))
    at = parse_clock_time(str(data["time"]))
    assert day is not None and at is not None
    return Draft(
        title=str(data["title"]),
        theme_id=int(data["theme_id"]),
        venue_id=int(data["venue_id"]),
        starts_at=local_moment(day, at, tz),
        duration_minutes=int(data["minutes"]),
        capacity=int(data["capacity"]),
    )


async def _summary(r: Reply, data: dict[str, Any]) -> str:
    services = r.context.services
    draft = _draft(r, data)
    themes = {t.id: t.name for t in await services.workshop_admin.themes()}
    venues = {v.id: v.name for v in await services.workshop_admin.venues()}
    return r.t(
        "workshop_admin.summary",
        title=draft.title,
        theme=services.translator.localized(themes.get(draft.theme_id, ""), r.language),
        venue=str(venues.get(draft.venue_id, "")),
        when=when(r, draft.starts_at, draft.starts_at + timedelta(minutes=draft.duration_minutes)),
        capacity=draft.capacity,
    )


async def _advance(r: Reply, data: dict[str, Any], state: str) -> None:
    await r.context.services.conversations.set(r.user_id, NEW, state, data)
    await _ask_step(r, state, data)


async def newworkshop_command(update: Update, context: BotContext) -> None:
    r = await Reply.for_update(update, context)
    if not await require_role(r, "/newworkshop", *ROLES):
        return
    await context.services.conversations.clear(r.user_id, EDIT, enrolment.CONVERSATION)
    await _advance(r, {}, "title")


async def _new_text(r: Reply, state: str, data: dict[str, Any], text: str) -> None:
    """A typed answer to the current step of /newworkshop: store it and go on, or re-ask."""
    services = r.context.services
    tz = services.settings.tz
    now_local = services.clock.now().astimezone(tz)
    if state == "title":
        title = " ".join(text.split())
        if not 3 <= len(title) <= 120:
            await _ask_step(r, state, data, r.t("workshop_admin.bad.title"))
            return
        await _advance(r, data | {"title": title}, "theme")
    elif state == "day":
        day = parse_day(text)
        if day is None:
            await _ask_step(r, state, data, r.t("workshop_admin.bad.day"))
        elif day < now_local.date():
            await _ask_step(r, state, data, r.t("workshop_admin.bad.past"))
        else:
            await _advance(r, data | {"day": day_number(day)}, "time")
    elif state == "time":
        at = parse_clock_time(text)
        day = day_from_number(int(data["day"]))
        if at is None or day is None:
            await _ask_step(r, state, data, r.t("workshop_admin.bad.time"))
        elif local_moment(day, at, tz) <= services.clock.now():
            await _ask_step(r, state, data, r.t("workshop_admin.bad.past"))
        else:
            await _advance(r, data | {"time": at.strftime("%H:%M")}, "duration")
    elif state == "duration":
        minutes = parse_duration(text)
        if minutes is None:
            await _ask_step(r, state, data, r.t("workshop_admin.bad.duration"))
        else:
            await _advance(r, data | {"minutes": minutes}, "capacity")
    elif state == "capacity":
        capacity = parse_capacity(text)
        if capacity is None:
            await _ask_step(r, state, data, r.t("workshop_admin.bad.capacity", limit=MAX_CAPACITY))
        else:
            await _advance(r, data | {"capacity": capacity}, "confirm")
    else:  # a step answered with buttons
        await _ask_step(r, state, data, r.t("workshop_admin.bad.use_buttons"))


async def _new_button(r: Reply, callback: Callback) -> None:
    services = r.context.services
    step = await services.conversations.get(r.user_id, NEW)
    if callback.action == "wa_restart":
        await r.toast()
        await _advance(r, {}, "title")
        return
    if step is None:
        await r.toast(r.label("workshop_admin.expired"), alert=True)
        return
    data, value = step.data, callback.int_arg(0) if callback.args else 0
    expected = {"wa_theme": "theme", "wa_venue": "venue", "wa_day": "day", "wa_minutes": "duration"}
    if callback.action == "wa_create" and step.state == "confirm":
        await _create(r, data)
        return
    if expected.get(callback.action) != step.state:
        await r.toast(r.label("workshop_admin.expired"), alert=True)
        return
    await r.toast()
    if callback.action == "wa_theme":
        await _advance(r, data | {"theme_id": value}, "venue")
    elif callback.action == "wa_venue":
        await _advance(r, data | {"venue_id": value}, "day")
    elif callback.action == "wa_day":
        day = day_from_number(value)
        today = services.clock.now().astimezone(services.settings.tz).date()
        if day is None or day < today:
            await _ask_step(r, "day", data, r.t("workshop_admin.bad.past"))
        else:
            await _advance(r, data | {"day": value}, "time")
    else:
        await _advance(r, data | {"minutes": value}, "capacity")


async def _create(r: Reply, data: dict[str, Any]) -> None:
    services = r.context.services
    workshop_id = await services.workshop_admin.create(_draft(r, data), r.user_id)
    if workshop_id is None:
        await r.toast()
        await services.conversations.set(r.user_id, NEW, "day", data)
        await _ask_step(r, "day", data, r.t("workshop_admin.bad.past"))
        return
    await services.conversations.clear(r.user_id, NEW)
    await r.toast(r.label("workshop_admin.created_toast"))
    await r.show(r.t("workshop_admin.created", title=str(data["title"])))


# ---------------------------------------------------------------- /editworkshop


async def editworkshop_command(update: Update, context: BotContext) -> None:
    r = await Reply.for_update(update, context)
    if not await require_role(r, "/editworkshop", *ROLES):
        return
    await context.services.conversations.clear(r.user_id, NEW, EDIT, enrolment.CONVERSATION)
    await _show_list(r, 0)


async def _show_list(r: Reply, page: int) -> None:
    services = r.context.services
    workshops, more = await services.workshop_admin.upcoming(page)
    if not workshops and page == 0:
        await r.show(r.t("workshop_admin.edit.none"))
        return
    keyboard = views.upcoming_picker(r, workshops, more, page, "we_pick", "we_list")
    await r.show(r.t("workshop_admin.edit.choose"), keyboard)


def _workshop_text(r: Reply, w: ManagedWorkshop) -> str:
    return r.t(
        "workshop_admin.edit.card",
        title=_title(r, w.title),
        when=when(r, w.starts_at, w.ends_at),
        venue=w.venue_name,
        seats=r.p("workshop_admin.edit.seats", w.seats_taken, capacity=w.capacity),
        waiting=r.p("workshop_admin.edit.waiting", w.waitlisted),
    )


async def _show_workshop(r: Reply, workshop_id: int, note: str | None = None) -> None:
    w = await r.context.services.workshop_admin.workshop(workshop_id)
    if w is None:
        await r.show(r.t("workshop_admin.edit.none"))
        return
    text = _workshop_text(r, w)
    if note:
        text = f"{note}\n\n{text}"
    keyboard = [[r.button(r.label("workshop_admin.back"), "we_list", 0)]]
    if w.status == "scheduled" and w.starts_at > r.context.services.clock.now():
        keyboard = [
            [r.button(r.label("workshop_admin.edit.when"), "we_when", w.id)],
            [r.button(r.label("workshop_admin.edit.venue"), "we_venues", w.id)],
            [r.button(r.label("workshop_admin.edit.capacity"), "we_capacity", w.id)],
            [r.button(r.label("workshop_admin.edit.cancel"), "we_cancel", w.id)],
            *keyboard,
        ]
    if note:
        await r.send(text, keyboard)
    else:
        await r.show(text, keyboard)


def _edit_result_text(r: Reply, result: EditResult) -> str:
    match result.outcome:
        case EditOutcome.DONE:
            parts = [r.t("workshop_admin.edit.done")]
            if result.notified:
                parts.append(r.p("workshop_admin.edit.notified", result.notified))
            if result.promoted:
                parts.append(r.p("workshop_admin.edit.promoted", result.promoted))
            return "\n".join(parts)
        case EditOutcome.UNCHANGED:
            return r.t("workshop_admin.edit.unchanged")
        case EditOutcome.BELOW_CONFIRMED:
            return r.p("workshop_admin.edit.below_confirmed", result.confirmed)
        case EditOutcome.IN_THE_PAST:
            return r.t("workshop_admin.bad.past")
        case _:
            return r.t("workshop_admin.edit.closed")


async def _edit_button(r: Reply, callback: Callback) -> None:
    services = r.context.services
    admin = services.workshop_admin
    action = callback.action
    workshop_id = callback.int_arg(0)
    if action == "we_list":
        await r.toast()
        await _show_list(r, workshop_id)
    elif action == "we_pick":
        await r.toast()
        await services.conversations.clear(r.user_id, EDIT)
        await _show_workshop(r, workshop_id)
    elif action == "we_when":
        await r.toast()
        await services.conversations.set(r.user_id, EDIT, "when", {"workshop_id": workshop_id})
        await r.send(r.t("workshop_admin.edit.ask_when"), [_abort_row(r)])
    elif action == "we_capacity":
        await r.toast()
        await services.conversations.set(r.user_id, EDIT, "capacity", {"workshop_id": workshop_id})
        await r.send(r.t("workshop_admin.edit.ask_capacity", limit=MAX_CAPACITY), [_abort_row(r)])
    elif action == "we_venues":
        await r.toast()
        venues = await admin.venues()
        keyboard = [
            [r.button(views.shorten(str(v.name)), "we_venue", workshop_id, v.id)] for v in venues
        ]
        keyboard.append([r.button(r.label("workshop_admin.back"), "we_pick", workshop_id)])
        await r.show(r.t("workshop_admin.edit.ask_venue"), keyboard)
    elif action == "we_venue":
        result = await admin.change_venue(workshop_id, callback.int_arg(1))
        await _after_edit(r, workshop_id, result)
    elif action == "we_cancel":
        await r.toast()
        w = await admin.workshop(workshop_id)
        if w is None:
            return
        await r.show(
            r.t("workshop_admin.edit.cancel_question", title=_title(r, w.title))
            + "\n"
            + r.p("workshop_admin.edit.people", w.seats_taken + w.waitlisted),
            [
                [r.button(r.label("workshop_admin.edit.cancel_yes"), "we_cancel_yes", workshop_id)],
                [r.button(r.label("workshop_admin.back"), "we_pick", workshop_id)],
            ],
        )
    elif action == "we_cancel_yes":
        result = await admin.cancel(workshop_id)
        await _after_edit(r, workshop_id, result)


async def _after_edit(r: Reply, workshop_id: int, result: EditResult) -> None:
    await r.toast()
    if result.notified or result.promoted:
        kick_delivery(r.context)
    await _show_workshop(r, workshop_id, _edit_result_text(r, result))


async def _edit_text(r: Reply, state: str, data: dict[str, Any], text: str) -> None:
    services = r.context.services
    workshop_id = int(data["workshop_id"])
    if state == "when":
        day_part, _, time_part = text.strip().partition(" ")
        day, at = parse_day(day_part), parse_clock_time(time_part)
        if day is None or at is None:
            await r.send(r.t("workshop_admin.bad.when"), [_abort_row(r)])
            return
        result = await services.workshop_admin.move(
            workshop_id, local_moment(day, at, services.settings.tz)
        )
        if result.outcome is EditOutcome.IN_THE_PAST:
            await r.send(r.t("workshop_admin.bad.past"), [_abort_row(r)])
            return
    else:
        capacity = parse_capacity(text)
        if capacity is None:
            await r.send(r.t("workshop_admin.bad.capacity", limit=MAX_CAPACITY), [_abort_row(r)])
            return
        result = await services.workshop_admin.change_capacity(workshop_id, capacity)
        if result.outcome is EditOutcome.BELOW_CONFIRMED:
            await r.send(_edit_result_text(r, result), [_abort_row(r)])
            return
    await services.conversations.clear(r.user_id, EDIT)
    await _after_edit(r, workshop_id, result)


# ---------------------------------------------------------------- buttons and typed text


async def on_button(update: Update, context: BotContext) -> None:
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if not await require_role(r, "a workshop button", *ROLES):
        return
    if callback.action == "wa_abort":
        await context.services.conversations.clear(r.user_id, NEW, EDIT)
        await r.toast()
        await r.show(r.t("workshop_admin.aborted"))
    elif callback.action.startswith("wa_"):
        await _new_button(r, callback)
    else:
        await _edit_button(r, callback)


async def capture_text(update: Update, context: BotContext, conversation: Conversation) -> None:
    """A typed answer in a staff conversation (routed by handlers/free_text.py); anything but
    text is not for it."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    name, step = conversation.kind, staff_step(conversation, context.services.clock.now())
    r = await Reply.for_update(update, context)
    if step.expired:  # forgotten for a day: this text is not an answer to it
        await context.services.conversations.clear(user.id, name)
        await r.send(r.t("conversation.expired", command=f"/{name}"))
        raise ApplicationHandlerStop
    if not await require_role(r, f"an answer to {name}", *ROLES):
        await context.services.conversations.clear(user.id, name)
        raise ApplicationHandlerStop
    if name == NEW:
        await _new_text(r, step.state, step.data, message.text)
    elif name == EDIT:
        await _edit_text(r, step.state, step.data, message.text)
    else:
        await enrolment.on_text(r, step.state, step.data, message.text)
    raise ApplicationHandlerStop


# ---------------------------------------------------------------- the notice to participants


@renders(CHANGE_NOTICE)
async def render_change(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    """Told in the person's language at send time; dropped when a later change made it moot."""
    assert message.chat_id is not None
    payload = message.payload
    change = Change(payload["change"])
    facts = await context.services.workshop_admin.notice_facts(int(payload["registration_id"]))
    if facts is None:
        return None
    w, registration_live = facts
    if change is Change.CANCELLED:
        if w.status != "cancelled":
            return None
    elif (
        w.status != "scheduled"
        or not registration_live
        or (change is Change.TIME and not payload["stamp"].startswith(time_stamp(w.starts_at)))
        or (change is Change.VENUE and not payload["stamp"].startswith(f"{w.venue_id}:"))
    ):
        return None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    text = r.t(
        f"workshop_admin.notice.{change.value}",
        title=_title(r, w.title),
        when=when(r, w.starts_at, w.ends_at),
        venue=w.venue_name,
    )
    if change is Change.CANCELLED:
        keyboard = [[r.button(r.t("menu.workshops"), "list", 0, 0, 0)]]
    else:
        keyboard = [[r.button(r.t("menu.mine"), "mine")]]
    return [Outgoing.message(text, keyboard)]


def workshop_admin_handlers() -> list[BotHandler]:
    """Group 0, before the resident handlers."""
    return [
        CommandHandler("newworkshop", newworkshop_command, filters=PRIVATE),
        CommandHandler("editworkshop", editworkshop_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
        *enrolment.enrolment_handlers(),
    ]
