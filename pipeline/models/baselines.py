"""Baselines people would otherwise use: last value, value one season (day) ago, value one week ago."""

from __future__ import annotations

import numpy as np

from streamcast.features import Design
from streamcast.models.base import Forecaster


def _last_observed(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The most recent non-missing value at or before each position."""
    idx = np.where(~np.isnan(y), np.arange(len(y)), -1)
    last = np.maximum.accumulate(idx)[positions]
    return np.where(last >= 0, y[np.maximum(last, 0)], 0.0)


class _Baseline(Forecaster):
    """Nothing to learn: forecasts are levels read off the observed target."""

    predicts_change = False

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        self.fit_info = {"series": len(designs)}


class NaiveForecaster(_Baseline):
    """Repeats the last observed value for every step."""

    kind = "naive"

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        last = _last_observed(design.y, positions)
        return np.repeat(last[:, None], self.config.horizon, axis=1)


class SeasonalNaiveForecaster(_Baseline):
    """Step h repeats the value one season before it (``season`` steps, 24 for hourly data)."""

    kind = "seasonal_naive"

    def period(self) -> int:
        return self.config.season

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        H, m = self.config.horizon, self.period()
        h = np.arange(1, H + 1)
        # Step h looks back ceil(h/m) seasons, so for h > m the last observed season repeats.
        src = positions[:, None] + h[None, :] - m * ((h[None, :] - 1) // m + 1)
        src = np.clip(src, 0, len(design.y) - 1)
        filled = design.y.copy()
        # A missing seasonal value falls back to the last observation before it.
        if np.isnan(filled).any():
            filled = _last_observed(filled, np.arange(len(filled)))
        return filled[src]


class WeeklyNaiveForecaster(SeasonalNaiveForecaster):
    """Step h repeats the value one week before it (7 daily seasons: 168 steps for hourly
    data): the baseline to beat where people set the rhythm (load, traffic, footfall)."""

    kind = "weekly_naive"

    def period(self) -> int:
        return 7 * self.config.season
