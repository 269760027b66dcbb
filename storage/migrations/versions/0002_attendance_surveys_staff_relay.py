"""Attendance, check-in codes, staff roles, surveys, conversation state and the relay
to the facilitators' channel; outbox messages may go to a fixed chat.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

CHECKIN_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_states",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "conversation", name=op.f("pk_conversation_states")),
    )
    op.create_table(
        "staff_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("granted_by", sa.BigInteger(), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('mediator', 'facilitator', 'coordinator')",
            name=op.f("ck_staff_roles_role_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_roles")),
    )
    with op.batch_alter_table("staff_roles", schema=None) as batch_op:
        batch_op.create_index("uq_staff_roles_person_role", ["telegram_id", "role"], unique=True)

    op.create_table(
        "relayed_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("channel_message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_relayed_messages_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relayed_messages")),
        sa.UniqueConstraint(
            "channel_message_id", name=op.f("uq_relayed_messages_channel_message_id")
        ),
    )
    op.create_table(
        "survey_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("survey_key", sa.String(length=64), nullable=False),
        sa.Column("workshop_id", sa.Integer(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digest_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workshop_id"], ["workshops.id"], name=op.f("fk_survey_runs_workshop_id_workshops")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_runs")),
    )
    with op.batch_alter_table("survey_runs", schema=None) as batch_op:
        batch_op.create_index("ix_survey_runs_closes_at", ["closes_at"], unique=False)
        batch_op.create_index(
            "uq_survey_runs_open_survey",
            ["survey_key"],
            unique=True,
            sqlite_where=sa.text("workshop_id IS NULL"),
            postgresql_where=sa.text("workshop_id IS NULL"),
        )
        batch_op.create_index(
            "uq_survey_runs_survey_workshop",
            ["survey_key", "workshop_id"],
            unique=True,
            sqlite_where=sa.text("workshop_id IS NOT NULL"),
            postgresql_where=sa.text("workshop_id IS NOT NULL"),
        )

    op.create_table(
        "survey_answer_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("workshop_id", sa.Integer(), nullable=True),
        sa.Column("time_bucket", sa.Date(), nullable=False),
        sa.Column("completed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_survey_answer_sets_resident_id_residents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["survey_runs.id"],
            name=op.f("fk_survey_answer_sets_run_id_survey_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workshop_id"],
            ["workshops.id"],
            name=op.f("fk_survey_answer_sets_workshop_id_workshops"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_answer_sets")),
    )
    with op.batch_alter_table("survey_answer_sets", schema=None) as batch_op:
        batch_op.create_index("ix_survey_answer_sets_resident_id", ["resident_id"], unique=False)
        batch_op.create_index("ix_survey_answer_sets_run_id", ["run_id"], unique=False)

    op.create_table(
        "survey_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("answer_set_id", sa.Integer(), nullable=False),
        sa.Column("question_key", sa.String(length=64), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("free_text", sa.Text(), nullable=True),
        sa.Column("skipped", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["answer_set_id"],
            ["survey_answer_sets.id"],
            name=op.f("fk_survey_answers_answer_set_id_survey_answer_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_answers")),
    )
    with op.batch_alter_table("survey_answers", schema=None) as batch_op:
        batch_op.create_index(
            "uq_survey_answers_set_question", ["answer_set_id", "question_key"], unique=True
        )

    op.create_table(
        "survey_participations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_question", sa.String(length=64), nullable=True),
        sa.Column("answer_set_id", sa.Integer(), nullable=True),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('invited', 'in_progress', 'completed', 'declined')",
            name=op.f("ck_survey_participations_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["answer_set_id"],
            ["survey_answer_sets.id"],
            name=op.f("fk_survey_participations_answer_set_id_survey_answer_sets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_survey_participations_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["survey_runs.id"],
            name=op.f("fk_survey_participations_run_id_survey_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_participations")),
    )
    with op.batch_alter_table("survey_participations", schema=None) as batch_op:
        batch_op.create_index("ix_survey_participations_resident_id", ["resident_id"], unique=False)
        batch_op.create_index(
            "uq_survey_participations_run_resident", ["run_id", "resident_id"], unique=True
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chat_id", sa.BigInteger(), nullable=True))
        batch_op.alter_column("resident_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_check_constraint(
            op.f("ck_outbox_has_recipient"), "resident_id IS NOT NULL OR chat_id IS NOT NULL"
        )

    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("coming_confirmed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("attended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attendance_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("attendance_marked_by", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_registrations_attendance_source_known"),
            "attendance_source IS NULL OR attendance_source IN ('code', 'button', 'roll')",
        )
        batch_op.create_check_constraint(
            op.f("ck_registrations_attendance_has_source"),
            "(attended_at IS NULL) = (attendance_source IS NULL)",
        )

    # Existing workshops get a code each before the column becomes mandatory.
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkin_code", sa.String(length=8), nullable=True))
    connection = op.get_bind()
    for (workshop_id,) in connection.execute(sa.text("SELECT id FROM workshops")):
        code = "".join(secrets.choice(CHECKIN_ALPHABET) for _ in range(5))
        connection.execute(
            sa.text("UPDATE workshops SET checkin_code = :code WHERE id = :id"),
            {"code": code, "id": workshop_id},
        )
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.alter_column("checkin_code", existing_type=sa.String(length=8), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.drop_column("checkin_code")

    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_registrations_attendance_has_source"), type_="check")
        batch_op.drop_constraint(op.f("ck_registrations_attendance_source_known"), type_="check")
        batch_op.drop_column("attendance_marked_by")
        batch_op.drop_column("attendance_source")
        batch_op.drop_column("attended_at")
        batch_op.drop_column("coming_confirmed_at")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_outbox_has_recipient"), type_="check")
        batch_op.alter_column("resident_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("chat_id")

    with op.batch_alter_table("survey_participations", schema=None) as batch_op:
        batch_op.drop_index("uq_survey_participations_run_resident")
        batch_op.drop_index("ix_survey_participations_resident_id")

    op.drop_table("survey_participations")
    with op.batch_alter_table("survey_answers", schema=None) as batch_op:
        batch_op.drop_index("uq_survey_answers_set_question")

    op.drop_table("survey_answers")
    with op.batch_alter_table("survey_answer_sets", schema=None) as batch_op:
        batch_op.drop_index("ix_survey_answer_sets_run_id")
        batch_op.drop_index("ix_survey_answer_sets_resident_id")

    op.drop_table("survey_answer_sets")
    with op.batch_alter_table("survey_runs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_survey_runs_survey_workshop",
            sqlite_where=sa.text("workshop_id IS NOT NULL"),
            postgresql_where=sa.text("workshop_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "uq_survey_runs_open_survey",
            sqlite_where=sa.text("workshop_id IS NULL"),
            postgresql_where=sa.text("workshop_id IS NULL"),
        )
        batch_op.drop_index("ix_survey_runs_closes_at")

    op.drop_table("survey_runs")
    op.drop_table("relayed_messages")
    with op.batch_alter_table("staff_roles", schema=None) as batch_op:
        batch_op.drop_index("uq_staff_roles_person_role")

    op.drop_table("staff_roles")
    op.drop_table("conversation_states")
