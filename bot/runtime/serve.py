"""`capacity-bot run`: the bot's process, from start-up to a graceful shutdown.

Start-up waits out an unreachable Bot API: each step that talks to it (getMe, the bot's
own preparation in post_init, then deleteWebhook for polling or setWebhook for the webhook)
is retried with capped exponential backoff, one log line per attempt, until it works or the
process is told to stop. Meanwhile the request layer makes one attempt per call: its own
retries (and their log lines) would run inside each attempt. A token the Bot API refuses
(401/404) is not retried.

SIGTERM and SIGINT stop the bot gracefully (bot/runtime/runner.py `shut_down`): no new updates
(polling stops, the webhook server closes), the updates and jobs in progress finish within
HANDLERS_GRACE_S, the broadcast sender finishes its send in flight, the outbox rows this
instance claimed are released for the next start (post_shutdown), and the database is
closed. Exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from telegram import Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError

from bot.plumbing.broadcast_sending import stop_broadcast_sender
from bot.plumbing.context import BotApplication
from bot.plumbing.health import HEALTH_KEY, BotApiHealth
from bot.plumbing.request import ResilientRequest
from bot.plumbing.send_budget import retry_after_seconds
from bot.runtime.app import build_application
from bot.runtime.runner import shut_down, start_polling
from bot.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from bot.runtime.webhook import BotHttpServer

log = logging.getLogger("capacity_bot")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
# Updates and jobs in progress get this long to finish. Docker waits 10 s after SIGTERM
# by default before killing: compose.yaml gives the bot stop_grace_period: 30s.
HANDLERS_GRACE_S = 15.0
# How often an idle bot checks the Bot API itself, so that /health stays true.
PROBE_EVERY_S = 60.0
EXIT_FAILED = 1


class Stopped(Exception):
    """SIGTERM or SIGINT arrived during start-up."""


class StartupFailed(Exception):
    """The Bot API refused something that retrying cannot fix (the message is one line)."""


async def _until_stopped(step: Awaitable[object], stop: asyncio.Event) -> None:
    """Run `step`, unless `stop` is set first (then cancel it and raise Stopped)."""
    task = asyncio.ensure_future(step)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Stopped
    task.result()


async def _with_retries(
    application: BotApplication,
    what: str,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
) -> None:
    """Run `step` until it works: network errors, 5xx and 429 are retried with capped
    exponential backoff (429: at least its retry_after), one log line per failed attempt."""
    delay = FIRST_RETRY_S
    attempt = 1
    while True:
        try:
            with _one_attempt_per_call(application):
                await _until_stopped(step(), stop)
            if attempt > 1:
                log.info("%s: done after %d attempts", what, attempt)
            return
        except InvalidToken:
            raise
        except RetryAfter as exc:
            wait = max(delay, retry_after_seconds(exc))
            reason = "429 Too Many Requests"
        except NetworkError as exc:  # connection refused or dropped, timeouts, 5xx
            wait = delay
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
        except TelegramError as exc:
            raise StartupFailed(f"{what}: the Bot API refused it ({_first_line(exc)})") from None
        # Start-up runs without collections (`capacity-bot run`); not a start-up that waits
        # out an outage, whose failed attempts would pile up.
        gc.enable()
        log.warning(
            "%s: the Bot API did not answer (%s); attempt %d, next in %.0f s",
            what,
            reason,
            attempt,
            wait,
        )
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass
        else:
            raise Stopped
        delay = min(delay * 2, MAX_RETRY_S)
        attempt += 1


@contextlib.contextmanager
def _one_attempt_per_call(application: BotApplication) -> Iterator[None]:
    """While a start-up step is tried, the request layer does not retry its calls: one attempt,
    one log line. Not `single_attempt()`: the tasks that post_init starts (the broadcast
    sender) would inherit it for good."""
    request = application.bot.request
    assert isinstance(request, ResilientRequest)  # build_application's
    retries, request.max_retries = request.max_retries, 0
    try:
        yield
    finally:
        request.max_retries = retries


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _prepare(application: BotApplication) -> Callable[[], Awaitable[None]]:
    """post_init, undone (post_shutdown) when it fails half-way, so that it can be retried."""

    async def step() -> None:
        assert application.post_init is not None
        try:
            await application.post_init(application)
        except BaseException:
            if application.post_shutdown is not None:
                await application.post_shutdown(application)
            raise

    return step


def _set_webhook(application: BotApplication, settings: Settings) -> Callable[[], Awaitable[bool]]:
    assert settings.webhook_url is not None and settings.webhook_secret is not None
    url, secret = settings.webhook_url, settings.webhook_secret.get_secret_value()

    def step() -> Awaitable[bool]:
        return application.bot.set_webhook(
            url,
            secret_token=secret,
            allowed_updates=Update.ALL_TYPES,
            drop_pending_updates=False,
        )

    return step


def check_webhook_settings(settings: Settings) -> None:
    """Webhook mode needs a public URL and a secret: one line naming what is missing."""
    for name, value in (
        ("WEBHOOK_URL", settings.webhook_url),
        ("WEBHOOK_SECRET", settings.webhook_secret),
    ):
        if value is None:
            expected = (
                "the public https:// address Telegram posts updates to"
                if name == "WEBHOOK_URL"
                else "1 to 256 characters among A-Z, a-z, 0-9, _ and -"
            )
            raise ConfigurationError(f"{name} is missing for --webhook; expected {expected}")


async def _probe_bot_api(application: BotApplication, webhook: bool) -> None:
    """Keep /health true on an idle bot: call the Bot API when nothing else did lately.
    In webhook mode getWebhookInfo also tells why Telegram could not reach us, if it could not."""
    health: BotApiHealth = application.bot_data[HEALTH_KEY]
    while True:
        await asyncio.sleep(PROBE_EVERY_S / 4)
        last = health.last_success_at
        if last is not None and datetime.now(UTC) - last < timedelta(seconds=PROBE_EVERY_S):
            continue
        try:
            info = await application.bot.get_webhook_info()
        except TelegramError as exc:
            log.warning("the Bot API did not answer the health probe (%s)", type(exc).__name__)
            continue
        health.record_success()
        if webhook and info.last_error_message:
            log.warning("Telegram reports a webhook error: %s", info.last_error_message)


async def serve(
    settings: Settings,
    *,
    webhook: bool = False,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[BotHttpServer | None], None] | None = None,
) -> int:
    """Run until SIGTERM or SIGINT (or until `stop` is set, when given: tests); returns the
    exit status (configuration errors raise ConfigurationError instead). `on_ready` is told
    when updates are being taken, with the HTTP server if there is one."""
    if webhook:
        check_webhook_settings(settings)
    handle_signals = stop is None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info("%s received: stopping gracefully", signal.Signals(signum).name)
        stop.set()

    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)

    application = build_application(settings)
    # Created by build_application with the request layer; kept here should it ever not be.
    application.bot_data.setdefault(HEALTH_KEY, BotApiHealth())
    server: BotHttpServer | None = None
    probe: asyncio.Task[None] | None = None
    if webhook or settings.health_port:
        # The webhook server's module only when an HTTP server is wanted.
        from bot.runtime.webhook import BotHttpServer, webhook_path
    try:
        await _with_retries(application, "connecting to the Bot API", application.initialize, stop)
        await _with_retries(application, "preparing the bot", _prepare(application), stop)
        await application.start()
        # What exists now (modules, mappers, prebuilt statements, catalogs) lives as long as
        # the process: out of the collector's sight, a full collection scans only what
        # updates made since, instead of a pause of tens of ms while taps wait. Start-up's
        # garbage is collected first (not frozen with the rest), before any update is taken;
        # the collector is on from here (`capacity-bot run` turns it off during start-up).
        gc.collect()
        gc.freeze()
        gc.enable()
        if webhook:
            assert settings.webhook_url is not None and settings.webhook_secret is not None
            server = BotHttpServer(
                application,
                host=settings.webhook_listen,
                port=settings.webhook_port,
                webhook_path=webhook_path(settings.webhook_url),
                secret=settings.webhook_secret.get_secret_value(),
            )
        elif settings.health_port:
            server = BotHttpServer(
                application, host=settings.webhook_listen, port=settings.health_port
            )
        if server is not None:
            await _listen(server, webhook)
        if webhook:
            await _with_retries(
                application, "setting the webhook", _set_webhook(application, settings), stop
            )
            log.info("taking updates through the webhook on port %d", server.port if server else 0)
        else:
            await _with_retries(
                application, "starting long polling", lambda: start_polling(application), stop
            )
            log.info("taking updates with long polling")
        probe = asyncio.create_task(_probe_bot_api(application, webhook), name="bot-api-probe")
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    except Stopped:
        log.info("stopped during start-up")
    except InvalidToken:
        raise ConfigurationError(
            "BOT_TOKEN was refused by the Bot API (401/404); expected the bot's current token "
            "from @BotFather"
        ) from None
    except StartupFailed as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    finally:
        if probe is not None:
            probe.cancel()
        await _stop_everything(application, server)
        gc.unfreeze()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return 0


async def _listen(server: BotHttpServer, webhook: bool) -> None:
    setting = "WEBHOOK_PORT" if webhook else "HEALTH_PORT"
    try:
        await server.start()
    except OSError as exc:
        raise ConfigurationError(
            f"{setting}: cannot listen on {server.host}:{server.port} ({exc.strerror or exc}); "
            "expected a free port on an address of this machine (WEBHOOK_LISTEN)"
        ) from None
    log.info("listening on %s:%d (health: /health)", server.host, server.port)


async def _stop_everything(application: BotApplication, server: BotHttpServer | None) -> None:
    """The graceful part: the webhook server first (no new updates), the broadcast sender
    (its send in flight finishes, the rest of its batch is released), then the rest."""
    if server is not None:
        await server.stop()
    await stop_broadcast_sender(application)
    await shut_down(application, handlers_grace=HANDLERS_GRACE_S)
    log.info("stopped; work not finished is left for the next start")


def run(settings: Settings, *, webhook: bool = False) -> int:
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(serve(settings, webhook=webhook))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (Linux, macOS): the bot spends about a fifth less CPU per
    update than on asyncio's own loop (bench/journey.py, BENCHMARKS.md); else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
