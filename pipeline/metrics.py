"""Forecast accuracy metrics: MAE, RMSE, sMAPE and MASE."""

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


def smape(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Symmetric MAPE per point, in percent (0 when both are 0)."""
    denom = np.abs(actual) + np.abs(forecast)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom == 0, 0.0, 200.0 * np.abs(actual - forecast) / denom)
    return out


def score_points(points: pd.DataFrame, scales: dict[str, float]) -> pd.DataFrame:
    """Add error columns to a frame with series_id, yhat and actual (NaN actuals dropped)."""
    out = points.dropna(subset=["actual"]).copy()
    err = out["yhat"].to_numpy() - out["actual"].to_numpy()
    out["abs_error"] = np.abs(err)
    out["sq_error"] = err**2
    out["smape"] = smape(out["actual"].to_numpy(), out["yhat"].to_numpy())
    out["scaled_error"] = out["abs_error"] / out["series_id"].map(scales).astype(float)
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
