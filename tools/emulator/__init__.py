"""A Telegram Bot API emulator on 127.0.0.1, with a side API through which scripts act as users.

The bot under test reaches it through python-telegram-bot's ``base_url``
(``BotApiEmulator.base_url``); tests, demos and benchmarks drive users with
:class:`EmulatorClient`.
"""

from emulator.client import (
    Button,
    ChatEvent,
    ChatMessage,
    EmulatorClient,
    EmulatorError,
    SimulatedChannel,
    SimulatedGroup,
    SimulatedUser,
)
from emulator.server import BotApiEmulator

__all__ = [
    "BotApiEmulator",
    "Button",
    "ChatEvent",
    "ChatMessage",
    "EmulatorClient",
    "EmulatorError",
    "SimulatedChannel",
    "SimulatedGroup",
    "SimulatedUser",
]
