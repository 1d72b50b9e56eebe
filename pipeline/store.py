"""The store: the only module that speaks SQL.

SQLAlchemy 2 Core over SQLite (default, WAL mode) or PostgreSQL. Observations
are keyed ``(series_id, variable, ts)`` with ``ts`` in UTC; writes are batched
upserts so ingesting the same input twice changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pipeline.errors import SchemaError

metadata = sa.MetaData()

observations = sa.Table(
    "observations",
    metadata,
    sa.Column("series_id", sa.String(128), primary_key=True),
    sa.Column("variable", sa.String(128), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("batch_id", sa.Integer, nullable=True),
    sa.Column("revisions", sa.Integer, nullable=False, server_default="0"),
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
)

forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column("forecast_id", sa.String(64), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("series_id", sa.String(128), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("origin_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("yhat", sa.Float, nullable=False),
    sa.Column("lo", sa.Float, nullable=True),
    sa.Column("hi", sa.Float, nullable=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Index("ix_forecasts_latest", "series_id", "target", "issued_at"),
    sa.Index("ix_forecasts_target_time", "series_id", "ts"),
)

scores = sa.Table(
    "scores",
    metadata,
    sa.Column("forecast_id", sa.String(64), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("series_id", sa.String(128), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("yhat", sa.Float, nullable=False),
    sa.Column("actual", sa.Float, nullable=False),
    sa.Column("abs_error", sa.Float, nullable=False),
    sa.Column("scaled_error", sa.Float, nullable=True),  # abs_error / the series' MASE scale
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
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

OBS_COLUMNS = ["series_id", "variable", "ts", "value"]
FORECAST_COLUMNS = [
    "forecast_id",
    "series_id",
    "target",
    "issued_at",
    "origin_ts",
    "ts",
    "step",
    "yhat",
    "lo",
    "hi",
    "model_name",
    "model_version",
    "run_id",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _set_sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (API, status) run while an ingest writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL mode and its parent folder is created."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class UpsertCounts:
    new: int
    updated: int
    unchanged: int


def optional_float(value: Any) -> float | None:
    """A value for a nullable float column: NaN and NA become NULL."""
    return None if value is None or pd.isna(value) else float(value)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from the store as UTC-aware (SQLite returns naive ones; all writes are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the store's resolution)."""
    return (value - _EPOCH) // _MICROSECOND


def _micros_array(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def _to_utc_index(values: Iterable[Any]) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(list(values) if not isinstance(values, pd.Series) else values))
    if idx.tz is None:
        # SQLite returns naive datetimes; everything we write is UTC.
        return idx.tz_localize("UTC")
    return idx.tz_convert("UTC")


class Store:
    """Reads and writes streamcast's tables. Schema is created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._schema_ready = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        """Create missing tables and add columns a store from an older streamcast lacks.

        Only additive changes are automatic: a missing nullable column is added; a
        missing required one stops with a message saying what is missing.
        """
        if self._schema_ready:
            return
        metadata.create_all(self.engine)
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name in present:
                        continue
                    if not column.nullable:
                        raise SchemaError(
                            f"{table.name}.{column.name} is missing from the store at {self.engine.url!r} and "
                            "cannot be added to existing rows; point STREAMCAST_DB_URL at a new database"
                        )
                    col_type = column.type.compile(dialect=self.engine.dialect)
                    # Another process may be upgrading the same store: PostgreSQL can say so.
                    guard = "IF NOT EXISTS " if self.dialect == "postgresql" else ""
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN {guard}"{column.name}" {col_type}')
        self._schema_ready = True

    def dispose(self) -> None:
        self.engine.dispose()

    # --- writes -------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"unsupported database dialect: {self.dialect}")

    def _stored_values(self, conn: Connection, obs: pd.DataFrame) -> np.ndarray:
        """The stored value of each row's key in ``obs`` (NaN where the key is new).

        Small batches (a stream's few rows) query one range for the whole batch, one
        round trip, and match in a dict; large ones query one time range per series and
        variable and match with a join.
        """
        t = observations
        if len(obs) <= 5_000:
            q = sa.select(t.c.series_id, t.c.variable, t.c.ts, t.c.value).where(
                t.c.series_id.in_(obs["series_id"].unique().tolist()),
                t.c.variable.in_(obs["variable"].unique().tolist()),
                t.c.ts >= obs["ts"].min().to_pydatetime(),
                t.c.ts <= obs["ts"].max().to_pydatetime(),
            )
            found = {(sid, var, _micros(as_utc(ts))): value for sid, var, ts, value in conn.execute(q)}
            if not found:
                return np.full(len(obs), np.nan)
            keys = zip(
                obs["series_id"].tolist(), obs["variable"].tolist(), _micros_array(obs["ts"]).tolist(), strict=True
            )
            return np.array([found.get(k, np.nan) for k in keys], dtype=float)
        frames = []
        for (sid, var), grp in obs.groupby(["series_id", "variable"], sort=False):
            lo, hi = grp["ts"].min(), grp["ts"].max()
            rows = conn.execute(
                sa.select(t.c.ts, t.c.value).where(
                    t.c.series_id == sid,
                    t.c.variable == var,
                    t.c.ts >= lo.to_pydatetime(),
                    t.c.ts <= hi.to_pydatetime(),
                )
            ).all()
            if rows:
                f = pd.DataFrame(rows, columns=["ts", "old"])
                f["ts"] = _to_utc_index(f["ts"])
                f["series_id"] = sid
                f["variable"] = var
                frames.append(f)
        if not frames:
            return np.full(len(obs), np.nan)
        existing = pd.concat(frames, ignore_index=True)
        merged = obs[OBS_COLUMNS].merge(existing, on=["series_id", "variable", "ts"], how="left")
        return merged["old"].to_numpy(dtype=float, na_value=np.nan)

    def upsert_observations(
        self, conn: Connection, obs: pd.DataFrame, batch_id: int | None, chunk_size: int = 20_000
    ) -> UpsertCounts:
        """Write ``obs`` (series_id, variable, ts[UTC], value); unchanged keys are not touched.

        A key that exists with a different value is replaced and counted as a revision.
        """
        if obs.empty:
            return UpsertCounts(0, 0, 0)
        old = self._stored_values(conn, obs)
        is_new = np.isnan(old)
        changed = ~is_new & ~np.isclose(obs["value"].to_numpy(dtype=float), np.nan_to_num(old), rtol=0, atol=1e-9)
        to_write = obs.loc[is_new | changed, OBS_COLUMNS]
        if not to_write.empty:
            self._bulk_upsert(conn, to_write, batch_id, chunk_size)
        return UpsertCounts(
            new=int(is_new.sum()), updated=int(changed.sum()), unchanged=int((~is_new & ~changed).sum())
        )

    def _bulk_upsert(self, conn: Connection, frame: pd.DataFrame, batch_id: int | None, chunk_size: int) -> None:
        """Upsert through the driver: SQLAlchemy's per-row parameter processing would
        cost more than the database work at these volumes."""
        # Convert each distinct timestamp once: a batch repeats every time per variable.
        codes, uniques = pd.factorize(frame["ts"].dt.tz_convert("UTC"))
        if self.dialect == "sqlite":
            # Same text format SQLAlchemy's SQLite DateTime type writes and reads.
            ts_param: np.ndarray = np.asarray(pd.DatetimeIndex(uniques).strftime("%Y-%m-%d %H:%M:%S.%f"))[codes]
            sql = (
                "INSERT INTO observations (series_id, variable, ts, value, batch_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (series_id, variable, ts) DO UPDATE SET value = excluded.value, "
                "batch_id = excluded.batch_id, revisions = observations.revisions + 1"
            )
        elif self.dialect == "postgresql":
            ts_param = np.asarray(pd.DatetimeIndex(uniques).to_pydatetime())[codes]
            sql = (
                "INSERT INTO observations (series_id, variable, ts, value, batch_id) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (series_id, variable, ts) DO UPDATE SET value = excluded.value, "
                "batch_id = excluded.batch_id, revisions = observations.revisions + 1"
            )
        else:  # pragma: no cover - guarded by _insert
            raise NotImplementedError(self.dialect)
        rows = list(
            zip(
                frame["series_id"].astype(str).tolist(),
                frame["variable"].astype(str).tolist(),
                ts_param.tolist(),
                frame["value"].astype(float).tolist(),
                [batch_id] * len(frame),
                strict=True,
            )
        )
        for start in range(0, len(rows), chunk_size):
            conn.exec_driver_sql(sql, rows[start : start + chunk_size])

    def start_batch(self, conn: Connection, source: str, source_ref: str | None, content_hash: str | None) -> int:
        res = conn.execute(
            ingest_batches.insert().values(
                source=source, source_ref=source_ref, content_hash=content_hash, started_at=utcnow()
            )
        )
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_batch(self, conn: Connection, batch_id: int, **fields: Any) -> None:
        conn.execute(ingest_batches.update().where(ingest_batches.c.id == batch_id).values(**fields))

    def write_quarantine(self, conn: Connection, rows: Sequence[dict[str, Any]], batch_id: int) -> int:
        """Record set-aside rows; returns how many were new (repeats are ignored)."""
        if not rows:
            return 0
        now = utcnow()
        records = [{**r, "batch_id": batch_id, "created_at": now, "fingerprint": _fingerprint(r)} for r in rows]
        before = conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar_one()
        conn.execute(self._insert(quarantine).on_conflict_do_nothing(index_elements=["fingerprint"]), records)
        after = conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar_one()
        return int(after - before)

    # --- reads --------------------------------------------------------------

    def has_content_hash(self, content_hash: str) -> bool:
        self.ensure_schema()
        with self.engine.connect() as conn:
            q = sa.select(ingest_batches.c.id).where(ingest_batches.c.content_hash == content_hash).limit(1)
            return conn.execute(q).first() is not None

    def series_summary(self) -> pd.DataFrame:
        """Per series and variable: count, first and last ts."""
        self.ensure_schema()
        t = observations
        q = (
            sa.select(
                t.c.series_id,
                t.c.variable,
                sa.func.count().label("count"),
                sa.func.min(t.c.ts).label("first_ts"),
                sa.func.max(t.c.ts).label("last_ts"),
                sa.func.sum(sa.case((t.c.revisions > 0, 1), else_=0)).label("revised"),
            )
            .group_by(t.c.series_id, t.c.variable)
            .order_by(t.c.series_id, t.c.variable)
        )
        with self.engine.connect() as conn:
            df = pd.DataFrame(
                conn.execute(q).all(), columns=["series_id", "variable", "count", "first_ts", "last_ts", "revised"]
            )
        if not df.empty:
            df["first_ts"] = _to_utc_index(df["first_ts"])
            df["last_ts"] = _to_utc_index(df["last_ts"])
        return df

    def quarantine_counts(self) -> dict[str, int]:
        self.ensure_schema()
        q = sa.select(quarantine.c.reason, sa.func.count()).group_by(quarantine.c.reason).order_by(quarantine.c.reason)
        with self.engine.connect() as conn:
            return {r: int(n) for r, n in conn.execute(q).all()}

    def quarantine_rows(self, batch_id: int | None = None) -> pd.DataFrame:
        self.ensure_schema()
        q = sa.select(quarantine).order_by(quarantine.c.id)
        if batch_id is not None:
            q = q.where(quarantine.c.batch_id == batch_id)
        with self.engine.connect() as conn:
            res = conn.execute(q)
            return pd.DataFrame(res.all(), columns=list(res.keys()))

    def last_batch(self) -> dict[str, Any] | None:
        self.ensure_schema()
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(ingest_batches).order_by(ingest_batches.c.id.desc()).limit(1)).mappings().first()
            )
        return dict(row) if row else None

    def batches(self) -> pd.DataFrame:
        self.ensure_schema()
        with self.engine.connect() as conn:
            res = conn.execute(sa.select(ingest_batches).order_by(ingest_batches.c.id))
            return pd.DataFrame(res.all(), columns=list(res.keys()))

    def series_ids(self) -> list[str]:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(sa.select(observations.c.series_id).distinct().order_by(observations.c.series_id))
            ]

    def load_observations(
        self,
        series_ids: Sequence[str] | None = None,
        variables: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Observations in long form (series_id, variable, ts[UTC], value), sorted."""
        self.ensure_schema()
        t = observations
        q = sa.select(t.c.series_id, t.c.variable, t.c.ts, t.c.value)
        if series_ids is not None:
            q = q.where(t.c.series_id.in_(list(series_ids)))
        if variables is not None:
            q = q.where(t.c.variable.in_(list(variables)))
        if start is not None:
            q = q.where(t.c.ts >= pd.Timestamp(start).to_pydatetime())
        if end is not None:
            q = q.where(t.c.ts <= pd.Timestamp(end).to_pydatetime())
        q = q.order_by(t.c.series_id, t.c.variable, t.c.ts)
        with self.engine.connect() as conn:
            df = pd.DataFrame(conn.execute(q).all(), columns=OBS_COLUMNS)
        df["ts"] = _to_utc_index(df["ts"]) if not df.empty else pd.DatetimeIndex([], tz="UTC")
        df["value"] = df["value"].astype(float)
        return df

    def load_wide(self, series_ids: Sequence[str] | None = None, **kw: Any) -> pd.DataFrame:
        """Observations pivoted to one column per variable, indexed by (series_id, ts)."""
        long = self.load_observations(series_ids=series_ids, **kw)
        if long.empty:
            return pd.DataFrame(
                index=pd.MultiIndex.from_arrays([[], pd.DatetimeIndex([], tz="UTC")], names=["series_id", "ts"])
            )
        wide = long.pivot_table(index=["series_id", "ts"], columns="variable", values="value", aggfunc="last")
        wide.columns.name = None
        return wide.sort_index()

    # --- forecasts ----------------------------------------------------------

    def write_forecasts(self, frame: pd.DataFrame, conn: Connection | None = None) -> int:
        """Insert forecast points (one row per forecast_id and step); re-issuing the same
        forecast (a redelivered stream entry) changes nothing."""
        if frame.empty:
            self.ensure_schema()
            return 0
        records = frame[FORECAST_COLUMNS].to_dict("records")
        for r in records:
            for k in ("issued_at", "origin_ts", "ts"):
                r[k] = pd.Timestamp(r[k]).to_pydatetime()
            for k in ("yhat", "lo", "hi"):
                r[k] = optional_float(r[k])
            r["step"] = int(r["step"])
        return self.write_forecast_records(records, conn)

    def write_forecast_records(self, records: list[dict[str, Any]], conn: Connection | None = None) -> int:
        """:meth:`write_forecasts` for rows already in driver types (the stream's path:
        a few points per observation, where building a DataFrame costs more than the insert)."""
        self.ensure_schema()
        if records:
            stmt = self._insert(forecasts).on_conflict_do_nothing(index_elements=["forecast_id", "step"])
            self._write(stmt, records, conn)
        return len(records)

    def write_scores(self, rows: list[dict[str, Any]], conn: Connection | None = None) -> int:
        """Record matured forecast points against their actuals (idempotent per point)."""
        self.ensure_schema()
        if rows:
            self._write(self._insert(scores).on_conflict_do_nothing(index_elements=["forecast_id", "step"]), rows, conn)
        return len(rows)

    def _write(self, stmt: Any, rows: list[dict[str, Any]], conn: Connection | None) -> None:
        if conn is not None:
            conn.execute(stmt, rows)
            return
        with self.engine.begin() as own:
            own.execute(stmt, rows)

    def forecasts_for_times(
        self, target: str, series_ids: Sequence[str], times: Sequence[datetime]
    ) -> list[dict[str, Any]]:
        """Forecast points of ``series_ids`` whose target time is one of ``times``, as
        records with UTC-aware datetimes (the stream scores a few of them per observation)."""
        self.ensure_schema()
        q = sa.select(*[forecasts.c[c] for c in FORECAST_COLUMNS]).where(
            forecasts.c.target == target,
            forecasts.c.series_id.in_(list(series_ids)),
            forecasts.c.ts.in_([pd.Timestamp(t).to_pydatetime() for t in times]),
        )
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            for c in ("issued_at", "origin_ts", "ts"):
                r[c] = as_utc(r[c])
        return rows

    def record_retrain(self, target: str, reason: str, detail: str, outcome: str | None = None) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(
                retrain_triggers.insert().values(
                    target=target, reason=reason, detail=detail, outcome=outcome, triggered_at=utcnow()
                )
            )

    def retrain_triggers(self) -> pd.DataFrame:
        self.ensure_schema()
        with self.engine.connect() as conn:
            res = conn.execute(sa.select(retrain_triggers).order_by(retrain_triggers.c.id))
            return pd.DataFrame(res.all(), columns=list(res.keys()))

    def latest_forecast_ids(self, series_id: str | None = None, target: str | None = None) -> list[str]:
        """The most recently issued forecast per (series, target)."""
        self.ensure_schema()
        f = forecasts
        ranked = sa.select(
            f.c.forecast_id,
            sa.func.row_number()
            .over(partition_by=(f.c.series_id, f.c.target), order_by=(f.c.issued_at.desc(), f.c.origin_ts.desc()))
            .label("rn"),
        ).where(f.c.step == 1)
        if series_id is not None:
            ranked = ranked.where(f.c.series_id == series_id)
        if target is not None:
            ranked = ranked.where(f.c.target == target)
        sub = ranked.subquery()
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(sub.c.forecast_id).where(sub.c.rn == 1))]

    def forecast_points(self, forecast_ids: Sequence[str]) -> pd.DataFrame:
        self.ensure_schema()
        q = sa.select(*[forecasts.c[c] for c in FORECAST_COLUMNS]).where(
            forecasts.c.forecast_id.in_(list(forecast_ids))
        )
        with self.engine.connect() as conn:
            df = pd.DataFrame(
                conn.execute(q.order_by(forecasts.c.series_id, forecasts.c.step)).all(), columns=FORECAST_COLUMNS
            )
        for c in ("issued_at", "origin_ts", "ts"):
            df[c] = _to_utc_index(df[c]) if not df.empty else pd.DatetimeIndex([], tz="UTC")
        return df

    def latest_forecasts(self, series_id: str | None = None, target: str | None = None) -> pd.DataFrame:
        return self.forecast_points(self.latest_forecast_ids(series_id, target))

    def forecasts_between(self, start: datetime | pd.Timestamp, end: datetime | pd.Timestamp) -> pd.DataFrame:
        """Forecast points whose target time falls in [start, end]."""
        self.ensure_schema()
        q = sa.select(*[forecasts.c[c] for c in FORECAST_COLUMNS]).where(
            forecasts.c.ts >= pd.Timestamp(start).to_pydatetime(), forecasts.c.ts <= pd.Timestamp(end).to_pydatetime()
        )
        with self.engine.connect() as conn:
            df = pd.DataFrame(conn.execute(q).all(), columns=FORECAST_COLUMNS)
        for c in ("issued_at", "origin_ts", "ts"):
            df[c] = _to_utc_index(df[c]) if not df.empty else pd.DatetimeIndex([], tz="UTC")
        return df

    def live_scores(self, target: str) -> pd.DataFrame:
        """Live MAE and MASE of matured forecast points by model, version and step."""
        self.ensure_schema()
        s = scores
        q = (
            sa.select(
                s.c.model_name,
                s.c.model_version,
                s.c.step,
                sa.func.count().label("n"),
                sa.func.avg(s.c.abs_error).label("mae"),
                sa.func.avg(s.c.scaled_error).label("mase"),
            )
            .where(s.c.target == target)
            .group_by(s.c.model_name, s.c.model_version, s.c.step)
            .order_by(s.c.model_name, s.c.model_version, s.c.step)
        )
        with self.engine.connect() as conn:
            df = pd.DataFrame(
                conn.execute(q).all(), columns=["model_name", "model_version", "step", "n", "mae", "mase"]
            )
        df["mase"] = df["mase"].astype(float).where(df["mase"].notna(), None)
        return df

    def recent_live_mase(self, target: str, since: datetime | pd.Timestamp, window: int) -> float | None:
        """Mean scaled error of the latest ``window`` matured points per series, scored after ``since``.

        ``None`` until at least ``window`` points have been scored: a handful of early
        points is noise, not drift.
        """
        self.ensure_schema()
        s = scores
        ranked = (
            sa.select(
                s.c.scaled_error,
                sa.func.row_number().over(partition_by=s.c.series_id, order_by=s.c.ts.desc()).label("rn"),
            )
            .where(
                s.c.target == target,
                s.c.scored_at >= pd.Timestamp(since).to_pydatetime(),
                s.c.scaled_error.is_not(None),
            )
            .subquery()
        )
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.avg(ranked.c.scaled_error), sa.func.count()).where(ranked.c.rn <= window)
            ).one()
        if row[1] < max(window, 1):
            return None
        return float(row[0])

    # --- comparisons ----------------------------------------------------------

    def write_comparison(
        self, training_run_id: str, target: str, table: pd.DataFrame, version: str, alias: str
    ) -> None:
        self.ensure_schema()
        now = utcnow()
        rows = [
            {
                "training_run_id": training_run_id,
                "candidate": r["candidate"],
                "target": target,
                "rank": i + 1,
                **{k: float(r[k]) for k in ("mase", "mae", "rmse", "smape", "coverage", "fit_seconds")},
                "registered_version": version if i == 0 else None,
                "alias": alias if i == 0 else None,
                "created_at": now,
            }
            for i, r in enumerate(table.to_dict("records"))
        ]
        with self.engine.begin() as conn:
            conn.execute(comparisons.insert(), rows)

    def latest_comparison(self, target: str) -> pd.DataFrame:
        """The comparison table of the most recent training for ``target``."""
        self.ensure_schema()
        c = comparisons
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(c.c.training_run_id).where(c.c.target == target).order_by(c.c.created_at.desc()).limit(1)
            ).scalar()
            if last is None:
                return pd.DataFrame()
            res = conn.execute(sa.select(c).where(c.c.training_run_id == last).order_by(c.c.rank))
            return pd.DataFrame(res.all(), columns=list(res.keys()))

    def table_counts(self) -> dict[str, int]:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in (observations, quarantine, ingest_batches, forecasts, scores)
            }

    def transaction(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction: everything inside commits together or not at all."""
        self.ensure_schema()
        return self.engine.begin()


def _fingerprint(row: dict[str, Any]) -> str:
    parts = [
        str(row.get(k)) for k in ("source", "series_id", "variable", "ts_raw", "value_raw", "reason", "row_number")
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes: the landing folder's once-only key."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
