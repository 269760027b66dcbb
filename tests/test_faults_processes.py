"""Fault tests with real processes: `capacity-bot run` killed with SIGKILL mid-send, restarted,
and two webhook instances sharing one PostgreSQL database behind a load-spreading proxy.

The Bot API emulator runs in the test process; each bot is a subprocess (`python -m bot.runtime.cli
run`, the command operators run) talking to it over HTTP. The emulator's per-chat record of
accepted sends is the ground truth: every recipient gets the message, and the duplicates
are exactly the sends Telegram accepted but the dead process had not yet marked sent (its
sends in flight), at most one outbox row per sender, since each sends one row at a time.

Rows the killed process had claimed stay claimed until their lease runs out; the processes
run with OUTBOX_LEASE=5s (two minutes by default, 5 s at least) so that the restart picks
them up within seconds, exactly as it would after two minutes in production.

Several instances are supported behind a webhook only (README "Scaling out"): two polling
instances conflict on Telegram (409), and the emulator refuses them the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import telegram
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import func, select
from telegram.error import Conflict

from bot.clock import ManualClock
from bot.services.broadcasts.drafts import BroadcastService
from bot.settings import ConfigurationError, load_settings
from storage.db import Database
from storage.models import OutboxMessage, OutboxStatus, Resident, StaffMember
from tests.broadcast_helpers import register, seed_residents
from tests.conftest import _drop_postgres_database, _migrate, _new_postgres_database
from tests.factories import seed_workshop
from tests.reminder_helpers import reminder_service
from tests.round_robin_proxy import RoundRobinProxy
from tests.test_webhook import PUBLIC_URL, SECRET, free_port

pytestmark = [pytest.mark.faults, pytest.mark.storage, pytest.mark.e2e]

STAFF_ID = 900
TEXT = "Fête du numérique samedi à la médiathèque"
BROADCAST_RECIPIENTS = 2_000
REMINDED = 300
# The bot's whole rate in the webhook test (Telegram's 30/s, scaled up to keep the test short),
# split between its two instances as README "Scaling out" says.
RATE_LIMIT = 100
INSTANCE_RATE = RATE_LIMIT // 2
WRITERS_PER_WAVE = 10  # residents writing /start at each stage of the webhook test
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
    """`python -m bot.runtime.cli run` against the emulator, its output in a log file (appended to
    across restarts). With `webhook_port`, `run --webhook` listening on that port."""

    def __init__(
        self,
        server: BotApiEmulator,
        database_url: str,
        workdir: Path,
        name: str,
        *,
        webhook_port: int | None = None,
        **settings: str,
    ):
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
            **settings,
        }
        self.arguments = ["run"]
        if webhook_port is not None:
            self.arguments.append("--webhook")
            self.env.update(
                WEBHOOK_URL=PUBLIC_URL,
                WEBHOOK_SECRET=SECRET,
                WEBHOOK_LISTEN="127.0.0.1",
                WEBHOOK_PORT=str(webhook_port),
            )
        self.url = f"http://127.0.0.1:{webhook_port}" if webhook_port is not None else None
        self.workdir = workdir  # no .env file there
        self.process: asyncio.subprocess.Process | None = None
        self._log_offset = 0  # where the output of the latest start begins

    async def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.runtime.cli",
            *self.arguments,
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

    async def stop(self) -> int:
        """SIGTERM, a graceful stop (SIGKILL after 15 s); the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
        return await self.process.wait()

    async def wait(self) -> None:
        assert self.process is not None
        await self.process.wait()

    async def ready(self, timeout: float = 30) -> None:
        """Taking updates (migrated, menus set, jobs and the broadcast sender running, polling
        started or the webhook set), since the latest start."""

        async def said_ready() -> bool:
            return "taking updates" in self.output_since_start()

        await wait_for(said_ready, timeout, f"{self.log_path.stem} to start")

    def output_since_start(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


@asynccontextmanager
async def running(*processes: BotProcess) -> AsyncIterator[None]:
    """The processes started; stopped at the end, their logs printed when the test failed."""
    try:
        for process in processes:
            await process.start()
        yield
    except BaseException:
        for process in processes:
            print(f"--- {process.log_path.name} ---\n{process.log_tail()}")
        raise
    finally:
        for process in processes:
            if process.process is not None:
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


def sent_at_least(client: EmulatorClient, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return await sent_so_far(client) >= count

    return reached


async def workers_sending(db: Database, broadcast_id: int, since: datetime) -> set[str]:
    """The outbox workers (one per process start) that marked rows sent since `since`."""
    async with db.read() as session:
        workers = await session.scalars(
            select(OutboxMessage.claimed_by)
            .distinct()
            .where(
                OutboxMessage.broadcast_id == broadcast_id,
                OutboxMessage.status == OutboxStatus.SENT,
                OutboxMessage.sent_at > since,
            )
        )
        return {worker for worker in workers if worker is not None}


async def the_only_worker_sending(db: Database, broadcast_id: int, since: datetime) -> str:
    """The worker of the one process sending since `since` (it is identified by its rows)."""
    found: set[str] = set()

    async def one_sends() -> bool:
        found.update(await workers_sending(db, broadcast_id, since))
        return bool(found)

    await wait_for(one_sends, 30, "the other instance to send")
    [worker] = found
    return worker


async def held_not_sent(db: Database, broadcast_id: int, worker: str) -> set[int]:
    """Telegram ids of the recipients whose row `worker` holds and has not marked sent."""
    async with db.read() as session:
        held = await session.scalars(
            select(Resident.telegram_id)
            .join(OutboxMessage, OutboxMessage.resident_id == Resident.id)
            .where(
                OutboxMessage.broadcast_id == broadcast_id,
                OutboxMessage.status == OutboxStatus.PENDING,
                OutboxMessage.claimed_by == worker,
            )
        )
        return {telegram_id for telegram_id in held if telegram_id is not None}


async def start_conversations(
    client: EmulatorClient, telegram_ids: Iterator[int], count: int
) -> list[SimulatedUser]:
    """`count` new people send /start, each once; returned once each got an answer."""
    people = [client.user(next(telegram_ids), "Nadia", "fr") for _ in range(count)]
    for person in people:
        await person.send("/start")
    for person in people:
        await person.wait_message(timeout=30)
    return people


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

        bot = BotProcess(server, sqlite_url, tmp_path, "bot")
        async with running(bot):

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

        bot = BotProcess(server, fresh_postgres_url, tmp_path, "bot")
        async with running(bot):

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


async def test_two_webhook_instances_behind_a_proxy_through_a_restart_and_a_kill(
    fresh_postgres_url, emulator, tmp_path
):
    """The supported way to run two instances (README "Scaling out"): `run --webhook` twice on
    one PostgreSQL database, behind a proxy that spreads Telegram's requests. During a
    broadcast to 2,000 residents, one instance is restarted (SIGTERM, then started again) and
    the other is killed (SIGKILL) half-way. Nobody is missed, the only duplicates are the
    killed instance's sends in flight, the bot's whole rate is never exceeded in any second,
    and the residents who write meanwhile are answered once each, by whichever instance is up.
    """
    server, client = emulator
    db = Database(fresh_postgres_url)
    ids = list(range(300_000, 300_000 + BROADCAST_RECIPIENTS))
    people = set(ids)
    writers = iter(range(500_000, 500_000 + 3 * WRITERS_PER_WAVE))
    rates = {"RATE_LIMIT_PER_SECOND": str(INSTANCE_RATE), "BROADCAST_RATE": str(INSTANCE_RATE)}
    a, b = (
        BotProcess(server, fresh_postgres_url, tmp_path, name, webhook_port=free_port(), **rates)
        for name in ("a", "b")
    )
    assert a.url is not None and b.url is not None
    try:
        async with RoundRobinProxy([a.url, b.url]) as proxy, running(a, b):
            await client.set_webhook_via(proxy.url)  # Telegram reaches the proxy
            await a.ready()
            await b.ready()
            seeded = datetime.now(UTC)
            broadcast_id = await seed_broadcast(db, client, ids)
            writing = await start_conversations(client, writers, WRITERS_PER_WAVE)

            await wait_for(sent_at_least(client, len(ids) // 4), 60, "a quarter sent")
            assert await a.stop() == 0  # SIGTERM: a graceful stop
            a_stopped = datetime.now(UTC)
            answered_by = proxy.answered.copy()
            writing += await start_conversations(client, writers, WRITERS_PER_WAVE)
            assert proxy.answered - answered_by == Counter({b.url: WRITERS_PER_WAVE})
            b_worker = await the_only_worker_sending(db, broadcast_id, a_stopped)
            await a.start()  # the restart
            await a.ready()

            await wait_for(sent_at_least(client, len(ids) // 2), 60, "half sent")
            # Every resident's update is answered by now: the webhook says 200 once an update
            # is queued, so one queued and not yet handled would die with the process.
            b.kill()
            await b.wait()
            held = await held_not_sent(db, broadcast_id, b_worker)  # before its lease runs out
            accepted = await sends_to(client, people)
            in_flight = len(held & set(accepted))  # accepted by Telegram, not marked sent
            assert sum(accepted.values()) < len(ids)  # really killed in the middle
            assert 0 <= in_flight <= 1  # one broadcast sender, one row at a time
            answered_by = proxy.answered.copy()
            writing += await start_conversations(client, writers, WRITERS_PER_WAVE)
            assert proxy.answered - answered_by == Counter({a.url: WRITERS_PER_WAVE})

            async def all_sent() -> bool:
                return (await counts(db, broadcast_id=broadcast_id))["sent"] == len(ids)

            await wait_for(all_sent, 60, "the rest of the broadcast")
            workers = await workers_sending(db, broadcast_id, since=seeded)
        received = await sends_to(client, people)
        assert set(received) == people  # everyone got it
        duplicates = sum(n - 1 for n in received.values())
        assert duplicates == in_flight  # only what was in flight at the kill
        assert len(workers) == 3  # a, b, then a again all sent part of it
        stats = await client.stats()
        print(f"busiest second: {stats['max_per_second']} messages (limit {RATE_LIMIT})")
        assert stats["max_per_second"] <= RATE_LIMIT and stats["responses_429"] == 0
        assert stats["pending_updates"] == 0
        for person in writing:  # each /start answered once, with the welcome
            [answer] = await person.messages()
            assert "Bonjour" in (answer.text or "")
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
