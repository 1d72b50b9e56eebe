"""Forecast points stored per target, kept as they are written.

`streamcast status` and ``GET /health`` counted every row of ``forecasts`` (and of
``observations`` and ``scores``) on each call: at 1,000 series a stream stores 24,000
points an hour, so a health check that load balancers call every few seconds grew with
every hour the stream had run (5 s cold on a ten-day store).

- ``forecast_totals`` (target, points): every write of forecast points adds the points it
  inserted (a point written again, or replaced, counts once).

Observations and scores are counted from what is already kept (``series_stats``,
``score_totals``). The upgrade counts the stored points once.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("forecast_totals"):
        op.create_table(
            "forecast_totals",
            sa.Column("target", sa.String(128), primary_key=True),
            sa.Column("points", sa.BigInteger, nullable=False),
        )
        op.execute(
            "INSERT INTO forecast_totals (target, points) SELECT target, count(*) FROM forecasts GROUP BY target"
        )


def downgrade() -> None:
    op.drop_table("forecast_totals")
