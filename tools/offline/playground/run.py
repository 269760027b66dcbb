"""Starts the playground in one process: emulator, bot with a travelling clock, web page."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.clock import TravelClock
from bot.plumbing.context import SERVICES_KEY, BotApplication
from bot.runtime.app import build_application
from bot.runtime.runner import running
from bot.settings import ConfigurationError, Settings
from offline.demo import offline_settings, on_signals, prepare_database, quiet_logs
from offline.playground.chats import CHANNEL_ID, CHANNEL_INFO, CHATS, RESIDENT_IDS, STAFF
from offline.playground.feed import CHAT_HISTORY
from offline.playground.server import HOST, PlaygroundServer
from offline.playground.time_machine import SchedulerHold, TimeMachine
from offline.playground.travel import TravelPlanner

# Written in the SQLite header of every database the playground creates (PRAGMA
# application_id, "CBPG"): the only files it ever deletes to start afresh.
PLAYGROUND_APPLICATION_ID = 0x43425047
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Playground:
    """Everything a running playground is made of: tests and the CLI reach its parts here."""

    server: PlaygroundServer
    application: BotApplication
    clock: TravelClock
    emulator: BotApiEmulator
    workshops: int


def _sqlite_path(database_url: str) -> Path:
    try:
        url = make_url(database_url)
    except ArgumentError:
        url = None
    if url is None or url.get_backend_name() != "sqlite" or not url.database:
        raise ConfigurationError(
            f"--database: {database_url!r} is not an SQLite file URL; expected "
            "sqlite+aiosqlite:///path/to/playground.sqlite3 (the playground recreates it)"
        )
    if url.database == ":memory:" or url.database.startswith("file::memory:"):
        raise ConfigurationError(
            "--database: an in-memory database cannot be shared by the bot's connections; "
            "expected a file, e.g. sqlite+aiosqlite:///./data/playground.sqlite3"
        )
    return Path(url.database)


def is_playground_database(path: Path) -> bool:
    """Whether the file is an SQLite database that the playground created (its header says)."""
    with path.open("rb") as file:
        header = file.read(72)
    return (
        len(header) == 72
        and header.startswith(SQLITE_MAGIC)
        and int.from_bytes(header[68:72], "big") == PLAYGROUND_APPLICATION_ID
    )


def mark_as_playground(path: Path) -> None:
    """Creates (or marks) the SQLite file as the playground's own, so that the next start may
    delete it."""
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA application_id = {PLAYGROUND_APPLICATION_ID}")
        connection.commit()
    finally:
        connection.close()


def fresh_sqlite_file(database_url: str, *, configured_url: str) -> Path:
    """A new, empty playground database at the --database path; its path.

    Only a database the playground created is deleted (so every rehearsal starts clean):
    the bot's own database (DATABASE_URL) and any other file are refused, never touched.
    """
    path = _sqlite_path(database_url)
    configured = make_url(configured_url)
    if configured.get_backend_name() == "sqlite" and configured.database:
        if Path(configured.database).resolve() == path.resolve():
            raise ConfigurationError(
                f"--database: {path} is the bot's own database (DATABASE_URL); expected "
                "another file: the playground deletes its database at each start"
            )
    stale = (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal"))
    try:
        if path.exists():
            if not is_playground_database(path):
                raise ConfigurationError(
                    f"--database: {path} exists and is not a playground database; expected "
                    "a new file or one the playground created (it is deleted at each start)"
                )
            for file in stale:
                file.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        mark_as_playground(path)
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigurationError(
            f"--database: cannot create {path} ({reason}); expected a writable file path"
        ) from None
    return path


@asynccontextmanager
async def playground(
    settings: Settings,
    database_url: str,
    *,
    port: int,
    today: date,
    history_limit: int = CHAT_HISTORY,
) -> AsyncIterator[Playground]:
    """Everything running, on a fresh database; stopped in reverse order on exit.

    ``history_limit``: messages kept per chat, by the emulator and the page alike.
    """
    fresh_sqlite_file(database_url, configured_url=settings.database_url)
    token = settings.demo_token.get_secret_value()
    prepared = offline_settings(
        settings, database_url=database_url, admin_chat_id=CHANNEL_ID, staff=STAFF
    )
    workshops = await prepare_database(prepared.database_url, prepared, today)
    async with (
        BotApiEmulator(token=token, history_limit=history_limit) as emulator,
        EmulatorClient(emulator.side_url) as client,
    ):
        # The people exist before they write (the bot sets the staff's menus at start), and
        # the facilitators' channel exists before the bot posts in it.
        await client.call("POST", "/users", json={"users": [chat.user for chat in CHATS]})
        emulator.state.upsert_chat(dict(CHANNEL_INFO))
        bot_settings = offline_settings(
            prepared,
            bot_token=token,
            telegram_base_url=emulator.base_url,
            rate_limit_per_second=0,
        )
        clock = TravelClock()
        application = build_application(bot_settings, clock=clock)
        assert application.job_queue is not None
        hold = SchedulerHold(application.job_queue.scheduler)  # before any job runs
        async with running(application):
            services = application.bot_data[SERVICES_KEY]
            planner = TravelPlanner(
                services.db,
                clock,
                services.reminders.policy,
                telegram_ids=RESIDENT_IDS,
                survey_delay=bot_settings.survey_delay,
                digest_surveys=services.surveys.catalog.keys_where(digest=True),
            )
            server = PlaygroundServer(
                client, TimeMachine(clock, planner, application, hold), history_limit=history_limit
            )
            try:
                await server.start(port)
            except OSError as exc:
                raise ConfigurationError(
                    f"--port: cannot listen on {HOST}:{port} ({exc.strerror or exc}); "
                    "expected a free port (or --port 0 for any free one)"
                ) from None
            try:
                yield Playground(server, application, clock, emulator, workshops)
            finally:
                await server.stop()


def _banner(url: str, database_url: str, workshops: int) -> str:
    return f"""\
capacity-bot playground: the workshop bot of Saint-Étienne in your browser, offline.
Open {url} (two residents, a mediator, a coordinator and the facilitators' channel).
{workshops} sample workshops; time travel moves only the playground's clock.
Database: {make_url(database_url).render_as_string(hide_password=True)} \
(recreated fresh at each start: nothing is kept between rehearsals)
Ctrl-C stops it."""


async def run_playground(
    settings: Settings, database_url: str, *, port: int, today: date, out: TextIO = sys.stdout
) -> None:
    """Runs until Ctrl-C or SIGTERM, then stops everything cleanly."""
    quiet_logs()
    stop = asyncio.Event()
    undo = on_signals(stop.set, signal.SIGINT, signal.SIGTERM)
    try:
        async with playground(settings, database_url, port=port, today=today) as running_now:
            out.write(_banner(running_now.server.url, database_url, running_now.workshops) + "\n")
            out.flush()
            await stop.wait()
            out.write("Stopping the playground…\n")
            out.flush()
    finally:
        undo()
    out.write("Stopped.\n")
    out.flush()
