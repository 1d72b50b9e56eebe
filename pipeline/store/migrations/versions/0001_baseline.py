"""Baseline: the tables as streamcast 0.1 made them before migrations existed.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _forecasts()
    _ingest_batches()
    _model_comparisons()
    _observations()
    _quarantine()
    _retrain_triggers()
    _scores()


def _forecast_point() -> list[sa.Column]:
    """Key and subject of a forecast point: forecasts and their scores share them."""
    return [
        sa.Column("forecast_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
    ]


def _model() -> list[sa.Column]:
    return [
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
    ]


def _forecasts() -> None:
    op.create_table(
        "forecasts",
        *_forecast_point(),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(), nullable=False),
        sa.Column("lo", sa.Float(), nullable=True),
        sa.Column("hi", sa.Float(), nullable=True),
        *_model(),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("forecast_id", "step"),
    )
    op.create_index("ix_forecasts_latest", "forecasts", ["series_id", "target", "issued_at"], unique=False)
    op.create_index("ix_forecasts_target_time", "forecasts", ["series_id", "ts"], unique=False)


def _ingest_batches() -> None:
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_ref", sa.String(length=1024), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("rows_read", sa.Integer(), server_default="0", nullable=False),
        sa.Column("observations_read", sa.Integer(), server_default="0", nullable=False),
        sa.Column("new", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("quarantined", sa.Integer(), server_default="0", nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("elapsed_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ingest_batches_content_hash"), "ingest_batches", ["content_hash"], unique=False)


def _model_comparisons() -> None:
    op.create_table(
        "model_comparisons",
        sa.Column("training_run_id", sa.String(length=64), nullable=False),
        sa.Column("candidate", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("mase", sa.Float(), nullable=True),
        sa.Column("mae", sa.Float(), nullable=True),
        sa.Column("rmse", sa.Float(), nullable=True),
        sa.Column("smape", sa.Float(), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=True),
        sa.Column("fit_seconds", sa.Float(), nullable=True),
        sa.Column("registered_version", sa.String(length=32), nullable=True),
        sa.Column("alias", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("training_run_id", "candidate"),
    )
    op.create_index(op.f("ix_model_comparisons_target"), "model_comparisons", ["target"], unique=False)


def _observations() -> None:
    op.create_table(
        "observations",
        sa.Column("series_id", sa.String(length=128), nullable=False),
        sa.Column("variable", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("revisions", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("series_id", "variable", "ts"),
    )


def _quarantine() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=True),
        sa.Column("series_id", sa.String(length=128), nullable=True),
        sa.Column("variable", sa.String(length=128), nullable=True),
        sa.Column("ts_raw", sa.String(length=128), nullable=True),
        sa.Column("value_raw", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_index(op.f("ix_quarantine_batch_id"), "quarantine", ["batch_id"], unique=False)
    op.create_index(op.f("ix_quarantine_reason"), "quarantine", ["reason"], unique=False)


def _retrain_triggers() -> None:
    op.create_table(
        "retrain_triggers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=512), nullable=True),
        sa.Column("outcome", sa.String(length=256), nullable=True),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _scores() -> None:
    op.create_table(
        "scores",
        *_forecast_point(),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(), nullable=False),
        sa.Column("actual", sa.Float(), nullable=False),
        sa.Column("abs_error", sa.Float(), nullable=False),
        sa.Column("scaled_error", sa.Float(), nullable=True),
        *_model(),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("forecast_id", "step"),
    )


def downgrade() -> None:
    for table in (
        "scores",
        "retrain_triggers",
        "quarantine",
        "observations",
        "model_comparisons",
        "ingest_batches",
        "forecasts",
    ):
        op.drop_table(table)
