"""The paced sender of broadcasts: a long-running task started in post_init.

It claims broadcast rows from the outbox in small batches (the outbox claim, with FOR UPDATE
SKIP LOCKED on PostgreSQL), renders each at send time, and sends them one after the other:

- when each message goes out is decided by the application's `SendBudget` (bot/plumbing/send_budget.py,
  the bot's rate limiter), with every other message of the bot: the sender's calls are bulk
  calls (``rate_limit_args=BULK``), evenly spaced at no more than `rate` (BROADCAST_RATE, a
  ceiling; by default the whole budget), one second at least after any message to the same
  chat, and always behind the replies to people using the bot, which they never delay by
  more than one spacing. A recipient who must wait for that second (a reply just went to
  them) does not stall the batch: the sender sends to the next free one first;
- the row's lease is renewed once the budget has granted the send its place, just before
  the request (the budget's ``before_send``), on condition that this process still holds the
  row and its broadcast is still being sent (Outbox.renew). However long the wait for the
  place was (a 429 pause, replies overtaking), the lease then outlasts the send: a row whose
  lease lapsed meanwhile and was claimed by another instance, or whose broadcast was stopped
  on another instance, is not sent, and the place goes to the next message;
- a 429 pauses the whole budget for its retry_after; the row is released without spending
  an attempt, and so is the rest of the batch when the pause is longer than a few seconds.
  A 403 marks the resident inactive and drops the row. Other errors are retried a bounded
  number of times (the outbox's MAX_ATTEMPTS), then the row fails;
- a row that cannot be read or rendered (a failed read, a bug) touches that row only: it is
  retried with the same backoff and fails for good at the same limit (reported as "not
  prepared"), and the rest of the batch goes on.

Each row is marked sent as soon as Telegram accepted it, so a restart resumes with the rows
still pending and never sends again to someone already marked sent.

The sender alone edits the progress message of a broadcast (the preview, recorded when it was
confirmed), so that its edits never overtake one another: at once when the broadcast is
confirmed (its preview loses Confirm and Cancel and gets Stop), before its first send, then at
most every `progress_every` seconds. A broadcast with no row left is shown in its final state
BEFORE it is closed (which queues its report): a crash in between leaves it unfinished, and the
next start shows and closes it again. After a restart the stored message is edited on; when
Telegram refuses the edit (the message was deleted), a new progress message replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.plumbing.context import BotApplication, BotContext
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.plumbing.request import single_attempt
from bot.plumbing.send_budget import BULK, NotSent, SendBudget
from bot.plumbing.send_budget import Pace as Pace  # the bulk pace, now the budget's (re-exported)
from bot.services.broadcasts.sending import (
    BLOCKED,
    NOT_PREPARED,
    OPTED_OUT,
    UNREACHABLE,
    BroadcastMessage,
    Progress,
)
from bot.services.outbox import ClaimedMessage

log = logging.getLogger(__name__)

SENDER_KEY = "broadcast_sender"
BATCH = 10  # rows claimed at once: a few seconds of sending, never a whole audience
IDLE_POLL_S = 2.0
STARTUP_DELAY_S = 1.0
SWEEP_EVERY_S = 5.0  # while busy, how often unfinished broadcasts are looked at
RELEASE_AFTER_S = 5.0  # a pause longer than this releases the rest of the batch

# Renders a broadcast row for its recipient: what to send, or None (then dropped).
MessageRenderer = Callable[
    [BotContext, ClaimedMessage, BroadcastMessage], Awaitable[list[Outgoing] | None]
]
# Shows the progress of a broadcast in its progress message (final=True: no row left), given
# the seconds left; returns the id of a new progress message when it had to send one (none was
# recorded, or Telegram refused the edit), else None. Raises what Telegram said otherwise.
ProgressView = Callable[[BotContext, Progress, float, bool], Awaitable[int | None]]


class BroadcastSender:
    """One task per process; several processes share the work through the outbox claim."""

    def __init__(
        self,
        application: BotApplication,
        render: MessageRenderer,
        show_progress: ProgressView,
        *,
        rate: float,
        batch_size: int = BATCH,
        progress_every: float = 3.0,
    ) -> None:
        self._application = application
        self._render = render
        self._show_progress = show_progress
        self.budget = send_budget_of(application)
        self.budget.limit_bulk(rate)
        self.batch_size = batch_size
        self._progress_every = progress_every
        self._last_progress: dict[int, float] = {}
        # The text and photo of the broadcasts in flight (they never change once confirmed).
        self._contents: dict[int, BroadcastMessage] = {}
        # Broadcasts stopped through this process: rows already claimed are not sent.
        self._stopped: set[int] = set()
        # Broadcasts to show now (just confirmed, or found unfinished after a restart).
        self._to_show: set[int] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.largest_claim = 0  # the largest batch claimed so far (memory stays bounded)
        self._last_sweep = -math.inf

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broadcast-sender")

    async def stop(self) -> None:
        """Finish the send in flight, release the rest of the batch, and return."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, timeout=30)
        except TimeoutError:
            log.warning("the broadcast sender did not stop in time")
        self._task = None

    def kick(self, confirmed: int | None = None) -> None:
        """A broadcast was `confirmed`: show it and look now rather than at the next poll."""
        if confirmed is not None:
            self._to_show.add(confirmed)
        self._wake.set()

    def stopped(self, broadcast_id: int) -> None:
        """A broadcast was stopped: leave the rest of the batch in hand, and report now."""
        self._stopped.add(broadcast_id)
        self._wake.set()

    @property
    def _context(self) -> BotContext:
        return BotContext(self._application)

    async def _run(self) -> None:
        # Resuming after a restart can wait for the bot to finish starting (and to answer the
        # updates that piled up) a moment; a broadcast confirmed meanwhile starts at once.
        await self._idle(STARTUP_DELAY_S)
        while not self._stopping.is_set():
            try:
                claimed = await self._round()
            except Exception:  # a database hiccup must not end the sender for good
                log.exception("broadcast sender round failed")
                claimed = 0
            if claimed < self.batch_size and not self._stopping.is_set():
                await self._idle(IDLE_POLL_S)

    async def _idle(self, seconds: float) -> None:
        """Wait `seconds`, or less when kicked (even during the last round) or stopped."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _round(self) -> int:
        """Claim one batch and send it; then update progress and close finished broadcasts."""
        context = self._context
        services = context.services
        batch = await services.outbox.claim_due(self.batch_size, broadcast=True)
        self.largest_claim = max(self.largest_claim, len(batch))
        touched: set[int] = set()
        pending = list(batch)
        while pending:
            await self._show_confirmed(context)
            if self._stopping.is_set():
                for left in pending:
                    await services.outbox.postpone(left.id, timedelta(0))
                break
            message = self._next_row(pending)
            pending.remove(message)
            if message.broadcast_id in self._stopped:
                # Released, then dropped with the others when the broadcast is closed.
                await services.outbox.postpone(message.id, timedelta(0))
                touched.add(message.broadcast_id)
                continue
            if message.broadcast_id is not None:
                touched.add(message.broadcast_id)
                # Its first row is not sent before its progress message shows it.
                await self._maybe_show_progress(context, message.broadcast_id)
            await self._send(context, message)
            if self.budget.paused_for > RELEASE_AFTER_S:
                # A long pause (a 429): let the rest of the batch go rather than sit on it.
                for left in pending:
                    await services.outbox.postpone(left.id, timedelta(0))
                break
        now = asyncio.get_running_loop().time()
        if not batch or now - self._last_sweep >= SWEEP_EVERY_S:
            # Broadcasts stopped elsewhere, or with nothing left to claim, get closed too.
            self._last_sweep = now
            unfinished = await services.broadcasts.unfinished()
            touched.update(unfinished)
            # Not shown by this process yet (confirmed before a restart): show them now.
            self._to_show.update(set(unfinished) - set(self._last_progress))
        await self._show_confirmed(context)
        for broadcast_id in sorted(touched):
            await self._close_if_done(context, broadcast_id)
        return len(batch)

    def _next_row(self, pending: list[ClaimedMessage]) -> ClaimedMessage:
        """The first row whose recipient the budget would not hold back (a message to them in
        the last second): the others come back once their second has passed."""
        for message in pending:
            if message.chat_id is None or self.budget.chat_free(message.chat_id):
                return message
        return pending[0]

    async def _send(self, context: BotContext, message: ClaimedMessage) -> None:
        outbox = context.services.outbox
        if message.chat_id is None or not message.resident_active:
            await outbox.drop(message.id, UNREACHABLE)
            return
        if not message.wants_announcements:
            await outbox.drop(message.id, OPTED_OUT)
            return
        try:
            content = await self._content(context, message.broadcast_id)
            sends = await self._render(context, message, content) if content else None
        except Exception:  # this row only: retried, then failed at the attempt limit
            log.exception("broadcast row %s could not be prepared", message.id)
            await outbox.retry_later(message, _backoff(message), NOT_PREPARED)
            return
        if not sends:
            await outbox.drop(message.id, UNREACHABLE)
            return
        try:
            with single_attempt():  # the row's own retries below are the only ones
                for send in sends:
                    await self._send_held(context, message, send)
        except NotSent:
            # Not held any more (or a stop): released if still ours (a stopped broadcast's
            # row is then dropped when it is closed); a no-op when another instance holds it.
            await outbox.postpone(message.id, timedelta(0))
        except RetryAfter:
            # The budget paused every message for retry_after; the row waits its turn again.
            await outbox.postpone(message.id, timedelta(0))
        except Forbidden:
            if message.resident_id is not None:
                await context.services.residents.mark_unreachable(message.resident_id)
            await outbox.drop(message.id, BLOCKED)
        except BadRequest as exc:
            log.warning("broadcast row %s refused by Telegram: %s", message.id, exc)
            await outbox.fail(message.id, f"bad request: {exc.message}")
        except (NetworkError, TelegramError) as exc:
            await outbox.retry_later(message, _backoff(message), type(exc).__name__)
        except Exception as exc:  # not Telegram's answer (a bug in the call): this row only
            log.exception("broadcast row %s could not be sent", message.id)
            await outbox.retry_later(message, _backoff(message), type(exc).__name__)
        else:
            await outbox.mark_sent(message.id)

    async def _content(
        self, context: BotContext, broadcast_id: int | None
    ) -> BroadcastMessage | None:
        if broadcast_id is None:
            return None
        if broadcast_id not in self._contents:
            content = await context.services.broadcasts.message(broadcast_id)
            if content is None:
                return None
            self._contents[broadcast_id] = content
        return self._contents[broadcast_id]

    async def _send_held(
        self, context: BotContext, message: ClaimedMessage, send: Outgoing
    ) -> None:
        """One bulk call for the row, sent only if the row is still ours once its place in the
        budget is granted (raises NotSent otherwise). A stop while it waits for its place
        (a long 429 pause) ends the wait: NotSent too."""
        outbox = context.services.outbox
        renewing = False

        async def renew_hold() -> bool:
            nonlocal renewing
            renewing = True
            if self._stopping.is_set():
                return False
            if await outbox.renew(message.id, broadcast_sending=True):
                return True
            log.info("broadcast row %s no longer held or its broadcast stopped", message.id)
            return False

        args: dict[str, Any] = {**BULK, "before_send": renew_hold}
        call = asyncio.ensure_future(
            getattr(context.bot, send.method)(message.chat_id, **send.kwargs, rate_limit_args=args)
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((call, stop), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            call.cancel()
            raise
        finally:
            stop.cancel()
        if not call.done() and not renewing:
            # Still waiting for its place: nothing was sent, nothing will be.
            call.cancel()
            await asyncio.wait((call,))
            raise NotSent(send.method)
        await call  # the answer, or what Telegram said

    def seconds_left(self, remaining: int) -> float:
        return remaining / self.budget.bulk_rate

    async def _show_confirmed(self, context: BotContext) -> None:
        """Show the broadcasts confirmed since (their preview becomes the progress message)."""
        while self._to_show:
            broadcast_id = self._to_show.pop()
            self._last_progress.pop(broadcast_id, None)
            await self._maybe_show_progress(context, broadcast_id)

    async def _maybe_show_progress(self, context: BotContext, broadcast_id: int) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_progress.get(broadcast_id, -math.inf) < self._progress_every:
            return
        self._last_progress[broadcast_id] = now
        try:
            progress = await context.services.broadcasts.progress(broadcast_id)
        except Exception:  # a courtesy: never stop sending for it
            log.exception("could not read the progress of broadcast %s", broadcast_id)
            return
        if progress is not None and not progress.finished:
            await self._show(context, progress, final=False)

    async def _close_if_done(self, context: BotContext, broadcast_id: int) -> None:
        """Shown in its final state first, then closed: never closed with a live Stop."""
        service = context.services.broadcasts
        final = await service.final_progress(broadcast_id)
        if final is None:
            return
        if not await self._show(context, final, final=True):
            return  # Telegram did not answer: shown, then closed, on a later round
        if not await service.close(final):
            return  # stopped meanwhile (shown again on the next round), or closed elsewhere
        self._last_progress.pop(broadcast_id, None)
        self._contents.pop(broadcast_id, None)
        self._stopped.discard(broadcast_id)
        kick_delivery(self._application)  # the report is an ordinary outbox message

    async def _show(self, context: BotContext, progress: Progress, *, final: bool) -> bool:
        """Edit the progress message (or record the one that replaced it). False only when
        Telegram could not be reached: any other refusal is logged, since the progress
        message is a courtesy that must never hold a broadcast back."""
        try:
            replaced_by = await self._show_progress(
                context, progress, self.seconds_left(progress.remaining), final
            )
        except TelegramError as exc:
            # A network error or a timeout passes; a refusal (BadRequest, a NetworkError for
            # python-telegram-bot, or Forbidden) would be the same next time.
            passing = isinstance(exc, NetworkError | RetryAfter) and not isinstance(exc, BadRequest)
            log.log(
                logging.INFO if passing else logging.WARNING,
                "could not show the progress of broadcast %s: %s",
                progress.broadcast_id,
                exc,
            )
            return not passing
        if replaced_by is not None and progress.progress_chat_id is not None:
            await context.services.broadcasts.set_progress_message(
                progress.broadcast_id, progress.progress_chat_id, replaced_by
            )
        return True


def _backoff(message: ClaimedMessage) -> timedelta:
    """The wait before a row's next attempt, growing with its attempts."""
    return timedelta(seconds=min(2**message.attempts, 60))


def send_budget_of(application: BotApplication) -> SendBudget:
    """The application's budget (its bot's rate limiter, installed by build_application)."""
    budget = application.bot.rate_limiter
    if not isinstance(budget, SendBudget):
        raise RuntimeError("the broadcast sender needs SendBudget as the bot's rate limiter")
    return budget


def start_broadcast_sender(
    application: BotApplication,
    render: MessageRenderer,
    show_progress: ProgressView,
    *,
    rate: float,
    batch_size: int = BATCH,
) -> BroadcastSender:
    """Start a sender and keep it in bot_data (stopped by `stop_broadcast_sender`)."""
    sender = BroadcastSender(application, render, show_progress, rate=rate, batch_size=batch_size)
    application.bot_data[SENDER_KEY] = sender
    sender.start()
    return sender


async def stop_broadcast_sender(application: BotApplication) -> None:
    sender: BroadcastSender | None = application.bot_data.pop(SENDER_KEY, None)
    if sender is not None:
        await sender.stop()


def kick_broadcasts(
    context: BotContext, *, confirmed: int | None = None, stopped: int | None = None
) -> None:
    """Wake the sender: a broadcast was `confirmed` (show it now), or `stopped`."""
    sender: BroadcastSender | None = context.application.bot_data.get(SENDER_KEY)
    if sender is None:
        return
    if stopped is not None:
        sender.stopped(stopped)
    else:
        sender.kick(confirmed)
