"""Privacy (RGPD): the notice (/privacy), access (/mydata), erasure (/forget), withdrawal of
consent, and the retention job with its notice "you will be erased in a week".

Every interaction moves the person's retention clock (`note_activity`, a handler group of
its own that runs before the others and never stops them). Membership updates are not
interactions: blocking the bot must not keep the data; they only say whether the person
can be written to.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, time
from zoneinfo import ZoneInfo

from telegram import ChatMember, InputFile, Update
from telegram.constants import ChatType
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    TypeHandler,
    filters,
)

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler, BotJobQueue
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.outbox import ClaimedMessage
from bot.services.privacy.retention import RETENTION_NOTICE, RETENTION_REPORT
from bot.text.i18n import Html
from handlers import views
from handlers.common import Reply, pressed_button
from handlers.notices import renders

log = logging.getLogger(__name__)
PRIVATE = filters.ChatType.PRIVATE

define_actions(
    {
        "privacy_mydata": ("Pd", ()),  # send the person's data as a file
        "privacy_forget": ("Pf", ()),  # ask before erasing
        "privacy_forget_yes": ("Py", ()),  # erase for good
        "privacy_forget_no": ("Pn", ()),  # keep everything
        "privacy_withdraw": ("Pw", ()),  # ask before withdrawing consent
        "privacy_withdraw_yes": ("Px", ()),  # withdraw: no message of any kind any more
        "privacy_withdraw_no": ("Po", ()),
        "privacy_keep": ("Pk", ()),  # answer to the retention notice: keep my data
    }
)
CALLBACK_PATTERN = r"^1\|P[dfynwxok]\|"
# Before every other group (the most negative so far is -25): it only records activity.
ACTIVITY_GROUP = -90
RETENTION_JOB = "privacy-retention"
RETENTION_AT = time(10, 0)  # local time: a notice arrives in the morning, never at night
DATA_FILE = "my-data.json"


async def note_activity(update: Update, context: BotContext) -> None:
    """Any update from a person counts as activity: it keeps their data and cancels a
    pending retention notice (at most about one write per person and hour)."""
    residents = context.services.residents
    change = update.my_chat_member
    if change is not None:
        # Telegram's own report that the person blocked (or unblocked) the bot: not an
        # interaction, it only says whether they can be written to.
        if change.chat.type == ChatType.PRIVATE:
            status = change.new_chat_member.status
            if status in (ChatMember.BANNED, ChatMember.MEMBER):
                reachable = status == ChatMember.MEMBER
                await residents.set_reachable(change.chat.id, reachable)
                log.info(
                    "resident %s %s the bot",
                    context.services.pseudonym(change.chat.id),
                    "unblocked" if reachable else "blocked",
                )
        return
    if update.chat_member is not None:
        return
    user, chat = update.effective_user, update.effective_chat
    if user is not None and not user.is_bot:
        private = chat is not None and chat.type == ChatType.PRIVATE
        await residents.seen(user.id, private=private)


def _months(r: Reply, months: int) -> Html:
    return Html(r.p("privacy.months", months))


def notice_text(r: Reply) -> str:
    """The full notice: the operator's texts where given, the shipped ones otherwise; the
    retention periods always come from the settings."""
    services = r.context.services
    settings = services.settings
    operator = services.privacy.notice_texts.get(r.language, {})
    parts = {
        part: Html(operator[part]) if part in operator else Html(r.t(f"privacy.notice.{part}"))
        for part in ("controller", "purpose", "legal_basis", "data", "recipients", "rights", "dpo")
    }
    retention = r.t(
        "privacy.notice.retention",
        months=_months(r, settings.retention_months),
        free_text=_months(r, settings.free_text_retention_months),
    )
    return r.t("privacy.notice.text", retention=Html(retention), **parts)


async def privacy_command(update: Update, context: BotContext) -> None:
    """/privacy: the full notice, with big buttons to see, erase, or stop all messages."""
    r = await Reply.for_update(update, context)
    status = await context.services.privacy.status(r.user_id)
    text = notice_text(r)
    keyboard: views.Keyboard = []
    if status.known:
        keyboard = [
            [r.button(r.label("privacy.button.mydata"), "privacy_mydata")],
            [r.button(r.label("privacy.button.forget"), "privacy_forget")],
        ]
    if status.consented:
        keyboard.append([r.button(r.label("privacy.button.withdraw"), "privacy_withdraw")])
    elif status.known:
        text += "\n\n" + r.t("privacy.notice.withdrawn")
    else:
        text += "\n\n" + r.t("privacy.notice.before_consent")
    await r.send(text, keyboard or None)


async def mydata_command(update: Update, context: BotContext) -> None:
    """/mydata: everything held about the person, as a JSON file."""
    await _send_data(await Reply.for_update(update, context))


async def forget_command(update: Update, context: BotContext) -> None:
    """/forget: asks for confirmation, then erases the person."""
    await _ask_forget(await Reply.for_update(update, context))


async def _send_data(r: Reply) -> None:
    document = await r.context.services.privacy.export(r.user_id)
    if document is None:
        await r.send(r.t("privacy.mydata.nothing"))
        return
    data = json.dumps(document, ensure_ascii=False, indent=2).encode()
    assert r.chat_id is not None
    await r.context.bot.send_document(
        r.chat_id,
        document=InputFile(data, filename=DATA_FILE),
        caption=r.t("privacy.mydata.caption"),
        parse_mode="HTML",
    )


async def _ask_forget(r: Reply) -> None:
    status = await r.context.services.privacy.status(r.user_id)
    if not status.known:
        await r.show(r.t("privacy.forget.nothing"))
        return
    # Staff keep their Telegram id in their role and the team's history: say so.
    await r.show(
        r.t("privacy.forget.ask_staff" if status.staff else "privacy.forget.ask"),
        [
            [r.button(r.label("privacy.button.forget_yes"), "privacy_forget_yes")],
            [r.button(r.label("privacy.button.forget_no"), "privacy_forget_no")],
        ],
    )


async def _forget_yes(r: Reply) -> None:
    report = await r.context.services.privacy.erase(r.user_id)
    if report is None:
        await r.show(r.t("privacy.forget.nothing"))
        return
    log.info("resident %s erased at their request", r.context.services.pseudonym(r.user_id))
    if report.cancelled_places:
        kick_delivery(r.context)  # the people promoted to the freed seats are told now
    await r.show(
        r.t(
            "privacy.forget.done_staff" if report.staff else "privacy.forget.done",
            answers=Html(r.p("privacy.forget.answers", report.answer_sets)),
            cancelled=Html(r.p("privacy.forget.cancelled", report.cancelled_places)),
            registrations=Html(r.p("privacy.forget.registrations", report.kept_registrations)),
            attendances=Html(r.p("privacy.forget.attendances", report.kept_attendances)),
        )
    )


async def ask_withdraw(r: Reply) -> None:
    """Ask before withdrawing consent (also what "No thanks" on an old prompt leads to)."""
    months = r.context.services.settings.retention_months
    await r.show(
        r.t("privacy.withdraw.ask", months=_months(r, months)),
        [
            [r.button(r.label("privacy.button.withdraw_yes"), "privacy_withdraw_yes")],
            [r.button(r.label("privacy.button.withdraw_no"), "privacy_withdraw_no")],
        ],
    )


async def withdraw(r: Reply) -> None:
    """Withdraw consent: no message any more, waitlist places given up."""
    if await r.context.services.privacy.withdraw_consent(r.user_id):
        log.info("resident %s withdrew consent", r.context.services.pseudonym(r.user_id))
        kick_delivery(r.context)  # a waitlist place given up is told to the channel
    await r.show(r.t("privacy.withdraw.done"))


async def _keep(r: Reply) -> None:
    # note_activity has already moved the retention clock and cancelled the erasure.
    months = r.context.services.settings.retention_months
    await r.show(r.t("privacy.retention.kept", months=_months(r, months)))


async def on_button(update: Update, context: BotContext) -> None:
    """The buttons of the notice, of /forget, and of the retention notice."""
    pressed = await pressed_button(update, context)
    if pressed is None:
        return
    r, callback = pressed
    await r.toast()
    match callback.action:
        case "privacy_mydata":
            await _send_data(r)
        case "privacy_forget":
            await _ask_forget(r)
        case "privacy_forget_yes":
            await _forget_yes(r)
        case "privacy_forget_no":
            await r.show(r.t("privacy.forget.kept"))
        case "privacy_withdraw":
            await ask_withdraw(r)
        case "privacy_withdraw_yes":
            await withdraw(r)
        case "privacy_withdraw_no":
            await r.show(r.t("privacy.withdraw.kept"))
        case "privacy_keep":
            await _keep(r)


@renders(RETENTION_NOTICE)
async def _render_retention_notice(
    context: BotContext, message: ClaimedMessage
) -> list[Outgoing] | None:
    """The "you will be erased in a week" notice; dropped if the person came back meanwhile."""
    assert message.chat_id is not None and message.resident_id is not None
    services = context.services
    if not await services.retention.notice_still_due(message.resident_id):
        return None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    erase_on = datetime.fromisoformat(message.payload["erase_on"])
    text = r.t(
        "privacy.retention.notice",
        date=services.translator.date(r.language, erase_on, services.settings.tz),
    )
    return [Outgoing.message(text, [[r.button(r.label("privacy.button.keep"), "privacy_keep")]])]


@renders(RETENTION_REPORT)
async def _render_retention_report(
    context: BotContext, message: ClaimedMessage
) -> list[Outgoing] | None:
    """Counts only, to the facilitators' channel, in the default language."""
    assert message.chat_id is not None
    r = Reply.for_recipient(context, message.chat_id, context.services.settings.default_language)
    counts = message.payload
    text = r.t(
        "privacy.channel_report",
        erased=Html(r.p("privacy.erased", int(counts.get("erased", 0)))),
        free_texts=Html(r.p("privacy.free_texts", int(counts.get("free_texts", 0)))),
        conversations=Html(r.p("privacy.conversations", int(counts.get("conversations", 0)))),
    )
    if counts.get("failed"):
        failed = Html(r.p("privacy.failed", int(counts["failed"])))
        text += "\n" + r.t("privacy.channel_failed", failed=failed)
    return [Outgoing("send_message", {"text": text, "parse_mode": "HTML"})]


async def apply_retention(context: BotContext) -> None:
    """JobQueue job (daily): notices, erasures after notice, free text past its retention,
    finished outbox rows past OUTBOX_RETENTION."""
    services = context.services
    report = await services.retention.run(pseudonym=services.pseudonym)
    if report.noticed or report.purged or report.payloads or report.outbox_rows:
        log.info(
            "retention: %d noticed, %d erased (%d failed), %d free-text answers blanked,"
            " %d conversations deleted, %d sent payloads emptied, %d finished outbox rows"
            " deleted",
            report.noticed,
            report.erased,
            report.failed,
            report.free_texts,
            report.conversations,
            report.payloads,
            report.outbox_rows,
        )
        kick_delivery(context)


def schedule_retention(job_queue: BotJobQueue, tz: ZoneInfo) -> None:
    job_queue.run_daily(apply_retention, time=RETENTION_AT.replace(tzinfo=tz), name=RETENTION_JOB)


def activity_handler() -> BotHandler:
    """Register in ACTIVITY_GROUP, before every other group."""
    return TypeHandler(Update, note_activity)


def privacy_handlers() -> list[BotHandler]:
    """Register before the resident handlers: they would answer these buttons as stale."""
    return [
        CommandHandler("privacy", privacy_command, filters=PRIVATE),
        CommandHandler("mydata", mydata_command, filters=PRIVATE),
        CommandHandler("forget", forget_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
