"""The follow-up question names the workshop and its day, never a delay it cannot know.

FOLLOW_UP_AFTER is a setting (30 days by default, 14 here): the invitation must not say "a
month ago". The real bot over HTTP against the Bot API emulator, the real database (both
backends), residents in French, English and Arabic.
"""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator

from bot.text.i18n import Translator
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_workshop
from tests.survey_helpers import registered, workshop_end

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

T = Translator.load()
PARIS = ZoneInfo("Europe/Paris")
TITLE = "Faire ses démarches en ligne"  # in every language (tests/factories.py)
PEOPLE = {2001: "fr", 2002: "en", 2003: "ar"}
# A delay in any of the three languages: the follow-up must not state one.
DELAY_WORDS = re.compile(r"\bmois\b|\bmonths?\b|\bago\b|\bil y a\b|شهر|قبل", re.IGNORECASE)


async def test_the_follow_up_names_the_workshop_and_its_day_in_every_language(
    db, database_url
) -> None:
    clock = new_clock()
    workshop = await seed_workshop(db, clock, starts_in=timedelta(hours=1))
    starts_at = (await workshop_end(db, workshop)) - timedelta(hours=2)
    for telegram_id, language in PEOPLE.items():
        await registered(db, clock, telegram_id, workshop, language=language)
    clock.set(await workshop_end(db, workshop) + timedelta(days=14))
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        people = {
            telegram_id: client.user(telegram_id, f"P{telegram_id}", language)
            for telegram_id, language in PEOPLE.items()
        }
        await client.register(*people.values())
        settings = settings_for(emulator, database_url, follow_up_after="14d")
        async with bot_running(settings, clock) as application:
            assert (await services_of(application).surveys.sweep()).invited == 3
            for telegram_id, language in PEOPLE.items():
                person = people[telegram_id]
                invitation = await person.wait_message(contains=TITLE, timeout=10)
                day = T.date(language, starts_at, PARIS)
                assert day in invitation.text, (language, invitation.text)
                assert invitation.button_texts()[0] == T.label(language, "surveys.start")
                assert not DELAY_WORDS.search(invitation.text), (language, invitation.text)
                await person.press(T.label(language, "surveys.start"))
                event = await person.wait_event(kind="edit")
                assert event.message is not None
                question = event.message.text
                assert not DELAY_WORDS.search(question), (language, question)
                if language == "fr":  # plain French: no "venu(e)", "seul(e)"
                    assert "(e)" not in invitation.text + question
