"""The store's tables (names fixed, columns may grow) and bringing a database up to them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def _forecast_point(key: bool = True) -> list[sa.Column]:
    """One forecast point (forecast, step; with ``key`` the table's primary key) and what
    it forecasts: shared by ``forecasts`` and the ``scores`` of its matured points."""
    return [
        sa.Column("forecast_id", sa.String(64), primary_key=key, nullable=False),
        sa.Column("step", sa.Integer, primary_key=key, nullable=False),
        sa.Column("series_id", sa.String(128), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
    ]


def _model() -> list[sa.Column]:
    """The registered model that issued a forecast."""
    return [
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
    ]


observations = sa.Table(
    "observations",
    metadata,
    sa.Column("series_id", sa.String(128), primary_key=True),
    sa.Column("variable", sa.String(128), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("batch_id", sa.Integer, nullable=True),
    sa.Column("revisions", sa.Integer, nullable=False, server_default="0"),
    # The keys ever revised (few): a series' count of them without reading every
    # observation (migration 0012).
    sa.Index(
        "ix_observations_revised",
        "series_id",
        "variable",
        sqlite_where=sa.text("revisions > 0"),
        postgresql_where=sa.text("revisions > 0"),
    ),
    # SQLite: stored in key order, each observation once (migration 0007).
    sqlite_with_rowid=False,
)

# Per series and variable: how many observations, the first and the last time, kept with
# every write of observations: `streamcast status` and GET /series read these rows, not
# every observation ever stored (migration 0012).
series_stats = sa.Table(
    "series_stats",
    metadata,
    sa.Column("series_id", sa.String(128), primary_key=True),
    sa.Column("variable", sa.String(128), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.Integer, index=True),
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("row_number", sa.Integer, nullable=True),
    sa.Column("series_id", sa.String(128), nullable=True),
    sa.Column("variable", sa.String(128), nullable=True),
    sa.Column("ts_raw", sa.String(128), nullable=True),
    sa.Column("value_raw", sa.String(128), nullable=True),
    sa.Column("reason", sa.String(64), nullable=False, index=True),
    sa.Column("detail", sa.String(512), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Re-ingesting the same bad input must not quarantine it twice.
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
)

ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("source_ref", sa.String(1024), nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=True, index=True),
    sa.Column("rows_read", sa.Integer, nullable=False, server_default="0"),
    sa.Column("observations_read", sa.Integer, nullable=False, server_default="0"),
    sa.Column("new", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated", sa.Integer, nullable=False, server_default="0"),
    sa.Column("unchanged", sa.Integer, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.Integer, nullable=False, server_default="0"),
    sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("elapsed_seconds", sa.Float, nullable=True),
    # The earliest observation time the batch wrote: what the batch path scores next
    # starts there (migration 0010).
    sa.Column("earliest", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_ingest_batches_finished", "finished_at"),
)

forecasts = sa.Table(
    "forecasts",
    metadata,
    *_forecast_point(),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("origin_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("yhat", sa.Float, nullable=False),
    sa.Column("lo", sa.Float, nullable=True),
    sa.Column("hi", sa.Float, nullable=True),
    *_model(),
    sa.Column("run_id", sa.String(64), nullable=True),
    # Each forecast's first step only: the latest-forecast query's (migration 0005).
    sa.Index(
        "ix_forecasts_latest_issue",
        "series_id",
        "target",
        "issued_at",
        sqlite_where=sa.text("step = 1"),
        postgresql_where=sa.text("step = 1"),
    ),
    # Time first, so an hour's points append (migration 0008); then the origin, so that the
    # points of a time from earlier origins (what a started stream scores from the store)
    # are read without the later ones (migration 0014). One series' forecasts are found
    # through the latest-forecast index.
    sa.Index("ix_forecasts_time_origin", "ts", "origin_ts"),
)

scores = sa.Table(
    "scores",
    metadata,
    *_forecast_point(key=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("yhat", sa.Float, nullable=False),
    sa.Column("actual", sa.Float, nullable=False),
    sa.Column("abs_error", sa.Float, nullable=False),
    sa.Column("scaled_error", sa.Float, nullable=True),  # abs_error / the series' MASE scale
    *_model(),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    # The interval the point was issued with (None: issued without one; migration 0009).
    sa.Column("lo", sa.Float, nullable=True),
    sa.Column("hi", sa.Float, nullable=True),
    # Time first, so an hour's scores append; a point's time follows from its forecast
    # and step, so it is still scored once (migration 0008). SQLite: stored in this order.
    sa.PrimaryKeyConstraint("ts", "forecast_id", "step"),
    # One version's points in the order they were scored: recalibration's latest points
    # of the champion, and the drift check's points scored since a training, a range per
    # version instead of a scan of every score (migration 0011; 0004 keyed it by ts).
    sa.Index("ix_scores_version_scored", "target", "model_version", "scored_at"),
    sqlite_with_rowid=False,
)

# The scores summed per model version, step and time, kept with every write of scores (a
# score written twice counts once): live error by model and step reads these instead of
# every score ever (migration 0009).
score_totals = sa.Table(
    "score_totals",
    metadata,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("model_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),  # '' for points issued without one
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("abs_error_sum", sa.Float, nullable=False),
    sa.Column("scaled_n", sa.Integer, nullable=False),  # points with a scaled error
    sa.Column("scaled_error_sum", sa.Float, nullable=False),
    sa.Column("interval_n", sa.Integer, nullable=False),  # points issued with an interval
    sa.Column("inside_n", sa.Integer, nullable=False),  # ... whose actual fell inside it
)

# Forecast points stored per target, kept with every write of forecasts (a point written
# again counts once): `status` and ``GET /health`` read these instead of counting every
# point ever issued (migration 0013).
forecast_totals = sa.Table(
    "forecast_totals",
    metadata,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),
)

# Per target, when the batch path (``streamcast forecast``) last scored matured points:
# the next run reads only points from the earliest observation written by batches that
# finished since, not every forecast point of the history it loads (migration 0010).
score_marks = sa.Table(
    "score_marks",
    metadata,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)

comparisons = sa.Table(
    "model_comparisons",
    metadata,
    sa.Column("training_run_id", sa.String(64), primary_key=True),
    sa.Column("candidate", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(128), nullable=False, index=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("mase", sa.Float),
    sa.Column("mae", sa.Float),
    sa.Column("rmse", sa.Float),
    sa.Column("smape", sa.Float),
    sa.Column("coverage", sa.Float),
    sa.Column("fit_seconds", sa.Float),
    sa.Column("registered_version", sa.String(32)),
    sa.Column("alias", sa.String(32)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

retrain_triggers = sa.Table(
    "retrain_triggers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(512)),
    sa.Column("outcome", sa.String(256)),
    sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
)

# What each variable is measured in (set on ingest: by the bundled dataset, Open-Meteo or --unit).
variables = sa.Table(
    "variables",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("unit", sa.String(32), nullable=False),
)

# What a stream has learnt beyond its registered champion (an ESN's adapted readout), one
# row per target, written in the same transaction as the batch it is current with.
stream_checkpoints = sa.Table(
    "stream_checkpoints",
    metadata,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
