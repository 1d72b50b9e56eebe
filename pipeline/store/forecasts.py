"""Forecast points with their provenance, and the scores of those that matured."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from streamcast.store.engine import (
    Bound,
    as_utc,
    driver_insert_columns,
    key_pairs,
    py_datetime,
    utc_columns,
)
from streamcast.store.schema import forecast_totals, forecasts, observations, score_marks, score_totals, scores

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
_IN_CHUNK = 500  # times per IN list
# The latest forecast of every (series, target), found by walking the latest-forecast index
# (series_id, target, issued_at; step 1) from one pair to the next ("loose index scan",
# as for the observations' series): a stream at 1,000 series adds 1,000 entries an hour,
# and ranking every entry grew with each hour it had run. ``:target`` None: every target.
_FIRST = "x.step = 1"  # as the partial index's WHERE reads
_LATEST_OF_EACH = sa.text(
    key_pairs("forecasts", "series_id", "target", _FIRST)
    + f"""
    SELECT (SELECT x.forecast_id FROM forecasts x WHERE {_FIRST} AND x.series_id = p.sid AND x.target = p.var
            ORDER BY x.issued_at DESC, x.origin_ts DESC LIMIT 1) AS forecast_id
    FROM p WHERE p.sid IS NOT NULL AND (CAST(:target AS VARCHAR) IS NULL OR p.var = :target)"""
).columns(sa.column("forecast_id", sa.String))
_TOTAL_KEY = ["target", "model_name", "model_version", "step", "ts"]
_TOTAL_SUMS = ["n", "abs_error_sum", "scaled_n", "scaled_error_sum", "interval_n", "inside_n"]
# The score columns the totals are summed from.
_TOTALLED = ["target", "model_name", "model_version", "step", "ts", "actual", "abs_error", "scaled_error", "lo", "hi"]


def _by_target(columns: Mapping[str, Sequence[Any]]) -> Iterator[tuple[str, Mapping[str, Sequence[Any]]]]:
    """``columns`` split by target (as they are, when they hold one: every write here)."""
    targets = columns["target"]
    if not targets:
        return
    if list(targets).count(targets[0]) == len(targets):
        yield targets[0], columns
        return
    rows: dict[str, list[int]] = {}
    for i, target in enumerate(targets):
        rows.setdefault(target, []).append(i)
    for target, index in rows.items():
        yield target, {c: [v[i] for i in index] for c, v in columns.items()}


class ForecastTables(Bound):
    def _time(self, column: sa.Column) -> Any:
        """A time column as a frame reads it: text, parsed for the whole column at once by
        ``utc_columns``. On SQLite the stored text (SQLAlchemy parses each value on its own,
        which was most of reading 24,000 latest points); on PostgreSQL the same text of its
        UTC time (a frame of psycopg's aware datetimes inferred each value's type: 0.7 of
        the 1.2 s that reading 24,000 latest points took)."""
        if self.dialect == "sqlite":
            return sa.type_coerce(column, sa.String).label(column.name)
        utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
        return sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD HH24:MI:SS.US'")).label(column.name)

    def _points(self) -> sa.Select:
        """Forecast points (``POINT_COLUMNS``) for a frame (times as :meth:`_time`)."""
        return sa.select(*[self._time(forecasts.c[c]) if c in _TIME_COLUMNS else forecasts.c[c] for c in POINT_COLUMNS])

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
        with self._conn() as conn:
            return self._insert_points(conn, cols, replace)

    def write_forecast_records(self, records: list[dict[str, Any]]) -> int:
        """:meth:`write_forecasts` for rows already in driver types (the stream's path: a
        few points per observation, where a DataFrame costs more than the insert). Re-issuing
        the same forecast (a redelivered stream entry) changes nothing."""
        if not records:
            return 0
        with self._conn() as conn:
            return self._insert_points(conn, {c: [r[c] for r in records] for c in POINT_COLUMNS}, replace=False)

    def write_forecast_columns(self, columns: Mapping[str, Sequence[Any]]) -> int:
        """:meth:`write_forecast_records` of points given as columns (every column of
        ``POINT_COLUMNS``, in driver types): the stream's many-series path."""
        with self._conn() as conn:
            return self._insert_points(conn, columns, replace=False)

    def _insert_points(self, conn: Any, columns: Mapping[str, Sequence[Any]], replace: bool) -> int:
        """Insert forecast points given as columns, keeping ``forecast_totals``: a target at a
        time, so the database's count of rows it inserted is that target's new points. With
        ``replace``, points already stored are then overwritten (only when there are any: a
        forecast flow's points are new every hour)."""
        update = [c for c in POINT_COLUMNS if c not in _POINT_KEY]
        for target, part in _by_target(columns):
            n = len(part["target"])
            new = driver_insert_columns(conn, forecasts, part, _POINT_KEY, count=True)
            if replace and new < n:
                driver_insert_columns(conn, forecasts, part, _POINT_KEY, update)
            if new:
                added = {"points": "forecast_totals.points + excluded.points"}
                driver_insert_columns(conn, forecast_totals, {"target": [target], "points": [new]}, ["target"], added)
        return len(columns["target"])

    def write_score_columns(self, columns: Mapping[str, Sequence[Any]]) -> int:
        """:meth:`write_scores` of scores given as columns (the stream's many-series path)."""
        with self._conn() as conn:
            new = driver_insert_columns(conn, scores, columns, _SCORE_KEY, count=True)
            self._total(conn, columns, new)
            return len(columns["ts"])

    def write_scores(self, rows: list[dict[str, Any]]) -> int:
        """Record matured forecast points against their actuals (idempotent per point)."""
        if not rows:
            return 0
        columns = {c: [r.get(c) for r in rows] for c in {*rows[0], *_TOTALLED}}
        return self.write_score_columns(columns)

    def _total(self, conn: Any, columns: Mapping[str, Sequence[Any]], new: int) -> None:
        """``score_totals`` after writing ``columns``, of which the database inserted ``new``:
        when it inserted them all, the totals grow by exactly their sums (a few rows an
        hour); when some were stored already (a redelivered batch), the totals at their
        times are summed again from the stored scores."""
        if new != len(columns["ts"]):
            self._sum_scores(conn, columns["ts"])
            return
        rows = _sums(columns)
        stmt = self._insert(score_totals)
        stmt = stmt.on_conflict_do_update(
            index_elements=_TOTAL_KEY, set_={c: score_totals.c[c] + stmt.excluded[c] for c in _TOTAL_SUMS}
        )
        conn.execute(stmt, rows)

    def _sum_scores(self, conn: Any, times: Sequence[datetime]) -> None:
        """``score_totals`` at ``times`` summed again from the scores stored there: a score
        written twice (a redelivered batch) is counted once. A stream hour sums the scores
        of one time, which lie together under the scores' time-first key."""
        s, t = scores, score_totals
        version = sa.func.coalesce(s.c.model_version, "")
        inside = sa.case((s.c.lo.is_(None), sa.null()), ((s.c.actual >= s.c.lo) & (s.c.actual <= s.c.hi), 1), else_=0)
        distinct = sorted({as_utc(v) for v in times})
        for start in range(0, len(distinct), _IN_CHUNK):
            chunk = distinct[start : start + _IN_CHUNK]
            summed = (
                sa.select(
                    s.c.target,
                    s.c.model_name,
                    version,
                    s.c.step,
                    s.c.ts,
                    sa.func.count(),
                    sa.func.sum(s.c.abs_error),
                    sa.func.count(s.c.scaled_error),
                    sa.func.coalesce(sa.func.sum(s.c.scaled_error), 0.0),
                    sa.func.count(s.c.lo),
                    sa.func.coalesce(sa.func.sum(inside), 0),
                )
                .where(s.c.ts.in_(chunk))
                .group_by(s.c.target, s.c.model_name, version, s.c.step, s.c.ts)
            )
            stmt = self._insert(t).from_select([*_TOTAL_KEY, *_TOTAL_SUMS], summed)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=_TOTAL_KEY, set_={c: stmt.excluded[c] for c in _TOTAL_SUMS})
            )

    def unscored_points(
        self,
        target: str,
        series_ids: Sequence[str],
        since: datetime | pd.Timestamp,
        until: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Forecast points from ``since`` (to ``until``, if given) whose actual has been
        observed and that have no score yet: ``POINT_COLUMNS`` and ``actual`` (times UTC)."""
        f, s, o = forecasts, scores, observations
        # The points drive (by time, through ix_forecasts_time_origin); only those without a score
        # look up their actual (a CASE on the score: SQLite would otherwise look up every
        # point's actual first, and as a joined table walk the observations instead).
        on_score = sa.and_(s.c.ts == f.c.ts, s.c.forecast_id == f.c.forecast_id, s.c.step == f.c.step)
        observed = (
            sa.select(o.c.value)
            .where(o.c.series_id == f.c.series_id, o.c.variable == f.c.target, o.c.ts == f.c.ts)
            .scalar_subquery()
        )
        points = (
            sa.select(
                *[self._time(f.c[c]) if c in _TIME_COLUMNS else f.c[c] for c in POINT_COLUMNS],
                sa.case((s.c.forecast_id.is_(None), observed)).label("actual"),
            )
            .select_from(f.outerjoin(s, on_score))
            .where(
                f.c.target == target,
                f.c.series_id.in_(list(series_ids)),
                f.c.ts >= py_datetime(since),
                f.c.ts <= py_datetime(until) if until is not None else sa.true(),
                s.c.forecast_id.is_(None),
            )
            .subquery()
        )
        q = sa.select(*points.c).where(points.c.actual.is_not(None))
        return utc_columns(self._frame(q, [*POINT_COLUMNS, "actual"]), _TIME_COLUMNS)

    def score_mark(self, target: str) -> datetime | None:
        """When the batch path last scored ``target``'s matured points (None: never)."""
        q = sa.select(score_marks.c.checked_at).where(score_marks.c.target == target)
        with self._conn() as conn:
            at = conn.execute(q).scalar_one_or_none()
        return as_utc(at) if at is not None else None

    def set_score_mark(self, target: str, checked_at: datetime | pd.Timestamp) -> None:
        """Record that every point matured by observations committed before ``checked_at`` is scored."""
        at = py_datetime(checked_at)
        stmt = self._insert(score_marks).values(target=target, checked_at=at)
        with self._conn() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=["target"], set_={"checked_at": at}))

    def recent_residuals(self, target: str, model_version: str, limit: int) -> pd.DataFrame:
        """The latest ``limit`` matured points of one registered version of the target's
        model, the latest scored first (then the latest in time): forecast_id, step, ts,
        yhat, actual."""
        s = scores
        q = (
            sa.select(s.c.forecast_id, s.c.step, self._time(s.c.ts), s.c.yhat, s.c.actual)
            .where(s.c.target == target, s.c.model_version == model_version)
            .order_by(s.c.scored_at.desc(), s.c.ts.desc())
            .limit(limit)
        )
        return utc_columns(self._frame(q, ["forecast_id", "step", "ts", "yhat", "actual"]), ("ts",))

    def forecasts_for_times(
        self,
        target: str,
        series_ids: Sequence[str],
        times: Sequence[datetime],
        origin_before: datetime | None = None,
    ) -> pd.DataFrame:
        """Forecast points (``POINT_COLUMNS``, times UTC) of ``series_ids`` whose target time
        is one of ``times`` (from origins before ``origin_before``, if given): what the
        stream scores from the store after a start, a point per series and time for a day
        (1,000 an hour at 1,000 series), read as columns with each time column parsed at
        once (as records, each time parsed on its own: 17 -> 12 ms for 1,000 points)."""
        q = self._points().where(
            forecasts.c.target == target,
            forecasts.c.series_id.in_(list(series_ids)),
            forecasts.c.ts.in_([py_datetime(t) for t in times]),
        )
        if origin_before is not None:
            q = q.where(forecasts.c.origin_ts < py_datetime(origin_before))
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def latest_forecasts(
        self, series_id: str | None = None, target: str | None = None, series_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The points of the most recently issued forecast per (series, target), of
        ``series_id`` or of ``series_ids`` if given."""
        f = forecasts
        if series_id is None and series_ids is None:
            # Every series: the walk of the latest-forecast index, one probe per series and
            # target, however many forecasts each has had (the window below ranks them all).
            walked = _LATEST_OF_EACH.bindparams(target=target).subquery()
            q = self._points().where(f.c.forecast_id.in_(sa.select(walked.c.forecast_id)))
            order = (f.c.series_id, f.c.target, f.c.step)
            return utc_columns(self._frame(q.order_by(*order), POINT_COLUMNS), _TIME_COLUMNS)
        ranked = sa.select(
            f.c.forecast_id,
            sa.func.row_number()
            .over(partition_by=(f.c.series_id, f.c.target), order_by=(f.c.issued_at.desc(), f.c.origin_ts.desc()))
            .label("rn"),
        ).where(f.c.step == sa.literal_column("1"))  # as the partial index's WHERE reads (a literal)
        if series_id is not None:
            ranked = ranked.where(f.c.series_id == series_id)
        if series_ids is not None:
            ranked = ranked.where(f.c.series_id.in_(list(series_ids)))
        if target is not None:
            ranked = ranked.where(f.c.target == target)
        sub = ranked.subquery()
        latest = sa.select(sub.c.forecast_id).where(sub.c.rn == 1)
        q = self._points().where(f.c.forecast_id.in_(latest)).order_by(f.c.series_id, f.c.target, f.c.step)
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def newest_issue(self, target: str) -> dict[str, Any] | None:
        """The model name, version and issue time of the most recently issued forecast of
        ``target`` (None before the first): from the latest-forecast index, one entry per
        forecast, without reading any forecast's points."""
        f = forecasts
        first = (f.c.step == sa.literal_column("1"), f.c.target == target)  # the partial index's WHERE
        newest = sa.select(sa.func.max(f.c.issued_at)).where(*first).scalar_subquery()
        q = sa.select(f.c.model_name, f.c.model_version, f.c.issued_at).where(*first, f.c.issued_at == newest).limit(1)
        with self._conn() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else {**row, "issued_at": as_utc(row["issued_at"])}

    def forecasts_between(self, start: datetime | pd.Timestamp, end: datetime | pd.Timestamp) -> pd.DataFrame:
        """Forecast points whose target time falls in [start, end]."""
        q = self._points().where(forecasts.c.ts >= py_datetime(start), forecasts.c.ts <= py_datetime(end))
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
        q = (
            self._points()
            .where(f.c.forecast_id.in_(issued))
            .order_by(f.c.series_id, f.c.origin_ts, f.c.issued_at, f.c.step)
        )
        return utc_columns(self._frame(q, POINT_COLUMNS), _TIME_COLUMNS)

    def live_summary(self, target: str) -> pd.DataFrame:
        """Per model and version, over every matured point of ``target``: points, MAE,
        MASE and the share of actuals inside the interval the point was issued with."""
        t = score_totals
        q = (
            sa.select(*_live_error(), sa.func.max(t.c.ts).label("last_ts"))
            .where(t.c.target == target)
            .group_by(t.c.model_name, t.c.model_version)
            .order_by(sa.func.max(t.c.ts).desc())
        )
        df = utc_columns(
            self._frame(q, ["model_name", "model_version", "n", "mae", "mase", "coverage", "last_ts"]), ("last_ts",)
        )
        return df

    def live_scores(self, target: str) -> pd.DataFrame:
        """Live MAE, MASE and interval coverage of matured forecast points by model,
        version and step (coverage: the share of actuals inside the interval the point
        was issued with; None where points were issued without one)."""
        t = score_totals
        q = (
            sa.select(*_live_error(t.c.step))
            .where(t.c.target == target)
            .group_by(t.c.model_name, t.c.model_version, t.c.step)
            .order_by(t.c.model_name, t.c.model_version, t.c.step)
        )
        df = self._frame(q)
        for col in ("mase", "coverage"):
            df[col] = df[col].astype(float).where(df[col].notna(), None)
        return df

    def recent_live_mase(self, target: str, since: datetime | pd.Timestamp, window: int) -> float | None:
        """Mean scaled error of the latest ``window`` matured points per series, scored after ``since``.

        ``None`` until at least ``window`` points have been scored: a handful of early
        points is noise, not drift. Read as one range of the version-and-scoring-time index
        per version the target has scores of: what was scored since ``since``, not every
        score the target ever had.
        """
        s = scores
        since_at = py_datetime(since)
        with self._conn() as conn:
            versions = conn.execute(
                sa.select(score_totals.c.model_version).where(score_totals.c.target == target).distinct()
            ).scalars()
            named = sorted(set(versions))  # '' in the totals: points issued without a version
            if not named:
                return None
            scored = [s.c.model_version.in_(named)] + ([s.c.model_version.is_(None)] if "" in named else [])
            # One SELECT per condition, not an OR of them: each is then a range of the index.
            points = sa.union_all(
                *[
                    sa.select(s.c.series_id, s.c.ts, s.c.scaled_error).where(
                        s.c.target == target, version, s.c.scored_at >= since_at, s.c.scaled_error.is_not(None)
                    )
                    for version in scored
                ]
            ).subquery()
            ranked = sa.select(
                points.c.scaled_error,
                sa.func.row_number().over(partition_by=points.c.series_id, order_by=points.c.ts.desc()).label("rn"),
            ).subquery()
            row = conn.execute(
                sa.select(sa.func.avg(ranked.c.scaled_error), sa.func.count()).where(ranked.c.rn <= window)
            ).one()
        if row[1] < max(window, 1):
            return None
        return float(row[0])


def _sums(columns: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """``score_totals`` rows of the scores in ``columns`` (in arrays: at 24,000 scores an
    hour a DataFrame of them cost more than storing them)."""
    key = np.zeros(len(columns["ts"]), dtype=np.int64)
    for c in _TOTAL_KEY:
        codes, uniques = pd.factorize(np.asarray(columns[c], dtype=object), use_na_sentinel=False)
        key = key * len(uniques) + codes
    _, first, group = np.unique(key, return_index=True, return_inverse=True)

    def total(values: np.ndarray) -> list[Any]:
        return np.bincount(group, weights=values, minlength=len(first)).tolist()

    def floats(c: str) -> np.ndarray:
        return np.asarray(columns[c], dtype=float)  # None -> NaN

    actual, lo, hi, scaled = floats("actual"), floats("lo"), floats("hi"), floats("scaled_error")
    sums = {
        "n": total(np.ones(len(key))),
        "abs_error_sum": total(floats("abs_error")),
        "scaled_n": total(np.isfinite(scaled).astype(float)),
        "scaled_error_sum": total(np.nan_to_num(scaled, nan=0.0)),
        "interval_n": total(np.isfinite(lo).astype(float)),
        "inside_n": total(((actual >= lo) & (actual <= hi)).astype(float)),
    }
    rows = []
    for g, i in enumerate(first.tolist()):
        row = {c: columns[c][i] for c in _TOTAL_KEY}
        row["model_version"] = row["model_version"] or ""
        row["ts"] = as_utc(row["ts"])
        row.update({c: v[g] if c.endswith("_sum") else int(v[g]) for c, v in sums.items()})
        rows.append(row)
    # In key order, as series_stats: concurrent writers of the same hours on PostgreSQL lock
    # the rows in one order.
    return sorted(rows, key=lambda r: tuple(r[c] for c in _TOTAL_KEY))


def _live_error(*by: Any) -> list[Any]:
    """Per model and version (and ``by``), from ``score_totals``: matured points, their MAE,
    MASE and the share of actuals inside the interval the point was issued with (None
    where none was)."""
    t = score_totals
    n = sa.func.sum(t.c.n)
    return [
        t.c.model_name,
        sa.func.nullif(t.c.model_version, "").label("model_version"),
        *by,
        n.label("n"),
        (sa.func.sum(t.c.abs_error_sum) / n).label("mae"),
        (sa.func.sum(t.c.scaled_error_sum) / sa.func.nullif(sa.func.sum(t.c.scaled_n), 0)).label("mase"),
        (sa.cast(sa.func.sum(t.c.inside_n), sa.Float) / sa.func.nullif(sa.func.sum(t.c.interval_n), 0)).label(
            "coverage"
        ),
    ]
