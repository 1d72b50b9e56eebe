"""Forecast points indexed by their time and then their origin.

For a day after it starts (or restarts, or swaps champion), a stream scores each arriving
actual against the stored forecasts it did not issue itself: those issued before it
started, found by time and an origin before the first one it remembers. Indexed by time
alone, every point at that time was fetched and then filtered by origin, the stream's own
points included: one per series for every hour it had run, so the read grew through the
day (10,000 series: 0.1 s in the first hour, 0.9 s by the 22nd).

``ix_forecasts_time_origin`` (ts, origin_ts) replaces ``ix_forecasts_time`` (ts): the read
walks only the points of the earlier origins (about 0.1 s an hour at 10,000 series). An
hour's points still go to the end of the index (each time's newest origin is the hour's);
its wider entries cost 5-8% more to write (an hour's points at 1,000 series 109 -> 114 ms,
at 10,000 1.12 -> 1.21 s, in process on SQLite), where the read saved 0.02-0.06 s an hour
at 1,000 series and 0.1-0.8 s at 10,000 through the first day after each start.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OLD, NEW = "ix_forecasts_time", "ix_forecasts_time_origin"


def _swap(drop: str, create: str, columns: list[str]) -> None:
    names = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("forecasts")}
    if create not in names:
        op.create_index(create, "forecasts", columns)
    if drop in names:
        op.drop_index(drop, table_name="forecasts")


def upgrade() -> None:
    _swap(OLD, NEW, ["ts", "origin_ts"])


def downgrade() -> None:
    _swap(NEW, OLD, ["ts"])
