"""Run the bot inside an existing event loop (tests, the demo, benchmarks, `capacity-bot run`).

`Application.run_polling` owns the event loop and the signal handlers, and gives up when the
Bot API does not answer at start-up; everything here performs the same steps, including the
lifecycle hooks that run_polling would otherwise call. `running` is the whole life in one
context manager (tests, the demo); bot/runtime/serve.py uses the steps one by one, with retries and
signal handling around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import Update

from bot.plumbing.context import BotApplication

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 10


async def start_polling(application: BotApplication) -> None:
    """Long polling from where the last confirmed update left off (none is dropped)."""
    assert application.updater is not None
    await application.updater.start_polling(
        poll_interval=0.0,
        timeout=POLL_TIMEOUT_S,
        allowed_updates=Update.ALL_TYPES,
        drop_pending_updates=False,
    )


async def shut_down(application: BotApplication, *, handlers_grace: float | None = None) -> None:
    """Stop taking updates, let the ones in progress finish (within `handlers_grace`
    seconds when given), stop the jobs, then the lifecycle hook and the bot's connections
    (even those of a start-up that stopped half-way)."""
    if application.updater is not None and application.updater.running:
        await application.updater.stop()
    if application.running:
        stopping = asyncio.ensure_future(application.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), timeout=handlers_grace)
        except TimeoutError:
            log.warning(
                "updates or jobs still in progress after %.0f s; stopping without them",
                handlers_grace,
            )
    if application.post_shutdown is not None:
        await application.post_shutdown(application)
    await application.shutdown()
    # A start-up stopped in initialize() (getMe unanswered) leaves the Application not
    # initialised, whose shutdown() then skips the bot: its HTTP sessions, opened before
    # getMe, are closed here (a no-op when already closed).
    await application.bot.shutdown()


@asynccontextmanager
async def running(application: BotApplication) -> AsyncIterator[BotApplication]:
    """Start polling and handling updates; stop and release everything on exit."""
    await application.initialize()
    if application.post_init is not None:
        await application.post_init(application)
    await start_polling(application)
    await application.start()
    try:
        yield application
    finally:
        await shut_down(application)
