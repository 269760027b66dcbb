"""Translations: catalogs from `locales/`, CLDR plural forms and dates through Babel.

Each language has a folder (`locales/fr/`) with one YAML file per feature. A file is a YAML
tree flattened into dotted keys. A message with plural forms is a mapping
of CLDR plural categories (zero, one, two, few, many, other), chosen with Babel's rules for the
language: Arabic uses all six. Parameters are `{name}` placeholders; string parameters are
HTML-escaped because every message is sent with parse_mode HTML.
"""

from __future__ import annotations

import html
import string
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from babel import Locale
from babel.dates import format_datetime

from locales import LOCALES_DIR

# libyaml's safe loader when PyYAML has it (same results, about 10 times faster: the
# catalogs and surveys read at start-up took a third of a second in pure Python, issue 6).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PLURAL_CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})
LANGUAGE_NAMES = {"fr": "Français", "en": "English", "ar": "العربية"}
RTL_LANGUAGES = frozenset({"ar"})

Message = str | dict[str, str]


class Html(str):
    """Text already rendered as HTML (a message built from other messages): not escaped again."""


class CatalogError(Exception):
    """A catalog file is unreadable or malformed (names the file and key)."""


def _flatten(tree: dict[str, Any], prefix: str, out: dict[str, Message], source: Path) -> None:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, str):
            out[dotted] = value
        elif isinstance(value, dict) and value and set(value) <= PLURAL_CATEGORIES:
            if "other" not in value or not all(isinstance(v, str) for v in value.values()):
                raise CatalogError(f"{source.name}: {dotted}: plural forms need 'other' and text")
            out[dotted] = dict(value)
        elif isinstance(value, dict):
            _flatten(value, f"{dotted}.", out, source)
        else:
            raise CatalogError(f"{source.name}: {dotted}: expected text or a mapping")


def load_language(directory: Path) -> dict[str, Message]:
    """All catalog files of one language (one file per feature), merged; keys must be unique."""
    messages: dict[str, Message] = {}
    for path in sorted(directory.glob("*.yaml")):
        catalog = load_catalog(path)
        clash = sorted(set(catalog) & set(messages))
        if clash:
            raise CatalogError(f"{directory.name}/{path.name}: keys defined twice: {clash}")
        messages.update(catalog)
    return messages


def load_catalog(path: Path) -> dict[str, Message]:
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path.name}: {exc}") from exc
    if not isinstance(tree, dict):
        raise CatalogError(f"{path.name}: expected a mapping at the top")
    messages: dict[str, Message] = {}
    _flatten(tree, "", messages, path)
    return messages


def placeholders(text: str) -> set[str]:
    """The `{name}` placeholders of a message, for the catalog consistency test."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@cache
def _locale(language: str) -> Locale:
    return Locale.parse(language)


@dataclass(frozen=True)
class Translator:
    """Renders messages in one of the shipped languages."""

    catalogs: dict[str, dict[str, Message]]
    default_language: str

    @classmethod
    def load(cls, default_language: str = "fr", directory: Path = LOCALES_DIR) -> Translator:
        catalogs = {
            path.name: load_language(path)
            for path in sorted(directory.iterdir())
            if path.is_dir() and path.name in LANGUAGE_NAMES
        }
        if default_language not in catalogs:
            raise CatalogError(f"no catalog for the default language {default_language!r}")
        return cls(catalogs, default_language)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(code for code in LANGUAGE_NAMES if code in self.catalogs)

    def resolve_language(self, chosen: str | None, telegram_code: str | None) -> str:
        """The person's choice wins over their Telegram language, which wins over the default."""
        if chosen is not None and chosen in self.catalogs:
            return chosen
        if telegram_code:
            base = telegram_code.split("-")[0].lower()
            if base in self.catalogs:
                return base
        return self.default_language

    def _message(self, language: str, key: str) -> Message:
        catalog = self.catalogs.get(language) or self.catalogs[self.default_language]
        message = catalog.get(key)
        if message is None:
            message = self.catalogs[self.default_language][key]
        return message

    def text(self, language: str, key: str, /, **params: Any) -> str:
        """The message `key` in `language`, with escaped parameters."""
        message = self._message(language, key)
        if isinstance(message, dict):
            raise KeyError(f"{key} has plural forms: use plural()")
        return message.format(**_escaped(params)) if params else message

    def label(self, language: str, key: str, /, **params: Any) -> str:
        """The message as plain text, for buttons and toasts (no HTML, so nothing escaped)."""
        message = self._message(language, key)
        if isinstance(message, dict):
            raise KeyError(f"{key} has plural forms: use plural()")
        return message.format(**params) if params else message

    def plural(self, language: str, key: str, count: int, /, **params: Any) -> str:
        """The plural form of `key` that fits `count` in `language` ({count} is available)."""
        message = self._message(language, key)
        if isinstance(message, str):
            raise KeyError(f"{key} has no plural forms: use text()")
        category = _locale(language).plural_form(count)
        form = message.get(category, message["other"])
        return form.format(count=count, **_escaped(params))

    def date(self, language: str, moment: datetime, tz: ZoneInfo) -> str:
        """A day in words, e.g. "mardi 2 décembre", in the programme's time zone."""
        return format_datetime(
            moment, self.text(language, "format.date"), tzinfo=tz, locale=_locale(language)
        )

    def time(self, language: str, moment: datetime, tz: ZoneInfo) -> str:
        return format_datetime(
            moment, self.text(language, "format.time"), tzinfo=tz, locale=_locale(language)
        )

    def short_date(self, language: str, moment: datetime, tz: ZoneInfo) -> str:
        """A compact day for buttons, e.g. "mar. 2 déc."."""
        return format_datetime(
            moment, self.text(language, "format.short_date"), tzinfo=tz, locale=_locale(language)
        )

    def localized(self, texts: dict[str, str] | str, language: str) -> str:
        """Pick an operator-written text in the person's language, falling back to the default."""
        if isinstance(texts, str):
            return texts
        return (
            texts.get(language)
            or texts.get(self.default_language)
            or next(iter(texts.values()), "")
        )


def _escaped(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: html.escape(v, quote=False) if isinstance(v, str) and not isinstance(v, Html) else v
        for k, v in params.items()
    }
