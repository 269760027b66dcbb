"""The bot's own HTTP server (aiohttp): Telegram's webhook and the health endpoint.

python-telegram-bot's webhook server cannot serve other routes, so the bot runs this one
(the pattern of PTB's "customwebhookbot" example: no Updater, updates put on the
application's update_queue). In polling mode the same server serves only /health.

- POST <path of WEBHOOK_URL>: Telegram's updates. The `X-Telegram-Bot-Api-Secret-Token`
  header must equal WEBHOOK_SECRET (compared in constant time), otherwise 403; a body that is
  not a JSON update is 400; a body over MAX_BODY_BYTES is 413; an update arriving while the
  bot is stopping is 503, so that Telegram delivers it again later (to the next start, or to
  another instance). The answer is sent once the update is queued, not handled: Telegram
  waits for it before sending more.
- GET /health: the database and the last successful Bot API call (see `health_report`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy import text
from telegram import Update

from bot.plumbing.context import SERVICES_KEY, BotApplication, Services
from bot.plumbing.health import HEALTH_KEY, BotApiHealth

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# An update is a few kilobytes; Telegram's largest (a long message with entities, a poll)
# stay far below this.
MAX_BODY_BYTES = 1024 * 1024
HEALTH_PATH = "/health"
# The Bot API counts as answering when a call succeeded this recently. Polling calls
# getUpdates every few seconds; in webhook mode serve.py probes it when the bot is idle.
BOT_API_FRESH_FOR = timedelta(minutes=5)
DATABASE_CHECK_TIMEOUT_S = 3.0


def webhook_path(url: str) -> str:
    """The path Telegram posts to: the path of WEBHOOK_URL (the reverse proxy keeps it)."""
    return urlsplit(url).path or "/"


async def _database_ok(services: Services | None) -> bool:
    if services is None:
        return False
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_S):
            async with services.db.read() as session:
                await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure is what the endpoint reports, not a crash
        log.warning("health: the database did not answer (%s)", type(exc).__name__)
        return False
    return True


async def health_report(application: BotApplication) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 "ok" when the database answers and the Bot API answered
    within BOT_API_FRESH_FOR, otherwise 503 "degraded"."""
    database_ok = await _database_ok(application.bot_data.get(SERVICES_KEY))
    health: BotApiHealth | None = application.bot_data.get(HEALTH_KEY)
    last = health.last_success_at if health is not None else None
    seconds = None if last is None else max(0, int((datetime.now(UTC) - last).total_seconds()))
    api_ok = seconds is not None and seconds <= BOT_API_FRESH_FOR.total_seconds()
    healthy = database_ok and api_ok
    body = {
        "status": "ok" if healthy else "degraded",
        "database": "ok" if database_ok else "error",
        "bot_api_last_success": last.isoformat() if last is not None else None,
        "seconds_since_bot_api": seconds,
    }
    return (200 if healthy else 503), body


class BotHttpServer:
    """Serves /health, and the webhook when `webhook_path` and `secret` are given."""

    def __init__(
        self,
        application: BotApplication,
        *,
        host: str,
        port: int,
        webhook_path: str | None = None,
        secret: str | None = None,
    ) -> None:
        if (webhook_path is None) != (secret is None):
            raise ValueError("the webhook needs both a path and a secret")
        self._application = application
        self.host = host
        self.port = port
        self._webhook_path = webhook_path
        self._secret = secret.encode() if secret is not None else b""
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get(HEALTH_PATH, self.health)
        if self._webhook_path is not None:
            app.router.add_post(self._webhook_path, self.webhook)
        return app

    async def start(self) -> None:
        """Bind and serve (port 0: the system picks one, then `port` tells which)."""
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop accepting requests; the ones in progress get a few seconds to finish."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        status, body = await health_report(self._application)
        return web.json_response(body, status=status)

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            log.warning("webhook: a request without the right secret token was refused")
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            data = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            raise
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.json_response({"error": "the body is not an update"}, status=400)
        application = self._application
        if not application.running:
            # Stopping: Telegram keeps the update and delivers it again later.
            return web.json_response({"error": "stopping"}, status=503)
        try:
            update = Update.de_json(data, application.bot)
        except (KeyError, TypeError, ValueError):
            return web.json_response({"error": "the body is not an update"}, status=400)
        await application.update_queue.put(update)
        return web.Response(status=200)
