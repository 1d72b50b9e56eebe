"""A weighted combination of other candidates, chosen on the validation slice only.

Weights come from greedy forward selection with replacement (Caruana et al.,
"Ensemble Selection from Libraries of Models", 2004) on the members' forecasts
issued inside the validation slice, scored as mean absolute error over targets
that all lie before the training end: the backtest origins never influence them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from pipeline.features import Design
from pipeline.models.base import Forecaster, ModelConfig


class EnsembleConfig(ModelConfig):
    members: list[str] = ["esn", "hopfield", "rnn", "lstm", "cnn", "cnn_lstm", "naive", "seasonal_naive"]
    rounds: int = 25  # greedy selection steps; weights are multiples of 1/rounds
    member_overrides: dict[str, dict[str, Any]] = {}


def validation_forecasts(
    model: Forecaster, panel: dict[str, pd.DataFrame], val_start: pd.Timestamp, train_end: pd.Timestamp
) -> pd.DataFrame:
    """Forecasts at every origin in the validation slice whose H targets end by ``train_end``."""
    first = next(iter(panel.values()))
    freq = pd.Timedelta(first.index.freq) if first.index.freq is not None else first.index[1] - first.index[0]
    origins = list(pd.date_range(val_start, train_end - model.config.horizon * freq, freq=freq))
    cut = {sid: f.loc[:train_end] for sid, f in panel.items()}
    return model.predict(cut, origins)


def select_weights(val: dict[str, np.ndarray], truth: np.ndarray, rounds: int) -> dict[str, float]:
    """Greedy forward selection with replacement minimising MAE on the validation forecasts."""
    names = sorted(val)
    counts = dict.fromkeys(names, 0)
    current = np.zeros_like(truth)
    for k in range(1, rounds + 1):
        best_name, best_err = names[0], np.inf
        for name in names:
            trial = (current * (k - 1) + val[name]) / k
            err = float(np.nanmean(np.abs(trial - truth)))
            if err < best_err - 1e-12:
                best_name, best_err = name, err
        counts[best_name] += 1
        current = (current * (k - 1) + val[best_name]) / k
    return {n: c / rounds for n, c in counts.items() if c > 0}


class EnsembleForecaster(Forecaster):
    kind = "ensemble"
    config_cls = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.members: dict[str, Forecaster] = {}
        self.weights: dict[str, float] = {}
        self._attached: dict[str, Forecaster] = {}

    def _ready(self) -> bool:
        return bool(self.members)

    def attach(self, fitted: dict[str, Forecaster]) -> Self:
        """Reuse candidates already fitted on the same data (the backtest fits each once)."""
        self._attached = {n: m for n, m in fitted.items() if n in self.config.members and m.fitted}
        return self

    def fit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Self:
        from pipeline.models import create_model

        cfg = self.config
        members: dict[str, Forecaster] = {}
        for name in cfg.members:
            if name == self.kind:
                continue
            if name in self._attached:
                members[name] = self._attached[name]
            else:
                overrides = {
                    "horizon": cfg.horizon,
                    "seed": cfg.seed,
                    "target": cfg.target,
                    **cfg.member_overrides.get(name, {}),
                }
                members[name] = create_model(name, **overrides).fit(panel, train_end, val_start)
        val = {name: validation_forecasts(m, panel, val_start, train_end) for name, m in members.items()}
        truth_series = pd.concat({sid: f[cfg.target] for sid, f in panel.items()}).rename("actual")
        truth_series.index.names = ["series_id", "ts"]
        base = next(iter(val.values()))[["series_id", "ts"]]
        truth = base.join(truth_series, on=["series_id", "ts"])["actual"].to_numpy()
        # Errors are compared in each series' own units scaled by its spread, so no
        # station dominates the choice.
        spread = base["series_id"].map(lambda s: float(np.nanstd(panel[s][cfg.target].loc[:train_end]))).to_numpy()
        scaled = {n: v["yhat"].to_numpy() / spread for n, v in val.items()}
        self.weights = select_weights(scaled, truth / spread, cfg.rounds)
        self.members = {n: members[n] for n in self.weights}
        # Shared state the base class keeps (scaler, freq) comes from the first member.
        first = next(iter(self.members.values()))
        self.scaler, self.freq, self.covariates = first.scaler, first.freq, first.covariates
        self.fit_seconds = sum(m.fit_seconds for m in members.values())
        self.fit_info = {"weights": self.weights, "validation_points": int(np.isfinite(truth).sum())}
        return self

    def predict(self, panel: dict[str, pd.DataFrame], origins: list[pd.Timestamp] | None = None) -> pd.DataFrame:
        if not self.members:
            from pipeline.models.base import NotFittedError

            raise NotFittedError("ensemble: call fit() before predict()")
        out: pd.DataFrame | None = None
        for name, w in self.weights.items():
            fc = self.members[name].predict(panel, origins)
            if out is None:
                out = fc.copy()
                out["yhat"] = w * fc["yhat"].to_numpy()
            else:
                out["yhat"] += w * fc["yhat"].to_numpy()
        assert out is not None
        return out

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:  # pragma: no cover - fit overridden
        raise NotImplementedError

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _save(self, path: Path) -> None:
        for name, m in self.members.items():
            m.save(path / "members" / name)
        (path / "weights.json").write_text(json.dumps(self.weights, indent=2))

    def _load(self, path: Path) -> None:
        self.weights = json.loads((path / "weights.json").read_text())
        self.members = {name: Forecaster.load(path / "members" / name) for name in self.weights}
