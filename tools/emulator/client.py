"""Async client of the side API: scripts act as Telegram users and watch what the bot does.

Each chat view (a :class:`SimulatedUser`'s private chat, a group, a channel) keeps a cursor
so that waits return every bot event at most once, in order, and never one older than the
view's own last action::

    alice = client.user(1001, "Alice", "fr")
    await alice.send("/start")                    # events before this are considered seen
    msg = await alice.wait_message(contains="Bienvenue")
    query_id = await alice.press("J'accepte")
    edit = await alice.wait_event(kind="edit")     # found even if a new message came first
    answer = await alice.callback_answer(query_id)

Waiting happens on the server (long polls), never with sleeps. A wait that times out raises
AssertionError describing what the chat holds, which is what a failing test should show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import EllipsisType, TracebackType
from typing import Any

import aiohttp

HTTP_MARGIN_SECONDS = 10.0  # client-side timeout on top of the server-side wait


class EmulatorError(RuntimeError):
    """The side API refused a request (bad arguments, unknown chat...)."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    callback_data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class ChatMessage:
    """A message as the chat shows it: text or caption, buttons, attachment details."""

    message_id: int
    text: str | None  # the text, or the caption of a document or photo
    html: str | None  # the raw text as the bot sent it when parse_mode was HTML
    buttons: list[list[Button]]  # inline keyboard rows
    kind: str  # "text", "venue", "location", "document", "photo"
    venue: dict[str, Any] | None = None
    location: dict[str, Any] | None = None
    document: dict[str, Any] | None = None  # file_id, file_name, mime_type, size
    photo: dict[str, Any] | None = None  # file_id, width, height, size
    edited: bool = False
    from_bot: bool = True
    keyboard: list[list[str]] | None = None  # reply keyboard sent along ([] removed it)
    reply_to: int | None = None  # message_id this one replies to
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the Bot API Message

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ChatMessage:
        message = record["message"]
        kind = next(
            (name for name in ("venue", "location", "document", "photo") if name in message),
            "text",
        )
        document = photo = None
        if "document" in message:
            raw_document = message["document"]
            document = {
                "file_id": raw_document["file_id"],
                "file_name": raw_document.get("file_name"),
                "mime_type": raw_document.get("mime_type"),
                "size": raw_document.get("file_size"),
            }
        if "photo" in message:
            largest = message["photo"][-1]
            photo = {
                "file_id": largest["file_id"],
                "width": largest["width"],
                "height": largest["height"],
                "size": largest.get("file_size"),
            }
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        sender = message.get("from")
        return cls(
            message_id=message["message_id"],
            text=message.get("text", message.get("caption")),
            html=record.get("html"),
            buttons=[
                [
                    Button(button["text"], button.get("callback_data"), button.get("url"))
                    for button in row
                ]
                for row in rows
            ],
            kind=kind,
            venue=message.get("venue"),
            location=message.get("location"),
            document=document,
            photo=photo,
            edited="edit_date" in message,
            from_bot=record.get("from_bot", bool(sender and sender.get("is_bot"))),
            keyboard=record.get("keyboard"),
            reply_to=message.get("reply_to_message", {}).get("message_id"),
            raw=message,
        )

    def button_texts(self) -> list[str]:
        return [button.text for row in self.buttons for button in row]


@dataclass(slots=True)
class ChatEvent:
    """Something the bot did in a chat (or, in the global feed, a user too)."""

    seq: int
    kind: str  # message, edit, delete, callback_answer, action, leave; user side: message...
    source: str  # "bot" or "user"
    chat_id: int
    message_id: int | None
    message: ChatMessage | None  # the message as this event left it (message, edit)
    text: str | None = None  # callback answer text
    show_alert: bool = False
    url: str | None = None
    query_id: str | None = None
    data: str | None = None  # callback_data of a press
    action: str | None = None  # chat action ("typing"...)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChatEvent:
        return cls(
            seq=body["seq"],
            kind=body["kind"],
            source=body["source"],
            chat_id=body["chat_id"],
            message_id=body.get("message_id"),
            message=(
                ChatMessage.from_record({**body, "from_bot": body["source"] == "bot"})
                if body.get("message")
                else None
            ),
            text=body.get("text"),
            show_alert=bool(body.get("show_alert")),
            url=body.get("url"),
            query_id=body.get("query_id"),
            data=body.get("data"),
            action=body.get("action"),
            raw=body,
        )


class EmulatorClient:
    """Talks to one emulator's side API (``BotApiEmulator.side_url``)."""

    def __init__(self, side_url: str) -> None:
        self.side_url = side_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: the constructor may run outside the event loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def call(
        self,
        http_method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """One side-API request (path relative to ``/_emulator``); JSON answer or bytes."""
        timeout = aiohttp.ClientTimeout(total=wait + HTTP_MARGIN_SECONDS)
        url = f"{self.side_url}/_emulator{path}"
        async with self._http().request(
            http_method, url, json=json, params=params, timeout=timeout
        ) as response:
            if response.content_type != "application/json":
                if response.status >= 400:
                    raise EmulatorError(response.status, await response.text(), {})
                return await response.read()
            body = await response.json()
            if response.status >= 400:
                raise EmulatorError(response.status, body.get("error", ""), body)
            return body

    # -- simulated chats -------------------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        language_code: str | None = "fr",
        last_name: str | None = None,
        username: str | None = None,
    ) -> SimulatedUser:
        """A user and their private chat with the bot (no request until it acts)."""
        return SimulatedUser(self, user_id, first_name, language_code, last_name, username)

    def group(
        self,
        chat_id: int,
        title: str = "Test group",
        *,
        chat_type: str = "supergroup",
        username: str | None = None,
    ) -> SimulatedGroup:
        return SimulatedGroup(self, chat_id, title, chat_type, username)

    def channel(
        self, chat_id: int, title: str = "Test channel", *, username: str | None = None
    ) -> SimulatedChannel:
        """A channel whose posts reach the bot as channel_post updates, which have no user."""
        return SimulatedChannel(self, chat_id, title, username)

    async def register(self, *users: SimulatedUser) -> None:
        """Makes users known to the emulator (as having started the bot) in one request, so
        the bot can message them before they write; a broadcast benchmark needs this."""
        await self.call("POST", "/users", json={"users": [user.fields for user in users]})

    # -- emulator control ------------------------------------------------------------------

    async def configure(
        self,
        *,
        global_rate: float | EllipsisType | None = ...,
        per_chat_rate: float | EllipsisType | None = ...,
        per_chat_burst: int | EllipsisType = ...,
    ) -> None:
        """Sets flood limits in messages per second; None lifts one, ``...`` leaves it.

        ``per_chat_burst`` messages may go to one chat at once, then no more than that many in
        any ``per_chat_burst / per_chat_rate`` seconds (1, the default: strictly one per second;
        3 is closer to Telegram, which tolerates short bursts)."""
        given = (
            ("global_rate", global_rate),
            ("per_chat_rate", per_chat_rate),
            ("per_chat_burst", per_chat_burst),
        )
        changes = {name: value for name, value in given if value is not ...}
        await self.call("POST", "/config", json=changes)

    async def stats(self) -> dict[str, Any]:
        """Counters: requests, successful calls per method (``methods``), accepted sends and
        edits per method (``sends``, total ``messages_sent``), ``errors`` by status,
        ``responses_429``, ``rate_limited`` (by the flood limits), ``injected_failures``,
        ``max_per_second`` and ``max_per_chat_per_second`` (busiest one-second windows),
        ``pending_updates``, ``chats``, ``users``, ``last_seq``, the configured rates."""
        stats: dict[str, Any] = await self.call("GET", "/stats")
        return stats

    async def traffic(self, after: int = 0) -> dict[str, Any]:
        """Accepted sends from index ``after``: ``times`` (seconds since the emulator started),
        ``chat_ids``, and ``next`` (the index to continue from)."""
        traffic: dict[str, Any] = await self.call("GET", "/traffic", params={"after": after})
        return traffic

    async def fail_next(
        self,
        method: str,
        status: int,
        count: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """The next ``count`` calls of ``method`` answer ``status`` (429: with retry_after)."""
        failure: dict[str, Any] = {"method": method, "status": status, "count": count}
        if retry_after is not None:
            failure["retry_after"] = retry_after
        if description is not None:
            failure["description"] = description
        await self.call("POST", "/faults", json=failure)

    async def set_unreachable(
        self, on: bool, *, seconds: float | None = None, drop_connections: bool = False
    ) -> None:
        """Makes the Bot API answer 502 Bad Gateway (or drop connections) until switched off,
        or for ``seconds``. The side API stays reachable."""
        body = {"on": on, "seconds": seconds, "drop_connections": drop_connections}
        await self.call("POST", "/unreachable", json=body)

    async def set_webhook_via(self, via: str | None) -> None:
        """Webhook requests go to ``via`` (with the registered URL's path) instead of the
        registered public URL: the emulator plays the reverse proxy in front of the bot."""
        await self.call("POST", "/webhook", json={"via": via})

    async def commands(
        self, scope: str = "default", language_code: str = ""
    ) -> list[dict[str, Any]]:
        """The bot's commands for a scope: "default", "all_private_chats", "all_group_chats",
        "all_chat_administrators", "chat:<id>", "chat_administrators:<id>",
        "chat_member:<chat id>:<user id>"."""
        commands: list[dict[str, Any]] = await self.call(
            "GET", "/commands", params={"scope": scope, "language_code": language_code}
        )
        return commands

    async def events(
        self, after: int = 0, *, timeout: float = 0.0, limit: int = 1000
    ) -> list[ChatEvent]:
        """Every chat's events after ``after``, bot and users alike, waiting up to ``timeout``
        for the first one."""
        body = await self.call(
            "GET",
            "/events",
            params={"after": after, "timeout": timeout, "limit": limit},
            wait=timeout,
        )
        return [ChatEvent.from_json(event) for event in body["events"]]

    async def reset(self) -> None:
        """Forgets chats, messages, pending updates, files, commands, counters and faults."""
        await self.call("POST", "/reset")

    async def download(self, file_id: str) -> bytes:
        content: bytes = await self.call("GET", f"/files/{file_id}")
        return content


class ChatView:
    """What one participant sees of a chat, with the cursor its waits advance."""

    def __init__(self, client: EmulatorClient, chat_id: int) -> None:
        self.client = client
        self.chat_id = chat_id
        self._floor = 0  # every event up to here is seen
        self._consumed: set[int] = set()  # events above the floor already returned
        self._press_seqs: dict[str, int] = {}

    def _observe(self, seq: int) -> None:
        """Moves the cursor past ``seq`` (this view's own action, or a gap-free wait)."""
        if seq > self._floor:
            self._floor = seq
            self._consumed = {consumed for consumed in self._consumed if consumed > seq}

    async def messages(self, *, include_user: bool = False) -> list[ChatMessage]:
        """The bot's messages in this chat in order, as they are now (edits applied,
        deleted ones gone); with include_user, the users' messages too."""
        body = await self.client.call(
            "GET",
            f"/chats/{self.chat_id}/messages",
            params={"include_user": "1" if include_user else "0"},
        )
        return [ChatMessage.from_record(record) for record in body["messages"]]

    async def last(self) -> ChatMessage:
        messages = await self.messages()
        if not messages:
            raise AssertionError(f"the bot sent nothing (still visible) in chat {self.chat_id}")
        return messages[-1]

    async def wait_message(
        self, *, contains: str | None = None, timeout: float = 5.0
    ) -> ChatMessage:
        """The next new bot message not yet returned, optionally one whose text or caption
        contains ``contains``."""
        event = await self._next_event(kind="message", contains=contains, timeout=timeout)
        assert event.message is not None
        return event.message

    async def wait_event(
        self, *, kind: str | None = None, contains: str | None = None, timeout: float = 5.0
    ) -> ChatEvent:
        """The next bot event not yet returned: "message", "edit", "delete",
        "callback_answer", "action" or "leave", optionally of one kind, optionally one whose
        message text, caption or answer text contains ``contains``."""
        return await self._next_event(kind=kind, contains=contains, timeout=timeout)

    async def callback_answer(self, query_id: str, timeout: float = 5.0) -> ChatEvent:
        """The bot's answerCallbackQuery for a press, whenever it came after the press."""
        after = self._press_seqs.pop(query_id, 0)
        return await self._next_event(
            kind="callback_answer", query_id=query_id, after=after, timeout=timeout
        )

    async def download(self, message: ChatMessage) -> bytes:
        """The bytes of a document or photo the bot sent."""
        attachment = message.document or message.photo
        if attachment is None:
            raise AssertionError(f"message {message.message_id} has no document or photo")
        return await self.client.download(attachment["file_id"])

    async def _next_event(
        self,
        *,
        kind: str | None,
        timeout: float,
        contains: str | None = None,
        query_id: str | None = None,
        after: int | None = None,
    ) -> ChatEvent:
        params: dict[str, Any] = {
            "after": self._floor if after is None else after,
            "timeout": timeout,
            "source": "bot",
            "skip": ",".join(map(str, sorted(self._consumed))),
        }
        for name, value in (("kind", kind), ("contains", contains), ("query_id", query_id)):
            if value is not None:
                params[name] = value
        body = await self.client.call(
            "GET", f"/chats/{self.chat_id}/events/next", params=params, wait=timeout
        )
        if body["event"] is None:
            raise AssertionError(await self._describe_timeout(kind, contains, query_id, timeout))
        event = ChatEvent.from_json(body["event"])
        self._consumed.add(event.seq)
        self._observe(body["floor"])
        return event

    async def _describe_timeout(
        self, kind: str | None, contains: str | None, query_id: str | None, timeout: float
    ) -> str:
        wanted = kind or "bot event"
        if contains is not None:
            wanted += f" containing {contains!r}"
        if query_id is not None:
            wanted += f" for callback query {query_id}"
        recent = [
            f"#{message.message_id}: {message.text!r} {message.button_texts() or ''}".rstrip()
            for message in (await self.messages())[-5:]
        ]
        return (
            f"no new {wanted} in chat {self.chat_id} within {timeout}s; "
            f"the bot's latest messages there: {recent or 'none'}"
        )

    async def _press(self, user: dict[str, Any], request: dict[str, Any]) -> str:
        try:
            body = await self.client.call(
                "POST", f"/chats/{self.chat_id}/callbacks", json={"from": user, **request}
            )
        except EmulatorError as error:
            if error.status in (400, 404):
                raise AssertionError(str(error.body.get("error", error))) from None
            raise
        self._press_seqs[body["query_id"]] = body["seq"]
        self._observe(body["seq"])
        query_id: str = body["query_id"]
        return query_id

    async def _post(self, body: dict[str, Any]) -> int:
        answer = await self.client.call("POST", f"/chats/{self.chat_id}/messages", json=body)
        self._observe(answer["seq"])
        message_id: int = answer["message_id"]
        return message_id


class SimulatedUser(ChatView):
    """A Telegram user in their private chat with the bot (chat id == user id)."""

    def __init__(
        self,
        client: EmulatorClient,
        user_id: int,
        first_name: str = "Test",
        language_code: str | None = "fr",
        last_name: str | None = None,
        username: str | None = None,
    ) -> None:
        super().__init__(client, user_id)
        self.user_id = user_id
        self.first_name = first_name
        self.language_code = language_code
        self.last_name = last_name
        self.username = username

    @property
    def fields(self) -> dict[str, Any]:
        """The user as the side API takes it (and as Telegram shows it to the bot)."""
        fields: dict[str, Any] = {"id": self.user_id, "first_name": self.first_name}
        for name in ("last_name", "username", "language_code"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields

    async def send(self, text: str) -> int:
        """Sends a text message (a leading "/word" is a command); returns its message_id."""
        return await self._post({"from": self.fields, "text": text})

    async def send_edited(self, message_id: int, text: str) -> None:
        """Edits one of this user's messages; the bot gets an edited_message update."""
        answer = await self.client.call(
            "POST",
            f"/chats/{self.chat_id}/edits",
            json={"message_id": message_id, "text": text},
        )
        self._observe(answer["seq"])

    async def delete(self, message_id: int) -> None:
        """Deletes a message of this chat for both sides, as a person can; Telegram does not
        tell the bot, whose edits of it then fail with "message to edit not found"."""
        answer = await self.client.call("DELETE", f"/chats/{self.chat_id}/messages/{message_id}")
        self._observe(answer["seq"])

    async def press(self, button: str, *, message_id: int | None = None) -> str:
        """Presses the inline button whose text is ``button`` (else contains it, else whose
        callback_data is it) on the latest bot message with an inline keyboard, or on
        ``message_id``; returns the callback query id."""
        return await self._press(self.fields, {"button": button, "message_id": message_id})

    async def press_data(self, callback_data: str, *, message_id: int) -> str:
        """Sends a callback query with arbitrary data, as a forged or stale button would."""
        request = {"callback_data": callback_data, "message_id": message_id}
        return await self._press(self.fields, request)

    async def register(self) -> None:
        """Makes the user known without writing, as if they had started the bot earlier."""
        await self.client.register(self)

    async def block(self, *, notify: bool = True) -> None:
        """Blocks the bot: sends to this user now fail with 403 Forbidden. The bot is told
        with a my_chat_member update, unless notify=False (the update was lost)."""
        await self._set_blocked(True, notify)

    async def unblock(self) -> None:
        await self._set_blocked(False, True)

    async def _set_blocked(self, blocked: bool, notify: bool) -> None:
        answer = await self.client.call(
            "POST", f"/users/{self.user_id}/block", json={"blocked": blocked, "notify": notify}
        )
        self._observe(answer["seq"])


class SimulatedGroup(ChatView):
    """A group or supergroup the bot is in; users write there with ``send(user, text)``."""

    def __init__(
        self,
        client: EmulatorClient,
        chat_id: int,
        title: str,
        chat_type: str = "supergroup",
        username: str | None = None,
    ) -> None:
        super().__init__(client, chat_id)
        self.chat = {"type": chat_type, "title": title, "username": username}

    async def send(self, user: SimulatedUser, text: str, *, reply_to: int | None = None) -> int:
        """A member's message in the group, optionally a reply to one of its messages."""
        return await self._post(
            {"from": user.fields, "chat": self.chat, "text": text, "reply_to": reply_to}
        )

    async def press(
        self, user: SimulatedUser, button: str, *, message_id: int | None = None
    ) -> str:
        return await self._press(user.fields, {"button": button, "message_id": message_id})


class SimulatedChannel(ChatView):
    """A channel the bot administers; posts reach it as channel_post updates (no user)."""

    def __init__(
        self, client: EmulatorClient, chat_id: int, title: str, username: str | None = None
    ) -> None:
        super().__init__(client, chat_id)
        self.chat = {"type": "channel", "title": title, "username": username}

    async def post(self, text: str, *, reply_to: int | None = None) -> int:
        """A post in the channel, optionally a reply to one of its posts."""
        return await self._post({"chat": self.chat, "text": text, "reply_to": reply_to})
