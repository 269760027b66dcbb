"""The request layer against the emulator's fault injection: what is retried, what is not.

First the layer alone under a real telegram.Bot, then the whole bot through an outage of the
Bot API (502s, then dropped connections): it survives and catches up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from bot.plumbing.health import HEALTH_KEY, BotApiHealth
from bot.plumbing.request import (
    NOT_SENT,
    ResilientRequest,
    api_method,
    backoff,
    single_attempt,
)
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock
from tests.test_delivery_e2e import promote_while_the_bot_is_down

PERSON = 4242
TEXT = "Bonjour, votre atelier commence bientôt"


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        await client.user(PERSON, "Nadia", "fr").register()
        yield server, client


async def bot_on(
    server: BotApiEmulator, health: BotApiHealth | None = None, **options: object
) -> Bot:
    bot = Bot(
        server.token,
        base_url=server.base_url,
        request=ResilientRequest(health=health, **options),  # type: ignore[arg-type]
    )
    await bot.initialize()
    return bot


def test_backoff_doubles_up_to_a_cap_with_jitter() -> None:
    for attempt, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]):
        assert all(low <= backoff(attempt) <= high for _ in range(50))
    assert backoff(10) <= 4.0
    assert api_method("http://127.0.0.1:1/bot123:ABC/sendMessage") == "sendMessage"


async def test_5xx_are_retried_and_successes_recorded(emulator, monkeypatch) -> None:
    server, client = emulator
    monkeypatch.setattr("bot.plumbing.request.BASE_DELAY_S", 0.05)  # same shape, shorter
    health = BotApiHealth()
    bot = await bot_on(server, health)
    try:
        assert health.last_success_at is not None  # getMe at initialize
        before = health.last_success_at
        await client.fail_next("sendMessage", 502)
        await client.fail_next("sendMessage", 503)
        message = await bot.send_message(PERSON, TEXT)
        assert message.text == TEXT
        assert health.last_success_at > before
        stats = await client.stats()
        assert stats["errors"].get("502") == 1 and stats["errors"].get("503") == 1
        assert stats["methods"]["sendMessage"] == 1
        # Bounded: four 502s in a row (three retries) reach the caller.
        await client.fail_next("sendMessage", 502, count=4)
        with pytest.raises(NetworkError):
            await bot.send_message(PERSON, TEXT)
        assert (await client.stats())["errors"].get("502") == 5
    finally:
        await bot.shutdown()


@pytest.mark.parametrize("status", [500, 504])
async def test_an_ambiguous_5xx_repeats_reads_but_not_sends(emulator, monkeypatch, status) -> None:
    """A 500 or a 504 may come after the message was delivered, like a timeout: a send is
    not repeated (the caller decides), a read or an edit is."""
    server, client = emulator
    monkeypatch.setattr("bot.plumbing.request.BASE_DELAY_S", 0.05)
    bot = await bot_on(server)
    try:
        await client.fail_next("sendMessage", status)
        with pytest.raises(NetworkError):
            await bot.send_message(PERSON, TEXT)
        stats = await client.stats()
        assert stats["errors"].get(str(status)) == 1  # one attempt only
        assert stats["methods"].get("sendMessage", 0) == 0
        await client.fail_next("getChat", status, count=2)
        chat = await bot.get_chat(PERSON)  # repeatable: retried
        assert chat.id == PERSON
        assert (await client.stats())["errors"].get(str(status)) == 3
    finally:
        await bot.shutdown()


async def test_a_single_attempt_leaves_retries_to_the_caller(emulator) -> None:
    server, client = emulator
    bot = await bot_on(server)
    try:
        await client.fail_next("sendMessage", 502)
        with single_attempt(), pytest.raises(NetworkError):
            await bot.send_message(PERSON, TEXT)
        assert (await client.stats())["errors"].get("502") == 1
        await bot.send_message(PERSON, TEXT)  # outside the block: normal again
    finally:
        await bot.shutdown()


async def test_a_400_is_logged_with_the_method_only_and_never_retried(emulator, caplog) -> None:
    server, client = emulator
    bot = await bot_on(server)
    caplog.set_level(logging.INFO, logger="bot.plumbing.request")
    try:
        for _ in range(2):
            await client.fail_next("sendMessage", 400, description="Bad Request: chat not found")
            with pytest.raises(BadRequest):
                await bot.send_message(PERSON, TEXT)
    finally:
        await bot.shutdown()
    lines = [r.getMessage() for r in caplog.records]
    refused = "Bot API sendMessage refused the request (400): Bad Request: chat not found"
    assert lines.count(refused) == 2  # once per call: no retry
    assert not any(TEXT in line or str(PERSON) in line for line in lines)
    stats = await client.stats()
    assert stats["errors"].get("400") == 2 and stats["methods"].get("sendMessage", 0) == 0


async def test_a_429_is_waited_out_only_without_the_rate_limiter(emulator) -> None:
    server, client = emulator
    loop = asyncio.get_running_loop()
    bot = await bot_on(server, retry_rate_limits=True)
    try:
        await client.fail_next("sendMessage", 429, retry_after=1)
        started = loop.time()
        await bot.send_message(PERSON, TEXT)
        assert loop.time() - started >= 1.0
    finally:
        await bot.shutdown()
    limited = await bot_on(server, retry_rate_limits=False)  # the send budget does it then
    try:
        await client.fail_next("sendMessage", 429, retry_after=1)
        with pytest.raises(RetryAfter):
            await limited.send_message(PERSON, TEXT)
    finally:
        await limited.shutdown()


async def test_a_dropped_connection_repeats_reads_but_not_sends(emulator) -> None:
    """A send whose connection dropped may have been delivered: it is not repeated."""
    server, client = emulator
    bot = await bot_on(server)
    try:
        await client.set_unreachable(True, seconds=0.4, drop_connections=True)
        me = await bot.get_me()  # repeatable: retried until the API is back
        assert me.username == server.state.bot_user["username"]
        requests = (await client.stats())["requests"]
        await client.set_unreachable(True, seconds=5, drop_connections=True)
        with pytest.raises(NetworkError):
            await bot.send_message(PERSON, TEXT)
        assert (await client.stats())["requests"] == requests + 1
    finally:
        await client.set_unreachable(False)
        await bot.shutdown()


async def wait_for_a_502(client: EmulatorClient) -> None:
    for _ in range(200):
        if (await client.stats())["errors"].get("502"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no request failed during the outage")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # about the network only
async def test_the_bot_survives_an_outage_and_catches_up(db, database_url, emulator) -> None:
    """502s, then dropped connections, for a few seconds: a promotion decided meanwhile is
    delivered after, and a message written meanwhile is answered after."""
    server, client = emulator
    clock = new_clock()
    settings = settings_for(server, database_url, outbox_sweep_seconds=0.2)
    early = client.user(51, "Amine", "fr")
    promoted = client.user(53, "Lina", "fr")
    await promoted.register()
    async with bot_running(settings, clock) as application:
        health: BotApiHealth = application.bot_data[HEALTH_KEY]
        await client.set_unreachable(True)
        # The long poll in flight when the outage began takes this one (its answer fails)...
        await client.user(50, "Yanis", "fr").send("/start")
        await wait_for_a_502(client)
        # ...then every poll fails: Telegram keeps this one until the bot can fetch it.
        await early.send("/start")
        await promote_while_the_bot_is_down(db, clock, [52, 53])
        await asyncio.sleep(1.0)
        await client.set_unreachable(True, drop_connections=True)
        await asyncio.sleep(1.0)
        outage_ended = health.last_success_at
        await client.set_unreachable(False)
        clock.advance(timedelta(minutes=1))  # the outbox's backoff has passed
        welcome = await early.wait_message(contains="Bonjour", timeout=40)
        notice = await promoted.wait_message(contains="Bonne nouvelle", timeout=40)
        assert welcome is not None and "Atelier banque en ligne" in (notice.text or "")
        assert health.last_success_at is not None and health.last_success_at > outage_ended
    stats = await client.stats()
    assert stats["errors"].get("502", 0) > 0


async def test_a_closed_port_is_a_send_that_never_left_and_is_retried(monkeypatch) -> None:
    """Nothing listening: the connection never opened, so even a send is repeated, then the
    error reaches the caller with its cause."""
    import socket

    monkeypatch.setattr("bot.plumbing.request.BASE_DELAY_S", 0.01)
    with socket.socket() as probe:  # a port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    bot = Bot("123:abc", base_url=f"http://127.0.0.1:{port}/bot", request=ResilientRequest())
    await bot.request.initialize()  # type: ignore[attr-defined]  # no getMe: nothing answers
    monkeypatch.setattr("bot.plumbing.request.asyncio.sleep", counted_sleep)
    try:
        with pytest.raises(NetworkError) as raised:
            await bot.send_message(PERSON, TEXT)
    finally:
        await bot.request.shutdown()  # type: ignore[attr-defined]
    assert isinstance(raised.value.__cause__, NOT_SENT)
    assert len(sleeps) == ResilientRequest().max_retries  # every retry was taken


async def test_a_slow_answer_times_out_within_the_read_timeout() -> None:
    """A Bot API that takes the request and never answers gives TimedOut, not a hang."""
    from aiohttp import web

    release = asyncio.Event()
    received: list[str] = []

    async def silent(request: web.Request) -> web.Response:
        received.append(request.match_info["method"])
        await release.wait()
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", silent)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    bot = Bot("123:abc", base_url=f"http://127.0.0.1:{port}/bot", request=ResilientRequest())
    await bot.request.initialize()  # type: ignore[attr-defined]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimedOut):
            await bot.send_message(PERSON, TEXT, read_timeout=0.3)
        assert loop.time() - start < 3
        assert received == ["sendMessage"]  # sent once: a send that timed out is not repeated
    finally:
        release.set()
        await bot.request.shutdown()  # type: ignore[attr-defined]
        await runner.cleanup()


async def test_files_and_fields_travel_together_in_one_multipart_request(emulator) -> None:
    """sendDocument: the file's name, type and bytes arrive with the other parameters."""
    server, client = emulator
    bot = await bot_on(server)
    try:
        content = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
        sent = await bot.send_document(
            PERSON, document=content, filename="atelier été.ics", caption="Votre atelier"
        )
    finally:
        await bot.shutdown()
    assert sent.document is not None and sent.document.file_name == "atelier été.ics"
    assert sent.caption == "Votre atelier"
    downloaded = await client.download(sent.document.file_id)
    assert downloaded == content


async def test_the_proxy_of_the_environment_is_used_and_no_proxy_respected(monkeypatch) -> None:
    """http_proxy sends the Bot API calls through the proxy, with the credentials of its URL;
    NO_PROXY for the server's host goes direct. Read once per server, like httpx."""
    import base64

    from aiohttp import web

    seen: list[tuple[str, str | None]] = []

    async def proxy(request: web.Request) -> web.Response:
        # A forward proxy gets the whole target URL in the request line.
        seen.append((str(request.url), request.headers.get("Proxy-Authorization")))
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    clear_proxy_settings(monkeypatch)
    monkeypatch.setenv("http_proxy", f"http://nadia:s3cret@127.0.0.1:{port}")
    base_url = "http://bot-api.invalid:8081/bot"  # unresolvable: only the proxy can reach it
    try:
        bot = Bot("123:abc", base_url=base_url, request=ResilientRequest())
        await bot.request.initialize()  # type: ignore[attr-defined]
        try:
            assert await bot.delete_message(PERSON, 1) is True
            assert await bot.delete_message(PERSON, 2) is True
        finally:
            await bot.request.shutdown()  # type: ignore[attr-defined]
        credentials = "Basic " + base64.b64encode(b"nadia:s3cret").decode()
        assert seen == [(f"{base_url}123:abc/deleteMessage", credentials)] * 2

        monkeypatch.setenv("no_proxy", "bot-api.invalid")
        bot = Bot("123:abc", base_url=base_url, request=ResilientRequest(max_retries=0))
        await bot.request.initialize()  # type: ignore[attr-defined]
        try:
            with pytest.raises(NetworkError):  # direct: the name does not resolve
                await bot.delete_message(PERSON, 3)
        finally:
            await bot.request.shutdown()  # type: ignore[attr-defined]
        assert len(seen) == 2
    finally:
        await runner.cleanup()


async def test_an_https_bot_api_goes_through_a_tunnel_with_the_proxys_credentials(
    monkeypatch,
) -> None:
    """https_proxy: the CONNECT to the Bot API's host carries the proxy's credentials; a
    proxy that refuses the tunnel is a NetworkError."""
    connects: list[list[str]] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        connects.append([line for line in head if line])
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clear_proxy_settings(monkeypatch)
    monkeypatch.setenv("https_proxy", f"http://nadia:s3cret@127.0.0.1:{port}")
    bot = Bot(
        "123:abc",
        base_url="https://bot-api.invalid/bot",
        request=ResilientRequest(max_retries=0),
    )
    await bot.request.initialize()  # type: ignore[attr-defined]
    try:
        with pytest.raises(NetworkError):
            await bot.delete_message(PERSON, 1)
    finally:
        await bot.request.shutdown()  # type: ignore[attr-defined]
        server.close()
        await server.wait_closed()
    assert len(connects) == 1
    request_line, *headers = connects[0]
    assert request_line == "CONNECT bot-api.invalid:443 HTTP/1.1"
    assert "Proxy-Authorization: Basic bmFkaWE6czNjcmV0" in headers


def clear_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from this machine's environment (urllib reads both cases) or ~/.netrc."""
    for scheme in ("http", "https", "all", "no", "ws", "wss"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # urllib ignores HTTP_PROXY under CGI
    monkeypatch.setenv("NETRC", "/nonexistent")
