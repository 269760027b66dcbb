"""The playground as a real process and Debian's chromium driven by Playwright.

Shared by the browser tests (tests/test_playground_browser.py) and the README screenshots
(tests/playground_screenshots.py). Playwright never downloads a browser here: it drives the
chromium that `make test` installs from Debian (see the Makefile's `chromium` target).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, async_playwright

# Flags known to work on these machines (no GPU, no sandbox, no network beyond loopback).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium")
ADDRESS = re.compile(r"http://127\.0\.0\.1:\d+/")
START_TIMEOUT = 90.0  # migrating and importing the catalogue on a busy two-core machine
STOP_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent


def chromium_path() -> str | None:
    """Debian's chromium, if it is installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


def missing_browser_tooling() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if chromium_path() is None:
        return "chromium is not installed (as root: apt-get install chromium, or `make test`)"
    return None


@dataclass
class Playground:
    """A running `capacity-bot playground` process, its address, and what it printed so far."""

    process: asyncio.subprocess.Process
    url: str
    output: list[str] = field(default_factory=list)


async def _read_until_address(process: asyncio.subprocess.Process, output: list[str]) -> str:
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode(errors="replace"):
        output.append(line)
        if found := ADDRESS.search(line):
            return found.group(0)
    await process.wait()
    raise AssertionError(
        f"the playground exited ({process.returncode}) without printing its address:\n"
        + "".join(output)
    )


async def _drain(process: asyncio.subprocess.Process, output: list[str]) -> None:
    """Keep reading the logs so that a full pipe never blocks the playground."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        output.append(line.decode(errors="replace"))


@asynccontextmanager
async def playground_running(database: Path) -> AsyncIterator[Playground]:
    """Start `capacity-bot playground --port 0` on an SQLite file, stop it with SIGTERM.

    Leaving the block checks that the playground stopped cleanly (exit status 0).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("BOT_TOKEN", "DATABASE_URL")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.runtime.cli",
        "playground",
        "--port",
        "0",
        "--database",
        f"sqlite+aiosqlite:///{database}",
        cwd=database.parent,  # any .env of the checkout must not leak in
        env={**env, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        try:
            url = await asyncio.wait_for(_read_until_address(process, output), START_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"the playground printed no address in {START_TIMEOUT:.0f} s:\n" + "".join(output)
            ) from None
        drain = asyncio.create_task(_drain(process, output))
        yield Playground(process, url, output)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain
    assert process.returncode == 0, (
        f"the playground exited with {process.returncode} after SIGTERM:\n" + "".join(output)
    )


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium under Playwright (a fresh profile each time)."""
    executable = chromium_path()
    assert executable is not None, missing_browser_tooling()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
