"""Turn a wide frame (one row per series and time) into validated observations.

Problems with single rows or values never stop the batch: they become
quarantine records with a reason, and the good rows of the same input are kept.
Problems with the input as a whole raise :class:`InputError` before anything is
written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from streamcast.cells import (
    MAX_NAME_LENGTH,
    as_text,
    distinct_cells,
    name_problem,
    parse_numbers,
    parse_timestamps,
    take,
)
from streamcast.config import Bounds
from streamcast.errors import InputError

TIME_COLUMN_CANDIDATES = ("ts", "timestamp", "time", "time_hour", "date", "ds")

# Quarantine reasons (stable strings: they are stored and shown to users).
MISSING_SERIES = "missing_series"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
OUT_OF_BOUNDS = "out_of_bounds"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
BAD_SERIES_ID = "bad_series_id"  # longer than the store keeps, or with a NUL byte
BAD_VARIABLE_NAME = "bad_variable_name"  # the same, for a column name


@dataclass
class ParsedBatch:
    """Observations in long form plus what was set aside."""

    observations: pd.DataFrame  # series_id, variable, ts (UTC), value
    quarantine: list[dict[str, Any]]
    rows_read: int
    variables: list[str]
    ignored_columns: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    missing: dict[str, int] = field(default_factory=dict)  # empty cells per variable (rows with a usable key)
    hints: list[str] = field(default_factory=list)  # what the input looks like it meant (one line each)

    @property
    def quarantine_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.quarantine).items()))


def empty_observations() -> pd.DataFrame:
    """No observations, with the long frame's columns and types."""
    return pd.DataFrame(
        {
            "series_id": pd.Series([], dtype=str),
            "variable": pd.Series([], dtype=str),
            "ts": pd.DatetimeIndex([], tz="UTC"),
            "value": pd.Series([], dtype=float),
        }
    )


def resolve_time_column(columns: list[str], time_col: str | None, source: str) -> str:
    if time_col is not None:
        if time_col not in columns:
            raise InputError(f"{source}: time column {time_col!r} not found (columns: {', '.join(map(str, columns))})")
        return time_col
    for cand in TIME_COLUMN_CANDIDATES:
        if cand in columns:
            return cand
    raise InputError(
        f"{source}: no time column; expected one of {', '.join(TIME_COLUMN_CANDIDATES)} or --time-col "
        f"(columns: {', '.join(map(str, columns))})"
    )


def quarantine_record(
    source: str,
    row_number: int | None,
    reason: str,
    *,
    series_id: Any = None,
    variable: str | None = None,
    ts_raw: Any = None,
    value_raw: Any = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """One quarantine record: where the bad input was, what it said and why it was set aside."""
    return {
        "source": as_text(source, 500),
        "row_number": row_number,
        "series_id": as_text(series_id),
        "variable": variable,
        "ts_raw": as_text(ts_raw),
        "value_raw": as_text(value_raw),
        "reason": reason,
        "detail": detail,
    }


@dataclass
class _Rows:
    """Per input row: its UTC time, series id and whether both are usable."""

    ts: np.ndarray  # datetime64[ns], UTC without zone; NaT where bad
    series_id: np.ndarray  # object
    good: np.ndarray  # bool
    time_raw: np.ndarray  # object: the text as given, for quarantine records
    number: np.ndarray  # 1-based row numbers
    series_code: np.ndarray  # int: the series id's rank among the distinct ids (-1 without one)

    def pairs_unique(self) -> bool:
        """No (series, time) pair repeats among the good rows: then no key can repeat either."""
        i = np.flatnonzero(self.good)
        pairs = pd.DataFrame({"series": self.series_code[i], "ts": self.ts[i]})
        return not bool(pairs.duplicated().any())


def parse_wide(
    frame: pd.DataFrame,
    source: str,
    *,
    time_col: str | None = None,
    series_col: str | None = None,
    series_id: str = "default",
    tz: str = "UTC",
    bounds: dict[str, Bounds] | None = None,
    variables: list[str] | None = None,
) -> ParsedBatch:
    """Validate a wide frame and return long observations plus quarantine records."""
    frame, tcol = _checked_frame(frame, source, time_col, series_col)
    values, ignored = _variable_columns(frame, source, [tcol, series_col], variables)
    rows, quarantine = _row_keys(frame, source, tcol, series_col, series_id, tz)
    values, name_quarantine = _usable_names(frame, source, rows, values)
    obs, value_quarantine = _observations(frame, source, rows, values, bounds or {})
    obs, conflicts, dropped = _resolve_duplicates(obs, source, check=not rows.pairs_unique())
    hint = _series_column_hint(frame, rows, ignored) if series_col is None else None
    return ParsedBatch(
        observations=obs,
        quarantine=quarantine + name_quarantine + value_quarantine + conflicts,
        rows_read=len(frame),
        variables=list(values),
        ignored_columns=ignored,
        duplicates_dropped=dropped,
        missing={v: n for v, (_, present) in values.items() if (n := int(np.count_nonzero(rows.good & ~present)))},
        hints=[hint] if hint else [],
    )


def _series_column_hint(frame: pd.DataFrame, rows: _Rows, ignored: list[str]) -> str | None:
    """Without a series column every row is one series, so timestamps that repeat collide.
    A text column that tells those rows apart (each of its values has each time once)
    is almost surely the series column: say so, and how to use it."""
    good = np.flatnonzero(rows.good)
    times = rows.ts[good]
    if len(good) < 2 or len(np.unique(times)) == len(times):
        return None
    for col in ignored:
        labels = frame[col].to_numpy(dtype=object)[good]
        if pd.isna(labels).any():
            continue
        keys = pd.DataFrame({"label": labels.astype(str), "ts": times})
        n_labels = keys["label"].nunique()
        if 1 < n_labels < len(keys) and not keys.duplicated().any():
            return (
                f"column {col!r} looks like a series column ({n_labels:,} distinct values sharing timestamps), "
                f"but every row went to one series; ingest again with --series-col {col}"
            )
    return None


def _checked_frame(
    frame: pd.DataFrame, source: str, time_col: str | None, series_col: str | None
) -> tuple[pd.DataFrame, str]:
    """The frame with text column names and a fresh index, and its time column; refuses an unusable frame."""
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise InputError(f"{source}: no data rows")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"{source}: column {repeated[0]!r} appears more than once; column names must be unique")
    tcol = resolve_time_column(columns, time_col, source)
    if series_col is not None and series_col not in columns:
        raise InputError(f"{source}: series column {series_col!r} not found (columns: {', '.join(columns)})")
    out = frame.reset_index(drop=True)
    out.columns = columns
    return out, tcol


def _variable_columns(
    frame: pd.DataFrame, source: str, keys: list[str | None], variables: list[str] | None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Each variable column as (values, present) arrays, and the columns ignored as text."""
    columns = list(frame.columns)
    candidates = variables if variables is not None else [c for c in columns if c not in keys]
    missing = [v for v in candidates if v not in columns]
    if missing:
        raise InputError(f"{source}: variable columns not found: {', '.join(missing)}")
    parsed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ignored: list[str] = []
    for col in candidates:
        vals, present = parse_numbers(frame[col])
        n_ok = int(np.count_nonzero(~np.isnan(vals)))
        # A column counts as a variable when most of its values are numbers; a
        # text column (notes, station names) is ignored rather than quarantined.
        if variables is None and (n_ok == 0 or n_ok < 0.5 * int(present.sum())):
            ignored.append(col)
        else:
            parsed[col] = (vals, present)
    if not parsed:
        raise InputError(f"{source}: no numeric variable columns (columns: {', '.join(columns)})")
    return parsed, ignored


def _row_keys(
    frame: pd.DataFrame, source: str, tcol: str, series_col: str | None, series_id: str, tz: str
) -> tuple[_Rows, list[dict[str, Any]]]:
    """Parse each row's time and series id; rows without a usable one are quarantined whole."""
    n = len(frame)
    ts, ts_reason = parse_timestamps(frame[tcol], tz)
    # Each distinct id read once (a panel repeats it on every row of its series).
    codes, cells = distinct_cells(frame[series_col]) if series_col is not None else (np.zeros(n, dtype=np.intp), None)
    if cells is not None:
        stripped = pd.Series(cells, dtype=object).astype("string").str.strip()
        names = stripped.to_numpy(dtype=object, na_value=None)
        missing = np.asarray(stripped.isna() | (stripped == ""), dtype=bool)
    else:
        names, missing = np.array([series_id], dtype=object), np.zeros(1, dtype=bool)
    problem = np.array([None if m else name_problem(s) for s, m in zip(names, missing, strict=True)], dtype=object)
    # Ids that differ only in surrounding blanks are one series: ranked after stripping.
    rank = np.full(len(names), -1, dtype=np.intp)
    rank[~missing] = pd.factorize(names[~missing], sort=True)[0]
    sids = take(names, codes, None)
    sid_problem = take(problem, codes, None)
    sid_bad = take(missing, codes, True) | pd.notna(sid_problem)
    reasons = ts_reason.to_numpy(dtype=object)
    rows = _Rows(
        ts=pd.DatetimeIndex(ts).tz_convert(None).to_numpy(),  # datetime64, not objects: fast masking
        series_id=sids,
        good=~(np.asarray(ts_reason.notna(), dtype=bool) | sid_bad),
        time_raw=frame[tcol].to_numpy(dtype=object),
        number=np.arange(1, n + 1),
        series_code=take(rank, codes, -1),
    )
    quarantine = [
        quarantine_record(
            source,
            int(rows.number[i]),
            str(reasons[i]) if reasons[i] is not None else BAD_SERIES_ID if sid_problem[i] else MISSING_SERIES,
            series_id=sids[i],
            ts_raw=rows.time_raw[i],
            detail=None if reasons[i] is not None else sid_problem[i],
        )
        for i in np.flatnonzero(~rows.good)
    ]
    return rows, quarantine


def _usable_names(
    frame: pd.DataFrame, source: str, rows: _Rows, values: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[dict[str, Any]]]:
    """The variables whose names every backend can store; the values of the others are
    quarantined (the column name itself cannot be stored, so it is shown in ``detail``)."""
    usable = {}
    quarantine: list[dict[str, Any]] = []
    for var, (v, present) in values.items():
        problem = name_problem(var)
        if problem is None:
            usable[var] = (v, present)
            continue
        quarantine += [
            quarantine_record(
                source,
                int(rows.number[i]),
                BAD_VARIABLE_NAME,
                series_id=rows.series_id[i],
                variable=as_text(var, MAX_NAME_LENGTH),
                ts_raw=rows.time_raw[i],
                value_raw=frame[var].iat[i],
                detail=f"column name {problem}: {as_text(var, 300)}",
            )
            for i in np.flatnonzero(present & rows.good)
        ]
    return usable, quarantine


def _observations(
    frame: pd.DataFrame,
    source: str,
    rows: _Rows,
    values: dict[str, tuple[np.ndarray, np.ndarray]],
    bounds: dict[str, Bounds],
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Long observations (series_id, variable, ts, value, _row) from good rows, sorted by
    series, variable and time; bad values (non-numeric, infinite, out of bounds) quarantined."""
    quarantine: list[dict[str, Any]] = []
    # Gathered as arrays and made one frame at the end: a stream batch holds a few
    # rows, where per-variable frames would cost more than the work.
    keep_idx: dict[str, np.ndarray] = {}
    for var, (v, present) in values.items():
        b = bounds.get(var)
        with np.errstate(invalid="ignore"):
            out_of_bounds = np.isfinite(v) & ((v < b.low) | (v > b.high)) if b else np.zeros(len(v), dtype=bool)
        checks = (
            (present & np.isnan(v), NON_NUMERIC, None),
            (present & np.isinf(v), NON_FINITE, None),
            (out_of_bounds, OUT_OF_BOUNDS, f"allowed [{b.low}, {b.high}]" if b else None),
        )
        for mask, reason, detail in checks:
            quarantine += [
                quarantine_record(
                    source,
                    int(rows.number[i]),
                    reason,
                    series_id=rows.series_id[i],
                    variable=var,
                    ts_raw=rows.time_raw[i],
                    value_raw=frame[var].iat[i],
                    detail=detail,
                )
                for i in np.flatnonzero(mask & rows.good)
            ]
        keep_idx[var] = np.flatnonzero(rows.good & np.isfinite(v) & ~out_of_bounds)
    return _long_frame(rows, values, keep_idx), quarantine


def _long_frame(
    rows: _Rows, values: dict[str, tuple[np.ndarray, np.ndarray]], keep_idx: dict[str, np.ndarray]
) -> pd.DataFrame:
    kept = [(var, idx) for var, idx in keep_idx.items() if len(idx)]
    if not kept:
        return empty_observations().assign(_row=pd.Series([], dtype=int))
    # Sorted by series, variable and time, on integer ranks (string keys sort far slower),
    # and each column taken once from the rows by position: at 43 M observations (10,000
    # series) every temporary column is 350 MB.
    names = np.array(sorted(var for var, _ in kept), dtype=object)
    rank_of = {var: i for i, var in enumerate(names)}
    var_rank = np.repeat(
        np.array([rank_of[var] for var, _ in kept], dtype=np.min_scalar_type(len(names))), [len(i) for _, i in kept]
    )
    pos = np.concatenate([idx for _, idx in kept])
    order = np.lexsort((rows.ts[pos], var_rank, rows.series_code[pos]))
    pos, var_rank = pos[order], var_rank[order]
    del order
    by_rank = np.stack([values[name][0] for name in names])  # (variables, rows)
    value = by_rank[var_rank, pos]
    del by_rank
    return pd.DataFrame(
        {
            "series_id": rows.series_id[pos],
            "variable": names[var_rank],
            "ts": pd.DatetimeIndex(rows.ts[pos]).tz_localize("UTC"),
            "value": value,
            "_row": rows.number[pos],
        }
    )


def _resolve_duplicates(obs: pd.DataFrame, source: str, check: bool) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    """Same key twice in one batch: identical values collapse, different ones are a
    conflict nobody can resolve automatically, so every copy is set aside."""
    keys = ["series_id", "variable", "ts"]
    conflicts: list[dict[str, Any]] = []
    dropped = 0
    # Keys can only repeat when a (series, time) pair does (``check``): far cheaper
    # than a duplicate search over all observations.
    dup = obs.duplicated(keys, keep=False) if check else pd.Series(False, index=obs.index)
    if dup.any():
        dups = obs[dup]
        n_distinct = dups.groupby(keys)["value"].transform("nunique")
        conflict_idx = dups.index[n_distinct.to_numpy() > 1]
        conflicts = [
            quarantine_record(
                source,
                int(r["_row"]),
                CONFLICTING_DUPLICATE,
                series_id=r["series_id"],
                variable=str(r["variable"]),
                ts_raw=r["ts"].isoformat(),
                value_raw=repr(float(r["value"])),
                detail="same series, variable and time with different values in one input",
            )
            for r in (obs.loc[i] for i in conflict_idx)
        ]
        obs = obs.drop(index=conflict_idx)
        before = len(obs)
        obs = obs.drop_duplicates(keys, keep="first")
        dropped = before - len(obs)
    obs.pop("_row")  # in place: a copy of every column would double the batch
    if not obs.index.equals(pd.RangeIndex(len(obs))):
        obs = obs.reset_index(drop=True)
    return obs, conflicts, dropped
