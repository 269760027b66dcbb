"""Fault tests with real processes: `capacity-bot run` killed with SIGKILL mid-send, restarted,
and two instances sharing one PostgreSQL database.

The Bot API emulator runs in the test process; each bot is a subprocess (`python -m bot.cli
run`, the command operators run) talking to it over HTTP. The emulator's per-chat record of
accepted sends is the ground truth: every recipient gets the message, and the duplicates
are exactly the sends Telegram accepted but the dead process had not yet marked sent (its
sends in flight), at most one outbox row per sender, since each sends one row at a time.

Rows the killed process had claimed stay claimed until their lease runs out; the processes
run with OUTBOX_LEASE=5s (two minutes by default, 5 s at least) so that the restart picks
them up within seconds, exactly as it would after two minutes in production.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import telegram
from sqlalchemy import func, select
from telegram.error import Conflict

from bot.clock import ManualClock
from bot.services.broadcasts import BroadcastService
from bot.settings import ConfigurationError, load_settings
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from storage.db import Database
from storage.models import OutboxMessage, StaffMember
from tests.broadcast_helpers import register, seed_residents
from tests.conftest import _drop_postgres_database, _migrate, _new_postgres_database
from tests.factories import seed_workshop
from tests.reminder_helpers import reminder_service

pytestmark = [pytest.mark.faults, pytest.mark.storage, pytest.mark.e2e]

STAFF_ID = 900
TEXT = "Fête du numérique samedi à la médiathèque"
BROADCAST_RECIPIENTS = 2_000
REMINDED = 300
SENDS_PER_REMINDER = 2  # the reminder, then the venue


# -- databases of their own (the bot processes need a file or a database, not a fixture) ---


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "faults.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for these processes, dropped at the end."""
    url = _new_postgres_database("capacity_faults")
    asyncio.run(_migrate(url))
    yield url
    _drop_postgres_database(url)


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        yield server, client


# -- the bot as a process ------------------------------------------------------------------


class BotProcess:
    """`python -m bot.cli run` against the emulator, its output in a log file."""

    def __init__(self, server: BotApiEmulator, database_url: str, workdir: Path, name: str):
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TELEGRAM_"))},
            "BOT_TOKEN": server.token,
            "TELEGRAM_BASE_URL": server.base_url,
            "DATABASE_URL": database_url,
            # Above Telegram's 30/s: allowed because the Bot API is the local emulator.
            "BROADCAST_RATE": "1000",
            "RATE_LIMIT_PER_SECOND": "0",
            "OUTBOX_SWEEP_SECONDS": "0.5",
            "REMINDER_OFFSETS": "2h",
            "QUIET_HOURS": "off",
            "LOG_LEVEL": "INFO",
            "OUTBOX_LEASE": "5s",
        }
        self.workdir = workdir  # no .env file there
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no release of claims, sends cut wherever they are."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def wait(self) -> None:
        assert self.process is not None
        await self.process.wait()

    async def ready(self, timeout: float = 30) -> None:
        """Started up (migrated, menus set, jobs and the broadcast sender running)."""

        async def said_ready() -> bool:
            return self.log_path.exists() and "bot ready" in self.log_path.read_text("utf-8")

        await wait_for(said_ready, timeout, f"{self.log_path.stem} to start")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


@asynccontextmanager
async def bots(
    server: BotApiEmulator, database_url: str, workdir: Path, count: int = 1
) -> AsyncIterator[list[BotProcess]]:
    processes = [BotProcess(server, database_url, workdir, f"bot{i}") for i in range(count)]
    try:
        for process in processes:
            await process.start()
        yield processes
    except BaseException:
        for process in processes:
            print(f"--- {process.log_path.name} ---\n{process.log_tail()}")
        raise
    finally:
        for process in processes:
            await process.stop()


# -- data ----------------------------------------------------------------------------------


def real_clock(shift: timedelta = timedelta(0)) -> ManualClock:
    """The processes run on the system clock: seed the data at real times."""
    return ManualClock(datetime.now(UTC) + shift)


async def seed_broadcast(db: Database, client: EmulatorClient, telegram_ids: list[int]) -> int:
    """Consenting residents known to Telegram, and a broadcast to everyone, confirmed."""
    clock = real_clock()
    await seed_residents(db, clock, telegram_ids)
    await client.register(*(client.user(t, f"P{t}", "fr") for t in telegram_ids))
    await client.user(STAFF_ID, "Médiatrice", "fr").register()
    async with db.write() as session:
        session.add(StaffMember(telegram_id=STAFF_ID, role="mediator", granted_at=clock.now()))
    service = BroadcastService(db, clock)
    await service.begin(STAFF_ID)
    await service.take_text(STAFF_ID, TEXT, len(TEXT))
    await service.skip_photo(STAFF_ID)
    await service.choose_audience(STAFF_ID, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF_ID)
    assert broadcast_id is not None
    return broadcast_id


async def seed_due_reminders(db: Database, client: EmulatorClient, telegram_ids: list[int]) -> int:
    """People with a seat since yesterday in a workshop in 1 h 55: the 2 h reminder is due;
    the planner (as the bot's sweep would) queues one reminder each."""
    yesterday = real_clock(-timedelta(days=1))
    resident_ids = await seed_residents(db, yesterday, telegram_ids)
    workshop = await seed_workshop(
        db,
        yesterday,
        capacity=len(telegram_ids),
        seats_taken=len(telegram_ids),
        starts_in=timedelta(days=1, hours=1, minutes=55),
        title="Premiers pas smartphone",
    )
    await register(db, yesterday, workshop, resident_ids, "confirmed")
    await client.register(*(client.user(t, f"P{t}", "fr") for t in telegram_ids))
    queued = await reminder_service(
        db, real_clock(), reminder_offsets="2h", quiet_hours="off"
    ).plan_due_reminders()
    assert queued == len(telegram_ids)
    return workshop


async def counts(db: Database, **where: object) -> Counter[str]:
    async with db.read() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count())
            .filter_by(**where)
            .group_by(OutboxMessage.status)
        )
        return Counter({status: n for status, n in rows})


async def wait_for(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def sent_so_far(client: EmulatorClient) -> int:
    """Sends and edits the emulator accepted (cheaper to ask than the whole record)."""
    return (await client.stats())["messages_sent"]


async def sends_to(client: EmulatorClient, people: set[int]) -> Counter[int]:
    traffic = await client.traffic()
    return Counter(chat for chat in traffic["chat_ids"] if chat in people)


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("http://127.0.0.1:8081/bot", True),
        ("http://localhost:8081/bot", True),
        ("http://[::1]:8081/bot", True),
        ("https://api.telegram.org/bot", False),
        ("http://10.0.0.5:8081/bot", False),
    ],
)
def test_rates_above_telegrams_limit_only_against_a_local_emulator(base_url, allowed) -> None:
    """The fault tests drive the emulator at 1000/s; a real bot can never go above 30/s."""
    for setting in ("broadcast_rate", "rate_limit_per_second"):
        values = {"telegram_base_url": base_url, setting: 1000, "_env_file": None}
        if allowed:
            assert getattr(load_settings(**values), setting) == 1000
        else:
            with pytest.raises(ConfigurationError, match="loopback address"):
                load_settings(**values)
        assert getattr(load_settings(**{**values, setting: 30}), setting) == 30


async def test_kill_9_during_a_broadcast_then_restart(sqlite_url, emulator, tmp_path):
    server, client = emulator
    db = Database(sqlite_url)
    try:
        ids = list(range(100_000, 100_000 + BROADCAST_RECIPIENTS))
        people = set(ids)
        broadcast_id = await seed_broadcast(db, client, ids)

        async with bots(server, sqlite_url, tmp_path) as [bot]:

            async def a_quarter_sent() -> bool:
                return await sent_so_far(client) >= len(ids) // 4

            await wait_for(a_quarter_sent, 60, "a quarter of the broadcast")
            bot.kill()
            await bot.wait()
            accepted = sum((await sends_to(client, people)).values())
            marked = (await counts(db, broadcast_id=broadcast_id))["sent"]
            in_flight = accepted - marked  # accepted by Telegram, not yet marked sent
            assert accepted < len(ids)  # really killed in the middle
            assert 0 <= in_flight <= 1  # one sender, one row at a time

            await bot.start()  # the restart

            async def all_sent() -> bool:
                return (await counts(db, broadcast_id=broadcast_id))["sent"] == len(ids)

            await wait_for(all_sent, 60, "the rest of the broadcast")
        received = await sends_to(client, people)
        assert set(received) == people  # everyone got it
        duplicates = sum(n - 1 for n in received.values())
        assert duplicates == in_flight  # only what was in flight at the kill
    finally:
        await db.dispose()


async def test_kill_9_while_sending_reminders_then_restart(fresh_postgres_url, emulator, tmp_path):
    server, client = emulator
    db = Database(fresh_postgres_url)
    try:
        ids = list(range(200_000, 200_000 + REMINDED))
        people = set(ids)
        await seed_due_reminders(db, client, ids)
        total = len(ids) * SENDS_PER_REMINDER

        async with bots(server, fresh_postgres_url, tmp_path) as [bot]:

            async def a_third_sent() -> bool:
                return await sent_so_far(client) >= total // 3

            await wait_for(a_third_sent, 60, "a third of the reminders")
            bot.kill()
            await bot.wait()
            accepted = sum((await sends_to(client, people)).values())
            marked = (await counts(db, kind="reminder"))["sent"]
            in_flight = accepted - marked * SENDS_PER_REMINDER
            assert accepted < total
            assert 0 <= in_flight <= SENDS_PER_REMINDER  # one row at a time, sent whole

            await bot.start()

            async def all_sent() -> bool:
                return (await counts(db, kind="reminder"))["sent"] == len(ids)

            await wait_for(all_sent, 60, "the rest of the reminders")
        received = await sends_to(client, people)
        assert set(received) == people
        assert all(n >= SENDS_PER_REMINDER for n in received.values())
        extra = sum(n - SENDS_PER_REMINDER for n in received.values())
        assert extra == in_flight
    finally:
        await db.dispose()


async def test_two_instances_on_one_postgresql_never_send_a_row_twice(
    fresh_postgres_url, emulator, tmp_path
):
    server, client = emulator
    db = Database(fresh_postgres_url)
    try:
        broadcast_ids = list(range(300_000, 300_400))
        reminded_ids = list(range(400_000, 400_150))

        async with bots(server, fresh_postgres_url, tmp_path, count=2) as instances:
            for instance in instances:  # both running before there is anything to send
                await instance.ready()
            broadcast_id = await seed_broadcast(db, client, broadcast_ids)
            await seed_due_reminders(db, client, reminded_ids)

            async def all_sent() -> bool:
                done = await counts(db, broadcast_id=broadcast_id)
                reminders = await counts(db, kind="reminder")
                return done["sent"] == len(broadcast_ids) and reminders["sent"] == len(reminded_ids)

            await wait_for(all_sent, 60, "the broadcast and the reminders")
        received = await sends_to(client, set(broadcast_ids) | set(reminded_ids))
        assert {received[t] for t in broadcast_ids} == {1}
        assert {received[t] for t in reminded_ids} == {SENDS_PER_REMINDER}
        async with db.read() as session:
            workers = await session.scalar(
                select(func.count(func.distinct(OutboxMessage.claimed_by))).where(
                    OutboxMessage.broadcast_id == broadcast_id
                )
            )
        assert workers == 2  # both instances really shared the work
    finally:
        await db.dispose()


async def test_a_second_get_updates_poller_ends_the_first_with_409_as_on_telegram(emulator):
    """Why two polling instances are not supported: Telegram ends the waiting getUpdates
    with 409 when another one comes (python-telegram-bot's Conflict), so each poller keeps
    cutting the other off."""
    server, client = emulator
    async with (
        telegram.Bot(server.token, base_url=server.base_url) as first,
        telegram.Bot(server.token, base_url=server.base_url) as second,
    ):
        before = (await client.stats())["requests"]
        waiting = asyncio.create_task(first.get_updates(timeout=10))

        async def first_one_waits() -> bool:
            return (await client.stats())["requests"] > before

        await wait_for(first_one_waits, 5, "the first long poll")
        taking = asyncio.create_task(second.get_updates(timeout=10))
        with pytest.raises(Conflict) as refused:
            await asyncio.wait_for(waiting, 5)
        assert refused.value.message == (
            "Conflict: terminated by other getUpdates request; make sure that only one bot "
            "instance is running"
        )
        await client.user(600_001, "Amina", "fr").send("/start")
        [update] = await asyncio.wait_for(taking, 5)  # the latest poller gets the updates
        assert update.message.text == "/start"
    assert (await client.stats())["errors"] == {"409": 1}
