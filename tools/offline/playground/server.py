"""The playground's web server: the page, its strings, and a checked relay to the emulator.

It listens on 127.0.0.1 only. The page never talks to the emulator: every request names one
of the five playground chats and is checked here (text length, buttons the bot really showed
in that chat, files of that chat, travel targets) before it is relayed to the side API; a bad
request gets 400 and a JSON error, and changes nothing. New messages reach the page as
server-sent events: a snapshot of every chat first, then each change.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from emulator.client import EmulatorClient, EmulatorError

from bot.settings import ConfigurationError
from bot.text.i18n import LANGUAGE_NAMES, RTL_LANGUAGES, load_catalog
from locales import LOCALES_DIR
from offline.playground.chats import CHATS, CHATS_BY_KEY, PlaygroundChat
from offline.playground.feed import CHAT_HISTORY, ChatFeed, PageEvent
from offline.playground.time_machine import KINDS, TimeMachine, TravelRefused

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_TEXT_UTF16 = 4096  # Telegram's limit for a message, in UTF-16 code units
MAX_BODY_BYTES = 64 * 1024
HEARTBEAT_S = 15.0
STATIC_FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DEFAULT_UI_LANGUAGE = "fr"


class PlaygroundError(web.HTTPBadRequest):
    """A refused request: 400 with ``{"error": ..., "code": ...}`` (the page shows ``code``)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(
            text=json.dumps({"error": message, "code": code, **extra}),
            content_type="application/json",
        )


def _static(name: str) -> bytes:
    """A file of the page, from the installed package (no build step, no internet)."""
    try:
        return (resources.files("offline.playground") / "static" / name).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"playground page: cannot read tools/offline/playground/static/{name} "
            f"({exc.strerror or exc}); expected the package's static files "
            "(reinstall it: pip install -e .)"
        ) from None


def ui_strings(language: str) -> dict[str, str]:
    """The page's strings in one language (locales/<language>/playground.yaml)."""
    catalog = load_catalog(LOCALES_DIR / language / "playground.yaml")
    return {key: text for key, text in catalog.items() if isinstance(text, str)}


def _ui_json(language: str) -> dict[str, Any]:
    return {
        "language": language,
        "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
        "languages": LANGUAGE_NAMES,
        "strings": ui_strings(language),
        "chats": [
            {"key": chat.key, "writable": chat.writable, "name": chat.first_name} for chat in CHATS
        ],
    }


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (an emoji outside the BMP is two units, not one)."""
    return len(text.encode("utf-16-le")) // 2


class PlaygroundServer:
    """The aiohttp application and its lifecycle, over one emulator client and time machine."""

    def __init__(
        self,
        client: EmulatorClient,
        time_machine: TimeMachine,
        *,
        history_limit: int = CHAT_HISTORY,
    ) -> None:
        self._client = client
        self._time = time_machine
        self.feed = ChatFeed(client, on_batch=self.refresh_clock, history_limit=history_limit)
        self._ui = {language: _ui_json(language) for language in LANGUAGE_NAMES}
        self._pages = {name: _static(name) for name in STATIC_FILES}
        # The page starts with the default language's strings in it: it can say what goes
        # wrong (the stream, a later language switch) without a first request that may fail.
        initial = json.dumps(self._ui[DEFAULT_UI_LANGUAGE], ensure_ascii=False)
        self._pages["index.html"] = _static("index.html").replace(
            b"<!-- ui -->",
            b'<script id="ui-initial" type="application/json">'
            + initial.replace("<", "\\u003c").encode()
            + b"</script>",
        )
        self._clock_shown: dict[str, Any] | None = None
        self._runner: web.AppRunner | None = None
        self._files: aiohttp.ClientSession | None = None  # downloads from the emulator
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/static/{name}", self.static),
                web.get("/api/ui/{language}", self.ui),
                web.get("/api/events", self.events),
                web.get("/api/clock", self.clock),
                web.post("/api/travel", self.travel),
                web.post("/api/chats/{key}/messages", self.send_text),
                web.post("/api/chats/{key}/callbacks", self.press),
                web.get("/api/chats/{key}/files/{file_id}", self.download),
            ]
        )
        return app

    async def start(self, port: int) -> None:
        """Serves on 127.0.0.1:``port`` (0: a free port, see ``port``)."""
        self.feed.start()
        self._files = aiohttp.ClientSession()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, port).start()
        except OSError:
            await runner.cleanup()
            await self.stop()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        await self.feed.stop()  # ends the pages' streams first, so that cleanup is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._files is not None:
            await self._files.close()
            self._files = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    # -- checks ----------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Only this machine's names in Host (no DNS rebinding), JSON for every API error,
        and a logged JSON 500 for a bug (the page shows its error text, not a blank)."""
        if request.host.rsplit(":", 1)[0] not in LOCAL_HOSTS:
            raise PlaygroundError("bad_host", "the playground answers on 127.0.0.1 only")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json" or not request.path.startswith("/api/"):
                raise
            return web.json_response(
                {"error": exc.reason, "code": _HTTP_CODES.get(exc.status, "bad_request")},
                status=exc.status,
            )
        except Exception:
            log.exception("playground: %s %s failed", request.method, request.path)
            return web.json_response(
                {"error": "internal error (see the playground's log)", "code": "internal"},
                status=500,
            )

    @staticmethod
    def _chat(request: web.Request) -> PlaygroundChat:
        chat = CHATS_BY_KEY.get(request.match_info["key"])
        if chat is None:
            raise PlaygroundError("unknown_chat", "unknown chat; one of: " + _keys())
        return chat

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise PlaygroundError("bad_request", "the body must be JSON (application/json)")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PlaygroundError("bad_request", "the body must be JSON") from None
        if not isinstance(body, dict):
            raise PlaygroundError("bad_request", "the body must be a JSON object")
        return body

    # -- the page --------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._pages["index.html"],
            content_type="text/html",
            charset="utf-8",
            headers=_NO_STORE,
        )

    async def static(self, request: web.Request) -> web.Response:
        """The page's script and style sheet, read once at start (only the known names)."""
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._pages[name], content_type=STATIC_FILES[name], charset="utf-8"
        )

    async def ui(self, request: web.Request) -> web.Response:
        """The page's strings in one language, with its direction: the page has none built in,
        so that every word lives in the locale files like the bot's own."""
        language = request.match_info["language"]
        if language not in self._ui:
            raise PlaygroundError("unknown_language", f"languages: {', '.join(LANGUAGE_NAMES)}")
        return web.json_response(self._ui[language])

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot of every chat and the clock, then each change."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        snapshot, queue = self.feed.subscribe()
        try:
            clock = await self._time.state()
            await _send_event(
                response,
                {
                    "type": "snapshot",
                    "chats": snapshot,
                    "clock": clock,
                    "alive": self.feed.alive,
                    "history_limit": self.feed.history_limit,
                },
            )
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": still here\n\n")
                    continue
                if event is None:
                    break
                await _send_event(response, event)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.feed.unsubscribe(queue)
        return response

    # -- acting in a chat ------------------------------------------------------------------

    async def send_text(self, request: web.Request) -> web.Response:
        """Text typed in a chat, sent as that chat's person (checked: chat, length)."""
        chat = self._chat(request)
        body = await self._body(request)
        if not chat.writable:
            raise PlaygroundError("read_only_chat", "nobody writes in the facilitators' channel")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise PlaygroundError("empty_text", "text is required")
        if utf16_length(text) > MAX_TEXT_UTF16:
            raise PlaygroundError("text_too_long", f"at most {MAX_TEXT_UTF16} characters")
        answer = await self._relay(
            f"/chats/{chat.chat_id}/messages", {"from": chat.user, "text": text}
        )
        return web.json_response({"message_id": answer["message_id"]})

    async def press(self, request: web.Request) -> web.Response:
        """A press of a button the bot shows now on its message in that chat, and no other:
        forged callback data never reaches the bot."""
        chat = self._chat(request)
        body = await self._body(request)
        message_id, data = body.get("message_id"), body.get("data")
        if (
            isinstance(message_id, bool)
            or not isinstance(message_id, int)
            or not isinstance(data, str)
            or not self.feed.shows_button(chat.key, message_id, data)
        ):
            raise PlaygroundError(
                "unknown_button", "no such button on that message of the bot in this chat"
            )
        await self._relay(
            f"/chats/{chat.chat_id}/callbacks",
            {"from": chat.user, "message_id": message_id, "callback_data": data},
        )
        return web.json_response({"ok": True})

    async def download(self, request: web.Request) -> web.Response:
        """A file a message of that chat carries: a chart inline, a document as an attachment
        with its name (the emulator's file ids are never served for another chat)."""
        chat = self._chat(request)
        file_id = request.match_info["file_id"]
        found = self.feed.file_in_chat(chat.key, file_id)
        if found is None:
            raise PlaygroundError("unknown_file", "no such file in this chat")
        name, is_photo = found
        data = await self._file_bytes(file_id)
        content_type = "image/png" if is_photo else _guess_type(name)
        disposition = "inline" if is_photo else "attachment"
        return web.Response(
            body=data,
            content_type=content_type,
            headers={"Content-Disposition": _disposition(disposition, name)},
        )

    async def _file_bytes(self, file_id: str) -> bytes:
        """The file's bytes as stored (the client's download would decode a JSON file)."""
        url = f"{self._client.side_url}/_emulator/files/{quote(file_id)}"
        assert self._files is not None
        async with self._files.get(url) as response:
            if response.status != 200:
                raise web.HTTPBadGateway(
                    text=json.dumps({"error": "the emulator lost the file", "code": "emulator"}),
                    content_type="application/json",
                )
            return await response.read()

    async def _relay(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = await self._client.call("POST", path, json=body)
            return answer
        except EmulatorError as exc:
            raise _emulator_failed(exc) from None

    # -- time travel -----------------------------------------------------------------------

    async def clock(self, request: web.Request) -> web.Response:
        return web.json_response(await self._time.state())

    async def travel(self, request: web.Request) -> web.Response:
        kind = (await self._body(request)).get("to")
        if kind not in KINDS:
            raise PlaygroundError("unknown_travel", "to: one of " + ", ".join(sorted(KINDS)))
        try:
            await self._time.travel(kind)
        except TravelRefused as exc:
            raise PlaygroundError(
                "no_target", "nowhere to travel to", reason=exc.reason, params=exc.params
            ) from None
        return web.json_response(await self.refresh_clock(force=True))

    async def refresh_clock(self, *, force: bool = False) -> dict[str, Any]:
        """Tells the pages about the clock when the targets or the offset changed."""
        state = await self._time.state()
        shown = {key: value for key, value in state.items() if key != "now"}
        if force or shown != self._clock_shown:
            self._clock_shown = shown
            self.feed.publish({"type": "clock", "clock": state})
        return state


_NO_STORE = {"Cache-Control": "no-store"}
_HTTP_CODES = {404: "not_found", 405: "bad_request", 413: "too_large"}
_TYPES = {".ics": "text/calendar", ".csv": "text/csv", ".json": "application/json"}


def _keys() -> str:
    return ", ".join(chat.key for chat in CHATS)


def _guess_type(name: str) -> str:
    return next(
        (kind for suffix, kind in _TYPES.items() if name.lower().endswith(suffix)),
        "application/octet-stream",
    )


def _disposition(kind: str, name: str) -> str:
    """Content-Disposition with the name in ASCII and in UTF-8 (RFC 6266)."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def _emulator_failed(exc: EmulatorError) -> web.HTTPException:
    return web.HTTPBadGateway(
        text=json.dumps({"error": str(exc), "code": "emulator"}), content_type="application/json"
    )


async def _send_event(response: web.StreamResponse, event: PageEvent) -> None:
    await response.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
