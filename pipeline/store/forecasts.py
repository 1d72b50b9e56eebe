"""Forecast points with their provenance, and the scores of those that matured."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from streamcast.store.engine import Bound, as_utc, driver_insert, driver_insert_columns, py_datetime, utc_columns
from streamcast.store.schema import forecasts, observations, scores

# One stored forecast point, in the order `predictions latest --format csv` prints it.
POINT_COLUMNS = [
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
_TIME_COLUMNS = ("issued_at", "origin_ts", "ts")
_POINT_KEY = ("forecast_id", "step")
_SCORE_KEY = ("ts", "forecast_id", "step")  # time first: an hour's scores append (migration 0008)
_POINTS = sa.select(*[forecasts.c[c] for c in POINT_COLUMNS])


def _tuples(records: list[dict[str, Any]], columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    get = operator.itemgetter(*columns)
    return (get(r) for r in records)


class ForecastTables(Bound):
    def write_forecasts(self, frame: pd.DataFrame, replace: bool = False) -> int:
        """Insert forecast points (one row per forecast_id and step) from a frame; with
        ``replace`` a forecast already stored under the same id is overwritten, else kept."""
        if frame.empty:
            return 0
        cols: dict[str, list[Any]] = {}
        for c in POINT_COLUMNS:
            values = frame[c]
            if c in _TIME_COLUMNS:
                # Each distinct time converted once: all points of a forecast share two of them.
                codes, uniques = pd.factorize(pd.to_datetime(values, utc=True))
                cols[c] = list(np.asarray(pd.DatetimeIndex(uniques).to_pydatetime(), dtype=object)[codes])
            elif c in ("yhat", "lo", "hi"):
                floats = values.astype(float)
                cols[c] = [None if v != v else v for v in floats.tolist()]  # NaN -> NULL
            elif c == "step":
                cols[c] = values.astype(int).tolist()
            else:
                cols[c] = [None if v is None or v != v else str(v) for v in values.tolist()]
        rows = zip(*(cols[c] for c in POINT_COLUMNS), strict=True)
        update = [c for c in POINT_COLUMNS if c not in _POINT_KEY] if replace else []
        with self._conn() as conn:
            return driver_insert(conn, forecasts, POINT_COLUMNS, rows, _POINT_KEY, update)

    def write_forecast_records(self, records: list[dict[str, Any]]) -> int:
        """:meth:`write_forecasts` for rows already in driver types (the stream's path: a
        few points per observation, where a DataFrame costs more than the insert). Re-issuing
        the same forecast (a redelivered stream entry) changes nothing."""
        if not records:
            return 0
        with self._conn() as conn:
            return driver_insert(conn, forecasts, POINT_COLUMNS, _tuples(records, POINT_COLUMNS), _POINT_KEY)

    def write_forecast_columns(self, columns: Mapping[str, Sequence[Any]]) -> int:
        """:meth:`write_forecast_records` of points given as columns (every column of
        ``POINT_COLUMNS``, in driver types): the stream's many-series path."""
        with self._conn() as conn:
            return driver_insert_columns(conn, forecasts, columns, _POINT_KEY)

    def write_score_columns(self, columns: Mapping[str, Sequence[Any]]) -> int:
        """:meth:`write_scores` of scores given as columns (the stream's many-series path)."""
        with self._conn() as conn:
            return driver_insert_columns(conn, scores, columns, _SCORE_KEY)

    def write_scores(self, rows: list[dict[str, Any]]) -> int:
        """Record matured forecast points against their actuals (idempotent per point)."""
        if not rows:
            return 0
        columns = list(rows[0])
        with self._conn() as conn:
            return driver_insert(conn, scores, columns, _tuples(rows, columns), _SCORE_KEY)

    def unscored_points(
        self, target: str, series_ids: Sequence[str], since: datetime | pd.Timestamp
    ) -> list[dict[str, Any]]:
        """Forecast points at or after ``since`` whose actual has been observed and that
        have no score yet, as records with the actual (UTC-aware datetimes)."""
        f, s, o = forecasts, scores, observations
        # The points drive (by time, through ix_forecasts_time); only those without a score
        # look up their actual (a CASE on the score: SQLite would otherwise look up every
        # point's actual first, and as a joined table walk the observations instead).
        on_score = sa.and_(s.c.ts == f.c.ts, s.c.forecast_id == f.c.forecast_id, s.c.step == f.c.step)
        observed = (
            sa.select(o.c.value)
            .where(o.c.series_id == f.c.series_id, o.c.variable == f.c.target, o.c.ts == f.c.ts)
            .scalar_subquery()
        )
        points = (
            sa.select(*[f.c[c] for c in POINT_COLUMNS], sa.case((s.c.forecast_id.is_(None), observed)).label("actual"))
            .select_from(f.outerjoin(s, on_score))
            .where(
                f.c.target == target,
                f.c.series_id.in_(list(series_ids)),
                f.c.ts >= py_datetime(since),
                s.c.forecast_id.is_(None),
            )
            .subquery()
        )
        q = sa.select(*points.c).where(points.c.actual.is_not(None))
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            for c in _TIME_COLUMNS:
                r[c] = as_utc(r[c])
        return rows

    def recent_residuals(self, target: str, model_version: str, limit: int) -> pd.DataFrame:
        """The latest ``limit`` matured points (by time) of one registered version of the
        target's model: forecast_id, step, ts, yhat, actual."""
        s = scores
        q = (
            sa.select(s.c.forecast_id, s.c.step, s.c.ts, s.c.yhat, s.c.actual)
            .where(s.c.target == target, s.c.model_version == model_version)
            .order_by(s.c.ts.desc())
            .limit(limit)
        )
        return utc_columns(self._frame(q, ["forecast_id", "step", "ts", "yhat", "actual"]), ("ts",))

    def forecasts_for_times(
        self,
        target: str,
        series_ids: Sequence[str],
        times: Sequence[datetime],
        origin_before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Forecast points of ``series_ids`` whose target time is one of ``times`` (from
        origins before ``origin_before``, if given), as records with UTC-aware datetimes
        (the stream scores a few of them per observation)."""
        q = _POINTS.where(
            forecasts.c.target == target,
            forecasts.c.series_id.in_(list(series_ids)),
            forecasts.c.ts.in_([py_datetime(t) for t in times]),
        )
        if origin_before is not None:
            q = q.where(forecasts.c.origin_ts < py_datetime(origin_before))
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            for c in _TIME_COLUMNS:
                r[c] = as_utc(r[c])
        return rows

    def latest_forecasts(self, series_id: str | None = None, target: str | None = None) -> pd.DataFrame:
        """The points of the most recently issued forecast per (series, target)."""
        f = forecasts
        ranked = sa.select(
            f.c.forecast_id,
            sa.func.row_number()
            .over(partition_by=(f.c.series_id, f.c.target), order_by=(f.c.issued_at.desc(), f.c.origin_ts.desc()))
            .label("rn"),
        ).where(f.c.step == sa.literal_column("1"))  # as the partial index's WHERE reads (a literal)
        if series_id is not None:
            ranked = ranked.where(f.c.series_id == series_id)
        if target is not None:
            ranked = ranked.where(f.c.target == target)
        sub = ranked.subquery()
        latest = sa.select(sub.c.forecast_id).where(sub.c.rn == 1)
        q = _POINTS.where(f.c.forecast_id.in_(latest)).order_by(f.c.series_id, f.c.step)
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def forecasts_between(self, start: datetime | pd.Timestamp, end: datetime | pd.Timestamp) -> pd.DataFrame:
        """Forecast points whose target time falls in [start, end]."""
        q = _POINTS.where(forecasts.c.ts >= py_datetime(start), forecasts.c.ts <= py_datetime(end))
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def forecasts_issued_between(
        self, target: str, series_ids: Sequence[str], start: datetime | pd.Timestamp, end: datetime | pd.Timestamp
    ) -> pd.DataFrame:
        """Points of the forecasts of ``target`` for ``series_ids`` whose origin lies in
        [start, end] (the dashboard overlays them on the actuals that arrived)."""
        f = forecasts
        # Each forecast's first point, found through the latest-forecast index (one entry
        # per forecast of the series), then all its points by the primary key.
        issued = sa.select(f.c.forecast_id).where(
            f.c.step == sa.literal_column("1"),  # as the partial index's WHERE reads (a literal)
            f.c.series_id.in_(list(series_ids)),
            f.c.target == target,
            f.c.origin_ts >= py_datetime(start),
            f.c.origin_ts <= py_datetime(end),
        )
        q = _POINTS.where(f.c.forecast_id.in_(issued)).order_by(f.c.series_id, f.c.origin_ts, f.c.issued_at, f.c.step)
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def live_summary(self, target: str) -> pd.DataFrame:
        """Per model and version, over every matured point of ``target``: points, MAE,
        MASE and the share of actuals inside the interval the point was issued with."""
        s = scores
        q = (
            sa.select(
                s.c.model_name,
                s.c.model_version,
                *_live_error(),
                sa.func.max(s.c.ts).label("last_ts"),
            )
            .select_from(_scored_points())
            .where(s.c.target == target)
            .group_by(s.c.model_name, s.c.model_version)
            .order_by(sa.func.max(s.c.ts).desc())
        )
        df = utc_columns(
            self._frame(q, ["model_name", "model_version", "n", "mae", "mase", "coverage", "last_ts"]), ("last_ts",)
        )
        return df

    def live_scores(self, target: str) -> pd.DataFrame:
        """Live MAE, MASE and interval coverage of matured forecast points by model,
        version and step (coverage: the share of actuals inside the interval the point
        was issued with; None where points were issued without one)."""
        s = scores
        q = (
            sa.select(
                s.c.model_name,
                s.c.model_version,
                s.c.step,
                *_live_error(),
            )
            .select_from(_scored_points())
            .where(s.c.target == target)
            .group_by(s.c.model_name, s.c.model_version, s.c.step)
            .order_by(s.c.model_name, s.c.model_version, s.c.step)
        )
        df = self._frame(q)
        for col in ("mase", "coverage"):
            df[col] = df[col].astype(float).where(df[col].notna(), None)
        return df

    def recent_live_mase(self, target: str, since: datetime | pd.Timestamp, window: int) -> float | None:
        """Mean scaled error of the latest ``window`` matured points per series, scored after ``since``.

        ``None`` until at least ``window`` points have been scored: a handful of early
        points is noise, not drift.
        """
        s = scores
        ranked = (
            sa.select(
                s.c.scaled_error,
                sa.func.row_number().over(partition_by=s.c.series_id, order_by=s.c.ts.desc()).label("rn"),
            )
            .where(s.c.target == target, s.c.scored_at >= py_datetime(since), s.c.scaled_error.is_not(None))
            .subquery()
        )
        with self._conn() as conn:
            row = conn.execute(
                sa.select(sa.func.avg(ranked.c.scaled_error), sa.func.count()).where(ranked.c.rn <= window)
            ).one()
        if row[1] < max(window, 1):
            return None
        return float(row[0])


def _scored_points() -> Any:
    """Scores joined to the points they score (for the interval each was issued with)."""
    return scores.join(
        forecasts, (scores.c.forecast_id == forecasts.c.forecast_id) & (scores.c.step == forecasts.c.step)
    )


def _live_error() -> list[Any]:
    """Matured points, their MAE, MASE and interval coverage (over scores joined to their points)."""
    s = scores
    return [
        sa.func.count().label("n"),
        sa.func.avg(s.c.abs_error).label("mae"),
        sa.func.avg(s.c.scaled_error).label("mase"),
        sa.func.avg(_inside()).label("coverage"),
    ]


def _inside() -> Any:
    """1 when the actual fell inside the point's interval, 0 outside, NULL without one."""
    f, s = forecasts, scores
    return sa.case((f.c.lo.is_(None), sa.null()), ((s.c.actual >= f.c.lo) & (s.c.actual <= f.c.hi), 1.0), else_=0.0)
