"""Turn a wide frame (one row per series and time) into validated observations.

Problems with single rows or values never stop the batch: they become
quarantine records with a reason, and the good rows of the same input are kept.
Problems with the input as a whole raise :class:`InputError` before anything is
written.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Bounds
from pipeline.errors import InputError

TIME_COLUMN_CANDIDATES = ("ts", "timestamp", "time", "time_hour", "date", "ds")

# Quarantine reasons (stable strings: they are stored and shown to users).
BAD_TIMESTAMP = "bad_timestamp"
AMBIGUOUS_LOCAL_TIME = "ambiguous_local_time"
MISSING_SERIES = "missing_series"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
OUT_OF_BOUNDS = "out_of_bounds"
CONFLICTING_DUPLICATE = "conflicting_duplicate"

_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


@dataclass
class ParsedBatch:
    """Observations in long form plus what was set aside."""

    observations: pd.DataFrame  # series_id, variable, ts (UTC), value
    quarantine: list[dict[str, Any]]
    rows_read: int
    variables: list[str]
    ignored_columns: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0

    @property
    def quarantine_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.quarantine).items()))


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


def _in_ns_range(idx: pd.DatetimeIndex) -> np.ndarray:
    """As datetime64[ns], with times outside 1800-2200 (or nanosecond range) as NaT."""
    ok = np.asarray((idx.year >= 1800) & (idx.year <= 2200)) & ~np.asarray(idx.isna())
    out = np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[ns]")
    if ok.any():
        out[ok] = idx[ok].as_unit("ns").to_numpy()
    return out


def parse_timestamps(raw: pd.Series, tz: str) -> tuple[pd.Series, pd.Series]:
    """Parse ISO 8601 timestamps to UTC; naive ones are local to ``tz``.

    Returns (timestamps, reason) where reason is None for good rows.
    """
    n = len(raw)
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    reason = pd.Series(None, index=raw.index, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(raw):
        dt = pd.DatetimeIndex(raw)
        if dt.tz is None:
            local = dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            amb = local.isna() & ~dt.isna()
            reason[amb] = AMBIGUOUS_LOCAL_TIME
            dt = local
        out[:] = dt.tz_convert("UTC").floor("us")
        reason[out.isna() & reason.isna()] = BAD_TIMESTAMP
        return out, reason
    text = raw.astype("string").str.strip()
    if n == 0:
        return out, reason
    # Fill a plain UTC datetime64 array and build the Series once: masked assignment
    # into a tz-aware Series trips over pandas' casting on odd inputs.
    values = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    reasons = np.full(n, None, dtype=object)
    aware_mask = text.str.contains(_TZ_SUFFIX, na=False).to_numpy(dtype=bool)
    if aware_mask.any():
        aware = pd.DatetimeIndex(
            pd.to_datetime(text[aware_mask].to_numpy(), errors="coerce", format="ISO8601", utc=True)
        )
        values[aware_mask] = aware.tz_convert(None).to_numpy().astype("datetime64[ns]")
    naive_mask = ~aware_mask & text.notna().to_numpy(dtype=bool)
    if naive_mask.any():
        naive_idx = pd.DatetimeIndex(pd.to_datetime(text[naive_mask].to_numpy(), errors="coerce", format="ISO8601"))
        if naive_idx.tz is not None:  # pragma: no cover - defensive, pandas keeps naive here
            naive_idx = naive_idx.tz_convert(None)
        try:
            local = naive_idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        except (OverflowError, ValueError):  # times at the edge of the representable range
            local = pd.DatetimeIndex([pd.NaT] * len(naive_idx), tz=tz)
        amb = np.asarray(local.isna() & ~naive_idx.isna())
        sub = reasons[naive_mask]
        sub[amb] = AMBIGUOUS_LOCAL_TIME
        reasons[naive_mask] = sub
        values[naive_mask] = _in_ns_range(local.tz_convert("UTC").tz_localize(None))
    idx = pd.DatetimeIndex(values)
    # The store keeps microseconds, and times outside 1800-2200 are typos or
    # overflows (year 0 wraps around in nanoseconds): both would break idempotence.
    idx = idx.floor("us").where((idx.year >= 1800) & (idx.year <= 2200))
    out = pd.Series(idx.tz_localize("UTC"), index=raw.index)
    reason = pd.Series(reasons, index=raw.index, dtype=object)
    reason[out.isna() & reason.isna()] = BAD_TIMESTAMP
    return out, reason


def _numeric(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) as arrays: values NaN where missing or unparseable; present marks non-missing input."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        # Plain and nullable numeric columns (a stream's typed fields, Parquet): no text to parse.
        present = ~np.asarray(pd.isna(raw), dtype=bool)
        return raw.to_numpy(dtype=float, na_value=np.nan), present
    text = raw.astype("string").str.strip()
    present = text.notna() & (text != "") & ~text.str.lower().isin(["na", "nan", "null", "none", "n/a", "-"])
    vals = pd.to_numeric(text.where(present), errors="coerce").astype(float)
    return vals.to_numpy(dtype=float, na_value=np.nan), present.fillna(False).to_numpy(dtype=bool)


def _as_text(value: Any, limit: int = 120) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    return str(value)[:limit]


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
    columns = [str(c) for c in frame.columns]
    frame = frame.copy()
    frame.columns = columns
    if frame.empty:
        raise InputError(f"{source}: no data rows")
    tcol = resolve_time_column(columns, time_col, source)
    if series_col is not None and series_col not in columns:
        raise InputError(f"{source}: series column {series_col!r} not found (columns: {', '.join(columns)})")
    bounds = bounds or {}
    frame = frame.reset_index(drop=True)
    n_rows = len(frame)
    row_number = np.arange(1, n_rows + 1)

    candidates = variables if variables is not None else [c for c in columns if c not in (tcol, series_col)]
    missing_vars = [v for v in candidates if v not in columns]
    if missing_vars:
        raise InputError(f"{source}: variable columns not found: {', '.join(missing_vars)}")
    parsed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ignored: list[str] = []
    for col in candidates:
        vals, present = _numeric(frame[col])
        n_present = int(present.sum())
        n_ok = int(np.count_nonzero(~np.isnan(vals)))
        # A column counts as a variable when most of its values are numbers; a
        # text column (notes, station names) is ignored rather than quarantined.
        if variables is None and (n_ok == 0 or n_ok < 0.5 * n_present):
            ignored.append(col)
            continue
        parsed[col] = (vals, present)
    if not parsed:
        raise InputError(f"{source}: no numeric variable columns (columns: {', '.join(columns)})")

    quarantine: list[dict[str, Any]] = []
    ts, ts_reason = parse_timestamps(frame[tcol], tz)
    if series_col is not None:
        sid = frame[series_col].astype("string").str.strip()
        sid_arr = sid.to_numpy(dtype=object, na_value=None)
        sid_bad = np.asarray(sid.isna() | (sid == ""), dtype=bool)
    else:
        sid_arr = np.full(n_rows, series_id, dtype=object)
        sid_bad = np.zeros(n_rows, dtype=bool)
    reason_arr = ts_reason.to_numpy(dtype=object)
    time_raw = frame[tcol].to_numpy(dtype=object)

    row_bad = np.asarray(ts_reason.notna(), dtype=bool) | sid_bad
    for i in np.flatnonzero(row_bad):
        quarantine.append(
            {
                "source": source,
                "row_number": int(row_number[i]),
                "series_id": _as_text(sid_arr[i]),
                "variable": None,
                "ts_raw": _as_text(time_raw[i]),
                "value_raw": None,
                "reason": str(reason_arr[i]) if reason_arr[i] is not None else MISSING_SERIES,
                "detail": None,
            }
        )

    good_rows = ~row_bad
    ts_utc = pd.DatetimeIndex(ts).tz_convert(None).to_numpy()  # datetime64, not objects: fast masking
    # Observations are gathered as arrays per variable and become one frame at the end:
    # a stream batch holds a few rows, where per-variable frames cost more than the work.
    sids: list[np.ndarray] = []
    var_names: list[np.ndarray] = []
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for var, (v, p) in parsed.items():
        non_numeric = p & np.isnan(v)
        non_finite = p & np.isinf(v)
        out_of_bounds = np.zeros(len(v), dtype=bool)
        if var in bounds:
            b = bounds[var]
            with np.errstate(invalid="ignore"):
                out_of_bounds = np.isfinite(v) & ((v < b.low) | (v > b.high))
        for mask, reason in ((non_numeric, NON_NUMERIC), (non_finite, NON_FINITE), (out_of_bounds, OUT_OF_BOUNDS)):
            idx = np.flatnonzero(mask & good_rows)
            for i in idx:
                detail = f"allowed [{bounds[var].low}, {bounds[var].high}]" if reason == OUT_OF_BOUNDS else None
                quarantine.append(
                    {
                        "source": source,
                        "row_number": int(row_number[i]),
                        "series_id": _as_text(sid_arr[i]),
                        "variable": var,
                        "ts_raw": _as_text(time_raw[i]),
                        "value_raw": _as_text(frame[var].iat[i]),
                        "reason": reason,
                        "detail": detail,
                    }
                )
        keep = np.flatnonzero(good_rows & np.isfinite(v) & ~out_of_bounds)
        if len(keep):
            sids.append(sid_arr[keep])
            var_names.append(np.full(len(keep), var, dtype=object))
            times.append(ts_utc[keep])
            values.append(v[keep])
            rows.append(row_number[keep])
    if values:
        sid_col = np.concatenate(sids).astype(str)
        var_col = np.concatenate(var_names).astype(str)
        ts_col = np.concatenate(times)
        order = np.lexsort((ts_col, var_col, sid_col))  # sorted by series, variable, time
        obs = pd.DataFrame(
            {
                "series_id": sid_col[order],
                "variable": var_col[order],
                "ts": pd.DatetimeIndex(ts_col[order]).tz_localize("UTC"),
                "value": np.concatenate(values)[order],
                "_row": np.concatenate(rows)[order],
            }
        )
    else:
        obs = pd.DataFrame(
            {
                "series_id": pd.Series([], dtype=str),
                "variable": pd.Series([], dtype=str),
                "ts": pd.DatetimeIndex([], tz="UTC"),
                "value": pd.Series([], dtype=float),
                "_row": pd.Series([], dtype=int),
            }
        )

    # Same key twice in one batch: identical values collapse, different ones are
    # a conflict nobody can resolve automatically, so every copy is set aside.
    duplicates_dropped = 0
    keys = ["series_id", "variable", "ts"]
    # Keys can only repeat when a (series, time) pair does: checked on the rows first,
    # which is far cheaper than a duplicate search over all observations.
    good_idx = np.flatnonzero(good_rows)
    row_pairs_unique = len(set(zip(sid_arr[good_idx].tolist(), ts_utc[good_idx].tolist(), strict=True))) == len(
        good_idx
    )
    dup_mask = pd.Series(False, index=obs.index) if row_pairs_unique else obs.duplicated(keys, keep=False)
    if dup_mask.any():
        dups = obs[dup_mask]
        n_distinct = dups.groupby(keys)["value"].transform("nunique")
        conflict_idx = dups.index[n_distinct.to_numpy() > 1]
        for i in conflict_idx:
            r = obs.loc[i]
            quarantine.append(
                {
                    "source": source,
                    "row_number": int(r["_row"]),
                    "series_id": str(r["series_id"]),
                    "variable": str(r["variable"]),
                    "ts_raw": r["ts"].isoformat(),
                    "value_raw": repr(float(r["value"])),
                    "reason": CONFLICTING_DUPLICATE,
                    "detail": "same series, variable and time with different values in one input",
                }
            )
        obs = obs.drop(index=conflict_idx)
        before = len(obs)
        obs = obs.drop_duplicates(keys, keep="first")
        duplicates_dropped = before - len(obs)
    obs = obs.drop(columns="_row").reset_index(drop=True)
    return ParsedBatch(
        observations=obs,
        quarantine=quarantine,
        rows_read=len(frame),
        variables=list(parsed),
        ignored_columns=ignored,
        duplicates_dropped=duplicates_dropped,
    )
