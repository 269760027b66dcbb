"""What every benchmark shares: the machine line, processes, /proc readers, statistics, output.

A benchmark module exposes ``main(quick: bool) -> int`` (0 on success) and is run with
``python -m bench.<module> [--quick]`` or by ``python -m bench`` with all the others.

Processes: the Bot API emulator runs as its own process (``python -m emulator``), the bot as
another (``python -m bot.runtime.cli run``, the command operators run), the load generator in the
benchmark's process, so that each process's CPU is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL",
    os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
)
TOKEN = "123456:BENCH-TOKEN-of-the-bot-api-emulator"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, python-telegram-bot, SQLite and PostgreSQL versions."""
    import telegram

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ptb": telegram.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(),
        "platform": platform.platform(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    return (
        f"{info['cpu']}, {info['cores']} cores; Python {info['python']}, PTB {info['ptb']}, "
        f"SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}"
    )


def postgres_version() -> str:
    async def ask() -> str:
        conn = await asyncpg.connect(plain_dsn(POSTGRES_ADMIN_URL), timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return _run_coroutine(ask())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"unreachable ({exc.__class__.__name__})"


def _run_coroutine(coroutine: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Inside a running loop (a benchmark's async main): run it in a thread of its own.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# -- databases -----------------------------------------------------------------------------


def plain_dsn(url: str) -> str:
    """asyncpg's own DSN for an SQLAlchemy URL (no "+asyncpg" driver part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin_execute(statement: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    """One statement outside any transaction (CREATE/DROP DATABASE), as the admin; shared
    with the tests' fixtures."""
    conn = await asyncpg.connect(plain_dsn(admin_url), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def new_postgres_database(prefix: str) -> str:
    """A new, empty PostgreSQL database (``capacity_bench_<prefix>_<random>``); its URL."""
    name = f"capacity_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def postgres_available() -> bool:
    try:
        await admin_execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


async def migrated(url: str) -> None:
    """Brings a database to the head of the migrations."""
    from storage.db import Database
    from storage.migrate import upgrade_to_head

    database = Database(url)
    try:
        await upgrade_to_head(database.engine)
    finally:
        await database.dispose()


# -- /proc readers -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM in /proc/<pid>/status), in MB (10^6 bytes)."""
    return _status_kb(pid, "VmHWM") * 1024 / 1e6


def rss_mb(pid: int) -> float:
    """Current resident set size (VmRSS), in MB."""
    return _status_kb(pid, "VmRSS") * 1024 / 1e6


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(f"{key} not in /proc/{pid}/status")


# -- processes -----------------------------------------------------------------------------


class Process:
    """A child process with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    async def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log_text())
            if found:
                return found
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}):\n{self.log_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {pattern!r} after {timeout} s")
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.pid)

    async def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _pythonpath() -> str:
    """The project first, then the caller's PYTHONPATH (to try a package before adding it)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def base_env() -> dict[str, str]:
    """The environment without any bot or Telegram setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TELEGRAM_"))}


class EmulatorProcess(Process):
    """``python -m emulator`` on a free port, without limits unless given."""

    def __init__(
        self,
        workdir: Path,
        *,
        global_rate: float | None = None,
        per_chat_rate: float | None = None,
        per_chat_burst: int = 3,
    ) -> None:
        """``per_chat_burst``: messages one chat may get at once (3 in any 3 s at 1/s), as
        Telegram tolerates short bursts; the emulator's own default, 1, is stricter."""
        argv = [sys.executable, "-m", "emulator", "--port", "0", "--token", TOKEN]
        if global_rate is not None:
            argv += ["--global-rate", str(global_rate)]
        if per_chat_rate is not None:
            argv += ["--per-chat-rate", str(per_chat_rate), "--per-chat-burst", str(per_chat_burst)]
        env = {**base_env(), "PYTHONPATH": _pythonpath(), "PYTHONUNBUFFERED": "1"}
        super().__init__("emulator", argv, env, workdir)
        self.base_url = ""
        self.side_url = ""

    async def started(self) -> EmulatorProcess:
        self.start()
        found = await self.wait_for_log(r"base_url=(\S+)", timeout=30)
        self.base_url = found.group(1)
        self.side_url = self.base_url.removesuffix("/bot")
        return self


def bot_env(
    emulator: EmulatorProcess, database_url: str, **settings: str | int | float
) -> dict[str, str]:
    """Settings of ``capacity-bot run`` against the emulator (upper-case names, as in .env)."""
    env = {
        **base_env(),
        "PYTHONPATH": _pythonpath(),
        "BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": emulator.base_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "INFO",
    }
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


class BotProcess(Process):
    """``python -m bot.runtime.cli run`` against the emulator; ready when it logs "bot ready"."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "bot") -> None:
        super().__init__(name, [sys.executable, "-m", "bot.runtime.cli", "run"], env, workdir)

    async def started(self, timeout: float = 60) -> BotProcess:
        self.start()
        await self.wait_for_log(r"bot ready", timeout=timeout)
        return self


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Spread:
    """Min / median / max of one figure over several runs."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "median": self.median, "max": self.max, "runs": self.values}

    def fmt(self, digits: int = 1) -> str:
        """``median (min–max)``, or the single value for one run."""
        if not self.values:
            return "-"
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}–{self.max:.{digits}f})"


def spread_of(runs: Sequence[dict[str, float]], key: str) -> Spread:
    return Spread([run[key] for run in runs if key in run])


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


# -- output --------------------------------------------------------------------------------


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table, columns aligned, numbers right-aligned."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i and _numeric(c) else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.2f}"  # nan
    return str(value)


def _numeric(text: str) -> bool:
    return bool(re.match(r"^[\d.<>=≥≤+\-()– ]+$", text))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/<name>-<UTC time>.json and bench/results/<name>-latest.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    body = json.dumps(
        {"benchmark": name, "at": stamp, "machine": machine(), **payload}, indent=2, default=str
    )
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(body)
    (RESULTS / f"{name}-latest.json").write_text(body)
    return path


def cli(description: str, main: Callable[[bool], int]) -> None:
    """``python -m bench.<module> [--quick]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (CI)")
    arguments = parser.parse_args()
    sys.exit(main(arguments.quick))
