"""The emulator's HTTP server: the Bot API and the side API on one port of 127.0.0.1."""

from __future__ import annotations

from aiohttp import web

from emulator.botapi import BotApi
from emulator.side import SideApi
from emulator.state import EmulatorState
from emulator.webhook import WebhookPusher

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Telegram's limit for bots' documents


class BotApiEmulator:
    """The server, runnable in-process (same event loop as the bot under test) or standalone.

    ``state`` gives direct in-process access; tests should prefer the HTTP side API through
    :class:`emulator.client.EmulatorClient`, which sees exactly what a remote user would.
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-TOKEN-of-the-bot-api-emulator",
        host: str = "127.0.0.1",
        port: int = 0,
        global_rate: float | None = None,
        per_chat_rate: float | None = None,
        bot_username: str = "capacity_test_bot",
        bot_name: str = "Capacity Test Bot",
        history_limit: int = 10_000,
        event_log_limit: int = 200_000,
        webhook_via: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.state = EmulatorState(
            token=token,
            bot_username=bot_username,
            bot_name=bot_name,
            global_rate=global_rate,
            per_chat_rate=per_chat_rate,
            history_limit=history_limit,
            event_log_limit=event_log_limit,
        )
        self.state.webhook_via = webhook_via
        self._runner: web.AppRunner | None = None
        self._webhook = WebhookPusher(self.state)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        bot_api = BotApi(self.state)
        app.add_routes(SideApi(self.state, bot_api.methods).routes())
        app.router.add_route("*", "/bot{token}/{method}", bot_api.handle)
        return app

    async def start(self) -> None:
        """Binds and serves; with port 0 the system picks a free port (see ``port``)."""
        self.state.closing = False
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]  # the one the system picked when port was 0
        self._webhook.start()

    async def stop(self) -> None:
        """Releases pending long polls at once, then closes the server."""
        if self._runner is None:
            return
        self.state.close()
        await self._webhook.stop()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> BotApiEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The value for PTB's ``base_url``: PTB appends the token, then ``/methodName``."""
        return f"{self.side_url}/bot"

    @property
    def side_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self.state.token
