"""Callback data of inline buttons: short, versioned, validated and signed.

Layout: `1|action|arg|arg...|tag`, at most 64 bytes (Telegram's limit). The tag is a truncated
HMAC over the data and the id of the person the button was made for, so a forged button, or a
button used by someone else, is refused. Buttons need no server-side state, so they keep
working after a restart; what they point to is re-checked in the database on every press.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

VERSION = "1"
MAX_BYTES = 64
_TAG_BYTES = 6
_MAX_ID = 2**31 - 1

# action -> (code, kinds of its arguments). Codes are short and must never be reused or
# changed: buttons already sent carry them. Kinds: "id" (0..2^31-1), "flag" (0 or 1),
# "lang" (a shipped language code).
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "consent": ("c", ("flag",)),  # accept (1) or decline (0) the privacy notice
    "notice": ("n", ("lang",)),  # show the notice in another language, before consent
    "languages": ("L", ()),  # show the language choice
    "lang": ("l", ("lang",)),  # choose the language
    "menu": ("m", ()),  # the main menu
    "list": ("w", ("id", "id", "id")),  # workshops: territory (0 = all), theme (0 = all), page
    "pick_area": ("a", ("id",)),  # choose a neighbourhood, keeping the theme filter
    "pick_theme": ("t", ("id",)),  # choose a theme, keeping the neighbourhood filter
    "card": ("k", ("id", "id", "id", "id")),  # workshop, then the list state to go back to
    "register": ("r", ("id", "id", "id", "id")),  # same arguments as card
    "venue": ("v", ("id",)),  # send the venue of a workshop on a map
    "cancel_ask": ("x", ("id", "flag")),  # workshop, origin (0 = card, 1 = /mine)
    "cancel_yes": ("y", ("id", "flag")),
    "mine": ("i", ()),  # the person's registrations
    "help": ("h", ()),
}
_NAMES = {code: name for name, (code, _) in ACTIONS.items()}
_KINDS = frozenset({"id", "flag", "lang"})


def define_actions(actions: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    """Let a feature module declare its buttons (at import); names and codes must be new."""
    for name, (code, kinds) in actions.items():
        if name in ACTIONS or code in _NAMES:
            raise ValueError(f"callback action {name!r} or code {code!r} already defined")
        if "|" in code or not set(kinds) <= _KINDS:
            raise ValueError(f"callback action {name!r}: bad code or argument kinds")
        ACTIONS[name] = (code, kinds)
        _NAMES[code] = name


LANGUAGES = frozenset({"fr", "en", "ar"})


@dataclass(frozen=True)
class Callback:
    action: str
    args: tuple[int | str, ...]

    def int_arg(self, index: int) -> int:
        value = self.args[index]
        assert isinstance(value, int)
        return value


class CallbackCodec:
    """Encodes and checks callback data with a secret derived from the bot token."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"capacity-bot callbacks\0" + secret).digest()

    def _tag(self, user_id: int, body: str) -> str:
        digest = hmac.new(self._key, f"{user_id}\0{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_TAG_BYTES]).decode().rstrip("=")

    def encode(self, user_id: int, action: str, *args: int | str) -> str:
        code, kinds = ACTIONS[action]
        if len(args) != len(kinds):
            raise ValueError(f"{action} takes {len(kinds)} arguments")
        body = "|".join([VERSION, code, *(str(a) for a in args)])
        data = f"{body}|{self._tag(user_id, body)}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {action}")
        return data

    def decode(self, user_id: int, data: str | None) -> Callback | None:
        """The callback, or None when the data is stale, forged, malformed or not for this user."""
        if not data:
            return None
        try:
            size = len(data.encode())
        except UnicodeEncodeError:  # a lone surrogate: no client sends it, JSON can carry it
            return None
        if size > MAX_BYTES:
            return None
        body, _, tag = data.rpartition("|")
        parts = body.split("|")
        if len(parts) < 2 or parts[0] != VERSION or parts[1] not in _NAMES:
            return None
        if not hmac.compare_digest(tag, self._tag(user_id, body)):
            return None
        action = _NAMES[parts[1]]
        _, kinds = ACTIONS[action]
        raw_args = parts[2:]
        if len(raw_args) != len(kinds):
            return None
        args: list[int | str] = []
        for kind, raw in zip(kinds, raw_args, strict=True):
            value = _parse(kind, raw)
            if value is None:
                return None
            args.append(value)
        return Callback(action, tuple(args))


def _parse(kind: str, raw: str) -> int | str | None:
    if kind == "lang":
        return raw if raw in LANGUAGES else None
    if not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    if kind == "flag":
        return value if value in (0, 1) else None
    return value if value <= _MAX_ID else None
