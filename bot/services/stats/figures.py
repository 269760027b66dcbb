"""Statistics for coordinators and facilitators: every figure is counted by the database.

Each view is a bounded number of GROUP BY queries (no query per row, no Python loop over
raw rows): the cost of a view depends on the number of groups shown, not on the number of
registrations or answers. Small counts are hidden here, before anything leaves the service:
a figure about 1 to MIN_GROUP_SIZE - 1 people comes out as None (shown "< 5"), and so does a
rate computed on a hidden group, so that no answer can be traced to a person.

Period: local days (settings.tz), first and last included. Events are counted when their own
time falls in the period (registered, cancelled, promoted, attended); attendance and no-show
rates are about the workshops that ended in the period; the waitlist is the one of now.

The views are grouped by family, each in its module with its figures: activity.py
(registrations and attendance), survey_answers.py (polls, needs, autonomy); scope.py holds
the period, the scope and the small-count rule they share. StatsService gathers them, with
the neighbourhoods a person may choose, as the one service handlers hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from bot.services.stats.activity import ActivityViews
from bot.services.stats.scope import folded
from bot.services.stats.survey_answers import SurveyAnswerViews
from storage.models import Territory


@dataclass(frozen=True)
class TerritoryChoice:
    territory_id: int
    key: str
    name: str


class StatsService(ActivityViews, SurveyAnswerViews):
    """Every view of /stats and /export's figures (built as StatsReader is)."""

    # -- neighbourhoods -------------------------------------------------------------------

    async def territories(self) -> list[TerritoryChoice]:
        async with self._db.read() as session:
            rows = await session.execute(
                select(Territory.id, Territory.key, Territory.name).order_by(Territory.name)
            )
            return [TerritoryChoice(*row) for row in rows]

    async def find_territory(self, text: str) -> TerritoryChoice | None:
        """A neighbourhood by key or name, whatever the case and accents."""
        wanted = folded(text)
        for territory in await self.territories():
            if wanted in (folded(territory.key), folded(territory.name)):
                return territory
        return None

    async def territory(self, territory_id: int) -> TerritoryChoice | None:
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Territory.id, Territory.key, Territory.name).where(
                        Territory.id == territory_id
                    )
                )
            ).one_or_none()
            return TerritoryChoice(*row) if row else None
