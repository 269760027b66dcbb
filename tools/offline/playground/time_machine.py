"""Moves the playground bot's clock forward and runs at once what the new time makes due."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.schedulers.base import BaseScheduler

from bot.clock import TravelClock
from bot.plumbing.context import BotApplication
from bot.plumbing.delivery import JOB_NAME as DELIVERY_JOB
from handlers.attendance import PROMPT_JOB
from handlers.reminders import PLANNER_JOB
from handlers.surveys import SWEEP_JOB
from offline.playground.travel import TARGETS, TravelPlan, TravelPlanner

STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
KINDS = frozenset(TARGETS) | frozenset(STEPS)
# In this order: what the new time makes due is queued first, then delivered.
JOBS = (PLANNER_JOB, PROMPT_JOB, SWEEP_JOB, DELIVERY_JOB)
# A step halts at each target it passes; each halt is strictly later than the one before,
# and a workshop has a handful of them: this bound is never reached by a sane plan.
MAX_HALTS = 50


class TravelRefused(Exception):
    """The target does not exist now; ``reason`` is a playground locale key."""

    def __init__(self, reason: str, params: dict[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.params = params


class SchedulerHold:
    """Holds the bot's job scheduler still while the clock jumps.

    A delivery the scheduler started just before a jump would still be sending when the
    jump makes its outbox lease look lapsed: the delivery run after the jump would claim and
    send the same message again. So travel pauses the scheduler, waits for the runs it
    already started, moves, runs the jobs itself, then resumes it. The scheduler's own
    events (submitted, executed, failed) tell which runs are in flight; install this before
    the application starts, so that none is missed.
    """

    def __init__(self, scheduler: BaseScheduler) -> None:
        self._scheduler = scheduler
        self._running: set[str] = set()  # job ids (a PTB job runs one instance at a time)
        self._idle = asyncio.Event()
        self._idle.set()
        scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        )

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_SUBMITTED:
            self._running.add(event.job_id)
        else:
            self._running.discard(event.job_id)
        if self._running:
            self._idle.clear()
        else:
            self._idle.set()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No scheduled run in flight or starting while inside."""
        self._scheduler.pause()
        try:
            await self._idle.wait()
            yield
        finally:
            self._scheduler.resume()


class TimeMachine:
    """The playground's clock, its travel targets, and the jobs run after each move."""

    def __init__(
        self,
        clock: TravelClock,
        planner: TravelPlanner,
        application: BotApplication,
        hold: SchedulerHold,
    ) -> None:
        self.clock = clock
        self._planner = planner
        self._application = application
        self._hold = hold
        self._lock = asyncio.Lock()  # one journey at a time

    async def travel(self, kind: str) -> None:
        """Travels to a target ("reminder"...) or by a step ("hour", "day").

        A step halts at each target it passes (a reminder, the workshop's start...) and runs
        the jobs there, as the real time would have: jumping a day over a workshop's start
        still sends its check-in prompt.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown travel {kind!r}")
        async with self._lock, self._hold.held():
            if kind in STEPS:
                destination = self.clock.now() + STEPS[kind]
                for _ in range(MAX_HALTS):
                    now = self.clock.now()
                    halts = [m for m in (await self._planner.plan()).moments() if now < m]
                    if not halts or halts[0] >= destination:
                        break
                    await self._move(halts[0])
                await self._move(destination)
                return
            target = (await self._planner.plan()).targets[kind]
            if target.at is None:
                assert target.reason is not None
                raise TravelRefused(target.reason, target.reason_params)
            for stop in target.stops:
                await self._move(stop)

    async def _move(self, moment: datetime) -> None:
        self.clock.travel_to(moment)
        await self.run_jobs()

    async def run_jobs(self) -> None:
        """The periodic jobs, now rather than at their next tick (within a second or two)."""
        job_queue = self._application.job_queue
        assert job_queue is not None
        for name in JOBS:
            for job in job_queue.get_jobs_by_name(name):
                await job.run(self._application)

    async def state(self) -> dict[str, Any]:
        """What the page shows: the bot's time, how far it travelled, the targets."""
        plan = await self._planner.plan()
        return state_json(plan, self.clock)


def state_json(plan: TravelPlan, clock: TravelClock) -> dict[str, Any]:
    """The plan as the page reads it: ISO moments, or the locale key saying why not."""
    workshop = plan.workshop
    return {
        "now": clock.now().isoformat(),
        "offset_ms": round(clock.offset / timedelta(milliseconds=1)),
        "workshop": None
        if workshop is None
        else {"id": workshop.workshop_id, "title": workshop.title, "over": workshop.over},
        "targets": {
            key: (
                {"at": target.at.isoformat()}
                if target.at is not None
                else {"reason": target.reason, "params": target.reason_params}
            )
            for key, target in plan.targets.items()
        },
    }
