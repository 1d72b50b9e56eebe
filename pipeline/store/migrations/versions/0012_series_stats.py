"""What the store holds per series and variable, kept as it is written.

`streamcast status` and ``GET /series`` list each series and variable with its count of
observations, first and last time and keys revised. They aggregated every observation
ever stored: at 1,000 series x 90 days (4.3 M observations) 1.2 s of a `status` that
took 3.8 s, and linear in the history.

- ``series_stats`` (series_id, variable, n, first_ts, last_ts): every write of
  observations adds its new keys (or, where it met keys another writer stored first, and
  on PostgreSQL's bulk path, counts its series again from the observations).
- ``ix_observations_revised``: the keys ever revised (a partial index; few), counted per
  series and variable at read time.

The upgrade fills ``series_stats`` from the observations stored (one pass).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_observations_revised"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("series_stats"):
        op.create_table(
            "series_stats",
            sa.Column("series_id", sa.String(128), primary_key=True),
            sa.Column("variable", sa.String(128), primary_key=True),
            sa.Column("n", sa.BigInteger, nullable=False),
            sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        )
        op.execute(
            "INSERT INTO series_stats (series_id, variable, n, first_ts, last_ts) "
            "SELECT series_id, variable, count(*), min(ts), max(ts) FROM observations GROUP BY series_id, variable"
        )
    if INDEX not in {ix["name"] for ix in inspector.get_indexes("observations")}:
        op.create_index(
            INDEX,
            "observations",
            ["series_id", "variable"],
            sqlite_where=sa.text("revisions > 0"),
            postgresql_where=sa.text("revisions > 0"),
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="observations")
    op.drop_table("series_stats")
