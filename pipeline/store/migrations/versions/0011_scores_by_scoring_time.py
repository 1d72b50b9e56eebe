"""One version's scores indexed by when they were scored, not by their time.

The drift check (``GET /drift``, ``streamcast scores``, the pipeline flow's retrain
decision, a stream's first check after a start or retrain) reads the latest points per
series among those scored since the last training. ``scored_at`` had no index, so every
check read every score the target ever had: at 1,000 series a stream stores 24,000 an
hour, and after ten days a check took 4.2 s however recent the training.

``ix_scores_version_scored`` (target, model_version, scored_at) replaces
``ix_scores_version_time`` (target, model_version, ts): recalibration's latest points of
the champion's version are now the latest scored (the time breaks ties; a live stream
scores points in their time order), and the drift check reads each version's range since
the training. Both indexes append at their end as a stream scores, so writes cost the
same.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD, NEW = "ix_scores_version_time", "ix_scores_version_scored"


def _swap(drop: str, create: str, column: str) -> None:
    names = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("scores")}
    if drop in names:
        op.drop_index(drop, table_name="scores")
    if create not in names:
        op.create_index(create, "scores", ["target", "model_version", column])


def upgrade() -> None:
    _swap(OLD, NEW, "scored_at")


def downgrade() -> None:
    _swap(NEW, OLD, "ts")
