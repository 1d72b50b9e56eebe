"""The latest matured points of one champion version, found by an index, not a scan.

Interval recalibration (every ``forecast`` and every stream start) reads the latest
2,000 scores of the champion's version; without an index that sorted the whole table,
which grows by 24,000 rows an hour at 1,000 series (0.15 s after 30 hours, and linear).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ix_scores_version_time"


def upgrade() -> None:
    if NAME in {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("scores")}:
        return
    op.create_index(NAME, "scores", ["target", "model_version", "ts"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="scores")
