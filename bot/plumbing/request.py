"""The Bot API request layer: Telegram's errors handled by class, below every handler's reply.

`AiohttpRequest` carries python-telegram-bot's requests over aiohttp's client instead of
httpx (PTB's default `HTTPXRequest`): the same requests, timeouts and errors, for less than
half of the CPU per call (0.55-0.75 ms against 1.3-1.55 ms per sendMessage, measured with the
emulator; BENCHMARKS.md). aiohttp is already what the webhook server and the emulator run on.

`ResilientRequest` is `AiohttpRequest` with, around each call:

- every successful call recorded in the application's `BotApiHealth` (read by /health);
- 5xx answers, network errors and timeouts retried a few times (bounded exponential backoff
  with jitter), when a retry cannot make a duplicate the request did not already risk:

  * the methods in `REPEATABLE`, whose second run changes nothing a person sees (reading,
    editing, deleting, answering a button, setting commands), are retried after any 5xx
    answer, network error or timeout;
  * the other methods (sendMessage, copyMessage, sendDocument...) only when the call cannot
    have been carried out: a connection that could not be opened (the request never left),
    502 Bad Gateway and 503 Service Unavailable (the proxy in front of Telegram could not
    reach it, or Telegram refused the call unprocessed). A 500 or a 504 Gateway Timeout is
    as ambiguous as a timeout or a connection dropped after the request was sent: the
    message may have been delivered. These are not retried: the person may ask again, and
    the outbox has its own at-least-once rule;

- a 400 logged once with the method name (never the parameters, which hold texts), and never
  retried: the same request would be refused again;
- a 429 waited out (its `retry_after`) and retried, only when the send budget
  (bot/plumbing/send_budget.py) leaves replies unthrottled (`RATE_LIMIT_PER_SECOND=0`): otherwise the
  budget already does it, and doing it twice would double the waits. A `retry_after` longer
  than `MAX_RETRY_AFTER_S` is raised to the caller;
- `getUpdates` is never retried here: python-telegram-bot's polling loop retries it with its
  own backoff (up to 30 s), and a long poll that failed has nothing to repeat.

The outbox delivery job and the broadcast sender classify Telegram's errors themselves, per
row, with their own bounded attempts and backoff in the database. They send inside
`single_attempt()`, so that this layer makes one attempt and raises: retries are never
doubled. 403 is left to the callers (the error handler marks a resident who blocked the bot
inactive; the outbox and the broadcast sender do it themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import random
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, NamedTuple

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from yarl import URL

from bot.plumbing.health import BotApiHealth

log = logging.getLogger(__name__)

# Methods whose second run changes nothing a person sees: safe to repeat after a timeout.
REPEATABLE = frozenset(
    {
        "getMe",
        "getChat",
        "getFile",
        "getMyCommands",
        "getWebhookInfo",
        "setMyCommands",
        "deleteMyCommands",
        "setWebhook",
        "deleteWebhook",
        "answerCallbackQuery",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "deleteMessage",
        "sendChatAction",
        "leaveChat",
    }
)
# Retried by python-telegram-bot's own polling loop.
NEVER_RETRIED = frozenset({"getUpdates"})
# Errors that mean the request never reached the server: no connection could be opened, or
# none was free in time.
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# 5xx answers meaning the call was not carried out: safe to repeat for every method.
NOT_CARRIED_OUT = frozenset({HTTPStatus.BAD_GATEWAY, HTTPStatus.SERVICE_UNAVAILABLE})

MAX_RETRIES = 3
BASE_DELAY_S = 0.5
MAX_DELAY_S = 4.0
MAX_RETRY_AFTER_S = 30.0  # a longer 429 pause is the caller's to decide

_single_attempt: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "telegram_single_attempt", default=False
)


@contextlib.contextmanager
def single_attempt() -> Iterator[None]:
    """Within this block (same task), Bot API calls are made once: errors go to the caller,
    which retries them its own way (the outbox, the broadcast sender)."""
    token = _single_attempt.set(True)
    try:
        yield
    finally:
        _single_attempt.reset(token)


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (0-based): doubling, capped, with full jitter on
    half of it so that many callers do not retry in step."""
    delay: float = min(MAX_DELAY_S, BASE_DELAY_S * 2**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def api_method(url: str) -> str:
    """The Bot API method of a request URL (…/bot<token>/sendMessage → sendMessage)."""
    return url.rsplit("/", 1)[-1].split("?", 1)[0]


def _description(payload: bytes) -> str:
    try:
        body = json.loads(payload)
    except ValueError:
        return ""
    return str(body.get("description", "")) if isinstance(body, dict) else ""


def _retry_after(payload: bytes) -> float | None:
    try:
        body = json.loads(payload)
        value = body["parameters"]["retry_after"]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


class AiohttpRequest(BaseRequest):
    """python-telegram-bot's requests over one aiohttp client session (see module).

    The defaults are those of PTB's HTTPXRequest: 256 connections, 5 s to connect and to read,
    1 s to get a free connection. Differences, as aiohttp has fewer kinds of timeouts:

    - getting a free connection and opening it share one limit (pool + connect timeouts; none
      when either is None); opening alone has the connect timeout;
    - writing has no timeout of its own (the read timeout starts once the request is written),
      as HTTPXRequest has no overall limit: a large upload on a slow link is never cut short.
      `write_timeout` and `media_write_timeout` are accepted for PTB's API and unused.

    Requests without files carry their parameters as a JSON body (the Bot API's
    application/json), not url-encoded. Like httpx: proxy settings are taken from the
    environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY; credentials in the proxy's URL or in
    ~/.netrc), read once per server rather than before every request (aiohttp takes no
    ALL_PROXY and no https:// proxy); file names are sent as UTF-8, redirects are not followed,
    and idle connections are dropped after 5 s, before servers close them.
    """

    def __init__(
        self,
        *,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        # Base URL -> the environment's proxy for that server, if any.
        self._proxies: dict[str, _Proxy] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=5),
                headers={"User-Agent": self.USER_AGENT},
                skip_auto_headers=("Accept-Encoding",),
                # Not trust_env: aiohttp would then read the environment and ~/.netrc in a
                # thread before every request (a fifth of the bot's busy time); see _proxy_for.
                trust_env=False,
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        read = self._read_timeout if _is_default(read_timeout) else read_timeout
        connect = self._connect_timeout if _is_default(connect_timeout) else connect_timeout
        pool = self._pool_timeout if _is_default(pool_timeout) else pool_timeout
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        data: Any = None
        headers = None
        if files:
            assert request_data is not None
            form = aiohttp.FormData(request_data.json_parameters, quote_fields=False)
            for name, (file_name, content, mime_type) in files.items():
                form.add_field(name, content, filename=file_name, content_type=mime_type)
            data = form
        elif request_data is not None and request_data.parameters:
            # A JSON body, which the Bot API takes for every method but uploads: url-encoding
            # long texts and keyboards character by character cost more than json.dumps.
            data = json.dumps(request_data.parameters).encode()
            headers = _JSON
        proxy = self._proxy_for(url)
        proxy_headers = None
        if proxy.credentials is not None:
            # To the proxy: in the CONNECT of a TLS tunnel, else in the request itself.
            if proxy.tunnel:
                proxy_headers = {"Proxy-Authorization": proxy.credentials}
            else:
                headers = {**(headers or {}), "Proxy-Authorization": proxy.credentials}
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=proxy.address,
                proxy_headers=proxy_headers,
            ) as answer:
                return answer.status, await answer.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise TimedOut(
                "No connection to the Bot API in time: the request was not sent."
            ) from exc
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            # Some of aiohttp's messages quote the URL, which holds the token.
            reason = str(exc).replace(url, api_method(url))
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {reason}") from exc

    def _proxy_for(self, url: str) -> _Proxy:
        """The environment's proxy for this URL's server, read on the first request to it."""
        server = url.rpartition("/")[0]  # the base URL: a method's name follows
        proxy = self._proxies.get(server)
        if proxy is None:
            target = URL(url)
            try:
                address, credentials = get_env_proxy_for_url(target)
            except LookupError:  # no proxy for this scheme, or NO_PROXY names the host
                proxy = _Proxy(None, None, False)
            else:
                proxy = _Proxy(
                    address,
                    credentials.encode() if credentials else None,
                    tunnel=target.scheme in ("https", "wss"),
                )
            self._proxies[server] = proxy
        return proxy


class _Proxy(NamedTuple):
    address: URL | None
    credentials: str | None  # the Proxy-Authorization value
    tunnel: bool  # a TLS target, reached through a CONNECT tunnel


_JSON = {"Content-Type": "application/json"}


def _is_default(value: Any) -> bool:
    """PTB's "not given" marker: the timeout set on this request object applies."""
    return isinstance(value, type(BaseRequest.DEFAULT_NONE))


class ResilientRequest(AiohttpRequest):
    """AiohttpRequest that records successes and retries what is safe to retry (see module)."""

    def __init__(
        self,
        *,
        health: BotApiHealth | None = None,
        retry_rate_limits: bool = False,
        max_retries: int = MAX_RETRIES,
        **request_options: Any,
    ) -> None:
        super().__init__(**request_options)
        self.health = health
        self.retry_rate_limits = retry_rate_limits
        self.max_retries = max_retries

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        name = api_method(url)
        retries = 0 if _single_attempt.get() or name in NEVER_RETRIED else self.max_retries
        attempt = 0
        while True:
            try:
                code, payload = await super().do_request(
                    url,
                    method,
                    request_data=request_data,
                    read_timeout=read_timeout,
                    write_timeout=write_timeout,
                    connect_timeout=connect_timeout,
                    pool_timeout=pool_timeout,
                )
            except NetworkError as exc:  # TimedOut included
                never_sent = isinstance(exc.__cause__, NOT_SENT)
                if attempt >= retries or not (never_sent or name in REPEATABLE):
                    raise
                log.info(
                    "Bot API %s: %s, retry %d of %d", name, type(exc).__name__, attempt + 1, retries
                )
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            if HTTPStatus.OK <= code < HTTPStatus.MULTIPLE_CHOICES:
                if self.health is not None:
                    self.health.record_success()
                return code, payload
            if (
                code >= HTTPStatus.INTERNAL_SERVER_ERROR
                and (name in REPEATABLE or code in NOT_CARRIED_OUT)
                and attempt < retries
            ):
                log.info("Bot API %s: status %d, retry %d of %d", name, code, attempt + 1, retries)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            if code == HTTPStatus.TOO_MANY_REQUESTS and self.retry_rate_limits:
                wait = _retry_after(payload)
                if wait is not None and wait <= MAX_RETRY_AFTER_S and attempt < retries:
                    log.info("Bot API %s: flood limit, waiting %.0f s", name, wait)
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            if code == HTTPStatus.BAD_REQUEST:
                # Telegram's description names what is wrong ("chat not found", "message is
                # not modified"), never the parameters; those are never logged.
                description = _description(payload)[:200]
                level = logging.DEBUG if "not modified" in description else logging.WARNING
                log.log(level, "Bot API %s refused the request (400): %s", name, description)
            # Any other answer becomes python-telegram-bot's exception for its status.
            return code, payload
