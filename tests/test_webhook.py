"""Webhook mode and the health endpoint: Telegram (the emulator) posts updates to the bot's
own aiohttp server over real HTTP, with the secret header, and gets 403 without it."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import aiohttp
import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator

from bot.plumbing.health import HEALTH_KEY, BotApiHealth
from bot.runtime.serve import serve
from bot.runtime.webhook import MAX_BODY_BYTES, SECRET_HEADER, BotHttpServer, health_report
from bot.settings import Settings
from tests.e2e import settings_for

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

SECRET = "s3cret-of-the-webhook_0123456789"
PUBLIC_URL = "https://bot.example.org/telegram/updates"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Served:
    emulator: BotApiEmulator
    client: EmulatorClient
    server: BotHttpServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@asynccontextmanager
async def serving(settings: Settings, *, webhook: bool) -> AsyncIterator[BotHttpServer]:
    stop = asyncio.Event()
    ready: asyncio.Future[BotHttpServer | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, webhook=webhook, stop=stop, on_ready=ready.set_result)
    )
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert ready in done, "the bot did not get ready"
    server = ready.result()
    assert server is not None
    try:
        yield server
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=30) == 0


@pytest.fixture
async def webhook_bot(db, database_url: str) -> AsyncIterator[Served]:
    port = free_port()
    async with (
        BotApiEmulator(webhook_via=f"http://127.0.0.1:{port}") as emulator,
        EmulatorClient(emulator.side_url) as client,
        aiohttp.ClientSession() as http,
    ):
        settings = settings_for(
            emulator,
            database_url,
            webhook_url=PUBLIC_URL,
            webhook_secret=SECRET,
            webhook_listen="127.0.0.1",
            webhook_port=port,
        )
        async with serving(settings, webhook=True) as server:
            yield Served(emulator, client, server, http)


async def test_a_resident_starts_through_the_webhook(webhook_bot: Served):
    state = webhook_bot.emulator.state
    assert state.webhook_url == PUBLIC_URL and state.webhook_secret == SECRET
    user = webhook_bot.client.user(501, "Amina", "fr")
    await user.send("/start")
    welcome = await user.wait_message(timeout=15)
    assert "Bonjour" in welcome.text
    stats = await webhook_bot.client.stats()
    assert stats["webhook_deliveries"] >= 1 and stats["pending_updates"] == 0
    assert stats["methods"].get("getUpdates", 0) == 0  # no polling in webhook mode


async def test_what_start_up_made_is_out_of_the_collectors_sight_while_serving(
    webhook_bot: Served,
):
    """A full collection then scans only what updates made, not the whole start-up."""
    assert gc.get_freeze_count() > 0  # 0 unless frozen


async def test_the_webhook_refuses_requests_without_the_secret(webhook_bot: Served):
    update = {
        "update_id": 99,
        "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}},
    }
    url = webhook_bot.url + "/telegram/updates"
    for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET[:-1]}):
        async with webhook_bot.http.post(url, json=update, headers=headers) as reply:
            assert reply.status == 403
    good = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
    async with webhook_bot.http.post(url, data=b"{not json", headers=good) as reply:
        assert reply.status == 400
    async with webhook_bot.http.post(url, data=b'["a list"]', headers=good) as reply:
        assert reply.status == 400
    too_big = json.dumps({"update_id": 1, "pad": "x" * MAX_BODY_BYTES}).encode()
    async with webhook_bot.http.post(url, data=too_big, headers=good) as reply:
        assert reply.status == 413
    async with webhook_bot.http.get(webhook_bot.url + "/telegram/other") as reply:
        assert reply.status in (404, 405)


async def test_health_reports_the_database_and_the_bot_api(webhook_bot: Served):
    async with webhook_bot.http.get(webhook_bot.url + "/health") as reply:
        body = await reply.json()
        assert reply.status == 200, body
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["seconds_since_bot_api"] is not None and body["seconds_since_bot_api"] < 60
    assert datetime.fromisoformat(body["bot_api_last_success"]).tzinfo is not None


async def test_health_in_polling_mode_on_its_own_port(db, database_url: str):
    port = free_port()
    async with (
        BotApiEmulator() as emulator,
        EmulatorClient(emulator.side_url) as client,
        aiohttp.ClientSession() as http,
    ):
        settings = settings_for(emulator, database_url, health_port=port)
        async with serving(settings, webhook=False) as server:
            user = client.user(502, "Yanis", "fr")
            await user.send("/start")
            assert "Bonjour" in (await user.wait_message(timeout=15)).text
            async with http.get(f"http://127.0.0.1:{server.port}/health") as reply:
                assert reply.status == 200
                assert (await reply.json())["status"] == "ok"
            # Only /health there: no webhook route in polling mode.
            async with http.post(f"http://127.0.0.1:{server.port}/telegram/updates") as reply:
                assert reply.status in (404, 405)


async def test_health_is_degraded_without_a_recent_bot_api_answer_or_database():
    stale = BotApiHealth(last_success_at=datetime.now(UTC) - timedelta(minutes=6))
    status, body = await health_report(SimpleNamespace(bot_data={HEALTH_KEY: stale}))  # type: ignore[arg-type]
    assert status == 503 and body["status"] == "degraded" and body["database"] == "error"
    assert body["seconds_since_bot_api"] >= 360
    status, body = await health_report(SimpleNamespace(bot_data={}))  # type: ignore[arg-type]
    assert status == 503 and body["bot_api_last_success"] is None
    assert body["seconds_since_bot_api"] is None


async def test_the_emulator_retries_a_failing_webhook_and_refuses_get_updates():
    port = free_port()
    async with (
        BotApiEmulator(webhook_via=f"http://127.0.0.1:{port}") as emulator,
        EmulatorClient(emulator.side_url) as client,
        aiohttp.ClientSession() as http,
    ):
        api = f"{emulator.base_url}{emulator.token}"
        async with http.post(
            f"{api}/setWebhook", json={"url": PUBLIC_URL, "secret_token": SECRET}
        ) as reply:
            assert (await reply.json())["result"] is True
        async with http.post(f"{api}/getUpdates") as reply:
            assert reply.status == 409
        user = client.user(503, "Lina", "fr")
        await user.send("/start")  # nobody listens yet: the update waits, with an error
        await asyncio.sleep(0.5)
        async with http.post(f"{api}/getWebhookInfo") as reply:
            info = (await reply.json())["result"]
        assert (
            info["pending_update_count"] == 1 and "Connection failed" in info["last_error_message"]
        )

        received: list[tuple[str | None, dict]] = []

        async def hook(request: aiohttp.web.Request) -> aiohttp.web.Response:
            received.append((request.headers.get(SECRET_HEADER), await request.json()))
            return aiohttp.web.Response()

        app = aiohttp.web.Application()
        app.router.add_post("/telegram/updates", hook)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
        assert received and received[0][0] == SECRET
        assert received[0][1]["message"]["text"] == "/start"
        assert (await client.stats())["pending_updates"] == 0
