"""When reminders are due: offsets, quiet hours (across DST), late and caught-up reminders."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.services.reminders import ReminderPolicy

PARIS = ZoneInfo("Europe/Paris")
H = timedelta(hours=1)
POLICY = ReminderPolicy((24 * H, 2 * H), (time(21, 0), time(8, 0)), PARIS)


def paris(*args: int) -> datetime:
    """A Paris wall-clock time, as the database gives it back (UTC)."""
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def test_reminders_outside_quiet_hours_are_due_at_their_offset() -> None:
    start = paris(2026, 12, 3, 14, 0)
    assert POLICY.due_at(start, 24 * H) == paris(2026, 12, 2, 14, 0)
    assert POLICY.due_at(start, 2 * H) == paris(2026, 12, 3, 12, 0)


def test_a_reminder_due_in_quiet_hours_goes_out_just_before_they_begin() -> None:
    start = paris(2026, 12, 3, 9, 0)  # the 2 h reminder would be at 07:00
    assert POLICY.due_at(start, 2 * H) == paris(2026, 12, 2, 20, 55)
    late_evening = paris(2026, 12, 3, 23, 30)  # 24 h before is 23:30 the day before
    assert POLICY.due_at(late_evening, 24 * H) == paris(2026, 12, 2, 20, 55)
    assert POLICY.due_at(paris(2026, 12, 3, 23, 0), 2 * H) == paris(2026, 12, 3, 20, 55)
    assert POLICY.due_at(paris(2026, 12, 3, 10, 0), 2 * H) == paris(2026, 12, 3, 8, 0)


def test_quiet_hours_across_the_spring_dst_change() -> None:
    # 29 March 2026: clocks go from 02:00 to 03:00. 09:00 CEST minus 2 h is 07:00 CEST,
    # inside the quiet night that began at 21:00 CET (20:00 UTC) on the 28th.
    start = paris(2026, 3, 29, 9, 0)
    assert POLICY.due_at(start, 2 * H) == datetime(2026, 3, 28, 19, 55, tzinfo=UTC)
    # 24 h before 08:30 CEST is 07:30 CET the day before (23 hours of wall clock apart).
    assert POLICY.due_at(paris(2026, 3, 29, 8, 30), 24 * H) == paris(2026, 3, 27, 20, 55)


def test_quiet_hours_that_do_not_cross_midnight() -> None:
    lunch = ReminderPolicy((2 * H,), (time(12, 0), time(14, 0)), PARIS)
    assert lunch.due_at(paris(2026, 12, 3, 15, 0), 2 * H) == paris(2026, 12, 3, 11, 55)
    assert lunch.due_at(paris(2026, 12, 3, 16, 0), 2 * H) == paris(2026, 12, 3, 14, 0)


def test_without_quiet_hours_nothing_moves() -> None:
    anytime = ReminderPolicy((24 * H, 2 * H), None, PARIS)
    assert anytime.due_at(paris(2026, 12, 3, 9, 0), 2 * H) == paris(2026, 12, 3, 7, 0)
    assert anytime.horizon == 24 * H + timedelta(minutes=5)


def test_the_horizon_covers_the_largest_offset_moved_by_a_whole_quiet_night() -> None:
    assert POLICY.horizon >= 24 * H + 11 * H + timedelta(minutes=5)


def decided(start: datetime, seated: datetime, now: datetime, promoted: bool = False):
    return [(d.offset, d.send) for d in POLICY.decide(start, seated, promoted, now)]


def test_only_reminders_due_after_the_seat_was_taken_count() -> None:
    start = paris(2026, 12, 3, 14, 0)
    registered_3h_before = start - 3 * H
    assert decided(start, registered_3h_before, start - 90 * timedelta(minutes=1)) == [
        (2 * H, True)
    ]
    assert decided(start, registered_3h_before, start - 150 * timedelta(minutes=1)) == []


def test_overdue_reminders_collapse_into_the_most_recent() -> None:
    start = paris(2026, 12, 3, 14, 0)
    long_ago = start - 10 * 24 * H
    assert decided(start, long_ago, start - H) == [(24 * H, False), (2 * H, True)]
    assert decided(start, long_ago, start - 5 * H) == [(24 * H, True)]


def test_a_late_promotion_catches_up_with_one_reminder() -> None:
    start = paris(2026, 12, 3, 14, 0)
    promoted = start - 10 * H
    assert decided(start, promoted, promoted, promoted=True) == [(24 * H, True)]
    promoted_late = start - H
    assert decided(start, promoted_late, promoted_late, promoted=True) == [
        (24 * H, False),
        (2 * H, True),
    ]
    # Promoted days ahead: nothing missed, nothing to catch up.
    assert decided(start, start - 3 * 24 * H, start - 3 * 24 * H, promoted=True) == []


def test_a_late_reminder_waits_for_the_end_of_quiet_hours() -> None:
    start = paris(2026, 12, 3, 14, 0)
    due = paris(2026, 12, 2, 14, 0)
    assert POLICY.send_at(due, due + timedelta(minutes=1), start) == due + timedelta(minutes=1)
    back_at_night = paris(2026, 12, 2, 23, 30)  # the bot was down all afternoon
    assert POLICY.send_at(due, back_at_night, start) == paris(2026, 12, 3, 8, 0)
    back_in_the_evening = paris(2026, 12, 2, 19, 0)
    assert POLICY.send_at(due, back_in_the_evening, start) == back_in_the_evening
    # A catch-up decided at night waits for the morning, unless the workshop is earlier.
    assert POLICY.send_at(back_at_night, back_at_night, start) == paris(2026, 12, 3, 8, 0)
    early = paris(2026, 12, 3, 7, 30)
    assert POLICY.send_at(back_at_night, back_at_night, early) == back_at_night
