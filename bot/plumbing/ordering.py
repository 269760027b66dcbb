"""Concurrent updates across people, in order for each person.

PTB's concurrent_updates(True) runs updates with no per-user ordering, so a double tap could
be handled out of order. This processor runs different people concurrently and one
person's updates one after the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.ext import BaseUpdateProcessor


class PerPersonUpdateProcessor(BaseUpdateProcessor):
    """Updates wait for their person's turn first, then for a working slot.

    PTB's own semaphore (taken before `do_process_update`) is set high enough that updates
    queued behind one busy person never hold the slots other people need; the real limit on
    work in progress is `max_working`, taken once it is this person's turn.
    """

    def __init__(self, max_working: int = 64, max_queued: int = 4096) -> None:
        super().__init__(max_queued)
        self._working = asyncio.Semaphore(max_working)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}
        # Asked on arrival (flood control, handlers/guard.py); an update it refuses skips the
        # person's queue and the working slots: only the guard runs for it, to drop it.
        self.admission: Callable[[object], bool] | None = None

    @staticmethod
    def _person_key(update: object) -> int:
        if isinstance(update, Update):
            if update.effective_user is not None:
                return update.effective_user.id
            if update.effective_chat is not None:
                return update.effective_chat.id
        return 0

    async def do_process_update(self, update: object, coroutine: Awaitable[object]) -> None:
        if self.admission is not None and not self.admission(update):
            # A flood is dropped here, so it never piles up behind the person's own updates.
            await coroutine
            return
        key = self._person_key(update)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock, self._working:
                await coroutine
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # forget idle people so memory stays flat
                del self._waiting[key]
                del self._locks[key]

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""
