"""What the five playground chats show, kept from the emulator's event feed.

One task long-polls the emulator's ``/_emulator/events`` and turns each event of a playground
chat into what the page needs (text and entities, buttons, venue as a map link, photo and
document addresses). The current messages of each chat are kept, so that the server can send a
snapshot to a page that connects and check that a pressed button or a downloaded file is one
the bot really showed there. Subscribers (the pages' event streams) get every change in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from emulator.client import EmulatorClient, EmulatorError

from offline.demo import map_link
from offline.playground.chats import CHATS, CHATS_BY_ID

log = logging.getLogger(__name__)

POLL_S = 20.0  # long poll on the emulator; also how often the clock state is refreshed
RETRY_S = 0.5
RESTART_S = 1.0  # after an unexpected failure of the follower, before following again
SUBSCRIBER_QUEUE = 10_000  # a page that far behind is dropped (it reconnects with a snapshot)
# Messages kept per chat, here and in the emulator (run.py gives it the same history limit):
# a button of a message trimmed here is refused (400) before the emulator could refuse it.
CHAT_HISTORY = 500
ENTITY_TYPES = frozenset(
    {"bold", "italic", "underline", "strikethrough", "code", "pre", "text_link", "url"}
)

PageEvent = dict[str, Any]


def page_message(key: str, payload: dict[str, Any], *, from_bot: bool) -> dict[str, Any]:
    """A Bot API message as the page draws it."""
    message: dict[str, Any] = {
        "message_id": payload["message_id"],
        "from": "bot" if from_bot else "user",
        "text": payload.get("text", payload.get("caption", "")),
        "entities": [
            {name: entity[name] for name in ("type", "offset", "length", "url") if name in entity}
            for entity in payload.get("entities") or payload.get("caption_entities") or []
            if entity.get("type") in ENTITY_TYPES
        ],
        "edited": "edit_date" in payload,
        "buttons": [
            [
                {"text": button["text"], "url": button["url"]}
                if "url" in button
                else {"text": button["text"], "data": button.get("callback_data", "")}
                for button in row
                if "url" in button or "callback_data" in button
            ]
            for row in payload.get("reply_markup", {}).get("inline_keyboard", [])
        ],
    }
    if "venue" in payload:
        venue = payload["venue"]
        location = venue.get("location", {})
        message["venue"] = {
            "title": venue.get("title", ""),
            "address": venue.get("address", ""),
            "map": map_link(location.get("latitude", 0.0), location.get("longitude", 0.0)),
        }
    elif "location" in payload:
        location = payload["location"]
        message["venue"] = {
            "title": "",
            "address": "",
            "map": map_link(location["latitude"], location["longitude"]),
        }
    if "photo" in payload:
        largest = payload["photo"][-1]
        message["photo"] = {
            "url": f"/api/chats/{key}/files/{largest['file_id']}",
            "width": largest["width"],
            "height": largest["height"],
        }
    if "document" in payload:
        document = payload["document"]
        message["document"] = {
            "url": f"/api/chats/{key}/files/{document['file_id']}",
            "name": document.get("file_name") or "document",
        }
    return message


class ChatFeed:
    """The playground chats as the emulator's events leave them, and the pages following them."""

    def __init__(
        self,
        client: EmulatorClient,
        on_batch: Callable[[], Awaitable[object]] | None = None,
        *,
        history_limit: int = CHAT_HISTORY,
    ) -> None:
        self._client = client
        self.history_limit = history_limit  # the emulator's too (see run.py)
        self._on_batch = on_batch  # after each long poll (the clock state may have changed)
        self._after = 0
        self.messages: dict[str, OrderedDict[int, dict[str, Any]]] = {
            chat.key: OrderedDict() for chat in CHATS
        }
        self._subscribers: set[asyncio.Queue[PageEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None

    # -- following the emulator ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the emulator's events are being followed (the page says "connected")."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Follows the emulator's events in a task, restarted if it ever fails."""
        self._task = asyncio.create_task(self._follow(), name="playground-feed")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A follower that died of a bug is logged, reported to the pages, and restarted:
        a page that shows no error while no message can arrive would mislead a rehearsal."""
        if task.cancelled() or task is not self._task:
            return
        log.error("the playground stopped following the bot", exc_info=task.exception())
        self.publish({"type": "feed", "alive": False})
        asyncio.get_running_loop().call_later(RESTART_S, self._restart, task)

    def _restart(self, dead: asyncio.Task[None]) -> None:
        if self._task is dead:  # not stopped meanwhile
            self.start()

    async def stop(self) -> None:
        """Stops following and ends every page's stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._subscribers:
            _end_stream(queue)
        self._subscribers.clear()

    async def _follow(self) -> None:
        first = True
        while True:
            try:
                events = await self._client.events(self._after, timeout=0 if first else POLL_S)
            except (aiohttp.ClientError, EmulatorError, TimeoutError):
                await asyncio.sleep(RETRY_S)  # the emulator is busy or stopping: try again
                continue
            if first:  # following (again): the pages may say so
                self.publish({"type": "feed", "alive": True})
                first = False
            for event in events:
                self._after = max(self._after, event.seq)
                try:
                    self.take(event.raw)
                except Exception:  # one odd event must not stop every later message
                    log.exception("playground: could not show event %s", event.seq)
            if self._on_batch is not None:
                try:
                    await self._on_batch()
                except Exception:  # the page's clock is a nicety: never stop the feed for it
                    log.warning("could not refresh the playground clock", exc_info=True)

    def take(self, event: dict[str, Any]) -> None:
        """Applies one emulator event to the chats and tells the pages."""
        chat = CHATS_BY_ID.get(event["chat_id"])
        if chat is None:
            return
        kind, source = event["kind"], event["source"]
        messages = self.messages[chat.key]
        if kind in ("message", "edit") and event.get("message"):
            if source == "user" and kind == "edit":
                return
            message = page_message(chat.key, event["message"], from_bot=source == "bot")
            messages[message["message_id"]] = message
            while len(messages) > self.history_limit:  # the emulator forgets them too
                messages.popitem(last=False)
            self.publish({"type": kind, "chat": chat.key, "message": message})
        elif kind == "delete" and source == "bot" and event.get("message_id") is not None:
            messages.pop(event["message_id"], None)
            self.publish({"type": "delete", "chat": chat.key, "message_id": event["message_id"]})
        elif kind == "callback_answer" and event.get("text"):
            self.publish(
                {
                    "type": "toast",
                    "chat": chat.key,
                    "text": event["text"],
                    "alert": bool(event.get("show_alert")),
                }
            )

    # -- pages -----------------------------------------------------------------------------

    def publish(self, event: PageEvent) -> None:
        """Queues the event for every page; one that is too far behind is let go (its stream
        ends, the page reconnects and gets a fresh snapshot) rather than slowing the rest."""
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                _end_stream(queue)

    def subscribe(self) -> tuple[dict[str, list[dict[str, Any]]], asyncio.Queue[PageEvent | None]]:
        """The chats as they are now and a queue of every change after this instant."""
        queue: asyncio.Queue[PageEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return self.snapshot(), queue

    def unsubscribe(self, queue: asyncio.Queue[PageEvent | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        """How many pages follow the chats now."""
        return len(self._subscribers)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every chat's messages as they are now: what a page draws when it (re)connects."""
        return {key: list(messages.values()) for key, messages in self.messages.items()}

    # -- what the page may ask for ---------------------------------------------------------

    def shows_button(self, key: str, message_id: int, data: str) -> bool:
        """Whether the bot's message in that chat shows, now, a button with that data."""
        message = self.messages[key].get(message_id)
        return (
            message is not None
            and message["from"] == "bot"
            and any(button.get("data") == data for row in message["buttons"] for button in row)
        )

    def file_in_chat(self, key: str, file_id: str) -> tuple[str, bool] | None:
        """(file name, is a photo) of a file a message of that chat carries, else None."""
        url = f"/api/chats/{key}/files/{file_id}"
        for message in self.messages[key].values():
            document = message.get("document")
            if document and document["url"] == url:
                return document["name"], False
            photo = message.get("photo")
            if photo and photo["url"] == url:
                return f"{file_id}.png", True
        return None


def _end_stream(queue: asyncio.Queue[PageEvent | None]) -> None:
    """Ends a page's stream, even when its queue is full (the oldest event makes room)."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(None)
