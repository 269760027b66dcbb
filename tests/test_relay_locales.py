"""The relay's button labels and toasts fit (tests/test_locales.py checks everything else)."""

from __future__ import annotations

import pytest

from bot.text.i18n import LANGUAGE_NAMES, load_language
from locales import LOCALES_DIR

BUTTON_LIMIT = 40
TOAST_LIMIT = 200
BUTTONS = ("relay.button", "relay.cancel", "relay.answer")
TOASTS = ("relay.unavailable",)


@pytest.mark.parametrize("language", tuple(LANGUAGE_NAMES))
def test_relay_buttons_and_toasts_are_short(language: str) -> None:
    catalog = load_language(LOCALES_DIR / language)
    labels = {key: catalog[key] for key in BUTTONS}
    toasts = {key: catalog[key] for key in TOASTS}
    assert all(isinstance(text, str) for text in (*labels.values(), *toasts.values()))
    assert {key: text for key, text in labels.items() if len(text) > BUTTON_LIMIT} == {}
    assert {key: text for key, text in toasts.items() if len(text) > TOAST_LIMIT} == {}
