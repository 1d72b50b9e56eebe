"""Live error by model and step is read from per-time totals, not from every score.

``GET /scores``, ``streamcast scores`` and the dashboard's live summary averaged every
score ever stored, each joined to its forecast point for the interval it was issued with:
at 1,000 series, after two days of a stream (924,000 scores), the dashboard's summary
took about 4 s, and it grew by 24,000 scores an hour.

- ``scores`` keeps the interval each point was issued with (``lo``, ``hi``), filled here
  from the forecasts, so that nothing needs the join.
- ``score_totals`` holds per target, model version, step and time: points, summed
  absolute and scaled errors, and how many had an interval and fell inside it. A write
  of scores the database inserted in full adds its own sums (a stream hour: 24 rows,
  about 15 ms at 1,000 series); one that met stored scores (a redelivered batch) sums
  the scores at its times again, so each score counts once. The live views sum these
  rows (the dashboard's summary: 4 s -> 6 ms on that store).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEYS = ["target", "model_name", "model_version", "step", "ts"]
_SUMMED = """INSERT INTO score_totals
    (target, model_name, model_version, step, ts, n, abs_error_sum, scaled_n, scaled_error_sum, interval_n, inside_n)
SELECT target, model_name, COALESCE(model_version, ''), step, ts, COUNT(*), SUM(abs_error), COUNT(scaled_error),
    COALESCE(SUM(scaled_error), 0), COUNT(lo),
    COALESCE(SUM(CASE WHEN lo IS NULL THEN NULL WHEN actual >= lo AND actual <= hi THEN 1 ELSE 0 END), 0)
FROM scores WHERE TRUE
GROUP BY target, model_name, COALESCE(model_version, ''), step, ts"""


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {c["name"] for c in inspector.get_columns("scores")}
    for name in ("lo", "hi"):
        if name not in present:
            op.add_column("scores", sa.Column(name, sa.Float, nullable=True))
    op.execute(
        "UPDATE scores SET "
        "lo = (SELECT f.lo FROM forecasts f WHERE f.forecast_id = scores.forecast_id AND f.step = scores.step), "
        "hi = (SELECT f.hi FROM forecasts f WHERE f.forecast_id = scores.forecast_id AND f.step = scores.step) "
        "WHERE lo IS NULL"
    )
    if not inspector.has_table("score_totals"):
        op.create_table(
            "score_totals",
            sa.Column("target", sa.String(128), nullable=False),
            sa.Column("model_name", sa.String(128), nullable=False),
            sa.Column("model_version", sa.String(32), nullable=False),
            sa.Column("step", sa.Integer, nullable=False),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("n", sa.Integer, nullable=False),
            sa.Column("abs_error_sum", sa.Float, nullable=False),
            sa.Column("scaled_n", sa.Integer, nullable=False),
            sa.Column("scaled_error_sum", sa.Float, nullable=False),
            sa.Column("interval_n", sa.Integer, nullable=False),
            sa.Column("inside_n", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint(*KEYS),
        )
    op.execute("DELETE FROM score_totals")
    op.execute(_SUMMED)


def downgrade() -> None:
    op.drop_table("score_totals")
    for name in ("hi", "lo"):
        op.execute(f"ALTER TABLE scores DROP COLUMN {name}")  # SQLite 3.35 on, as PostgreSQL
