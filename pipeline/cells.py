"""Reading single cells of user input: timestamps, numbers and names.

Each parser works on whole columns and returns, per cell, the value or why it is unusable.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

# Quarantine reasons of cells (stable strings: they are stored and shown to users).
BAD_TIMESTAMP = "bad_timestamp"
AMBIGUOUS_LOCAL_TIME = "ambiguous_local_time"  # a wall time that happens twice (autumn)
NONEXISTENT_LOCAL_TIME = "nonexistent_local_time"  # a wall time skipped by a clock change (spring)

MAX_NAME_LENGTH = 128  # series ids and variable names, on every backend

_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


def _in_ns_range(idx: pd.DatetimeIndex) -> np.ndarray:
    """As datetime64[ns], with times outside 1800-2200 (or nanosecond range) as NaT."""
    ok = np.asarray((idx.year >= 1800) & (idx.year <= 2200)) & ~np.asarray(idx.isna())
    out = np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[ns]")
    if ok.any():
        out[ok] = idx[ok].as_unit("ns").to_numpy()
    return out


def _localize(naive: pd.DatetimeIndex, tz: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Naive wall times in ``tz``; those that happen twice or never are NaT, with their
    reason (None elsewhere)."""
    why = np.full(len(naive), None, dtype=object)
    try:
        local = naive.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        # Read every repeated wall time as daylight time: what is still NaT never happened.
        skipped = naive.tz_localize(tz, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="NaT").isna()
    except (OverflowError, ValueError):  # times at the edge of the representable range
        return pd.DatetimeIndex([pd.NaT] * len(naive), tz=tz), why
    unset = np.asarray(local.isna() & ~naive.isna())
    skipped = np.asarray(skipped & ~naive.isna())
    why[unset & skipped] = NONEXISTENT_LOCAL_TIME
    why[unset & ~skipped] = AMBIGUOUS_LOCAL_TIME
    return local, why


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
            local, why = _localize(dt, tz)
            reason[:] = why
            dt = local
        # Times outside 1800-2200 (or nanoseconds) are quarantined, not wrapped: as for text.
        utc = pd.DatetimeIndex(_in_ns_range(dt.tz_convert("UTC").tz_localize(None))).floor("us")
        out = pd.Series(utc.tz_localize("UTC"), index=raw.index)
        reason[out.isna() & reason.isna()] = BAD_TIMESTAMP
        return out, reason
    if n == 0:
        return out, reason
    # A panel repeats every time once per series: each distinct cell is parsed once.
    codes, uniques = distinct_cells(raw)
    u_values, u_reasons = _parse_text_timestamps(pd.Series(uniques, dtype=object), tz)
    values = take(u_values, codes, np.datetime64("NaT", "ns"))
    reasons = take(u_reasons, codes, None)
    out = pd.Series(pd.DatetimeIndex(values).tz_localize("UTC"), index=raw.index)
    reason = pd.Series(reasons, index=raw.index, dtype=object)
    reason[out.isna() & reason.isna()] = BAD_TIMESTAMP
    return out, reason


def distinct_cells(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of a column's cells: ``uniques[codes]`` is the column, code -1
    where a cell is missing. Parsing the distinct cells and taking them by code gives
    what parsing every cell would, at the cost of the distinct ones."""
    if isinstance(raw.dtype, pd.CategoricalDtype):  # a CSV's text, read as codes already
        categories = np.asarray(raw.cat.categories, dtype=object)
        if pd.api.types.infer_dtype(categories, skipna=True) in ("string", "empty"):
            return raw.cat.codes.to_numpy(dtype=np.intp), categories
    cells = raw.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(cells, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(cells, use_na_sentinel=True)
        return codes, np.asarray(uniques, dtype=object)
    # Mixed Python values (a stream's JSON): 1, 1.0 and True hash alike, so none are merged.
    codes = np.arange(len(cells))
    codes[np.asarray(pd.isna(cells), dtype=bool)] = -1
    return codes, cells


def take(values: np.ndarray, codes: np.ndarray, missing: Any) -> np.ndarray:
    """``values[codes]``, with ``missing`` where the code is -1 (no cell)."""
    return np.concatenate([values, np.array([missing], dtype=values.dtype)])[codes]


def _parse_text_timestamps(raw: pd.Series, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """Cells as text to UTC (datetime64[ns] without zone, NaT where unusable) and the
    reason where a local time happens twice or never (None elsewhere)."""
    n = len(raw)
    text = raw.astype("string").str.strip()
    # Fill a plain UTC datetime64 array: masked assignment into a tz-aware Series trips
    # over pandas' casting on odd inputs.
    values = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    reasons = np.full(n, None, dtype=object)
    aware_mask = text.str.contains(_TZ_SUFFIX, na=False).to_numpy(dtype=bool)
    if aware_mask.any():
        aware = pd.DatetimeIndex(
            pd.to_datetime(text[aware_mask].to_numpy(), errors="coerce", format="ISO8601", utc=True)
        )
        values[aware_mask] = _in_ns_range(aware.tz_convert(None))
    naive_mask = ~aware_mask & text.notna().to_numpy(dtype=bool)
    if naive_mask.any():
        naive_idx = pd.DatetimeIndex(pd.to_datetime(text[naive_mask].to_numpy(), errors="coerce", format="ISO8601"))
        if naive_idx.tz is not None:  # pragma: no cover - defensive, pandas keeps naive here
            naive_idx = naive_idx.tz_convert(None)
        local, why = _localize(naive_idx, tz)
        reasons[naive_mask] = why
        values[naive_mask] = _in_ns_range(local.tz_convert("UTC").tz_localize(None))
    idx = pd.DatetimeIndex(values)
    # The store keeps microseconds, and times outside 1800-2200 are typos or
    # overflows (year 0 wraps around in nanoseconds): both would break idempotence.
    idx = idx.floor("us").where((idx.year >= 1800) & (idx.year <= 2200))
    return idx.to_numpy(), reasons


def parse_numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) as arrays: values NaN where missing or unparseable; present marks non-missing input."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        # Plain and nullable numeric columns (a stream's typed fields, Parquet): no text to parse.
        present = ~np.asarray(pd.isna(raw), dtype=bool)
        return raw.to_numpy(dtype=float, na_value=np.nan), present
    # Each distinct cell parsed once (readings repeat: a sensor's resolution, rounding).
    codes, uniques = distinct_cells(raw)
    text = pd.Series(uniques, dtype=object).astype("string").str.strip()
    present = text.notna() & (text != "") & ~text.str.lower().isin(["na", "nan", "null", "none", "n/a", "-"])
    vals = pd.to_numeric(text.where(present), errors="coerce").astype(float)
    return (
        take(vals.to_numpy(dtype=float, na_value=np.nan), codes, np.nan),
        take(present.fillna(False).to_numpy(dtype=bool), codes, False),
    )


def as_text(value: Any, limit: int = 120) -> str | None:
    """User input as a bounded, storable text (NUL bytes shown as ``\\x00``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    return str(value).replace("\x00", "\\x00")[:limit]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a series id or variable name on every backend, or None."""
    if "\x00" in name:
        return "contains a NUL byte"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters ({len(name)})"
    return None
