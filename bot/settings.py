"""Configuration from the environment and an optional `.env` file (pydantic-settings)."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_LANGUAGES = ("fr", "en", "ar")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/capacity-bot.sqlite3"
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_DRIVER_FOR = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

# What each setting expects, said to the operator when it is missing or malformed.
EXPECTED = {
    "bot_token": "a token from @BotFather such as 123456:ABC-DEF... (or leave unset for the demo)",
    "telegram_base_url": "an http(s) URL ending like https://api.telegram.org/bot",
    "database_url": "sqlite+aiosqlite:///path/file.sqlite3 or postgresql+asyncpg://user@host/db",
    "admin_chat_id": "a Telegram chat id, an integer such as -1001234567890",
    "default_language": "one of fr, en, ar",
    "timezone": "an IANA time zone such as Europe/Paris",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "rate_limit_per_second": "a number of messages per second from 0 (off) to 30",
    "outbox_sweep_seconds": "a number of seconds above 0, at most 300",
}


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: SecretStr | None = None
    telegram_base_url: str = "https://api.telegram.org/bot"
    database_url: str = DEFAULT_DATABASE_URL
    admin_chat_id: int | None = None
    default_language: Literal["fr", "en", "ar"] = "fr"
    timezone: str = "Europe/Paris"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Overall pace of outgoing calls (Telegram allows about 30 messages per second); 0 = off.
    rate_limit_per_second: float = Field(default=30, ge=0, le=30)
    # How often the outbox is swept for due messages (they are also sent at once when queued).
    outbox_sweep_seconds: float = Field(default=5.0, gt=0, le=300)
    demo_token: SecretStr = Field(default=SecretStr("123456:DEMO-TOKEN-not-a-real-one-0000"))

    @field_validator("bot_token", mode="before")
    @classmethod
    def _token_shape(cls, value: object) -> object:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not _TOKEN_SHAPE.match(value.strip()):
            # Never echo the value: it may be a real token with a typo.
            raise ValueError("malformed token")
        return value.strip()

    @field_validator("telegram_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("not an http(s) URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("not a database URL") from exc
        backend = url.get_backend_name()
        if backend not in _DRIVER_FOR:
            raise ValueError(f"unsupported database {backend!r}")
        return url.set(drivername=_DRIVER_FOR[backend]).render_as_string(hide_password=False)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def effective_token(self) -> str:
        """The real token, or the demo token that only the local emulator accepts."""
        token = self.bot_token or self.demo_token
        return token.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning any validation error into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        expected = EXPECTED.get(field, "a valid value")
        raise ConfigurationError(
            f"{field.upper()} is invalid ({error['msg']}); expected {expected}"
        ) from None
