"""Acting on the playground page as a person would, through its DOM hooks.

The hooks (section.chat[data-chat], li.message.from-bot, button.inline-button, the composer...)
are the page's contract with these helpers. Texts come from the locale files, rendered as the
page shows them, so a reworded message changes the expectation with it. Every wait is on a
locator: Playwright's ceiling (WAIT_MS) only bounds how long a broken page is waited for.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from playwright.async_api import Locator, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bot.text.i18n import LANGUAGE_NAMES, Translator

if TYPE_CHECKING:
    from playwright.async_api import Browser

T = Translator.load()
WAIT_MS = 20_000  # a ceiling for each wait on a busy two-core machine, not a duration
CHAT_KEYS = ("resident-1", "resident-2", "mediator", "coordinator", "channel")
# A workshop button of the list: "mar. 2 déc. 14:00 · Title".
WORKSHOP_BUTTON = re.compile(r" · ")

expect.set_options(timeout=WAIT_MS)


def plain(key: str, language: str = "fr", **params: object) -> str:
    """A message as the page renders it: the HTML of the locale file without its tags."""
    return html.unescape(re.sub(r"<[^>]+>", "", T.text(language, key, **params)))


def first_line(key: str, language: str = "fr") -> str:
    return plain(key, language).splitlines()[0]


def label(key: str, language: str = "fr") -> str:
    """A button or toast text."""
    return T.label(language, key)


@asynccontextmanager
async def open_page(browser: Browser, url: str, **context_options: Any) -> AsyncIterator[Page]:
    """A fresh browser context on the playground, once the page says it is ready."""
    context = await browser.new_context(**context_options)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    try:
        yield page
    finally:
        await context.close()


def chat(page: Page, key: str) -> Locator:
    return page.locator(f'section.chat[data-chat="{key}"]')


def bot_message(chat_section: Locator, containing: str | re.Pattern[str]) -> Locator:
    """The newest message of the bot in this chat that shows this text."""
    return chat_section.locator("li.message.from-bot").filter(has_text=containing).last


# The chat's list shows its end: the newest message is in sight without scrolling.
AT_NEWEST = "list => list.scrollHeight - list.scrollTop - list.clientHeight <= 1"


async def expect_following(chat_section: Locator) -> None:
    """The chat follows its newest message, as a chat app does: waits until it shows it."""
    messages = chat_section.locator("ol.messages")
    try:
        await chat_section.page.wait_for_function(AT_NEWEST, arg=await messages.element_handle())
    except PlaywrightTimeout:
        raise AssertionError(
            "the chat did not scroll to its newest message (it stays below the fold)"
        ) from None


async def say(chat_section: Locator, text: str) -> None:
    """Type in the chat's composer and send with Enter; the chat shows the message."""
    field = chat_section.locator("form.composer input[name=text]")
    await field.fill(text)
    await field.press("Enter")
    await expect(
        chat_section.locator("li.message.from-user").filter(has_text=text).last
    ).to_be_visible()


async def press(chat_section: Locator, name: str | re.Pattern[str]) -> Locator:
    """Press the newest inline button of that name; returns the message that carried it
    (by its id, so the locator still finds it once the bot has edited it)."""
    carrier = (
        chat_section.locator("li.message.from-bot")
        .filter(has=chat_section.page.get_by_role("button", name=name))
        .last
    )
    message_id = await carrier.get_attribute("data-message-id")
    assert message_id is not None, "a message without data-message-id"
    await carrier.get_by_role("button", name=name).first.click()
    return chat_section.locator(f'li.message[data-message-id="{message_id}"]')


async def consent(chat_section: Locator, language: str) -> None:
    """/start, accept the privacy notice, choose the language: the main menu shows."""
    await say(chat_section, "/start")
    await press(chat_section, label("consent.accept", language))
    await press(chat_section, LANGUAGE_NAMES[language])
    await expect(
        chat_section.get_by_role("button", name=label("menu.workshops", language))
    ).to_be_visible()


async def sign_up(chat_section: Locator) -> Locator:
    """Consent in French, open the list, then the soonest workshop, and take a seat.

    Returns the workshop card (the message the bot edits in place)."""
    await consent(chat_section, "fr")
    await press(chat_section, label("menu.workshops"))
    await press(chat_section, WORKSHOP_BUTTON)
    card = await press(chat_section, label("workshop.register"))
    await expect(chat_section.locator(".toast")).to_have_text(label("register.toast_confirmed"))
    await expect(bot_message(chat_section, first_line("register.confirmed"))).to_be_visible()
    return card
