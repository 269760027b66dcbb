"""The broadcast service on both backends: drafts, audiences counted in SQL, confirmation."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select

from bot.plumbing.broadcast_sending import Pace
from bot.services.broadcasts.drafts import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    BroadcastService,
    Step,
    TakeOutcome,
)
from bot.services.outbox import LEASE, Outbox
from storage.db import Database
from storage.models import Broadcast, OutboxMessage, Resident
from tests.broadcast_helpers import answer_needs, outbox_counts, register, seed_residents
from tests.factories import new_clock, seed_place, seed_workshop

pytestmark = pytest.mark.storage

STAFF = 900


async def previewed(service: BroadcastService, audience: dict) -> None:
    await service.begin(STAFF)
    assert (await service.take_text(STAFF, "Bonjour <b>à tous</b>", 14)).outcome is TakeOutcome.NEXT
    assert await service.skip_photo(STAFF) is not None
    draft = await service.choose_audience(STAFF, audience)
    assert draft is not None and draft.step is Step.PREVIEW


async def test_the_draft_checks_lengths_and_survives_as_a_row(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await service.begin(STAFF)
    too_long = await service.take_text(STAFF, "x" * (TEXT_LIMIT + 1), TEXT_LIMIT + 1)
    assert too_long.outcome is TakeOutcome.TOO_LONG and too_long.limit == TEXT_LIMIT
    assert (await service.take_text(STAFF, "   ", 3)).outcome is TakeOutcome.EMPTY
    long_text = "y" * (CAPTION_LIMIT + 1)
    assert (await service.take_text(STAFF, long_text, len(long_text))).outcome is TakeOutcome.NEXT
    refused = await service.take_photo(STAFF, "photo-1", None, 0)
    assert refused.outcome is TakeOutcome.TOO_LONG and refused.limit == CAPTION_LIMIT
    # A new service (a restart) finds the draft where it was.
    draft = await BroadcastService(db, clock).draft(STAFF)
    assert draft is not None and draft.step is Step.PHOTO and draft.text == long_text
    await service.begin(STAFF)
    taken = await service.take_photo(STAFF, "photo-2", "Légende", 7)
    assert taken.outcome is TakeOutcome.NEXT
    assert taken.draft is not None and taken.draft.step is Step.AUDIENCE
    assert taken.draft.photo_file_id == "photo-2" and taken.draft.text == "Légende"
    assert await service.discard(STAFF)
    assert await service.draft(STAFF) is None


async def test_each_audience_counts_the_right_people(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    place = await seed_place(db, area="Montreynaud")
    other_place = await seed_place(db, area="Tarentaize")
    workshop = await seed_workshop(db, clock, place=place)
    elsewhere = await seed_workshop(db, clock, place=other_place)
    fr = await seed_residents(db, clock, list(range(1, 11)))  # 10 in French
    en = await seed_residents(db, clock, list(range(11, 15)), language="en")  # 4 in English
    await seed_residents(db, clock, [15], wants_announcements=False)
    await seed_residents(db, clock, [16], is_active=False)
    await seed_residents(db, clock, [17], consented_at=None)
    await register(db, clock, workshop, fr[:3], "confirmed")
    await register(db, clock, workshop, fr[3:5], "waitlisted")
    await register(db, clock, elsewhere, en[:2], "confirmed")
    territory_key = await _territory_key(db, place[0])
    await answer_needs(db, clock, en[3], "neighbourhood", [territory_key])
    await answer_needs(db, clock, fr[0], "hard_tasks", ["email", "sante"])
    await answer_needs(db, clock, fr[9], "hard_tasks", ["email"])
    await answer_needs(db, clock, en[2], "hard_tasks", ["argent_impots"])
    # Someone who turned announcements off is never counted, whatever they answered.
    off = await _id_of(db, 15)
    await answer_needs(db, clock, off, "hard_tasks", ["email"])

    assert await service.count({"kind": "all"}) == 14
    assert await service.count({"kind": "territory", "id": place[0]}) == 5 + 1
    assert await service.count({"kind": "territory", "id": other_place[0]}) == 2
    assert await service.count({"kind": "registrants", "id": workshop}) == 3
    assert await service.count({"kind": "waitlist", "id": workshop}) == 2
    assert await service.count({"kind": "need", "key": "email"}) == 2
    assert await service.count({"kind": "need", "key": "sante"}) == 1
    assert await service.count({"kind": "language", "code": "en"}) == 4
    assert await service.count({"kind": "language", "code": "fr"}) == 10


async def test_confirm_queues_one_row_per_recipient_once(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    ids = await seed_residents(db, clock, list(range(1, 31)))
    await seed_residents(db, clock, [31], wants_announcements=False)
    await seed_residents(db, clock, [32], is_active=False)
    await previewed(service, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF)
    assert broadcast_id is not None
    assert await service.confirm(STAFF) is None  # a double tap queues nothing more
    assert await outbox_counts(db, broadcast_id) == {"pending": 30}
    async with db.read() as session:
        recipients = await session.scalar(
            select(Broadcast.recipients).where(Broadcast.id == broadcast_id)
        )
        keys = set(
            await session.scalars(
                select(OutboxMessage.dedupe_key).where(OutboxMessage.broadcast_id == broadcast_id)
            )
        )
    assert recipients == 30
    assert keys == {f"broadcast:{broadcast_id}:{i}" for i in ids}
    progress = await service.progress(broadcast_id)
    assert progress is not None and (progress.remaining, progress.sent) == (30, 0)


async def test_cancel_drops_the_rows_left_and_closing_queues_one_report(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await seed_residents(db, clock, list(range(1, 6)))
    await previewed(service, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF)
    assert broadcast_id is not None
    assert await service.cancel(broadcast_id)
    assert not await service.cancel(broadcast_id)
    final = await service.final_progress(broadcast_id)
    assert final is not None and final.status == "cancelled" and final.cancelled == 5
    assert await service.close(final)
    assert not await service.close(final)  # closed once
    assert await service.final_progress(broadcast_id) is None
    async with db.read() as session:
        reports = await session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.kind == "broadcast_report")
        )
    assert reports is not None


async def test_the_progress_message_is_recorded_and_closing_waits_for_its_final_state(db):
    """The preview's message is known from the confirmation on; a broadcast closes only in
    the state its progress message was last shown with."""
    clock = new_clock()
    service = BroadcastService(db, clock)
    await seed_residents(db, clock, list(range(1, 4)))
    await previewed(service, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF, progress_message_id=77)
    assert broadcast_id is not None
    assert await service.shown_in(STAFF, 77) == broadcast_id
    assert await service.shown_in(STAFF, 78) is None
    assert await service.sending_by(STAFF) == broadcast_id
    progress = await service.progress(broadcast_id)
    assert progress is not None
    assert (progress.progress_chat_id, progress.progress_message_id) == (STAFF, 77)
    assert await service.final_progress(broadcast_id) is None  # rows are still pending
    outbox = Outbox(db, clock, "worker")
    for row in await outbox.claim_due(10, broadcast=True):
        await outbox.mark_sent(row.id)
    final = await service.final_progress(broadcast_id)
    assert final is not None and (final.sent, final.remaining, final.finished) == (3, 0, False)
    assert await service.cancel(broadcast_id)  # a stop pressed after it was shown as sent
    assert not await service.close(final)  # shown again first, as stopped
    again = await service.final_progress(broadcast_id)
    assert again is not None and again.status == "cancelled"
    assert await service.close(again)
    assert (await service.progress(broadcast_id)).finished
    assert await service.sending_by(STAFF) is None


async def test_announcements_can_be_turned_off_and_on(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await seed_residents(db, clock, [5])
    assert await service.set_announcements(5, False)
    assert await service.wants_announcements(5) is False
    assert await service.count({"kind": "all"}) == 0
    assert await service.set_announcements(5, True)
    assert await service.count({"kind": "all"}) == 1
    assert not await service.set_announcements(404, False)


async def _territory_key(db, territory_id: int) -> str:
    from storage.models import Territory

    async with db.read() as session:
        return await session.scalar(select(Territory.key).where(Territory.id == territory_id))


async def _id_of(db, telegram_id: int) -> int:
    async with db.read() as session:
        return await session.scalar(select(Resident.id).where(Resident.telegram_id == telegram_id))


async def test_the_generic_delivery_never_claims_broadcast_rows(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await seed_residents(db, clock, list(range(1, 26)))
    await previewed(service, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF)
    outbox = Outbox(db, clock, "worker-a")
    assert await outbox.claim_due(50) == []
    batch = await outbox.claim_due(10, broadcast=True)
    assert len(batch) == 10 and {m.broadcast_id for m in batch} == {broadcast_id}
    # A second sender never gets the same rows.
    other = await Outbox(db, clock, "worker-b").claim_due(50, broadcast=True)
    assert len(other) == 15 and not {m.id for m in other} & {m.id for m in batch}
    assert await service.cancel(broadcast_id)
    # Rows of a stopped broadcast are not claimed any more.
    clock.advance(timedelta(minutes=5))  # the leases ran out
    assert await outbox.claim_due(50, broadcast=True) == []


async def test_a_forgotten_draft_is_not_taken_for_an_announcement(db):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await service.begin(STAFF)
    clock.advance(timedelta(hours=25))
    assert await service.draft(STAFF) is None
    assert (await service.take_text(STAFF, "bonjour", 7)).outcome is TakeOutcome.NOT_COMPOSING


def test_the_pace_spaces_sends_and_caps_any_second():
    pace = Pace(5)
    now = 0.0
    starts = []
    for _ in range(12):
        now += pace.delay(now)
        starts.append(now)
        pace.started(now)
        now += 0.05  # the request takes 50 ms
        pace.ended(now)
    gaps = [b - a for a, b in pairwise(starts)]
    assert min(gaps) >= 0.2 - 1e-9
    assert max(sum(1 for u in starts if t <= u < t + 1.0) for t in starts) <= 5
    pace.pause(3.0, now)
    assert pace.delay(now) == pytest.approx(3.0)
    assert Pace(30).per_second == 30


async def test_a_lapsed_lease_is_not_renewed_and_its_rows_are_not_sent_twice(db, database_url):
    clock = new_clock()
    service = BroadcastService(db, clock)
    await seed_residents(db, clock, list(range(1, 6)))
    await previewed(service, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF)
    other_engine = Database(database_url)  # as a second running instance would have
    try:
        a, b = Outbox(db, clock, "instance-a"), Outbox(other_engine, clock, "instance-b")
        batch = await a.claim_due(10, broadcast=True)
        assert len(batch) == 5
        assert await a.renew(batch[0].id, broadcast_sending=True)  # still held: renewed
        clock.advance(LEASE + timedelta(seconds=1))  # a long 429 pause outlasts the lease
        again = await b.claim_due(10, broadcast=True)
        assert {m.id for m in again} == {m.id for m in batch}
        # A must not send: the rows are B's now.
        assert not any([await a.renew(m.id, broadcast_sending=True) for m in batch])
        assert not await a.renew(batch[0].id)
        assert await b.renew(again[0].id, broadcast_sending=True)
        # Stopped (maybe on another instance): B's held rows may not be sent either.
        assert await service.cancel(broadcast_id)
        assert not await b.renew(again[1].id, broadcast_sending=True)
        assert await b.renew(again[1].id)  # still held: only the broadcast check refuses
    finally:
        await other_engine.dispose()
    assert await outbox_counts(db, broadcast_id) == {"pending": 5}
