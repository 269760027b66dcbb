"""Run the bot inside an existing event loop (tests, the demo, benchmarks).

`Application.run_polling` owns the event loop and the signal handlers, which suits the `run`
command; everything that already has a loop (an emulator beside the bot, a test) uses this
context manager, which performs the same steps, including the lifecycle hooks that
run_polling would otherwise call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import Update

from bot.context import BotApplication

POLL_TIMEOUT_S = 10


@asynccontextmanager
async def running(application: BotApplication) -> AsyncIterator[BotApplication]:
    """Start polling and handling updates; stop and release everything on exit."""
    await application.initialize()
    if application.post_init is not None:
        await application.post_init(application)
    assert application.updater is not None
    await application.updater.start_polling(
        poll_interval=0.0, timeout=POLL_TIMEOUT_S, allowed_updates=Update.ALL_TYPES
    )
    await application.start()
    try:
        yield application
    finally:
        if application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)
        await application.shutdown()
