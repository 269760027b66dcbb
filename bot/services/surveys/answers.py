"""Where answers are kept: each one saved as it comes, and anonymous ones kept apart.

A named survey's answers go into the person's answer set, created on their first answer.

Anonymous surveys: the answer set has no resident, only the workshop and the week. Nothing
anonymous is ever written in a transaction that also writes a row tied to the person: on
PostgreSQL every row keeps the id of the transaction that last wrote it (xmin), so such a
transaction would tie the answers to the person for good. While a person answers, their
answers wait in a buffer of their own (a ConversationState row, conversation
"survey:<run id>"); finishing marks the participation completed and the buffer complete. The
sweep then moves the complete buffers of a run into answer sets in ONE transaction for at
least `min_group_size` people at once, in shuffled order, deleting the buffers in that same
transaction (see flush_anonymous_answers). Anonymous participations keep no start or end
time either, so that the order of answer sets cannot be matched with people.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.outbox import enqueue_once
from bot.services.surveys.cards import RESPONSE_CARD
from bot.services.surveys.definitions import QuestionDef, QuestionType, SurveyCatalog
from bot.services.surveys.participations import DialectInsert, Turn
from bot.services.surveys.written_question import survey_finished
from bot.settings import Settings
from storage.db import Database
from storage.models import (
    ConversationState,
    ParticipationStatus,
    SurveyAnswer,
    SurveyAnswerSet,
    SurveyRun,
)

# The buffer of a person's anonymous answers (ConversationState.conversation / .state).
BUFFER_PREFIX = "survey:"
ANSWERING = "answering"
COMPLETE = "complete"


def week_of(moment: datetime, settings: Settings) -> date:
    """The Monday of the local week: the only time an anonymous answer set keeps."""
    day = moment.astimezone(settings.tz).date()
    return day - timedelta(days=day.weekday())


class AnswerStore:
    def __init__(
        self, db: Database, catalog: SurveyCatalog, settings: Settings, insert: DialectInsert
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._settings = settings
        self._insert = insert

    async def ticked(self, turn: Turn, question: QuestionDef) -> list[str]:
        """A multiple choice: the choices ticked so far."""
        if question.type is not QuestionType.MULTIPLE:
            return []
        if turn.survey.anonymous:
            buffer = await self._buffer(turn)
            answer = buffer.data.get("answers", {}).get(question.key) if buffer else None
            return list((answer or {}).get("choices") or [])
        set_id = turn.participation.answer_set_id
        if set_id is None:
            return []
        choices = await turn.session.scalar(
            select(SurveyAnswer.choices).where(
                SurveyAnswer.answer_set_id == set_id, SurveyAnswer.question_key == question.key
            )
        )
        return list(choices or [])

    async def save(
        self,
        turn: Turn,
        question: QuestionDef,
        *,
        choices: list[str] | None = None,
        number: int | None = None,
        text: str | None = None,
        skipped: bool = False,
    ) -> None:
        """Upsert the answer to one question, creating the answer set on the first answer
        (anonymous: in the person's buffer, see the module docstring)."""
        session, now = turn.session, turn.now
        participation = turn.participation
        answer: dict[str, Any] = {
            "choices": choices,
            "number": number,
            "text": text,
            "skipped": skipped,
        }
        if turn.survey.anonymous:
            buffer = await self._buffer(turn)
            if buffer is None:
                buffer = ConversationState(
                    user_id=turn.telegram_id,
                    conversation=f"{BUFFER_PREFIX}{turn.run_id}",
                    state=ANSWERING,
                    data={"answers": {}},
                    updated_at=now,
                )
                session.add(buffer)
            answers = dict(buffer.data.get("answers", {}))
            answers[question.key] = answer
            buffer.data = {**buffer.data, "answers": answers}
            buffer.updated_at = now
            return
        if participation.answer_set_id is None:
            answer_set = SurveyAnswerSet(
                run_id=turn.run_id,
                resident_id=participation.resident_id,  # never anonymous here: returned above
                workshop_id=turn.workshop_id,
                time_bucket=week_of(now, self._settings),
                completed=False,
            )
            session.add(answer_set)
            await session.flush()
            participation.answer_set_id = answer_set.id
        await self._upsert_answer(session, participation.answer_set_id, question.key, **answer)

    async def finish(self, turn: Turn) -> bool:
        """The last answer: the participation is completed. Anonymous answers stay in the
        buffer, marked complete, until the sweep moves them with other people's (this
        transaction writes no anonymous row); other answers are complete at once. Returns
        whether a response card went to the outbox."""
        session, now = turn.session, turn.now
        participation = turn.participation
        survey = turn.survey
        participation.status = ParticipationStatus.COMPLETED
        participation.current_question = None
        participation.asked_at = None
        await survey_finished(
            session, self._catalog, turn.telegram_id, participation.resident_id, participation.id
        )
        if survey.anonymous:
            buffer = await self._buffer(turn)
            assert buffer is not None  # every question answered or skipped wrote to it
            buffer.state = COMPLETE
            buffer.data = {**buffer.data, "week": week_of(now, self._settings).isoformat()}
            buffer.updated_at = now
            return False
        answer_set_id = participation.answer_set_id
        assert answer_set_id is not None  # every question answered or skipped wrote a row
        await session.execute(
            update(SurveyAnswerSet)
            .where(SurveyAnswerSet.id == answer_set_id)
            .values(completed=True)
        )
        participation.completed_at = now
        settings = self._settings
        card = bool(
            survey.channel_card
            and "responses" in settings.channel_notices
            and settings.admin_chat_id is not None
        )
        if card:
            await self._queue_card(session, answer_set_id, now)
        return card

    async def flush_anonymous_answers(self, now: datetime) -> int:
        """Move complete anonymous answer buffers into answer sets; returns cards queued.

        Per run, one transaction takes the complete buffers of at least `min_group_size`
        people at once: it writes their answer sets in shuffled order (week only, no
        resident) and deletes their buffers. That transaction writes no live row tied to a
        person, and the participations were last written when each person finished, in
        transactions that wrote nothing anonymous: nothing left in the database ties one
        person to one answer set, only the batch to the run it belongs to.

        When the run has closed, whatever remains is moved even when fewer people are left
        (their figures are then protected by the small-count hiding of the statistics),
        and unfinished buffers are deleted: unfinished answers never count.
        """
        minimum = self._settings.min_group_size
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    ConversationState.conversation,
                    func.count().filter(ConversationState.state == COMPLETE).label("complete"),
                )
                .where(ConversationState.conversation.startswith(BUFFER_PREFIX))
                .group_by(ConversationState.conversation)
            )
            waiting = {
                int(row.conversation.removeprefix(BUFFER_PREFIX)): row.complete for row in rows
            }
            if not waiting:
                return 0
            closed = set(
                await session.scalars(
                    select(SurveyRun.id).where(
                        SurveyRun.id.in_(waiting), SurveyRun.closes_at <= now
                    )
                )
            )
        cards = 0
        for run_id, complete in sorted(waiting.items()):
            if run_id in closed or complete >= minimum:
                cards += await self._flush_run(run_id, closing=run_id in closed, now=now)
        return cards

    async def _flush_run(self, run_id: int, *, closing: bool, now: datetime) -> int:
        """One transaction: the complete buffers of a run become answer sets (see above)."""
        conversation = f"{BUFFER_PREFIX}{run_id}"
        settings = self._settings
        async with self._db.write() as session:
            buffers = list(
                await session.execute(
                    select(ConversationState.user_id, ConversationState.data)
                    .where(
                        ConversationState.conversation == conversation,
                        ConversationState.state == COMPLETE,
                    )
                    .with_for_update()
                )
            )
            if not closing and len(buffers) < settings.min_group_size:
                return 0  # another instance moved some meanwhile
            run = (
                await session.execute(
                    select(SurveyRun.survey_key, SurveyRun.workshop_id).where(
                        SurveyRun.id == run_id
                    )
                )
            ).one()
            random.SystemRandom().shuffle(buffers)
            card = (
                run.survey_key in self._catalog.surveys
                and self._catalog[run.survey_key].channel_card
                and "responses" in settings.channel_notices
                and settings.admin_chat_id is not None
            )
            cards = 0
            for _, data in buffers:
                answer_set = SurveyAnswerSet(
                    run_id=run_id,
                    resident_id=None,
                    workshop_id=run.workshop_id,
                    time_bucket=date.fromisoformat(data["week"]),
                    completed=True,
                )
                session.add(answer_set)
                await session.flush()
                for question_key, answer in data.get("answers", {}).items():
                    await self._upsert_answer(session, answer_set.id, question_key, **answer)
                if card:
                    cards += await self._queue_card(session, answer_set.id, now)
            deleted = delete(ConversationState).where(
                ConversationState.conversation == conversation
            )
            if not closing:
                deleted = deleted.where(
                    ConversationState.user_id.in_([user_id for user_id, _ in buffers])
                )
            await session.execute(deleted)
            return cards

    async def _upsert_answer(
        self,
        session: AsyncSession,
        answer_set_id: int,
        question_key: str,
        *,
        choices: list[str] | None,
        number: int | None,
        text: str | None,
        skipped: bool,
    ) -> None:
        values = {
            # SQL NULL, not JSON null: digests count choices with json_each and friends.
            "choices": choices if choices is not None else null(),
            "number": number,
            "free_text": text,
            "skipped": skipped,
        }
        statement = self._insert(SurveyAnswer).values(
            answer_set_id=answer_set_id, question_key=question_key, **values
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["answer_set_id", "question_key"], set_=values
            )
        )

    async def _buffer(self, turn: Turn) -> ConversationState | None:
        """The person's buffer of anonymous answers for this run (their row: locked with
        the participation, which every operation locks first)."""
        return await turn.session.get(
            ConversationState, (turn.telegram_id, f"{BUFFER_PREFIX}{turn.run_id}")
        )

    async def _queue_card(self, session: AsyncSession, answer_set_id: int, now: datetime) -> int:
        queued = await enqueue_once(
            session,
            chat_id=self._settings.admin_chat_id,
            kind=RESPONSE_CARD,
            payload={"answer_set_id": answer_set_id},
            dedupe_key=f"{RESPONSE_CARD}:{answer_set_id}",
            not_before=now,
            created_at=now,
        )
        return int(queued)
