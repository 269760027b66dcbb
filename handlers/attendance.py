"""Attendance: `/checkin CODE`, the "I'm here" button, and the facilitators' roll call.

Roll-call buttons re-check the role on every press: a button kept from the time someone was
a facilitator, or data built by hand, does nothing for someone who is not one now.
"""

from __future__ import annotations

from datetime import datetime

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler, BotJobQueue
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.attendance import (
    CHECKIN_PROMPT,
    CheckInOutcome,
    CheckInResult,
    RollCall,
    RollWorkshop,
)
from bot.services.outbox import ClaimedMessage
from bot.text.user_text import isolated
from handlers import views
from handlers.common import Reply, pressed_button, require_role
from handlers.notices import renders
from handlers.reminders import when

PRIVATE = filters.ChatType.PRIVATE

define_actions(
    {
        "checkin_here": ("Ah", ("id",)),  # workshop: "I'm here" on a check-in prompt
        "roll_list": ("Al", ()),  # the workshops whose roll can be taken
        "roll_open": ("Ao", ("id",)),  # workshop: its roll call
        "roll_set": ("Ar", ("id", "flag")),  # registration, present (1) or absent (0)
    }
)
CALLBACK_PATTERN = r"^1\|A[hlor]\|"
PROMPT_JOB = "checkin-prompts"
PROMPT_INTERVAL_S = 60.0
NAME_CHARS = 24
TITLE_CHARS = 26
ROLL_ROLES = ("facilitator",)  # coordinators may too (StaffService.has_role)
ROLL_REFUSED = "attendance.roll_refused"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _title(r: Reply, title: dict[str, str] | None) -> str:
    return r.context.services.translator.localized(title or {}, r.language)


def checkin_answer(r: Reply, result: CheckInResult) -> str:
    """What a person is told after /checkin or the "I'm here" button."""
    outcome = result.outcome
    services = r.context.services
    if outcome is CheckInOutcome.CHECKED_IN:
        return r.t("attendance.checked_in", title=_title(r, result.title))
    if outcome is CheckInOutcome.ALREADY:
        return r.t("attendance.already")
    if outcome is CheckInOutcome.NOT_OPEN_YET:
        assert result.opens_at is not None
        tz = services.settings.tz
        return r.t(
            "attendance.not_open_yet",
            date=services.translator.date(r.language, result.opens_at, tz),
            time=services.translator.time(r.language, result.opens_at, tz),
        )
    if outcome is CheckInOutcome.CLOSED:
        return r.t("attendance.closed", title=_title(r, result.title))
    if outcome is CheckInOutcome.NOT_REGISTERED:
        if result.title is None:
            return r.t("attendance.no_seat")
        return r.t("attendance.not_registered", title=_title(r, result.title))
    if outcome is CheckInOutcome.UNKNOWN_CODE:
        return r.t("attendance.unknown_code")
    return r.t("attendance.invalid")


async def checkin_command(update: Update, context: BotContext) -> None:
    """/checkin CODE: the participant says they have arrived."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    raw = " ".join(context.args or [])
    if not raw.strip():
        await r.send(r.t("attendance.how"))
        return
    result = await context.services.attendance.check_in_by_code(r.user_id, raw)
    await r.send(checkin_answer(r, result))


@renders(CHECKIN_PROMPT)
async def _render_prompt(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    visit = await context.services.attendance.visit_for_prompt(
        int(message.payload["registration_id"]),
        datetime.fromisoformat(message.payload["starts_at"]),
    )
    if visit is None:
        return None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    text = r.t("attendance.prompt", title=_title(r, visit.title), venue=visit.venue_name)
    button = r.button(r.label("attendance.here_button"), "checkin_here", visit.workshop_id)
    return [Outgoing.message(text, [[button]])]


def roll_list_view(r: Reply, workshops: list[RollWorkshop]) -> tuple[str, views.Keyboard]:
    if not workshops:
        return r.t("attendance.roll_none"), []
    translator = r.context.services.translator
    tz = r.context.services.settings.tz
    keyboard = [
        [
            r.button(
                f"{translator.short_date(r.language, w.starts_at, tz)} "
                f"{translator.time(r.language, w.starts_at, tz)} · "
                f"{shorten(_title(r, w.title), TITLE_CHARS)}",
                "roll_open",
                w.id,
            )
        ]
        for w in workshops
    ]
    return r.t("attendance.roll_choose"), keyboard


def roll_call_view(r: Reply, roll: RollCall) -> tuple[str, views.Keyboard]:
    workshop = roll.workshop
    lines = [
        r.t(
            "attendance.roll_title",
            title=_title(r, workshop.title),
            when=when(r, workshop.starts_at, workshop.ends_at),
            venue=workshop.venue_name,
            code=roll.checkin_code,
        ),
        "",
    ]
    if roll.entries:
        total = len(roll.entries)
        lines.append(r.t("attendance.roll_count", present=roll.present_count, total=total))
        lines.append(r.t("attendance.roll_hint"))
    else:
        lines.append(r.t("attendance.roll_empty"))
    buttons = []
    for number, entry in enumerate(roll.entries, start=1):
        name = entry.first_name or r.label("attendance.someone", number=number)
        mark = "✅" if entry.present else "⬜"
        label = f"{mark} {isolated(shorten(name, NAME_CHARS))}"
        buttons.append(
            r.button(label, "roll_set", entry.registration_id, 0 if entry.present else 1)
        )
    keyboard = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    keyboard.append(
        [
            r.button(r.label("attendance.roll_refresh"), "roll_open", workshop.id),
            r.button(r.label("attendance.roll_back"), "roll_list"),
        ]
    )
    return "\n".join(lines), keyboard


async def attendance_command(update: Update, context: BotContext) -> None:
    """/attendance: a facilitator takes the roll of a running or recent workshop."""
    r = await Reply.for_update(update, context)
    if not await require_role(r, "/attendance", *ROLL_ROLES, refusal=ROLL_REFUSED):
        return
    workshops = await context.services.attendance.roll_workshops()
    await r.send(*roll_list_view(r, workshops))


async def on_button(update: Update, context: BotContext) -> None:
    """The "I'm here" button and the roll-call buttons."""
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if callback.action == "checkin_here":
        await _here(r, callback.int_arg(0))
        return
    if not await require_role(r, "a roll-call button", *ROLL_ROLES, refusal=ROLL_REFUSED):
        return
    attendance = context.services.attendance
    if callback.action == "roll_list":
        await r.toast()
        await r.show(*roll_list_view(r, await attendance.roll_workshops()))
        return
    if callback.action == "roll_open":
        roll = await attendance.roll_call(callback.int_arg(0))
    else:
        roll = await attendance.set_present(
            callback.int_arg(0), callback.int_arg(1) == 1, marked_by=r.user_id
        )
    if roll is None:
        await r.toast(r.label("attendance.roll_closed"), alert=True)
        return
    await r.toast()
    await r.show(*roll_call_view(r, roll))


async def _here(r: Reply, workshop_id: int) -> None:
    if await views.consent_required(r):
        return
    result = await r.context.services.attendance.check_in_by_button(r.user_id, workshop_id)
    outcome = result.outcome
    if outcome in (CheckInOutcome.CHECKED_IN, CheckInOutcome.ALREADY):
        await r.toast(r.label("attendance.checked_in_toast"))
        await r.show(checkin_answer(r, result))
    elif outcome is CheckInOutcome.CLOSED:
        await r.toast(r.label("attendance.closed_toast"), alert=True)
        await r.show(checkin_answer(r, result))
    else:
        await r.toast()
        await r.send(checkin_answer(r, result))


async def plan_checkin_prompts(context: BotContext) -> None:
    """JobQueue job: tell seat holders of the workshops that start that they can check in."""
    if await context.services.attendance.plan_checkin_prompts():
        kick_delivery(context)


def schedule_checkin_prompts(job_queue: BotJobQueue) -> None:
    job_queue.run_repeating(
        plan_checkin_prompts, interval=PROMPT_INTERVAL_S, first=PROMPT_INTERVAL_S, name=PROMPT_JOB
    )


def attendance_handlers() -> list[BotHandler]:
    """Register before the resident handlers (their catch-alls would answer first)."""
    return [
        CommandHandler("checkin", checkin_command, filters=PRIVATE),
        CommandHandler("attendance", attendance_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
