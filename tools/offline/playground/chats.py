"""The five chats of the playground: who writes in each, and in which language."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlaygroundChat:
    """One chat of the page; ``key`` is how the page names it (data-chat)."""

    key: str
    chat_id: int
    first_name: str  # the user writing and pressing buttons there (in the channel: staff)
    user_id: int
    language_code: str
    writable: bool = True  # the channel has no composer: people do not write in it

    @property
    def user(self) -> dict[str, Any]:
        """The Telegram user as the emulator's side API takes it."""
        return {
            "id": self.user_id,
            "first_name": self.first_name,
            "language_code": self.language_code,
        }


MEDIATOR_ID = 100_201
COORDINATOR_ID = 100_202
CHANNEL_ID = -1_001_000_000_042
CHANNEL_TITLE = "Facilitateurs EPN"

CHATS: tuple[PlaygroundChat, ...] = (
    PlaygroundChat("resident-1", 100_001, "Amina", 100_001, "fr"),
    # Karima's Telegram is in Arabic: the bot answers her in Arabic from the first message.
    PlaygroundChat("resident-2", 100_011, "Karima", 100_011, "ar"),
    PlaygroundChat("mediator", MEDIATOR_ID, "Nadia", MEDIATOR_ID, "fr"),
    PlaygroundChat("coordinator", COORDINATOR_ID, "Claire", COORDINATOR_ID, "fr"),
    # Buttons of the channel (survey cards...) are pressed by the coordinator.
    PlaygroundChat("channel", CHANNEL_ID, "Claire", COORDINATOR_ID, "fr", writable=False),
)
CHATS_BY_KEY = {chat.key: chat for chat in CHATS}
CHATS_BY_ID = {chat.chat_id: chat for chat in CHATS}
RESIDENT_IDS = tuple(chat.user_id for chat in CHATS if chat.key.startswith("resident-"))
STAFF = f"mediator:{MEDIATOR_ID},coordinator:{COORDINATOR_ID}"
CHANNEL_INFO = {"id": CHANNEL_ID, "type": "supergroup", "title": CHANNEL_TITLE}
