"""`capacity-bot run` as a process: start-up through a Bot API outage, a refused token, and a
graceful stop on SIGTERM in the middle of a broadcast that the next start finishes at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from sqlalchemy import func, insert, select

from bot.clock import ManualClock
from bot.plumbing.delivery import JOB_NAME as DELIVERY_JOB
from bot.services.broadcasts.sending import KIND
from bot.services.outbox import LEASE, Outbox
from storage.db import Database
from storage.models import Broadcast, BroadcastStatus, OutboxMessage, OutboxStatus
from tests.broadcast_helpers import seed_residents
from tests.e2e import bot_running, services_of, settings_for

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

TOKEN = "424242:SECRET-token-that-must-never-be-logged"
RECIPIENTS = 40


class Bot:
    """`python -m bot.runtime.cli run` against the emulator; its output is kept for the asserts."""

    def __init__(self, cwd: Path, database_url: str, base_url: str, **env: str) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k not in ("BOT_TOKEN", "DATABASE_URL")}
        self.env.update(
            BOT_TOKEN=TOKEN,
            TELEGRAM_BASE_URL=base_url,
            DATABASE_URL=database_url,
            RATE_LIMIT_PER_SECOND="0",
            OUTBOX_SWEEP_SECONDS="1",
            **env,
        )
        self.process: asyncio.subprocess.Process | None = None
        self.output = ""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.runtime.cli",
            "run",
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def wait_for_line(self, text: str, timeout: float = 30) -> None:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.output:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"the bot ended before {text!r}:\n{self.output}")
                self.output += line.decode()

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None and self.process.stdout is not None
        self.process.send_signal(signum)
        async with asyncio.timeout(timeout):
            rest = await self.process.stdout.read()
            self.output += rest.decode()
            return await self.process.wait()

    async def ended(self, timeout: float = 30) -> int:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(timeout):
            self.output += (await self.process.stdout.read()).decode()
            return await self.process.wait()


async def seed_broadcast(db: Database, client: EmulatorClient, count: int) -> int:
    """A broadcast being sent to `count` residents known to the emulator."""
    now = datetime.now(UTC)
    telegram_ids = [9_000 + n for n in range(count)]
    await client.register(*(client.user(t, f"P{t}", "fr") for t in telegram_ids))
    resident_ids = await seed_residents(db, ManualClock(now - timedelta(days=1)), telegram_ids)
    async with db.write() as session:
        broadcast_id = (
            await session.execute(
                insert(Broadcast)
                .values(
                    created_by=8_999,
                    message_text="Atelier demain à la Maison de quartier",
                    audience={"kind": "all"},
                    status=BroadcastStatus.SENDING,
                    recipients=count,
                    created_at=now,
                    confirmed_at=now,
                )
                .returning(Broadcast.id)
            )
        ).scalar_one()
        await session.execute(
            insert(OutboxMessage),
            [
                {
                    "resident_id": resident_id,
                    "kind": KIND,
                    "broadcast_id": broadcast_id,
                    "payload": {},
                    "dedupe_key": f"{KIND}:{broadcast_id}:{resident_id}",
                    "status": OutboxStatus.PENDING,
                    "not_before": now - timedelta(minutes=1),
                    "created_at": now,
                }
                for resident_id in resident_ids
            ],
        )
    return broadcast_id


async def received_by_chat(client: EmulatorClient, count: int) -> dict[int, int]:
    chats = {}
    for telegram_id in (9_000 + n for n in range(count)):
        messages = await client.user(telegram_id).messages()
        chats[telegram_id] = sum("Atelier demain" in (m.text or "") for m in messages)
    return chats


async def test_sigterm_mid_broadcast_stops_cleanly_and_the_next_start_resumes_at_once(
    db: Database, database_url: str, tmp_path: Path
):
    async with BotApiEmulator(token=TOKEN) as emulator, EmulatorClient(emulator.side_url) as client:
        await seed_broadcast(db, client, RECIPIENTS)
        # Slow enough (5 a second) to be stopped half-way through the first batch of ten.
        bot = Bot(tmp_path, database_url, emulator.base_url, BROADCAST_RATE="5")
        await bot.start()
        await bot.wait_for_line("bot ready")
        # Rows go out in order: the third recipient's message means three were sent.
        await client.user(9_002).wait_message(contains="Atelier demain", timeout=20)
        assert await bot.stop(signal.SIGTERM) == 0, bot.output[-3000:]
        assert "SIGTERM received: stopping gracefully" in bot.output
        assert "stopped; work not finished is left for the next start" in bot.output
        assert "Traceback" not in bot.output and TOKEN not in bot.output

        async with db.read() as session:
            pending = (
                await session.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status == OutboxStatus.PENDING)
                )
            ).scalar_one()
            held = (
                await session.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(
                        OutboxMessage.status == OutboxStatus.PENDING,
                        OutboxMessage.claimed_until.is_not(None),
                    )
                )
            ).scalar_one()
        assert 0 < pending < RECIPIENTS  # stopped in the middle
        assert held == 0  # nothing left waiting for its lease to run out

        # The next start sends the rest at once: well before a lease could have expired.
        started = asyncio.get_running_loop().time()
        again = Bot(tmp_path, database_url, emulator.base_url, BROADCAST_RATE="30")
        await again.start()
        for telegram_id in range(9_000, 9_000 + RECIPIENTS):
            await client.user(telegram_id).wait_message(contains="Atelier demain", timeout=20)
        # Far sooner than the lease (LEASE) after which an unreleased row would be claimable.
        assert asyncio.get_running_loop().time() - started < min(20, LEASE.total_seconds() / 4)
        assert await again.stop(signal.SIGINT) == 0, again.output[-3000:]
        received = await received_by_chat(client, RECIPIENTS)
        assert all(n >= 1 for n in received.values())
        # Only a send in flight at the SIGTERM could go twice; the sender finishes it first.
        assert sum(received.values()) <= RECIPIENTS + 1


async def test_start_up_waits_for_an_unreachable_bot_api_then_serves(tmp_path: Path):
    async with BotApiEmulator(token=TOKEN) as emulator, EmulatorClient(emulator.side_url) as client:
        await client.set_unreachable(True)
        bot = Bot(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3", emulator.base_url)
        await bot.start()
        await bot.wait_for_line("attempt 1,")
        await client.set_unreachable(False)
        await bot.wait_for_line("bot ready")
        user = client.user(77, "Ines", "fr")
        await user.send("/start")
        assert "Bonjour" in (await user.wait_message(timeout=15)).text
        assert await bot.stop(signal.SIGTERM) == 0, bot.output[-3000:]
    attempts = [line for line in bot.output.splitlines() if "did not answer" in line]
    assert attempts and "connecting to the Bot API" in attempts[0]
    assert all("Bad Gateway" in line for line in attempts)  # one line each, no trace
    assert "Traceback" not in bot.output and TOKEN not in bot.output


async def test_sigterm_during_the_start_up_retries_exits_0(tmp_path: Path):
    async with BotApiEmulator(token=TOKEN) as emulator, EmulatorClient(emulator.side_url) as client:
        await client.set_unreachable(True)
        bot = Bot(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3", emulator.base_url)
        await bot.start()
        await bot.wait_for_line("starting the bot")
        await asyncio.sleep(0.5)  # in the first attempt to reach the Bot API
        assert await bot.stop(signal.SIGTERM, timeout=15) == 0, bot.output[-3000:]
    assert "stopped during start-up" in bot.output and "Traceback" not in bot.output


@pytest.mark.parametrize(
    ("drop_connections", "signum"), [(False, signal.SIGINT), (True, signal.SIGTERM)]
)
async def test_a_stop_during_the_start_up_retries_logs_one_line_per_attempt_and_no_leak(
    tmp_path: Path, drop_connections: bool, signum: int
):
    """The start-up's retry loop is the only one (the request layer makes one attempt per
    call meanwhile), and a stop before the bot is initialised closes its HTTP sessions."""
    async with BotApiEmulator(token=TOKEN) as emulator, EmulatorClient(emulator.side_url) as client:
        await client.set_unreachable(True, drop_connections=drop_connections)
        bot = Bot(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3", emulator.base_url)
        await bot.start()
        await bot.wait_for_line("attempt 2,")
        assert await bot.stop(signum, timeout=15) == 0, bot.output[-3000:]
    lines = bot.output.splitlines()
    started = next(n for n, line in enumerate(lines) if "starting the bot" in line)
    stopping = next(n for n, line in enumerate(lines) if "received: stopping gracefully" in line)
    attempts = lines[started + 1 : stopping]
    assert all(
        "connecting to the Bot API: the Bot API did not answer" in line for line in attempts
    ), "\n".join(attempts)
    assert [int(line.split("attempt ")[1].split(",")[0]) for line in attempts] == list(
        range(1, len(attempts) + 1)
    )
    assert "stopped during start-up" in bot.output
    assert "Unclosed" not in bot.output and " ERROR " not in bot.output, bot.output[-3000:]


async def test_a_refused_token_is_one_line_naming_bot_token_and_exit_2(tmp_path: Path):
    async with BotApiEmulator(token="999999:another-bots-token-of-the-emulator") as emulator:
        bot = Bot(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3", emulator.base_url)
        await bot.start()
        assert await bot.ended() == 2
    errors = [line for line in bot.output.splitlines() if line.startswith("capacity-bot:")]
    assert len(errors) == 1 and "BOT_TOKEN" in errors[0]
    assert "Traceback" not in bot.output and TOKEN.split(":")[1] not in bot.output


async def test_release_claims_gives_back_only_this_workers_pending_rows(db: Database):
    now = datetime.now(UTC)
    clock = ManualClock(now)
    [resident] = await seed_residents(db, clock, [7_001])
    async with db.write() as session:
        await session.execute(
            insert(OutboxMessage),
            [
                {
                    "resident_id": resident,
                    "kind": "test",
                    "payload": {},
                    "status": OutboxStatus.PENDING,
                    "not_before": now - timedelta(seconds=1),
                    "created_at": now,
                }
                for _ in range(4)
            ],
        )
    mine, other = Outbox(db, clock, "instance-a"), Outbox(db, clock, "instance-b")
    claimed = [m.id for m in await mine.claim_due(3)]
    others = [m.id for m in await other.claim_due(10)]
    assert len(claimed) == 3 and len(others) == 1
    await mine.mark_sent(claimed[0])
    assert await mine.release_claims() == 2  # not the sent row, nor the other's
    assert await other.release_claims() == 1
    again = await other.claim_due(10)  # at once, not after the lease
    assert sorted(m.id for m in again) == sorted(claimed[1:] + others)


async def test_a_stop_out_of_time_keeps_the_claim_of_the_row_being_sent(
    db: Database, database_url: str, caplog: pytest.LogCaptureFixture
):
    """post_shutdown releases what this instance claimed, except a row whose send is still
    in flight (the stop ran out of time): that one keeps its lease, and the log says so."""
    caplog.set_level(logging.INFO, logger="bot.runtime.app")
    async with BotApiEmulator(token=TOKEN) as emulator:
        settings = settings_for(emulator, database_url, outbox_sweep_seconds=300)
        clock = ManualClock(datetime.now(UTC))
        async with bot_running(settings, clock) as application:
            assert application.job_queue is not None
            [sweep] = application.job_queue.get_jobs_by_name(DELIVERY_JOB)
            later = datetime.now(UTC) + timedelta(minutes=1)
            for _ in range(500):  # until its first run is over: the next is in 5 minutes
                if sweep.next_t is not None and sweep.next_t > later:
                    break
                await asyncio.sleep(0.02)
            [resident] = await seed_residents(db, clock, [7_101])
            async with db.write() as session:
                await session.execute(
                    insert(OutboxMessage),
                    [
                        {
                            "resident_id": resident,
                            "kind": "test",
                            "payload": {},
                            "not_before": clock.now(),
                            "created_at": clock.now(),
                        }
                        for _ in range(3)
                    ],
                )
            outbox: Outbox = services_of(application).outbox
            in_flight, *rest = await outbox.claim_due(3)
            assert await outbox.renew(in_flight.id)  # its send has begun, not finished
        async with db.read() as session:
            rows = await session.execute(select(OutboxMessage.id, OutboxMessage.claimed_by))
            held = {row.id: row.claimed_by for row in rows}
    assert held == {in_flight.id: outbox.worker_id, **{m.id: None for m in rest}}
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.runtime.app"]
    assert "released 2 claimed outbox rows for the next start" in lines
    assert any(line.startswith(f"kept outbox rows {in_flight.id}, still being") for line in lines)
