"""Text that people typed, placed inside the bot's own lines: isolated, and bounded when quoted.

A first name or an argument is user input: a right-to-left override (U+202E) in it would
reverse the rest of the line (the channel notice, the relay header), and a 5,000-character
argument echoed back would make the reply longer than Telegram accepts. Every place that puts
user text inside a line goes through `isolated` (names) or `quoted` (echoes of what was typed).
Both return plain text: `Translator.text` HTML-escapes it like any other parameter.
"""

from __future__ import annotations

# Unicode bidirectional controls (UAX #9): embeddings and overrides end with PDF, isolates
# with PDI. A PDI also ends the embeddings opened since its isolate.
_EMBEDDINGS = frozenset("\u202a\u202b\u202d\u202e")  # LRE, RLE, LRO, RLO
_ISOLATES = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI
PDF, PDI, FSI = "\u202c", "\u2069", "\u2068"
ELLIPSIS = "…"
# How much of what someone typed an answer quotes back: enough to recognise it.
QUOTE_LIMIT = 64


def balanced_bidi(text: str) -> str:
    """The text without the bidi controls that open and are never closed, or close nothing."""
    kept: list[str] = []
    opened: list[tuple[int, bool]] = []  # (index in kept, is an isolate)
    dropped: set[int] = set()
    for char in text:
        if char in _EMBEDDINGS or char in _ISOLATES:
            opened.append((len(kept), char in _ISOLATES))
        elif char == PDF:
            if not opened or opened[-1][1]:
                continue  # closes nothing (an isolate is closed by PDI only)
            opened.pop()
        elif char == PDI:
            if not any(isolate for _, isolate in opened):
                continue
            while True:
                index, isolate = opened.pop()
                if isolate:
                    break
                dropped.add(index)  # an embedding left open inside the isolate
        kept.append(char)
    dropped.update(index for index, _ in opened)
    return "".join(char for index, char in enumerate(kept) if index not in dropped)


def isolated(text: str) -> str:
    """User text set apart from the line around it (FSI … PDI), its own controls balanced."""
    return f"{FSI}{balanced_bidi(text)}{PDI}"


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """What someone typed, as an answer quotes it back: at most `limit` characters, isolated."""
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + ELLIPSIS
    return isolated(text)
