"""Privacy (RGPD): erased residents become tombstones, the retention notice is recorded, and
everyone's retention clock starts at the upgrade.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retention_notice_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_residents_retention_notice_at"), ["retention_notice_at"], unique=False
        )
    # last_seen_at becomes the retention clock, but until now it was written only at consent
    # and at a change of language: start everyone's clock at the upgrade, so that the first
    # run does not warn or erase people who are active. Stored as UTCDateTime stores it: an
    # aware timestamp on PostgreSQL, naive UTC text with microseconds on SQLite.
    if op.get_bind().dialect.name == "sqlite":
        now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    else:
        now = "CURRENT_TIMESTAMP"
    op.execute(f"UPDATE residents SET last_seen_at = {now} WHERE erased_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("residents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_residents_retention_notice_at"))
        batch_op.drop_column("erased_at")
        batch_op.drop_column("retention_notice_at")
