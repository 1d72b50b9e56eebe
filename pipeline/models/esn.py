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
from typing import Any

import numpy as np

from pipeline.features import Design, window_ends
from pipeline.models.base import Forecaster, ModelConfig, NotFittedError


class ESNConfig(ModelConfig):
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


def _ridge_cls() -> Any:
    from reservoirpy.nodes import Ridge

    return Ridge


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

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.reservoir: Any = None
        self.readout: _Readout | None = None

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
        cfg = self.config
        n_inputs = next(iter(designs.values())).X.shape[1]
        self.reservoir = self._make_reservoir(n_inputs)
        parts: dict[str, list[np.ndarray]] = {"Ztr": [], "Ytr": [], "Zva": [], "Yva": []}
        for sid, d in designs.items():
            S = self.states(d)
            start = max(cfg.warmup, cfg.lookback - 1)
            for tag, ends in (
                ("tr", window_ends(d.y, cfg.lookback, cfg.horizon, start=start, stop=val_pos[sid] - cfg.horizon)),
                ("va", window_ends(d.y, cfg.lookback, cfg.horizon, start=max(start, val_pos[sid]))),
            ):
                if len(ends) == 0:
                    continue
                Y = d.y[ends[:, None] + np.arange(1, cfg.horizon + 1)[None, :]] - d.X[ends, :1].astype(np.float64)
                parts["Z" + tag].append(self.readout_features(d, S, ends))
                parts["Y" + tag].append(Y)
        if not parts["Ztr"]:
            raise ValueError("esn: no complete training windows")
        Ztr, Ytr = np.concatenate(parts["Ztr"]), np.concatenate(parts["Ytr"])
        ridge = cfg.ridge
        scores: dict[str, float] = {}
        if ridge is None:
            if parts["Zva"]:
                Zva, Yva = np.concatenate(parts["Zva"]), np.concatenate(parts["Yva"])
                for r in cfg.ridge_grid:
                    err = np.abs(self._solve(Ztr, Ytr, r)(Zva) - Yva).mean()
                    scores[str(r)] = float(err)
                ridge = float(min(cfg.ridge_grid, key=lambda r: scores[str(r)]))
            else:
                ridge = cfg.ridge_grid[len(cfg.ridge_grid) // 2]
        # The readout is not refit on the validation slice: its residuals there
        # calibrate the prediction intervals and must stay out-of-sample.
        self.readout = self._solve(Ztr, Ytr, ridge)
        self.fit_info = {"train_rows": len(Ztr), "ridge": ridge, "val_mae_by_ridge": scores}

    @staticmethod
    def _solve(Z: np.ndarray, Y: np.ndarray, ridge: float) -> _Readout:
        node = _ridge_cls()(ridge=ridge)
        node.fit(Z, Y)
        return _Readout(Wout=np.asarray(node.Wout), bias=np.asarray(node.bias).reshape(-1))

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        assert self.readout is not None
        S = self.states(design)
        Z = self.readout_features(design, S, positions)
        return self.readout(Z) + design.X[positions, :1].astype(np.float64)

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

    def stream(self, design: Design) -> ESNStream:
        """Run the reservoir over ``design`` once and return a stream positioned at its end."""
        if self.readout is None:
            raise NotFittedError("esn: call fit() before stream()")
        S = self.states(design)
        L = self.config.lookback
        recent = design.X[-L:].astype(np.float64)
        if len(recent) < L:
            recent = np.vstack([np.repeat(recent[:1], L - len(recent), 0), recent])
        return ESNStream(model=self, state=S[-1].copy(), recent=recent, design=design)


@dataclass
class ESNStream:
    """A reservoir state for one series, advanced one observation at a time."""

    model: ESNForecaster
    state: np.ndarray
    recent: np.ndarray  # last ``lookback`` scaled input rows
    design: Design

    def advance(self, x: np.ndarray) -> None:
        """One reservoir step with the new (scaled) input row ``x`` of shape (F,)."""
        res = self.model.reservoir
        res.state = {"out": self.state}
        self.state = np.asarray(res.step(np.asarray(x, dtype=np.float64))).copy()
        self.recent = np.vstack([self.recent[1:], x])

    def forecast(self) -> np.ndarray:
        """Scaled forecast for the next H steps from the current state."""
        assert self.model.readout is not None
        x = self.recent[-1]
        z = np.concatenate([self.state, x, self.recent[:, 0]])
        return self.model.readout(z[None, :])[0] + x[0]

    def forecast_values(self) -> np.ndarray:
        return self.design.unscale(self.forecast())
