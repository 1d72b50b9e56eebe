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
        cfg = self.config
        n_inputs = next(iter(designs.values())).X.shape[1]
        self.reservoir = self._make_reservoir(n_inputs)
        parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"train": ([], []), "val": ([], [])}
        for sid, d in designs.items():
            S = self.states(d)
            start = max(cfg.warmup, cfg.lookback - 1)
            for (zs, ys), ends in zip(
                parts.values(), self.split_ends(d, val_pos[sid], cfg.lookback, start), strict=True
            ):
                if len(ends):
                    zs.append(self.readout_features(d, S, ends))
                    ys.append(self.targets(d, ends))
        if not parts["train"][0]:
            raise InputError("esn: no complete training windows")
        Ztr, Ytr = (np.concatenate(a) for a in parts["train"])
        ridge = cfg.ridge
        scores: dict[str, float] = {}
        if ridge is None and parts["val"][0]:
            Zva, Yva = (np.concatenate(a) for a in parts["val"])
            scores = {str(r): float(np.abs(self._solve(Ztr, Ytr, r)(Zva) - Yva).mean()) for r in cfg.ridge_grid}
            ridge = float(min(cfg.ridge_grid, key=lambda r: scores[str(r)]))
        elif ridge is None:
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
