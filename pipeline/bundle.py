"""The registered model: an MLflow pyfunc wrapping any streamcast forecaster.

``mlflow.pyfunc.load_model("models:/streamcast-temp@champion").predict(history)``
takes recent history in wide form (series_id, ts, one column per variable) and
returns the forecast frame: series_id, origin_ts, step, ts, yhat, lo, hi.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamcast.backtest import Calibration
from streamcast.errors import InputError
from streamcast.features import prepare_panel
from streamcast.models.base import Forecaster

# The forecast frame the pyfunc returns (and `forecast_panel` gives the store to complete).
OUTPUT_COLUMNS = ["series_id", "origin_ts", "step", "ts", "yhat", "lo", "hi"]
BACKTEST_FORECASTER = "backtest_forecaster"


def save_bundle(
    path: Path,
    model: Forecaster,
    calibration: Calibration,
    max_gap: int,
    extra: dict[str, Any],
    backtest_model: Forecaster | None = None,
) -> Path:
    """Write a forecaster with its interval calibration: the pyfunc's one artifact.

    ``backtest_model`` is the same candidate as fit before its backtest window, when
    ``model`` was refit on all the data: the champion gate re-scores that one, because
    the refit has seen a later training's backtest window."""
    model.save(path / "forecaster")
    if backtest_model is not None:
        backtest_model.save(path / BACKTEST_FORECASTER)
    meta = {
        "level": calibration.level,
        "half_width": calibration.half_width.tolist(),
        "n_calibration": calibration.n,
        "max_gap": max_gap,
        **extra,
    }
    (path / "bundle.json").write_text(json.dumps(meta, indent=2, default=str))
    return path


class ForecastBundle:
    """A loaded forecaster plus calibration: forecasts with intervals from a history frame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.model = Forecaster.load(path / "forecaster")
        self.meta = json.loads((path / "bundle.json").read_text())
        self.calibration = Calibration(
            level=self.meta["level"], half_width=np.asarray(self.meta["half_width"]), n=self.meta["n_calibration"]
        )

    @property
    def backtest_model(self) -> Forecaster:
        """The forecaster as fit before its own backtest window (the registered one when it
        was not refit): what may be scored on a later window without having seen it."""
        path = self.path / BACKTEST_FORECASTER
        return Forecaster.load(path) if path.exists() else self.model

    def forecast_panel(
        self,
        panel: dict[str, pd.DataFrame],
        origins: list[pd.Timestamp] | None = None,
        calibration: Calibration | None = None,
    ) -> pd.DataFrame:
        """Forecasts with intervals from ``calibration`` (default: the validation slice's)."""
        fc = self.model.predict(panel, origins)
        return (calibration or self.calibration).apply(fc)[OUTPUT_COLUMNS]

    def forecast_history(self, history: pd.DataFrame) -> pd.DataFrame:
        return self.forecast_panel(history_to_panel(history, self.meta["max_gap"]))


def history_to_panel(history: pd.DataFrame, max_gap: int = 3) -> dict[str, pd.DataFrame]:
    """Accept wide history (series_id, ts, variables...) or long (series_id, variable, ts, value)."""
    frame = history.copy()
    if "series_id" not in frame.columns:
        frame["series_id"] = "default"
    if "ts" not in frame.columns:
        raise InputError("history needs a 'ts' column")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if {"variable", "value"} <= set(frame.columns):
        frame = frame.pivot_table(index=["series_id", "ts"], columns="variable", values="value", aggfunc="last")
        frame.columns.name = None
    else:
        frame = frame.set_index(["series_id", "ts"]).sort_index()
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return prepare_panel(frame, max_gap=max_gap)


def _pyfunc_base() -> type:
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class StreamcastPyfunc(_pyfunc_base()):  # type: ignore[misc]
    """MLflow pyfunc flavour of a forecast bundle."""

    def load_context(self, context: Any) -> None:
        self.bundle = ForecastBundle(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        out = self.bundle.forecast_history(pd.DataFrame(model_input))
        # JSON-friendly timestamps for /invocations; the frame keeps its order.
        for col in ("origin_ts", "ts"):
            out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out.reset_index(drop=True)
