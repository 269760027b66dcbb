"""The README's screenshots of the playground, taken in Debian's chromium.

    .venv/bin/python -m tests.playground_screenshots [--output docs/screenshots]

Starts a fresh playground, plays a short scene (a resident signs up, a mediator sends an
announcement, the coordinator asks for the charts, an Arabic-speaking resident starts, time
travels to the reminder) and writes PNGs: the whole page in a 1440x900 desktop window, the
same page in Arabic, and a resident's chat at 200% zoom. A PNG over the README's budget is
reduced to a 256-colour palette. Emoji need a colour emoji font (Debian: fonts-noto-color-emoji),
or they show as empty boxes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.async_api import Page, expect

from tests.playground_harness import chromium, missing_browser_tooling, playground_running
from tests.playground_page import (
    bot_message,
    chat,
    consent,
    first_line,
    label,
    open_page,
    plain,
    press,
    say,
    sign_up,
)

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
# 200% zoom of a 1280x800 window: half the CSS pixels, two device pixels for each.
ZOOMED = {"viewport": {"width": 640, "height": 400}, "device_scale_factor": 2}
MAX_BYTES = 300_000
CHARTS = 4  # /stats → "Charts" sends four pictures
ANNOUNCEMENT = "Fête du numérique samedi 14 h à la médiathèque Tarentaize : venez en famille !"


def save_png(png: bytes, path: Path) -> int:
    """Write the PNG, as a palette image when the full-colour one is too heavy; its size."""
    if len(png) > MAX_BYTES:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buffer, "PNG", optimize=True)
        png = buffer.getvalue()
    path.write_bytes(png)
    return len(png)


async def shoot(page: Page, path: Path, *, whole: bool = False) -> None:
    """The window, or with ``whole`` the page from its top (all five chats on a desktop).

    Each chat shows its newest messages, as a person scrolling down would see them."""
    await page.evaluate(
        "for (const list of document.querySelectorAll('ol.messages'))"
        " list.scrollTop = list.scrollHeight"
    )
    if whole:
        await page.evaluate("window.scrollTo(0, 0)")
    size = save_png(await page.screenshot(full_page=whole), path)
    print(f"{path} ({size // 1000} kB)")


async def play_scene(page: Page) -> None:
    """Everything the screenshots show, in the order a rehearsal would go."""
    amina, karima = chat(page, "resident-1"), chat(page, "resident-2")
    mediator, coordinator = chat(page, "mediator"), chat(page, "coordinator")

    await sign_up(amina)
    await consent(karima, "ar")

    await say(mediator, "/broadcast")
    await say(mediator, ANNOUNCEMENT)
    await press(mediator, label("broadcast.button.no_photo"))
    await press(mediator, label("broadcast.button.kind_all"))
    await press(mediator, label("broadcast.button.confirm"))
    await expect(bot_message(mediator, plain("broadcast.report"))).to_be_visible()
    await expect(bot_message(karima, ANNOUNCEMENT)).to_be_visible()

    await say(coordinator, "/stats")
    await press(coordinator, label("stats.charts"))
    await expect(coordinator.locator("img.photo")).to_have_count(CHARTS)

    await page.locator('.time-travel [data-travel="reminder"]').click()
    await expect(bot_message(amina, first_line("reminder.text"))).to_be_visible()


async def take(output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="playground-shots-") as folder:
        async with (
            playground_running(Path(folder) / "pg.sqlite3") as running,
            chromium() as browser,
        ):
            async with open_page(browser, running.url, viewport=DESKTOP) as page:
                await play_scene(page)
                await shoot(page, output / "playground-desktop.png", whole=True)
                await page.locator("select#ui-language").select_option("ar")
                await expect(page.locator("html")).to_have_attribute("dir", "rtl")
                await shoot(page, output / "playground-arabic.png", whole=True)
            async with open_page(browser, running.url, **ZOOMED) as page:
                amina = chat(page, "resident-1")
                await expect(bot_message(amina, first_line("reminder.text"))).to_be_visible()
                await amina.evaluate("chat => chat.scrollIntoView({block: 'start'})")
                await shoot(page, output / "playground-zoom-200.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args()
    missing = missing_browser_tooling()
    if missing is not None:
        print(f"playground screenshots: {missing}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
