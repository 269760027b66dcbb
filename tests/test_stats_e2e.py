"""/stats and /export through the Bot API emulator, on the hand-built data set.

Coordinators see everything, facilitators their own workshops, residents nothing (commands
and buttons, forged ones included). Figures are the hand-computed ones of stats_helpers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from matplotlib.image import imread

from bot.clock import ManualClock
from bot.plumbing.context import Services
from storage.db import Database
from tests.e2e import bot_running, services_of, settings_for
from tests.stats_helpers import FACILITATOR, T0, first_name, seed_hand_data, telegram_id

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

COORDINATOR = 5001
RESIDENT = telegram_id(1)  # R1, a consenting resident with registrations
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOM = b"\xef\xbb\xbf"


@dataclass
class World:
    client: EmulatorClient
    services: Services
    coordinator: SimulatedUser
    facilitator: SimulatedUser
    resident: SimulatedUser


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    await seed_hand_data(db)
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(
            emulator,
            database_url,
            staff=f"coordinator:{COORDINATOR},facilitator:{FACILITATOR}",
        )
        async with bot_running(settings, ManualClock(T0)) as application:
            yield World(
                client,
                services_of(application),
                client.user(COORDINATOR, "Coralie", "en"),
                client.user(FACILITATOR, "Farid", "en"),
                client.user(RESIDENT, first_name(1), "fr"),
            )


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None and event.message.text is not None
    return event.message


async def test_coordinator_sees_the_hand_computed_figures(world: World) -> None:
    coordinator = world.coordinator
    await coordinator.send("/stats")
    overview = await coordinator.wait_message(contains="Overview")
    text = overview.text or ""
    for line in (
        "New residents: 14",
        "Active residents (registered or present): 23",
        "Registrations: 25",
        "Cancellations: < 5",
        "On a waiting list now: < 5",
        "Moved up from a waiting list: < 5",
        "Workshops held: 2",
        "Attendance: 10 present for 13 places (77%)",
        "No-shows: 23%",
        "All neighbourhoods",
    ):
        assert line in text, (line, text)
    assert "Needs" in overview.button_texts()

    await coordinator.press("Workshops")
    workshops = (await edited(coordinator)).text or ""
    assert "Workshop w1\n👥 10 · 📝 10 · ❌ < 5 · ⏳ 0 · ⬆️ < 5 · ✅ 75% · 🚫 25%" in workshops
    assert "Workshop w2\n👥 5 · 📝 5 · ❌ 0 · ⏳ 0 · ⬆️ 0 · ✅ 80% · 🚫 20%" in workshops
    assert "Workshop w3\n👥 10 · 📝 10 · ❌ 0 · ⏳ < 5 · ⬆️ 0 · ✅ — · 🚫 —" in workshops
    assert "w4" not in workshops

    await coordinator.press("Neighbourhoods")
    areas = (await edited(coordinator)).text or ""
    assert "Côte-Chaude\n👥 13 · 📝 15 · ❌ < 5 · ⏳ 0 · ⬆️ < 5 · ✅ 77% · 🚫 23%" in areas

    await coordinator.press("Surveys")
    surveys = (await edited(coordinator)).text or ""
    assert "Answers to the workshop poll: 10" in surveys
    assert (
        "Satisfaction: average 4.5 out of 5 (10 answers)\n1️⃣ 0 · 2️⃣ 0 · 3️⃣ < 5 · 4️⃣ < 5 · 5️⃣ 6"
        in surveys
    )
    assert "• Do again what we did together: 5" in surveys
    assert "• Practise on my phone: < 5" in surveys

    await coordinator.press("Needs")
    needs = (await edited(coordinator)).text or ""
    assert "Answers to the needs survey: 12" in needs
    assert (
        "📍 Côte-Chaude\n• 📧 E-mail: 6\n• 🩺 Health online (Ameli…): 5\n• 💶 Taxes: < 5" in needs
    )
    assert (
        "Needs that no upcoming workshop covers: 🩺 Health online (Ameli…), 🔒 Avoiding scams"
        in needs
    )

    await coordinator.press("Confidence")
    autonomy = (await edited(coordinator)).text or ""
    assert "E-mail: 2.0 → 4.0 (6 and 6 answers)" in autonomy
    assert "Health: — → — (< 5 and < 5 answers)" in autonomy


async def test_period_and_neighbourhood_arguments(world: World) -> None:
    coordinator = world.coordinator
    await coordinator.send("/stats 2026-11 cote chaude")
    text = (await coordinator.wait_message(contains="Overview")).text or ""
    assert "Côte-Chaude" in text and "Registrations: 15" in text and "1 Nov" in text
    await coordinator.send("/stats 2026-13")
    assert "I do not understand the period" in ((await coordinator.wait_message()).text or "")
    await coordinator.send("/stats Montreynaud")
    unknown = (await coordinator.wait_message()).text or ""
    assert "I do not know the neighbourhood" in unknown and "Tarentaize-Beaubrun" in unknown


async def test_facilitators_see_only_their_workshops(world: World) -> None:
    facilitator = world.facilitator
    await facilitator.send("/stats")
    overview = await facilitator.wait_message(contains="Overview")
    assert "Your workshops only" in (overview.text or "")
    assert "Registrations: 20" in (overview.text or "")
    assert "Needs" not in overview.button_texts()
    await facilitator.press("Workshops")
    workshops = (await edited(facilitator)).text or ""
    assert "Workshop w1" in workshops and "Workshop w3" in workshops
    assert "Workshop w2" not in workshops
    # A needs button made by hand, correctly signed for them, is still refused.
    forged = world.services.callbacks.encode(FACILITATOR, "stats_view", 6, 20260903, 20261201, 0)
    query = await facilitator.press_data(forged, message_id=overview.message_id)
    answer = await facilitator.callback_answer(query)
    assert answer.show_alert and "only for the programme's team" in (answer.text or "")


async def test_residents_are_refused_commands_and_buttons(world: World) -> None:
    resident = world.resident
    for command in ("/stats", "/export"):
        await resident.send(command)
        refusal = await resident.wait_message()
        assert refusal.text == "Désolé, cette commande est réservée à l'équipe du programme."
    own_button = world.services.callbacks.encode(RESIDENT, "stats_view", 0, 20260903, 20261201, 0)
    charts_button = world.services.callbacks.encode(RESIDENT, "stats_charts", 20260903, 20261201, 0)
    for data in (own_button, charts_button):
        query = await resident.press_data(data, message_id=refusal.message_id)
        answer = await resident.callback_answer(query)
        assert answer.show_alert and "réservée à l'équipe" in (answer.text or "")
    someone_elses = world.services.callbacks.encode(
        COORDINATOR, "stats_view", 0, 20260903, 20261201, 0
    )
    query = await resident.press_data(someone_elses, message_id=refusal.message_id)
    assert (await resident.callback_answer(query)).show_alert
    assert [m.text for m in await resident.messages()][-1] == refusal.text  # nothing else sent


async def test_charts_are_png_pictures(world: World) -> None:
    coordinator = world.coordinator
    await coordinator.send("/stats")
    await coordinator.wait_message(contains="Overview")
    await coordinator.press("📊 Charts")
    captions = []
    for _ in range(4):
        photo = await coordinator.wait_message(timeout=20)
        assert photo.kind == "photo"
        captions.append(photo.text)
        png = await coordinator.download(photo)
        assert png.startswith(PNG_SIGNATURE)
        pixels = imread(io.BytesIO(png), format="png")
        assert pixels.shape[:2] == (450, 800)
        assert np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0] > 20  # not blank
    assert captions == [
        "Attendance per workshop",
        "Needs by neighbourhood",
        "Satisfaction",
        "Registrations over time",
    ]


async def _exported(user: SimulatedUser, count: int) -> dict[str, bytes]:
    await user.send("/export")
    files = {}
    for _ in range(count):
        message = await user.wait_message(timeout=20)
        while message.kind != "document":
            message = await user.wait_message(timeout=20)
        assert message.document is not None
        files[message.document["file_name"]] = await user.download(message)
    assert "Files sent" in ((await user.wait_message(contains="Files sent")).text or "")
    return files


def _rows(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(BOM)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


async def test_exports_are_csv_without_telegram_ids_or_names(world: World) -> None:
    files = await _exported(world.coordinator, 5)
    assert sorted(files) == [
        "needs.csv",
        "registrations.csv",
        "survey_answers.csv",
        "survey_answers_anonymous.csv",
        "workshops.csv",
    ]
    forbidden = [str(telegram_id(n)) for n in range(1, 25)] + [first_name(n) for n in range(1, 25)]
    forbidden += ["Habitant", "+33 6 12", str(COORDINATOR)]
    for name, data in files.items():
        text = data.decode("utf-8-sig")
        assert not [word for word in forbidden if word in text], name
    registrations = _rows(files["registrations.csv"])
    assert len(registrations) == 30
    people = {row["person"] for row in registrations}
    assert len(people) == 23 and all(len(p) == 12 for p in people)
    assert sum(row["attended"] == "yes" for row in registrations) == 15  # 6 + 4 + 5
    anonymous = _rows(files["survey_answers_anonymous.csv"])
    assert "person" not in anonymous[0] and "answer_set" not in anonymous[0]
    assert len(anonymous) == 6 * 3  # W2's poll (4 people) is under the minimum group size
    named = _rows(files["survey_answers.csv"])
    assert {row["survey"] for row in named} == {"autonomy_before", "needs"}
    assert {row["person"] for row in named} <= people | {row["person"] for row in named}
    needs = _rows(files["needs.csv"])
    assert len(needs) == 12
    assert sum("email" in row["needs"].split("|") for row in needs) == 7
    assert len(_rows(files["workshops.csv"])) == 4


async def test_facilitator_export_holds_only_their_workshops(world: World) -> None:
    files = await _exported(world.facilitator, 4)
    assert "needs.csv" not in files
    assert {row["workshop"] for row in _rows(files["workshops.csv"])} == {"w1", "w3"}
    assert len(_rows(files["registrations.csv"])) == 20
    assert {row["workshop"] for row in _rows(files["survey_answers_anonymous.csv"])} == {"w1"}
