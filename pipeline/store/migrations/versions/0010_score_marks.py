"""The batch path scores what newly matured, not every forecast point it can see.

Each ``streamcast forecast`` (the scheduled forecast flow's) first scores the stored
forecast points whose actuals have arrived. It looked for them among every point since
the start of the history it loads (30 days): a forecast flow run hourly at 1,000 series
stores 24,000 points an hour, so after a month each run probed about 17 million points
for a score and an actual, hundreds of times the points that could have matured since.

- ``ingest_batches.earliest``: the earliest observation time each batch wrote (stream
  batches included); ``finished_at`` is indexed.
- ``score_marks``: per target, when the batch path last scored. The next run reads points
  from the earliest observation written by the batches finished since (less a margin for
  commits in flight), a late backfill included.

Batches written before this migration carry no ``earliest``; the first run after it finds
no mark and reads the whole history it loads, as before.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "ix_ingest_batches_finished"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "earliest" not in {c["name"] for c in inspector.get_columns("ingest_batches")}:
        op.add_column("ingest_batches", sa.Column("earliest", sa.DateTime(timezone=True), nullable=True))
    if INDEX not in {ix["name"] for ix in inspector.get_indexes("ingest_batches")}:
        op.create_index(INDEX, "ingest_batches", ["finished_at"])
    if not inspector.has_table("score_marks"):
        op.create_table(
            "score_marks",
            sa.Column("target", sa.String(128), primary_key=True),
            sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("score_marks")
    op.drop_index(INDEX, table_name="ingest_batches")
    op.execute("ALTER TABLE ingest_batches DROP COLUMN earliest")  # SQLite 3.35 on, as PostgreSQL
