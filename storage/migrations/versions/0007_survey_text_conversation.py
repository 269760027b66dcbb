"""The survey question waiting for a written answer becomes a conversation row ("survey_text"),
read with the person's other conversations by the free-text router (issue 14).

No schema change: the rows are written by the survey engine from now on. For people who are
in the middle of a survey at the upgrade, the question shown last is recorded here, at the
time it was shown, so that their next typed message still answers it (the engine checks, as
always, that it is a current text question before saving anything).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    build = "json_object" if op.get_bind().dialect.name == "sqlite" else "json_build_object"
    op.execute(
        f"""
        INSERT INTO conversation_states (user_id, conversation, state, data, updated_at)
        SELECT r.telegram_id, 'survey_text', 'waiting',
               {build}('participation_id', p.id, 'question', p.current_question), p.asked_at
        FROM survey_participations p JOIN residents r ON r.id = p.resident_id
        WHERE p.status = 'in_progress' AND p.asked_at IS NOT NULL
          AND p.current_question IS NOT NULL AND r.telegram_id IS NOT NULL
          AND NOT EXISTS (
            SELECT 1 FROM survey_participations q
            WHERE q.resident_id = p.resident_id AND q.status = 'in_progress'
              AND q.asked_at IS NOT NULL
              AND (q.asked_at > p.asked_at OR (q.asked_at = p.asked_at AND q.id > p.id))
          )
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM conversation_states WHERE conversation = 'survey_text'")
