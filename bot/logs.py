"""Logging set-up: secrets never reach a log line, in text (default) or JSON lines."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import UTC, datetime


def log_pseudonym(telegram_id: int, secret: str) -> str:
    """A short, stable stand-in for a Telegram id in logs: an HMAC-SHA256 keyed with a key
    derived from `secret` (the bot token). Telegram ids are small enough (~2^40) that an
    unkeyed hash could be reversed by trying them all; without the key it cannot."""
    key = hashlib.sha256(b"capacity-bot log pseudonyms\0" + secret.encode()).digest()
    return hmac.new(key, str(telegram_id).encode(), hashlib.sha256).hexdigest()[:12]


REDACTED = "<redacted>"
# Values of rows in database errors, which hide_parameters=True does not cover. PostgreSQL
# adds them in its DETAIL line, which asyncpg's exceptions carry into every formatted trace:
# "Key (telegram_id)=(123456) already exists.", "Key (resident_id)=(5) is not present in
# table ...", "conflicts with existing key (...)=(...)", "Failing row contains (5, Alice, …)".
# asyncpg itself names a bad argument's value: "invalid input for query argument $2: 'Alice'
# (expected str, got int)". The column names and the reason stay: they are what helps.
_DATABASE_VALUES = (
    (
        re.compile(
            r"(\b[Kk]ey \([^\n]*?\)=)\((?s:.*?)\)"
            r"(?=\s+(?:already exists|is not present|is still referenced|conflicts with)|\.?$)",
            re.MULTILINE,
        ),
        rf"\1({REDACTED})",
    ),
    (re.compile(r"(Failing row contains )\((?s:.*?)\)(?=\.?$)", re.MULTILINE), rf"\1({REDACTED})"),
    (
        re.compile(r"(invalid input for query argument \$\d+: ).*?(?= \([^()]*\)$)", re.MULTILINE),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(rf"(invalid input for query argument \$\d+: )(?!{REDACTED}).*$", re.MULTILINE),
        rf"\1{REDACTED}",
    ),
)
_DATABASE_MARKERS = ("ey (", "Failing row contains", "invalid input for query argument")


def redact_database_values(text: str) -> str:
    """Replace the values of rows quoted by database errors (see _DATABASE_VALUES)."""
    if not any(marker in text for marker in _DATABASE_MARKERS):
        return text
    for pattern, replacement in _DATABASE_VALUES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Replace secrets (the bot token) wherever they appear in a record, arguments included,
    and the personal data that database errors quote (redact_database_values)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact_database_values(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingFormatter(logging.Formatter):
    """The text format; a trace (formatted after the filters ran) is redacted here too,
    since an exception's text may hold a request URL, and Bot API URLs hold the token."""

    def __init__(self, redact: RedactSecrets) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector: time (UTC, ISO 8601), level, logger,
    message, and, when present, exc_info (the trace as a string) and error_id."""

    def __init__(self, redact: RedactSecrets) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self._redact.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = self._redact.redact(record.exc_text)
        error_id = getattr(record, "error_id", None)
        if error_id is not None:
            entry["error_id"] = str(error_id)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, secrets: list[str], log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    redact = RedactSecrets(secrets)
    handler.setFormatter(
        JsonFormatter(redact) if log_format == "json" else RedactingFormatter(redact)
    )
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx (which python-telegram-bot still imports) logs every request URL, and Bot API URLs
    # contain the token; the bot's own requests go through aiohttp, which logs none.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Database drivers log statements with their parameters, which hold personal data.
    for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # python-telegram-bot logs whole updates and request parameters (message texts) at DEBUG.
    logging.getLogger("telegram").setLevel(max(root.level, logging.INFO))
