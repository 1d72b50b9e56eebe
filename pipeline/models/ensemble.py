"""A weighted combination of other candidates, chosen on the validation slice only.

Members and weights are chosen on the members' forecasts issued inside the validation
slice, scored as mean absolute error over targets that all lie before the training end:
the backtest origins never influence them. By default (``weighting="competitive"``) the
members whose validation error is within ``margin`` of the best member's are averaged
with equal weights, the forecast combination that holds up out of sample (weights
estimated on a few weeks of validation fit its noise: Smith and Wallis, "A Simple
Explanation of the Forecast Combination Puzzle", 2009). Where that average is worse on
validation than the best member alone (their errors do not cancel), and with
``weighting="forward"``, the weights come from greedy forward selection with replacement
(Caruana et al., "Ensemble Selection from Libraries of Models", 2004). Either way the
ensemble is never worse on validation than its best member.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field

from streamcast.features import Design
from streamcast.metrics import series_spread, with_actuals
from streamcast.models import ensemble_members
from streamcast.models.base import Forecaster, ModelConfig
from streamcast.models.streams import SeriesStream


class EnsembleConfig(ModelConfig):
    members: list[str] = Field(default_factory=ensemble_members)
    # "competitive": equal weights over the members within ``margin`` of the best member's
    # validation error, unless their average is worse there than the best member alone (then
    # "forward"); "forward": greedy forward selection (``rounds`` steps). The ensemble's
    # backtest MASE on the bench datasets through the CLI (bench/accuracy.py), forward ->
    # competitive: NYC 0.771 -> 0.732, tmy-weather 1.158 -> 1.140, taylor-demand 0.137 ->
    # 0.134 (mstl alone); city-temperatures falls back to forward (0.546 both).
    weighting: Literal["competitive", "forward"] = "competitive"
    margin: float = Field(0.10, ge=0.0)  # "competitive": within this share of the best error
    rounds: int = 25  # "forward": greedy selection steps; weights are multiples of 1/(rounds kept)
    # Steps between the origins the weights are chosen at, back from the training end: the
    # backtest's step, so that they are chosen on forecasts issued at the times of day the
    # candidates are scored at (and a daily deployment issues them); 0: the horizon.
    origin_step: int = Field(0, ge=0)
    member_overrides: dict[str, dict[str, Any]] = {}


def competitive_weights(val: dict[str, np.ndarray], truth: np.ndarray, margin: float) -> dict[str, float] | None:
    """Equal weights over the members whose mean absolute error on the validation forecasts
    is within ``margin`` (a share) of the best member's (the best alone when no other is).
    None where their average is worse on validation than the best member alone: their
    errors do not cancel (the caller then selects weights another way)."""
    err = {n: mae(v, truth) for n, v in val.items()}
    usable = sorted((n for n in err if np.isfinite(err[n])), key=lambda n: (err[n], n))
    if not usable:
        return {sorted(val)[0]: 1.0}
    best = err[usable[0]]
    chosen = [n for n in usable if err[n] <= (1.0 + margin) * best + 1e-12]
    if len(chosen) > 1 and mae(np.mean([val[n] for n in chosen], axis=0), truth) > best + 1e-12:
        return None
    return {n: 1.0 / len(chosen) for n in chosen}


def mae(forecast: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over the points with both (inf: none)."""
    err = np.abs(forecast - truth)
    ok = np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else np.inf


def validation_origin_stride(step: int, sparsest: int, week: int) -> int:
    """Steps between the ensemble's validation origins: a multiple of ``step`` (the times of
    day the backtest's origins fall at) no denser than ``sparsest`` (the member that allows
    the fewest origins), bumped until it shares no more of a week with ``week`` than
    ``step`` does (origins 7 days apart would all fall on one weekday)."""
    stride = step * -(-sparsest // step)
    while math.gcd(stride, week) != math.gcd(step, week):
        stride += step
    return stride


def select_weights(val: dict[str, np.ndarray], truth: np.ndarray, rounds: int) -> dict[str, float]:
    """Greedy forward selection with replacement minimising MAE on the validation forecasts.

    The first pick is the best single member and the blend kept is the best of all
    rounds, so the ensemble is never worse on validation than its best member."""
    names = sorted(val)
    counts = dict.fromkeys(names, 0)
    current = np.zeros_like(truth)
    kept, kept_err = dict(counts), np.inf
    for k in range(1, rounds + 1):
        best_name, best_err = names[0], np.inf
        for name in names:
            trial = (current * (k - 1) + val[name]) / k
            err = mae(trial, truth)
            if err < best_err - 1e-12:
                best_name, best_err = name, err
        counts[best_name] += 1
        current = (current * (k - 1) + val[best_name]) / k
        if best_err < kept_err - 1e-12:
            kept, kept_err = dict(counts), best_err
    total = sum(kept.values())
    return {n: c / total for n, c in kept.items() if c > 0}


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

    @property
    def history_steps(self) -> int:
        return max((m.history_steps for m in self.members.values()), default=super().history_steps)

    @property
    def member_names(self) -> list[str]:
        return [m for m in self.config.members if m != self.kind]

    def attach(self, fitted: Mapping[str, Forecaster]) -> Self:
        """Reuse candidates already fitted on the same data (the backtest fits each once)."""
        self._attached = {n: m for n, m in fitted.items() if n in self.member_names and m.fitted}
        return self

    def fit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Self:
        members = {name: self._member(name, panel, train_end, val_start) for name in self.member_names}
        # Every member forecasts at the same validation origins, every ``origin_step`` back from
        # the training end (the times of day the backtest's origins fall at), or a multiple of
        # it where a member allows no more (a large panel's cap on its validation origins).
        stride = validation_origin_stride(
            self.config.origin_step or self.config.horizon,
            max(m.validation_stride_for(panel, val_start, train_end) for m in members.values()),
            7 * self.config.season,
        )
        keys = ["series_id", "origin_ts", "step"]
        val = {
            name: m.validation_forecasts(panel, val_start, train_end, stride, aligned=True).sort_values(
                keys, ignore_index=True
            )
            for name, m in members.items()
        }
        target = self.config.target
        base = with_actuals(next(iter(val.values()))[["series_id", "ts"]], panel, target)
        # Errors are compared in each series' own units scaled by its spread, so no
        # station dominates the choice.
        spread = base["series_id"].map(series_spread(panel, target, train_end)).to_numpy()
        truth = base["actual"].to_numpy()
        scaled = {n: v["yhat"].to_numpy() / spread for n, v in val.items()}
        weighting = self.config.weighting
        weights = None
        if weighting == "competitive":
            weights = competitive_weights(scaled, truth / spread, self.config.margin)
        if weights is None:  # asked for, or the competitive members' average was worse than the best of them
            weighting = "forward"
            weights = select_weights(scaled, truth / spread, self.config.rounds)
        self.weights = weights
        self._adopt({n: members[n] for n in self.weights})
        self.fit_seconds = sum(m.fit_seconds for m in members.values())
        self.fit_info = {
            "weights": self.weights,
            "weighting": weighting,
            "validation_mae": {n: mae(v, truth / spread) for n, v in sorted(scaled.items())},
            "validation_points": int(np.isfinite(truth).sum()),
            "origin_stride": stride,
        }
        return self

    def refit(
        self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp
    ) -> EnsembleForecaster:
        """Refit the weighted members on data up to ``train_end``; the weights stay the ones
        chosen on the backtest's validation slice (choosing them again would need every
        candidate refit)."""
        self._check_fitted("refit")
        out = type(self)(self.config)
        out.weights = dict(self.weights)
        out._adopt({n: m.refit(panel, train_end, val_start) for n, m in self.members.items()})
        out.fit_seconds = sum(m.fit_seconds for m in out.members.values())
        out.fit_info = {**self.fit_info, "weights_from": "backtest validation slice"}
        return out

    @classmethod
    def of(cls, members: dict[str, Forecaster], weights: dict[str, float]) -> EnsembleForecaster:
        """Fitted ``members`` combined with ``weights``: the config (target, horizon, season,
        seed, calendar) is the first member's."""
        first = next(iter(members.values()))
        shared = {k: v for k, v in first.config.model_dump().items() if k in EnsembleConfig.model_fields}
        out = cls(EnsembleConfig(**{**shared, "kind": cls.kind, "members": list(members)}))
        out.weights = dict(weights)
        out._adopt(members)
        out.fit_seconds = sum(m.fit_seconds for m in members.values())
        out.fit_info = {"weights": out.weights}
        return out

    def _adopt(self, members: dict[str, Forecaster]) -> None:
        """Take ``members``; the shared state the base class keeps (scaler, freq,
        covariates) comes from the first of them."""
        self.members = members
        first = next(iter(members.values()))
        self.scaler, self.freq, self.covariates = first.scaler, first.freq, first.covariates

    def _member(
        self, name: str, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp
    ) -> Forecaster:
        if name in self._attached:
            return self._attached[name]
        from streamcast.models import create_model

        cfg = self.config
        overrides = {
            "horizon": cfg.horizon,
            "seed": cfg.seed,
            "target": cfg.target,
            **cfg.member_overrides.get(name, {}),
        }
        return create_model(name, **overrides).fit(panel, train_end, val_start)

    @property
    def validation_stride(self) -> int:
        return max((m.validation_stride for m in self.members.values()), default=1)

    def predict(self, panel: dict[str, pd.DataFrame], origins: list[pd.Timestamp] | None = None) -> pd.DataFrame:
        self._check_fitted("predict")
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

    def stream(self, series_id: str, frame: pd.DataFrame) -> SeriesStream:
        return self.streams({series_id: frame})[series_id]

    def streams(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, SeriesStream]:
        """Each member warms every series at once (its own :meth:`Forecaster.streams`)."""
        self._check_fitted("stream")
        by_member = {n: m.streams(frames) for n, m in self.members.items()}
        return {sid: EnsembleStream({n: s[sid] for n, s in by_member.items()}, self.weights) for sid in frames}

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


class EnsembleStream(SeriesStream):
    """The members' streams, each fed every observation; forecasts are their weighted sum."""

    def __init__(self, members: dict[str, SeriesStream], weights: dict[str, float]) -> None:
        self.members, self.weights = members, weights

    def advance(self, ts: pd.Timestamp, values: Mapping[str, float]) -> None:
        for s in self.members.values():
            s.advance(ts, values)

    def forecast(self) -> np.ndarray | None:
        return self._combine({name: s.forecast() for name, s in self.members.items()})

    def _combine(self, forecasts: Mapping[str, np.ndarray | None]) -> np.ndarray | None:
        out: np.ndarray | None = None
        for name, w in self.weights.items():
            fc = forecasts[name]
            if fc is None:
                return None
            out = w * fc if out is None else out + w * fc
        return out

    @classmethod
    def advance_all(
        cls, streams: Sequence[EnsembleStream], ts: pd.Timestamp, values: Sequence[Mapping[str, float]]
    ) -> None:
        """Each member's streams of all series advance together (the member's own batching)."""
        for name in streams[0].members if streams else []:
            members = [s.members[name] for s in streams]
            type(members[0]).advance_all(members, ts, values)

    @classmethod
    def forecast_all(cls, streams: Sequence[EnsembleStream]) -> list[np.ndarray | None]:
        if not streams:
            return []
        by_member = {}
        for name in streams[0].members:
            members = [s.members[name] for s in streams]
            by_member[name] = type(members[0]).forecast_all(members)
        return [s._combine({n: f[k] for n, f in by_member.items()}) for k, s in enumerate(streams)]
