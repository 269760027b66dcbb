"""/enrol: a mediator signs someone up at the EPN desk; /claim CODE: that person, later, from
their own Telegram, takes the record over.

The steps of /enrol are a conversation ("enrol", bot/services/conversations.py); typed answers
reach `on_text` through the free-text router and the staff text capture of
handlers/workshop_admin.py (one capture for all staff conversations).
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.plumbing.callbacks import Callback, define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.plumbing.delivery import kick_delivery
from bot.services.conversations import EDIT_WORKSHOP, ENROL, NEW_WORKSHOP
from bot.services.enrolment import (
    ClaimOutcome,
    EnrolOutcome,
    normalise_name,
    normalise_phone,
)
from bot.text.user_text import isolated
from handlers import views
from handlers.common import Reply, pressed_button, require_role

define_actions(
    {
        "enrol_skip_phone": ("WEs", ()),  # no phone number
        "enrol_consent": ("WEy", ()),  # the person agreed to the privacy notice at the desk
        "enrol_page": ("WEl", ("id",)),  # the upcoming workshops, page
        "enrol_workshop": ("WEw", ("id",)),  # enrol the person in this workshop
        "enrol_abort": ("WEx", ()),  # leave /enrol
    }
)
CALLBACK_PATTERN = r"^1\|WE"
CONVERSATION = ENROL
ROLES = ("mediator", "coordinator")
PRIVATE = filters.ChatType.PRIVATE


def _abort_row(r: Reply) -> list[InlineKeyboardButton]:
    return [r.button(r.label("enrolment.abort"), "enrol_abort")]


async def enrol_command(update: Update, context: BotContext) -> None:
    r = await Reply.for_update(update, context)
    if not await require_role(r, "/enrol", *ROLES):
        return
    conversations = context.services.conversations
    await conversations.clear(r.user_id, NEW_WORKSHOP, EDIT_WORKSHOP)
    await conversations.set(r.user_id, CONVERSATION, "name", {})
    await r.send(r.t("enrolment.ask.name"), [_abort_row(r)])


async def _ask_phone(r: Reply, problem: str | None = None) -> None:
    text = r.t("enrolment.ask.phone")
    await r.send(
        f"{problem}\n\n{text}" if problem else text,
        [[r.button(r.label("enrolment.skip_phone"), "enrol_skip_phone")], _abort_row(r)],
    )


async def _ask_consent(r: Reply, data: dict[str, Any]) -> None:
    await r.context.services.conversations.set(r.user_id, CONVERSATION, "consent", data)
    await r.send(
        r.t("enrolment.ask.consent", name=isolated(str(data["name"]))),
        [[r.button(r.label("enrolment.consent_yes"), "enrol_consent")], _abort_row(r)],
    )


async def _ask_workshop(r: Reply, page: int) -> None:
    services = r.context.services
    workshops, more = await services.workshop_admin.upcoming(page)
    keyboard = views.upcoming_picker(r, workshops, more, page, "enrol_workshop", "enrol_page")
    keyboard.append(_abort_row(r))
    key = "enrolment.ask.workshop" if workshops else "enrolment.no_workshop"
    await r.show(r.t(key), keyboard)


async def on_text(r: Reply, state: str, data: dict[str, Any], text: str) -> None:
    """A typed answer to the current step of /enrol (the role is already checked)."""
    conversations = r.context.services.conversations
    if state == "name":
        name = normalise_name(text)
        if name is None:
            await r.send(
                r.t("enrolment.bad.name") + "\n\n" + r.t("enrolment.ask.name"), [_abort_row(r)]
            )
            return
        await conversations.set(r.user_id, CONVERSATION, "phone", {"name": name})
        await _ask_phone(r)
    elif state == "phone":
        phone = normalise_phone(text)
        if phone is None:
            await _ask_phone(r, r.t("enrolment.bad.phone"))
            return
        await _ask_consent(r, data | {"phone": phone})
    elif state == "consent":
        await _ask_consent(r, data)
    else:
        await r.send(r.t("enrolment.bad.use_buttons"))
        await _ask_workshop(r, 0)


async def on_button(update: Update, context: BotContext) -> None:
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    if not await require_role(r, "an enrolment button", *ROLES):
        return
    conversations = context.services.conversations
    if callback.action == "enrol_abort":
        await conversations.clear(r.user_id, CONVERSATION)
        await r.toast()
        await r.show(r.t("enrolment.aborted"))
        return
    step = await conversations.get(r.user_id, CONVERSATION)
    expected = {
        "enrol_skip_phone": "phone",
        "enrol_consent": "consent",
        "enrol_page": "workshop",
        "enrol_workshop": "workshop",
    }
    if step is None or expected[callback.action] != step.state:
        await r.toast(r.label("workshop_admin.expired"), alert=True)
        return
    await r.toast()
    if callback.action == "enrol_skip_phone":
        await _ask_consent(r, step.data | {"phone": None})
    elif callback.action == "enrol_consent":
        await conversations.set(r.user_id, CONVERSATION, "workshop", step.data)
        await _ask_workshop(r, 0)
    elif callback.action == "enrol_page":
        await _ask_workshop(r, callback.int_arg(0))
    else:
        await _enrol(r, step.data, callback)


async def _enrol(r: Reply, data: dict[str, Any], callback: Callback) -> None:
    services = r.context.services
    workshop_id = callback.int_arg(0)
    result = await services.enrolment.enrol(
        r.user_id, str(data["name"]), data.get("phone"), workshop_id
    )
    if result.outcome is EnrolOutcome.CLOSED:
        await r.send(r.t("enrolment.closed"))
        await _ask_workshop(r, 0)
        return
    await services.conversations.clear(r.user_id, CONVERSATION)
    w = await services.workshop_admin.workshop(workshop_id)
    assert w is not None and result.claim_code is not None
    title = services.translator.localized(w.title, r.language)
    if result.outcome is EnrolOutcome.CONFIRMED:
        place = r.t("enrolment.done.confirmed", name=isolated(str(data["name"])), title=title)
    else:
        place = r.t(
            "enrolment.done.waitlisted",
            name=isolated(str(data["name"])),
            title=title,
            rank=result.waitlist_rank or 0,
        )
    await r.show(place + "\n\n" + r.t("enrolment.done.code", code=result.claim_code))


async def claim_command(update: Update, context: BotContext) -> None:
    """/claim CODE: attach the record made at the desk to this Telegram account."""
    r = await Reply.for_update(update, context)
    if not r.consented:
        await r.send(r.t("enrolment.claim.consent_first"))
        await r.send(*views.consent_prompt(r))
        return
    code = "".join(context.args or ())
    if not code:
        await r.send(r.t("enrolment.claim.how"))
        return
    result = await context.services.enrolment.claim(r.user_id, code)
    if result.outcome is ClaimOutcome.CLAIMED:
        kick_delivery(context)
        await r.send(*views.main_menu(r, r.p("enrolment.claim.done", result.registrations)))
    elif result.outcome is ClaimOutcome.NO_CONSENT:
        await r.send(*views.consent_prompt(r))
    else:
        await r.send(r.t("enrolment.claim.invalid"))


def enrolment_handlers() -> list[BotHandler]:
    """Group 0, before the resident handlers (registered by handlers/workshop_admin.py)."""
    return [
        CommandHandler("enrol", enrol_command, filters=PRIVATE),
        CommandHandler("claim", claim_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
