"""Team roles end to end, through the Bot API emulator: seeding from STAFF, /grant and /revoke
by a coordinator (audit rows, the person told, menus per chat), every bad input answered with
nothing changed, refusals logged without personal data, forged and replayed buttons."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select

from bot.clock import ManualClock
from bot.logs import log_pseudonym
from bot.plumbing.callbacks import CallbackCodec
from bot.services.residents import ResidentService
from bot.services.staff import ROLE_NOTICE
from bot.settings import Settings
from bot.text.i18n import Translator
from handlers import RESIDENT_COMMANDS, STAFF_COMMANDS
from storage.db import Database
from storage.models import OutboxMessage, RoleChange, StaffMember
from tests.e2e import bot_running, settings_for
from tests.factories import new_clock

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

BOSS, MEDIATOR, RESIDENT, NEWCOMER, STRANGER = 100, 200, 300, 3_000_000_042, 555
STAFF = f"coordinator:{BOSS},mediator:{MEDIATOR}"
TRANSLATOR = Translator.load("fr")


@dataclass
class World:
    emulator: BotApiEmulator
    client: EmulatorClient
    db: Database
    settings: Settings
    clock: ManualClock

    async def resident(self, telegram_id: int, name: str, language: str) -> SimulatedUser:
        await ResidentService(self.db, self.clock).give_consent(telegram_id, name, language)
        user = self.client.user(telegram_id, name, language)
        await user.register()
        return user

    async def menu(self, telegram_id: int) -> list[str]:
        return [c["command"] for c in await self.client.commands(f"chat:{telegram_id}")]

    async def audit(self) -> list[tuple[int, str, str, int | None]]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(
                    RoleChange.telegram_id,
                    RoleChange.role,
                    RoleChange.action,
                    RoleChange.changed_by,
                ).order_by(RoleChange.id)
            )
            return [(t, role, action, by) for t, role, action, by in rows]

    async def roles(self) -> set[tuple[int, str]]:
        async with self.db.read() as session:
            rows = await session.execute(select(StaffMember.telegram_id, StaffMember.role))
            return {(telegram_id, role) for telegram_id, role in rows}

    async def notices(self) -> list[tuple[int | None, str]]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(OutboxMessage.chat_id, OutboxMessage.status)
                .where(OutboxMessage.kind == ROLE_NOTICE)
                .order_by(OutboxMessage.id)
            )
            return [(chat_id, status) for chat_id, status in rows]


@pytest.fixture
async def world(db: Database, database_url: str) -> AsyncIterator[World]:
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(emulator, database_url, staff=STAFF, outbox_sweep_seconds=0.2)
        yield World(emulator, client, db, settings, new_clock())


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, SimulatedUser]]:
    """The coordinator (French), a mediator (English), a resident and a newcomer (Arabic),
    all with a private chat; the bot running."""
    cast = {
        "boss": await world.resident(BOSS, "Claire", "fr"),
        "mediator": await world.resident(MEDIATOR, "Sam", "en"),
        "resident": await world.resident(RESIDENT, "Amina", "fr"),
        "newcomer": await world.resident(NEWCOMER, "Karim", "ar"),
    }
    async with bot_running(world.settings, world.clock):
        yield cast


def staff_names(roles: set[str]) -> list[str]:
    """Coordinators get all; others the union of their roles', once each, in table order."""
    if "coordinator" in roles:
        return list(STAFF_COMMANDS["coordinator"])
    return list(dict.fromkeys(c for r, cs in STAFF_COMMANDS.items() if r in roles for c in cs))


def expected_menu(roles: set[str], language: str) -> list[dict[str, str]]:
    staff = staff_names(roles)
    return [
        {"command": name, "description": TRANSLATOR.label(language, f"commands.{name}")}
        for name in RESIDENT_COMMANDS
    ] + [
        {"command": name, "description": TRANSLATOR.label(language, f"staff_commands.{name}")}
        for name in staff
    ]


async def test_staff_from_the_setting_get_audit_rows_and_their_own_menus(world, people):
    assert await world.audit() == [
        (BOSS, "coordinator", "grant", None),
        (MEDIATOR, "mediator", "grant", None),
    ]
    assert await world.client.commands(f"chat:{BOSS}") == expected_menu({"coordinator"}, "fr")
    assert await world.client.commands(f"chat:{MEDIATOR}") == expected_menu({"mediator"}, "en")
    assert "grant" not in await world.menu(MEDIATOR)
    assert await world.menu(RESIDENT) == []
    for language in ("", "fr", "en", "ar"):
        default = await world.client.commands(language_code=language)
        assert [c["command"] for c in default] == list(RESIDENT_COMMANDS)


async def test_a_coordinator_grants_and_revokes_the_person_is_told_and_their_menu_follows(
    world, people
):
    boss, newcomer = people["boss"], people["newcomer"]
    await boss.send(f"/grant facilitator {NEWCOMER}")
    done = await boss.wait_message(contains="C'est fait")
    assert f"{NEWCOMER} a maintenant le rôle animateur" in done.text
    told = await newcomer.wait_message(contains="منشط")
    assert "لديك الآن الدور" in told.text
    assert await world.client.commands(f"chat:{NEWCOMER}") == expected_menu({"facilitator"}, "ar")

    await boss.send(f"/grant mediator {NEWCOMER}")
    await boss.wait_message(contains="C'est fait")
    await newcomer.wait_message(contains="وسيط")
    both = await world.menu(NEWCOMER)
    assert both == [*RESIDENT_COMMANDS, *staff_names({"mediator", "facilitator"})]
    assert len(both) == len(set(both))

    await boss.send(f"/revoke facilitator {NEWCOMER}")
    await boss.wait_message(contains="n'a plus le rôle animateur")
    await newcomer.wait_message(contains="لم يعد لديك الدور")
    assert await world.menu(NEWCOMER) == [*RESIDENT_COMMANDS, *staff_names({"mediator"})]

    await boss.send(f"/revoke mediator {NEWCOMER}")
    await boss.wait_message(contains="n'a plus le rôle médiateur")
    await newcomer.wait_message(contains="لم يعد لديك الدور")
    assert await world.client.commands(f"chat:{NEWCOMER}") == []  # back to the resident menu

    assert (await world.audit())[2:] == [
        (NEWCOMER, "facilitator", "grant", BOSS),
        (NEWCOMER, "mediator", "grant", BOSS),
        (NEWCOMER, "facilitator", "revoke", BOSS),
        (NEWCOMER, "mediator", "revoke", BOSS),
    ]
    assert [chat_id for chat_id, _ in await world.notices()] == [NEWCOMER] * 4


async def test_someone_who_never_talked_to_the_bot_gets_the_role_and_no_message(world, people):
    boss, newcomer = people["boss"], people["newcomer"]
    await boss.send(f"/grant coordinator {STRANGER}")
    done = await boss.wait_message(contains="C'est fait")
    assert "n'a pas encore ouvert le bot" in done.text  # no menu promised
    await boss.send(f"/grant mediator {NEWCOMER}")  # queued after the stranger's notice
    await newcomer.wait_message(contains="وسيط")
    # The newcomer's notice arrived, so the stranger's, queued before it, was handled.
    assert (await world.notices())[0] == (STRANGER, "dropped")
    assert (STRANGER, "coordinator") in await world.roles()
    # Telegram refuses the menu of a chat it does not know: it waits for their first update
    # (tests/test_roles_waiting_menus_e2e.py).
    assert await world.menu(STRANGER) == []


BAD_INPUTS = [
    ("/grant", "/grant RÔLE NUMÉRO"),
    ("/revoke", "/revoke RÔLE NUMÉRO"),
    ("/grant mediator", "/grant RÔLE NUMÉRO"),
    ("/grant mediator 1 2", "/grant RÔLE NUMÉRO"),
    (f"/grant mediator @{NEWCOMER}", "n'est pas un identifiant Telegram"),
    ("/grant mediator Karim", "n'est pas un identifiant Telegram"),
    (f"/grant chef {NEWCOMER}", "Je ne connais pas le rôle « \u2068chef\u2069 »"),
    (f"/grant resident {NEWCOMER}", "Tout le monde est déjà habitant"),
    (f"/grant mediator {MEDIATOR}", "a déjà le rôle médiateur"),
    (f"/revoke facilitator {MEDIATOR}", "n'a pas le rôle animateur"),
    (f"/revoke coordinator {BOSS}", "Vous êtes le seul coordinateur"),
    (f"/revoke {NEWCOMER}", "n'a aucun rôle"),
]


async def test_every_bad_input_is_answered_and_changes_nothing(world, people):
    before = (await world.roles(), await world.audit())
    for command, answer in BAD_INPUTS:
        await people["boss"].send(command)
        reply = await people["boss"].wait_message(contains=answer)
        if command in ("/grant", "/revoke"):
            assert "mediator (médiateur)" in reply.text and "coordinator" in reply.text
            assert "<b>" not in reply.text and "mediator" in reply.html
    assert (await world.roles(), await world.audit()) == before
    assert await world.notices() == []
    assert await world.menu(NEWCOMER) == []


async def test_a_resident_and_a_mediator_are_refused_and_the_refusal_is_logged_anonymously(
    world, people, caplog
):
    before = (await world.roles(), await world.audit())
    with caplog.at_level(logging.INFO, logger="handlers.common"):
        await people["resident"].send(f"/grant coordinator {RESIDENT}")
        await people["resident"].wait_message(contains="réservée à l'équipe")
        await people["mediator"].send(f"/revoke coordinator {BOSS}")
        await people["mediator"].wait_message(contains="only for the programme's team")
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refusals) == 2
    assert (
        log_pseudonym(RESIDENT, world.settings.effective_token) in refusals[0]
        and "/grant" in refusals[0]
    )
    assert (
        log_pseudonym(MEDIATOR, world.settings.effective_token) in refusals[1]
        and "/revoke" in refusals[1]
    )
    for line in refusals:
        assert not re.search(rf"\b({RESIDENT}|{MEDIATOR}|{BOSS})\b", line)
        assert "Amina" not in line and "Sam" not in line
    assert (await world.roles(), await world.audit()) == before


async def test_role_buttons_are_checked_on_every_press(world, people, caplog):
    boss, mediator = people["boss"], people["mediator"]
    await boss.send(f"/grant {NEWCOMER}")
    offer = await boss.wait_message(contains="Quel rôle donner")
    assert offer.button_texts() == ["médiateur", "animateur", "coordinateur"]
    button = offer.buttons[1][0]
    assert button.callback_data is not None

    await boss.press("animateur")
    done = await boss.wait_event(kind="edit")
    assert done.message is not None and "a maintenant le rôle animateur" in done.message.text
    assert await world.menu(NEWCOMER) == [*RESIDENT_COMMANDS, *STAFF_COMMANDS["facilitator"]]

    # Replayed: the same button again changes nothing and says so.
    await boss.press_data(button.callback_data, message_id=offer.message_id)
    replay = await boss.wait_event(kind="edit")
    assert replay.message is not None and "a déjà le rôle animateur" in replay.message.text

    # Forged: another role with the same signature, or a button made for someone else.
    forged = button.callback_data.replace("|Gg|1|", "|Gg|2|")
    assert forged != button.callback_data
    query = await boss.press_data(forged, message_id=offer.message_id)
    answer = await boss.callback_answer(query)
    assert answer.show_alert and "n'est plus valable" in (answer.text or "")
    query = await mediator.press_data(button.callback_data, message_id=offer.message_id)
    assert "does not work any more" in ((await mediator.callback_answer(query)).text or "")

    # Well signed for the mediator, but the mediator is no coordinator.
    codec = CallbackCodec(world.settings.effective_token.encode())
    own = codec.encode(MEDIATOR, "role_grant", 2, 0, MEDIATOR)
    with caplog.at_level(logging.INFO, logger="handlers.common"):
        query = await mediator.press_data(own, message_id=offer.message_id)
        refused = await mediator.callback_answer(query)
    assert refused.show_alert and "only for the programme's team" in (refused.text or "")
    assert any(
        log_pseudonym(MEDIATOR, world.settings.effective_token) in r.getMessage()
        for r in caplog.records
    )

    assert (await world.audit())[2:] == [(NEWCOMER, "facilitator", "grant", BOSS)]
    assert (MEDIATOR, "coordinator") not in await world.roles()


async def test_revoke_buttons_offer_the_roles_held(world, people):
    boss = people["boss"]
    await boss.send(f"/revoke {MEDIATOR}")
    offer = await boss.wait_message(contains="Quel rôle retirer")
    assert offer.button_texts() == ["médiateur"]
    await boss.press("médiateur")
    done = await boss.wait_event(kind="edit")
    assert done.message is not None and "n'a plus le rôle médiateur" in done.message.text
    await people["mediator"].wait_message(contains="You no longer have the role")
    assert await world.client.commands(f"chat:{MEDIATOR}") == []
