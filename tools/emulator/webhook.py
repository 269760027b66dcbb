"""Webhook delivery: while a webhook is set, the emulator POSTs pending updates to it.

As Telegram does: one JSON update per request, the ``X-Telegram-Bot-Api-Secret-Token`` header
when the bot gave a ``secret_token``, the update confirmed (removed) only on a 2xx answer and
retried otherwise, later and later; the last error shows in getWebhookInfo. Updates go one at
a time, in order (Telegram may open several connections; one is enough to test a bot).

The registered URL is public (``https://bot.example.org/telegram``); in production a reverse
proxy forwards it to the bot's listener. ``EmulatorState.webhook_via`` plays that proxy: when
set (``http://127.0.0.1:8443``), requests go to that address with the registered URL's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from emulator.state import EmulatorState

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
IDLE_WAIT_S = 1.0
REQUEST_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)  # Telegram's are longer; tests want quick recoveries


def delivery_url(registered: str, via: str | None) -> str:
    """Where a webhook request really goes: the registered URL, or its path through `via`."""
    if not via:
        return registered
    parts = urlsplit(registered)
    path = parts.path or "/"
    return via.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")


class WebhookPusher:
    """A background task of the emulator's server; idle while no webhook is set."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        )
        self._task = asyncio.create_task(self._run(), name="emulator-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        failures = 0
        while not self.state.closing:
            state = self.state
            if not state.webhook_url or not state.updates:
                await state.updates_signal.wait(IDLE_WAIT_S)
                continue
            update = state.updates[0]
            error = await self._post(update)
            if error is None:
                failures = 0
                # Confirmed: gone from the queue (unless something else removed it meanwhile).
                if state.updates and state.updates[0] is update:
                    state.updates.popleft()
                continue
            state.webhook_last_error = (int(time.time()), error)
            delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
            failures += 1
            await state.updates_signal.wait(delay)

    async def _post(self, update: dict[str, Any]) -> str | None:
        """POST one update; None when the bot accepted it, else the error, as Telegram says it."""
        assert self._session is not None
        state = self.state
        headers = {"Content-Type": "application/json"}
        if state.webhook_secret:
            headers[SECRET_HEADER] = state.webhook_secret
        url = delivery_url(state.webhook_url, state.webhook_via)
        try:
            async with self._session.post(url, data=json.dumps(update), headers=headers) as reply:
                await reply.read()
                if 200 <= reply.status < 300:
                    state.stats.webhook_deliveries += 1
                    return None
                return f"Wrong response from the webhook: {reply.status} {reply.reason}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"Connection failed: {type(exc).__name__}"
