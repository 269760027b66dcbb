"""When polls open and close, whatever the sweep period and however long the bot was stopped.

A workshop's poll is open from SURVEY_DELAY after its end (or the end of quiet hours then) for
POLL_OPEN_FOR: the window belongs to the workshop, read from the database, not to the sweep
that happens to find it. Injected clock, both backends; the start-up checks through the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.surveys.cards import DIGEST, INVITATION
from bot.services.surveys.definitions import POST_WORKSHOP
from bot.settings import ConfigurationError, load_settings
from storage.db import Database
from storage.models import OutboxMessage, SurveyRun
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_workshop
from tests.survey_helpers import ADMIN_CHAT, registered, survey_service, workshop_end
from tests.test_cli import _cli

pytestmark = pytest.mark.storage

POLL_DELAY, POLL_OPEN_FOR = timedelta(hours=2), timedelta(hours=48)


@pytest.fixture
def clock() -> ManualClock:
    return new_clock()


async def queued(db: Database, kind: str) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )


async def runs(db: Database) -> list[tuple[str, int | None, datetime, datetime | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(
                SurveyRun.survey_key,
                SurveyRun.workshop_id,
                SurveyRun.opened_at,
                SurveyRun.closes_at,
            ).order_by(SurveyRun.id)
        )
        return [tuple(row) for row in rows]


async def attended_workshop(db: Database, clock: ManualClock, starts_in: timedelta) -> int:
    workshop = await seed_workshop(db, clock, starts_in=starts_in)
    await registered(db, clock, 1, workshop)
    return workshop


async def test_a_poll_missed_while_the_bot_was_stopped_is_closed_with_its_digest(db, clock):
    workshop = await attended_workshop(db, clock, timedelta(hours=1))
    closes = await workshop_end(db, workshop) + POLL_DELAY + POLL_OPEN_FOR
    surveys = survey_service(db, clock)
    clock.set(closes + timedelta(hours=3))  # the bot was stopped through the whole window

    report = await surveys.sweep()

    assert (report.invited, report.digests) == (0, 1)
    assert await runs(db) == [(POST_WORKSHOP, workshop, closes, closes)]
    assert await queued(db, INVITATION) == []  # nobody is asked about a closed poll
    (row,) = await queued(db, DIGEST)
    digest = await surveys.digest(row.payload["run_id"])
    assert digest is not None and digest.missed
    assert (digest.respondents, digest.invited) == (0, 0)
    assert (await surveys.sweep()).queued is False  # nothing twice


@pytest.mark.e2e
async def test_the_channel_is_told_when_a_poll_was_missed(db, database_url, clock):
    workshop = await attended_workshop(db, clock, timedelta(hours=1))
    closes = await workshop_end(db, workshop) + POLL_DELAY + POLL_OPEN_FOR
    clock.set(closes + timedelta(days=1))
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        channel = client.group(ADMIN_CHAT, "Facilitateurs")
        await channel.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
        settings = settings_for(emulator, database_url, admin_chat_id=ADMIN_CHAT)
        async with bot_running(settings, clock) as application:
            await services_of(application).surveys.sweep()
            digest = await channel.wait_message(contains="Bilan", timeout=10)
    assert "Ont répondu : 0 sur 0" in digest.text
    # 48 h after 15:00 on Tuesday 1 December (Paris): Thursday 3 December at 15:00.
    assert "Sondage non envoyé : le bot était arrêté" in digest.text
    assert "jusqu'au jeudi 3 décembre à 15:00" in digest.text


async def test_a_late_poll_is_offered_for_what_is_left_of_its_window(db, clock):
    workshop = await attended_workshop(db, clock, timedelta(hours=1))
    closes = await workshop_end(db, workshop) + POLL_DELAY + POLL_OPEN_FOR
    surveys = survey_service(db, clock)
    clock.set(closes - timedelta(hours=1))  # the bot comes back an hour before the close

    assert (await surveys.sweep()).invited == 1

    assert await runs(db) == [(POST_WORKSHOP, workshop, clock.now(), closes)]
    (invitation,) = await queued(db, INVITATION)
    assert invitation.not_before == clock.now()
    assert await surveys.invitation(invitation.payload["participation_id"]) is not None
    clock.set(closes)
    report = await surveys.sweep()
    assert report.digests == 1
    digest = await surveys.digest((await queued(db, DIGEST))[0].payload["run_id"])
    assert digest is not None and not digest.missed and digest.invited == 1


async def test_a_window_shorter_than_the_time_between_two_sweeps_still_gets_its_run(db, clock):
    workshop = await attended_workshop(db, clock, timedelta(hours=1))
    opens = await workshop_end(db, workshop) + POLL_DELAY
    surveys = survey_service(db, clock, poll_open_for="2m")
    clock.set(opens - timedelta(seconds=30))
    assert (await surveys.sweep()).queued is False
    clock.set(opens + timedelta(seconds=150))  # the next sweep comes after the close

    assert (await surveys.sweep()).digests == 1
    assert await runs(db) == [
        (POST_WORKSHOP, workshop, opens + timedelta(minutes=2), opens + timedelta(minutes=2))
    ]


async def test_back_in_quiet_hours_nobody_is_invited_to_a_poll_that_closes_before_morning(
    db, clock
):
    # T0 is 10:00 in Paris: the workshop ends at 17:00, its poll opens at 19:00 and closes
    # at 21:30; the bot comes back at 21:10, in quiet hours (21:00-08:00).
    workshop = await attended_workshop(db, clock, timedelta(hours=5))
    opens = await workshop_end(db, workshop) + POLL_DELAY
    closes = opens + timedelta(hours=2, minutes=30)
    assert closes == datetime(2026, 12, 1, 20, 30, tzinfo=UTC)
    surveys = survey_service(db, clock, poll_open_for="2h30m")
    clock.set(closes - timedelta(minutes=20))

    report = await surveys.sweep()

    assert report.invited == 0
    assert await queued(db, INVITATION) == []
    assert await runs(db) == [(POST_WORKSHOP, workshop, closes, closes)]
    clock.set(closes)
    assert (await surveys.sweep()).digests == 1


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"poll_open_for": "0s"}, "POLL_OPEN_FOR"),
        ({"poll_open_for": "30s"}, "POLL_OPEN_FOR"),
        ({"poll_open_for": "1m"}, "POLL_OPEN_FOR"),
        ({"follow_up_after": "2h"}, "FOLLOW_UP_AFTER"),
        ({"survey_delay": "3d", "follow_up_after": "2d"}, "FOLLOW_UP_AFTER"),
    ],
)
def test_survey_timings_that_cannot_work_are_refused(settings, named):
    with pytest.raises(ConfigurationError) as refused:
        load_settings(**settings)
    message = str(refused.value)
    assert message.startswith(named) and "\n" not in message


async def test_the_bot_refuses_to_start_with_a_poll_shorter_than_two_sweeps(tmp_path):
    code, _, err = await _cli(tmp_path, "migrate", POLL_OPEN_FOR="30s")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "POLL_OPEN_FOR" in line and "expected" in line and "Traceback" not in err
