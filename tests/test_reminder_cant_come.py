""" "I can't come any more": the seat goes to someone waiting only when somebody is.

The real bot over HTTP against the Bot API emulator, the real database (both backends).
"""

from __future__ import annotations

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator

from bot.text.i18n import Translator
from handlers.reminders import PLANNER_JOB
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock
from tests.reminder_helpers import paris, run_job_now, take_seat, workshop_at

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

T = Translator.load()
THURSDAY_2PM = paris(2026, 12, 3, 14, 0)
DUE_24H = paris(2026, 12, 2, 14, 0)


def second_line(key: str, language: str) -> str:
    """The sentence about the seat, under "You cannot come any more?"."""
    return T.text(language, key, title="", when="").splitlines()[1]


async def cant_come_question(
    db, database_url: str, *, capacity: int, language: str
) -> tuple[str, SimulatedUser]:
    """Alice holds a seat (Bob takes the second place, seat or waitlist); she gets her
    reminder and presses "I can't come any more": the question she is asked."""
    clock = new_clock()
    workshop = await workshop_at(db, clock, THURSDAY_2PM, capacity=capacity)
    assert await take_seat(db, clock, 1001, workshop, language=language) == "confirmed"
    await take_seat(db, clock, 1002, workshop)
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        alice = client.user(1001, "Alice", language)
        await client.register(alice)
        settings = settings_for(emulator, database_url, outbox_sweep_seconds=0.2)
        async with bot_running(settings, clock) as application:
            clock.set(DUE_24H)
            run_job_now(application, PLANNER_JOB)
            reminder = await alice.wait_message(contains="Faire ses démarches en ligne", timeout=10)
            await alice.press(
                T.label(language, "reminder.cant_button"), message_id=reminder.message_id
            )
            event = await alice.wait_event(kind="edit")
            assert event.message is not None
            return event.message.text, alice


@pytest.mark.parametrize("language", ["fr", "en", "ar"])
async def test_with_a_waitlist_the_seat_goes_to_someone_waiting(db, database_url, language):
    text, _ = await cant_come_question(db, database_url, capacity=1, language=language)
    assert second_line("reminder.cant_ask_waitlist", language) in text
    assert second_line("reminder.cant_ask", language) not in text


@pytest.mark.parametrize("language", ["fr", "en", "ar"])
async def test_without_a_waitlist_nobody_waiting_is_promised(db, database_url, language):
    text, _ = await cant_come_question(db, database_url, capacity=5, language=language)
    assert second_line("reminder.cant_ask", language) in text
    assert second_line("reminder.cant_ask_waitlist", language) not in text
