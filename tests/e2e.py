"""Harness for end-to-end tests: the real bot, over real HTTP, against the Bot API emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator

from bot.clock import ManualClock
from bot.plumbing.broadcast_sending import send_budget_of
from bot.plumbing.context import BotApplication, Services
from bot.runtime.app import build_application
from bot.runtime.runner import running
from bot.settings import Settings, load_settings
from tests.virtual_time import VirtualTimer


def settings_for(emulator: BotApiEmulator, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "bot_token": emulator.token,
        "telegram_base_url": emulator.base_url,
        "database_url": database_url,
        "rate_limit_per_second": 0,
        # Scripted users are faster than any person: flood control (tested in
        # test_guard_e2e.py with its own limits) must not drop their updates.
        "flood_rate": 100,
        "flood_burst": 1000,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def bot_running(
    settings: Settings, clock: ManualClock, *, timer: VirtualTimer | None = None
) -> AsyncIterator[BotApplication]:
    """The bot, started and stopped; with `timer`, its send budget runs on that time (its
    windows, pace and 429 pauses jumped over instead of waited for)."""
    application = build_application(settings, clock=clock)
    async with AsyncExitStack() as stack:
        if timer is not None:
            send_budget_of(application).timer = timer  # before the first call
            await stack.enter_async_context(timer.running())
        yield await stack.enter_async_context(running(application))


def services_of(application: BotApplication) -> Services:
    return application.bot_data["services"]


@asynccontextmanager
async def emulator_and_client() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        yield emulator, client
