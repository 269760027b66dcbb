"""CPU and trips to aiosqlite's thread per sign-up loop, in one process, on SQLite (issue 14).

The loop is the journey's (bench/journey.py) without Telegram: the workshop card, register,
the card, cancel, the catalogue page, each after the profile read made on every tap. Process
CPU (aiosqlite's threads included) per loop, min and median of 7 batches; trips counted from
aiosqlite's DEBUG log (one record per call it runs on its thread).

    PYTHONPATH=$PWD:$PWD/tools .venv/bin/python -m bench.sqlite_trips [loops per batch]
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from bot.services.workshops.listing import WorkshopCatalogue
from storage.db import Database
from storage.migrate import upgrade_to_head
from tests.factories import new_clock, seed_workshop

TELEGRAM_ID = 5000
BATCHES = 7


class _Trips(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("executing"):
            self.count += 1


async def measure(loops: int) -> tuple[int, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="bench-sqlite-trips-"))
    url = f"sqlite+aiosqlite:///{folder}/bench.sqlite3"
    db = Database(url)
    try:
        await upgrade_to_head(db.engine)
        clock = new_clock()
        workshop = await seed_workshop(db, clock, capacity=100)
        residents = ResidentService(db, clock)
        await residents.give_consent(TELEGRAM_ID, "A", "fr")
        registrations = RegistrationService(db, clock)
        catalogue = WorkshopCatalogue(db, clock)

        async def one_loop() -> None:
            await residents.profile(TELEGRAM_ID)
            await catalogue.card(workshop, TELEGRAM_ID)
            await residents.profile(TELEGRAM_ID)
            await registrations.register(TELEGRAM_ID, workshop)
            await residents.profile(TELEGRAM_ID)
            await catalogue.card(workshop, TELEGRAM_ID)
            await residents.profile(TELEGRAM_ID)
            await registrations.cancel(TELEGRAM_ID, workshop)
            await residents.profile(TELEGRAM_ID)
            await catalogue.upcoming()

        for _ in range(20):  # warm-up: statement caches, the pool's connections
            await one_loop()
        trips, logger = _Trips(), logging.getLogger("aiosqlite")
        logger.addHandler(trips)
        logger.setLevel(logging.DEBUG)
        await one_loop()
        logger.removeHandler(trips)
        logger.setLevel(logging.WARNING)
        per_loop = []
        for _ in range(BATCHES):
            started = time.process_time()
            for _ in range(loops):
                await one_loop()
            per_loop.append((time.process_time() - started) / loops * 1000)
        return trips.count, sorted(per_loop)
    finally:
        await db.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def main(loops: int = 100) -> None:
    import uvloop  # the bot's loop

    trips, per_loop = uvloop.run(measure(loops))
    print(
        f"trips per loop {trips}; CPU ms per loop min {per_loop[0]:.2f} "
        f"median {per_loop[len(per_loop) // 2]:.2f} ({BATCHES} batches of {loops})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
