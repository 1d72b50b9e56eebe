"""Modern (continuous) Hopfield network as a forecaster: an associative memory.

Training windows are stored as patterns (keys) together with the H steps that
followed them (values). For the current window the memory retrieves
``softmax(beta * K q) V`` — a blend of the futures of the stored windows most
similar to it, sharpened by the inverse temperature ``beta``. This is the analog
method of weather forecasting in neural form (Ramsauer et al., "Hopfield
Networks is All You Need"). ``beta`` and the embedding (lookback) are chosen on
the validation slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features import Design, window_ends
from pipeline.models.base import Forecaster, ModelConfig


class HopfieldConfig(ModelConfig):
    lookback: int = 24
    lookback_grid: list[int] = [12, 24, 48]
    beta: float | None = None  # None: chosen on the validation slice
    beta_grid: list[float] = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
    covariate_weight: float = 0.5  # weight of the covariates' last values in the embedding
    max_patterns: int = 30_000
    chunk: int = 1024


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


class HopfieldForecaster(Forecaster):
    kind = "hopfield"
    config_cls = HopfieldConfig
    config: HopfieldConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.keys: np.ndarray | None = None  # (N, D) unit-norm embedded windows
        self.values: np.ndarray | None = None  # (N, H) futures as change from the window's last value

    def embed(self, design: Design, ends: np.ndarray, lookback: int) -> np.ndarray:
        """Unit-norm pattern of a window: the target's recent path (level removed) plus the
        current covariates and calendar, so similar weather situations are neighbours."""
        offsets = np.arange(-lookback + 1, 1)
        idx = np.clip(ends[:, None] + offsets[None, :], 0, len(design.X) - 1)
        path = design.X[idx, 0].astype(np.float64)
        path = path - path[:, -1:]
        context = design.X[ends, 1:].astype(np.float64) * self.config.covariate_weight
        level = design.X[ends, :1].astype(np.float64)
        z = np.hstack([path / np.sqrt(lookback), level, context])
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)

    def _memory(
        self, designs: dict[str, Design], stops: dict[str, int], lookback: int
    ) -> tuple[np.ndarray, np.ndarray]:
        H = self.config.horizon
        ks, vs = [], []
        for sid, d in designs.items():
            ends = window_ends(d.y, lookback, H, stop=stops[sid])
            if len(ends):
                ks.append(self.embed(d, ends, lookback))
                vs.append(d.y[ends[:, None] + np.arange(1, H + 1)[None, :]] - d.X[ends, :1].astype(np.float64))
        if not ks:
            raise ValueError("hopfield: no complete training windows to store")
        K, V = np.concatenate(ks), np.concatenate(vs)
        if len(K) > self.config.max_patterns:
            keep = np.sort(
                np.random.default_rng(self.config.seed).choice(len(K), self.config.max_patterns, replace=False)
            )
            K, V = K[keep], V[keep]
        return K, V

    def retrieve(self, Q: np.ndarray, K: np.ndarray, V: np.ndarray, beta: float) -> np.ndarray:
        out = np.empty((len(Q), V.shape[1]))
        for i in range(0, len(Q), self.config.chunk):
            w = _softmax_rows(beta * (Q[i : i + self.config.chunk] @ K.T))
            out[i : i + self.config.chunk] = w @ V
        return out

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        cfg = self.config
        H = cfg.horizon
        lookbacks = [cfg.lookback] if cfg.beta is not None else cfg.lookback_grid
        scores: dict[str, float] = {}
        best: tuple[float, int, float] = (np.inf, cfg.lookback, cfg.beta or cfg.beta_grid[0])
        for L in lookbacks:
            K, V = self._memory(designs, {sid: val_pos[sid] - H for sid in designs}, L)
            queries, truth = [], []
            for sid, d in designs.items():
                ends = window_ends(d.y, L, H, start=val_pos[sid])
                if len(ends):
                    queries.append(self.embed(d, ends, L))
                    truth.append(d.y[ends[:, None] + np.arange(1, H + 1)[None, :]] - d.X[ends, :1].astype(np.float64))
            if not queries:
                break
            Q, Y = np.concatenate(queries), np.concatenate(truth)
            for beta in [cfg.beta] if cfg.beta is not None else cfg.beta_grid:
                err = float(np.abs(self.retrieve(Q, K, V, beta) - Y).mean())
                scores[f"L{L}_beta{beta:g}"] = err
                if err < best[0]:
                    best = (err, L, beta)
        _, L, beta = best
        self.config = self.config.model_copy(update={"lookback": L, "beta": beta})
        # The chosen memory stores training windows only; the validation slice
        # stays out-of-sample for the interval calibration.
        self.keys, self.values = self._memory(designs, {sid: val_pos[sid] - H for sid in designs}, L)
        self.fit_info = {"patterns": len(self.keys), "lookback": L, "beta": beta, "val_mae": scores}

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        assert self.keys is not None and self.values is not None and self.config.beta is not None
        Q = self.embed(design, positions, self.config.lookback)
        return self.retrieve(Q, self.keys, self.values, self.config.beta) + design.X[positions, :1].astype(np.float64)

    def _save(self, path: Path) -> None:
        assert self.keys is not None and self.values is not None
        np.savez(path / "hopfield.npz", keys=self.keys, values=self.values)

    def _load(self, path: Path) -> None:
        arrays = np.load(path / "hopfield.npz")
        self.keys, self.values = arrays["keys"], arrays["values"]
