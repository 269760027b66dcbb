"""What the broadcast sender shows: the announcement as residents get it, the live progress
message of the staff member who confirmed it, and the delivery report once it is over.

Composing, choosing the audience and confirming are in handlers/broadcasts.py; the paced
sending itself is bot/plumbing/broadcast_sending.py, which calls `render_broadcast` and
`show_progress` (wired by the composition root).
"""

from __future__ import annotations

import csv
import io
import logging

from telegram import InlineKeyboardMarkup, InputFile
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.plumbing.context import BotContext
from bot.plumbing.delivery import Outgoing
from bot.services.broadcasts.sending import (
    BLOCKED,
    NOT_PREPARED,
    OPTED_OUT,
    REPORT_KIND,
    UNREACHABLE,
    BroadcastMessage,
    Progress,
)
from bot.services.outbox import ClaimedMessage
from bot.text.i18n import Html
from handlers import views
from handlers.common import Reply
from handlers.notices import renders

log = logging.getLogger(__name__)

FAILURES_INLINE = 10  # more failures than this go in a CSV file


def broadcast_outgoing(r: Reply, text: str, photo_file_id: str | None) -> Outgoing:
    """The announcement as a resident gets it: the text (or a photo and its caption) and the
    button to stop announcements."""
    keyboard = InlineKeyboardMarkup(
        [[r.button(r.label("broadcast.button.optout"), "broadcast_optout")]]
    )
    if photo_file_id:
        return Outgoing(
            "send_photo",
            {
                "photo": photo_file_id,
                "caption": text,
                "parse_mode": ParseMode.HTML,
                "reply_markup": keyboard,
            },
        )
    return Outgoing(
        "send_message", {"text": text, "parse_mode": ParseMode.HTML, "reply_markup": keyboard}
    )


async def render_broadcast(
    context: BotContext, message: ClaimedMessage, content: BroadcastMessage
) -> list[Outgoing] | None:
    """A broadcast row, rendered at send time in its recipient's language (by the sender)."""
    assert message.chat_id is not None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    return [broadcast_outgoing(r, content.text, content.photo_file_id)]


def _duration(r: Reply, seconds: float) -> str:
    if seconds < 90:
        return r.t("broadcast.eta_seconds", seconds=max(1, round(seconds)))
    return r.t("broadcast.eta_minutes", minutes=round(seconds / 60))


def progress_view(
    r: Reply, progress: Progress, seconds_left: float, *, final: bool
) -> tuple[str, views.Keyboard]:
    counts = r.t(
        "broadcast.counts",
        total=progress.recipients,
        sent=progress.sent,
        blocked=progress.blocked,
        failed=progress.failed,
    )
    if final:
        cancelled = progress.status == "cancelled"
        key = "broadcast.progress_cancelled" if cancelled else "broadcast.progress_done"
        lines = [r.t(key), counts]
        if progress.cancelled:
            lines.append(r.t("broadcast.not_sent", number=progress.cancelled))
        return "\n".join(lines), []
    lines = [
        r.t("broadcast.progress_title"),
        counts,
        r.t("broadcast.remaining", number=progress.remaining, eta=Html(_duration(r, seconds_left))),
    ]
    keyboard = [
        [r.button(r.label("broadcast.button.stop"), "broadcast_stop", progress.broadcast_id)]
    ]
    return "\n".join(lines), keyboard


async def _staff_reply(context: BotContext, chat_id: int) -> Reply:
    profile = await context.services.residents.profile(chat_id)
    return Reply.for_recipient(context, chat_id, profile.language if profile else None)


async def show_progress(
    context: BotContext, progress: Progress, seconds_left: float, final: bool
) -> int | None:
    """Edit the progress message (for the broadcast sender); when there is none, or Telegram
    refuses the edit (the message was deleted, or is too old), send a new one and return its
    id, to be recorded."""
    if progress.progress_chat_id is None:
        return None
    r = await _staff_reply(context, progress.progress_chat_id)
    text, keyboard = progress_view(r, progress, seconds_left, final=final)
    markup = InlineKeyboardMarkup(keyboard) if keyboard else None
    if progress.progress_message_id is not None:
        try:
            await context.bot.edit_message_text(
                text,
                chat_id=progress.progress_chat_id,
                message_id=progress.progress_message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
            )
            return None
        except BadRequest as exc:
            if "not modified" in exc.message.lower():
                return None  # already showing this (shown again after a restart)
            log.info("progress message of broadcast %s replaced: %s", progress.broadcast_id, exc)
    sent = await context.bot.send_message(
        progress.progress_chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup
    )
    return sent.message_id


def _reason(r: Reply, error: str) -> str:
    """Why a person did not get the message, in words (Telegram's own text otherwise)."""
    known = {
        BLOCKED: "blocked",
        OPTED_OUT: "opted_out",
        UNREACHABLE: "unreachable",
        NOT_PREPARED: "not_prepared",
    }
    return r.label(f"broadcast.reason.{known[error]}") if error in known else error


@renders(REPORT_KIND)
async def render_report(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    """The delivery report, once a broadcast is over: counts, then the failures (a CSV file
    when there are many). People appear under a pseudonym, never their Telegram id."""
    assert message.chat_id is not None
    broadcast_id = int(message.payload["broadcast_id"])
    service = context.services.broadcasts
    progress = await service.progress(broadcast_id)
    if progress is None:
        return None
    r = await _staff_reply(context, message.chat_id)
    title = "broadcast.report_cancelled" if progress.status == "cancelled" else "broadcast.report"
    lines = [
        r.t(title),
        r.t(
            "broadcast.counts",
            total=progress.recipients,
            sent=progress.sent,
            blocked=progress.blocked,
            failed=progress.failed,
        ),
    ]
    if progress.cancelled:
        lines.append(r.t("broadcast.not_sent", number=progress.cancelled))
    failures = await service.failures(broadcast_id)
    if failures and len(failures) <= FAILURES_INLINE:
        lines.append("")
        lines.append(r.t("broadcast.failures_title"))
        lines += [
            r.t("broadcast.failure_line", who=f.pseudonym, error=_reason(r, f.error))
            for f in failures
        ]
    sends = [Outgoing.message("\n".join(lines))]
    if len(failures) > FAILURES_INLINE:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["person", "outcome", "reason"])
        writer.writerows((f.pseudonym, f.outcome, f.error) for f in failures)
        document = InputFile(
            ("\ufeff" + buffer.getvalue()).encode(),
            filename=f"broadcast-{broadcast_id}-failures.csv",
        )
        sends.append(
            Outgoing(
                "send_document",
                {"document": document, "caption": r.label("broadcast.failures_file")},
            )
        )
    return sends
