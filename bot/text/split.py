"""Long texts for Telegram: split under the 4096-character limit, never cut mid-line."""

from __future__ import annotations

TELEGRAM_TEXT_LIMIT = 4096


def telegram_length(text: str) -> int:
    """Telegram counts UTF-16 code units: an emoji outside the BMP counts as two."""
    return len(text.encode("utf-16-le")) // 2


def split_for_telegram(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Split at paragraph, then line, then word boundaries so that no part exceeds `limit`.

    Nothing is dropped: joining the parts with the separators they were split at gives the
    text back. Only a single word longer than the limit is broken inside.
    """
    if telegram_length(text) <= limit:
        return [text]
    for separator in ("\n\n", "\n", " "):
        pieces = text.split(separator)
        if len(pieces) > 1:
            break
    else:
        return _hard_split(text, limit)
    parts: list[str] = []
    current = ""
    for piece in pieces:
        candidate = piece if not current else current + separator + piece
        if telegram_length(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        if telegram_length(piece) <= limit:
            current = piece
        else:
            *whole, current = split_for_telegram(piece, limit)
            parts.extend(whole)
    if current:
        parts.append(current)
    return parts


def _hard_split(text: str, limit: int) -> list[str]:
    parts, current = [], ""
    for char in text:
        if telegram_length(current + char) > limit:
            parts.append(current)
            current = ""
        current += char
    return [*parts, current] if current else parts
