"""Logging set-up: secrets never reach a log line."""

from __future__ import annotations

import hashlib
import hmac
import logging


def log_pseudonym(telegram_id: int, secret: str) -> str:
    """A short, stable stand-in for a Telegram id in logs: an HMAC-SHA256 keyed with a key
    derived from `secret` (the bot token). Telegram ids are small enough (~2^40) that an
    unkeyed hash could be reversed by trying them all; without the key it cannot."""
    key = hashlib.sha256(b"capacity-bot log pseudonyms\0" + secret.encode()).digest()
    return hmac.new(key, str(telegram_id).encode(), hashlib.sha256).hexdigest()[:12]


class RedactSecrets(logging.Filter):
    """Replace secrets (the bot token) wherever they appear in a record, arguments included."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, None
        return True


def configure_logging(level: str, secrets: list[str]) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Database drivers log statements with their parameters, which hold personal data.
    for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # python-telegram-bot logs whole updates and request parameters (message texts) at DEBUG.
    logging.getLogger("telegram").setLevel(max(root.level, logging.INFO))
