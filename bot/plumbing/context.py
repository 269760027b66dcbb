"""The services of the bot, and the typed context through which handlers reach them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telegram import Update
from telegram.ext import Application, BaseHandler, CallbackContext, ExtBot, JobQueue

from bot.clock import Clock
from bot.logs import log_pseudonym
from bot.plumbing.callbacks import CallbackCodec
from bot.services.attendance import AttendanceService
from bot.services.broadcasts.drafts import BroadcastService
from bot.services.channel import ChannelNotices
from bot.services.conversations import Conversations
from bot.services.enrolment import EnrolmentService
from bot.services.mediator_relay import MediatorRelay
from bot.services.outbox import Outbox
from bot.services.privacy.personal_data import PrivacyService
from bot.services.privacy.retention import RetentionService
from bot.services.registration import RegistrationService
from bot.services.reminders import ReminderService
from bot.services.residents import ResidentService
from bot.services.staff import StaffService
from bot.services.stats.exports import ExportService
from bot.services.stats.figures import StatsService
from bot.services.surveys.engine import SurveyService
from bot.services.workshops.admin import WorkshopAdmin
from bot.services.workshops.listing import WorkshopCatalogue
from bot.settings import Settings
from bot.text.i18n import Translator
from storage.db import Database

SERVICES_KEY = "services"


@dataclass(frozen=True)
class Services:
    """Everything a handler or a job may need, built once in post_init."""

    settings: Settings
    db: Database
    clock: Clock
    translator: Translator
    callbacks: CallbackCodec
    residents: ResidentService
    catalogue: WorkshopCatalogue
    registrations: RegistrationService
    outbox: Outbox
    staff: StaffService
    reminders: ReminderService
    attendance: AttendanceService
    channel_notices: ChannelNotices
    mediator_relay: MediatorRelay
    surveys: SurveyService
    broadcasts: BroadcastService
    conversations: Conversations
    workshop_admin: WorkshopAdmin
    enrolment: EnrolmentService
    stats: StatsService
    exports: ExportService
    privacy: PrivacyService
    retention: RetentionService

    def pseudonym(self, telegram_id: int) -> str:
        """A Telegram id as it may appear in logs (keyed: not reversible without the token)."""
        return log_pseudonym(telegram_id, self.settings.effective_token)


# The bot's rate limiter is the send budget, whose calls take a dict of arguments
# (`rate_limit_args`, bot/plumbing/send_budget.py).
Bot = ExtBot[dict[str, Any]]


class BotContext(CallbackContext[Bot, dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """CallbackContext with typed access to the services (PTB's contexttypesbot pattern)."""

    @property
    def services(self) -> Services:
        services: Services = self.application.bot_data[SERVICES_KEY]  # set by post_init
        return services


BotApplication = Application[
    Bot, BotContext, dict[Any, Any], dict[Any, Any], dict[Any, Any], JobQueue[BotContext]
]
BotJobQueue = JobQueue[BotContext]
# What the handlers' modules give to register_handlers (any callback result).
BotHandler = BaseHandler[Update, BotContext, Any]
