"""The statistical models people would otherwise use, in the same race as the networks:
statsforecast's AutoETS, AutoTheta and MSTL.

They are local models: each series gets its own, fitted once on the training period
before the validation slice (the last ``fit_window`` steps of it). At every origin the
fitted model is applied to the window ending there with statsforecast's ``forward``,
which filters the new data with the parameters already estimated instead of searching
for them again: the refit per origin costs a filter pass, not a model search. They
forecast in the series' own units (multiplicative seasonality needs them), so the
scaled design is unscaled on the way in and scaled again on the way out.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from streamcast.features import Design, OnlineDesign
from streamcast.models.base import Forecaster, ModelConfig
from streamcast.models.streams import SeriesStream, WindowStream

log = logging.getLogger(__name__)

# What statsforecast raises when a window cannot carry a model (too short, constant, ...).
_MODEL_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError, IndexError)


class StatisticalConfig(ModelConfig):
    use_covariates: bool = False  # univariate models: covariates are not read
    fit_window: int = Field(0, ge=0, description="steps each fit and forecast sees; 0: four weeks (28 seasons)")


class StatisticalForecaster(Forecaster):
    """One statsforecast model per series, estimated once and applied at every origin."""

    config_cls: ClassVar[type[ModelConfig]] = StatisticalConfig
    config: StatisticalConfig
    predicts_change = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.local: dict[str, Any] = {}  # series id -> fitted statsforecast model
        self.fallbacks = 0  # forecasts where the model could not run and the last value stood in

    @classmethod
    def prepare_runtime(cls) -> None:
        import statsforecast.models  # noqa: F401 - heavy import, not billed to a fit

    @property
    def window(self) -> int:
        return self.config.fit_window or 28 * self.config.season

    @property
    def validation_stride(self) -> int:
        # One forecast per season inside the validation slice: MSTL decomposes its window
        # at every origin, so hourly origins would cost minutes per series.
        return self.config.season

    def _ready(self) -> bool:
        return bool(self.local)

    @abstractmethod
    def _model(self, n: int) -> Any:
        """A fresh statsforecast model for a window of ``n`` observations."""

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        for sid, design in designs.items():
            y = _observed_tail(_levels(design)[: val_pos[sid]], self.window)
            self.local[sid] = self._estimate(y)
        self.fit_info = {"series": len(self.local), "window": self.window}

    def _estimate(self, y: np.ndarray) -> Any:
        if len(y) < 3:
            return None
        model = self._model(len(y))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model.fit(y)
        except _MODEL_ERRORS as exc:
            log.warning("%s: cannot fit %d observations (%s); the last value stands in", self.kind, len(y), exc)
            return None

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        H = self.config.horizon
        levels = _levels(design)
        if design.series_id not in self.local:  # a series not seen in training: estimate on what precedes
            self.local[design.series_id] = self._estimate(
                _observed_tail(levels[: int(positions.min()) + 1], self.window)
            )
        model = self.local[design.series_id]
        out = np.empty((len(positions), H))
        for i, pos in enumerate(positions):
            y = _observed_tail(levels[: pos + 1], self.window)
            out[i] = self._forward(model, y, H)
        return (out - design.target_mean) / design.target_std

    def _forward(self, model: Any, y: np.ndarray, H: int) -> np.ndarray:
        last = y[-1] if len(y) else np.nan
        if model is not None and len(y) >= 3:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mean = np.asarray(model.forward(y=y, h=H)["mean"], dtype=np.float64)
                if np.all(np.isfinite(mean)):
                    return mean
            except _MODEL_ERRORS:
                pass
        self.fallbacks += 1
        return np.full(H, last)

    def _stream(self, design: Design, online: OnlineDesign) -> SeriesStream:
        return WindowStream(self, design, online, self.window)

    def _save(self, path: Path) -> None:
        # statsforecast models are plain Python objects; pickle is how statsforecast saves them.
        (path / "local_models.pkl").write_bytes(pickle.dumps(self.local))

    def _load(self, path: Path) -> None:
        self.local = pickle.loads((path / "local_models.pkl").read_bytes())


class ETSForecaster(StatisticalForecaster):
    """statsforecast AutoETS (error, trend and season chosen by AICc) with the daily season."""

    kind = "ets"

    def _model(self, n: int) -> Any:
        from statsforecast.models import AutoETS

        return AutoETS(season_length=self.config.season if n >= 2 * self.config.season else 1)


class ThetaForecaster(StatisticalForecaster):
    """statsforecast AutoTheta (standard, optimised or dynamic theta, chosen by MSE)."""

    kind = "theta"

    def _model(self, n: int) -> Any:
        from statsforecast.models import AutoTheta

        return AutoTheta(season_length=self.config.season if n >= 2 * self.config.season else 1)


class MSTLForecaster(StatisticalForecaster):
    """statsforecast MSTL: daily and weekly seasons (24 and 168 for hourly data) removed by
    LOESS, the rest forecast by AutoETS, the seasons by their last cycle."""

    kind = "mstl"

    def seasons(self, n: int) -> list[int]:
        """The seasons a window of ``n`` steps holds at least twice."""
        return [m for m in (self.config.season, 7 * self.config.season) if n >= 2 * m + 1]

    def _model(self, n: int) -> Any:
        from statsforecast.models import MSTL, AutoETS

        seasons = self.seasons(n)
        if not seasons:
            return AutoETS(model="ZZN")
        return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))


def _levels(design: Design) -> np.ndarray:
    """The target in its own units (NaN where it was not observed)."""
    return design.y.astype(np.float64) * design.target_std + design.target_mean


def _observed_tail(y: np.ndarray, window: int) -> np.ndarray:
    """The last ``window`` steps from the first observed value on, gaps carried forward
    (statsforecast models take no missing values)."""
    y = y[-window:]
    observed = np.flatnonzero(~np.isnan(y))
    if len(observed) == 0:
        return y[:0]
    y = y[observed[0] :]
    idx = np.where(np.isnan(y), 0, np.arange(len(y)))
    return y[np.maximum.accumulate(idx)]
