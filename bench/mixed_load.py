"""Mixed load: replies to residents while a broadcast runs, under Telegram's limits (issue 6, §2).

Three processes: the Bot API emulator (``python -m emulator``) enforcing Telegram's limits
(429 beyond 30 messages in any one second overall, beyond one per second in a chat with
bursts of 3 tolerated: 3 in any 3 s, as Telegram tolerates short bursts), the bot
(``python -m bot.runtime.cli run`` on an SQLite file, RATE_LIMIT_PER_SECOND=30, BROADCAST_RATE left
at its default, the whole budget), and the load generator (this process: the residents'
taps through the emulator's side API, over HTTP).

1. Mixed: a broadcast to 10,000 English-speaking residents (quick: 1,000) is confirmed while
   20 French-speaking residents loop over the sign-up journey (open a workshop card,
   register, cancel, confirm, back to the list), reading each answer to its end (until the
   bot has been silent for 1.2 s in their chat), then thinking 1 to 3 s before the next tap.
   Measured over a window of the run (full: 45 s, quick: 6 s), from the emulator's record of
   accepted messages: 429s (target 0), the most messages in any one-second window (target
   <= 30), reply latency from the tap to the bot's edit of the message, p50 / p95 (target
   p95 < 1 s), and the broadcast's rate against what the replies leave, 30 minus the rate
   of messages to the 20 residents and the mediator (target >= 0.9).
2. Pure broadcast (no replies), each in a fresh bot process, measured until it ends or for
   25 s (quick: 3 s) of sending: achieved rate / configured rate from the first to the last
   accepted message (target >= 0.95) at Telegram's 30/s, for two audience sizes (full: 2,000
   and 10,000; quick: 100 and 500), and the bot's peak RSS (VmHWM) for each: memory flat in
   the number of recipients (rows are claimed 10 at a time). Full mode adds the 10,000 at a
   scaled-up 100/s (emulator, RATE_LIMIT_PER_SECOND and BROADCAST_RATE at 100: allowed
   because the Bot API is on loopback), and once at 1,000/s to show how fast the sender can
   go at all (it sends one row at a time, so that a killed process sends at most one
   message twice).

    .venv/bin/python -m bench.mixed_load            # full: 3 runs of each
    .venv/bin/python -m bench.mixed_load --quick    # 1 run, smaller sizes (CI)
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import insert

from bench.common import (
    BotProcess,
    EmulatorProcess,
    bot_env,
    cli,
    machine,
    machine_line,
    migrated,
    percentile,
    print_table,
    ratio,
    spread_of,
    verdict,
    write_results,
)
from bench.journey import CAPACITY_STEPS, EventFeed, Resident, seed

LIMIT = 30  # Telegram's messages per second, enforced by the emulator
PER_CHAT = 1  # messages per second in one chat...
PER_CHAT_BURST = 3  # ...with short bursts tolerated, as Telegram does: 3 in any 3 s
SCALED_LIMIT = 100  # a scaled-up limit, allowed against the loopback emulator only
CEILING_LIMIT = 1000  # asked for once, to find how fast the sender can go at all
INTERACTIVE_FIRST_ID = 10_000
BROADCAST_FIRST_ID = 100_000
STAFF_ID = 900
TEXT = "Fête du numérique samedi à la médiathèque : venez nombreux !"
THINK_S = (1.0, 3.0)  # after the bot's last message of an answer, before the next tap
QUIET_S = 1.2  # no message from the bot for this long: it has finished answering
TARGET_P95_S = 1.0
TARGET_LEFTOVER_SHARE = 0.9
TARGET_PURE_RATIO = 0.95


@dataclass
class Mode:
    runs: int
    interactive: int
    recipients: int
    warmup_s: float
    window_s: float
    pure_sizes: tuple[int, int]
    pure_seconds: float  # a pure broadcast is measured until done, or this long
    scaled: bool = False  # also the larger pure broadcast at SCALED_LIMIT
    ceiling: bool = False  # once, the larger pure broadcast at CEILING_LIMIT


FULL = Mode(
    runs=3,
    interactive=20,
    recipients=10_000,
    warmup_s=5,
    window_s=45,
    pure_sizes=(2000, 10_000),
    pure_seconds=25,
    scaled=True,
    ceiling=True,
)
QUICK = Mode(
    runs=1,
    interactive=20,
    recipients=1_000,
    warmup_s=1.5,
    window_s=6,
    pure_sizes=(100, 500),
    pure_seconds=3,
)


# -- data ----------------------------------------------------------------------------------


async def seed_audience(url: str, count: int) -> None:
    """English-speaking consenting residents (the broadcast's audience), and the mediator."""
    from storage.db import Database
    from storage.models import Resident as ResidentRow
    from storage.models import StaffMember

    now = datetime.now(UTC)
    db = Database(url)
    try:
        async with db.write() as session:
            session.add(StaffMember(telegram_id=STAFF_ID, role="mediator", granted_at=now))
            for start in range(0, count, 5000):
                rows = [
                    {
                        "telegram_id": BROADCAST_FIRST_ID + i,
                        "first_name": f"B{i}",
                        "language": "en",
                        "consented_at": now,
                        "created_at": now,
                    }
                    for i in range(start, min(count, start + 5000))
                ]
                await session.execute(insert(ResidentRow), rows)
    finally:
        await db.dispose()


async def confirm_broadcast(url: str) -> int:
    """The mediator's broadcast to the English speakers, confirmed (INSERT ... SELECT fan-out
    into the outbox, as /broadcast does); the bot's sender picks it up within 2 s."""
    from bot.clock import SystemClock
    from bot.services.broadcasts.drafts import BroadcastService
    from storage.db import Database

    db = Database(url)
    try:
        service = BroadcastService(db, SystemClock())
        await service.begin(STAFF_ID)
        await service.take_text(STAFF_ID, TEXT, len(TEXT))
        await service.skip_photo(STAFF_ID)
        await service.choose_audience(STAFF_ID, {"kind": "language", "code": "en"})
        broadcast_id = await service.confirm(STAFF_ID)
        assert broadcast_id is not None
        return broadcast_id
    finally:
        await db.dispose()


async def register_users(http: aiohttp.ClientSession, side_url: str, ids: list[int]) -> None:
    """Known to the emulator (they started the bot once), so the bot may write to them."""
    for start in range(0, len(ids), 2000):
        users = [
            {"id": i, "first_name": f"P{i}", "language_code": "en"} for i in ids[start:][:2000]
        ]
        async with http.post(f"{side_url}/_emulator/users", json={"users": users}) as response:
            response.raise_for_status()


async def traffic(http: aiohttp.ClientSession, side_url: str) -> tuple[list[float], list[int]]:
    async with http.get(f"{side_url}/_emulator/traffic") as response:
        body = await response.json()
    return body["times"], body["chat_ids"]


async def emulator_stats(http: aiohttp.ClientSession, side_url: str) -> dict[str, Any]:
    async with http.get(f"{side_url}/_emulator/stats") as response:
        return await response.json()


def busiest_second(times: list[float]) -> int:
    """The most messages in any one-second window (the emulator's (t - 1, t] windows)."""
    times = sorted(times)
    best, low = 0, 0
    for high, t in enumerate(times):
        while times[low] <= t - 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


# -- 1. replies during a broadcast ---------------------------------------------------------


async def mixed_run(mode: Mode, workdir: Path) -> dict[str, float]:
    url = f"sqlite+aiosqlite:///{workdir / 'mixed.sqlite3'}"
    await migrated(url)
    await seed(url, INTERACTIVE_FIRST_ID, mode.interactive)
    await seed_audience(url, mode.recipients)
    emulator = await EmulatorProcess(
        workdir, global_rate=LIMIT, per_chat_rate=PER_CHAT, per_chat_burst=PER_CHAT_BURST
    ).started()
    bot = BotProcess(workdir, bot_env(emulator, url, rate_limit_per_second=LIMIT))
    try:
        async with aiohttp.ClientSession() as http:
            side = emulator.side_url
            audience = [BROADCAST_FIRST_ID + i for i in range(mode.recipients)]
            await register_users(http, side, [*audience, STAFF_ID])
            await bot.started()
            feed = EventFeed(http, side)
            await feed.start()
            residents = [
                Resident(INTERACTIVE_FIRST_ID + i, CAPACITY_STEPS, http, side, feed)
                for i in range(mode.interactive)
            ]
            try:
                await asyncio.gather(*(r.begin("/workshops") for r in residents))
                return await _measure_mixed(mode, http, side, url, residents, bot)
            finally:
                await feed.stop()
    finally:
        await bot.stop()
        await emulator.stop()


async def _measure_mixed(
    mode: Mode,
    http: aiohttp.ClientSession,
    side: str,
    url: str,
    residents: list[Resident],
    bot: BotProcess,
) -> dict[str, float]:
    latencies: list[tuple[float, float, str]] = []  # (tap time, latency, button)
    stop = asyncio.Event()
    chance = random.Random(6)

    async def read_the_answer(resident: Resident) -> None:
        """A person reads the whole answer (registering brings the card, a confirmation and
        a question, one second apart in one chat) before thinking about the next tap."""
        queue = resident.feed.queues[resident.user_id]
        while True:
            try:
                await asyncio.wait_for(queue.get(), timeout=QUIET_S)
            except TimeoutError:
                return

    async def use_the_bot(resident: Resident) -> None:
        await asyncio.sleep(chance.uniform(*THINK_S))
        while not stop.is_set():
            tapped = time.time()
            button = resident.steps[resident.step % len(resident.steps)]
            latencies.append((tapped, await resident.tap(), button))
            await read_the_answer(resident)
            await asyncio.sleep(chance.uniform(*THINK_S))

    users = [asyncio.create_task(use_the_bot(r)) for r in residents]
    try:
        await asyncio.sleep(1.0)
        await confirm_broadcast(url)
        broadcast_chats = set(range(BROADCAST_FIRST_ID, BROADCAST_FIRST_ID + mode.recipients))
        # The window starts once the sender is at work and the replies are flowing.
        await asyncio.sleep(mode.warmup_s)
        cpu_before = bot.cpu_seconds()
        begin_wall = time.time()
        times, chats = await traffic(http, side)
        begin_index = len(times)
        await asyncio.sleep(mode.window_s)
        end_wall = time.time()
        times, chats = await traffic(http, side)
        cpu = bot.cpu_seconds() - cpu_before
        stats = await emulator_stats(http, side)
    finally:
        stop.set()
        await asyncio.gather(*users, return_exceptions=True)
    window = list(zip(times[begin_index:], chats[begin_index:], strict=True))
    seconds = window[-1][0] - window[0][0] if len(window) > 1 else mode.window_s
    bulk = sum(1 for _, chat in window if chat in broadcast_chats)
    replies = len(window) - bulk
    reply_rate = replies / seconds
    leftover = LIMIT - reply_rate
    in_window = [lat for tapped, lat, _ in latencies if begin_wall <= tapped <= end_wall]
    by_button = {
        f"p95_s {button}": percentile(
            [lat for tapped, lat, b in latencies if b == button and begin_wall <= tapped], 95
        )
        for button in CAPACITY_STEPS
    }
    return {
        "seconds": seconds,
        "responses_429": stats["responses_429"],
        "busiest_second": busiest_second(times),
        "emulator_peak_per_second": stats["max_per_second"],
        "busiest_second_per_chat": stats["max_per_chat_per_second"],
        "taps": len(in_window),
        "reply_p50_s": percentile(in_window, 50),
        "reply_p95_s": percentile(in_window, 95),
        "reply_max_s": max(in_window, default=float("nan")),
        "reply_messages_per_s": reply_rate,
        "broadcast_per_s": bulk / seconds,
        "leftover_per_s": leftover,
        "broadcast_share_of_leftover": ratio(bulk / seconds, leftover),
        "messages_per_s": len(window) / seconds,
        "bot_cpu_share": cpu / mode.window_s,
        **by_button,
    }


# -- 2. a pure broadcast at a scaled-up limit ----------------------------------------------


async def pure_run(
    recipients: int, workdir: Path, limit: float = LIMIT, max_seconds: float = 60
) -> dict[str, float]:
    url = f"sqlite+aiosqlite:///{workdir / f'pure-{recipients}.sqlite3'}"
    await migrated(url)
    await seed_audience(url, recipients)
    emulator = await EmulatorProcess(
        workdir, global_rate=limit, per_chat_rate=PER_CHAT, per_chat_burst=PER_CHAT_BURST
    ).started()
    env = bot_env(emulator, url, rate_limit_per_second=limit, broadcast_rate=limit)
    bot = BotProcess(workdir, env, name=f"bot-pure-{recipients}")
    try:
        async with aiohttp.ClientSession() as http:
            side = emulator.side_url
            audience = [BROADCAST_FIRST_ID + i for i in range(recipients)]
            await register_users(http, side, [*audience, STAFF_ID])
            await bot.started()
            await asyncio.sleep(1.0)  # the start-up's own work (menus, jobs) is done
            rss_ready = bot.peak_rss_mb()
            cpu_before = bot.cpu_seconds()
            await confirm_broadcast(url)
            chats = set(audience)
            deadline = time.monotonic() + 30 + max_seconds  # the sender starts within 2 s
            first: float | None = None
            while True:
                stats = await emulator_stats(http, side)
                sent_so_far = stats["sends"].get("sendMessage", 0)
                if sent_so_far >= recipients:
                    break
                if sent_so_far and first is None:
                    first = time.monotonic()
                if first is not None and time.monotonic() - first >= max_seconds:
                    break  # in flight: enough to measure the rate and the memory
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broadcast to {recipients} did not start")
                await asyncio.sleep(0.1)
            cpu = bot.cpu_seconds() - cpu_before
            times, chat_ids = await traffic(http, side)
            sent = sorted(t for t, c in zip(times, chat_ids, strict=True) if c in chats)
            achieved = (len(sent) - 1) / (sent[-1] - sent[0])
            return {
                "recipients": recipients,
                "configured_per_s": limit,
                "delivered": len(sent),
                "seconds": sent[-1] - sent[0],
                "achieved_per_s": achieved,
                "achieved_over_configured": achieved / limit,
                "responses_429": stats["responses_429"],
                "busiest_second": busiest_second(sent),
                "bot_cpu_ms_per_message": cpu * 1000 / len(sent),
                "rss_ready_mb": rss_ready,
                "peak_rss_mb": bot.peak_rss_mb(),
            }
    finally:
        await bot.stop()
        await emulator.stop()


# -- the report ----------------------------------------------------------------------------


async def run(mode: Mode) -> dict[str, Any]:
    mixed: list[dict[str, float]] = []
    pure: dict[str, list[dict[str, float]]] = {}

    async def broadcast(label: str, size: int, limit: float) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="bench-pure-") as tmp:
            print(f"{label}: pure broadcast to {size:,} at {limit:g}/s...", flush=True)
            result = await pure_run(size, Path(tmp), limit, mode.pure_seconds)
        pure.setdefault(f"{size}@{limit:g}", []).append(result)
        return result

    for number in range(mode.runs):
        label = f"run {number + 1}/{mode.runs}"
        with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp:
            print(f"{label}: mixed load...", flush=True)
            mixed.append(await mixed_run(mode, Path(tmp)))
        for size in mode.pure_sizes:
            await broadcast(label, size, LIMIT)
        if mode.scaled:
            await broadcast(label, mode.pure_sizes[1], SCALED_LIMIT)
    ceiling: dict[str, float] = {}
    if mode.ceiling:
        ceiling = await broadcast("once", mode.pure_sizes[1], CEILING_LIMIT)
        del pure[f"{mode.pure_sizes[1]}@{CEILING_LIMIT:g}"]
    return {"mixed": mixed, "pure": pure, "ceiling": ceiling}


def report(mode: Mode, results: dict[str, Any]) -> dict[str, Any]:
    mixed = results["mixed"]

    def s(key: str, digits: int = 2, runs: list[dict[str, float]] = mixed) -> str:
        return spread_of(runs, key).fmt(digits)

    # Hard limits must hold in every run; rates and latencies are judged on the median run.
    worst = {
        "responses_429": max(run["responses_429"] for run in mixed),
        "busiest_second": max(run["busiest_second"] for run in mixed),
    }
    met = {
        "no_429": worst["responses_429"] == 0,
        "window_within_limit": worst["busiest_second"] <= LIMIT,
        "reply_p95": spread_of(mixed, "reply_p95_s").median < TARGET_P95_S,
        "broadcast_uses_leftover": (
            spread_of(mixed, "broadcast_share_of_leftover").median >= TARGET_LEFTOVER_SHARE
        ),
    }
    print(f"\nMachine: {machine_line()}")
    print(
        f"Processes: emulator (python -m emulator, {LIMIT}/s overall, {PER_CHAT}/s per chat, "
        f"bursts of {PER_CHAT_BURST}), "
        "bot (python -m bot.runtime.cli run, SQLite), load generator (this process)."
    )
    print(
        f"Mixed: {mode.interactive} residents in the sign-up journey (answer read to its end, "
        f"then {THINK_S[0]:g}-{THINK_S[1]:g} s of thought) during a broadcast to "
        f"{mode.recipients:,}; "
        f"window {mode.window_s:g} s; {mode.runs} run(s): median (min-max)."
    )
    print_table(
        "Replies during a broadcast, one budget of 30 messages per second",
        ("figure", "measured", "target", "verdict"),
        [
            ("429 received", s("responses_429", 0), "0", verdict(met["no_429"])),
            (
                "most messages in one second",
                s("busiest_second", 0),
                f"<= {LIMIT}",
                verdict(met["window_within_limit"]),
            ),
            ("reply latency p50 (s)", s("reply_p50_s"), "", ""),
            ("reply latency p95 (s)", s("reply_p95_s"), "< 1", verdict(met["reply_p95"])),
            ("reply latency max (s)", s("reply_max_s"), "", ""),
            ("taps answered in the window", s("taps", 0), "", ""),
            ("reply messages per s", s("reply_messages_per_s"), "", ""),
            ("left for the broadcast per s", s("leftover_per_s"), "", ""),
            ("broadcast messages per s", s("broadcast_per_s"), "", ""),
            (
                "broadcast / what replies leave",
                s("broadcast_share_of_leftover"),
                ">= 0.9",
                verdict(met["broadcast_uses_leftover"]),
            ),
            ("bot CPU share of one core", s("bot_cpu_share"), "", ""),
        ],
    )
    rows = []
    pure = results["pure"]
    for key, runs in pure.items():
        size, limit = key.split("@")
        rows.append(
            (
                f"{int(size):,}",
                limit,
                spread_of(runs, "delivered").fmt(0),
                spread_of(runs, "achieved_per_s").fmt(1),
                spread_of(runs, "achieved_over_configured").fmt(3),
                spread_of(runs, "responses_429").fmt(0),
                spread_of(runs, "busiest_second").fmt(0),
                spread_of(runs, "bot_cpu_ms_per_message").fmt(2),
                spread_of(runs, "rss_ready_mb").fmt(1),
                spread_of(runs, "peak_rss_mb").fmt(1),
            )
        )
    small, large = (pure[f"{size}@{LIMIT:g}"] for size in mode.pure_sizes)
    at_limit = [spread_of(runs, "achieved_over_configured").median for runs in (small, large)]
    rss_growth = spread_of(large, "peak_rss_mb").median - spread_of(small, "peak_rss_mb").median
    met["pure_rate"] = min(at_limit) >= TARGET_PURE_RATIO
    print_table(
        "Pure broadcast (target achieved/configured >= 0.95; memory flat in the recipients)",
        (
            "recipients",
            "limit/s",
            "sent",
            "msg/s",
            "achieved/configured",
            "429",
            "max in 1 s",
            "bot CPU ms/msg",
            "RSS ready MB",
            "peak RSS MB",
        ),
        rows,
    )
    print(
        f"achieved/configured at Telegram's {LIMIT}/s, median run: {min(at_limit):.3f} "
        f"({verdict(met['pure_rate'])}); "
        f"peak RSS with {mode.pure_sizes[1]:,} vs {mode.pure_sizes[0]:,} recipients: "
        f"{rss_growth:+.1f} MB (medians)"
    )
    ceiling = results["ceiling"]
    if ceiling:
        print(
            f"The sender alone, asked for {CEILING_LIMIT}/s: {ceiling['achieved_per_s']:.0f} "
            f"messages/s (broadcast to {ceiling['recipients']:,}) "
            f"({ceiling['bot_cpu_ms_per_message']:.2f} ms of bot CPU per message), "
            f"{ceiling['achieved_per_s'] / LIMIT:.1f} times Telegram's {LIMIT}/s"
        )
    print(
        "Verdicts: 429s and the busiest second over every run, the other figures on the median run."
    )
    return {"met": met, "rss_growth_mb": rss_growth, "worst": worst}


def main(quick: bool) -> dict[str, Any]:
    mode = QUICK if quick else FULL
    results = asyncio.run(run(mode))
    summary = report(mode, results)
    payload = {
        "quick": quick,
        "mode": mode.__dict__,
        "machine_description": machine(),
        **results,
        **summary,
    }
    path = write_results("mixed_load", payload)
    print(f"results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return payload


if __name__ == "__main__":
    cli(__doc__.splitlines()[0], lambda quick: 0 if main(quick) else 1)
