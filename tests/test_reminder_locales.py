"""The buttons and toasts of reminders and attendance fit Telegram (and a phone screen)."""

from __future__ import annotations

import pytest

from bot.text.i18n import LANGUAGE_NAMES, load_language
from locales import LOCALES_DIR

BUTTONS = (
    "reminder.coming_button",
    "reminder.cant_button",
    "reminder.cant_confirm",
    "reminder.cant_keep",
    "reminder.calendar_button",
    "attendance.here_button",
    "attendance.roll_refresh",
    "attendance.roll_back",
)
TOASTS = (
    "reminder.coming_toast",
    "reminder.cancelled_toast",
    "reminder.no_seat",
    "reminder.started",
    "attendance.checked_in_toast",
    "attendance.closed_toast",
    "attendance.roll_refused",
    "attendance.roll_closed",
)


@pytest.mark.parametrize("language", tuple(LANGUAGE_NAMES))
def test_labels_and_toasts_are_short_plain_texts(language: str) -> None:
    catalog = load_language(LOCALES_DIR / language)
    for key in BUTTONS + TOASTS:
        assert isinstance(catalog[key], str), key
        assert "<" not in catalog[key], f"{key}: buttons and toasts are not HTML"
    assert {k: catalog[k] for k in BUTTONS if len(catalog[k]) > 40} == {}
    assert {k: catalog[k] for k in TOASTS if len(catalog[k]) > 200} == {}
