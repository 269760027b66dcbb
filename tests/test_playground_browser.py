"""The playground in a real browser: Debian's chromium, driven by Playwright, against a real
`capacity-bot playground` process (emulator, bot and page on a fresh SQLite file).

Everything is read from the page as a person sees it, through the DOM hooks the page keeps
(tools/offline/playground/static). Texts come from the locale files, so a reworded message changes the
expectation with it. Waits are on locators and attributes, never on sleeps. The playground
runs on SQLite only: that is what `capacity-bot playground` is (storage itself is tested on
both backends elsewhere).

Without chromium these tests are skipped with the reason; with CI=true they fail instead, so
that a green CI always includes them (`make test` installs chromium when it can).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, Route, expect

from bot.services.surveys.definitions import load_surveys
from bot.text.i18n import LANGUAGE_NAMES
from tests.conftest import IN_CI
from tests.playground_harness import (
    Playground,
    chromium,
    missing_browser_tooling,
    playground_running,
)
from tests.playground_page import (
    CHAT_KEYS,
    T,
    bot_message,
    chat,
    consent,
    expect_following,
    first_line,
    label,
    open_page,
    plain,
    press,
    say,
    sign_up,
)

pytestmark = [pytest.mark.browser]

ANNOUNCEMENT = "Fête du numérique samedi à la médiathèque"
OPENSTREETMAP = re.compile(r"^https://www\.openstreetmap\.org/")
HOUR_MS = 3_600_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    missing = missing_browser_tooling()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing}: CI requires the browser tests", pytrace=False)
        pytest.skip(missing)
    async with chromium() as running:
        yield running


@pytest.fixture
async def playground(tmp_path: Path) -> AsyncIterator[Playground]:
    async with playground_running(tmp_path / "pg.sqlite3") as running:
        yield running


@pytest.fixture
async def page(browser: Browser, playground: Playground) -> AsyncIterator[Page]:
    """The page on a desktop screen."""
    async with open_page(
        browser, playground.url, viewport={"width": 1440, "height": 900}
    ) as opened:
        yield opened


# -- the tests ------------------------------------------------------------------------------


async def test_a_resident_signs_up_and_downloads_the_calendar_file(page: Page) -> None:
    resident = chat(page, "resident-1")

    card = await sign_up(resident)

    confirmation = bot_message(resident, first_line("register.confirmed"))
    await expect(confirmation.locator(".message-text")).to_contain_text(
        first_line("register.confirmed")
    )
    await expect_following(resident)
    assert await confirmation.get_attribute("data-message-id") != await card.get_attribute(
        "data-message-id"
    )
    # The card was edited in place: the same message, now saying the seat is taken.
    await expect(card).to_have_count(1)
    await expect(card).to_have_class(re.compile(r"\bedited\b"))
    await expect(card.locator(".message-text")).to_contain_text(plain("workshop.you_are_in"))
    await expect(card.get_by_role("button", name=label("workshop.register"))).to_have_count(0)

    # The confirmation offers the calendar file: it arrives as a downloadable .ics document.
    await press(resident, label("reminder.calendar_button"))
    document = resident.locator("a.document").last
    await expect(document).to_have_attribute("download", re.compile(r"\.ics$"))
    async with page.expect_download() as download_info:
        await document.click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".ics")
    calendar = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    assert calendar.startswith("BEGIN:VCALENDAR")
    assert "BEGIN:VEVENT" in calendar and "DTSTART" in calendar


async def test_a_mediator_broadcasts_to_every_resident(page: Page) -> None:
    french, arabic, mediator = (chat(page, key) for key in ("resident-1", "resident-2", "mediator"))
    await consent(french, "fr")
    await consent(arabic, "ar")

    await say(mediator, "/broadcast")
    await expect(bot_message(mediator, first_line("broadcast.ask_text"))).to_be_visible()
    await say(mediator, ANNOUNCEMENT)
    await press(mediator, label("broadcast.button.no_photo"))
    await expect(bot_message(mediator, first_line("broadcast.ask_audience"))).to_be_visible()
    await press(mediator, label("broadcast.button.kind_all"))
    # The preview, then the summary with the number of recipients, then confirmation.
    await expect(
        bot_message(mediator, T.plural("fr", "broadcast.summary_count", 2))
    ).to_be_visible()
    await press(mediator, label("broadcast.button.confirm"))

    for resident in (french, arabic):
        announcement = bot_message(resident, ANNOUNCEMENT)
        await expect(announcement).to_be_visible()
        await expect(announcement.locator(".message-text")).to_have_attribute("dir", "auto")
    await expect(bot_message(mediator, plain("broadcast.progress_done"))).to_be_visible()
    report = bot_message(mediator, plain("broadcast.report"))
    await expect(report).to_be_visible()
    await expect(report).to_contain_text(
        plain("broadcast.counts", total=2, sent=2, blocked=0, failed=0).splitlines()[1]
    )


async def test_time_travel_to_the_reminder(page: Page) -> None:
    resident = chat(page, "resident-1")
    await sign_up(resident)
    clock = page.locator(".time-travel output.clock")
    before = await clock.inner_text()
    to_reminder = page.locator('.time-travel [data-travel="reminder"]')
    await expect(to_reminder).to_be_enabled()

    await to_reminder.click()

    reminder = bot_message(resident, first_line("reminder.text"))
    await expect(reminder).to_be_visible()
    await expect_following(resident)
    await expect(
        reminder.get_by_role("button", name=label("reminder.coming_button"))
    ).to_be_visible()
    await expect(clock).not_to_have_text(before)
    # The reminder comes with the venue, shown as a map link.
    await expect(resident.locator("a.venue").last).to_have_attribute("href", OPENSTREETMAP)

    # Reading older messages: a new one does not pull the chat down, it is announced.
    messages = resident.locator("ol.messages")
    newer = resident.locator(".new-messages")
    assert await messages.evaluate("list => list.scrollHeight > list.clientHeight + 100")
    await messages.evaluate("list => { list.scrollTop = 0; }")
    await say(resident, "/mine")
    await expect_following(resident)  # what one writes is always shown
    await messages.evaluate("list => { list.scrollTop = 0; }")
    await page.locator('.time-travel [data-travel="reminder"]').click()  # the 2 h reminder
    await expect(newer).to_be_visible()
    assert await messages.evaluate("list => list.scrollTop < 100")
    await newer.click()
    await expect_following(resident)
    await expect(newer).to_be_hidden()


POLL = load_surveys()["post_workshop"]


def poll_text(question_key: str) -> str:
    """A question of the post-workshop poll as Amina reads it (its first words)."""
    question = POLL.question(question_key)
    assert question is not None
    return question.text.fr.split("{workshop}")[-1].strip(" :»")


async def travel(page: Page, kind: str) -> None:
    """Press a time-travel button; the journey is over when the buttons are enabled again."""
    button = page.locator(f'.time-travel [data-travel="{kind}"]')
    await button.click()
    await expect(page.locator('.time-travel [data-travel="day"]')).to_be_enabled()


async def test_a_workshop_s_life_in_a_few_minutes_as_the_readme_tells_it(page: Page) -> None:
    """README, section Playground, "A workshop's life in a few minutes", word for word."""
    amina, channel = chat(page, "resident-1"), chat(page, "channel")
    # "sign Amina up,"
    await sign_up(amina)
    # "go to the reminder and answer I'm coming,"
    await travel(page, "reminder")
    await press(amina, label("reminder.coming_button"))
    await expect(amina.locator(".toast")).to_have_text(label("reminder.coming_toast"))
    # "go to the end of the workshop, tap I'm here in Amina's chat"
    await travel(page, "workshop-end")
    await press(amina, label("attendance.here_button"))
    await expect(amina.locator(".toast")).to_have_text(label("attendance.checked_in_toast"))
    # "then go to the survey's close: the journey halts when Amina's poll arrives"
    await travel(page, "survey-close")
    invitation = bot_message(amina, label("surveys.start"))
    await expect(invitation).to_be_visible()
    await expect(bot_message(channel, "📊")).to_have_count(0)  # no digest yet
    # "she answers it"
    poll = await press(amina, label("surveys.start"))
    await expect(poll).to_contain_text(poll_text("satisfaction"))
    await press(amina, "😄 5")
    await expect(poll).to_contain_text(poll_text("usefulness"))
    await press(amina, "🙂 4")
    await expect(poll).to_contain_text(poll_text("try_alone"))
    await press(amina, label("surveys.skip"))
    await expect(poll).to_contain_text(poll_text("autonomy"))
    await press(amina, "🙂 4")
    await expect(poll).to_contain_text(poll_text("comment"))
    await press(amina, label("surveys.skip"))
    await expect(poll).to_contain_text(POLL.thanks.fr.splitlines()[0])
    # "go to the survey's close again: the digest reaches the channel, 1 answer out of 1"
    await travel(page, "survey-close")
    digest = bot_message(channel, plain("surveys.digest.title", survey=POLL.title.fr))
    await expect(digest).to_contain_text(plain("surveys.digest.respondents", answers=1, invited=1))


async def test_the_coordinator_sees_the_charts_as_pictures(page: Page) -> None:
    coordinator = chat(page, "coordinator")
    await say(coordinator, "/stats")
    await press(coordinator, label("stats.charts"))

    attendance = bot_message(coordinator, label("stats.chart.attendance"))
    picture = attendance.locator("img.photo")
    # The chart's caption is its title: the picture's text for who cannot see it.
    await expect(picture).to_have_attribute("alt", label("stats.chart.attendance"))
    await page.wait_for_function(
        "image => image.complete && image.naturalWidth > 0", arg=await picture.element_handle()
    )


async def tab_until(page: Page, target: Locator, limit: int = 200) -> None:
    """Press Tab until the target has the keyboard focus (a bounded walk, no sleeps)."""
    handle = await target.element_handle()
    assert handle is not None
    for _ in range(limit):
        if await page.evaluate("element => document.activeElement === element", handle):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{limit} Tabs never reached {target}")


async def test_keyboard_only_from_the_composer_to_a_button(page: Page) -> None:
    resident = chat(page, "resident-1")
    await tab_until(page, resident.locator("form.composer input[name=text]"))
    await page.keyboard.type("/start")
    await page.keyboard.press("Enter")
    accept = resident.get_by_role("button", name=label("consent.accept"))
    await expect(accept).to_be_visible()

    await tab_until(page, accept)
    outline = await accept.evaluate("button => getComputedStyle(button).outlineStyle")
    assert outline != "none", "the focused button shows no focus outline"
    await page.keyboard.press("Enter")

    await expect(bot_message(resident, plain("language.ask"))).to_be_visible()
    await expect(resident.get_by_role("button", name=LANGUAGE_NAMES["fr"])).to_be_visible()


async def test_the_keyboard_focus_stays_in_a_message_the_bot_edits(page: Page) -> None:
    resident = chat(page, "resident-1")
    await say(resident, "/start")
    accept = resident.get_by_role("button", name=label("consent.accept"))
    notice = resident.locator("li.message.from-bot").filter(
        has=page.get_by_role("button", name=label("consent.accept"))
    )
    message_id = await notice.get_attribute("data-message-id")
    await tab_until(page, accept)
    await page.keyboard.press("Enter")

    edited = resident.locator(f'li.message.edited[data-message-id="{message_id}"]')
    await expect(edited).to_have_count(1)
    await expect(edited.get_by_role("button", name=LANGUAGE_NAMES["fr"])).to_be_visible()
    focused = await edited.evaluate(
        "item => item.contains(document.activeElement)"
        " && document.activeElement.matches('button.inline-button')"
    )
    assert focused, "the focus left the message the bot edited"
    # On with the keyboard alone: Enter presses the button that now has the focus.
    await page.keyboard.press("Enter")
    await expect(edited).not_to_contain_text(plain("language.ask"))


async def test_keyboard_shortcuts_to_a_chat_and_one_send_per_enter(page: Page) -> None:
    coordinator = chat(page, "coordinator")
    # From the top of the page, a few Tabs reach the list of chats, whatever they hold.
    jump = page.locator('a[data-jump="coordinator"]')
    await tab_until(page, jump, limit=8)
    await page.keyboard.press("Enter")
    field = coordinator.locator("form.composer input[name=text]")
    await expect(field).to_be_focused()

    # Enter twice before the first send came back: one message.
    await page.keyboard.type("/help")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")
    await say(coordinator, "merci")
    await expect(
        coordinator.locator("li.message.from-user").filter(has_text="/help")
    ).to_have_count(1)

    # A plain address in a text becomes a link, and nothing in a text becomes HTML.
    await say(coordinator, "voir https://example.org/atelier?x=1. <b>gras</b>")
    text = coordinator.locator("li.message.from-user .message-text").last
    link = text.locator("a")
    await expect(link).to_have_attribute("href", "https://example.org/atelier?x=1")
    await expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    await expect(text.locator("b")).to_have_count(0)
    await expect(text).to_contain_text("<b>gras</b>")


async def test_a_double_press_of_a_day_travels_one_day(page: Page) -> None:
    day = page.locator('.time-travel [data-travel="day"]')
    clock = page.locator(".time-travel output.clock")
    before = await clock.inner_text()

    await day.dblclick()

    await expect(clock).not_to_have_text(before)
    await expect(day).to_be_focused()  # back where it was, once the journey is over
    offset = await page.evaluate("async () => (await (await fetch('/api/clock')).json()).offset_ms")
    assert 23 * HOUR_MS < offset <= 24 * HOUR_MS, f"travelled {offset / HOUR_MS:.1f} hours"

    # The clock is a live region: written when the minute shown changes, not at each tick.
    writes = await page.evaluate(
        """() => {
            const output = document.querySelector('output.clock');
            let writes = 0;
            const watch = new MutationObserver((changes) => { writes += changes.length; });
            watch.observe(output, { childList: true, characterData: true, subtree: true });
            showClock();
            showClock();
            return new Promise((done) => setTimeout(() => { watch.disconnect(); done(writes); }));
        }"""
    )
    assert writes == 0


async def test_a_language_that_fails_to_load_is_said_and_tried_again(page: Page) -> None:
    resident = chat(page, "resident-1")
    await consent(resident, "fr")  # the consent notice is now an edited message
    failures = [500]

    async def once_broken(route: Route) -> None:
        if failures:
            await route.fulfill(status=failures.pop(), body="{}")
        else:
            await route.continue_()

    await page.route("**/api/ui/en", once_broken)
    await page.locator("select#ui-language").select_option("en")
    await expect(page.locator("#connection")).to_have_text(label("playground.error.ui_unavailable"))
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    # Words the page writes inside messages follow the language.
    await expect(resident.locator(".edited-mark").first).to_have_text(
        label("playground.message.edited", "en")
    )


async def test_readable_at_200_percent_zoom_without_horizontal_scrolling(
    browser: Browser, playground: Playground
) -> None:
    # Browser zoom at 200% on a 1280x800 window is a 640x400 CSS-pixel viewport with two
    # device pixels per CSS pixel: media queries and layout see exactly that. CSS `zoom` on
    # the page would not change the viewport the layout is made for, so it would test less.
    async with open_page(
        browser, playground.url, viewport={"width": 640, "height": 400}, device_scale_factor=2
    ) as page:
        resident = chat(page, "resident-1")
        await sign_up(resident)
        await expect_following(resident)
        overflow = await page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert overflow[0] <= overflow[1], f"horizontal scrolling at 200%: {overflow}"
        for key in CHAT_KEYS:
            box = await chat(page, key).bounding_box()
            assert box is not None and box["width"] <= 640, f"{key} is wider than the screen"


async def test_arabic_interface_and_resident(page: Page) -> None:
    await page.locator("select#ui-language").select_option("ar")
    root = page.locator("html")
    await expect(root).to_have_attribute("dir", "rtl")
    await expect(root).to_have_attribute("lang", "ar")
    await expect(page.locator(".time-travel h2")).to_have_text(
        label("playground.travel.title", "ar")
    )
    karima = chat(page, "resident-2")
    await expect(karima.locator("h2")).to_have_text(label("playground.chat.resident_2", "ar"))
    await expect(karima.locator("form.composer button[type=submit]")).to_have_text(
        label("playground.composer.send", "ar")
    )

    await say(karima, "/start")
    welcome = bot_message(karima, first_line("start.welcome", "ar"))
    await expect(welcome).to_be_visible()
    await expect(welcome.locator(".message-text")).to_have_attribute("dir", "auto")
    await expect(karima.locator("li.message.from-user .message-text").last).to_have_attribute(
        "dir", "auto"
    )
    # /commands are isolated, so that their slash stays on their left in Arabic text.
    await expect(karima.locator(".chat-hint bdi")).to_have_text("/start")
    await expect(bot_message(karima, "/privacy").locator("bdi")).to_have_text("/privacy")
    await expect(karima.locator(".toast")).to_have_attribute("dir", "auto")
