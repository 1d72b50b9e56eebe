"""Feature preparation: regularisation now; windows, scaling and calendar features
for the forecasters build on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

GAP_COLUMN = "long_gap"


def infer_freq(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The series step: the most common spacing between consecutive timestamps."""
    idx = index.sort_values().unique()
    if len(idx) < 2:
        raise ValueError("need at least two timestamps to infer a frequency")
    diffs = pd.Series(idx[1:] - idx[:-1])
    step = diffs.mode().iloc[0]
    if step <= pd.Timedelta(0):
        raise ValueError("timestamps must increase")
    return pd.Timedelta(step)


def _run_lengths(missing: np.ndarray) -> np.ndarray:
    """For each position, the length of the run of missing values it belongs to (0 if present)."""
    out = np.zeros(len(missing), dtype=int)
    i = 0
    n = len(missing)
    while i < n:
        if missing[i]:
            j = i
            while j < n and missing[j]:
                j += 1
            out[i:j] = j - i
            i = j
        else:
            i += 1
    return out


def regularise(
    frame: pd.DataFrame,
    freq: str | pd.Timedelta | None = None,
    max_gap: int = 3,
) -> pd.DataFrame:
    """Put one series on a regular time grid.

    ``frame`` is indexed by UTC timestamps with one column per variable. Values
    are resampled to ``freq`` (inferred when None; several values in one slot are
    averaged), gaps of at most ``max_gap`` steps are filled by time interpolation,
    and longer gaps stay missing. The column ``long_gap`` marks slots whose
    variables still have missing values after filling, so no training window
    spans them.
    """
    if frame.empty:
        out = frame.copy()
        out[GAP_COLUMN] = pd.Series(dtype=bool)
        return out
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("regularise expects a DatetimeIndex")
    step = pd.Timedelta(freq) if freq is not None else infer_freq(frame.index)
    resampled = frame.sort_index().resample(step).mean()
    filled = resampled.copy()
    for col in resampled.columns:
        missing = resampled[col].isna().to_numpy()
        if not missing.any():
            continue
        runs = _run_lengths(missing)
        interp = resampled[col].interpolate(method="time", limit_area="inside")
        short = missing & (runs <= max_gap)
        filled[col] = resampled[col].where(~short, interp)
    filled[GAP_COLUMN] = filled.drop(columns=[], errors="ignore").isna().any(axis=1)
    filled.index.freq = step  # type: ignore[misc]
    return filled
