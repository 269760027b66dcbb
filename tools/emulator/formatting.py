"""Telegram's HTML parse mode: turns marked-up text into plain text plus entities.

The bot under test must learn about malformed markup here rather than in production, so this
follows the rules of Telegram's own parser (tdlib's ``parse_html``): only the documented tags,
strict nesting, numeric and four named character references, and error texts that match
Telegram's ("Unsupported start tag "br" at byte offset 12"). Offsets and lengths of entities
are in UTF-16 code units, as in the Bot API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENTITY_BY_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class EntityParseError(ValueError):
    """Markup Telegram would refuse; the message is the detail after "can't parse entities: "."""


@dataclass
class _OpenTag:
    name: str
    attributes: dict[str, str]
    offset: int  # UTF-16 offset where the tag's content starts
    language: str | None = None  # set by a <code class="language-x"> nested in a <pre>


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Bot API entity offsets."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _decode_reference(text: str, index: int) -> tuple[str, int] | None:
    """Decodes the character reference starting at ``text[index] == '&'``; None keeps '&' as is."""
    end = text.find(";", index + 1, index + 12)
    if end == -1:
        return None
    body = text[index + 1 : end]
    if body.startswith("#"):
        try:
            code = int(body[2:], 16) if body[1:2] in ("x", "X") else int(body[1:])
            return chr(code), end + 1
        except (ValueError, OverflowError):
            return None
    if body in NAMED_REFERENCES:
        return NAMED_REFERENCES[body], end + 1
    return None


def _read_attributes(text: str, index: int, tag: str, tag_start: int) -> tuple[dict[str, str], int]:
    """Parses attributes up to the closing '>' and returns them with the index after it."""
    attributes: dict[str, str] = {}
    length = len(text)
    while True:
        while index < length and text[index].isspace():
            index += 1
        if index >= length:
            raise EntityParseError(
                f"Unclosed start tag at byte offset {_byte_offset(text, tag_start)}"
            )
        if text[index] == ">":
            return attributes, index + 1
        name_start = index
        while index < length and (text[index].isalnum() or text[index] in "-_"):
            index += 1
        name = text[name_start:index].lower()
        if not name:
            raise EntityParseError(
                f'Empty attribute name in the tag "{tag}" at byte offset '
                f"{_byte_offset(text, tag_start)}"
            )
        while index < length and text[index].isspace():
            index += 1
        if index < length and text[index] == "=":
            index += 1
            while index < length and text[index].isspace():
                index += 1
            value, index = _read_attribute_value(text, index, tag_start)
        else:
            value = ""
        attributes[name] = value


def _read_attribute_value(text: str, index: int, tag_start: int) -> tuple[str, int]:
    length = len(text)
    if index < length and text[index] in "\"'":
        quote = text[index]
        end = text.find(quote, index + 1)
        if end == -1:
            raise EntityParseError(
                f"Unclosed start tag at byte offset {_byte_offset(text, tag_start)}"
            )
        return _unescape(text[index + 1 : end]), end + 1
    start = index
    while index < length and not text[index].isspace() and text[index] != ">":
        index += 1
    return _unescape(text[start:index]), index


def _unescape(value: str) -> str:
    parts: list[str] = []
    index = 0
    while index < len(value):
        decoded = _decode_reference(value, index) if value[index] == "&" else None
        if decoded:
            parts.append(decoded[0])
            index = decoded[1]
        else:
            parts.append(value[index])
            index += 1
    return "".join(parts)


def _entity_for(tag: _OpenTag, end_offset: int) -> dict[str, Any] | None:
    """The Bot API MessageEntity a closed tag produces, or None for an empty span."""
    length = end_offset - tag.offset
    if length <= 0:
        return None
    kind = ENTITY_BY_TAG[tag.name]
    entity: dict[str, Any] = {"type": kind, "offset": tag.offset, "length": length}
    if kind == "text_link":
        url = tag.attributes.get("href", "")
        if not url:
            return None
        entity["url"] = url
    elif kind == "pre" and tag.language:
        entity["language"] = tag.language
    elif kind == "blockquote" and "expandable" in tag.attributes:
        entity["type"] = "expandable_blockquote"
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = tag.attributes["emoji-id"]
    return entity


def _open_tag(text: str, index: int, stack: list[_OpenTag], offset: int) -> int:
    """Handles a start tag at ``text[index] == '<'``; returns the index after it."""
    length = len(text)
    name_end = index + 1
    while name_end < length and not text[name_end].isspace() and text[name_end] not in ">/":
        name_end += 1
    if name_end >= length:
        raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, index)}")
    name = text[index + 1 : name_end].lower()
    if name not in ENTITY_BY_TAG:
        raise EntityParseError(
            f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, index)}'
        )
    attributes, after = _read_attributes(text, name_end, name, index)
    if name == "span" and attributes.get("class") != "tg-spoiler":
        raise EntityParseError(
            f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, index)}'
        )
    if name == "tg-emoji" and not attributes.get("emoji-id", "").isdigit():
        raise EntityParseError(
            f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset '
            f"{_byte_offset(text, index)}"
        )
    stack.append(_OpenTag(name, attributes, offset))
    return after


def _close_tag(
    text: str, index: int, stack: list[_OpenTag], offset: int
) -> tuple[int, dict[str, Any] | None]:
    """Handles an end tag at ``text[index:index+2] == '</'``; returns the index after it and the
    entity it closes."""
    end = text.find(">", index)
    if end == -1:
        raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(text, index)}")
    name = text[index + 2 : end].strip().lower()
    if not stack:
        raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, index)}")
    tag = stack.pop()
    if name != tag.name:
        raise EntityParseError(
            f'Unmatched end tag at byte offset {_byte_offset(text, index)}, expected "</{tag.name}>", '
            f'found "</{name}>"'
        )
    language = tag.attributes.get("class", "").removeprefix("language-")
    parent = stack[-1] if stack else None
    if tag.name == "code" and parent and parent.name == "pre" and parent.offset == tag.offset:
        # <pre><code class="language-x">…</code></pre> is one pre entity with a language.
        parent.language = language or None
        return end + 1, None
    return end + 1, _entity_for(tag, offset)


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Returns the plain text and the entities Telegram derives from ``text`` in HTML mode."""
    plain: list[str] = []
    entities: list[dict[str, Any]] = []
    stack: list[_OpenTag] = []
    offset = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "<":
            if text.startswith("</", index):
                index, entity = _close_tag(text, index, stack, offset)
                if entity:
                    entities.append(entity)
            else:
                index = _open_tag(text, index, stack, offset)
            continue
        decoded = _decode_reference(text, index) if char == "&" else None
        if decoded:
            char, index = decoded
        else:
            index += 1
        plain.append(char)
        offset += 2 if ord(char) > 0xFFFF else 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
    return "".join(plain), entities


def strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trims surrounding whitespace as Telegram does, keeping entities aligned with the text."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    limit = utf16_len(stripped)
    kept: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, limit)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept
