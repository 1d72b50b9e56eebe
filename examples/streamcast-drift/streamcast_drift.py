"""The random walk with drift (Hyndman & Athanasopoulos, FPP3 5.2) as a streamcast candidate.

A plug-in is one :class:`~streamcast.models.Forecaster` subclass named by an entry point
in the ``streamcast.models`` group. The base class cuts data at each origin, scales each
series, builds the design (target first, then covariates and calendar) and, because
``predicts_change`` is true, adds the last observed value back to what ``_predict``
returns; saving, loading, streaming and the MLflow pyfunc come with it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from streamcast.features import Design
from streamcast.models import Forecaster, ModelConfig


class DriftConfig(ModelConfig):
    # Every field is logged as an MLflow param and saved with the model.
    window: int = Field(168, ge=1, description="steps over which the drift (mean change per step) is measured")


class DriftForecaster(Forecaster):
    """Step h is the last value plus h times the mean change over the last ``window`` steps."""

    kind = "drift"  # the entry point's name
    config_cls = DriftConfig
    config: DriftConfig

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        self.fit_info = {"series": len(designs)}  # nothing to learn: the drift is read at each origin

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        last = design.X[:, 0]  # the scaled target, forward-filled over gaps
        start = np.maximum(positions - self.config.window, 0)
        span = np.maximum(positions - start, 1)
        slope = (last[positions] - last[start]) / span
        steps = np.arange(1, self.config.horizon + 1)
        return slope[:, None] * steps[None, :]  # change from the last value
