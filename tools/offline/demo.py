"""`capacity-bot demo`: try the bot in a terminal, offline, without a Telegram token.

The Bot API emulator runs in this process on 127.0.0.1, the real bot talks to it over HTTP with
the sample catalogue of Saint-Étienne on SQLite, and the person at the keyboard plays a resident:
what they type is sent as is, a number presses a button of the latest message that has buttons,
and `:user N` plays another resident. The bot's messages, edits, toasts, venues and files are
printed as they arrive.

With scripted input (stdin not a terminal), each line waits for the bot's whole answer before
the next one is read, so that `printf '/start\\n1\\n' | capacity-bot demo` always prints the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TextIO

import aiohttp
from emulator.client import Button, ChatEvent, ChatMessage, EmulatorClient, EmulatorError
from emulator.server import BotApiEmulator
from sqlalchemy.engine import make_url

from bot.clock import SystemClock
from bot.runtime.app import build_application
from bot.runtime.runner import running
from bot.services.workshops.catalogue_file import SAMPLE_CATALOGUE, load_catalogue
from bot.services.workshops.importer import import_catalogue
from bot.settings import Settings, load_settings
from storage.db import Database
from storage.migrate import upgrade_to_head

# First names of the residents, in the order `:user N` creates them (then "Resident N").
RESIDENT_NAMES = (
    "Amina",
    "Bernard",
    "Chloé",
    "Daniel",
    "Élodie",
    "Farid",
    "Gisèle",
    "Hugo",
    "Inès",
    "Jules",
    "Karima",
    "Lucien",
    "Maryam",
    "Noël",
    "Océane",
    "Pascal",
    "Rachida",
    "Sylvain",
    "Thi Lan",
    "Yacine",
)
DEFAULT_LANGUAGE_CODE = "fr"  # what a resident's Telegram app says when `:user N` gives none
USER_ID_BASE = 100_000  # resident N is Telegram user (and private chat) USER_ID_BASE + N
MAX_RESIDENT = 999
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})?$")

ANSWER_TIMEOUT_S = 8.0  # how long to wait for the bot to react to a line before moving on
QUIET_S = 0.5  # an answer is complete after this long without anything new from the bot...
QUIET_AFTER_TOAST_S = 1.5  # ...or this long after a toast, which usually comes before an edit
FEED_POLL_S = 10.0

BOLD, NORMAL = "\033[1m", "\033[22m"
DIM, RESET = "\033[2m", "\033[0m"
CLEAR_LINE = "\r\033[K"

HELP = """\
Type as the resident would:
  text or /commands   sent to the bot as is (try /start, /workshops, /mine, /help)
  a number, e.g. 2    presses button [2] of the latest message that has buttons
  :user N [lang]      play resident N (created on first use), e.g. :user 2, :user 3 en
  :who                who you are playing
  :help               this help
  :quit               leave (Ctrl-D and Ctrl-C work too)"""


def map_link(latitude: float, longitude: float) -> str:
    return f"https://www.openstreetmap.org/?mlat={round(latitude, 6)}&mlon={round(longitude, 6)}"


def styled_text(message: ChatMessage, *, bold: bool) -> str:
    """The message's plain text, with its bold spans in ANSI bold when ``bold`` is set."""
    text = message.text or ""
    entities = message.raw.get("entities") or message.raw.get("caption_entities") or []
    spans = [
        (entity["offset"], entity["offset"] + entity["length"])
        for entity in entities
        if entity.get("type") == "bold"
    ]
    if not bold or not spans:
        return text
    units = text.encode("utf-16-le")  # entity offsets count UTF-16 code units
    size = len(units) // 2
    in_bold = [False] * size
    for start, end in spans:
        for unit in range(max(start, 0), min(end, size)):
            in_bold[unit] = True
    parts: list[str] = []
    start = 0
    for unit in range(1, size + 1):
        if unit == size or in_bold[unit] != in_bold[start]:
            piece = units[2 * start : 2 * unit].decode("utf-16-le", errors="replace")
            parts.append(f"{BOLD}{piece}{NORMAL}" if in_bold[start] else piece)
            start = unit
    return "".join(parts)


def button_lines(rows: list[list[Button]], indent: str = "  ") -> list[str]:
    """Inline buttons numbered from 1 in reading order, one line per keyboard row."""
    lines: list[str] = []
    number = 0
    for row in rows:
        cells = []
        for button in row:
            number += 1
            label = f"{button.text} ↗" if button.url else button.text
            cells.append(f"[{number}] {label}")
        lines.append(indent + "   ".join(cells))
    return lines


def flat_buttons(message: ChatMessage) -> list[Button]:
    return [button for row in message.buttons for button in row]


@dataclass
class Resident:
    number: int
    first_name: str
    language_code: str | None
    shown: dict[int, ChatMessage] = field(default_factory=dict)  # as printed, latest last
    away: list[ChatEvent] = field(default_factory=list)  # arrived while another was played

    @property
    def user_id(self) -> int:
        return USER_ID_BASE + self.number

    @property
    def fields(self) -> dict[str, object]:
        """The Telegram user as the emulator's side API takes it."""
        fields: dict[str, object] = {"id": self.user_id, "first_name": self.first_name}
        if self.language_code:
            fields["language_code"] = self.language_code
        return fields

    def describe(self) -> str:
        language = self.language_code or "no language set"
        return f"{self.first_name} (resident {self.number}, {language})"

    def buttons_message(self) -> ChatMessage | None:
        """The message most recently printed that has inline buttons: numbers press these."""
        return next((m for m in reversed(self.shown.values()) if m.buttons), None)


class LineReader:
    """Lines of a stream read on a daemon thread, so that the event loop never blocks and a
    pending read never keeps the process alive (an executor thread would on Ctrl-C)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="demo-stdin", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                line: str | None = self._stream.readline() or None
            except (OSError, ValueError):
                line = None
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
            except RuntimeError:  # the loop is closed: the demo is over
                return
            if line is None:
                return

    async def readline(self) -> str | None:
        """The next line without its end, or None at end of input."""
        line = await self._queue.get()
        return None if line is None else line.rstrip("\r\n")


class Demo:
    """The terminal session: follows the emulator's events and plays the residents."""

    def __init__(self, client: EmulatorClient, out: TextIO, *, interactive: bool, color: bool):
        self.client = client
        self.out = out
        self.interactive = interactive  # stdin is a terminal: it echoes what is typed
        self.color = color
        self.residents: dict[int, Resident] = {}
        self.by_chat: dict[int, Resident] = {}
        self.current = self._resident(1, None)
        self._after = 0  # last event sequence number taken from the feed
        self._activity: dict[int, tuple[int, str]] = {}  # chat -> seq, kind of last bot event
        self._answered: dict[int, int] = {}  # chat -> seq of last bot event other than typing
        self._changed = asyncio.Event()
        self._prompt_shown = False
        self._tty_out = out.isatty()

    # -- output ----------------------------------------------------------------------------

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.color else text

    def _bold(self, text: str) -> str:
        return f"{BOLD}{text}{NORMAL}" if self.color else text

    def say(self, *lines: str) -> None:
        """Prints lines, first taking a shown prompt off its line, then showing it again."""
        if self._prompt_shown:
            self.out.write(CLEAR_LINE if self._tty_out else "\n")
        for line in lines:
            self.out.write(line + "\n")
        if self._prompt_shown:
            self.out.write(self.prompt())
        self.out.flush()

    def note(self, text: str) -> None:
        self.say(self._dim(f"  · {text}"))

    def prompt(self) -> str:
        return self._bold(f"{self.current.first_name} › ")

    def show_prompt(self) -> None:
        """The prompt, for a person typing (scripted lines are echoed after one instead)."""
        if self.interactive:
            self.out.write(self.prompt())
            self.out.flush()
            self._prompt_shown = True

    def echo(self, line: str) -> None:
        """Shows a line the resident typed (a terminal already shows it as it is typed)."""
        if self._prompt_shown:
            self._prompt_shown = False
        else:
            self.out.write(self.prompt() + line + "\n")
            self.out.flush()

    def end_line(self) -> None:
        """Leaves the prompt's line, if one is waiting for input (end of input, Ctrl-C)."""
        if self._prompt_shown:
            self._prompt_shown = False
            self.out.write("\n")
            self.out.flush()

    def render(self, event: ChatEvent) -> list[str]:
        """How a bot event looks in the terminal (no lines: nothing to show)."""
        if event.kind in ("message", "edit") and event.message is not None:
            return self.render_message(event.message, updated=event.kind == "edit")
        if event.kind == "callback_answer":
            if event.url:
                return [self._dim(f"  ↗ opens {event.url}")]
            if not event.text:
                return []
            if event.show_alert:
                return ["", f"  ⚠️  {event.text}"]
            return [self._dim(f"  💬 {event.text}")]
        if event.kind == "delete":
            return [self._dim("  (the bot deleted one of its messages)")]
        return []  # typing... and the like

    def render_message(self, message: ChatMessage, *, updated: bool) -> list[str]:
        header = "🤖 bot (updated)" if updated else "🤖 bot"
        lines = ["", self._bold(header) if not updated else self._dim(header)]
        if message.venue is not None:
            location = message.venue.get("location", {})
            lines += [
                f"📍 {message.venue.get('title', '')}",
                f"   {message.venue.get('address', '')}",
                f"   {map_link(location.get('latitude', 0.0), location.get('longitude', 0.0))}",
            ]
        elif message.location is not None:
            latitude, longitude = message.location["latitude"], message.location["longitude"]
            lines.append(f"📍 {latitude:.5f}, {longitude:.5f}  {map_link(latitude, longitude)}")
        if message.document is not None:
            name = message.document.get("file_name") or "document"
            size = message.document.get("size")
            lines.append(f"📎 {name}" + (f" ({size} bytes)" if size else ""))
        if message.photo is not None:
            lines.append(f"🖼  photo {message.photo['width']}×{message.photo['height']}")
        if message.text:
            lines += styled_text(message, bold=self.color).split("\n")
        lines += button_lines(message.buttons)
        if message.keyboard:
            lines.append(
                self._dim("  keyboard (type one): ")
                + "  ".join(f"[{text}]" for row in message.keyboard for text in row)
            )
        return lines

    # -- following the bot -----------------------------------------------------------------

    async def follow(self) -> None:
        """Takes every event from the emulator, printing the current resident's."""
        while True:
            try:
                events = await self.client.events(self._after, timeout=FEED_POLL_S)
            except (aiohttp.ClientError, EmulatorError, TimeoutError):
                await asyncio.sleep(0.5)  # the emulator is stopping, or busy: try again
                continue
            for event in events:
                self._after = max(self._after, event.seq)
                self._take(event)
            if events:
                self._changed.set()
                self._changed = asyncio.Event()

    def _take(self, event: ChatEvent) -> None:
        resident = self.by_chat.get(event.chat_id)
        if event.source != "bot" or resident is None:
            return
        self._activity[event.chat_id] = (event.seq, event.kind)
        if event.kind != "action":
            self._answered[event.chat_id] = event.seq
        if resident is self.current:
            self._show(resident, event)
        elif self.render(event):
            resident.away.append(event)

    def _show(self, resident: Resident, event: ChatEvent) -> None:
        if event.kind in ("message", "edit") and event.message is not None:
            resident.shown.pop(event.message.message_id, None)
            resident.shown[event.message.message_id] = event.message
        elif event.kind == "delete" and event.message_id is not None:
            resident.shown.pop(event.message_id, None)
        lines = self.render(event)
        if lines:
            self.say(*lines)

    async def _wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait_answer(self, chat_id: int, after: int) -> None:
        """Waits until the bot answered an action of sequence number ``after`` in the chat and
        then stayed quiet, so that a several-message answer is printed in full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_TIMEOUT_S
        while self._answered.get(chat_id, 0) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.note("the bot has not answered (yet)")
                return
            await self._wait_change(remaining)
        while True:
            seen = self._activity.get(chat_id)
            quiet = QUIET_AFTER_TOAST_S if seen and seen[1] == "callback_answer" else QUIET_S
            quiet_until = loop.time() + quiet
            while (remaining := quiet_until - loop.time()) > 0 and seen == self._activity.get(
                chat_id
            ):
                await self._wait_change(remaining)
            if seen == self._activity.get(chat_id):
                return

    # -- acting as a resident --------------------------------------------------------------

    def _resident(self, number: int, language_code: str | None) -> Resident:
        resident = self.residents.get(number)
        if resident is None:
            name = (
                RESIDENT_NAMES[number - 1]
                if number <= len(RESIDENT_NAMES)
                else f"Resident {number}"
            )
            resident = Resident(number, name, language_code or DEFAULT_LANGUAGE_CODE)
            self.residents[number] = resident
            self.by_chat[resident.user_id] = resident
        elif language_code:
            resident.language_code = language_code
        return resident

    async def send(self, text: str) -> None:
        resident = self.current
        path = f"/chats/{resident.user_id}/messages"
        try:
            answer = await self.client.call(
                "POST", path, json={"from": resident.fields, "text": text}
            )
        except EmulatorError as error:
            self.note(f"the message was not sent: {error}")
            return
        await self.wait_answer(resident.user_id, answer["seq"])

    async def press(self, number: int) -> None:
        resident = self.current
        message = resident.buttons_message()
        if message is None:
            self.note("there is no button to press yet; type /start")
            return
        buttons = flat_buttons(message)
        if not 1 <= number <= len(buttons):
            self.note(f"no button [{number}] here: choose from 1 to {len(buttons)}")
            return
        button = buttons[number - 1]
        if button.callback_data is None:
            self.note(f"“{button.text}” opens {button.url}" if button.url else "nothing to press")
            return
        self.say(self._dim(f"  (pressed “{button.text}”)"))
        request = {
            "from": resident.fields,
            "callback_data": button.callback_data,
            "message_id": message.message_id,
        }
        try:
            answer = await self.client.call(
                "POST", f"/chats/{resident.user_id}/callbacks", json=request
            )
        except EmulatorError as error:
            self.note(f"that button cannot be pressed any more ({error.body.get('error', error)})")
            return
        await self.wait_answer(resident.user_id, answer["seq"])

    def switch(self, number: int, language_code: str | None) -> None:
        is_new = number not in self.residents
        resident = self._resident(number, language_code)
        self.current = resident
        self.say("", self._bold(f"── You are now {resident.describe()} ──"))
        if is_new:
            self.note("a new resident: send /start to begin")
            return
        away, resident.away = resident.away, []
        if away:
            self.note("while you were away, the bot sent:")
            for event in away:
                self._show(resident, event)
        else:
            self.note("nothing new from the bot since you left")

    async def handle(self, line: str) -> bool:
        """Acts on one typed line; False when the person wants to leave."""
        text = line.strip()
        if not text:
            return True
        if text.isdecimal():
            await self.press(int(text))
            return True
        if text.startswith(":"):
            return self.command(text)
        await self.send(line.strip())
        return True

    def command(self, text: str) -> bool:
        name, *args = text[1:].split() or ["help"]
        if name in ("quit", "q", "exit"):
            return False
        if name in ("help", "h", "?"):
            self.say(HELP)
        elif name == "who":
            played = ", ".join(
                r.describe() for r in self.residents.values() if r is not self.current
            )
            self.note(f"you are {self.current.describe()}")
            if played:
                self.note(f"also played: {played}")
        elif name in ("user", "u"):
            self._user_command(args)
        else:
            self.note(f"unknown command :{name}; type :help")
        return True

    def _user_command(self, args: list[str]) -> None:
        usage = "usage: :user N [language], e.g. :user 2 or :user 3 en"
        if not args or len(args) > 2 or not args[0].isdecimal():
            self.note(usage)
            return
        number = int(args[0])
        language = args[1] if len(args) == 2 else None
        if not 1 <= number <= MAX_RESIDENT:
            self.note(f"residents are numbered from 1 to {MAX_RESIDENT}")
        elif language is not None and not _LANGUAGE_CODE.match(language):
            self.note(f"{language!r} is not a language code; the bot speaks fr, en and ar")
        else:
            self.switch(number, language.lower() if language else None)

    async def session(self, reader: LineReader) -> None:
        """Resident 1 says /start, then each line is played in turn until :quit or the end."""
        self.echo("/start")
        await self.send("/start")
        while True:
            self.show_prompt()
            line = await reader.readline()
            if line is None:
                self.end_line()
                return
            self.echo(line)
            if not await self.handle(line):
                return


def _banner(database_url: str, workshops: int) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        kept = f"{url.database} (delete it to start afresh)"
    else:
        kept = url.render_as_string(hide_password=True)
    return f"""\
capacity-bot demo: the workshop bot of Saint-Étienne, offline in this terminal.
You play a resident; {workshops} sample workshops are in the coming weeks.
Type text or /commands as is · a number presses that button · :user 2 plays another \
resident · :help · :quit
Demo data: {kept}"""


async def prepare_database(database_url: str, settings: Settings, today: date) -> int:
    """Migrates an offline database and (re)imports the sample catalogue; the workshop count.

    Shared by the demo and the playground, so both show the same Saint-Étienne catalogue.
    """
    catalogue = load_catalogue(
        SAMPLE_CATALOGUE, default_language=settings.default_language, tz=settings.tz, today=today
    )
    database = Database(database_url)
    try:
        await upgrade_to_head(database.engine)
        await import_catalogue(
            database, catalogue, clock=SystemClock(), source_name=SAMPLE_CATALOGUE.name
        )
    finally:
        await database.dispose()
    return len(catalogue.workshops)


def offline_settings(settings: Settings, **values: object) -> Settings:
    """The operator's settings with ``values`` on top, without their tokens.

    An offline run (demo, playground) must never reach Telegram with a real token: its bot
    gets the emulator's demo token and address through ``values``.
    """
    return load_settings(**{**settings.model_dump(exclude={"bot_token", "demo_token"}), **values})


def quiet_logs() -> None:
    """Only warnings and errors: the terminal belongs to the conversation (or the banner)."""
    for logger in (logging.getLogger(), logging.getLogger("telegram")):
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def on_signals(callback: Callable[[], object], *signums: signal.Signals) -> Callable[[], None]:
    """Calls ``callback`` on these signals (where the loop supports it); returns the undo.

    Offline runs stop cleanly on Ctrl-C (and SIGTERM) instead of dying in the middle of a send.
    """
    loop = asyncio.get_running_loop()
    installed = []
    for signum in signums:
        try:
            loop.add_signal_handler(signum, callback)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append(signum)

    def undo() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return undo


async def run_demo(settings: Settings, database_url: str, *, today: date) -> None:
    """Runs the emulator, the bot and the terminal session until :quit, Ctrl-D or Ctrl-C."""
    quiet_logs()
    out = sys.stdout
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError):
                stream.reconfigure(errors="replace")
    token = settings.demo_token.get_secret_value()
    demo_settings = offline_settings(settings, database_url=database_url)
    workshops = await prepare_database(demo_settings.database_url, demo_settings, today)
    async with BotApiEmulator(token=token) as emulator:
        demo_settings = offline_settings(
            demo_settings,
            bot_token=token,
            telegram_base_url=emulator.base_url,
            rate_limit_per_second=0,
        )
        async with (
            running(build_application(demo_settings)),
            EmulatorClient(emulator.side_url) as client,
        ):
            demo = Demo(
                client,
                out,
                interactive=sys.stdin.isatty(),
                color=out.isatty() and not os.environ.get("NO_COLOR"),
            )
            out.write(_banner(demo_settings.database_url, workshops) + "\n")
            out.flush()
            follower = asyncio.create_task(demo.follow())
            session = asyncio.create_task(demo.session(LineReader(sys.stdin)))
            undo = on_signals(session.cancel, signal.SIGINT)
            try:
                await session
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not session.cancelled() or (current is not None and current.cancelling()):
                    raise
            finally:
                undo()
                demo.end_line()
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            out.write("Bye! Stopping the bot…\n")
            out.flush()
