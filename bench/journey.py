"""Cost per update and latency of the sign-up journey, against a bare echo bot (issue 6, §1).

N simulated residents (N = 1, 10, 50) loop over the sign-up journey through the Bot API
emulator, over real HTTP: open a workshop card, register, cancel (ask, then confirm), back to
the list; five taps a loop, each a round trip (the tap's update, then the bot's edit of the
message). Closed loop: each resident taps again as soon as the bot has answered.

Three processes: the emulator (`python -m emulator`, no rate limit), the bot (`python -m
bot.runtime.cli run`, RATE_LIMIT_PER_SECOND=0, flood limits lifted: a script taps faster than any
person) and the load generator (this process). The baseline is bench/echo_bot.py, a bare
python-telegram-bot bot answering each tap with answerCallbackQuery and an edit, as
capacity-bot does, on the same emulator, with the same load.

Figures:
- round trips per second (taps answered / seconds);
- CPU ms per update of the bot process (/proc/<pid>/stat utime+stime over the run / taps);
- latency from the tap (just before the side-API call that injects the update) to the
  emulator's record of the bot's edit (both on this machine's clock), p50 / p95 / p99;
- open loop: taps at a fixed rate (50/s, spread over 50 residents), latency measured from the
  time each tap was due, so a late answer delays the following taps' measures too.

    .venv/bin/python -m bench.journey            # full: 3 runs, N = 1, 10, 50, 10 s each
    .venv/bin/python -m bench.journey --quick    # 1 run, N = 1 and 10, 1.2 s each
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    BotProcess,
    EmulatorProcess,
    Process,
    Spread,
    bot_env,
    cli,
    drop_postgres_database,
    machine,
    machine_line,
    migrated,
    new_postgres_database,
    percentile,
    postgres_available,
    print_table,
    ratio,
    spread_of,
    verdict,
    write_results,
)

TITLE = "Mon smartphone au quotidien"
# The journey, as the buttons a resident taps in turn (French labels, parts of the text).
CAPACITY_STEPS = (TITLE, "Je m'inscris", "Annuler ma place", "Oui, j'annule", "Voir les ateliers")
ECHO_STEPS = ("Again",)
FIRST_USER_ID = 10_000
OPEN_LOOP_RATE = 50.0  # updates per second
OPEN_LOOP_USERS = 50
OPEN_LABEL = f"open {OPEN_LOOP_RATE:.0f}/s"
IN_STEP_LABEL = f"open {OPEN_LOOP_RATE:.0f}/s in step"
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_P99_MS = 50.0
ANSWER_TIMEOUT_S = 30.0


@dataclass
class Mode:
    runs: int
    sizes: tuple[int, ...]
    seconds: float
    warmup: float
    open_loop_seconds: float


FULL = Mode(runs=3, sizes=(1, 10, 50), seconds=10.0, warmup=2.0, open_loop_seconds=10.0)
QUICK = Mode(runs=1, sizes=(1, 10), seconds=1.2, warmup=0.3, open_loop_seconds=1.2)


# -- the load generator --------------------------------------------------------------------


class EventFeed:
    """Follows the emulator's event log (one long poll for all chats) and hands each bot
    event to the chat it belongs to."""

    def __init__(self, http: aiohttp.ClientSession, side_url: str) -> None:
        self.http = http
        self.url = f"{side_url}/_emulator/events"
        self.queues: dict[int, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.after = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self.http.get(self.url, params={"after": 0, "limit": 1}) as response:
            self.after = (await response.json())["last_seq"]
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            params = {"after": self.after, "timeout": 5, "limit": 10_000}
            async with self.http.get(self.url, params=params) as response:
                body = await response.json()
            for event in body["events"]:
                self.after = max(self.after, event["seq"])
                if event["source"] == "bot" and event["kind"] in ("message", "edit"):
                    self.queues[event["chat_id"]].put_nowait(event)

    async def answer(
        self, chat_id: int, after_seq: int, kind: str, message_id: int | None
    ) -> dict[str, Any]:
        """The first bot event of this kind in the chat after ``after_seq``."""
        queue = self.queues[chat_id]
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:
                event = await queue.get()
                if event["seq"] <= after_seq or event["kind"] != kind:
                    continue
                if message_id is None or event["message_id"] == message_id:
                    return event

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class Resident:
    """One simulated person tapping through the journey on one message."""

    user_id: int
    steps: Sequence[str]
    http: aiohttp.ClientSession
    side_url: str
    feed: EventFeed
    message: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    @property
    def _from(self) -> dict[str, Any]:
        return {"id": self.user_id, "first_name": f"R{self.user_id}", "language_code": "fr"}

    async def begin(self, text: str) -> None:
        """Sends a first message; the bot's reply is the message the journey taps on."""
        url = f"{self.side_url}/_emulator/chats/{self.user_id}/messages"
        async with self.http.post(url, json={"text": text, "from": self._from}) as response:
            seq = (await response.json())["seq"]
        event = await self.feed.answer(self.user_id, seq, "message", None)
        self.message = event["message"]

    def _next_button(self) -> str:
        wanted = self.steps[self.step % len(self.steps)]
        rows = self.message.get("reply_markup", {}).get("inline_keyboard", [])
        for row in rows:
            for button in row:
                if wanted in button["text"]:
                    return button["callback_data"]
        texts = [button["text"] for row in rows for button in row]
        raise LookupError(f"resident {self.user_id}: no button {wanted!r} in {texts}")

    async def tap(self, since: float | None = None) -> float:
        """Taps the next button of the journey; the latency in seconds until the bot's edit
        (from ``since``, the time the tap was due, when given)."""
        data = self._next_button()
        url = f"{self.side_url}/_emulator/chats/{self.user_id}/callbacks"
        body = {
            "from": self._from,
            "message_id": self.message["message_id"],
            "callback_data": data,
        }
        started = time.time()
        async with self.http.post(url, json=body) as response:
            seq = (await response.json())["seq"]
        event = await self.feed.answer(self.user_id, seq, "edit", self.message["message_id"])
        self.message = event["message"]
        self.step += 1
        return event["time"] - (since if since is not None else started)


@dataclass
class Phase:
    """The figures of one load phase."""

    label: str
    taps: int
    seconds: float
    bot_cpu_s: float
    emulator_cpu_s: float
    generator_cpu_s: float
    latencies: list[float]
    rate: float | None = None  # open loop: the offered rate

    def figures(self) -> dict[str, float]:
        lat_ms = [value * 1000 for value in self.latencies]
        return {
            "taps": self.taps,
            "seconds": self.seconds,
            "round_trips_per_s": ratio(self.taps, self.seconds),
            "bot_cpu_ms_per_update": ratio(self.bot_cpu_s * 1000, self.taps),
            "emulator_cpu_ms_per_update": ratio(self.emulator_cpu_s * 1000, self.taps),
            "generator_cpu_ms_per_update": ratio(self.generator_cpu_s * 1000, self.taps),
            "bot_cpu_share": ratio(self.bot_cpu_s, self.seconds),
            "p50_ms": percentile(lat_ms, 50),
            "p95_ms": percentile(lat_ms, 95),
            "p99_ms": percentile(lat_ms, 99),
            "max_ms": max(lat_ms) if lat_ms else float("nan"),
        }


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def measure(
    label: str,
    residents: Sequence[Resident],
    bot: Process,
    emulator: Process,
    seconds: float,
    warmup: float,
    rate: float | None = None,
    staggered: bool | None = None,
) -> Phase:
    """Closed loop (rate None): each resident taps again as soon as answered. Open loop: taps
    due at ``rate`` per second in all, round robin over the residents. ``staggered`` (True or
    False) aligns the residents' steps first (see `align`); the warm-up then lasts whole
    periods (each resident taps the same number of times), which keeps them aligned."""
    if staggered is not None:
        assert rate is not None
        await align(residents, staggered=staggered)
        period = len(residents) / rate
        warmup = max(1, math.ceil(warmup / period)) * period
    if warmup > 0:
        await _load(residents, warmup, rate, record=None)
    cpu = (bot.cpu_seconds(), emulator.cpu_seconds(), _own_cpu())
    latencies: list[float] = []
    started = time.monotonic()
    taps = await _load(residents, seconds, rate, record=latencies)
    elapsed = time.monotonic() - started
    return Phase(
        label,
        taps,
        elapsed,
        bot.cpu_seconds() - cpu[0],
        emulator.cpu_seconds() - cpu[1],
        _own_cpu() - cpu[2],
        latencies,
        rate,
    )


async def _load(
    residents: Sequence[Resident], seconds: float, rate: float | None, record: list[float] | None
) -> int:
    start = time.time()
    deadline = start + seconds
    counts = [0] * len(residents)

    async def closed(index: int, resident: Resident) -> None:
        while time.time() < deadline:
            latency = await resident.tap()
            counts[index] += 1
            if record is not None:
                record.append(latency)

    async def opened(index: int, resident: Resident) -> None:
        assert rate is not None
        period = len(residents) / rate
        due = start + index / rate
        while due < deadline:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            latency = await resident.tap(since=due)
            counts[index] += 1
            if record is not None:
                record.append(latency)
            due += period

    work = closed if rate is None else opened
    await asyncio.gather(*(work(i, r) for i, r in enumerate(residents)))
    return sum(counts)


# -- one bot under load --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[str]:
    """A migrated database of its own, seeded with one workshop and the residents."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'journey.sqlite3'}"
    else:
        url = await new_postgres_database("journey")
    try:
        await migrated(url)
        await seed(url, FIRST_USER_ID, OPEN_LOOP_USERS)
        yield url
    finally:
        if backend == "postgresql":
            await drop_postgres_database(url)


async def seed(url: str, first_user: int, count: int) -> None:
    """One workshop with room for everyone, in three days; consenting French residents."""
    from sqlalchemy import insert

    from storage.db import Database
    from storage.models import Resident as ResidentRow
    from storage.models import Territory, Theme, Venue, Workshop

    now = datetime.now(UTC)
    db = Database(url)
    try:
        async with db.write() as session:
            territory = Territory(key="montreynaud", name="Montreynaud")
            session.add(territory)
            await session.flush()
            venue = Venue(
                key="epn-montreynaud",
                territory_id=territory.id,
                name="EPN Montreynaud",
                address="1 place de la Mairie, 42000 Saint-Étienne",
                latitude=45.44,
                longitude=4.39,
            )
            theme = Theme(
                key="smartphone",
                name={"fr": "Smartphone", "en": "Smartphone", "ar": "Smartphone"},
                need_category="navigation_sur_internet",
            )
            session.add_all([venue, theme])
            await session.flush()
            starts_at = now + timedelta(days=3)
            session.add(
                Workshop(
                    key="journey-bench",
                    title={"fr": TITLE, "en": TITLE, "ar": TITLE},
                    description={"fr": "Un atelier pour apprendre ensemble."},
                    theme_id=theme.id,
                    venue_id=venue.id,
                    starts_at=starts_at,
                    ends_at=starts_at + timedelta(hours=2),
                    capacity=1000,
                    seats_taken=0,
                    status="scheduled",
                    created_at=now,
                    updated_at=now,
                )
            )
            rows = [
                {
                    "telegram_id": first_user + i,
                    "first_name": f"R{first_user + i}",
                    "language": "fr",
                    "consented_at": now,
                    "created_at": now,
                }
                for i in range(count)
            ]
            await session.execute(insert(ResidentRow), rows)
    finally:
        await db.dispose()


def capacity_bot_env(emulator: EmulatorProcess, url: str) -> dict[str, str]:
    return bot_env(
        emulator,
        url,
        rate_limit_per_second=0,
        # A script taps faster than any person: flood control must not drop its taps.
        flood_rate=100,
        flood_burst=1000,
    )


def echo_bot_env(emulator: EmulatorProcess) -> dict[str, str]:
    return bot_env(emulator, "sqlite://")


async def start_profiler(pid: int, output: Path) -> asyncio.subprocess.Process:
    """py-spy (pip install py-spy) sampling the bot process: collapsed stacks (.txt),
    speedscope (.json) or a flame graph (.svg)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    formats = {".txt": "raw", ".json": "speedscope"}
    return await asyncio.create_subprocess_exec(
        str(py_spy) if py_spy.exists() else "py-spy", "record", "-p", str(pid),
        "-o", str(output), "-f", formats.get(output.suffix, "flamegraph"), "--nonblocking",
        "--rate", "250",
    )  # fmt: skip


async def _phases(
    feed: EventFeed,
    http: aiohttp.ClientSession,
    emulator: EmulatorProcess,
    bot: Process,
    steps: Sequence[str],
    first_text: str,
    mode: Mode,
) -> list[Phase]:
    """Every closed-loop size of the mode, then the open loop, on the same residents."""
    people = [
        Resident(FIRST_USER_ID + i, steps, http, emulator.side_url, feed)
        for i in range(max(*mode.sizes, OPEN_LOOP_USERS))
    ]
    await asyncio.gather(*(person.begin(first_text) for person in people))
    phases = [
        await measure(f"N={size}", people[:size], bot, emulator, mode.seconds, mode.warmup)
        for size in mode.sizes
    ]
    open_loop = people[:OPEN_LOOP_USERS]
    # The steady load: resident i starts at step i (mod 5), so that every second holds the
    # same mix of taps (10 of each step at 50/s), whatever each step costs.
    phases.append(
        await measure(
            OPEN_LABEL, open_loop, bot, emulator, mode.open_loop_seconds, mode.warmup,
            rate=OPEN_LOOP_RATE, staggered=True,
        )
    )  # fmt: skip
    # The same rate with every resident at the same step: one second in five is 50
    # registrations (a workshop announced to everyone, all tapping at once). No target.
    phases.append(
        await measure(
            IN_STEP_LABEL, open_loop, bot, emulator, mode.open_loop_seconds, mode.warmup,
            rate=OPEN_LOOP_RATE, staggered=False,
        )
    )  # fmt: skip
    return phases


async def align(residents: Sequence[Resident], *, staggered: bool) -> None:
    """Tap (unmeasured) until resident i is at step i (mod the journey's length) when
    ``staggered``, or every resident at the first step."""

    async def walk(index: int, resident: Resident) -> None:
        length = len(resident.steps)
        wanted = index % length if staggered else 0
        while resident.step % length != wanted:
            await resident.tap()

    await asyncio.gather(*(walk(i, r) for i, r in enumerate(residents)))


async def run_target(
    target: str, mode: Mode, workdir: Path, profile: Path | None = None
) -> list[Phase]:
    """One bot ("echo", "sqlite" or "postgresql") under every load of the mode."""
    phases: list[Phase] = []
    emulator = await EmulatorProcess(workdir).started()
    bot: Process | None = None
    profiler: asyncio.subprocess.Process | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if target == "echo":
                bot = Process(
                    "echo_bot",
                    [sys.executable, "-m", "bench.echo_bot"],
                    echo_bot_env(emulator),
                    workdir,
                )
                bot.start()
                await bot.wait_for_log("bot ready", timeout=60)
                steps, first_text = ECHO_STEPS, "hello"
            else:
                url = await stack.enter_async_context(database(target, workdir))
                bot = await BotProcess(workdir, capacity_bot_env(emulator, url)).started()
                steps, first_text = CAPACITY_STEPS, "/workshops"
            if profile is not None:
                profiler = await start_profiler(bot.pid, profile)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                feed = EventFeed(http, emulator.side_url)
                await feed.start()
                try:
                    phases += await _phases(feed, http, emulator, bot, steps, first_text, mode)
                finally:
                    await feed.stop()
            if profiler is not None:
                profiler.send_signal(2)  # SIGINT: py-spy writes its file and exits
                await profiler.wait()
            await bot.stop()
    except BaseException:
        if bot is not None:
            print(f"--- {bot.name} log ---\n{bot.log_text()[-3000:]}")
        raise
    finally:
        if bot is not None:
            await bot.stop()
        await emulator.stop()
    return phases


# -- the report ----------------------------------------------------------------------------


async def run(mode: Mode, profile: Path | None = None) -> dict[str, Any]:
    targets = ["echo", "sqlite"]
    if await postgres_available():
        targets.append("postgresql")
    else:
        print("PostgreSQL unreachable: its runs are skipped")
    # results[target][phase label] = figures of each run
    results: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for number in range(mode.runs):
        for target in targets:
            with tempfile.TemporaryDirectory(prefix=f"bench-journey-{target}-") as tmp:
                started = time.monotonic()
                phases = await run_target(target, mode, Path(tmp), profile)
                for phase in phases:
                    results[target][phase.label].append(phase.figures())
                print(
                    f"run {number + 1}/{mode.runs} {target}: {time.monotonic() - started:.0f} s "
                    + ", ".join(f"{p.label} {p.taps / p.seconds:.0f}/s" for p in phases),
                    flush=True,
                )
    return {target: dict(labels) for target, labels in results.items()}


def report(results: dict[str, dict[str, list[dict[str, float]]]], mode: Mode) -> dict[str, Any]:
    labels = list(results["echo"])
    rows = []
    for target, by_label in results.items():
        for label in labels:
            runs = by_label[label]
            rows.append(
                [
                    "echo (baseline)" if target == "echo" else f"capacity-bot {target}",
                    label,
                    spread_of(runs, "round_trips_per_s").fmt(0),
                    spread_of(runs, "bot_cpu_ms_per_update").fmt(2),
                    spread_of(runs, "p50_ms").fmt(1),
                    spread_of(runs, "p95_ms").fmt(1),
                    spread_of(runs, "p99_ms").fmt(1),
                    spread_of(runs, "emulator_cpu_ms_per_update").fmt(2),
                ]
            )
    print_table(
        "Sign-up journey: round trips per second, CPU per update, latency "
        f"(median (min–max) over {mode.runs} run(s))",
        ["bot", "load", "round trips/s", "bot CPU ms/upd", "p50 ms", "p95 ms", "p99 ms",
         "emulator CPU ms/upd"],
        rows,
    )  # fmt: skip

    ratios: dict[str, dict[str, dict[str, float]]] = {}
    ratio_rows = []
    for target in (t for t in results if t != "echo"):
        for label in labels:
            echo_runs, runs = results["echo"][label], results[target][label]
            throughput = Spread(
                [
                    ratio(run["round_trips_per_s"], echo["round_trips_per_s"])
                    for run, echo in zip(runs, echo_runs, strict=False)
                ]
            )
            cpu = Spread(
                [
                    ratio(run["bot_cpu_ms_per_update"], echo["bot_cpu_ms_per_update"])
                    for run, echo in zip(runs, echo_runs, strict=False)
                ]
            )
            ratios.setdefault(target, {})[label] = {
                "throughput": throughput.median,
                "cpu_per_update": cpu.median,
            }
            ratio_rows.append([f"capacity-bot {target}", label, throughput.fmt(2), cpu.fmt(2)])
    print_table(
        "capacity-bot / echo (same run, same load)",
        ["bot", "load", "throughput ratio", "CPU per update ratio"],
        ratio_rows,
    )

    biggest = f"N={max(mode.sizes)}"
    throughput_ratio = ratios.get("sqlite", {}).get(biggest, {}).get("throughput", float("nan"))
    targets_rows = [
        [
            f"throughput ratio at {biggest}, SQLite",
            f">= {TARGET_THROUGHPUT_RATIO}",
            f"{throughput_ratio:.2f}",
            verdict(throughput_ratio >= TARGET_THROUGHPUT_RATIO),
        ]
    ]
    verdicts = {"throughput_ratio": throughput_ratio}
    for target in (t for t in results if t != "echo"):
        p99 = spread_of(results[target][OPEN_LABEL], "p99_ms")
        verdicts[f"p99_ms_open_loop_{target}"] = p99.median
        targets_rows.append(
            [
                f"p99 at a steady {OPEN_LOOP_RATE:.0f}/s, {target}",
                f"< {TARGET_P99_MS:.0f} ms",
                p99.fmt(1),
                verdict(p99.median < TARGET_P99_MS),
            ]
        )
    print_table("Targets (issue 6, §1)", ["target", "wanted", "measured", "verdict"], targets_rows)
    if biggest != "N=50":
        print("(quick mode: the throughput target is defined at N=50; shown here at the largest N)")
    return {"ratios": ratios, "targets": verdicts}


async def amain(quick: bool, profile: Path | None = None) -> int:
    mode = QUICK if quick else FULL
    info = machine()
    print(f"Machine: {machine_line(info)}")
    print(
        "Processes: emulator (python -m emulator, no limits), bot (python -m bot.runtime.cli run or "
        "python -m bench.echo_bot), load generator (this process); "
        f"{mode.runs} run(s), {mode.seconds:.0f} s per load after {mode.warmup:.1f} s warm-up",
        flush=True,
    )
    results = await run(mode, profile)
    summary = report(results, mode)
    path = write_results(
        "journey" + ("-quick" if quick else ""),
        {
            "mode": mode.__dict__,
            "command": "python -m bench.journey" + (" --quick" if quick else ""),
            "results": results,
            **summary,
        },
    )
    print(f"\nResults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def main(quick: bool = False) -> int:
    profile = os.environ.get("BENCH_PROFILE")  # py-spy output of the bot process, if set
    return asyncio.run(amain(quick, Path(profile).resolve() if profile else None))


if __name__ == "__main__":
    cli(__doc__.splitlines()[0], main)
