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
from typing import ClassVar

import numpy as np

from streamcast.errors import InputError
from streamcast.features import Design
from streamcast.models.base import Forecaster, ModelConfig, window_stride
from streamcast.models.search import Choice, FloatRange, SearchSpace


class HopfieldConfig(ModelConfig):
    search_space: ClassVar[SearchSpace] = {
        "lookback": Choice((12, 24, 48)),
        "beta": FloatRange(1.0, 150.0, log=True),
        "covariate_weight": FloatRange(0.0, 2.0),
    }

    lookback: int = 24
    lookback_grid: list[int] = [12, 24, 48]
    beta: float | None = None  # None: chosen on the validation slice
    beta_grid: list[float] = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
    covariate_weight: float = 0.5  # weight of the covariates' last values in the embedding
    max_patterns: int = 30_000
    # Validation windows of all series together that choose beta and the lookback, at most
    # about (None: every one): every k-th of each series. Each is compared with every stored
    # pattern for every grid point: 1,000 series have about 700,000 (uncapped, the fit had
    # not ended after ten minutes); 10,000 take under a minute.
    max_val_windows: int | None = 10_000
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
    # set by fit or load
    keys: np.ndarray | None = None  # (N, D) unit-norm embedded windows
    values: np.ndarray | None = None  # (N, H) futures as change from the window's last value

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

    def _windows(
        self, designs: dict[str, Design], val_pos: dict[str, int], lookback: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Embedded windows and their futures: "train" ones are the memory (at most
        ``max_patterns``, sampled with the seed), "val" ones choose ``beta`` and the lookback."""
        parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"train": ([], []), "val": ([], [])}
        split = {sid: self.split_ends(d, val_pos[sid], lookback) for sid, d in designs.items()}
        val_stride = window_stride(
            sum(len(v) for _, v in split.values()), self.config.max_val_windows, self.config.season
        )
        for sid, d in designs.items():
            train, val = split[sid]
            for (ks, vs), ends in zip(parts.values(), (train, val[::val_stride]), strict=True):
                if len(ends):
                    ks.append(self.embed(d, ends, lookback))
                    vs.append(self.targets(d, ends))
        if not parts["train"][0]:
            raise InputError("hopfield: no complete training windows to store")
        out = {name: (np.concatenate(ks), np.concatenate(vs)) for name, (ks, vs) in parts.items() if ks}
        K, V = out["train"]
        if len(K) > self.config.max_patterns:
            keep = np.sort(
                np.random.default_rng(self.config.seed).choice(len(K), self.config.max_patterns, replace=False)
            )
            out["train"] = K[keep], V[keep]
        return out

    def retrieve(self, Q: np.ndarray, K: np.ndarray, V: np.ndarray, beta: float) -> np.ndarray:
        return self.retrieve_each(Q, K, V, [beta])[0]

    def retrieve_each(self, Q: np.ndarray, K: np.ndarray, V: np.ndarray, betas: list[float]) -> list[np.ndarray]:
        """What the memory ``(K, V)`` returns for the queries ``Q`` at each of ``betas``: the
        similarities are computed once for all of them."""
        out = [np.empty((len(Q), V.shape[1])) for _ in betas]
        for i in range(0, len(Q), self.config.chunk):
            similarity = Q[i : i + self.config.chunk] @ K.T
            for beta, o in zip(betas, out, strict=True):
                o[i : i + self.config.chunk] = _softmax_rows(beta * similarity) @ V
        return out

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        cfg = self.config
        lookbacks = [cfg.lookback] if cfg.beta is not None else cfg.lookback_grid
        scores: dict[str, float] = {}
        val_windows = 0
        best: tuple[float, int, float] = (np.inf, cfg.lookback, cfg.beta or cfg.beta_grid[0])
        for L in lookbacks:
            windows = self._windows(designs, val_pos, L)
            if "val" not in windows:
                break
            (K, V), (Q, Y) = windows["train"], windows["val"]
            val_windows = len(Q)
            betas = [cfg.beta] if cfg.beta is not None else cfg.beta_grid
            for beta, retrieved in zip(betas, self.retrieve_each(Q, K, V, betas), strict=True):
                err = float(np.abs(retrieved - Y).mean())
                scores[f"L{L}_beta{beta:g}"] = err
                if err < best[0]:
                    best = (err, L, beta)
        _, L, beta = best
        self.config = self.config.model_copy(update={"lookback": L, "beta": beta})
        # The chosen memory stores training windows only; the validation slice
        # stays out-of-sample for the interval calibration.
        self.keys, self.values = self._windows(designs, val_pos, L)["train"]
        self.fit_info = {
            "patterns": len(self.keys),
            "lookback": L,
            "beta": beta,
            "val_mae": scores,
            "validation_windows": val_windows,
        }

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        assert self.keys is not None and self.values is not None and self.config.beta is not None
        return self.retrieve(
            self.embed(design, positions, self.config.lookback), self.keys, self.values, self.config.beta
        )

    def _save(self, path: Path) -> None:
        assert self.keys is not None and self.values is not None
        np.savez(path / "hopfield.npz", keys=self.keys, values=self.values)

    def _load(self, path: Path) -> None:
        arrays = np.load(path / "hopfield.npz")
        self.keys, self.values = arrays["keys"], arrays["values"]
