"""A round-robin reverse proxy on 127.0.0.1, in front of several webhook instances of the bot.

It plays what nginx's `upstream` (or Caddy's several `reverse_proxy` addresses) does in
production (README "Scaling out"), so that a test can run the supported set-up with real
processes:

- each request (method, path, body and headers, the secret token header included) goes to
  the next instance in turn, skipping those marked down;
- an instance whose answer fails (connection refused or dropped, 502, 503 from a bot that is
  stopping, 504) is marked down and the request goes to the next one at once, as nginx's
  `proxy_next_upstream` does;
- a health check (GET /health, every `check_every` seconds) marks an instance up once it
  answers 200 and down when it does not, as a load balancer's active checks do;
- when no instance takes a request, the answer is 502 Bad Gateway: Telegram keeps the update
  and delivers it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import aiohttp
from aiohttp import web

# Not forwarded: they describe one connection, not the request (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
FAILED_STATUSES = frozenset({502, 503, 504})
UPSTREAM_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 1.0


class RoundRobinProxy:
    """`url` spreads requests over `upstreams` (base URLs such as http://127.0.0.1:8081)."""

    def __init__(self, upstreams: list[str], *, check_every: float = 0.25) -> None:
        self.upstreams = [upstream.rstrip("/") for upstream in upstreams]
        self.check_every = check_every
        self.up = {upstream: False for upstream in self.upstreams}  # until a check says so
        self.answered: Counter[str] = Counter()  # 2xx answers, by instance
        self._turn = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._checks: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RoundRobinProxy:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
        )
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self.forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self._checks = asyncio.create_task(self._check_forever(), name="proxy-health-checks")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._checks is not None:
            self._checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checks
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _in_turn(self) -> list[str]:
        """Every instance, from the next one in turn: those marked up first."""
        start = self._turn % len(self.upstreams)
        self._turn += 1
        rotated = self.upstreams[start:] + self.upstreams[:start]
        return [u for u in rotated if self.up[u]] + [u for u in rotated if not self.up[u]]

    async def forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for upstream in self._in_turn():
            try:
                async with self._session.request(
                    request.method, upstream + request.rel_url.path_qs, data=body, headers=headers
                ) as reply:
                    content = await reply.read()
                    if reply.status in FAILED_STATUSES:
                        self.up[upstream] = False
                        continue
                    if 200 <= reply.status < 300:
                        self.answered[upstream] += 1
                    return web.Response(
                        status=reply.status,
                        body=content,
                        content_type=reply.content_type,
                    )
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.up[upstream] = False
        return web.Response(status=502, text="no instance answered")

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._check(upstream) for upstream in self.upstreams))
            await asyncio.sleep(self.check_every)

    async def _check(self, upstream: str) -> None:
        assert self._session is not None
        try:
            async with self._session.get(
                upstream + "/health", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
            ) as reply:
                self.up[upstream] = reply.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.up[upstream] = False
