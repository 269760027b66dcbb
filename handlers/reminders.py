"""Reminders before a workshop: the message, its two buttons, and the calendar file.

The planner (bot/services/reminders.py) queues reminders in the outbox; this module renders
them at send time, in the person's language, and answers their buttons: "I'm coming" records
it and sends a calendar file, "I can't come anymore" asks once, then frees the seat so that
the first person waiting gets it at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from telegram import InputFile, Update
from telegram.constants import ParseMode
from telegram.ext import CallbackQueryHandler

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler, BotJobQueue
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.calendar import CalendarEvent, build_ics, workshop_uid
from bot.services.outbox import ClaimedMessage
from bot.services.registration import CancelOutcome
from bot.services.reminders import REMINDER, Visit
from bot.text.i18n import Html
from handlers import views
from handlers.common import Reply, pressed_button
from handlers.notices import renders

log = logging.getLogger(__name__)

define_actions(
    {
        "reminder_coming": ("Ac", ("id",)),  # workshop: "I'm coming"
        "reminder_cant": ("Ax", ("id",)),  # workshop: "I can't come anymore", asks first
        "reminder_cant_yes": ("Ay", ("id",)),  # workshop: cancel for good
        "reminder_back": ("Ab", ("id",)),  # workshop: keep the seat, show the reminder again
        "calendar": ("Ak", ("id",)),  # workshop: send its calendar file
    }
)
CALLBACK_PATTERN = r"^1\|A[cxybk]\|"
PLANNER_JOB = "reminder-planner"
PLANNER_INTERVAL_S = 60.0
# Soon after start-up, so that reminders due while the bot was down go out at once.
PLANNER_FIRST_S = 5.0


def when(r: Reply, starts_at: datetime, ends_at: datetime) -> Html:
    """The day and hours ("Friday 4 December, from 14:00 to 16:00") in the programme's zone."""
    translator = r.context.services.translator
    tz = r.context.services.settings.tz
    return Html(
        r.t(
            "workshop.when",
            date=translator.date(r.language, starts_at, tz),
            start=translator.time(r.language, starts_at, tz),
            end=translator.time(r.language, ends_at, tz),
        )
    )


def reminder_view(r: Reply, visit: Visit) -> tuple[str, views.Keyboard]:
    text = r.t(
        "reminder.text",
        title=r.context.services.translator.localized(visit.title, r.language),
        when=when(r, visit.starts_at, visit.ends_at),
        venue=visit.venue_name,
        address=visit.address,
    )
    return text, [
        [r.button(r.label("reminder.coming_button"), "reminder_coming", visit.workshop_id)],
        [r.button(r.label("reminder.cant_button"), "reminder_cant", visit.workshop_id)],
    ]


def calendar_file(r: Reply, visit: Visit) -> InputFile:
    """The visit as an .ics file, texts in the person's language."""
    services = r.context.services
    translator = services.translator
    description = "\n\n".join(
        part
        for part in (
            translator.localized(visit.description, r.language),
            r.label("reminder.calendar_description"),
        )
        if part
    )
    event = CalendarEvent(
        uid=workshop_uid(visit.workshop_id, visit.registration_id),
        starts_at=visit.starts_at,
        ends_at=visit.ends_at,
        summary=translator.localized(visit.title, r.language),
        location=f"{visit.venue_name}, {visit.address}",
        latitude=visit.latitude,
        longitude=visit.longitude,
        description=description,
        stamp=services.clock.now(),
        last_modified=visit.updated_at,
    )
    name = f"{r.label('reminder.calendar_file')}-{visit.workshop_id}.ics"
    return InputFile(build_ics(event, services.settings.tz), filename=name)


async def send_calendar(r: Reply, visit: Visit, caption: str) -> None:
    assert r.chat_id is not None
    await r.context.bot.send_document(
        r.chat_id, document=calendar_file(r, visit), caption=caption, parse_mode=ParseMode.HTML
    )


@renders(REMINDER)
async def _render_reminder(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    visit = await context.services.reminders.visit_for_reminder(
        int(message.payload["registration_id"]),
        datetime.fromisoformat(message.payload["starts_at"]),
    )
    if visit is None:
        return None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    venue = {
        "latitude": visit.latitude,
        "longitude": visit.longitude,
        "title": visit.venue_name,
        "address": visit.address,
    }
    return [Outgoing.message(*reminder_view(r, visit)), Outgoing("send_venue", venue)]


async def on_button(update: Update, context: BotContext) -> None:
    """The buttons of reminders and of the calendar file."""
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if await views.consent_required(r):
        return
    workshop_id = callback.int_arg(0)
    await _ACTIONS[callback.action](r, workshop_id)


async def _coming(r: Reply, workshop_id: int) -> None:
    visit = await r.context.services.reminders.confirm_coming(r.user_id, workshop_id)
    if visit is None:
        await r.toast(r.label("reminder.no_seat"), alert=True)
        return
    await r.toast(r.label("reminder.coming_toast"))
    text, _ = reminder_view(r, visit)
    await r.show(
        text + "\n\n" + r.t("reminder.coming_noted"),
        [[r.button(r.label("reminder.cant_button"), "reminder_cant", workshop_id)]],
    )
    await send_calendar(r, visit, r.t("reminder.coming_done"))


async def _cant(r: Reply, workshop_id: int) -> None:
    reminders = r.context.services.reminders
    visit = await reminders.visit_of(r.user_id, workshop_id)
    if visit is None:
        await r.toast(r.label("reminder.no_seat"), alert=True)
        return
    await r.toast()
    translator = r.context.services.translator
    # The seat is promised to "someone waiting" only when somebody is.
    waiting = await reminders.someone_waiting(workshop_id)
    await r.show(
        r.t(
            "reminder.cant_ask_waitlist" if waiting else "reminder.cant_ask",
            title=translator.localized(visit.title, r.language),
            when=when(r, visit.starts_at, visit.ends_at),
        ),
        [
            [r.button(r.label("reminder.cant_confirm"), "reminder_cant_yes", workshop_id)],
            [r.button(r.label("reminder.cant_keep"), "reminder_back", workshop_id)],
        ],
    )


async def _cant_yes(r: Reply, workshop_id: int) -> None:
    result = await r.context.services.registrations.cancel(r.user_id, workshop_id)
    if result.outcome is CancelOutcome.NOT_REGISTERED:
        await r.toast(r.label("reminder.no_seat"), alert=True)
        return
    if result.outcome is CancelOutcome.STARTED:
        await r.toast(r.label("reminder.started"), alert=True)
        return
    if result.promoted_resident_id is not None:
        kick_delivery(r.context)  # the person promoted is told now, not at the next sweep
    await r.toast(r.label("reminder.cancelled_toast"))
    await r.show(
        r.t("reminder.cancelled"),
        [
            [r.button(r.label("menu.workshops"), "list", 0, 0, 0)],
            [r.button(r.label("menu.back_to_menu"), "menu")],
        ],
    )


async def _back(r: Reply, workshop_id: int) -> None:
    visit = await r.context.services.reminders.visit_of(r.user_id, workshop_id)
    if visit is None:
        await r.toast(r.label("reminder.no_seat"), alert=True)
        return
    await r.toast()
    await r.show(*reminder_view(r, visit))


async def _calendar(r: Reply, workshop_id: int) -> None:
    visit = await r.context.services.reminders.visit_of(r.user_id, workshop_id)
    if visit is None:
        await r.toast(r.label("reminder.no_seat"), alert=True)
        return
    await r.toast()
    title = r.context.services.translator.localized(visit.title, r.language)
    await send_calendar(r, visit, r.t("reminder.calendar_caption", title=title))


_ACTIONS = {
    "reminder_coming": _coming,
    "reminder_cant": _cant,
    "reminder_cant_yes": _cant_yes,
    "reminder_back": _back,
    "calendar": _calendar,
}


async def plan_reminders(context: BotContext) -> None:
    """JobQueue job: queue the reminders due now, and deliver them at once if there are any."""
    if await context.services.reminders.plan_due_reminders():
        kick_delivery(context)


def schedule_reminder_planner(job_queue: BotJobQueue) -> None:
    job_queue.run_repeating(
        plan_reminders, interval=PLANNER_INTERVAL_S, first=PLANNER_FIRST_S, name=PLANNER_JOB
    )


def reminder_handlers() -> list[BotHandler]:
    """Register before the resident handlers: they would answer these buttons as stale."""
    return [CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN)]
