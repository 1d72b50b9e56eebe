"""Forecast accuracy: MAE, RMSE, sMAPE and MASE, and joining forecasts to what happened."""

from __future__ import annotations

import numpy as np
import pandas as pd


def seasonal_naive_scale(y: pd.Series | np.ndarray, season: int) -> float:
    """MASE denominator: in-sample MAE of the seasonal naive forecast on training data."""
    arr = np.asarray(y, dtype=float)
    if len(arr) <= season:
        return float("nan")
    err = np.abs(arr[season:] - arr[:-season])
    err = err[~np.isnan(err)]
    return float(err.mean()) if len(err) else float("nan")


def mase_scale(y: pd.Series | np.ndarray, season: int) -> tuple[float, str]:
    """The MASE denominator of one series and its basis: the seasonal naive forecast's
    in-sample MAE; where that is zero or undefined (a constant or too short series) the
    naive forecast's; else 1, so that MASE is the MAE in the series' own units."""
    for basis, lag in (("seasonal_naive", season), ("naive", 1)):
        scale = seasonal_naive_scale(y, lag)
        if np.isfinite(scale) and scale > 0:
            return scale, basis
    return 1.0, "unit"


def series_spread(panel: dict[str, pd.DataFrame], target: str, end: pd.Timestamp) -> dict[str, float]:
    """Each series' standard deviation of ``target`` up to ``end``: the unit in which model
    choices compare errors, so that no series dominates."""
    return {sid: float(np.nanstd(f[target].loc[:end])) for sid, f in panel.items()}


def with_actuals(forecasts: pd.DataFrame, panel: dict[str, pd.DataFrame], target: str) -> pd.DataFrame:
    """``forecasts`` (series_id, ts, ...) with the column ``actual``: the observed target at
    each point's time, NaN where it was not observed."""
    truth = pd.concat({sid: f[target] for sid, f in panel.items()}).rename("actual")
    truth.index.names = ["series_id", "ts"]
    return forecasts.join(truth, on=["series_id", "ts"])


def smape(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Symmetric MAPE per point, in percent (0 when both are 0)."""
    denom = np.abs(actual) + np.abs(forecast)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom == 0, 0.0, 200.0 * np.abs(actual - forecast) / denom)
    return out


def point_errors(actual: np.ndarray, yhat: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Per point: absolute, squared and symmetric-percentage error, and the absolute
    error in units of the series' MASE scale (NaN where there is no usable scale)."""
    abs_error = np.abs(yhat - actual)
    usable = np.isfinite(scale) & (scale > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(usable, abs_error / np.where(usable, scale, 1.0), np.nan)
    return {"abs_error": abs_error, "sq_error": abs_error**2, "smape": smape(actual, yhat), "scaled_error": scaled}


def score_points(points: pd.DataFrame, scales: dict[str, float]) -> pd.DataFrame:
    """Add error columns to a frame with series_id, yhat and actual (NaN actuals dropped)."""
    out = points.dropna(subset=["actual"]).copy()
    scale = out["series_id"].map(scales).to_numpy(dtype=float)
    for name, values in point_errors(out["actual"].to_numpy(), out["yhat"].to_numpy(), scale).items():
        out[name] = values
    return out


def aggregate(scored: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """MAE, RMSE, sMAPE and MASE grouped by ``by``."""
    g = scored.groupby(by, sort=True)
    res = pd.DataFrame(
        {
            "mae": g["abs_error"].mean(),
            "rmse": np.sqrt(g["sq_error"].mean()),
            "smape": g["smape"].mean(),
            "mase": g["scaled_error"].mean(),
            "n": g.size(),
        }
    )
    return res.reset_index()


def coverage(points: pd.DataFrame, by: list[str]) -> pd.Series:
    """Share of actuals inside [lo, hi], per group of ``by``."""
    inside = (points["actual"] >= points["lo"]) & (points["actual"] <= points["hi"])
    return inside.groupby([points[k] for k in by]).mean()
