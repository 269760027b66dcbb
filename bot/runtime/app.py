"""The composition root: builds the Application, its services and its lifecycle hooks."""

from __future__ import annotations

import logging
import socket
import uuid

from telegram.ext import Application, ContextTypes, Defaults, JobQueue

from bot.clock import Clock, SystemClock
from bot.plumbing.broadcast_sending import start_broadcast_sender, stop_broadcast_sender
from bot.plumbing.callbacks import CallbackCodec
from bot.plumbing.context import SERVICES_KEY, BotApplication, BotContext, Services
from bot.plumbing.delivery import schedule_delivery
from bot.plumbing.health import HEALTH_KEY, BotApiHealth
from bot.plumbing.ordering import PerPersonUpdateProcessor
from bot.plumbing.request import ResilientRequest
from bot.plumbing.send_budget import SendBudget
from bot.services.attendance import AttendanceService
from bot.services.broadcasts.drafts import BroadcastService
from bot.services.channel import ChannelNotices
from bot.services.conversations import Conversations
from bot.services.enrolment import EnrolmentService
from bot.services.mediator_relay import MediatorRelay
from bot.services.outbox import Outbox
from bot.services.privacy.personal_data import PrivacyService, load_privacy_notice
from bot.services.privacy.retention import RetentionService
from bot.services.registration import RegistrationService
from bot.services.reminders import ReminderPolicy, ReminderService
from bot.services.residents import ResidentService
from bot.services.staff import StaffService
from bot.services.stats.exports import ExportService
from bot.services.stats.figures import StatsService
from bot.services.surveys.definitions import load_surveys
from bot.services.surveys.engine import SurveyService
from bot.services.workshops.admin import WorkshopAdmin
from bot.services.workshops.listing import WorkshopCatalogue
from bot.settings import Settings
from bot.text.i18n import Translator
from handlers import command_menus, register_handlers
from handlers.attendance import schedule_checkin_prompts
from handlers.broadcast_progress import render_broadcast, show_progress
from handlers.errors import on_error
from handlers.notices import render_notice
from handlers.privacy import schedule_retention
from handlers.reminders import schedule_reminder_planner
from handlers.staff_menus import schedule_waiting_menus_reload, set_staff_menus
from handlers.surveys import schedule_survey_sweep
from storage.db import Database

log = logging.getLogger(__name__)


def build_services(settings: Settings, clock: Clock, translator: Translator) -> Services:
    db = Database(settings.database_url)
    worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    channel_notices = ChannelNotices(db, settings.admin_chat_id, settings.channel_notices)
    registrations = RegistrationService(db, clock, channel=channel_notices)
    return Services(
        settings=settings,
        db=db,
        clock=clock,
        translator=translator,
        callbacks=CallbackCodec(settings.effective_token.encode()),
        residents=ResidentService(db, clock),
        catalogue=WorkshopCatalogue(db, clock),
        registrations=registrations,
        outbox=Outbox(
            db, clock, worker_id, lease=settings.outbox_lease, report_to=settings.admin_chat_id
        ),
        staff=StaffService(db, clock),
        reminders=ReminderService(
            db,
            clock,
            ReminderPolicy(settings.reminder_offsets, settings.quiet_hours, settings.tz),
        ),
        attendance=AttendanceService(db, clock),
        channel_notices=channel_notices,
        mediator_relay=MediatorRelay(db, clock),
        # Survey definitions are checked here: a broken file stops start-up in one line.
        surveys=SurveyService(db, clock, load_surveys(), settings),
        broadcasts=BroadcastService(db, clock, default_language=settings.default_language),
        conversations=Conversations(db, clock),
        workshop_admin=WorkshopAdmin(db, clock),
        enrolment=EnrolmentService(db, clock),
        stats=StatsService(db, clock, settings.tz, settings.min_group_size),
        exports=ExportService(db, settings.tz, settings.effective_token, settings.min_group_size),
        privacy=PrivacyService(
            db, clock, registrations, settings.tz, load_privacy_notice(settings.privacy_notice_file)
        ),
        retention=RetentionService(
            db,
            clock,
            registrations,
            retention_months=settings.retention_months,
            free_text_retention_months=settings.free_text_retention_months,
            admin_chat_id=settings.admin_chat_id,
            tz=settings.tz,
            outbox_retention=settings.outbox_retention,
        ),
    )


def build_application(settings: Settings, *, clock: Clock | None = None) -> BotApplication:
    """One Application, wired with handlers, services (opened in post_init) and jobs."""
    translator = Translator.load(settings.default_language)
    clock = clock or SystemClock()
    load_privacy_notice(settings.privacy_notice_file)  # a bad file stops start-up in one line

    async def post_init(application: BotApplication) -> None:
        services = build_services(settings, clock, translator)
        application.bot_data[SERVICES_KEY] = services
        await services.staff.seed(settings.staff)
        for language, commands in command_menus(translator).items():
            await application.bot.set_my_commands(commands, language_code=language)
        await set_staff_menus(application.bot, services)
        if application.job_queue is not None:
            schedule_delivery(application.job_queue, render_notice, settings.outbox_sweep_seconds)
            schedule_reminder_planner(application.job_queue)
            schedule_checkin_prompts(application.job_queue)
            schedule_survey_sweep(application.job_queue)
            schedule_retention(application.job_queue, settings.tz)
            schedule_waiting_menus_reload(application.job_queue)
        # Broadcasts have their own sender (bulk calls in the shared budget); it resumes what
        # a restart interrupted.
        start_broadcast_sender(
            application, render_broadcast, show_progress, rate=settings.broadcast_rate
        )
        log.info("bot ready as @%s", application.bot.username)

    async def post_shutdown(application: BotApplication) -> None:
        await stop_broadcast_sender(application)
        services: Services | None = application.bot_data.pop(SERVICES_KEY, None)
        if services is not None:
            # Rows this instance claimed but did not send go back at once (not after the lease).
            # Not those still being sent (a stop that ran out of time): released now, another
            # instance could send them a second time; their lease hands them over instead.
            try:
                sending = sorted(services.outbox.sending)
                released = await services.outbox.release_claims()
                log.info("released %d claimed outbox rows for the next start", released)
                if sending:
                    log.warning(
                        "kept outbox rows %s, still being sent: they go to another instance "
                        "when their lease runs out, if not marked sent before",
                        ", ".join(map(str, sending)),
                    )
            except Exception:  # the database may be what failed; the lease then expires
                log.warning("could not release the claimed outbox rows", exc_info=True)
            await services.db.dispose()

    health = BotApiHealth()
    # One budget decides when every message goes out: Telegram's limits overall and per chat,
    # replies before broadcasts, a 429 pausing everything (bot/plumbing/send_budget.py). With
    # RATE_LIMIT_PER_SECOND=0 replies are not throttled and the request layer waits out a 429.
    budget = SendBudget(settings.rate_limit_per_second, bulk_rate=settings.broadcast_rate)
    retry_rate_limits = settings.rate_limit_per_second == 0
    builder = (
        Application.builder()
        .token(settings.effective_token)
        .base_url(settings.telegram_base_url)
        .context_types(ContextTypes(context=BotContext))
        # The builder's own job queue, given here so that its type names BotContext.
        .job_queue(JobQueue[BotContext]())
        .defaults(Defaults(tzinfo=settings.tz))
        .concurrent_updates(PerPersonUpdateProcessor())
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        # Telegram's errors by class below every call, and the last success for /health.
        .request(ResilientRequest(health=health, retry_rate_limits=retry_rate_limits))
        .get_updates_request(ResilientRequest(health=health, connection_pool_size=1))
        .rate_limiter(budget)
    )
    application: BotApplication = builder.build()
    application.bot_data[HEALTH_KEY] = health
    register_handlers(application)
    application.add_error_handler(on_error)
    return application
