"""Staff tools: role audit trail, broadcasts (outbox rows per recipient), announcement
opt-out, desk enrolment with claim codes, and the facilitator in charge of a workshop.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("message_text", sa.Text(), nullable=False),
        sa.Column("photo_file_id", sa.String(length=256), nullable=True),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="draft", nullable=False),
        sa.Column("recipients", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("progress_message_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'sending', 'done', 'cancelled')",
            name=op.f("ck_broadcasts_status_known"),
        ),
        sa.CheckConstraint("recipients >= 0", name=op.f("ck_broadcasts_recipients_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_table(
        "role_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("changed_by", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('grant', 'revoke')", name=op.f("ck_role_changes_action_known")
        ),
        sa.CheckConstraint(
            "role IN ('mediator', 'facilitator', 'coordinator')",
            name=op.f("ck_role_changes_role_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_changes")),
    )
    with op.batch_alter_table("role_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_role_changes_telegram_id"), ["telegram_id"], unique=False
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("broadcast_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_broadcast_id"), ["broadcast_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_broadcast_id_broadcasts"),
            "broadcasts",
            ["broadcast_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "wants_announcements", sa.Boolean(), server_default=sa.text("true"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("enrolled_by", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("claim_code", sa.String(length=16), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_residents_claim_code"), ["claim_code"])

    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.add_column(sa.Column("facilitator_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_workshops_facilitator_id"), ["facilitator_id"], unique=False
        )

    # Issue-3 review fixes: when a survey question was shown; relayed cards known by chat
    # and message id (cards posted before this revision get chat 0: replies to them are
    # ignored); the hourly count of relayed cards by an index.
    with op.batch_alter_table("survey_participations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("asked_at", sa.DateTime(timezone=True), nullable=True))
    # Anonymous answers are now buffered per person and moved in batches: no participation
    # points to an anonymous answer set any more.
    op.execute(
        "UPDATE survey_participations SET answer_set_id = NULL WHERE answer_set_id IN"
        " (SELECT id FROM survey_answer_sets WHERE resident_id IS NULL)"
    )
    with op.batch_alter_table("relayed_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("chat_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("relayed_messages", schema=None) as batch_op:
        batch_op.alter_column("chat_id", server_default=None)
        batch_op.drop_constraint(
            batch_op.f("uq_relayed_messages_channel_message_id"), type_="unique"
        )
        batch_op.create_index(
            "uq_relayed_messages_chat_message", ["chat_id", "channel_message_id"], unique=True
        )
        batch_op.create_index(
            "ix_relayed_messages_resident_created", ["resident_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("relayed_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_relayed_messages_resident_created")
        batch_op.drop_index("uq_relayed_messages_chat_message")
        batch_op.create_unique_constraint(
            batch_op.f("uq_relayed_messages_channel_message_id"), ["channel_message_id"]
        )
        batch_op.drop_column("chat_id")
    with op.batch_alter_table("survey_participations", schema=None) as batch_op:
        batch_op.drop_column("asked_at")

    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workshops_facilitator_id"))
        batch_op.drop_column("facilitator_id")

    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_residents_claim_code"), type_="unique")
        batch_op.drop_column("claim_code")
        batch_op.drop_column("enrolled_by")
        batch_op.drop_column("phone")
        batch_op.drop_column("wants_announcements")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_broadcast_id_broadcasts"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_outbox_broadcast_id"))
        batch_op.drop_column("broadcast_id")

    with op.batch_alter_table("role_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_changes_telegram_id"))

    op.drop_table("role_changes")
    op.drop_table("broadcasts")
