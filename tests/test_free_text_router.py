"""One store of conversation state and one router for what a person types in private.

The precedence (bot/services/conversations.py) is tested on its own; the router offers a text
to each open conversation in that order and stops at the first feature that takes it; the
survey keeps its "question awaiting a written answer" row in step with the participations;
the upgrade records the questions open at that moment; and end to end, a single private text
reaches exactly one feature for one read of the person's conversations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection
from telegram.ext import ApplicationHandlerStop

from bot.services.conversations import (
    BROADCAST,
    EDIT_WORKSHOP,
    ENROL,
    MEDIATOR,
    NEW_WORKSHOP,
    PRECEDENCE,
    ROUTED,
    SURVEY_TEXT,
    Conversation,
    by_precedence,
)
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import ConversationState, SurveyAnswer
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock
from tests.relay_helpers import ADMIN_CHAT_ID
from tests.survey_helpers import survey_service

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def opened(kind: str, minutes: int) -> Conversation:
    return Conversation(kind, "step", {}, T0 + timedelta(minutes=minutes))


def order(*conversations: Conversation) -> list[str]:
    return [c.kind for c in by_precedence(list(conversations))]


# -- the precedence, in one place ---------------------------------------------------------


def test_a_broadcast_draft_comes_before_everything_else_however_old() -> None:
    assert order(
        opened(SURVEY_TEXT, 9), opened(MEDIATOR, 8), opened(ENROL, 7), opened(BROADCAST, 0)
    ) == [BROADCAST, ENROL, SURVEY_TEXT, MEDIATOR]


def test_staff_steps_come_before_a_residents_prompts_and_the_latest_staff_step_first() -> None:
    assert order(opened(MEDIATOR, 5), opened(NEW_WORKSHOP, 1), opened(EDIT_WORKSHOP, 2)) == [
        EDIT_WORKSHOP,
        NEW_WORKSHOP,
        MEDIATOR,
    ]


def test_between_the_mediator_prompt_and_a_survey_question_the_one_shown_last_wins() -> None:
    assert order(opened(MEDIATOR, 1), opened(SURVEY_TEXT, 2)) == [SURVEY_TEXT, MEDIATOR]
    assert order(opened(SURVEY_TEXT, 1), opened(MEDIATOR, 2)) == [MEDIATOR, SURVEY_TEXT]
    # Shown at the same moment: the prompt (the survey question must come strictly later).
    assert order(opened(SURVEY_TEXT, 1), opened(MEDIATOR, 1)) == [MEDIATOR, SURVEY_TEXT]


def test_every_routed_conversation_has_a_capture() -> None:
    from handlers.free_text import CAPTURES

    assert set(CAPTURES) == set(ROUTED)
    assert len(ROUTED) == len(set(ROUTED)) == sum(len(tier) for tier in PRECEDENCE)


# -- the router -----------------------------------------------------------------------------


async def test_the_first_feature_that_takes_the_text_ends_it_the_others_pass_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from handlers import free_text

    offered: list[str] = []

    def capture(takes: bool) -> Any:
        async def offer(_update: Any, _context: Any, conversation: Conversation) -> None:
            offered.append(conversation.kind)
            if takes:
                raise ApplicationHandlerStop

        return offer

    monkeypatch.setattr(
        free_text,
        "CAPTURES",
        {BROADCAST: capture(False), ENROL: capture(True), MEDIATOR: capture(True)},
    )
    reads: list[int] = []

    async def open_conversations(user_id: int) -> list[Conversation]:
        reads.append(user_id)
        return by_precedence([opened(MEDIATOR, 3), opened(ENROL, 2), opened(BROADCAST, 1)])

    services = SimpleNamespace(conversations=SimpleNamespace(open=open_conversations))
    context = SimpleNamespace(services=services)
    update = SimpleNamespace(effective_user=SimpleNamespace(id=7))
    with pytest.raises(ApplicationHandlerStop):
        await free_text.route(update, context)  # type: ignore[arg-type]
    assert (offered, reads) == ([BROADCAST, ENROL], [7])

    # Nobody takes it: it goes on to the ordinary handlers.
    offered.clear()
    monkeypatch.setattr(free_text, "CAPTURES", dict.fromkeys(ROUTED, capture(False)))
    await free_text.route(update, context)  # type: ignore[arg-type]
    assert offered == [BROADCAST, ENROL, MEDIATOR]


# -- the survey keeps its row in step ------------------------------------------------------


async def survey_row(db: Database, telegram_id: int) -> ConversationState | None:
    async with db.read() as session:
        return await session.get(ConversationState, (telegram_id, SURVEY_TEXT))


@pytest.mark.storage
async def test_the_survey_question_shown_last_is_the_conversation(db: Database) -> None:
    clock = new_clock()
    surveys = survey_service(db, clock)
    await ResidentService(db, clock).give_consent(1, "Ana", "fr")
    step = await surveys.start_needs(1)
    assert await survey_row(db, 1) is None  # a question with buttons
    needs = step.participation_id
    options = [option.key for option in step.question.options]
    step = await surveys.pick(1, needs, step.question.index, options.index("other"))
    step = await surveys.done(1, needs, step.question.index)
    assert step.question.question.key == "hard_other"
    row = await survey_row(db, 1)
    assert row is not None and row.updated_at == clock.now()
    assert row.data == {"participation_id": needs, "question": "hard_other"}

    clock.advance(timedelta(minutes=5))
    step = await surveys.answer_text(1, needs, "La mairie")
    assert step.question.question.key == "help_kind"
    assert await survey_row(db, 1) is None  # answered: the next question has buttons


@pytest.mark.storage
async def test_a_survey_finished_hands_the_text_back_to_the_question_shown_before(
    db: Database,
) -> None:
    """Two surveys under way: finishing the one shown last leaves the other's text question
    waiting again (as shown then, so it expires a day after it was shown)."""
    from bot.services.surveys.engine import AUTONOMY_BEFORE
    from tests.factories import seed_workshop

    clock = new_clock()
    surveys = survey_service(db, clock)
    await ResidentService(db, clock).give_consent(1, "Ana", "fr")
    step = await surveys.start_needs(1)
    needs = step.participation_id
    options = [option.key for option in step.question.options]
    step = await surveys.pick(1, needs, step.question.index, options.index("other"))
    step = await surveys.done(1, needs, step.question.index)
    shown_at = clock.now()

    clock.advance(timedelta(minutes=1))
    workshop = await seed_workshop(db, clock, starts_in=timedelta(days=2))
    from tests.survey_helpers import registered

    await registered(db, clock, 1, workshop, attended=False)
    before = await surveys.ask_autonomy_before(1, workshop)
    assert before.survey.key == AUTONOMY_BEFORE
    assert await survey_row(db, 1) is None  # the 1-5 question was shown last
    await surveys.answer(1, before.participation_id, before.question.question.key, 3)

    row = await survey_row(db, 1)
    assert row is not None and row.updated_at == shown_at
    assert row.data == {"participation_id": needs, "question": "hard_other"}
    assert (await surveys.awaiting_text(1)).participation_id == needs


@pytest.mark.storage
async def test_the_upgrade_records_the_questions_open_at_that_moment(
    empty_database_url: str,
) -> None:
    from alembic import command

    from storage.migrate import alembic_config

    database = Database(empty_database_url)

    async def migrate(target: str) -> None:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, target)

        async with database.engine.begin() as conn:
            await conn.run_sync(run)

    at = "'2026-11-26 09:00:00+00'"
    later = "'2026-11-26 09:05:00+00'"
    try:
        await migrate("0006")
        async with database.engine.begin() as conn:
            for telegram_id in (1, 2):
                await conn.execute(
                    text(
                        "INSERT INTO residents (id, telegram_id, first_name, language,"
                        " consented_at, is_active, wants_announcements, created_at,"
                        f" last_seen_at) VALUES ({telegram_id}, {telegram_id}, 'A', 'fr', {at},"
                        f" true, true, {at}, {at})"
                    )
                )
            for run_id, key in ((1, "needs"), (2, "post_workshop")):
                await conn.execute(
                    text(
                        "INSERT INTO survey_runs (id, survey_key, opened_at)"
                        f" VALUES ({run_id}, '{key}', {at})"
                    )
                )
            # Person 1: two surveys under way, the poll's question shown last; person 2:
            # a survey finished.
            for pid, run_id, resident_id, status, question, asked in (
                (1, 1, 1, "in_progress", "'hard_other'", at),
                (2, 2, 1, "in_progress", "'comment'", later),
                (3, 1, 2, "completed", "NULL", "NULL"),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO survey_participations (id, run_id, resident_id, status,"
                        f" current_question, asked_at) VALUES ({pid}, {run_id}, {resident_id},"
                        f" '{status}', {question}, {asked})"
                    )
                )
        await migrate("head")
        async with database.read() as session:
            rows = (await session.scalars(select(ConversationState))).all()
            found = [(r.user_id, r.conversation, r.data, r.updated_at) for r in rows]
    finally:
        await database.dispose()
    assert found == [
        (
            1,
            SURVEY_TEXT,
            {"participation_id": 2, "question": "comment"},
            datetime(2026, 11, 26, 9, 5, tzinfo=UTC),
        )
    ]


# -- end to end: one text, one feature, one read --------------------------------------------


@contextmanager
def conversation_reads(database: Database, telegram_id: int) -> Iterator[list[str]]:
    """The SELECTs of one person's conversation rows made by the running bot."""
    reads: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        values = parameters.values() if isinstance(parameters, dict) else parameters or ()
        if (
            statement.lstrip().upper().startswith("SELECT")
            and "FROM conversation_states" in statement
            and telegram_id in tuple(values)
        ):
            reads.append(statement)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield reads
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def open_relay_prompt(alice: SimulatedUser) -> None:
    await alice.send("/help")
    await alice.wait_message(contains="/privacy")
    await alice.press("💬 Parler à un médiateur")
    await alice.wait_message(contains="Écrire à un médiateur")


@pytest.mark.storage
@pytest.mark.e2e
async def test_one_private_text_reaches_one_feature_for_one_read(
    db: Database, database_url: str
) -> None:
    """Alice opens "write to a mediator", then /needs shows her a question to answer in
    writing: her text answers the survey (shown last) and is not relayed, for one read of her
    conversations; the next question has buttons, so her next text goes to the mediator."""
    clock = new_clock()
    async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
        settings = settings_for(
            emulator, database_url, admin_chat_id=ADMIN_CHAT_ID, outbox_sweep_seconds=0.2
        )
        group = client.group(ADMIN_CHAT_ID, "Facilitateurs")
        await group.send(client.user(500, "Fatou", "fr"), "Bonjour l'équipe")
        await ResidentService(db, clock).give_consent(1001, "Alice", "fr")
        alice = client.user(1001, "Alice", "fr")
        async with bot_running(settings, clock) as application:
            running = services_of(application)
            await open_relay_prompt(alice)
            clock.advance(timedelta(minutes=1))
            await alice.send("/needs")
            await alice.wait_message(contains="Qu'est-ce qui est difficile pour vous ?")
            await alice.press("☐ ✏️ Autre chose")
            await alice.wait_event(kind="edit")
            await alice.press("✅ C'est fait")
            await alice.wait_event(kind="edit", contains="Qu'est-ce qui est difficile d'autre ?")

            with conversation_reads(running.db, 1001) as reads:
                await alice.send("Les papiers de la mairie")
                await alice.wait_message(contains="Quelle aide")
            assert len(reads) == 1
            assert await running.mediator_relay.is_waiting(1001)  # the prompt is still open

            with conversation_reads(running.db, 1001) as reads:
                await alice.send("Pour le médiateur")
                await alice.wait_message(contains="Votre message est envoyé")
            assert len(reads) == 1
            card = await group.wait_message(contains="Message pour un médiateur")
            assert "Pour le médiateur" in card.text
        assert len(await group.messages()) == 1  # the one card
    async with db.read() as session:
        rows = await session.execute(select(SurveyAnswer.question_key, SurveyAnswer.free_text))
        written = dict(rows.all())
    assert written["hard_other"] == "Les papiers de la mairie"
