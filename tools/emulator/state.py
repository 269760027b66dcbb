"""The emulated Telegram world: chats, messages, pending updates, the event log, limits, faults.

Everything lives on one instance (one per emulator) and runs on the event loop's thread, so
no locks are needed. Long polls wait on :class:`Signal`s that are notified when something new
happens, never on sleeps.

Memory stays bounded for long benchmarks: each chat keeps its last ``history_limit`` messages
and events, the global event log its last ``event_log_limit`` events, and message payloads are
shared between the chat history and the events that mention them rather than copied.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from bisect import bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from emulator.files import FileStore
from emulator.formatting import utf16_len
from emulator.limits import RateLimit, TrafficLog

COMMAND_PATTERN = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_event_seq = attrgetter("seq")


class ApiError(Exception):
    """A Bot API error answer: HTTP status, Telegram's description, optional retry delay."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


def poll_conflict() -> ApiError:
    """What Telegram answers a waiting getUpdates when another one comes: only one poller."""
    return ApiError(
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot "
        "instance is running",
    )


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


class Signal:
    """Wakes every waiter at once; each notification starts a fresh generation."""

    def __init__(self) -> None:
        self._generation: asyncio.Future[None] | None = None

    def notify(self) -> None:
        if self._generation is not None:
            if not self._generation.done():
                self._generation.set_result(None)
            self._generation = None

    async def wait(self, timeout: float) -> None:
        """Returns at the next notification or after ``timeout`` seconds, whichever is first."""
        if self._generation is None:
            self._generation = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._generation), timeout)
        except TimeoutError:
            pass


@dataclass(frozen=True, slots=True)
class MessageVersion:
    """One state of a message. Edits make a new version; events keep the one they saw."""

    payload: dict[str, Any]  # the Bot API Message object
    html: str | None = None  # the text as the bot sent it, when parse_mode was HTML
    keyboard: list[list[str]] | None = None  # reply keyboard shown with it ([] removes one)

    def to_json(self) -> dict[str, Any]:
        return {"message": self.payload, "html": self.html, "keyboard": self.keyboard}


@dataclass(slots=True)
class StoredMessage:
    from_bot: bool
    version: MessageVersion


@dataclass(slots=True)
class Event:
    """Something observable in a chat, numbered in one sequence across all chats."""

    seq: int
    chat_id: int
    kind: str  # message, edit, delete, callback_query, callback_answer, action, leave, block...
    source: str  # "bot" or "user"
    time: float
    message_id: int | None = None
    version: MessageVersion | None = None
    details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "seq": self.seq,
            "chat_id": self.chat_id,
            "kind": self.kind,
            "source": self.source,
            "time": self.time,
            "message_id": self.message_id,
        }
        if self.version is not None:
            body.update(self.version.to_json())
        if self.details:
            body.update(self.details)
        return body

    def mentions(self, needle: str) -> bool:
        """Whether the message text or caption, or the callback answer text, contains needle."""
        texts: list[str | None] = []
        if self.version is not None:
            payload = self.version.payload
            texts += [payload.get("text"), payload.get("caption")]
        if self.details:
            texts.append(self.details.get("text"))
        return any(needle in text for text in texts if text)


@dataclass
class InjectedFailure:
    status: int
    remaining: int
    retry_after: int | None = None
    description: str | None = None

    def to_error(self) -> ApiError:
        if self.status == 429:
            return too_many_requests(self.retry_after or 1)
        description = self.description or {
            400: "Bad Request: injected failure",
            403: "Forbidden: bot was blocked by the user",
            500: "Internal Server Error",
            502: "Bad Gateway",
        }.get(self.status, f"Error {self.status}")
        return ApiError(self.status, description, retry_after=self.retry_after)


class Chat:
    """One chat's current messages (edits applied, deletions removed) and its event history."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info  # the Bot API Chat object
        self.id: int = info["id"]
        self.blocked = False  # the user blocked the bot (private chats)
        self.bot_is_member = True  # false once the bot left (groups and channels)
        # Ordered by message_id; an OrderedDict drops the oldest in O(1) once over the limit.
        self.messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self.next_message_id = 1
        self.events: list[Event] = []
        self.signal = Signal()

    @property
    def type(self) -> str:
        kind: str = self.info["type"]
        return kind

    def events_after(self, seq: int) -> Iterator[Event]:
        start = bisect_right(self.events, seq, key=_event_seq)
        return itertools.islice(self.events, start, None)

    def latest_keyboard_message(self) -> StoredMessage | None:
        for message in reversed(self.messages.values()):
            if message.from_bot and "reply_markup" in message.version.payload:
                return message
        return None


def _trim(history: list[Any], limit: int) -> None:
    """Drops the oldest half-excess at once, so trimming costs O(1) per append on average."""
    if len(history) > 2 * limit:
        del history[: len(history) - limit]


@dataclass
class Stats:
    requests: int = 0
    methods: Counter[str] = field(default_factory=Counter)  # successful calls
    errors: Counter[int] = field(default_factory=Counter)  # error answers by status
    rate_limited: int = 0  # 429s from the flood limits (injected ones not included)
    injected_failures: int = 0
    sends: Counter[str] = field(default_factory=Counter)  # accepted sends and edits
    webhook_deliveries: int = 0  # updates the bot's webhook accepted


class EmulatorState:
    """All the emulated state of one bot and its users."""

    def __init__(
        self,
        *,
        token: str,
        bot_username: str,
        bot_name: str,
        global_rate: float | None,
        per_chat_rate: float | None,
        history_limit: int,
        event_log_limit: int,
        per_chat_burst: int = 1,
    ) -> None:
        bot_id = token.split(":", 1)[0]
        self.token = token
        self.bot_user = {
            "id": int(bot_id) if bot_id.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
        }
        self.history_limit = history_limit
        self.event_log_limit = event_log_limit
        self.started = time.monotonic()
        self.global_limit = RateLimit(global_rate) if global_rate else None
        self.per_chat_burst = per_chat_burst
        self.per_chat_limit = RateLimit(per_chat_rate, per_chat_burst) if per_chat_rate else None
        self.failures: dict[str, deque[InjectedFailure]] = {}
        self.unreachable_until: float | None = None
        self.unreachable_drops_connections = False
        self.closing = False
        self.seq = 0
        self.next_update_id = 1  # like seq, survives resets: the bot's offset stays valid
        self.events_signal = Signal()
        self.updates_signal = Signal()
        self.polls_started = 0  # getUpdates calls so far: a waiting one ends when this moves on
        # Where webhook requests really go (the reverse proxy's part), see emulator/webhook.py.
        self.webhook_via: str | None = None
        self._new_world()

    def _new_world(self) -> None:
        """Everything users and the bot did; configuration and the event sequence survive."""
        self.users: dict[int, dict[str, Any]] = {}
        self.chats: dict[int, Chat] = {}
        self.chats_by_username: dict[str, Chat] = {}
        self.updates: deque[dict[str, Any]] = deque()
        self.events: list[Event] = []
        self.files = FileStore()
        self.open_callback_queries: dict[str, tuple[int, int]] = {}  # id → (chat id, user id)
        self.next_callback_query_id = 4_000_000_000_000_000_001
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_last_error: tuple[int, str] | None = None  # (unix time, message)
        self.stats = Stats()
        self.traffic = TrafficLog()

    def reset(self) -> None:
        self.wake_all()  # waiters on the old chats look again, in the new world
        self._new_world()
        self.failures.clear()
        self.unreachable_until = None

    def close(self) -> None:
        """Ends every pending long poll now (they answer with what they have)."""
        self.closing = True
        self.wake_all()

    def wake_all(self) -> None:
        self.updates_signal.notify()
        self.events_signal.notify()
        for chat in self.chats.values():
            chat.signal.notify()

    # -- clocks and configuration ------------------------------------------------------------

    def clock(self) -> float:
        """Seconds since the emulator started, on the monotonic clock."""
        return time.monotonic() - self.started

    def configure(self, changes: dict[str, float | None]) -> None:
        """Flood limits: ``global_rate`` and ``per_chat_rate`` in messages per second (None: no
        limit), ``per_chat_burst`` the messages one chat may get at once (see `RateLimit`: at
        most that many in any ``per_chat_burst / per_chat_rate`` seconds; 1, the default, is a
        strict one per second, Telegram tolerates short bursts: 3 is closer to it)."""
        if "global_rate" in changes:
            rate = changes["global_rate"]
            self.global_limit = RateLimit(rate) if rate else None
        if "per_chat_burst" in changes:
            self.per_chat_burst = int(changes["per_chat_burst"] or 1)
        if "per_chat_rate" in changes or "per_chat_burst" in changes:
            current = self.per_chat_limit.rate if self.per_chat_limit else None
            rate = changes.get("per_chat_rate", current)
            self.per_chat_limit = RateLimit(rate, self.per_chat_burst) if rate else None

    def set_unreachable(self, on: bool, seconds: float | None, drop_connections: bool) -> None:
        if not on:
            self.unreachable_until = None
            return
        self.unreachable_until = self.clock() + seconds if seconds is not None else float("inf")
        self.unreachable_drops_connections = drop_connections

    def is_unreachable(self) -> bool:
        return self.unreachable_until is not None and self.clock() < self.unreachable_until

    def inject_failures(self, method: str, failure: InjectedFailure) -> None:
        self.failures.setdefault(method.lower(), deque()).append(failure)

    def take_injected_failure(self, method: str) -> ApiError | None:
        queue = self.failures.get(method.lower())
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.popleft()
        self.stats.injected_failures += 1
        return failure.to_error()

    # -- chats and users -------------------------------------------------------------------

    def upsert_user(self, fields: dict[str, Any]) -> tuple[dict[str, Any], Chat]:
        """Registers or refreshes a user and returns it with its private chat."""
        user: dict[str, Any] = {
            "id": int(fields["id"]),
            "is_bot": False,
            "first_name": fields.get("first_name") or "Test",
        }
        for optional in ("last_name", "username", "language_code"):
            if fields.get(optional):
                user[optional] = fields[optional]
        if self.users.get(user["id"]) != user:
            self.users[user["id"]] = user
        info = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        for optional in ("last_name", "username"):
            if optional in user:
                info[optional] = user[optional]
        return self.users[user["id"]], self.upsert_chat(info)

    def upsert_chat(self, info: dict[str, Any]) -> Chat:
        chat = self.chats.get(info["id"])
        if chat is None:
            chat = self.chats[info["id"]] = Chat(info)
        elif chat.info != info:
            chat.info = info
        if info.get("username"):
            self.chats_by_username[info["username"].lower()] = chat
        return chat

    def find_chat(self, chat_id: int | str) -> Chat | None:
        if isinstance(chat_id, str):
            return self.chats_by_username.get(chat_id.removeprefix("@").lower())
        return self.chats.get(chat_id)

    # -- events and updates ----------------------------------------------------------------

    def record_event(
        self,
        chat: Chat,
        kind: str,
        source: str,
        *,
        message_id: int | None = None,
        version: MessageVersion | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        self.seq += 1
        event = Event(self.seq, chat.id, kind, source, time.time(), message_id, version, details)
        chat.events.append(event)
        _trim(chat.events, self.history_limit)
        self.events.append(event)
        _trim(self.events, self.event_log_limit)
        chat.signal.notify()
        self.events_signal.notify()
        return event

    def push_update(self, kind: str, content: dict[str, Any]) -> int:
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append({"update_id": update_id, kind: content})
        self.updates_signal.notify()
        return update_id

    async def get_updates(
        self, offset: int | None, limit: int, timeout: float
    ) -> list[dict[str, Any]]:
        """getUpdates: confirms updates below ``offset`` and long-polls for up to ``timeout``.

        As on Telegram, a new call ends the one still waiting (409, `poll_conflict`): two
        pollers of one bot keep cutting each other off."""
        self.polls_started += 1
        this_poll = self.polls_started
        self.updates_signal.notify()  # the poll waiting until now, if any, ends
        if offset is not None and offset < 0:
            while len(self.updates) > -offset:
                self.updates.popleft()
        elif offset is not None:
            while self.updates and self.updates[0]["update_id"] < offset:
                self.updates.popleft()
        deadline = self.clock() + timeout
        while not self.updates and not self.closing:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            await self.updates_signal.wait(remaining)
            if self.polls_started != this_poll:
                raise poll_conflict()
        return list(itertools.islice(self.updates, limit))

    async def wait_chat_event(
        self, chat_id: int, after: int, accept: Callable[[Event], bool], timeout: float
    ) -> Event | None:
        """The first event of the chat after ``after`` that ``accept`` takes, waiting for it."""
        deadline = self.clock() + timeout
        cursor = after
        while True:
            chat = self.chats.get(chat_id)
            if chat is not None:
                for event in chat.events_after(cursor):
                    if accept(event):
                        return event
                    cursor = event.seq
            remaining = deadline - self.clock()
            if remaining <= 0 or self.closing:
                return None
            await (chat.signal if chat is not None else self.events_signal).wait(remaining)

    async def wait_events(self, after: int, timeout: float, limit: int) -> list[Event]:
        """Events of all chats after ``after`` (for the playground), waiting for at least one."""
        deadline = self.clock() + timeout
        while True:
            start = bisect_right(self.events, after, key=_event_seq)
            if start < len(self.events):
                return self.events[start : start + limit]
            remaining = deadline - self.clock()
            if remaining <= 0 or self.closing:
                return []
            await self.events_signal.wait(remaining)

    # -- messages --------------------------------------------------------------------------

    def add_message(
        self,
        chat: Chat,
        content: dict[str, Any],
        *,
        sender: dict[str, Any] | None,
        html: str | None = None,
        keyboard: list[list[str]] | None = None,
    ) -> StoredMessage:
        """Appends a message from the user ``sender`` (None: the bot) and records its event.

        Channel posts, the bot's included, carry the channel as sender_chat and no sender.
        """
        message_id = chat.next_message_id
        chat.next_message_id += 1
        payload: dict[str, Any] = {"message_id": message_id}
        from_bot = sender is None
        if chat.type == "channel":
            payload["sender_chat"] = chat.info
        else:
            payload["from"] = self.bot_user if from_bot else sender
        payload["chat"] = chat.info
        payload["date"] = int(time.time())
        payload.update(content)
        message = StoredMessage(from_bot, MessageVersion(payload, html, keyboard))
        chat.messages[message_id] = message
        if len(chat.messages) > self.history_limit:
            chat.messages.popitem(last=False)
        self.record_event(
            chat,
            "message",
            "bot" if from_bot else "user",
            message_id=message_id,
            version=message.version,
        )
        return message

    def replace_message(
        self, chat: Chat, message: StoredMessage, version: MessageVersion, source: str
    ) -> None:
        message.version = version
        self.record_event(
            chat, "edit", source, message_id=version.payload["message_id"], version=version
        )

    def delete_message(self, chat: Chat, message_id: int, source: str) -> Event:
        """Removes a message for everyone (the bot's deleteMessage, or a user deleting it in
        their chat); edits of it are then refused, as Telegram does."""
        if chat.messages.pop(message_id, None) is None:
            raise LookupError(f"chat {chat.id} has no message {message_id}")
        return self.record_event(chat, "delete", source, message_id=message_id)

    def admit_send(self, chat: Chat, method: str) -> None:
        """Applies the flood limits to a send or edit, then records it as accepted."""
        now = self.clock()
        waits = [
            limit.retry_after(key, now)
            for limit, key in ((self.global_limit, None), (self.per_chat_limit, chat.id))
            if limit is not None
        ]
        retry_after = max((wait for wait in waits if wait is not None), default=None)
        if retry_after is not None:
            self.stats.rate_limited += 1
            raise too_many_requests(retry_after)
        if self.global_limit:
            self.global_limit.record(None, now)
        if self.per_chat_limit:
            self.per_chat_limit.record(chat.id, now)
        self.traffic.record(chat.id, now)
        self.stats.sends[method] += 1

    # -- what simulated users do -----------------------------------------------------------

    def user_text(self, text: str) -> dict[str, Any]:
        """A user's text message content, with the bot_command entities Telegram adds."""
        content: dict[str, Any] = {"text": text}
        entities = [
            {
                "type": "bot_command",
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
            for match in COMMAND_PATTERN.finditer(text)
        ]
        if entities:
            content["entities"] = entities
        return content

    def post_user_message(
        self, chat: Chat, sender: dict[str, Any], text: str, reply_to: int | None = None
    ) -> Event:
        """A message from a user (in a channel: a post by its admin ``sender``) and its update,
        optionally replying to a message of the chat (Telegram adds reply_to_message, unnested).
        """
        content = self.user_text(text)
        if reply_to is not None:
            target = chat.messages.get(reply_to)
            if target is None:
                raise LookupError(f"chat {chat.id} has no message {reply_to}")
            quoted = dict(target.version.payload)
            quoted.pop("reply_to_message", None)
            content["reply_to_message"] = quoted
        message = self.add_message(chat, content, sender=sender)
        kind = "channel_post" if chat.type == "channel" else "message"
        self.push_update(kind, message.version.payload)
        return chat.events[-1]

    def edit_user_message(self, chat: Chat, message_id: int, text: str) -> Event:
        message = chat.messages.get(message_id)
        if message is None or message.from_bot:
            raise LookupError(f"chat {chat.id} has no user message {message_id}")
        payload = {
            key: value
            for key, value in message.version.payload.items()
            if key not in ("text", "entities")
        }
        payload.update(self.user_text(text))
        payload["edit_date"] = int(time.time())
        self.replace_message(chat, message, MessageVersion(payload), "user")
        kind = "edited_channel_post" if chat.type == "channel" else "edited_message"
        self.push_update(kind, payload)
        return chat.events[-1]

    def press_button(
        self,
        chat: Chat,
        user: dict[str, Any],
        message_id: int,
        callback_data: str,
    ) -> tuple[str, Event]:
        """A callback_query update as if ``user`` pressed a button carrying callback_data."""
        query_id = str(self.next_callback_query_id)
        self.next_callback_query_id += 1
        stored = chat.messages.get(message_id)
        message = (
            stored.version.payload
            if stored
            else {"chat": chat.info, "message_id": message_id, "date": 0}
        )
        self.push_update(
            "callback_query",
            {
                "id": query_id,
                "from": user,
                "message": message,
                "chat_instance": str(chat.id * 7919 % 10**12),
                "data": callback_data,
            },
        )
        self.open_callback_queries[query_id] = (chat.id, user["id"])
        event = self.record_event(
            chat,
            "callback_query",
            "user",
            message_id=message_id,
            details={"query_id": query_id, "user_id": user["id"], "data": callback_data},
        )
        return query_id, event

    def set_blocked(self, user_id: int, blocked: bool, *, notify: bool = True) -> Event:
        """Blocks or unblocks the bot; Telegram tells the bot with a my_chat_member update
        (notify=False: the update is lost, as when it expired after Telegram's 24 hours while
        the bot was down, so the bot learns of the block from a 403 only)."""
        chat = self.chats.get(user_id)
        user = self.users.get(user_id)
        if chat is None or user is None:
            raise LookupError(f"unknown user {user_id}")
        chat.blocked = blocked
        member = {"user": self.bot_user, "status": "member"}
        kicked = {"user": self.bot_user, "status": "kicked", "until_date": 0}
        old, new = (member, kicked) if blocked else (kicked, member)
        if notify:
            self.push_update(
                "my_chat_member",
                {
                    "chat": chat.info,
                    "from": user,
                    "date": int(time.time()),
                    "old_chat_member": old,
                    "new_chat_member": new,
                },
            )
        return self.record_event(chat, "block" if blocked else "unblock", "user")

    # -- reports ---------------------------------------------------------------------------

    def stats_json(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "requests": stats.requests,
            "methods": dict(stats.methods),
            "sends": dict(stats.sends),
            "messages_sent": sum(stats.sends.values()),
            "errors": {str(status): count for status, count in sorted(stats.errors.items())},
            "responses_429": stats.errors[429],
            "rate_limited": stats.rate_limited,
            "injected_failures": stats.injected_failures,
            "max_per_second": self.traffic.peak_global,
            "max_per_chat_per_second": self.traffic.peak_per_chat,
            "global_rate": self.global_limit.rate if self.global_limit else None,
            "per_chat_rate": self.per_chat_limit.rate if self.per_chat_limit else None,
            "per_chat_burst": self.per_chat_burst,
            "pending_updates": len(self.updates),
            "webhook_deliveries": stats.webhook_deliveries,
            "chats": len(self.chats),
            "users": len(self.users),
            "last_seq": self.seq,
        }
