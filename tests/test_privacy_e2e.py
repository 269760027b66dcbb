"""Privacy end to end: /privacy, /mydata, /forget, withdrawal and the retention notice, with
the real bot over HTTP against the Bot API emulator and a manual clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from emulator.client import ChatMessage, EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.runtime.app import build_application
from bot.runtime.cli import main
from bot.services.privacy.retention import months_before
from bot.services.residents import ResidentService
from bot.settings import ConfigurationError, load_settings
from handlers.privacy import RETENTION_JOB
from storage.db import Database
from storage.models import Resident, StaffMember, Workshop
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock, seed_workshop
from tests.reminder_helpers import run_job_now, take_seat

pytestmark = [pytest.mark.storage, pytest.mark.e2e]


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    database_url: str
    db: Database
    clock: ManualClock


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        yield World(emulator, client, database_url, db, new_clock())


def settings(world: World, **overrides: object):
    return settings_for(world.emulator, world.database_url, outbox_sweep_seconds=0.2, **overrides)


async def edited(user: SimulatedUser) -> ChatMessage:
    event = await user.wait_event(kind="edit")
    assert event.message is not None
    return event.message


async def person(db: Database, telegram_id: int) -> Resident | None:
    async with db.read() as session:
        return await session.scalar(select(Resident).where(Resident.telegram_id == telegram_id))


async def test_privacy_notice_with_the_operator_texts_and_the_retention_settings(
    world: World, tmp_path: Path
) -> None:
    notice_file = tmp_path / "notice.yaml"
    notice_file.write_text('fr:\n  dpo: "dpo@ville.example, 1 place de l\'Hôtel de Ville"\n')
    overrides = {"privacy_notice_file": notice_file, "retention_months": 18}
    ivy = world.client.user(9001, "Ivy", "en")
    zoe = world.client.user(9002, "Zoé", "fr")
    await world.client.register(ivy, zoe)
    async with bot_running(settings(world, **overrides), world.clock):
        await ivy.send("/privacy")
        notice = await ivy.wait_message()
        assert notice.text is not None and "Your personal data" in notice.text
        assert "18 months after your last visit" in notice.text and "after 6 months" in notice.text
        assert "data protection officer of the City" in notice.text  # English is not overridden
        assert "send /start" in notice.text and notice.button_texts() == []  # nothing held
        await zoe.send("/start")
        assert "18 mois après votre dernière visite" in (await zoe.wait_message()).text
        await zoe.press("✅ Oui, je suis d'accord")
        await edited(zoe)
        await zoe.send("/privacy")
        notice = await zoe.wait_message()
        assert "dpo@ville.example, 1 place de l'Hôtel de Ville" in notice.text
        assert notice.button_texts() == [
            "📄 Voir mes données",
            "🗑 M'effacer",
            "🔕 Ne plus rien recevoir",
        ]


def test_bad_privacy_notice_file_stops_start_up_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "notice.yaml"
    bad.write_text("en:\n  controller: City\n  dpo_email: x\n")
    with pytest.raises(ConfigurationError, match=r"notice.yaml: en.dpo_email: unknown part"):
        build_application(load_settings(_env_file=None, privacy_notice_file=bad))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_TOKEN", "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.sqlite3")
    monkeypatch.setenv("PRIVACY_NOTICE_FILE", str(bad))
    assert main(["run"]) == 2
    # Log lines aside, one line for the operator.
    [error] = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("capacity-bot:")
    ]
    assert error.startswith("capacity-bot: PRIVACY_NOTICE_FILE is invalid (notice.yaml: en.dpo")


async def test_mydata_then_forget_frees_the_seat_and_start_again_is_a_new_resident(
    world: World,
) -> None:
    db, clock = world.db, world.clock
    workshop = await seed_workshop(db, clock, capacity=1, title="Atelier tablette")
    assert await take_seat(db, clock, 1001, workshop) == "confirmed"
    assert await take_seat(db, clock, 1002, workshop) == "waitlisted"
    alice_id = (await person(db, 1001)).id  # type: ignore[union-attr]
    alice = world.client.user(1001, "Alice", "fr")
    bob = world.client.user(1002, "Bob", "fr")
    await world.client.register(alice, bob)
    async with bot_running(settings(world), clock):
        await alice.send("/mydata")
        document = await alice.wait_message()
        assert document.kind == "document" and document.document is not None
        assert document.document["file_name"] == "my-data.json"
        raw = await alice.download(document)
        # The emulator serves the file as application/json, which its client decodes.
        data = raw if isinstance(raw, dict) else json.loads(raw)
        assert data["profile"]["first_name"] == "P1001"
        assert [r["workshop"] for r in data["registrations"]] == ["Atelier tablette"]
        assert data["registrations"][0]["starts_at"].endswith("+01:00")  # Paris, in December

        await alice.send("/forget")
        question = await alice.wait_message()
        assert "Tout effacer" in question.text
        await alice.press("↩️ Non, ne rien effacer")
        assert "rien effacé" in (await edited(alice)).text
        await alice.send("/forget")
        await alice.wait_message()
        await alice.press("🗑 Oui, tout effacer")
        done = await edited(alice)
        assert "je vous ai effacé(e)" in done.text and "1 inscription à venir" in done.text
        promoted = await bob.wait_message(contains="une place s'est libérée", timeout=10)
        assert "Atelier tablette" in promoted.text

        await alice.send("/start")
        prompt = await alice.wait_message()
        assert "Êtes-vous d'accord" in prompt.text  # asked again: she is nobody now
        await alice.press("✅ Oui, je suis d'accord")
        await edited(alice)
    again = await person(db, 1001)
    assert again is not None and again.id != alice_id
    async with db.read() as session:
        tombstone = await session.get(Resident, alice_id)
        seats = await session.scalar(select(Workshop.seats_taken).where(Workshop.id == workshop))
    assert tombstone is not None and tombstone.erased_at is not None
    assert tombstone.first_name is None and seats == 1


async def test_withdrawing_consent_from_the_notice_then_start_offers_consent_again(
    world: World,
) -> None:
    await ResidentService(world.db, world.clock).give_consent(1001, "Alice", "fr")
    alice = world.client.user(1001, "Alice", "fr")
    await world.client.register(alice)
    async with bot_running(settings(world), world.clock):
        await alice.send("/privacy")
        await alice.wait_message()
        await alice.press("🔕 Ne plus rien recevoir")
        assert "Ne plus rien recevoir ?" in (await edited(alice)).text
        await alice.press("🔕 Oui, ne plus rien recevoir")
        done = await edited(alice)
        assert "je ne vous enverrai plus rien" in done.text and "/start" in done.text
        resident = await person(world.db, 1001)
        assert resident is not None and resident.consented_at is None
        await alice.send("/privacy")
        notice = await alice.wait_message()
        assert notice.button_texts() == ["📄 Voir mes données", "🗑 M'effacer"]
        await alice.send("/workshops")
        assert "Êtes-vous d'accord" in (await alice.wait_message()).text


async def test_retention_notice_and_keep_my_data(world: World) -> None:
    db, clock = world.db, world.clock
    await ResidentService(db, clock).give_consent(1001, "Alice", "fr")
    clock.set(months_before(clock.now(), -12) - timedelta(days=6))
    alice = world.client.user(1001, "Alice", "fr")
    await world.client.register(alice)
    async with bot_running(settings(world, admin_chat_id=-100555), clock) as application:
        run_job_now(application, RETENTION_JOB)
        notice = await alice.wait_message(contains="j'effacerai vos données", timeout=10)
        assert notice.button_texts() == ["✅ Garder mes données"]
        noticed = await person(db, 1001)
        assert noticed is not None and noticed.retention_notice_at == clock.now()
        await alice.press("✅ Garder mes données")
        assert "Je garde vos données" in (await edited(alice)).text
        kept = await person(db, 1001)
        assert kept is not None and kept.retention_notice_at is None
        assert kept.last_seen_at == clock.now()
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Resident)) == 1


async def eventually(check, timeout: float = 5.0) -> None:
    """Wait for the bot to have handled an update that sends nothing back."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the bot did not handle it"
        await asyncio.sleep(0.05)


async def test_blocking_no_thanks_on_an_old_prompt_and_forget_for_staff(world: World) -> None:
    db, clock = world.db, world.clock
    async with db.write() as session:
        session.add(StaffMember(telegram_id=1001, role="mediator", granted_at=clock.now()))
    alice = world.client.user(1001, "Alice", "fr")
    await world.client.register(alice)
    async with bot_running(settings(world), clock):
        await alice.send("/start")
        old_prompt = await alice.wait_message()
        await alice.send("/start")
        await alice.wait_message()
        await alice.press("✅ Oui, je suis d'accord")
        await edited(alice)
        seen = (await person(db, 1001)).last_seen_at  # type: ignore[union-attr]

        # Blocking is not activity: the retention clock stays; the person is unreachable.
        clock.advance(timedelta(days=2))
        await alice.block()

        async def blocked() -> bool:
            return not (await person(db, 1001)).is_active  # type: ignore[union-attr]

        await eventually(blocked)
        await alice.unblock()

        async def unblocked() -> bool:
            return (await person(db, 1001)).is_active  # type: ignore[union-attr]

        await eventually(unblocked)
        assert (await person(db, 1001)).last_seen_at == seen  # type: ignore[union-attr]

        # "No thanks" on the old prompt asks first, as /privacy's button does.
        await alice.press("❌ Non merci", message_id=old_prompt.message_id)
        question = await edited(alice)
        assert "Ne plus rien recevoir ?" in question.text
        assert "liste d'attente sont abandonnées" in question.text
        assert (await person(db, 1001)).consented_at is not None  # type: ignore[union-attr]
        await alice.press("↩️ Non, continuer", message_id=old_prompt.message_id)
        await edited(alice)

        # Staff are told that their Telegram id stays with their role.
        await alice.send("/forget")
        ask = await alice.wait_message()
        assert "votre lien avec Telegram" not in ask.text and "rôle dans l'équipe" in ask.text
        await alice.press("🗑 Oui, tout effacer")
        done = await edited(alice)
        assert "identifiant Telegram reste avec votre rôle" in done.text
