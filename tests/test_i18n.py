"""The translator: language precedence, escaping, plural forms and Paris dates."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.settings import load_settings
from bot.text.i18n import Html, Translator

translator = Translator.load("fr")
PARIS = load_settings().tz


def test_choice_wins_over_telegram_language_which_wins_over_default() -> None:
    assert translator.resolve_language("ar", "en-GB") == "ar"
    assert translator.resolve_language(None, "en-GB") == "en"
    assert translator.resolve_language(None, "de") == "fr"
    assert translator.resolve_language("xx", None) == "fr"


def test_parameters_are_escaped_unless_already_html() -> None:
    text = translator.text("fr", "workshop.theme", theme="<b>Tom & Jerry</b>")
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in text
    assert "<b>x</b>" in translator.text("fr", "workshop.theme", theme=Html("<b>x</b>"))
    assert translator.label("fr", "mine.cancel", title="A & B") == "❌ Annuler : A & B"


def test_arabic_uses_its_six_plural_forms() -> None:
    forms = {translator.plural("ar", "list.count", n) for n in (0, 1, 2, 3, 11, 100)}
    assert len(forms) == 6


def test_dates_are_shown_in_paris_time_in_each_language() -> None:
    moment = datetime(2026, 7, 14, 12, 30, tzinfo=UTC)  # 14:30 in Paris (summer time)
    assert translator.date("fr", moment, PARIS) == "mardi 14 juillet"
    assert translator.date("en", moment, PARIS) == "Tuesday 14 July"
    assert translator.time("fr", moment, PARIS) == "14:30"
    assert "يوليو" in translator.date("ar", moment, PARIS)
