"""Splitting long texts for Telegram keeps everything and respects the limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.text.split import split_for_telegram, telegram_length


def test_short_text_is_one_part() -> None:
    assert split_for_telegram("bonjour") == ["bonjour"]


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    paragraphs = [f"Commentaire {n} : " + "très utile " * 30 for n in range(40)]
    text = "\n\n".join(paragraphs)
    parts = split_for_telegram(text, limit=1000)
    assert all(telegram_length(p) <= 1000 for p in parts)
    assert "\n\n".join(parts) == text
    assert all(part.startswith("Commentaire") for part in parts)


def test_emoji_count_as_two_units() -> None:
    text = "🙂" * 3000  # 6000 UTF-16 units, no separator
    parts = split_for_telegram(text)
    assert [telegram_length(p) for p in parts] == [4096, 1904]
    assert "".join(parts) == text


@given(st.text(alphabet=st.sampled_from("ab 🙂\n"), max_size=400), st.integers(8, 60))
def test_parts_fit_and_nothing_is_lost(text: str, limit: int) -> None:
    parts = split_for_telegram(text, limit)
    assert all(telegram_length(p) <= limit for p in parts)
    flattened = "".join(parts)
    assert sorted(flattened.replace(" ", "").replace("\n", "")) == sorted(
        text.replace(" ", "").replace("\n", "")
    )
