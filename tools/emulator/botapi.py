"""The Bot API endpoint, ``/bot<token>/<method>``, answering as Telegram does.

Parameters are read the way Telegram reads them: from the query string and from a JSON,
url-encoded or multipart body. python-telegram-bot sends form fields whose objects (reply
markup, reply parameters, command lists) are JSON strings and whose files are multipart parts.
Errors carry Telegram's status codes and descriptions so that the bot's error handling is
exercised for real (PTB maps them to BadRequest, Forbidden, RetryAfter, NetworkError...).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator.files import StoredFile, image_size
from emulator.formatting import EntityParseError, parse_html, strip_text, utf16_len
from emulator.state import (
    ApiError,
    Chat,
    EmulatorState,
    MessageVersion,
    StoredMessage,
    bad_request,
)

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_ANSWER_LENGTH = 200
MAX_CALLBACK_DATA_BYTES = 64
BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
COMMAND_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)

Result = dict[str, Any] | list[Any] | bool


@dataclass(frozen=True, slots=True)
class Upload:
    file_name: str | None
    content_type: str | None
    data: bytes


class Params:
    """A request's parameters, merged from the query string and the body."""

    def __init__(self, values: dict[str, Any], uploads: dict[str, Upload]) -> None:
        self.values = values
        self.uploads = uploads

    @classmethod
    async def read(cls, request: web.Request) -> Params:
        values: dict[str, Any] = dict(request.query)
        uploads: dict[str, Upload] = {}
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError as exc:
                raise bad_request("can't parse JSON body") from exc
            if not isinstance(body, dict):
                raise bad_request("JSON body must be an object")
            values.update(body)
        elif request.body_exists:
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    uploads[name] = Upload(value.filename, value.content_type, value.file.read())
                else:
                    values[name] = value
        return cls(values, uploads)

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is empty")
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is empty")
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad_request(f"invalid {name} specified")
        try:
            return int(value)
        except ValueError as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def number(self, name: str, *, required: bool = False) -> float | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is empty")
            return None
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)

    def structured(self, name: str, *, parse_error: str | None = None) -> Any:
        """A JSON-serialised object or array parameter (form fields carry them as strings)."""
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        if value == "":
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise bad_request(parse_error or f"can't parse {name} JSON object") from exc


class BotApi:
    """Answers Bot API calls against an :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        handlers: dict[str, Callable[[Params], Awaitable[Result]]] = {
            "getMe": self.get_me,
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "sendMessage": self.send_message,
            "editMessageText": self.edit_message_text,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "answerCallbackQuery": self.answer_callback_query,
            "sendVenue": self.send_venue,
            "sendLocation": self.send_location,
            "sendDocument": self.send_document,
            "sendPhoto": self.send_photo,
            "deleteMessage": self.delete_message,
            "leaveChat": self.leave_chat,
            "getChat": self.get_chat,
            "sendChatAction": self.send_chat_action,
        }
        # Telegram matches method names case-insensitively.
        self.methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.stats.requests += 1
        if state.is_unreachable():
            if state.unreachable_drops_connections and request.transport is not None:
                request.transport.abort()
            return self._error(ApiError(502, "Bad Gateway"))
        if request.match_info["token"] != state.token:
            return self._error(ApiError(401, "Unauthorized"))
        entry = self.methods.get(request.match_info["method"].lower())
        if entry is None:
            return self._error(ApiError(404, "Not Found"))
        name, handler = entry
        injected = state.take_injected_failure(name)
        if injected is not None:
            return self._error(injected)
        try:
            result = await handler(await Params.read(request))
        except ApiError as error:
            return self._error(error)
        state.stats.methods[name] += 1
        return web.json_response({"ok": True, "result": result})

    def _error(self, error: ApiError) -> web.Response:
        self.state.stats.errors[error.status] += 1
        return web.json_response(error.to_json(), status=error.status)

    # -- shared checks ---------------------------------------------------------------------

    def _chat(self, params: Params) -> Chat:
        value = params.values.get("chat_id")
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        key: int | str = value
        if isinstance(value, str) and not value.startswith("@"):
            try:
                key = int(value)
            except ValueError as exc:
                raise bad_request("chat not found") from exc
        chat = self.state.find_chat(key)
        if chat is None:
            raise bad_request("chat not found")
        return chat

    @staticmethod
    def _check_access(chat: Chat) -> None:
        if chat.type == "private" and chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat.type != "private" and not chat.bot_is_member:
            raise ApiError(403, f"Forbidden: bot is not a member of the {chat.type} chat")

    @staticmethod
    def _formatted(
        params: Params, field: str, entities_field: str, *, limit: int, required: bool
    ) -> tuple[str, list[dict[str, Any]], str | None]:
        """Text (or caption) after parse_mode: plain text, entities, and the HTML as sent."""
        raw = params.text(field) or ""
        parse_mode = (params.text("parse_mode") or "").lower()
        html = None
        if parse_mode == "html":
            try:
                text, entities = parse_html(raw)
            except EntityParseError as exc:
                raise bad_request(f"can't parse entities: {exc}") from exc
            html = raw
        elif parse_mode in ("", "markdown", "markdownv2"):
            # Markdown is passed through unparsed: the project formats in HTML.
            text, entities = raw, params.structured(entities_field) or []
            if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
                raise bad_request(f"can't parse {entities_field} JSON object")
        else:
            raise bad_request("unsupported parse_mode")
        text, entities = strip_text(text, entities)
        if required and not text:
            raise bad_request("message text is empty")
        if utf16_len(text) > limit:  # Telegram counts UTF-16 code units
            raise bad_request("message is too long" if required else "message caption is too long")
        return text, entities, html

    @staticmethod
    def _reply_markup(params: Params) -> tuple[dict[str, Any] | None, list[list[str]] | None]:
        """The inline keyboard to echo in the message, and the reply keyboard texts, if any."""
        markup = params.structured(
            "reply_markup", parse_error="can't parse reply keyboard markup JSON object"
        )
        if markup is None:
            return None, None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = _validated_inline_keyboard(markup["inline_keyboard"])
            return ({"inline_keyboard": rows} if any(rows) else None), None
        if "keyboard" in markup:
            keyboard = markup["keyboard"]
            if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
                raise bad_request("can't parse reply keyboard markup JSON object")
            texts = [
                [
                    button if isinstance(button, str) else str(button.get("text", ""))
                    for button in row
                ]
                for row in keyboard
            ]
            return None, texts
        if markup.get("remove_keyboard"):
            return None, []
        if markup.get("force_reply"):
            return None, None
        raise bad_request("can't parse reply keyboard markup JSON object")

    @staticmethod
    def _reply_target(chat: Chat, params: Params) -> dict[str, Any] | None:
        reply = params.structured("reply_parameters")
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = bool(reply.get("allow_sending_without_reply"))
        else:
            message_id = params.integer("reply_to_message_id")
            allow_missing = params.flag("allow_sending_without_reply")
        if message_id is None:
            return None
        target = chat.messages.get(int(message_id))
        if target is None:
            if allow_missing:
                return None
            raise bad_request("message to be replied not found")
        payload = target.version.payload
        if "reply_to_message" in payload:  # Telegram does not nest replies
            payload = {key: value for key, value in payload.items() if key != "reply_to_message"}
        return payload

    def _deliver(
        self,
        chat: Chat,
        method: str,
        params: Params,
        content: dict[str, Any],
        *,
        html: str | None = None,
    ) -> dict[str, Any]:
        """Validates the common send options, applies access and flood checks, stores."""
        markup, keyboard = self._reply_markup(params)
        reply_to = self._reply_target(chat, params)
        self._check_access(chat)
        self.state.admit_send(chat, method)
        if reply_to is not None:
            content["reply_to_message"] = reply_to
        if markup is not None:
            content["reply_markup"] = markup
        message = self.state.add_message(chat, content, sender=None, html=html, keyboard=keyboard)
        return message.version.payload

    def _message_to_edit(self, params: Params) -> tuple[Chat, StoredMessage]:
        if params.text("inline_message_id"):
            raise bad_request("message to edit not found")
        chat = self._chat(params)
        message_id = params.integer("message_id", required=True)
        assert message_id is not None
        message = chat.messages.get(message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return chat, message

    def _commit_edit(
        self,
        chat: Chat,
        message: StoredMessage,
        method: str,
        changes: dict[str, Any],
        html: str | None,
    ) -> dict[str, Any]:
        """Applies changes (None values remove keys) unless they change nothing."""
        old = message.version.payload
        new = {key: value for key, value in old.items() if key != "edit_date"}
        for key, value in changes.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = value
        if new == {key: value for key, value in old.items() if key != "edit_date"}:
            raise bad_request(NOT_MODIFIED)
        self._check_access(chat)
        self.state.admit_send(chat, method)
        new["edit_date"] = int(time.time())
        version = MessageVersion(new, html, message.version.keyboard)
        self.state.replace_message(chat, message, version, "bot")
        return new

    def _input_file(self, params: Params, field: str, kind: str) -> StoredFile:
        """The uploaded file, or the stored one a file_id names (re-sending without upload)."""
        value = params.values.get(field)
        upload = params.uploads.get(field)
        if upload is None and isinstance(value, str) and value.startswith("attach://"):
            upload = params.uploads.get(value.removeprefix("attach://"))
        if upload is not None:
            if not upload.data:
                raise bad_request("file must be non-empty")
            return self.state.files.add(kind, upload.data, upload.file_name, upload.content_type)
        if not isinstance(value, str) or not value:
            raise bad_request(f"there is no {field} in the request")
        stored = self.state.files.get(value)
        if stored is not None:
            if stored.kind != kind:
                raise bad_request("type of file mismatch")
            return stored
        if value.startswith(("http://", "https://")):
            raise bad_request("failed to get HTTP URL content")
        raise bad_request("wrong file identifier/HTTP URL specified")

    @staticmethod
    def _coordinates(params: Params) -> dict[str, float]:
        latitude = params.number("latitude", required=True)
        longitude = params.number("longitude", required=True)
        assert latitude is not None and longitude is not None
        if not -90 <= latitude <= 90:
            raise bad_request("wrong latitude")
        if not -180 <= longitude <= 180:
            raise bad_request("wrong longitude")
        return {"latitude": latitude, "longitude": longitude}

    # -- bot identity, updates, webhook, commands ------------------------------------------

    async def get_me(self, params: Params) -> Result:
        return {
            **self.state.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def get_updates(self, params: Params) -> Result:
        if self.state.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        limit = min(max(params.integer("limit") or 100, 1), 100)
        timeout = max(params.number("timeout") or 0.0, 0.0)
        return await self.state.get_updates(params.integer("offset"), limit, timeout)

    async def set_webhook(self, params: Params) -> Result:
        url = params.text("url") or ""
        secret = params.text("secret_token")
        if url and not url.startswith("https://"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        if params.flag("drop_pending_updates"):
            self.state.updates.clear()
        self.state.webhook_url = url
        self.state.webhook_secret = secret if url else None
        self.state.webhook_last_error = None
        self.state.updates_signal.notify()  # the pusher starts delivering at once
        return True

    async def delete_webhook(self, params: Params) -> Result:
        if params.flag("drop_pending_updates"):
            self.state.updates.clear()
        self.state.webhook_url = ""
        self.state.webhook_secret = None
        return True

    async def get_webhook_info(self, params: Params) -> Result:
        info: dict[str, Any] = {
            "url": self.state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.state.updates),
        }
        if self.state.webhook_last_error is not None:
            info["last_error_date"], info["last_error_message"] = self.state.webhook_last_error
        return info

    def _commands_key(self, params: Params) -> tuple[str, str]:
        scope = params.structured("scope") or {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in COMMAND_SCOPES:
            raise bad_request("can't parse BotCommandScope")
        key = scope["type"]
        if key in ("chat", "chat_administrators", "chat_member"):
            # Like Telegram: a chat the bot has never seen (someone who never opened it).
            chat_id = scope.get("chat_id")
            if not isinstance(chat_id, int | str) or self.state.find_chat(chat_id) is None:
                raise bad_request("chat not found")
            key += f":{chat_id}"
        if scope["type"] == "chat_member":
            key += f":{scope.get('user_id')}"
        language = params.text("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise bad_request("invalid language code specified")
        return key, language

    async def set_my_commands(self, params: Params) -> Result:
        commands = params.structured("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand")
            name, description = command.get("command"), command.get("description")
            if not isinstance(name, str) or not COMMAND_NAME.fullmatch(name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("command description must be non-empty")
            cleaned.append({"command": name, "description": description})
        key = self._commands_key(params)
        if cleaned:
            self.state.commands[key] = cleaned
        else:
            self.state.commands.pop(key, None)
        return True

    async def get_my_commands(self, params: Params) -> Result:
        return self.state.commands.get(self._commands_key(params), [])

    async def delete_my_commands(self, params: Params) -> Result:
        self.state.commands.pop(self._commands_key(params), None)
        return True

    # -- sending -----------------------------------------------------------------------------

    async def send_message(self, params: Params) -> Result:
        chat = self._chat(params)
        text, entities, html = self._formatted(
            params, "text", "entities", limit=MAX_TEXT_LENGTH, required=True
        )
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        preview = params.structured("link_preview_options")
        if isinstance(preview, dict) and preview:
            content["link_preview_options"] = preview
        return self._deliver(chat, "sendMessage", params, content, html=html)

    async def send_venue(self, params: Params) -> Result:
        chat = self._chat(params)
        location = self._coordinates(params)
        title = params.text("title", required=True)
        address = params.text("address", required=True)
        venue: dict[str, Any] = {"location": location, "title": title, "address": address}
        for optional in (
            "foursquare_id",
            "foursquare_type",
            "google_place_id",
            "google_place_type",
        ):
            if params.text(optional):
                venue[optional] = params.text(optional)
        return self._deliver(chat, "sendVenue", params, {"venue": venue, "location": location})

    async def send_location(self, params: Params) -> Result:
        chat = self._chat(params)
        location: dict[str, Any] = self._coordinates(params)
        for optional in ("horizontal_accuracy", "live_period", "heading"):
            if params.number(optional) is not None:
                location[optional] = params.number(optional)
        return self._deliver(chat, "sendLocation", params, {"location": location})

    def _with_caption(self, params: Params, content: dict[str, Any]) -> str | None:
        caption, entities, html = self._formatted(
            params, "caption", "caption_entities", limit=MAX_CAPTION_LENGTH, required=False
        )
        if caption:
            content["caption"] = caption
        if entities:
            content["caption_entities"] = entities
        return html

    async def send_document(self, params: Params) -> Result:
        chat = self._chat(params)
        stored = self._input_file(params, "document", "document")
        document: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "mime_type": stored.mime_type,
            "file_size": stored.size,
        }
        if stored.file_name:
            document["file_name"] = stored.file_name
        content: dict[str, Any] = {"document": document}
        html = self._with_caption(params, content)
        return self._deliver(chat, "sendDocument", params, content, html=html)

    async def send_photo(self, params: Params) -> Result:
        chat = self._chat(params)
        stored = self._input_file(params, "photo", "photo")
        width, height = image_size(stored.data)
        photo = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "file_size": stored.size,
        }
        content: dict[str, Any] = {"photo": [photo]}
        html = self._with_caption(params, content)
        return self._deliver(chat, "sendPhoto", params, content, html=html)

    async def send_chat_action(self, params: Params) -> Result:
        chat = self._chat(params)
        action = params.text("action", required=True)
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._check_access(chat)
        self.state.record_event(chat, "action", "bot", details={"action": action})
        return True

    # -- editing and deleting -----------------------------------------------------------------

    async def edit_message_text(self, params: Params) -> Result:
        chat, message = self._message_to_edit(params)
        if "text" not in message.version.payload:
            raise bad_request("there is no text in the message to edit")
        text, entities, html = self._formatted(
            params, "text", "entities", limit=MAX_TEXT_LENGTH, required=True
        )
        markup, _ = self._reply_markup(params)
        changes = {"text": text, "entities": entities or None, "reply_markup": markup}
        preview = params.structured("link_preview_options")
        if isinstance(preview, dict):
            changes["link_preview_options"] = preview or None
        return self._commit_edit(chat, message, "editMessageText", changes, html)

    async def edit_message_reply_markup(self, params: Params) -> Result:
        chat, message = self._message_to_edit(params)
        markup, _ = self._reply_markup(params)
        changes = {"reply_markup": markup}
        return self._commit_edit(
            chat, message, "editMessageReplyMarkup", changes, message.version.html
        )

    async def delete_message(self, params: Params) -> Result:
        chat = self._chat(params)
        message_id = params.integer("message_id", required=True)
        assert message_id is not None
        try:
            self.state.delete_message(chat, message_id, "bot")
        except LookupError as exc:
            raise bad_request("message to delete not found") from exc
        return True

    # -- callback queries and chats --------------------------------------------------------

    async def answer_callback_query(self, params: Params) -> Result:
        query_id = params.text("callback_query_id", required=True)
        text = params.text("text") or ""
        if len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise bad_request("MESSAGE_TOO_LONG")
        origin = self.state.open_callback_queries.pop(query_id or "", None)
        if origin is None:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        chat_id, user_id = origin
        chat = self.state.chats.get(chat_id)
        if chat is not None:
            details = {
                "query_id": query_id,
                "user_id": user_id,
                "text": text,
                "show_alert": params.flag("show_alert"),
                "url": params.text("url"),
            }
            self.state.record_event(chat, "callback_answer", "bot", details=details)
        return True

    async def leave_chat(self, params: Params) -> Result:
        chat = self._chat(params)
        if chat.type == "private":
            raise bad_request("chat member status can't be changed in private chats")
        self._check_access(chat)
        chat.bot_is_member = False
        self.state.record_event(chat, "leave", "bot")
        return True

    async def get_chat(self, params: Params) -> Result:
        chat = self._chat(params)
        return {
            **chat.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }


def _validated_inline_keyboard(rows: Any) -> list[list[dict[str, Any]]]:
    """Telegram's checks on inline buttons, the ones a bot typically trips over."""
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request(
                    'can\'t parse inline keyboard button: Field "text" must be of type String'
                )
            if not any(action in button for action in BUTTON_ACTIONS):
                raise bad_request(
                    "can't parse inline keyboard button: Text buttons are unallowed in the "
                    "inline keyboard"
                )
            data = button.get("callback_data")
            if data is not None and (
                not isinstance(data, str)
                or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES
            ):
                raise bad_request("BUTTON_DATA_INVALID")
            url = button.get("url")
            if url is not None and (
                not isinstance(url, str) or not url.startswith(("http://", "https://", "tg://"))
            ):
                raise bad_request("BUTTON_URL_INVALID")
    return rows
