"""/broadcast end to end, through the Bot API emulator, on both backends.

Composition and audiences, the paced sender (429s, blocked people, the pace itself), a
restart in the middle, stopping in flight, and residents turning announcements off and on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from telegram import Update

from bot.plumbing.broadcast_sending import (
    BATCH,
    SENDER_KEY,
    BroadcastSender,
    start_broadcast_sender,
    stop_broadcast_sender,
)
from bot.plumbing.context import BotApplication
from bot.services.broadcasts.drafts import BroadcastService
from bot.services.outbox import LEASE, MAX_ATTEMPTS, Outbox
from handlers.broadcast_progress import render_broadcast, show_progress
from storage.db import Database
from storage.models import Broadcast, OutboxMessage, Resident, Territory
from tests.broadcast_helpers import answer_needs, outbox_counts, register, seed_residents
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_place, seed_workshop
from tests.virtual_time import VirtualTimer

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

STAFF_ID = 900
TEXT = "Fête du numérique samedi à la médiathèque"


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[BotApiEmulator, EmulatorClient]]:
    async with BotApiEmulator() as server, EmulatorClient(server.side_url) as client:
        yield server, client


def settings(server: BotApiEmulator, database_url: str, **overrides: object):
    values: dict[str, object] = {
        "outbox_sweep_seconds": 0.2,
        "staff": f"mediator:{STAFF_ID}",
        "broadcast_rate": 30,
    }
    values.update(overrides)
    return settings_for(server, database_url, **values)


async def compose(staff: SimulatedUser, text: str = TEXT) -> None:
    await staff.send("/broadcast")
    await staff.wait_message(contains="Nouvelle annonce")
    await staff.send(text)
    await staff.wait_message(contains="Ajouter une photo")
    await staff.press("Sans photo")
    await staff.wait_event(kind="edit", contains="Qui doit la recevoir")


async def preview_count(staff: SimulatedUser) -> int:
    """Wait for the preview and the summary; the number of recipients it announces."""
    await staff.wait_message(contains=TEXT)
    summary = await staff.wait_message(contains="Destinataires")
    assert summary.text is not None
    line = summary.text.splitlines()[-1]
    return int(line.split()[0])


async def send_to_everyone(staff: SimulatedUser) -> None:
    await compose(staff)
    await staff.press("Tout le monde")
    await preview_count(staff)
    await staff.press("Confirmer et envoyer")
    await staff.wait_event(kind="edit", contains="Envoi de l'annonce")


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll a condition on the database (the sender works in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def broadcast_id_of(db: Database) -> int:
    async with db.read() as session:
        found = await session.scalar(select(Broadcast.id).order_by(Broadcast.id.desc()))
    assert found is not None
    return found


def received(traffic: dict, people: set[int]) -> Counter[int]:
    return Counter(chat for chat in traffic["chat_ids"] if chat in people)


def jumping() -> VirtualTimer:
    """Budget time that follows the real one and jumps over every wait of the budget (its
    pace, a chat's windows, a 429 pause) as soon as the bot has nothing else to do."""
    return VirtualTimer(auto=True, follow_real_time=True)


def faster_sender(application: BotApplication, rate: float) -> BroadcastSender:
    """Tests may go above Telegram's 30/s through the constructor, never the setting."""
    return start_broadcast_sender(application, render_broadcast, show_progress, rate=rate)


async def test_residents_cannot_broadcast_nor_press_staff_buttons(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    await seed_residents(db, clock, [51])
    resident = client.user(51, "Nadia", "fr")
    async with bot_running(settings(server, database_url), clock) as application:
        await resident.send("/broadcast")
        refusal = await resident.wait_message(contains="réservée à l'équipe")
        assert refusal is not None
        assert await services_of(application).broadcasts.draft(51) is None
        # A correctly signed staff button (made for this person) is still refused.
        data = services_of(application).callbacks.encode(51, "broadcast_stop", 1)
        query = await resident.press_data(data, message_id=refusal.message_id)
        answer = await resident.callback_answer(query)
        assert "réservée à l'équipe" in (answer.raw.get("text") or "")


async def test_each_audience_is_previewed_with_its_count_then_sent(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    place = await seed_place(db, area="Montreynaud")
    workshop = await seed_workshop(db, clock, place=place, title="Premiers pas smartphone")
    fr = await seed_residents(db, clock, list(range(101, 109)))  # 8 in French
    en = await seed_residents(db, clock, [109, 110, 111], language="en")
    await seed_residents(db, clock, [112], wants_announcements=False)
    await register(db, clock, workshop, fr[:3], "confirmed")
    await register(db, clock, workshop, fr[3:5], "waitlisted")
    async with db.read() as session:
        key = await session.scalar(select(Territory.key).where(Territory.id == place[0]))
    await answer_needs(db, clock, en[0], "neighbourhood", [key])
    await answer_needs(db, clock, fr[7], "hard_tasks", ["email"])
    await answer_needs(db, clock, en[1], "hard_tasks", ["email", "sante"])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    people = [client.user(t, f"P{t}", "fr") for t in range(101, 113)]
    await client.register(*people)
    async with bot_running(settings(server, database_url), clock):
        await compose(staff)
        expected = [
            (("Tout le monde",), 11),
            (("Un quartier", "Montreynaud"), 6),
            (("Les inscrits d'un atelier", "Premiers pas"), 3),
            (("L'attente d'un atelier", "Premiers pas"), 2),
            (("Un besoin", "Les e-mails"), 2),
            (("Une langue", "English"), 3),
        ]
        for buttons, count in expected:
            for step, button in enumerate(buttons):
                await staff.press(button)
                if step + 1 < len(buttons):
                    await staff.wait_event(kind="edit")
            assert await preview_count(staff) == count, buttons
            await staff.press("Changer les destinataires")
            await staff.wait_event(kind="edit", contains="Qui doit la recevoir")
        await staff.press("Un besoin")
        await staff.wait_event(kind="edit")
        await staff.press("Les e-mails")
        assert await preview_count(staff) == 2
        # Nothing is queued before the confirmation.
        async with db.read() as session:
            assert await session.scalar(select(OutboxMessage.id)) is None
        await staff.press("Confirmer et envoyer")
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
        assert "Envoyés : 2" in (report.text or "")
        # Each in their language: the stop button is rendered at send time.
        for person, button in (
            (people[7], "🔕 Ne plus recevoir d'annonces"),
            (people[9], "🔕 Stop announcements"),
        ):
            message = await person.wait_message(contains=TEXT)
            assert message.button_texts() == [button]
        others = set(range(101, 113)) - {108, 110}
        assert received(await client.traffic(), others) == Counter()


async def test_five_hundred_people_with_blocked_ones_and_429s(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = list(range(10_000, 10_500))
    await seed_residents(db, clock, ids)
    people = [client.user(t, f"P{t}", "fr") for t in ids]
    await client.register(*people)
    # 10 people blocked the bot while it was down for more than a day: Telegram's update
    # telling it has expired, so the broadcast learns it from 403s.
    blocked = set(ids[::50])
    for person in people:
        if person.user_id in blocked:
            await person.block(notify=False)
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    timer = jumping()
    async with bot_running(settings(server, database_url), clock, timer=timer) as application:
        await stop_broadcast_sender(application)
        sender = faster_sender(application, rate=150)
        await send_to_everyone(staff)
        broadcast_id = await broadcast_id_of(db)

        async def sent_at_least(n: int) -> bool:
            return (await outbox_counts(db, broadcast_id)).get("sent", 0) >= n

        for threshold in (100, 250, 400):  # Telegram says "too many requests" now and then
            await wait_until(lambda t=threshold: sent_at_least(t))
            await client.fail_next("sendMessage", 429, retry_after=1)
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=60)
        assert sender.largest_claim <= BATCH == sender.batch_size
        assert application.bot.rate_limiter.rate_limited >= 3
    assert timer.jumped >= 3 * 1.0  # each 429 paused the budget for its retry_after
    counts = received(await client.traffic(), set(ids))
    assert set(counts) == set(ids) - blocked
    assert set(counts.values()) == {1}  # everyone else exactly once
    text = report.text or ""
    assert "Destinataires : 500" in text
    assert "Envoyés : 490" in text
    assert "Bloqués ou annonces coupées : 10" in text
    assert "Échecs : 0" in text
    assert text.count("a bloqué le bot") == 10  # ten failures or fewer: listed in the report
    stats = await client.stats()
    assert stats["responses_429"] >= 3
    async with db.read() as session:
        inactive = set(
            await session.scalars(select(Resident.telegram_id).where(Resident.is_active.is_(False)))
        )
    assert inactive == blocked
    assert await outbox_counts(db, broadcast_id) == {"sent": 490, "dropped": 10}
    # The blocked ones are left out of the next audience.
    assert await BroadcastService(db, clock).count({"kind": "all"}) == 490


async def test_a_restart_in_the_middle_resumes_without_duplicates(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = list(range(20_000, 20_060))
    await seed_residents(db, clock, ids)
    people = [client.user(t, f"P{t}", "fr") for t in ids]
    await client.register(*people)
    blocked = set(ids[:12])  # more than 10 failures: the list comes as a CSV file
    for person in people[:12]:
        await person.block(notify=False)  # unknown to the bot: learnt from 403s
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    config = settings(server, database_url, broadcast_rate=20)
    async with bot_running(config, clock):
        await send_to_everyone(staff)
        broadcast_id = await broadcast_id_of(db)

        async def half_done() -> bool:
            counts = await outbox_counts(db, broadcast_id)
            return counts.get("sent", 0) + counts.get("dropped", 0) >= 30

        await wait_until(half_done)
    stopped_at = await outbox_counts(db, broadcast_id)
    assert stopped_at.get("pending", 0) > 0  # really stopped in the middle
    async with bot_running(config, clock, timer=jumping()):
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=30)
        csv_file = await staff.wait_message(contains="CSV", timeout=10)
        content = (await staff.download(csv_file)).decode("utf-8-sig")
    counts = received(await client.traffic(), set(ids))
    assert set(counts) == set(ids) - blocked and set(counts.values()) == {1}
    assert "Envoyés : 48" in (report.text or "")
    lines = content.strip().splitlines()
    assert lines[0] == "person,outcome,reason" and len(lines) == 13
    assert not any(str(t) in content for t in ids)  # pseudonyms, never Telegram ids
    # The progress message of the first run was edited to the end by the second.
    async with db.read() as session:
        message_id = await session.scalar(
            select(Broadcast.progress_message_id).where(Broadcast.id == broadcast_id)
        )
    final = next(m for m in await staff.messages() if m.message_id == message_id)
    assert "Annonce envoyée" in (final.text or "")


async def test_a_mediator_stops_a_broadcast_in_flight(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = list(range(30_000, 30_080))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url, broadcast_rate=10), clock):
        await send_to_everyone(staff)
        broadcast_id = await broadcast_id_of(db)

        async def started() -> bool:
            return (await outbox_counts(db, broadcast_id)).get("sent", 0) >= 5

        await wait_until(started)
        await staff.press("Arrêter l'envoi")
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
        counts = await outbox_counts(db, broadcast_id)
    sent = counts["sent"]
    assert sent < 80 and counts == {"sent": sent, "dropped": 80 - sent}
    assert "arrêté avant la fin" in (report.text or "")
    assert f"Non envoyés (arrêt) : {80 - sent}" in (report.text or "")
    assert sum(received(await client.traffic(), set(ids)).values()) == sent
    async with db.read() as session:
        status = await session.scalar(select(Broadcast.status).where(Broadcast.id == broadcast_id))
    assert status == "cancelled"


@pytest.mark.parametrize(("rate", "people"), [(30, 75), (5, 16)])
async def test_the_pace_stays_under_the_configured_rate(db, database_url, emulator, rate, people):
    server, client = emulator
    clock = new_clock()
    ids = list(range(40_000, 40_000 + people))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url, broadcast_rate=rate), clock):
        await send_to_everyone(staff)
        await staff.wait_message(contains="Bilan de l'envoi", timeout=30)
    traffic = await client.traffic()
    times = sorted(
        t for t, c in zip(traffic["times"], traffic["chat_ids"], strict=True) if c in ids
    )
    assert len(times) == people
    busiest = max(sum(1 for u in times[i:] if u - t < 1.0) for i, t in enumerate(times))
    assert busiest <= math.ceil(rate)
    # Really paced: the sends are spread over at least (n - 1) / rate seconds.
    assert times[-1] - times[0] >= (people - 1) / rate * 0.95


async def test_residents_turn_announcements_off_and_on(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    await seed_residents(db, clock, [61, 62])
    leila, marc = client.user(61, "Leïla", "fr"), client.user(62, "Marc", "fr")
    await client.register(leila, marc)
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url), clock) as application:
        await send_to_everyone(staff)
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
        announcement = await leila.wait_message(contains=TEXT)
        await leila.press("Ne plus recevoir d'annonces", message_id=announcement.message_id)
        await leila.wait_message(contains="ne recevrez plus les annonces")
        service = services_of(application).broadcasts
        assert await service.wants_announcements(61) is False
        assert await service.count({"kind": "all"}) == 1
        # Rows already queued for someone who turned announcements off are dropped.
        await service.begin(STAFF_ID)
        await service.take_text(STAFF_ID, "Deuxième annonce", 16)
        await service.skip_photo(STAFF_ID)
        await service.choose_audience(STAFF_ID, {"kind": "all"})
        await service.set_announcements(61, True)
        second = await service.confirm(STAFF_ID)
        assert second is not None
        await service.set_announcements(61, False)
        await wait_until(lambda: _closed(db, second))
        assert await outbox_counts(db, second) == {"sent": 1, "dropped": 1}
        # The switch on the language screen turns them on again.
        await leila.send("/language")
        await leila.wait_message(contains="langue")
        await leila.press("Annonces : oui/non")
        await leila.wait_event(kind="edit", contains="coupées")
        await leila.press("Recevoir les annonces")
        await leila.wait_event(kind="edit", contains="activées")
        assert await service.wants_announcements(61) is True


async def _closed(db: Database, broadcast_id: int) -> bool:
    async with db.read() as session:
        finished = await session.scalar(
            select(Broadcast.finished_at).where(Broadcast.id == broadcast_id)
        )
    return finished is not None


def _png() -> bytes:
    """A 1x1 PNG, enough for the emulator to accept it as a photo."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


async def test_a_photo_with_its_caption_is_sent_as_a_photo(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    await seed_residents(db, clock, [71])
    person = client.user(71, "Awa", "fr")
    await client.register(person)
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    await client.register(staff)
    async with bot_running(settings(server, database_url), clock) as application:
        uploaded = await application.bot.send_photo(STAFF_ID, photo=_png())
        file_id = uploaded.photo[-1].file_id
        await staff.send("/broadcast")
        await staff.wait_message(contains="Nouvelle annonce")
        # The emulator's users only type text: the photo arrives as a Telegram update would.
        update = Update.de_json(
            {
                "update_id": 10**6,
                "message": {
                    "message_id": 10**6,
                    "date": int(datetime.now(UTC).timestamp()),
                    "chat": {"id": STAFF_ID, "type": "private"},
                    "from": {"id": STAFF_ID, "is_bot": False, "first_name": "Médiatrice"},
                    "photo": [
                        {"file_id": file_id, "file_unique_id": "u1", "width": 1, "height": 1}
                    ],
                    "caption": TEXT,
                },
            },
            application.bot,
        )
        await application.process_update(update)
        await staff.wait_message(contains="Qui doit la recevoir")
        await staff.press("Tout le monde")
        preview = await staff.wait_message(contains=TEXT)
        assert preview.kind == "photo"
        await staff.wait_message(contains="Destinataires")
        await staff.press("Confirmer et envoyer")
        got = await person.wait_message(contains=TEXT, timeout=10)
        assert got.kind == "photo" and got.photo is not None
        assert got.photo["file_id"] == file_id
        assert application.bot_data[SENDER_KEY].batch_size == BATCH


async def test_two_broadcasts_to_the_same_people_keep_one_second_per_chat(
    db, database_url, emulator
):
    server, client = emulator
    clock = new_clock()
    ids = [81, 82, 83]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    async with bot_running(settings(server, database_url), clock) as application:
        service = services_of(application).broadcasts
        queued = []
        for text in ("Première annonce", "Deuxième annonce"):
            await service.begin(STAFF_ID)
            await service.take_text(STAFF_ID, text, len(text))
            await service.skip_photo(STAFF_ID)
            await service.choose_audience(STAFF_ID, {"kind": "all"})
            queued.append(await service.confirm(STAFF_ID))
        for broadcast_id in queued:
            await wait_until(lambda b=broadcast_id: _closed(db, b))
    traffic = await client.traffic()
    by_chat: dict[int, list[float]] = {}
    for moment, chat in zip(traffic["times"], traffic["chat_ids"], strict=True):
        by_chat.setdefault(chat, []).append(moment)
    for chat in ids:
        first, second = by_chat[chat]
        assert second - first >= 0.95  # Telegram's one message per second per chat


async def test_refused_messages_fail_and_passing_errors_are_retried(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = [91, 92, 93]
    resident_ids = await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url), clock):
        await compose(staff)
        await staff.press("Tout le monde")
        await preview_count(staff)
        # The first send is refused for good, the second meets a passing outage.
        await client.fail_next("sendMessage", 400, description="Bad Request: chat not found")
        await client.fail_next("sendMessage", 502)
        await staff.press("Confirmer et envoyer")
        await staff.wait_event(kind="edit", contains="Envoi de l'annonce")
        broadcast_id = await broadcast_id_of(db)

        async def waiting_for_a_retry() -> bool:
            async with db.read() as session:
                rows = (
                    await session.execute(
                        select(OutboxMessage.status, OutboxMessage.attempts).where(
                            OutboxMessage.broadcast_id == broadcast_id,
                            OutboxMessage.last_error.is_not(None),
                        )
                    )
                ).all()
            return sorted(rows) == [("failed", 1), ("pending", 1)]

        await wait_until(waiting_for_a_retry)
        clock.advance(timedelta(minutes=1))  # the backoff has passed
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    text = report.text or ""
    assert "Envoyés : 2" in text and "Échecs : 1" in text
    assert f"R{resident_ids[0]} : bad request" in text  # Telegram's own words


async def _queue_broadcast(application: BotApplication, text: str = TEXT) -> int:
    service = services_of(application).broadcasts
    await service.begin(STAFF_ID)
    await service.take_text(STAFF_ID, text, len(text))
    await service.skip_photo(STAFF_ID)
    await service.choose_audience(STAFF_ID, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF_ID)
    application.bot_data[SENDER_KEY].kick()
    return broadcast_id


async def test_rows_taken_over_during_a_long_wait_are_not_sent_twice(
    db, database_url, emulator, caplog
):
    """The lease is renewed once the budget grants the place, not before the wait for it."""
    caplog.set_level(logging.INFO, logger="bot.plumbing.broadcast_sending")
    server, client = emulator
    clock = new_clock()
    ids = [95, 96, 97]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    other_engine = Database(database_url)  # as a second running instance would have
    timer = VirtualTimer(follow_real_time=True)
    try:
        async with bot_running(settings(server, database_url), clock, timer=timer) as application:
            application.bot.rate_limiter.pause(6.0)  # a 429: every message waits
            await _queue_broadcast(application)

            async def claimed() -> bool:
                async with db.read() as session:
                    holders = await session.scalars(
                        select(OutboxMessage.claimed_by).where(
                            OutboxMessage.broadcast_id.is_not(None)
                        )
                    )
                    return any(holders)

            await wait_until(claimed, timeout=5)
            clock.advance(LEASE + timedelta(seconds=1))  # the pause outlasts the lease
            taken = await Outbox(other_engine, clock, "instance-b").claim_due(10, broadcast=True)
            assert len(taken) == len(ids)
            timer.advance(6.5)  # the pause ends: this instance must not send them

            async def all_given_up() -> bool:
                given_up = [r for r in caplog.records if "no longer held" in r.getMessage()]
                return len(given_up) == len(ids)

            await wait_until(all_given_up, timeout=10)
            traffic = await client.traffic()
            assert not received(traffic, set(ids))
    finally:
        await other_engine.dispose()


async def test_a_recipient_who_must_wait_does_not_stall_the_batch(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = [101, 102, 103]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    timer = VirtualTimer(follow_real_time=True)
    async with bot_running(settings(server, database_url), clock, timer=timer) as application:
        budget = application.bot.rate_limiter
        budget._private_interval = 5.0  # a long per-chat wait, to see who goes first
        await application.bot.send_message(ids[0], "Une réponse")  # the first one must wait
        broadcast_id = await _queue_broadcast(application)

        async def others_received() -> bool:
            return received(await client.traffic(), set(ids)) == Counter([ids[0], *ids[1:]])

        await wait_until(others_received, timeout=10)
        assert not await _closed(db, broadcast_id)  # the first one still waits its turn
        timer.advance(5.0)  # ...and goes once its five seconds have passed
        await wait_until(lambda: _closed(db, broadcast_id), timeout=20)
    order = [chat for chat in (await client.traffic())["chat_ids"] if chat in ids]
    assert order[0] == ids[0] and sorted(order[1:3]) == ids[1:] and order[3] == ids[0]


# -- one row that cannot be prepared (issue 13, item 1) ------------------------------------


async def test_a_row_that_cannot_be_prepared_fails_alone_after_its_attempts(
    db, database_url, emulator
):
    """A recipient whose row fails to be read or rendered is retried with backoff, then
    failed and reported; every failure counts against the same attempt limit (here a read,
    a refused send and a rendering bug in turn), and the others are sent at once."""
    server, client = emulator
    clock = new_clock()
    ids = [121, 122, 123, 124]
    resident_ids = await seed_residents(db, clock, ids)
    bad = 122
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")

    async def flaky(context, message, content):
        """The real renderer, except for one recipient: a failed read on the first
        attempt, a rendering bug on the third and fifth (the others reach Telegram)."""
        if message.chat_id == bad and message.attempts == 1:
            raise OperationalError("SELECT language", {}, Exception("connection reset"))
        if message.chat_id == bad and message.attempts % 2 == 1:
            raise KeyError("broadcast.missing_key")
        return await render_broadcast(context, message, content)

    async with bot_running(settings(server, database_url), clock) as application:
        await stop_broadcast_sender(application)
        sender = start_broadcast_sender(application, flaky, show_progress, rate=30)
        await send_to_everyone(staff)
        broadcast_id = await broadcast_id_of(db)

        async def bad_row() -> OutboxMessage:
            async with db.read() as session:
                return await session.scalar(
                    select(OutboxMessage).where(
                        OutboxMessage.broadcast_id == broadcast_id,
                        OutboxMessage.resident_id == resident_ids[1],
                    )
                )

        async def attempted(n: int) -> bool:
            row = await bad_row()
            return row.attempts == n and row.claimed_until is None

        others = set(ids) - {bad}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await wait_until(lambda n=attempt: attempted(n), timeout=10)
            if attempt == 1:  # the others do not wait for the bad one (nor for the clock)

                async def others_received() -> bool:
                    return received(await client.traffic(), others) == Counter(others)

                await wait_until(others_received, timeout=10)
            row = await bad_row()
            if attempt < MAX_ATTEMPTS:
                assert row.status == "pending"  # retried later, with a growing backoff
                assert row.not_before == clock.now() + timedelta(seconds=2**attempt)
                if attempt % 2 == 1:  # the next attempt is sent, and Telegram refuses it
                    await client.fail_next("sendMessage", 502)
                clock.advance(timedelta(seconds=2**attempt))
                sender.kick()
        assert row.status == "failed" and row.last_error == "not prepared"
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    text = report.text or ""
    assert "Envoyés : 3" in text and "Échecs : 1" in text
    assert f"R{resident_ids[1]} : message non préparé" in text
    assert received(await client.traffic(), set(ids)) == Counter(others)


# -- the progress message and the preview after Confirm (issue 13, items 5 and 6) ----------


async def confirm_from_preview(staff: SimulatedUser) -> int:
    """Compose to everyone, confirm; the id of the preview's summary (the progress message)."""
    await compose(staff)
    await staff.press("Tout le monde")
    await staff.wait_message(contains=TEXT)
    summary = await staff.wait_message(contains="Destinataires")
    query = await staff.press("Confirmer et envoyer", message_id=summary.message_id)
    answer = await staff.callback_answer(query)  # once the broadcast is written
    assert answer.text == "L'envoi a commencé."
    return summary.message_id


async def message_shown(staff: SimulatedUser, message_id: int):
    return next(m for m in await staff.messages() if m.message_id == message_id)


def assert_final(message, sent: int) -> None:
    """The progress message in its final state: the counts, no live button."""
    text = message.text or ""
    assert "Annonce envoyée" in text and f"Envoyés : {sent}" in text, text
    assert message.button_texts() == []


async def test_a_small_broadcast_leaves_its_progress_message_final(db, database_url, emulator):
    """With the real budget the mediator's chat waits its turn while five sends go out: the
    progress message still ends with the final counts and no Stop button."""
    server, client = emulator
    clock = new_clock()
    ids = list(range(131, 136))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    timer = jumping()
    config = settings(server, database_url, rate_limit_per_second=30)
    async with bot_running(config, clock, timer=timer):
        progress_id = await confirm_from_preview(staff)
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    assert timer.jumped >= 3.0  # the mediator's chat waited for places in its 3 s window
    # Every answer of the bot is in (the application has stopped): nothing is left to edit it.
    assert_final(await message_shown(staff, progress_id), sent=5)
    broadcast_id = await broadcast_id_of(db)
    async with db.read() as session:
        stored = await session.scalar(
            select(Broadcast.progress_message_id).where(Broadcast.id == broadcast_id)
        )
    assert stored == progress_id


def sender_task() -> asyncio.Task:
    return next(t for t in asyncio.all_tasks() if t.get_name() == "broadcast-sender")


async def crash_sender(application: BotApplication) -> None:
    """The sender dies where it stands (its rows keep their lease), as in a crash."""
    application.bot_data.pop(SENDER_KEY)
    task = sender_task()
    task.cancel()
    await asyncio.wait([task])


async def test_a_sender_crashed_mid_way_resumes_its_progress_message(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = list(range(140, 160))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    config = settings(server, database_url, broadcast_rate=5)
    async with bot_running(config, clock) as application:
        progress_id = await confirm_from_preview(staff)
        broadcast_id = await broadcast_id_of(db)

        async def some_sent() -> bool:
            return (await outbox_counts(db, broadcast_id)).get("sent", 0) >= 3

        await wait_until(some_sent)
        await crash_sender(application)
    assert (await outbox_counts(db, broadcast_id)).get("pending", 0) > 0
    shown = await message_shown(staff, progress_id)
    assert "Envoi de l'annonce" in (shown.text or "")  # no Confirm nor Cancel any more
    assert shown.button_texts() == ["✖️ Arrêter l'envoi"]
    clock.advance(LEASE + timedelta(seconds=1))  # what the dead sender held is free again
    async with bot_running(config, clock, timer=jumping()):
        await staff.wait_message(contains="Bilan de l'envoi", timeout=30)
    assert_final(await message_shown(staff, progress_id), sent=20)
    assert set(received(await client.traffic(), set(ids))) == set(ids)


async def test_a_broadcast_confirmed_just_before_a_crash_gets_its_progress_message(
    db, database_url, emulator
):
    """The bot died right after the confirmation was written (before anything was shown or
    sent): the next start turns the preview into the progress message, then its final state."""
    server, client = emulator
    clock = new_clock()
    ids = [161, 162, 163]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    config = settings(server, database_url)
    async with bot_running(config, clock) as application:
        await compose(staff)
        await staff.press("Tout le monde")
        await staff.wait_message(contains=TEXT)
        summary = await staff.wait_message(contains="Destinataires")
        await crash_sender(application)
        # The confirmation is committed; the bot dies before answering the button.
        service = services_of(application).broadcasts
        assert await service.confirm(STAFF_ID, progress_message_id=summary.message_id)
    preview = await message_shown(staff, summary.message_id)
    assert "✅ Confirmer et envoyer" in preview.button_texts()
    async with bot_running(config, clock):
        await staff.wait_event(kind="edit", contains="Envoi de l'annonce")
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    assert_final(await message_shown(staff, summary.message_id), sent=3)


async def test_a_deleted_progress_message_is_replaced_by_a_new_one(db, database_url, emulator):
    server, client = emulator
    clock = new_clock()
    ids = list(range(170, 180))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    config = settings(server, database_url, broadcast_rate=5)
    async with bot_running(config, clock, timer=jumping()) as application:
        progress_id = await confirm_from_preview(staff)
        await staff.wait_event(kind="edit", contains="Envoi de l'annonce")
        await application.bot.delete_message(STAFF_ID, progress_id)  # the mediator deleted it
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    async with db.read() as session:
        stored = await session.scalar(select(Broadcast.progress_message_id))
    assert stored is not None and stored != progress_id
    assert_final(await message_shown(staff, stored), sent=10)


async def test_the_first_progress_edit_failing_still_ends_in_the_final_state(
    db, database_url, emulator
):
    """Telegram fails the edit that turns the preview into the progress message (every retry
    of it): the progress message is known all the same, and the next edits bring it to the end."""
    server, client = emulator
    clock = new_clock()
    ids = [181, 182, 183, 184, 185]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url), clock):
        await compose(staff)
        await staff.press("Tout le monde")
        await staff.wait_message(contains=TEXT)
        summary = await staff.wait_message(contains="Destinataires")
        await client.fail_next("editMessageText", 502, count=4)  # a try and its 3 retries
        await staff.press("Confirmer et envoyer", message_id=summary.message_id)
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    assert_final(await message_shown(staff, summary.message_id), sent=5)


async def test_an_old_cancel_button_pressed_during_the_sending_offers_stop(
    db, database_url, emulator
):
    """Cancel pressed after Confirm never says that nothing was sent: the broadcast is being
    sent, and Stop is offered."""
    server, client = emulator
    clock = new_clock()
    ids = list(range(190, 220))
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url, broadcast_rate=5), clock):
        await staff.send("/broadcast")
        first = await staff.wait_message(contains="Nouvelle annonce")
        assert first.button_texts() == ["✖️ Annuler"]
        await staff.send(TEXT)
        await staff.wait_message(contains="Ajouter une photo")
        await staff.press("Sans photo")
        await staff.wait_event(kind="edit", contains="Qui doit la recevoir")
        await staff.press("Tout le monde")
        await staff.wait_message(contains=TEXT)
        summary = await staff.wait_message(contains="Destinataires")
        await staff.press("Confirmer et envoyer", message_id=summary.message_id)
        await staff.wait_event(kind="edit", contains="Envoi de l'annonce")
        preview = await message_shown(staff, summary.message_id)
        assert preview.button_texts() == ["✖️ Arrêter l'envoi"]
        query = await staff.press("Annuler", message_id=first.message_id)
        answer = await staff.callback_answer(query)
        assert "en cours d'envoi" in (answer.text or "")
        answered = await staff.wait_event(kind="edit", contains="en cours d'envoi")
        assert answered.message_id == first.message_id
        old = await message_shown(staff, first.message_id)
        assert "Rien n'a été envoyé" not in (old.text or "")
        assert old.button_texts() == ["✖️ Arrêter l'envoi"]
        await staff.press("Arrêter l'envoi", message_id=first.message_id)
        report = await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    assert "arrêté avant la fin" in (report.text or "")
    final = await message_shown(staff, summary.message_id)
    assert "Annonce arrêtée" in (final.text or "") and final.button_texts() == []


async def test_cancel_on_the_preview_after_confirm_says_it_is_being_sent(
    db, database_url, emulator
):
    """The sender has not turned the preview into the progress message yet (busy, or
    starting): its Cancel, pressed after Confirm, answers the truth and leaves the message
    to the sender, which puts Stop there."""
    server, client = emulator
    clock = new_clock()
    ids = [221, 222, 223]
    await seed_residents(db, clock, ids)
    await client.register(*[client.user(t, f"P{t}", "fr") for t in ids])
    staff = client.user(STAFF_ID, "Médiatrice", "fr")
    async with bot_running(settings(server, database_url), clock) as application:
        await stop_broadcast_sender(application)
        progress_id = await confirm_from_preview(staff)
        query = await staff.press("Annuler", message_id=progress_id)
        answer = await staff.callback_answer(query)
        assert answer.show_alert and "en cours d'envoi" in (answer.text or "")
        assert "rien n'est annulé" in (answer.text or "")
        faster_sender(application, rate=30)
        shown = await staff.wait_event(kind="edit", contains="Envoi de l'annonce")
        assert shown.message_id == progress_id
        assert shown.message is not None
        assert shown.message.button_texts() == ["✖️ Arrêter l'envoi"]
        await staff.wait_message(contains="Bilan de l'envoi", timeout=15)
    assert_final(await message_shown(staff, progress_id), sent=3)
    events = await staff.messages()
    assert not any("Rien n'a été envoyé" in (m.text or "") for m in events)
