"""Message catalogs: same keys, placeholders and plural forms in every language, valid Telegram HTML,
and texts that fit Telegram's limits. No database.

Placeholder rule: for a plain message, every language has exactly the placeholders of the French
message. For a plural message, every form of every language has exactly the placeholders of the
French "other" form, except that a form may leave out `{count}` when the language writes the
number in words. That is allowed only for a category that stands for a single count (among the
integers 0..1000) in that language, e.g. Arabic "zero" (لا توجد ورشات), "one" (ورشة واحدة) and
"two" (ورشتان), or English "one"; never for French "one", which covers 0 and 1.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from babel import Locale
from babel.dates import format_datetime

from bot.text.i18n import LANGUAGE_NAMES, Message, Translator, load_language, placeholders
from locales import LOCALES_DIR

REFERENCE = "fr"
LANGUAGES = tuple(LANGUAGE_NAMES)
OTHERS = tuple(language for language in LANGUAGES if language != REFERENCE)
COUNTS = (0, 1, 2, 3, 11, 100)
TZ = ZoneInfo("Europe/Paris")

# Telegram: message text 1-4096 characters; BotCommand description 3-256; callback answer 0-200.
MESSAGE_LIMIT = 4096
BUTTON_LIMIT = 40  # the project's own limit, so that a label fits on a phone screen
COMMAND_DESCRIPTION = (3, 256)
TOAST_LIMIT = 200

BUTTON_KEYS = (
    "consent.accept",
    "consent.decline",
    "workshop.register",
    "workshop.join_waitlist",
    "workshop.cancel",
    "workshop.leave_waitlist",
    "workshop.map",
    "workshop.back",
    "list.pick_area",
    "list.pick_theme",
    "list.previous",
    "list.next",
    "list.show_all",
    "list.all_areas",
    "list.all_themes",
    "cancel.confirm",
    "cancel.keep",
)
BUTTON_PREFIXES = ("menu.",)
# Texts shown with answerCallbackQuery (handlers/resident.py).
TOAST_KEYS = (
    "consent.thanks",
    "language.saved",
    "button.stale",
    "register.toast_confirmed",
    "register.toast_waitlisted",
    "register.already_confirmed",
    "register.already_waitlisted",
    "register.closed",
    "cancel.toast",
    "cancel.nothing",
    "cancel.started",
)

ALLOWED_TAGS = {"<b>", "</b>", "<i>", "</i>"}
TAG = re.compile(r"<[^<>]*>")
ENTITY = re.compile(r"&(?:lt|gt|amp|quot);")
# A plausible but long parameter, with characters that must be HTML-escaped.
DUMMY = "Atelier « smartphone » <débutants> & co — 12 rue de la République, 42000 Saint-Étienne"


@cache
def catalog(language: str) -> dict[str, Message]:
    return load_language(LOCALES_DIR / language)


@cache
def translator() -> Translator:
    return Translator.load(REFERENCE)


@cache
def categories(language: str) -> frozenset[str]:
    """The CLDR plural categories Babel's rules give for the counts 0..1000."""
    locale = Locale.parse(language)
    return frozenset(locale.plural_form(n) for n in range(1001))


@cache
def single_count_categories(language: str) -> frozenset[str]:
    """Categories that stand for exactly one count in 0..1000, so the words can say the number."""
    locale = Locale.parse(language)
    counts: dict[str, set[int]] = {}
    for n in range(1001):
        counts.setdefault(locale.plural_form(n), set()).add(n)
    return frozenset(category for category, ns in counts.items() if len(ns) == 1)


def forms(message: Message) -> dict[str, str]:
    """A message's texts by category ("" for a plain message)."""
    return message if isinstance(message, dict) else {"": message}


def all_messages() -> list[tuple[str, str, str]]:
    """(language, key, text) for every text, every plural form included."""
    return [
        (language, key, text)
        for language in LANGUAGES
        for key, message in catalog(language).items()
        for text in forms(message).values()
    ]


def html_problems(text: str) -> list[str]:
    """What Telegram's HTML parser would refuse, or what the catalogs forbid."""
    problems = []
    stack: list[str] = []
    for tag in TAG.findall(text):
        if tag not in ALLOWED_TAGS:
            problems.append(f"tag {tag} not allowed")
        elif not tag.startswith("</"):
            stack.append(tag[1:-1])
        elif not stack or stack.pop() != tag[2:-1]:
            problems.append(f"{tag} does not close the last open tag")
    problems += [f"<{name}> not closed" for name in stack]
    rest = ENTITY.sub("", TAG.sub("", text))
    problems += [f"bare {char!r}" for char in "<>&" if char in rest]
    return problems


def params_for(text: str) -> dict[str, str]:
    return {name: DUMMY for name in placeholders(text) if name != "count"}


def utf16_length(text: str) -> int:
    """Telegram counts UTF-16 code units (an emoji may count 2); tags are counted too, to be safe."""
    return len(text.encode("utf-16-le")) // 2


def rendered(language: str, key: str) -> list[str]:
    """Every way the message can be rendered with the dummy parameters."""
    message = catalog(language)[key]
    t = translator()
    if isinstance(message, str):
        return [t.text(language, key, **params_for(message))]
    return [t.plural(language, key, n, **params_for(message["other"])) for n in COUNTS]


def is_button(key: str) -> bool:
    return key in BUTTON_KEYS or key.startswith(BUTTON_PREFIXES)


def test_every_offered_language_has_a_catalog_and_no_other() -> None:
    folders = {path.name for path in LOCALES_DIR.iterdir() if path.is_dir() and path.name[0] != "_"}
    assert folders == set(LANGUAGES)
    files = {
        lang: sorted(p.name for p in (LOCALES_DIR / lang).glob("*.yaml")) for lang in LANGUAGES
    }
    assert all(names == files[REFERENCE] for names in files.values()), files


@pytest.mark.parametrize("language", OTHERS)
def test_same_keys_as_french(language: str) -> None:
    reference, other = catalog(REFERENCE), catalog(language)
    assert sorted(set(reference) - set(other)) == [], f"missing in {language}/"
    assert sorted(set(other) - set(reference)) == [], f"unknown to fr/, in {language}/"
    kinds = {
        key: (isinstance(reference[key], dict), isinstance(other[key], dict)) for key in reference
    }
    assert [key for key, (fr, xx) in kinds.items() if fr != xx] == [], (
        "plural in one language and plain text in the other"
    )


def test_the_listed_button_keys_exist() -> None:
    reference = catalog(REFERENCE)
    assert [key for key in BUTTON_KEYS + TOAST_KEYS if key not in reference] == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_same_placeholders_as_french(language: str) -> None:
    reference, other = catalog(REFERENCE), catalog(language)
    problems = []
    for key, french in reference.items():
        if key not in other:
            continue  # reported by test_same_keys_as_french
        if isinstance(french, str):
            expected = placeholders(french)
            for category, text in forms(other[key]).items():
                if placeholders(text) != expected:
                    problems.append(f"{key}{category}: {placeholders(text)} != {expected}")
            continue
        expected = placeholders(french["other"])
        may_omit_count = single_count_categories(language)
        for category, text in forms(other[key]).items():
            found = placeholders(text)
            allowed = [expected]
            if category in may_omit_count:
                allowed.append(expected - {"count"})
            if found not in allowed:
                problems.append(f"{key}.{category}: {found} != {expected}")
    assert problems == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_plural_forms_are_the_language_categories(language: str) -> None:
    expected = categories(language)
    problems = [
        f"{key}: has {sorted(message)}, {language} needs {sorted(expected)}"
        for key, message in catalog(language).items()
        if isinstance(message, dict) and set(message) != expected
    ]
    assert problems == []


def test_arabic_uses_all_six_categories() -> None:
    assert categories("ar") == {"zero", "one", "two", "few", "many", "other"}


@pytest.mark.parametrize(("language", "key", "text"), all_messages())
def test_only_balanced_bold_and_italic(language: str, key: str, text: str) -> None:
    assert html_problems(text) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_renders_within_telegram_limits(language: str) -> None:
    problems = []
    for key in catalog(language):
        for text in rendered(language, key):
            if html_problems(text):
                problems.append(f"{key}: {html_problems(text)} in {text!r}")
            if not 0 < utf16_length(text) < MESSAGE_LIMIT:
                problems.append(f"{key}: {utf16_length(text)} characters")
    assert problems == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_plural_renders_the_count(language: str) -> None:
    """The form chosen for a count shows that count, unless its words say the number."""
    single = single_count_categories(language)
    locale = Locale.parse(language)
    for key, message in catalog(language).items():
        if not isinstance(message, dict):
            continue
        for n in COUNTS:
            text = translator().plural(language, key, n, **params_for(message["other"]))
            assert str(n) in text or locale.plural_form(n) in single, (key, n, text)


@pytest.mark.parametrize("language", LANGUAGES)
def test_date_patterns_format_with_babel(language: str) -> None:
    patterns = {
        key: text
        for key, text in catalog(language).items()
        if key.startswith("format.") and isinstance(text, str)
    }
    assert set(patterns) == {"format.date", "format.short_date", "format.time"}
    locale = Locale.parse(language)
    first = datetime(2025, 12, 2, 13, 5, tzinfo=TZ)
    second = datetime(2025, 12, 3, 14, 35, tzinfo=TZ)
    for key, pattern in patterns.items():
        one = format_datetime(first, pattern, tzinfo=TZ, locale=locale)
        two = format_datetime(second, pattern, tzinfo=TZ, locale=locale)
        assert one.strip(), key
        assert one != two, f"{key}: {pattern!r} shows neither the day nor the time"
    t = translator()
    assert t.date(language, first, TZ) != t.date(language, second, TZ)
    assert t.short_date(language, first, TZ) != t.short_date(language, second, TZ)
    assert t.time(language, first, TZ) != t.time(language, second, TZ)


@pytest.mark.parametrize("language", LANGUAGES)
def test_button_labels_are_short(language: str) -> None:
    labels = {key: text for key, text in catalog(language).items() if is_button(key)}
    assert all(isinstance(label, str) for label in labels.values())
    assert {key: label for key, label in labels.items() if len(label) > BUTTON_LIMIT} == {}


@pytest.mark.parametrize("language", LANGUAGES)
def test_command_descriptions_fit_bot_command(language: str) -> None:
    low, high = COMMAND_DESCRIPTION
    descriptions = {
        key: text for key, text in catalog(language).items() if key.startswith("commands.")
    }
    assert descriptions, "no commands.* keys"
    assert {k: d for k, d in descriptions.items() if not low <= len(d) <= high} == {}


@pytest.mark.parametrize("language", LANGUAGES)
def test_toasts_fit_a_callback_answer(language: str) -> None:
    toasts = {key: catalog(language)[key] for key in TOAST_KEYS}
    assert all(isinstance(text, str) for text in toasts.values())
    assert {key: text for key, text in toasts.items() if len(text) > TOAST_LIMIT} == {}
