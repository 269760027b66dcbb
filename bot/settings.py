"""Configuration from the environment and an optional `.env` file (pydantic-settings)."""

from __future__ import annotations

import ipaddress
import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_LANGUAGES = ("fr", "en", "ar")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/capacity-bot.sqlite3"
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
TELEGRAM_MAX_RATE = 30  # messages per second, Telegram's bulk limit
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
    "rate_limit_per_second": "a number of messages per second, for all messages together, from 0 (replies not throttled) to 30 (more only with TELEGRAM_BASE_URL on this machine, the emulator)",
    "outbox_sweep_seconds": "a number of seconds above 0, at most 300",
    "reminder_offsets": "durations before a workshop separated by commas, such as 24h,2h",
    "quiet_hours": "a range of local times such as 21:00-08:00, or off",
    "survey_delay": "a duration after the end of a workshop, such as 2h",
    "poll_open_for": "a duration of at least 2m (two survey sweeps), such as 48h",
    "follow_up_after": "a duration longer than SURVEY_DELAY, such as 30d",
    "broadcast_rate": "a ceiling for broadcasts in messages per second above 0, at most 30 (more only with TELEGRAM_BASE_URL on this machine, the emulator); broadcasts never take more than RATE_LIMIT_PER_SECOND leaves",
    "min_group_size": "a whole number of people from 1 to 100",
    "staff": "role:telegram_id pairs separated by commas, roles mediator, facilitator, coordinator",
    "channel_notices": "kinds separated by commas among registrations, cancellations, promotions, responses (or none)",
    "retention_months": "a whole number of months from 1 to 120",
    "free_text_retention_months": "a whole number of months from 1 to 120",
    "privacy_notice_file": "the path of a readable YAML file of privacy notice texts per language",
    "log_format": "text or json",
    "webhook_listen": "an IP address to listen on, such as 127.0.0.1 or 0.0.0.0",
    "webhook_port": "a TCP port from 1 to 65535",
    "webhook_url": "the public https:// address Telegram posts updates to",
    "webhook_secret": "1 to 256 characters among A-Z, a-z, 0-9, _ and -",
    "health_port": "a TCP port from 1 to 65535, or 0 for no health endpoint in polling mode",
    "flood_rate": "updates per second per person above 0, at most 100",
    "flood_burst": "a whole number of updates from 1 to 1000",
    "error_notice_interval": "a duration such as 5m",
    "outbox_lease": "a duration from 5s to 1h, such as 2m",
    "outbox_retention": "a duration such as 30d, at least 2 days longer than the longest of REMINDER_OFFSETS",
}


# How often the survey sweep opens and closes polls (handlers/surveys.py schedules it).
SURVEY_SWEEP_PERIOD = timedelta(seconds=60)
# A poll must stay open for two sweeps: however late one runs, another finds the poll open.
MIN_POLL_OPEN_FOR = 2 * SURVEY_SWEEP_PERIOD

_DURATION_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
STAFF_ROLES = ("mediator", "facilitator", "coordinator")
CHANNEL_NOTICE_KINDS = ("registrations", "cancellations", "promotions", "responses")


def parse_duration(text: str) -> timedelta:
    """'2h', '90m', '1d', '1h30m' -> timedelta (what operators write in settings)."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration like 2h, 90m or 1d")
    return sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _durations(value: object) -> object:
    if isinstance(value, str):
        offsets = [parse_duration(part) for part in value.split(",") if part.strip()]
        if not offsets or len(set(offsets)) != len(offsets) or min(offsets) <= timedelta(0):
            raise ValueError("give distinct positive durations separated by commas")
        return tuple(sorted(offsets, reverse=True))
    return value


def _quiet_hours(value: object) -> object:
    if isinstance(value, str):
        if value.strip().lower() in ("", "off", "none"):
            return None
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", value)
        if not match:
            raise ValueError("not a range like 21:00-08:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
            raise ValueError("not a range like 21:00-08:00")
        return (time(h1, m1), time(h2, m2))
    return value


def _staff(value: object) -> object:
    if isinstance(value, str):
        entries = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            role, _, user_id = part.partition(":")
            if role.strip() not in STAFF_ROLES or not user_id.strip().isdigit():
                raise ValueError(f"{part!r} is not role:telegram_id")
            entries.append((role.strip(), int(user_id)))
        return tuple(entries)
    return value


def _kinds(value: object) -> object:
    if isinstance(value, str):
        kinds = tuple(k.strip() for k in value.split(",") if k.strip())
        unknown = [k for k in kinds if k not in CHANNEL_NOTICE_KINDS and k != "none"]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}")
        return tuple(k for k in kinds if k != "none")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _is_loopback(url: object) -> bool:
    """Whether a Bot API URL points at this machine (127.0.0.0/8, ::1 or localhost)."""
    if not isinstance(url, str):
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    # The one budget of outgoing messages (bot/plumbing/send_budget.py): at most this many in any
    # second, replies first, broadcasts in what they leave. 0 = replies are not throttled
    # (broadcasts still keep BROADCAST_RATE). (Above 30 only against a Bot API on this
    # machine: the emulator, for tests and benchmarks.)
    rate_limit_per_second: float = Field(default=30, ge=0)
    # How often the outbox is swept for due messages (they are also sent at once when queued).
    outbox_sweep_seconds: float = Field(default=5.0, gt=0, le=300)
    # Reminders: how long before a workshop, and local hours when nobody is disturbed.
    reminder_offsets: Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_durations)] = (
        timedelta(hours=24),
        timedelta(hours=2),
    )
    quiet_hours: Annotated[tuple[time, time] | None, NoDecode, BeforeValidator(_quiet_hours)] = (
        time(21, 0),
        time(8, 0),
    )
    # Surveys: the poll goes out after a workshop, closes later with a digest to the channel,
    # and attendees get one follow-up question after a month.
    survey_delay: Duration = timedelta(hours=2)
    poll_open_for: Duration = timedelta(hours=48)
    follow_up_after: Duration = timedelta(days=30)
    # First staff members (issue: roles), e.g. "coordinator:123456,facilitator:789".
    staff: Annotated[tuple[tuple[str, int], ...], NoDecode, BeforeValidator(_staff)] = ()
    # What the facilitators' channel is told about as it happens.
    channel_notices: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_kinds)] = (
        CHANNEL_NOTICE_KINDS
    )
    # Broadcasts: a ceiling on their share of the budget; by default the whole budget (they
    # take every place the replies leave, never more than RATE_LIMIT_PER_SECOND in all).
    broadcast_rate: float = Field(default=30, gt=0)
    # Statistics: any figure about fewer people than this is shown as "< N".
    min_group_size: int = Field(default=5, ge=1, le=100)
    # Privacy (RGPD): personal data of residents inactive this long is erased (with a notice
    # a week before); free-text survey answers are erased after their own retention.
    retention_months: int = Field(default=12, ge=1, le=120)
    free_text_retention_months: int = Field(default=6, ge=1, le=120)
    # Optional YAML file overriding the shipped privacy notice texts (controller, DPO...).
    privacy_notice_file: Path | None = None
    # Operations: log lines for people (text) or for a log collector (json).
    log_format: Literal["text", "json"] = "text"
    # Webhook mode (`capacity-bot run --webhook`): where to listen, the public URL Telegram
    # posts to, and the secret Telegram sends back in every request's header.
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # The health endpoint in polling mode (in webhook mode it is served beside the webhook).
    health_port: int = Field(default=0, ge=0, le=65535)
    # Per-person flood control: a sustained rate and a burst allowance (token bucket).
    flood_rate: float = Field(default=3.0, gt=0, le=100)
    flood_burst: int = Field(default=10, ge=1, le=1000)
    # How long a claimed outbox row stays with the instance that claimed it: after a crash
    # (kill -9, power cut) its unsent rows are picked up by any instance once this runs out.
    # At least 5 s: the broadcast sender renews a row's lease once the send budget has
    # granted each of its sends a place, just before the request, so the lease need only
    # outlast the request itself (however long the wait for the place), or another instance
    # could claim a row while it is being sent and send it again; a Bot API call rarely
    # takes a second, and python-telegram-bot gives up reading after 5 s.
    outbox_lease: Duration = timedelta(minutes=2)
    # Sent, dropped and failed outbox rows are deleted this long after they were finished.
    # Sweeps (reminders, check-in prompts) dedupe by these rows: a row goes only once its
    # sweep can no longer queue it again, hence the floor (see _outbox_retention_floor).
    outbox_retention: Duration = timedelta(days=30)
    # At most one error notice to the facilitators' channel per error kind in this interval.
    error_notice_interval: Duration = timedelta(minutes=5)
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

    @field_validator("rate_limit_per_second", "broadcast_rate")
    @classmethod
    def _telegram_limit(cls, value: float, info: ValidationInfo) -> float:
        """Telegram takes about 30 messages per second; only the emulator may be driven faster."""
        if value > TELEGRAM_MAX_RATE and not _is_loopback(info.data.get("telegram_base_url")):
            raise ValueError(
                f"above {TELEGRAM_MAX_RATE:g} messages per second, Telegram's limit; a higher "
                "rate is allowed only when TELEGRAM_BASE_URL is a loopback address (the emulator)"
            )
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

    @field_validator("outbox_lease")
    @classmethod
    def _lease_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=5) <= value <= timedelta(hours=1):
            raise ValueError("out of range")
        return value

    @field_validator("outbox_retention")
    @classmethod
    def _outbox_retention_floor(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        """A reminder is queued up to its offset plus quiet hours (at most a day) ahead of
        its workshop, a check-in prompt up to a day after its start: a row kept 2 days
        longer than the longest offset can no longer be queued again once it is deleted."""
        offsets = info.data.get("reminder_offsets") or (timedelta(0),)
        if value < max(offsets) + timedelta(days=2):
            raise ValueError("shorter than the longest of REMINDER_OFFSETS plus 2 days")
        return value

    @field_validator("poll_open_for")
    @classmethod
    def _poll_outlasts_two_sweeps(cls, value: timedelta) -> timedelta:
        if value < MIN_POLL_OPEN_FOR:
            raise ValueError("shorter than two survey sweeps: no sweep might find the poll open")
        return value

    @field_validator("follow_up_after")
    @classmethod
    def _follow_up_after_the_poll(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        delay = info.data.get("survey_delay")
        if delay is not None and value <= delay:
            raise ValueError("not after SURVEY_DELAY: the follow-up would come before the poll")
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _secret_shape(cls, value: object) -> object:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
            raise ValueError("malformed secret")  # never echo it
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^https://[^\s/]+", value):
            raise ValueError("not an https:// URL")
        return value

    @field_validator("privacy_notice_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value

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


def check_database_url(settings: Settings) -> None:
    """For the commands that keep the bot's data (`run`, `migrate`, `import`): an SQLite
    DATABASE_URL must name a file, in a folder that exists, except ./data (the default's,
    created on first run). A typo or a missing volume would otherwise make a folder where
    nobody looks, and an in-memory database would lose everything at the end of the process.
    The demo and the playground take their own --database instead."""
    from storage.db import is_sqlite, sqlite_file

    if not is_sqlite(settings.database_url):
        return
    path = sqlite_file(settings.database_url)
    if path is None:
        raise ConfigurationError(
            "DATABASE_URL is invalid (no SQLite file: an in-memory database is lost when the "
            f"process ends); expected {EXPECTED['database_url']}"
        )
    default_folder = Path(make_url(DEFAULT_DATABASE_URL).database or "").parent
    if path.parent != default_folder and not path.parent.is_dir():
        raise ConfigurationError(
            f"DATABASE_URL is invalid (no folder {path.parent} for its SQLite file; only "
            f"./{default_folder}, the default's, is created); expected a file in an existing "
            "folder, such as sqlite+aiosqlite:////srv/capacity-bot/capacity-bot.sqlite3"
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning any validation error into one line naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        expected = EXPECTED.get(field, "a valid value")
        raise ConfigurationError(
            f"{field.upper()} is invalid ({error['msg']}); expected {expected}"
        ) from None
