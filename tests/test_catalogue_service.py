"""Browsing the catalogue at the service level, on both backends: pages, filters, the card."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.services.registration import RegistrationService
from bot.services.residents import ResidentService
from bot.services.workshops.listing import PAGE_SIZE, WorkshopCatalogue
from storage.db import Database
from tests.factories import new_clock, seed_place, seed_workshop

pytestmark = pytest.mark.storage


async def test_pages_filters_and_a_page_past_the_end(db: Database) -> None:
    clock = new_clock()
    north, south = await seed_place(db, area="Nord"), await seed_place(db, area="Sud")
    north_ids = [
        await seed_workshop(db, clock, place=north, starts_in=timedelta(days=1 + n))
        for n in range(PAGE_SIZE + 2)
    ]
    south_id = await seed_workshop(db, clock, place=south, starts_in=timedelta(hours=5))
    await seed_workshop(db, clock, place=south, starts_in=timedelta(days=2), status="cancelled")
    await seed_workshop(db, clock, place=south, starts_in=-timedelta(hours=1))  # started
    catalogue = WorkshopCatalogue(db, clock)

    first = await catalogue.upcoming()
    assert (first.page, first.page_count, first.total) == (0, 2, PAGE_SIZE + 3)
    assert [w.id for w in first.items] == [south_id, *north_ids[: PAGE_SIZE - 1]]
    second = await catalogue.upcoming(page=1)
    assert [w.id for w in second.items] == north_ids[PAGE_SIZE - 1 :]

    territory_north = north[0]
    only_north = await catalogue.upcoming(territory_id=territory_north, page=1)
    assert [w.id for w in only_north.items] == north_ids[PAGE_SIZE:]
    assert only_north.total == len(north_ids)
    only_south_theme = await catalogue.upcoming(theme_id=south[2])
    assert [w.id for w in only_south_theme.items] == [south_id]
    assert only_south_theme.page_count == 1

    # Pages asked for beyond the last one (workshops started since) show the last page.
    past = await catalogue.upcoming(page=7)
    assert past.page == 1
    assert [w.id for w in past.items] == [w.id for w in second.items]
    absurd = await catalogue.upcoming(page=2**40)  # never an overflow in the database
    assert absurd.page == 1
    nothing = await catalogue.upcoming(territory_id=territory_north, theme_id=south[2], page=3)
    assert (nothing.page, nothing.page_count, nothing.total, nothing.items) == (0, 1, 0, [])


async def test_the_card_shows_the_persons_own_place_and_the_waitlist(db: Database) -> None:
    clock = new_clock()
    workshop_id = await seed_workshop(db, clock, capacity=1)
    residents = ResidentService(db, clock)
    registrations = RegistrationService(db, clock)
    for telegram_id in (1, 2, 3):
        await residents.give_consent(telegram_id, f"P{telegram_id}", "fr")
        await registrations.register(telegram_id, workshop_id)
    catalogue = WorkshopCatalogue(db, clock)

    seated, second, stranger = (
        await catalogue.card(workshop_id, 1),
        await catalogue.card(workshop_id, 3),
        await catalogue.card(workshop_id, 99),
    )
    assert seated is not None and second is not None and stranger is not None
    assert (seated.my_status, seated.my_waitlist_rank, seated.waitlist_length) == (
        "confirmed",
        None,
        2,
    )
    assert (second.my_status, second.my_waitlist_rank) == ("waitlisted", 2)
    assert (stranger.my_status, stranger.my_waitlist_rank) == (None, None)
    assert seated.is_open and seated.summary.seats_left == 0

    await registrations.cancel(2, workshop_id)  # the first person waiting gives up
    moved_up = await catalogue.card(workshop_id, 3)
    assert moved_up is not None and moved_up.my_waitlist_rank == 1
    assert moved_up.waitlist_length == 1
    assert await catalogue.card(workshop_id + 1000, 1) is None
