"""What the health endpoint reports about the Bot API: when it last answered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class BotApiHealth:
    """Updated by the request layer on every successful Bot API call; read by /health."""

    last_success_at: datetime | None = None

    def record_success(self) -> None:
        self.last_success_at = datetime.now(UTC)


# Where build_application keeps the one BotApiHealth of an application (in bot_data).
HEALTH_KEY = "bot_api_health"
