"""capacity-bot: the bot's composition root, settings and domain services."""

import os

# Opt in to PTB's future behaviour now (durations such as RetryAfter.retry_after become
# timedelta objects), so that upgrading python-telegram-bot changes nothing here.
os.environ.setdefault("PTB_TIMEDELTA", "1")
