"""The broadcast texts: every key the code uses exists, buttons and toasts fit Telegram."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.text.i18n import Translator

LANGUAGES = ("fr", "en", "ar")
SOURCE = (Path(__file__).parent.parent / "handlers" / "broadcasts.py").read_text()
BUTTON_LIMIT = 40
TOAST_LIMIT = 200


def keys_used() -> set[str]:
    keys = set(re.findall(r'"(broadcast\.[a-z_.]+)"', SOURCE))
    kinds = ("all", "territory", "registrants", "waitlist", "need", "language")
    keys |= {f"broadcast.button.kind_{kind}" for kind in kinds}
    keys |= {f"broadcast.audience.{kind}" for kind in kinds}
    keys |= {f"broadcast.choose_{kind}" for kind in kinds if kind != "all"}
    keys |= {
        f"broadcast.reason.{why}" for why in ("blocked", "opted_out", "unreachable", "not_prepared")
    }
    return keys


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_the_handlers_use_exists(language: str) -> None:
    catalog = Translator.load("fr").catalogs[language]
    assert sorted(key for key in keys_used() if key not in catalog) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_buttons_and_toasts_are_short(language: str) -> None:
    catalog = Translator.load("fr").catalogs[language]
    for key in keys_used():
        text = catalog[key]
        if key.startswith("broadcast.button.") or key == "broadcast.settings_button":
            assert isinstance(text, str) and len(text) <= BUTTON_LIMIT, key
        if key.startswith("broadcast.toast."):
            assert isinstance(text, str) and len(text) <= TOAST_LIMIT, key
