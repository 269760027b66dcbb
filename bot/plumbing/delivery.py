"""Delivery of the outbox: a periodic JobQueue job, also kicked right after an enqueue.

The job claims due rows, renders each in its recipient's language at send time, sends it and
marks it sent only once Telegram accepted it. The claim's lease is renewed just before each
row's sends, since a batch may outlast OUTBOX_LEASE: a row whose lease lapsed and that another
instance claimed meanwhile is left to it, never sent twice. Telegram's answer decides the
rest: 403 drops the row and marks the person unreachable, 429 postpones it by `retry_after`,
a 400 fails it for good, network errors and 5xx retry it with backoff, a bounded number of
times. Anything else that goes wrong with a row (rendering it included) is retried the same
way, for that row alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.plumbing.context import BotApplication, BotContext, BotJobQueue
from bot.plumbing.request import single_attempt
from bot.plumbing.send_budget import retry_after_seconds
from bot.services.outbox import ClaimedMessage


@dataclass(frozen=True)
class Outgoing:
    """One Bot API send of a rendered outbox message (a text, a venue, a calendar file)."""

    method: str  # a telegram.Bot method: send_message, send_venue, send_document...
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def message(
        cls, text: str, keyboard: list[list[InlineKeyboardButton]] | None = None
    ) -> Outgoing:
        return cls(
            "send_message",
            {
                "text": text,
                "parse_mode": ParseMode.HTML,
                "reply_markup": InlineKeyboardMarkup(keyboard) if keyboard else None,
            },
        )


# Turns a claimed row into the sends to make, or None when it became pointless.
NoticeRenderer = Callable[[BotContext, ClaimedMessage], Awaitable[list[Outgoing] | None]]

log = logging.getLogger(__name__)

JOB_NAME = "outbox-delivery"
BATCH = 50


async def deliver_outbox(context: BotContext) -> None:
    """Send every due outbox message, batch after batch.

    Whatever goes wrong with one row (an unknown kind, a payload missing a key, a read that
    raised while rendering it) concerns that row only: it is retried with backoff, then
    failed for good, and the rest of the batch goes on.
    """
    outbox = context.services.outbox
    assert context.job is not None
    # PTB types a job's data as object; schedule_delivery gives this job the renderer.
    render_notice = cast(NoticeRenderer, context.job.data)
    while True:
        batch = await outbox.claim_due(BATCH)
        for message in batch:
            try:
                await _deliver(context, message, render_notice)
            except Exception as exc:
                log.warning(
                    "outbox %s (%s) could not be delivered (attempt %d)",
                    message.id,
                    message.kind,
                    message.attempts,
                    exc_info=True,
                )
                try:
                    await outbox.retry_later(message, _backoff(message), type(exc).__name__)
                except Exception:  # the database itself: the claim's lease runs out instead
                    log.warning("outbox %s could not be released", message.id, exc_info=True)
        if len(batch) < BATCH:
            return


def _backoff(message: ClaimedMessage) -> timedelta:
    """2 s after the first attempt, doubling, at most 5 minutes."""
    return timedelta(seconds=min(2**message.attempts, 300))


async def _deliver(
    context: BotContext, message: ClaimedMessage, render_notice: NoticeRenderer
) -> None:
    """Render one claimed row and send it; Telegram's answer decides what becomes of it."""
    services = context.services
    outbox = services.outbox
    if message.chat_id is None or not message.resident_active:
        await outbox.drop(message.id, "recipient unreachable or without consent")
        return
    sends = await render_notice(context, message)
    if not sends:
        await outbox.drop(message.id, "no longer relevant")
        return
    # The rows before this one may have taken longer than the lease: hold it again,
    # or leave it to the instance that claimed it since.
    if not await outbox.renew(message.id):
        log.info("outbox %s no longer held by this instance: not sent", message.id)
        return
    try:
        # A message made of several sends is retried whole: at least once, as a unit.
        # One attempt per call: the row's own retries below are the only ones.
        with single_attempt():
            for send in sends:
                await getattr(context.bot, send.method)(message.chat_id, **send.kwargs)
    except RetryAfter as exc:
        await outbox.postpone(message.id, timedelta(seconds=retry_after_seconds(exc)))
    except Forbidden:
        if message.resident_id is not None:
            await services.residents.mark_unreachable(message.resident_id)
        await outbox.drop(message.id, "blocked by the recipient")
    except BadRequest as exc:
        log.warning("outbox %s (%s) refused by Telegram: %s", message.id, message.kind, exc)
        await outbox.fail(message.id, f"bad request: {exc.message}", cause=type(exc).__name__)
    except (NetworkError, TelegramError) as exc:
        await outbox.retry_later(message, _backoff(message), type(exc).__name__)
    else:
        await outbox.mark_sent(message.id)


def schedule_delivery(
    job_queue: BotJobQueue, render_notice: NoticeRenderer, interval_s: float
) -> None:
    """The periodic sweep: catches up after a restart or an outage of the Bot API."""
    job_queue.run_repeating(
        deliver_outbox, interval=interval_s, first=0.1, name=JOB_NAME, data=render_notice
    )


def kick_delivery(owner: BotContext | BotApplication) -> None:
    """Deliver now rather than at the next sweep (a promotion notice is urgent).

    From a handler (its context) or from a long-running task (the application). A sweep
    without a next run time (paused, or the scheduler shutting down) is left as it is."""
    job_queue = owner.job_queue
    if job_queue is None:
        return
    for job in job_queue.get_jobs_by_name(JOB_NAME):
        next_run = job.job.next_run_time
        if next_run is not None:
            job.job.modify(next_run_time=datetime.now(next_run.tzinfo))
