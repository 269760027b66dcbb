"""User text inside the bot's lines: bidi controls balanced and isolated, quotes bounded."""

from __future__ import annotations

import pytest

from bot.text.i18n import Translator
from bot.text.user_text import QUOTE_LIMIT, balanced_bidi, isolated, quoted

RLO, PDF, LRI, FSI, PDI, RLE = "\u202e", "\u202c", "\u2066", "\u2068", "\u2069", "\u202b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice", "Alice"),
        (f"{RLO}Alice", "Alice"),  # opened, never closed
        (f"Alice{PDF}{PDI}", "Alice"),  # closers with nothing to close
        (f"{RLO}ab{PDF}c", f"{RLO}ab{PDF}c"),  # balanced: kept
        (f"{LRI}a{RLO}b{PDI}c", f"{LRI}ab{PDI}c"),  # the PDI ends the override: dropped
        (f"{LRI}a{PDF}b{PDI}", f"{LRI}ab{PDI}"),  # a PDF does not close an isolate
        (f"{RLE}{LRI}x{PDI}", f"{LRI}x{PDI}"),
        ("كريم", "كريم"),
    ],
)
def test_unbalanced_bidi_controls_are_dropped_balanced_ones_kept(text, expected):
    assert balanced_bidi(text) == expected


def test_isolated_wraps_in_first_strong_isolate():
    assert isolated(f"{RLO}Alice") == f"{FSI}Alice{PDI}"


def test_quoted_is_bounded_with_an_ellipsis_and_escaped_by_the_translator():
    long = "<b>" + "x" * 5000
    quote = quoted(long)
    assert len(quote) == QUOTE_LIMIT + 2  # the two isolate marks
    assert quote.startswith(f"{FSI}<b>xxx") and quote.endswith(f"…{PDI}")
    assert quoted("mediator") == f"{FSI}mediator{PDI}"
    text = Translator.load("fr").text("fr", "roles.unknown_role", value=quote, keys="a")
    assert "&lt;b&gt;" in text and "<b>" not in text and len(text) < 200
