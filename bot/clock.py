"""The time source of the bot, injected so that tests and the playground can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...


class SystemClock:
    """The real clock, used in production."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told: tests and time travel in the playground."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, moment: datetime) -> None:
        self._now = moment.astimezone(UTC)


class TravelClock:
    """Real time plus an offset that only grows: time travel in the playground only.

    Moving forward lets a rehearsal show reminders, check-in and surveys in minutes; never
    backward, since the database would then hold moments from the future. Production uses
    SystemClock (only `capacity-bot playground` builds this one).
    """

    def __init__(self, base: Clock | None = None) -> None:
        self._base = base or SystemClock()
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return self._base.now() + self._offset

    @property
    def offset(self) -> timedelta:
        """How far ahead of the real time this clock is."""
        return self._offset

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("a TravelClock only moves forward")
        self._offset += delta

    def travel_to(self, moment: datetime) -> timedelta:
        """Moves to ``moment`` if it is ahead; returns how far the clock moved (0 if not)."""
        if moment.tzinfo is None:
            raise ValueError("travel_to needs an aware datetime")
        delta = max(moment - self.now(), timedelta(0))
        self._offset += delta
        return delta
