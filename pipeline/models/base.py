"""One interface for every forecaster (darts-style template method).

The base class owns everything that must be the same for every candidate —
cutting data at the training end, covariate choice, per-series scaling fitted on
training data only, building designs, refusing to predict before ``fit``,
saving the config beside the weights — and subclasses add only what differs:
``_fit`` and ``_predict`` on scaled arrays, and ``_save``/``_load`` for weights.
Models never import MLflow, Prefect or the store.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from pipeline.features import Design, Scaler, build_design, select_covariates


class NotFittedError(RuntimeError):
    """predict() or save() was called before fit()."""


class ModelConfig(BaseModel):
    """A candidate's full configuration: logged as params, saved with the weights."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    target: str = "temp"
    horizon: int = 24
    lookback: int = 48
    season: int = 24
    use_covariates: bool = True
    seed: int = 42


class Forecaster(ABC):
    """Direct multi-horizon forecaster: all ``horizon`` steps at once from one origin."""

    kind: ClassVar[str]
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        base = config.model_dump() if config is not None else {}
        base.update(overrides)
        base["kind"] = self.kind
        self.config = self.config_cls(**base)
        self.covariates: list[str] = []
        self.scaler: Scaler | None = None
        self.freq: pd.Timedelta | None = None
        self.fit_seconds: float = 0.0
        self.fit_info: dict[str, Any] = {}

    # --- public API ---------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.scaler is not None and self._ready()

    def _ready(self) -> bool:
        """Subclasses holding weights say whether they have them."""
        return True

    def fit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Self:
        """Fit on data up to ``train_end``; ``[val_start, train_end]`` is the validation slice
        (early stopping, model selection) and is never used for gradient steps."""
        if not panel:
            raise ValueError("cannot fit on an empty panel")
        if not val_start <= train_end:
            raise ValueError("val_start must not be after train_end")
        cfg = self.config
        started = time.perf_counter()
        train = {sid: f.loc[:train_end] for sid, f in panel.items()}
        for sid, f in train.items():
            if cfg.target not in f.columns:
                raise ValueError(f"series {sid!r} has no {cfg.target!r} column")
        first = next(iter(train.values()))
        self.freq = pd.Timedelta(first.index.freq) if first.index.freq is not None else first.index[1] - first.index[0]
        self.covariates = select_covariates(train, cfg.target, train_end) if cfg.use_covariates else []
        self.scaler = Scaler.fit(train, [cfg.target, *self.covariates], train_end)
        designs = {sid: self._design(sid, f) for sid, f in train.items()}
        val_pos = {sid: int(d.index.searchsorted(val_start)) for sid, d in designs.items()}
        self._fit(designs, val_pos)
        self.fit_seconds = time.perf_counter() - started
        return self

    def predict(self, panel: dict[str, pd.DataFrame], origins: list[pd.Timestamp] | None = None) -> pd.DataFrame:
        """Forecast ``horizon`` steps after each origin, from data up to that origin only.

        Returns a long frame: series_id, origin_ts, step, ts, yhat. Without
        ``origins`` each series is forecast from its last timestamp.
        """
        if not self.fitted:
            raise NotFittedError(f"{self.kind}: call fit() before predict()")
        frames = []
        H = self.config.horizon
        for sid, frame in panel.items():
            if origins is None:
                wanted = pd.DatetimeIndex([frame.index[-1]])
            else:
                wanted = pd.DatetimeIndex(origins)
                wanted = wanted[wanted.isin(frame.index)]
            if len(wanted) == 0:
                continue
            # Cutting at the last origin makes leaks impossible, whatever _predict does.
            design = self._design(sid, frame.loc[: wanted.max()])
            positions = design.index.get_indexer(wanted)
            scaled = self._predict(design, positions)
            if scaled.shape != (len(positions), H):
                raise RuntimeError(f"{self.kind} returned shape {scaled.shape}, expected {(len(positions), H)}")
            yhat = design.unscale(scaled)
            steps = np.arange(1, H + 1)
            assert self.freq is not None
            naive_origins = wanted.tz_convert("UTC").tz_localize(None).to_numpy()
            frames.append(
                pd.DataFrame(
                    {
                        "series_id": sid,
                        "origin_ts": np.repeat(naive_origins, H),
                        "step": np.tile(steps, len(wanted)),
                        "ts": (naive_origins[:, None] + steps[None, :] * self.freq.to_timedelta64()).ravel(),
                        "yhat": yhat.ravel(),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["series_id", "origin_ts", "step", "ts", "yhat"])
        out = pd.concat(frames, ignore_index=True)
        for col in ("origin_ts", "ts"):
            out[col] = pd.DatetimeIndex(out[col]).tz_localize("UTC")
        return out

    def save(self, path: Path) -> Path:
        """Write config, feature state and weights to the folder ``path``."""
        if not self.fitted:
            raise NotFittedError(f"{self.kind}: call fit() before save()")
        assert self.scaler is not None and self.freq is not None
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "config": self.config.model_dump(),
            "covariates": self.covariates,
            "scaler": self.scaler.model_dump(),
            "freq_seconds": self.freq.total_seconds(),
            "fit_seconds": self.fit_seconds,
            "fit_info": self.fit_info,
        }
        (path / "forecaster.json").write_text(json.dumps(meta, indent=2, default=float))
        self._save(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Forecaster:
        """Rebuild any saved forecaster (the kind is read from its config)."""
        from pipeline.models import get_model_class

        meta = json.loads((path / "forecaster.json").read_text())
        klass = get_model_class(meta["config"]["kind"])
        model = klass(klass.config_cls(**meta["config"]))
        model.covariates = meta["covariates"]
        model.scaler = Scaler(**meta["scaler"])
        model.freq = pd.Timedelta(seconds=meta["freq_seconds"])
        model.fit_seconds = meta["fit_seconds"]
        model.fit_info = meta.get("fit_info", {})
        model._load(path)
        return model

    # --- hooks --------------------------------------------------------------

    def _design(self, sid: str, frame: pd.DataFrame) -> Design:
        assert self.scaler is not None
        return build_design(sid, frame, self.config.target, self.covariates, self.scaler)

    @abstractmethod
    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        """Fit on scaled designs; positions ``>= val_pos[sid]`` are the validation slice."""

    @abstractmethod
    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        """Scaled forecasts, shape (len(positions), horizon), using data up to each position."""

    def _save(self, path: Path) -> None:  # noqa: B027 - stateless models have no weights
        pass

    def _load(self, path: Path) -> None:  # noqa: B027
        pass
