"""The side API under ``/_emulator/``: how tests, demos and benchmarks act as Telegram users.

JSON in and out. Errors answer ``{"error": "..."}`` with a 4xx status. Long polls (``events``
and ``chats/{id}/events/next``) wait on the server, so clients never busy-loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from emulator.state import Chat, EmulatorState, Event, InjectedFailure

MAX_WAIT_SECONDS = 120.0
PRIVATE = "private"
USER_FIELDS = ("id", "first_name", "last_name", "username", "language_code")


class SideError(web.HTTPException):
    """A side-API error with a JSON body, so the client can show it as is."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": message, **extra}), content_type="application/json"
        )


def _int_arg(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise SideError(400, f"{name} is required")
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SideError(400, f"{name} must be an integer") from exc


def _timeout_arg(request: web.Request) -> float:
    try:
        return min(max(float(request.query.get("timeout", "0")), 0.0), MAX_WAIT_SECONDS)
    except ValueError as exc:
        raise SideError(400, "timeout must be a number") from exc


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise SideError(400, "the body must be JSON") from exc
    if not isinstance(body, dict):
        raise SideError(400, "the body must be a JSON object")
    return body


def _user_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("id"), int):
        raise SideError(400, "a user needs at least an integer id")
    return {key: value[key] for key in USER_FIELDS if value.get(key) is not None}


class SideApi:
    """Route handlers of the side API over one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState, bot_api_methods: Iterable[str]) -> None:
        self.state = state
        # Lower-cased names, to refuse faults injected into a misspelt method that never fires.
        self.bot_api_methods = frozenset(bot_api_methods)

    def routes(self) -> list[web.RouteDef]:
        prefix = "/_emulator"
        return [
            web.get(f"{prefix}/health", self.health),
            web.get(f"{prefix}/stats", self.stats),
            web.get(f"{prefix}/traffic", self.traffic),
            web.post(f"{prefix}/config", self.configure),
            web.post(f"{prefix}/reset", self.reset),
            web.post(f"{prefix}/faults", self.fail_next),
            web.post(f"{prefix}/unreachable", self.unreachable),
            web.post(f"{prefix}/webhook", self.webhook),
            web.get(f"{prefix}/commands", self.commands),
            web.get(f"{prefix}/events", self.events),
            web.get(f"{prefix}/files/{{file_id}}", self.download),
            web.post(f"{prefix}/users", self.register_users),
            web.post(f"{prefix}/users/{{user_id}}/block", self.block),
            web.get(f"{prefix}/chats", self.chats),
            web.post(f"{prefix}/chats/{{chat_id}}/messages", self.post_message),
            web.get(f"{prefix}/chats/{{chat_id}}/messages", self.messages),
            web.delete(f"{prefix}/chats/{{chat_id}}/messages/{{message_id}}", self.delete_message),
            web.post(f"{prefix}/chats/{{chat_id}}/edits", self.edit_message),
            web.post(f"{prefix}/chats/{{chat_id}}/callbacks", self.press),
            web.get(f"{prefix}/chats/{{chat_id}}/events/next", self.next_event),
        ]

    def _chat(self, request: web.Request) -> Chat:
        chat = self.state.chats.get(_int_arg(request, "chat_id"))
        if chat is None:
            raise SideError(404, f"unknown chat {request.match_info['chat_id']}")
        return chat

    # -- emulator control ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "bot": self.state.bot_user})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats_json())

    async def traffic(self, request: web.Request) -> web.Response:
        """Accepted sends from index ``after`` on: times (s since start) and chat ids."""
        log = self.state.traffic
        start = _int_arg(request, "after", 0)
        return web.json_response(
            {
                "times": log.times[start:].tolist(),
                "chat_ids": log.chat_ids[start:].tolist(),
                "next": len(log.times),
            }
        )

    async def configure(self, request: web.Request) -> web.Response:
        body = await _body(request)
        changes: dict[str, float | None] = {}
        for key in ("global_rate", "per_chat_rate"):
            if key not in body:
                continue
            value = body[key]
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise SideError(400, "rates are positive numbers, or null for no limit")
            changes[key] = value
        if "per_chat_burst" in body:
            burst = body["per_chat_burst"]
            if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
                raise SideError(400, "per_chat_burst is a positive integer")
            changes["per_chat_burst"] = burst
        self.state.configure(changes)
        return web.json_response(self.state.stats_json())

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True, "last_seq": self.state.seq})

    async def fail_next(self, request: web.Request) -> web.Response:
        body = await _body(request)
        method, status = body.get("method"), body.get("status")
        if not isinstance(method, str) or not isinstance(status, int) or status < 400:
            raise SideError(400, "method (str) and an error status (int >= 400) are required")
        if method.lower() not in self.bot_api_methods:
            raise SideError(400, f"the emulator has no Bot API method {method!r}")
        count = body.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise SideError(400, "count must be a positive integer")
        failure = InjectedFailure(status, count, body.get("retry_after"), body.get("description"))
        self.state.inject_failures(method, failure)
        return web.json_response({"ok": True})

    async def unreachable(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.state.set_unreachable(
            bool(body.get("on")), body.get("seconds"), bool(body.get("drop_connections"))
        )
        return web.json_response({"ok": True})

    async def webhook(self, request: web.Request) -> web.Response:
        """Where webhook requests really go (the reverse proxy in front of the bot):
        ``{"via": "http://127.0.0.1:8443"}``, or null to post to the registered URL."""
        via = (await _body(request)).get("via")
        if via is not None and not (
            isinstance(via, str) and via.startswith(("http://", "https://"))
        ):
            raise SideError(400, "via is an http(s) address, or null")
        self.state.webhook_via = via
        return web.json_response(
            {"via": via, "url": self.state.webhook_url, "pending": len(self.state.updates)}
        )

    async def commands(self, request: web.Request) -> web.Response:
        key = (request.query.get("scope", "default"), request.query.get("language_code", ""))
        return web.json_response(self.state.commands.get(key, []))

    async def download(self, request: web.Request) -> web.Response:
        stored = self.state.files.get(request.match_info["file_id"])
        if stored is None:
            raise SideError(404, "unknown file_id")
        headers = {}
        if stored.file_name:
            headers["Content-Disposition"] = f'attachment; filename="{stored.file_name}"'
        return web.Response(body=stored.data, content_type=stored.mime_type, headers=headers)

    # -- users and chats -------------------------------------------------------------------

    async def register_users(self, request: web.Request) -> web.Response:
        """Makes users known (as if they had started the bot) without sending anything."""
        users = (await _body(request)).get("users")
        if not isinstance(users, list):
            raise SideError(400, "users must be a list")
        for user in users:
            self.state.upsert_user(_user_fields(user))
        return web.json_response({"ok": True, "users": len(self.state.users)})

    async def block(self, request: web.Request) -> web.Response:
        body = await _body(request)
        blocked = bool(body.get("blocked", True))
        try:
            event = self.state.set_blocked(
                _int_arg(request, "user_id"), blocked, notify=bool(body.get("notify", True))
            )
        except LookupError as exc:
            raise SideError(404, str(exc)) from exc
        return web.json_response({"seq": event.seq})

    async def chats(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "chat": chat.info,
                    "blocked": chat.blocked,
                    "bot_is_member": chat.bot_is_member,
                    "messages": len(chat.messages),
                    "last_seq": chat.events[-1].seq if chat.events else 0,
                }
                for chat in self.state.chats.values()
            ]
        )

    def _sender_and_chat(
        self, chat_id: int, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, Chat]:
        """The user writing (None in a channel) and the chat, registering both if new."""
        chat_fields = body.get("chat") or {}
        chat_type = chat_fields.get("type", PRIVATE)
        if chat_type == PRIVATE:
            user, chat = self.state.upsert_user(_user_fields(body.get("from")))
            if user["id"] != chat_id:
                raise SideError(400, "in a private chat, the chat id is the user's id")
            return user, chat
        if chat_type not in ("group", "supergroup", "channel"):
            raise SideError(400, f"unknown chat type {chat_type!r}")
        info = {"id": chat_id, "type": chat_type, "title": chat_fields.get("title") or "Chat"}
        if chat_fields.get("username"):
            info["username"] = chat_fields["username"]
        chat = self.state.upsert_chat(info)
        if chat_type == "channel":
            return None, chat
        user, _ = self.state.upsert_user(_user_fields(body.get("from")))
        return user, chat

    async def post_message(self, request: web.Request) -> web.Response:
        """A user's text message (or a channel post) and the update it makes for the bot."""
        body = await _body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise SideError(400, "text is required")
        sender, chat = self._sender_and_chat(_int_arg(request, "chat_id"), body)
        reply_to = body.get("reply_to")
        if reply_to is not None and not isinstance(reply_to, int):
            raise SideError(400, "reply_to must be a message_id")
        try:
            event = self.state.post_user_message(chat, sender or chat.info, text, reply_to)
        except LookupError as exc:
            raise SideError(404, str(exc)) from exc
        return web.json_response({"message_id": event.message_id, "seq": event.seq})

    async def edit_message(self, request: web.Request) -> web.Response:
        body = await _body(request)
        chat = self._chat(request)
        text, message_id = body.get("text"), body.get("message_id")
        if not isinstance(text, str) or not text or not isinstance(message_id, int):
            raise SideError(400, "message_id and text are required")
        try:
            event = self.state.edit_user_message(chat, message_id, text)
        except LookupError as exc:
            raise SideError(404, str(exc)) from exc
        return web.json_response({"seq": event.seq})

    async def delete_message(self, request: web.Request) -> web.Response:
        """A user deletes a message of their chat for both sides (Telegram does not tell the
        bot); the bot's edits of it then fail with "message to edit not found"."""
        chat = self._chat(request)
        try:
            event = self.state.delete_message(chat, _int_arg(request, "message_id"), "user")
        except LookupError as exc:
            raise SideError(404, str(exc)) from exc
        return web.json_response({"seq": event.seq})

    async def press(self, request: web.Request) -> web.Response:
        """Presses an inline button found by its text, or sends the given callback_data as is."""
        body = await _body(request)
        chat = self._chat(request)
        user, _ = self.state.upsert_user(_user_fields(body.get("from")))
        message_id = body.get("message_id")
        if "callback_data" in body:
            if not isinstance(message_id, int):
                raise SideError(400, "message_id is required with callback_data")
            data = str(body["callback_data"])
        else:
            message_id, data = self._find_button(chat, str(body.get("button", "")), message_id)
        query_id, event = self.state.press_button(chat, user, message_id, data)
        return web.json_response(
            {"query_id": query_id, "seq": event.seq, "message_id": message_id, "data": data}
        )

    @staticmethod
    def _find_button(chat: Chat, wanted: str, message_id: int | None) -> tuple[int, str]:
        message = chat.messages.get(message_id) if message_id else chat.latest_keyboard_message()
        if message is None or not message.from_bot:
            where = f"message {message_id}" if message_id else "any bot message"
            raise SideError(404, f"no inline keyboard on {where} in chat {chat.id}", buttons=[])
        rows = message.version.payload.get("reply_markup", {}).get("inline_keyboard", [])
        buttons = [button for row in rows for button in row]
        matchers: list[Callable[[dict[str, Any]], bool]] = [
            lambda button: button["text"] == wanted,
            lambda button: wanted in button["text"],
            lambda button: button.get("callback_data") == wanted,
        ]
        for matches in matchers:
            found = next((button for button in buttons if matches(button)), None)
            if found is not None:
                if "callback_data" not in found:
                    raise SideError(
                        400, f"button {found['text']!r} has no callback_data: {found}", buttons=[]
                    )
                return message.version.payload["message_id"], found["callback_data"]
        texts = [button["text"] for button in buttons]
        raise SideError(
            404,
            f"no button {wanted!r} on message {message.version.payload['message_id']} in chat "
            f"{chat.id}; available: {texts}",
            buttons=texts,
        )

    async def messages(self, request: web.Request) -> web.Response:
        """The chat's current messages (edits applied, deleted ones gone), the bot's only
        unless ``include_user=1``."""
        chat = self.state.chats.get(_int_arg(request, "chat_id"))
        include_user = request.query.get("include_user") in ("1", "true")
        stored = [] if chat is None else chat.messages.values()
        return web.json_response(
            {
                "messages": [
                    {**message.version.to_json(), "from_bot": message.from_bot}
                    for message in stored
                    if include_user or message.from_bot
                ]
            }
        )

    # -- waiting ---------------------------------------------------------------------------

    async def next_event(self, request: web.Request) -> web.Response:
        """Long-polls for the first event of a chat after ``after`` that passes the filters.

        ``skip`` lists sequence numbers the caller already consumed. The answer's ``floor``
        is the highest sequence number up to which the caller has nothing left to consume
        (only skipped events, events of another source, or the one returned), so a cursor can
        move on without ever losing an event a later wait could want.
        """
        chat_id = _int_arg(request, "chat_id")
        after = _int_arg(request, "after", 0)
        query = request.query
        skip = {int(seq) for seq in query.get("skip", "").split(",") if seq.strip()}
        source = query.get("source", "bot")
        kind, contains, query_id = query.get("kind"), query.get("contains"), query.get("query_id")

        def wanted(event: Event) -> bool:
            if event.seq in skip or (source != "any" and event.source != source):
                return False
            if kind and event.kind != kind:
                return False
            if query_id and (event.details or {}).get("query_id") != query_id:
                return False
            return not contains or event.mentions(contains)

        found = await self.state.wait_chat_event(chat_id, after, wanted, _timeout_arg(request))
        floor = after
        chat = self.state.chats.get(chat_id)
        if chat is not None:
            for event in chat.events_after(after):
                passed = event.seq in skip or (source != "any" and event.source != source)
                if not (passed or event is found):
                    break
                floor = event.seq
        return web.json_response(
            {
                "event": found.to_json() if found else None,
                "floor": floor,
                "last_seq": self.state.seq,
            }
        )

    async def events(self, request: web.Request) -> web.Response:
        """All chats' events after ``after`` (the playground's feed), long-polling if none."""
        after = _int_arg(request, "after", 0)
        limit = min(max(_int_arg(request, "limit", 1000), 1), 10_000)
        found = await self.state.wait_events(after, _timeout_arg(request), limit)
        return web.json_response(
            {"events": [event.to_json() for event in found], "last_seq": self.state.seq}
        )
