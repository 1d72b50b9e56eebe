"""Forecast ids that begin with their origin, so the primary keys grow at their end.

A forecast id was the first 32 hex digits of a hash of (series, target, origin, model
version): every new forecast's key landed on a random page of the ``forecasts`` and
``scores`` primary keys, and a stream hour at 1,000 series (24,000 points and as many
scores) got slower as the tables grew (0.40 s of inserts after 30 hours, 0.51 s after
400 in a micro-benchmark; with ordered ids 0.29 and 0.33 s). Ids are now the origin in
UTC, a dash and the first 16 hex digits of the same hash
(:func:`streamcast.forecasting.forecast_id`). Stored ids of the old form are rewritten
to the new one, in ``scores`` as in ``forecasts``, so that a forecast issued again after
the upgrade (a retry, a redelivered entry) still replaces the stored one instead of
being stored twice. Ids of any other form are left as they are.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Per dialect: is ``{col}`` an id of the old form (32 lowercase hex digits), and the new id
# from the old one and its forecast's origin.
_OLD = {
    "sqlite": "length({col}) = 32 AND {col} NOT GLOB '*[^0-9a-f]*'",
    "postgresql": "{col} ~ '^[0-9a-f]{{32}}$'",
}
_NEW = {
    "sqlite": "strftime('%Y%m%dT%H%M%S', {origin}) || '-' || substr({col}, 1, 16)",
    "postgresql": "to_char({origin} AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISS') || '-' || substr({col}, 1, 16)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    old, new = _OLD[dialect], _NEW[dialect]
    # Scores first, while their forecasts still hold the old ids (a score's origin is its forecast's).
    if dialect == "postgresql":
        op.execute(
            "UPDATE scores SET forecast_id = "
            + new.format(origin="f.origin_ts", col="f.forecast_id")
            + " FROM forecasts f WHERE f.forecast_id = scores.forecast_id AND f.step = scores.step AND "
            + old.format(col="scores.forecast_id")
        )
    else:
        match = "FROM forecasts f WHERE f.forecast_id = scores.forecast_id AND f.step = scores.step"
        op.execute(
            f"UPDATE scores SET forecast_id = (SELECT {new.format(origin='f.origin_ts', col='f.forecast_id')} {match}) "
            f"WHERE {old.format(col='forecast_id')} AND EXISTS (SELECT 1 {match})"
        )
    op.execute(
        f"UPDATE forecasts SET forecast_id = {new.format(origin='origin_ts', col='forecast_id')} "
        f"WHERE {old.format(col='forecast_id')}"
    )


def downgrade() -> None:
    pass  # the old ids' last 16 digits are not kept; both forms are read alike
