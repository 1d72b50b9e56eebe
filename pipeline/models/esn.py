"""Echo state network: a reservoirpy Reservoir driven by the inputs, and a Ridge
readout mapping the reservoir state (plus the current inputs and recent target
values) to all H steps.

Only the readout is trained, in closed form, which makes fitting orders of
magnitude faster than backpropagation. The reservoir state can be advanced one
observation at a time (:class:`ESNStream`) and gives exactly the forecast of a
run over the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from streamcast.errors import InputError
from streamcast.features import Design, OnlineDesign
from streamcast.models.base import Forecaster, ModelConfig
from streamcast.models.search import FloatRange, IntRange, SearchSpace
from streamcast.models.streams import DesignStream


class ESNConfig(ModelConfig):
    search_space: ClassVar[SearchSpace] = {
        "units": IntRange(100, 800, log=True),
        "spectral_radius": FloatRange(0.4, 1.3),
        "leak_rate": FloatRange(0.05, 1.0, log=True),
        "input_scaling": FloatRange(0.05, 2.0, log=True),
        "ridge": FloatRange(1e-2, 1e4, log=True),
    }

    lookback: int = 24  # recent target values given to the readout
    units: int = 400
    spectral_radius: float = 0.9
    leak_rate: float = 0.3
    input_scaling: float = 0.5
    input_connectivity: float = 0.2
    rc_connectivity: float = 0.1
    ridge: float | None = None  # None: chosen on the validation slice from ridge_grid
    ridge_grid: list[float] = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]
    warmup: int = 48  # first states still depend on the arbitrary zero start


def _reservoir_cls() -> Any:
    from reservoirpy.nodes import Reservoir

    return Reservoir


def _save_matrix(stem: Path, matrix: Any) -> None:
    from scipy import sparse

    if sparse.issparse(matrix):
        sparse.save_npz(stem.with_suffix(".sparse.npz"), matrix.tocsr() if matrix.format != "csr" else matrix)
    else:
        np.save(stem.with_suffix(".npy"), np.asarray(matrix))


def _load_matrix(stem: Path) -> Any:
    from scipy import sparse

    sp = stem.with_suffix(".sparse.npz")
    return sparse.load_npz(sp) if sp.exists() else np.load(stem.with_suffix(".npy"))


# Validation windows scored when choosing the ridge: beyond this, every series gives an
# evenly spaced share (about 350 MB at 400 units; uncapped, 1,000 series took 23 GB).
MAX_VALIDATION_ROWS = 100_000


@dataclass
class _RidgeStats:
    """What a ridge readout with a bias needs from its training windows, summed over
    blocks of them exactly as reservoirpy's ``Ridge`` sums its workers' parts."""

    xxt: np.ndarray
    yxt: np.ndarray
    x_sum: np.ndarray
    y_sum: np.ndarray
    rows: int

    @classmethod
    def of(cls, z: np.ndarray, y: np.ndarray) -> _RidgeStats:
        return cls(z.T @ z, z.T @ y, z.sum(axis=0), y.sum(axis=0), len(z))

    def add(self, z: np.ndarray, y: np.ndarray) -> _RidgeStats:
        self.xxt += z.T @ z
        self.yxt += z.T @ y
        self.x_sum += z.sum(axis=0)
        self.y_sum += y.sum(axis=0)
        self.rows += len(z)
        return self

    def solve(self, ridge: float) -> _Readout:
        """reservoirpy ``Ridge(ridge, fit_bias=True)``'s solution on the summed windows."""
        from scipy import linalg

        x_mean, y_mean = self.x_sum / self.rows, self.y_sum / self.rows
        xxt = self.xxt - self.rows * np.outer(x_mean, x_mean)
        yxt = self.yxt - self.rows * np.outer(x_mean, y_mean)
        wout = linalg.solve(xxt + ridge * np.eye(len(xxt)), yxt, assume_a="sym")
        return _Readout(Wout=wout, bias=y_mean - x_mean @ wout)


@dataclass
class _Readout:
    Wout: np.ndarray  # (features, H)
    bias: np.ndarray  # (H,)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return z @ self.Wout + self.bias


class ESNForecaster(Forecaster):
    kind = "esn"
    config_cls = ESNConfig
    config: ESNConfig
    reservoir: Any = None  # set by fit or load
    readout: _Readout | None = None

    # --- reservoir ----------------------------------------------------------

    def _make_reservoir(self, n_inputs: int) -> Any:
        cfg = self.config
        res = _reservoir_cls()(
            units=cfg.units,
            lr=cfg.leak_rate,
            sr=cfg.spectral_radius,
            input_scaling=cfg.input_scaling,
            input_connectivity=cfg.input_connectivity,
            rc_connectivity=cfg.rc_connectivity,
            seed=cfg.seed,
        )
        res.initialize(np.zeros((1, n_inputs)))
        return res

    def states(self, design: Design) -> np.ndarray:
        """Reservoir states over a whole series, starting from zero: (T, units)."""
        self.reservoir.reset()
        return np.asarray(self.reservoir.run(design.X.astype(np.float64)))

    def readout_features(self, design: Design, states: np.ndarray, positions: np.ndarray) -> np.ndarray:
        L = self.config.lookback
        lag_idx = np.clip(positions[:, None] + np.arange(-L + 1, 1)[None, :], 0, len(design.X) - 1)
        lags = design.X[lag_idx, 0]
        return np.hstack([states[positions], design.X[positions].astype(np.float64), lags.astype(np.float64)])

    # --- fit / predict ------------------------------------------------------

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        """Ridge readout from sufficient statistics accumulated series by series (reservoirpy's
        Ridge worker/master sums): memory does not grow with the panel. The ridge is chosen
        by validation MAE on at most ``MAX_VALIDATION_ROWS`` validation windows, taken evenly
        from every series when there are more."""
        cfg = self.config
        n_inputs = next(iter(designs.values())).X.shape[1]
        self.reservoir = self._make_reservoir(n_inputs)
        start = max(cfg.warmup, cfg.lookback - 1)
        ends = {sid: self.split_ends(d, val_pos[sid], cfg.lookback, start) for sid, d in designs.items()}
        n_val = sum(len(v) for _, v in ends.values())
        stride = max(1, -(-n_val // MAX_VALIDATION_ROWS))
        stats: _RidgeStats | None = None
        val_z: list[np.ndarray] = []
        val_y: list[np.ndarray] = []
        for sid, d in designs.items():
            train_ends, val_ends = ends[sid]
            if not len(train_ends) and not len(val_ends):
                continue
            S = self.states(d)
            if len(train_ends):
                z, y = self.readout_features(d, S, train_ends), self.targets(d, train_ends)
                stats = _RidgeStats.of(z, y) if stats is None else stats.add(z, y)
            if len(val_ends):
                kept = val_ends[::stride]
                val_z.append(self.readout_features(d, S, kept))
                val_y.append(self.targets(d, kept))
        if stats is None:
            raise InputError("esn: no complete training windows")
        ridge = cfg.ridge
        scores: dict[str, float] = {}
        if ridge is None and val_z:
            Zva, Yva = np.concatenate(val_z), np.concatenate(val_y)
            scores = {str(r): float(np.abs(stats.solve(r)(Zva) - Yva).mean()) for r in cfg.ridge_grid}
            ridge = float(min(cfg.ridge_grid, key=lambda r: scores[str(r)]))
        elif ridge is None:
            ridge = cfg.ridge_grid[len(cfg.ridge_grid) // 2]
        # The readout is not refit on the validation slice: its residuals there
        # calibrate the prediction intervals and must stay out-of-sample.
        self.readout = stats.solve(ridge)
        self.fit_info = {
            "train_rows": stats.rows,
            "ridge": ridge,
            "val_mae_by_ridge": scores,
            "validation_rows": int(sum(len(z) for z in val_z)),
        }

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        assert self.readout is not None
        return self.readout(self.readout_features(design, self.states(design), positions))

    # --- persistence --------------------------------------------------------

    def _save(self, path: Path) -> None:
        assert self.readout is not None
        # Weights keep their storage format (sparse stays sparse) so that a loaded
        # reservoir does bit-for-bit the same arithmetic as the fitted one.
        for name in ("W", "Win"):
            _save_matrix(path / f"esn_{name}", getattr(self.reservoir, name))
        np.savez(
            path / "esn.npz",
            bias=np.asarray(self.reservoir.bias),
            Wout=self.readout.Wout,
            readout_bias=self.readout.bias,
        )

    def _load(self, path: Path) -> None:
        arrays = np.load(path / "esn.npz")
        cfg = self.config
        W, Win = _load_matrix(path / "esn_W"), _load_matrix(path / "esn_Win")
        self.reservoir = _reservoir_cls()(
            W=W, Win=Win, bias=arrays["bias"], lr=cfg.leak_rate, sr=cfg.spectral_radius, input_scaling=cfg.input_scaling
        )
        self.reservoir.initialize(np.zeros((1, Win.shape[1])))
        self.readout = _Readout(Wout=arrays["Wout"], bias=arrays["readout_bias"])

    # --- streaming ----------------------------------------------------------

    def _stream(self, design: Design, online: OnlineDesign) -> ESNStream:
        """Run the reservoir over the history once; afterwards one reservoir step per observation."""
        L = self.config.lookback
        if len(design.y):
            state, recent = self.states(design)[-1].copy(), design.X[-L:].astype(np.float64)
            recent = np.vstack([np.repeat(recent[:1], L - len(recent), 0), recent])
        else:  # a series never seen before starts from the reservoir's zero state
            state, recent = np.zeros(self.config.units), np.zeros((L, design.X.shape[1]))
        return ESNStream(online, self, state, recent)


class ESNStream(DesignStream):
    """A reservoir state for one series, advanced one observation at a time: after the
    same inputs it holds exactly the state of a run over the whole history."""

    def __init__(self, online: OnlineDesign, model: ESNForecaster, state: np.ndarray, recent: np.ndarray) -> None:
        super().__init__(online)
        self.model, self.state = model, state
        self.recent = recent  # last ``lookback`` scaled input rows

    def _push(self, x: np.ndarray, y: float) -> None:
        res = self.model.reservoir
        res.state = {"out": self.state}
        self.state = np.asarray(res.step(np.asarray(x, dtype=np.float64))).copy()
        self.recent = np.vstack([self.recent[1:], x])

    def _forecast_scaled(self) -> np.ndarray:
        assert self.model.readout is not None
        x = self.recent[-1]
        z = np.concatenate([self.state, x, self.recent[:, 0]])
        return self.model.readout(z[None, :])[0] + x[0]
