"""Echo state network: a reservoirpy Reservoir driven by the inputs, and a Ridge
readout mapping the reservoir state (plus the current inputs and recent target
values) to all H steps.

Only the readout is trained, in closed form, which makes fitting orders of
magnitude faster than backpropagation. reservoirpy draws the reservoir's weights;
its states are then computed for many series at once (:class:`_Recurrence`: one
matrix product per time step for a whole block of series, where reservoirpy steps
one series at a time). The reservoir state can be advanced one observation at a time
(:class:`ESNStream`) and gives the forecast of a run over the whole history.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from streamcast.errors import InputError
from streamcast.features import Design, OnlineDesign
from streamcast.models.base import Forecaster, ModelConfig, window_stride
from streamcast.models.search import FloatRange, IntRange, SearchSpace
from streamcast.models.streams import DesignStream, SeriesStream


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
    # Forecasts run the reservoir from this many steps before their first origin, not from
    # the start of the series: the state has forgotten an older start (fading memory), and
    # a deployed forecast or stream loads no more history than this. None: measured at fit
    # (:func:`memory_steps`) as the whole seasons after which a start no longer moves a
    # forecast by more than MEMORY_TOLERANCE (1e-6 target standard deviations) on the training data.
    forecast_warmup: int | None = Field(None, ge=1)
    # Training windows of all series together the readout is fit on, at most about (None:
    # every one): a large panel keeps every k-th window of each series. The reservoir
    # still runs over every step; the readout's sums, the other half of the work, shrink.
    max_train_windows: int | None = 200_000

    def relative_cost(self) -> float:
        # The reservoir's update and the readout's sums grow with the square of its size,
        # over a fixed cost: a tuning fold on a 2-core machine took 0.06-0.14 s at 100
        # units, 0.17-0.25 s at 400 and 0.73-1.0 s at 800.
        return 0.25 + (self.units / 400) ** 2


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


# Reservoir states held at once while a block of series runs (time x series x units x 8
# bytes): 1,000 series x 90 days x 400 units would be 7 GB in one block.
STATE_BLOCK_BYTES = 256 * 2**20


def _tanh_inplace(x: np.ndarray) -> np.ndarray:
    """``np.tanh(x, out=x)`` as ``2 / (1 + exp(-2x)) - 1``: numpy's exp is vectorised where
    its tanh is not (1,000 series x 400 units: 4.5 ms against 14 ms, most of a reservoir
    step), within 4e-16 of it (absolute; the states are bounded by 1)."""
    np.multiply(x, -2.0, out=x)
    with np.errstate(over="ignore"):  # exp(-2x) is inf below x = -354: the result is -1
        np.exp(x, out=x)
    x += 1.0
    np.divide(2.0, x, out=x)
    x -= 1.0
    return x


class _Recurrence:
    """reservoirpy 0.4's ``Reservoir._step``, ``s' = (1 - lr) s + lr tanh(W s + Win x + bias)``,
    for a block of series at once: each time step is one dense matrix product over the
    block's states (rows are series), where reservoirpy makes a sparse product per series
    and step. Series start from the zero state at their own first row (aligned at the start,
    longest first, so the series still running are always a prefix of the block)."""

    def __init__(self, reservoir: Any) -> None:
        from scipy import sparse

        def dense(m: Any) -> np.ndarray:
            return np.asarray(m.toarray() if sparse.issparse(m) else m, dtype=np.float64)

        self.WT = np.ascontiguousarray(dense(reservoir.W).T)
        self.WinT = np.ascontiguousarray(dense(reservoir.Win).T)
        self.bias = np.asarray(reservoir.bias, dtype=np.float64).ravel()
        self.lr = float(reservoir.lr)
        self.units = self.WT.shape[0]

    def step(self, S: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The next states of the rows of ``S`` (series x units) after inputs ``X`` (series x inputs)."""
        pre = S @ self.WT
        pre += X @ self.WinT
        pre += self.bias
        _tanh_inplace(pre)  # in place: at 1,000 series x 400 units each temporary is 3 MB
        pre *= self.lr
        pre += (1.0 - self.lr) * S
        return pre

    def run(self, inputs: Sequence[np.ndarray], last_only: bool = False) -> list[np.ndarray]:
        """States after every row of each input sequence, (T_i, units) each; or with
        ``last_only`` just the state after its last row, (units,) (zero for an empty one)."""
        n = len(inputs)
        lengths = np.array([len(x) for x in inputs], dtype=int)
        order = np.argsort(-lengths, kind="stable")
        lengths_sorted = lengths[order]
        T = int(lengths_sorted[0]) if n else 0
        n_in = self.WinT.shape[0]
        U = np.zeros((T, n, n_in))
        for k, i in enumerate(order):
            U[: lengths[i], k] = inputs[i]
        S = np.zeros((n, self.units))
        out = None if last_only else np.empty((T, n, self.units))
        last = np.zeros((n, self.units))
        active = n
        for t in range(T):
            while active and lengths_sorted[active - 1] <= t:
                active -= 1
            S[:active] = self.step(S[:active], U[t, :active])
            if out is not None:
                out[t, :active] = S[:active]
            ending = active
            while ending and lengths_sorted[ending - 1] == t + 1:
                ending -= 1
            last[ending:active] = S[ending:active]
        result: list[np.ndarray] = [np.empty(0)] * n
        for k, i in enumerate(order):
            result[i] = last[k].copy() if out is None else out[: lengths[i], k]
        return result


# Measuring the reservoir's memory (ESNConfig.forecast_warmup None): on the training inputs
# of this many series, how far a forecast may move with the start, and the longest warm-up.
# The tolerance is in target standard deviations, between the extreme starts (zero, and a
# corner of the state space): a millionth of a degree on a temperature, far below what
# any data records. The default reservoir on a synthetic hourly panel measured 240 steps
# at 1e-9, 168 at 1e-6: the warm-up of every forecast and of a stream's start, and the
# history they read, 30% shorter.
MEMORY_SERIES = 8
MEMORY_TOLERANCE = 1e-6
MAX_WARMUP_SEASONS = 30
LEGACY_WARMUP = 336  # what every forecast warmed on before the warm-up was measured


def memory_steps(recurrence: _Recurrence, readout: Any, inputs: Sequence[np.ndarray], season: int) -> int:
    """The whole seasons of warm-up after which the reservoir has forgotten its start: two
    runs over the same inputs, one from the zero state and one from a corner of the state
    space (every unit at +1 or -1), whose readout outputs (the state part of them: the
    inputs and lags are the same in both) then stay within ``MEMORY_TOLERANCE`` of each
    other at every later step of every sampled series. At least one season; at most
    ``MAX_WARMUP_SEASONS`` (or the sample's length) when they never meet. All the sampled
    series and both starts step together (one matrix product per step)."""
    longest = MAX_WARMUP_SEASONS * season
    inputs = [x[:longest] for x in inputs if len(x)]
    if not inputs:
        return longest
    n, lengths = len(inputs), np.array([len(x) for x in inputs])
    U = np.zeros((int(lengths.max()), n, inputs[0].shape[1]))
    for i, x in enumerate(inputs):
        U[: len(x), i] = x  # a shorter series' padding is stepped but never measured
    W = np.asarray(readout.Wout)[: recurrence.units].reshape(recurrence.units, -1)  # the state's rows of the readout
    S = np.zeros((2 * n, recurrence.units))  # rows: every series from zero, then from the corner
    S[n:] = np.where(np.random.default_rng(0).random(recurrence.units) < 0.5, -1.0, 1.0)
    gaps = np.empty((len(U), n))
    for t, X in enumerate(U):
        S = recurrence.step(S, np.vstack([X, X]))
        gaps[t] = np.abs((S[:n] - S[n:]) @ W).max(axis=1)
    needed = 1
    for i, length in enumerate(lengths):
        over = np.flatnonzero(gaps[:length, i] > MEMORY_TOLERANCE)
        if len(over) and over[-1] == length - 1:  # not forgotten within the sample
            return longest
        needed = max(needed, int(over[-1]) + 2 if len(over) else 1)
    return min(longest, -(-needed // season) * season)


@dataclass
class _Weights:
    """A loaded reservoir: what reservoirpy's Reservoir holds after ``initialize``."""

    W: Any
    Win: Any
    bias: np.ndarray
    lr: float


def _blocks(lengths: Sequence[int], units: int) -> Iterator[list[int]]:
    """Indices of series in blocks whose states fit ``STATE_BLOCK_BYTES``."""
    order = np.argsort(-np.asarray(lengths, dtype=int), kind="stable")
    block: list[int] = []
    longest = 0
    for i in order:
        longest = max(longest, int(lengths[i]))
        if block and (len(block) + 1) * max(longest, 1) * units * 8 > STATE_BLOCK_BYTES:
            yield block
            block, longest = [], int(lengths[i])
        block.append(int(i))
    if block:
        yield block


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

    def arrays(self) -> dict[str, np.ndarray]:
        return {"xxt": self.xxt, "yxt": self.yxt, "x_sum": self.x_sum, "y_sum": self.y_sum, "rows": np.array(self.rows)}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> _RidgeStats:
        return cls(np.array(a["xxt"]), np.array(a["yxt"]), np.array(a["x_sum"]), np.array(a["y_sum"]), int(a["rows"]))

    def merge(self, other: _RidgeStats) -> _RidgeStats:
        self.xxt += other.xxt
        self.yxt += other.yxt
        self.x_sum += other.x_sum
        self.y_sum += other.y_sum
        self.rows += other.rows
        return self

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


@dataclass
class Matured:
    """Targets that matured at one time: per pair the step index (0 = one step ahead), the
    registered readout's forecast of the change made at its origin, the scaled change since
    the origin, the adapted readout's forecast of it made there, and the origin's time (ns).
    Keeping the two forecasts instead of the origin's features is what lets a stream of
    1,000 series learn without moving 24,000 x 400 states per hour."""

    step: np.ndarray
    registered: np.ndarray
    change: np.ndarray
    adapted: np.ndarray
    origin_ns: np.ndarray

    FIELDS: ClassVar[tuple[str, ...]] = ("step", "registered", "change", "adapted", "origin_ns")

    @classmethod
    def concat(cls, parts: Sequence[Matured]) -> Matured:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS))


class OnlineReadout:
    """The readout kept up to date from matured targets: per step, an affine correction of
    the registered readout's output fitted by recursive least squares with a forgetting
    factor, and used only as far as it stands out from the registered readout's noise.

    Step ``h``'s adapted forecast of the change is ``(1 + a_h) f_h(z) + c_h``, with ``f_h``
    the registered readout (so its weights are ``(1 + a_h) W0_h`` and its bias
    ``(1 + a_h) b0_h + c_h``): a scale and an offset per output, two numbers that a few
    series re-estimate within hours, where the hundreds of weights on the reservoir state
    would fit noise. ``theta_h = (a_h, c_h)`` minimises

        sum over pairs  lam^(age in steps) (change - f_h - theta_h . (f_h, 1))^2  +  prior |theta_h|^2

    over the (origin, change) pairs of step ``h`` that have matured, in information form
    (exact after every update). The estimate is then shrunk toward the registered readout
    by positive-part James-Stein: with ``Q_h = theta_h' M_h theta_h / noise_h`` (``M_h``
    the information matrix, ``noise_h`` the registered readout's residual variance on
    validation) the correction used is ``max(0, 1 - threshold * 2 / Q_h) theta_h``. In
    steady data the correction is indistinguishable from noise and stays near zero; after
    a shift it grows with the evidence."""

    def __init__(
        self, base: _Readout, forgetting: float, prior: float, noise: np.ndarray, threshold: float = 5.0
    ) -> None:
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting factor must be in (0, 1], got {forgetting}")
        if prior <= 0:
            raise ValueError(f"prior must be positive, got {prior}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.base = base
        self.forgetting, self.prior, self.threshold = float(forgetting), float(prior), float(threshold)
        self.W0 = np.vstack([base.Wout, base.bias[None, :]])  # (features + 1, H)
        H = self.W0.shape[1]
        noise = np.broadcast_to(np.asarray(noise, dtype=float), (H,))
        if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
            raise ValueError("noise must be positive and finite for every step")
        self.noise = np.array(noise)
        self.A = np.zeros((H, 2, 2))  # per step: decayed sum of phi phi^T, phi = (registered, 1)
        self.B = np.zeros((H, 2))  # per step: decayed sum of phi (change - registered)
        self.t: pd.Timestamp | None = None  # the time the sums are decayed to
        self.pairs = 0  # matured (origin, step) targets learnt from
        self._theta: np.ndarray | None = np.zeros((H, 2))

    def correction(self) -> np.ndarray:
        """(H, 2): per step the (scale - 1, offset) in use, after shrinkage."""
        if self._theta is None:
            M = self.A + self.prior * np.eye(2)
            theta = np.linalg.solve(M, self.B[..., None])[..., 0]
            q = np.einsum("hi,hij,hj->h", theta, M, theta) / self.noise
            keep = np.clip(1.0 - 2.0 * self.threshold / np.maximum(q, 1e-300), 0.0, 1.0)
            self._theta = theta * keep[:, None]
        return self._theta

    @property
    def active(self) -> bool:
        """Whether forecasts differ from the registered readout's (some step is corrected)."""
        return bool(np.any(self.correction() != 0))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.adapted(z)

    def registered(self, z: np.ndarray) -> np.ndarray:
        """The registered readout's forecast of ``z`` (rows)."""
        return z @ self.W0[:-1] + self.W0[-1]

    def adapted(self, z: np.ndarray) -> np.ndarray:
        """The adapted readout's forecast of ``z`` (rows)."""
        theta = self.correction()
        return self.registered(z) * (1.0 + theta[:, 0]) + theta[:, 1]

    def matured(
        self, step: np.ndarray, z: np.ndarray, change: np.ndarray, adapted: np.ndarray, origin_ns: np.ndarray
    ) -> Matured:
        """:class:`Matured` pairs from their origins' full readout features ``z``."""
        registered = np.einsum("mf,fm->m", z, self.W0[:-1][:, step]) + self.W0[-1][step]
        return Matured(step, registered, change, adapted, origin_ns)

    def weights(self) -> np.ndarray:
        """(features + 1, H): the adapted readout's weights (the registered ones before any target)."""
        theta = self.correction()
        W = self.W0 * (1.0 + theta[:, 0])
        W[-1] += theta[:, 1]
        return W

    def update(self, ts: pd.Timestamp, steps: pd.Timedelta, matured: Matured) -> None:
        """Learn the targets that ``matured`` at ``ts``; ``steps`` is the grid step, the unit
        of the forgetting factor (a pair that arrives late, from a lagging series, is aged)."""
        if self.t is None or ts > self.t:
            if self.t is not None:
                decay = self.forgetting ** round((ts - self.t) / steps)
                self.A *= decay
                self.B *= decay
            self.t = ts
        if not len(matured.step):
            return
        weight = self.forgetting ** max(0, round((self.t - ts) / steps))
        r = matured.change - matured.registered
        phi = np.stack([matured.registered, np.ones(len(r))], axis=1)
        np.add.at(self.A, matured.step, weight * phi[:, :, None] * phi[:, None, :])
        np.add.at(self.B, matured.step, weight * phi * r[:, None])
        self.pairs += len(r)
        self._theta = None

    # --- checkpoint ----------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        return {
            "A": self.A,
            "B": self.B,
            "t": np.array([-1 if self.t is None else self.t.value], dtype=np.int64),
            "pairs": np.array([self.pairs]),
            "settings": np.array([self.forgetting, self.prior, self.threshold, *self.noise]),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state` of a readout on the same registered weights and settings."""
        settings = np.array([self.forgetting, self.prior, self.threshold, *self.noise])
        if (
            state["B"].shape != self.B.shape
            or state["settings"].shape != settings.shape
            or not np.array_equal(state["settings"], settings)
        ):
            raise ValueError("checkpoint is of another readout or other settings")
        self.A, self.B = np.array(state["A"]), np.array(state["B"])
        t = int(state["t"][0])
        self.t = None if t < 0 else pd.Timestamp(t, tz="UTC")
        self.pairs = int(state["pairs"][0])
        self._theta = None


class ESNForecaster(Forecaster):
    kind = "esn"
    config_cls = ESNConfig
    config: ESNConfig
    reservoir: Any = None  # set by fit or load
    readout: _Readout | OnlineReadout | None = None  # an OnlineReadout while a stream adapts it
    _recurrence: _Recurrence | None = None

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

    @property
    def warmup_steps(self) -> int:
        """Steps a forecast runs the reservoir before its first origin (``forecast_warmup``;
        a model fit before it was measured warmed on 336)."""
        return self.config.forecast_warmup or LEGACY_WARMUP

    @property
    def history_steps(self) -> int:
        return max(self.warmup_steps, self.config.lookback, self.anchor_lag + 1)

    @property
    def recurrence(self) -> _Recurrence:
        if self._recurrence is None:
            self._recurrence = _Recurrence(self.reservoir)
        return self._recurrence

    def states(self, design: Design) -> np.ndarray:
        """Reservoir states over a whole series, starting from zero: (T, units)."""
        return self.recurrence.run([design.X.astype(np.float64)])[0]

    def block_states(self, designs: Sequence[Design]) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """Reservoir states of many series, a block of them at a time: (indices into
        ``designs``, their states) with the states of a block computed together."""
        for block in _blocks([len(d.X) for d in designs], self.config.units):
            yield block, self.recurrence.run([designs[i].X.astype(np.float64) for i in block])

    def readout_features(
        self, design: Design, states: np.ndarray, positions: np.ndarray, offset: int = 0
    ) -> np.ndarray:
        """What the readout sees at each position: the reservoir state, the current inputs and
        the last ``lookback`` target values (``states[k]`` is the state at ``offset + k``)."""
        L = self.config.lookback
        lag_idx = np.clip(positions[:, None] + np.arange(-L + 1, 1)[None, :], 0, len(design.X) - 1)
        lags = design.X[lag_idx, 0]
        return np.hstack([states[positions - offset], design.X[positions].astype(np.float64), lags.astype(np.float64)])

    # --- fit / predict ------------------------------------------------------

    # The readout's fit sums over series (ridge sufficient statistics), so a panel too large
    # for one process is fit by parts: chunks of series in other processes, summed here.
    fits_by_parts: ClassVar[bool] = True
    _val_stride: int = 1
    _train_stride: int = 1
    _memory_sample: Sequence[np.ndarray] = ()

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        """The fit by parts in one part: the whole panel."""
        self._begin_parts(designs, val_pos)
        self._end_parts([self._fit_part(designs, val_pos)])

    def _begin_parts(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        """Draw the reservoir and fix the share of training and validation windows every
        series keeps: at most ``max_train_windows`` and ``MAX_VALIDATION_ROWS`` over the
        whole panel, whichever chunks it is fit in."""
        cfg = self.config
        n_inputs = next(iter(designs.values())).X.shape[1]
        self.reservoir = self._make_reservoir(n_inputs)
        self._recurrence = None
        self.readout = None
        start = max(cfg.warmup, cfg.lookback - 1)
        ends = [self.split_ends(d, val_pos[sid], cfg.lookback, start) for sid, d in designs.items()]
        # A few series' training inputs, on which _end_parts measures how fast the fitted
        # reservoir and readout forget a start (when forecast_warmup is to be measured).
        self._memory_sample = [
            d.X[: val_pos[sid]].astype(np.float64) for sid, d in list(designs.items())[:MEMORY_SERIES]
        ]
        self._train_stride = window_stride(sum(len(train) for train, _ in ends), cfg.max_train_windows, cfg.season)
        self._val_stride = window_stride(sum(len(val) for _, val in ends), MAX_VALIDATION_ROWS, cfg.season)

    def _fit_part(self, designs: dict[str, Design], val_pos: dict[str, int]) -> dict[str, np.ndarray]:
        """Ridge sufficient statistics of these series' training windows (reservoirpy's Ridge
        worker sums) and their kept validation windows: memory does not grow with the panel."""
        cfg = self.config
        start = max(cfg.warmup, cfg.lookback - 1)
        ends = {}
        for sid, d in designs.items():
            train, val = self.split_ends(d, val_pos[sid], cfg.lookback, start)
            ends[sid] = (train[:: self._train_stride], val)
        stats: _RidgeStats | None = None
        val_z: list[np.ndarray] = []
        val_y: list[np.ndarray] = []
        used = [sid for sid in designs if len(ends[sid][0]) or len(ends[sid][1])]
        for block, block_states in self.block_states([designs[sid] for sid in used]):
            for i, S in zip(block, block_states, strict=True):
                stats = self._add_windows(designs[used[i]], S, *ends[used[i]], self._val_stride, stats, val_z, val_y)
        features = self.config.units + next(iter(designs.values())).X.shape[1] + cfg.lookback if designs else 0
        empty = np.empty((0, features))
        return {
            **(stats.arrays() if stats is not None else {}),
            "val_z": np.concatenate(val_z) if val_z else empty,
            "val_y": np.concatenate(val_y) if val_y else np.empty((0, cfg.horizon)),
        }

    def _end_parts(self, parts: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Sum the parts' statistics and solve; the ridge is chosen by validation MAE on the
        kept validation windows of every part."""
        cfg = self.config
        stats: _RidgeStats | None = None
        for part in parts:
            if "rows" in part:
                stats = _RidgeStats.from_arrays(part) if stats is None else stats.merge(_RidgeStats.from_arrays(part))
        if stats is None:
            raise InputError("esn: no complete training windows")
        Zva = np.concatenate([p["val_z"] for p in parts])
        Yva = np.concatenate([p["val_y"] for p in parts])
        ridge = cfg.ridge
        scores: dict[str, float] = {}
        if ridge is None and len(Zva):
            scores = {str(r): float(np.abs(stats.solve(r)(Zva) - Yva).mean()) for r in cfg.ridge_grid}
            ridge = float(min(cfg.ridge_grid, key=lambda r: scores[str(r)]))
        elif ridge is None:
            ridge = cfg.ridge_grid[len(cfg.ridge_grid) // 2]
        # The readout is not refit on the validation slice: its residuals there
        # calibrate the prediction intervals and must stay out-of-sample.
        self.readout = stats.solve(ridge)
        if cfg.forecast_warmup is None:
            measured = memory_steps(self.recurrence, self.readout, self._memory_sample, cfg.season)
            self.config = cfg = cfg.model_copy(update={"forecast_warmup": measured})
        self._memory_sample = ()
        self.fit_info = {
            "forecast_warmup": cfg.forecast_warmup,
            "train_rows": stats.rows,
            "train_stride": self._train_stride,
            "ridge": ridge,
            "val_mae_by_ridge": scores,
            "validation_rows": len(Zva),
        }

    def _add_windows(
        self,
        d: Design,
        S: np.ndarray,
        train_ends: np.ndarray,
        val_ends: np.ndarray,
        stride: int,
        stats: _RidgeStats | None,
        val_z: list[np.ndarray],
        val_y: list[np.ndarray],
    ) -> _RidgeStats | None:
        """One series' training windows summed into ``stats``; every ``stride``-th validation window kept."""
        if len(train_ends):
            z, y = self.readout_features(d, S, train_ends), self.targets(d, train_ends)
            stats = _RidgeStats.of(z, y) if stats is None else stats.add(z, y)
        if len(val_ends):
            kept = val_ends[::stride]
            val_z.append(self.readout_features(d, S, kept))
            val_y.append(self.targets(d, kept))
        return stats

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        return self._predict_many([design], [positions])[0]

    def _predict_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """All series' reservoirs run a block at a time (one matrix product per step)."""
        readout = self.readout
        assert readout is not None
        warm = self.warmup_steps
        starts = [max(0, int(p.min()) - warm) if len(p) else len(d.X) for d, p in zip(designs, positions, strict=True)]
        tails = [
            Design(d.series_id, d.X[a:], d.y[a:], d.target_mean, d.target_std)
            for d, a in zip(designs, starts, strict=True)
        ]
        if all(len(p) == 1 and p[0] == len(d.X) - 1 for d, p in zip(designs, positions, strict=True)):
            # A forecast from the end of every series (``streamcast forecast``): only the last
            # states are needed, so all series run in one block without a state history.
            finals = self.recurrence.run([t.X.astype(np.float64) for t in tails], last_only=True)
            return [
                readout(self.readout_features(d, state[None, :], p, offset=int(p[0])))
                for d, p, state in zip(designs, positions, finals, strict=True)
            ]
        out: list[np.ndarray] = [np.empty(0)] * len(designs)
        for block, block_states in self.block_states(tails):
            for i, S in zip(block, block_states, strict=True):
                out[i] = readout(self.readout_features(designs[i], S, positions[i], offset=starts[i]))
        return out

    # --- persistence --------------------------------------------------------

    def _save(self, path: Path) -> None:
        assert self.readout is not None
        # Weights keep their storage format (sparse stays sparse) so that a loaded
        # reservoir does bit-for-bit the same arithmetic as the fitted one.
        for name in ("W", "Win"):
            _save_matrix(path / f"esn_{name}", getattr(self.reservoir, name))
        # A readout a stream adapted is never saved: the registered one is.
        readout = self.readout.base if isinstance(self.readout, OnlineReadout) else self.readout
        np.savez(path / "esn.npz", bias=np.asarray(self.reservoir.bias), Wout=readout.Wout, readout_bias=readout.bias)

    def _load(self, path: Path) -> None:
        # The saved weights are all a loaded model runs (through _Recurrence); reservoirpy,
        # a second to import, is only needed to draw new ones in fit.
        arrays = np.load(path / "esn.npz")
        self.reservoir = _Weights(
            W=_load_matrix(path / "esn_W"),
            Win=_load_matrix(path / "esn_Win"),
            bias=arrays["bias"],
            lr=self.config.leak_rate,
        )
        self._recurrence = None
        self.readout = _Readout(Wout=arrays["Wout"], bias=arrays["readout_bias"])

    # --- streaming ----------------------------------------------------------

    def _stream(self, design: Design, online: OnlineDesign) -> ESNStream:
        """Run the reservoir over the history once; afterwards one reservoir step per observation."""
        return self._streams_after([design], [online])[0]

    def streams(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, SeriesStream]:
        """Every series' stream, their reservoirs warmed together on their histories."""
        built = list(self._streams_inputs(frames).values())
        streams = self._streams_after([d for d, _ in built], [o for _, o in built])
        return dict(zip(frames, streams, strict=True))

    @property
    def recent_rows(self) -> int:
        """Input rows a stream keeps: the readout's lags, and a season (or week) more for a
        seasonal (or weekly) anchor."""
        return max(self.config.lookback, self.anchor_lag + 1)

    def _streams_after(self, designs: Sequence[Design], onlines: Sequence[OnlineDesign]) -> list[ESNStream]:
        H = self.config.horizon
        # Only the last states are kept, so every series runs in one block; over the same
        # tail a forecast from the last row runs (``forecast_warmup`` steps before it).
        tail = self.warmup_steps + 1
        learning = isinstance(self.readout, OnlineReadout)
        # An adapting readout also needs the features of the last H origins (their targets
        # mature in the stream): the tail's last H rows are stepped one at a time for them.
        keep = H if learning else 0
        starts = [max(0, len(d.X) - tail) for d in designs]
        cuts = [max(a, len(d.X) - keep) for d, a in zip(designs, starts, strict=True)]
        S = np.array(
            self.recurrence.run(
                [d.X[a:c].astype(np.float64) for d, a, c in zip(designs, starts, cuts, strict=True)], last_only=True
            )
        ).reshape(len(designs), self.config.units)
        ring_states: list[list[np.ndarray]] = [[] for _ in designs]
        for j in range(keep):
            rows = [len(d.X) - keep + j for d in designs]  # the last H rows, aligned at the end
            active = [i for i, (d, r) in enumerate(zip(designs, rows, strict=True)) if cuts[i] <= r < len(d.X)]
            if not active:
                continue
            X = np.array([designs[i].X[rows[i]] for i in active], dtype=np.float64)
            S[active] = self.recurrence.step(S[active], X)
            for i in active:
                ring_states[i].append(S[i].copy())
        out = []
        R = self.recent_rows
        for i, (design, online) in enumerate(zip(designs, onlines, strict=True)):
            if len(design.y):
                recent = design.X[-R:].astype(np.float64)
                recent = np.vstack([np.repeat(recent[:1], R - len(recent), 0), recent])
            else:  # a series never seen before starts from the reservoir's zero state
                recent = np.zeros((R, design.X.shape[1]))
            stream = ESNStream(online, self, S[i].copy(), recent)
            if learning and ring_states[i]:
                assert stream.ring is not None and isinstance(self.readout, OnlineReadout)
                positions = np.arange(cuts[i], len(design.X))
                z = self.readout_features(design, np.array(ring_states[i]), positions, offset=cuts[i])
                forecasts = zip(self.readout.registered(z), self.readout.adapted(z), strict=True)
                anchors = self.anchor_at(design.X[:, 0], positions)
                for p, a, (reg, pred) in zip(positions, anchors, forecasts, strict=True):
                    stream.ring.push(a, bool(np.isfinite(design.y[p])), reg, pred)
            out.append(stream)
        return out


class _Origins:
    """The last H origins of one series (anchor, whether the target was observed, the
    registered and the adapted readout's forecasts made there), so that each arriving target
    pairs with the forecasts it completes."""

    def __init__(self, horizon: int) -> None:
        self.anchor = np.zeros((horizon, horizon))  # per origin, what each step is a change from
        self.ok = np.zeros(horizon, dtype=bool)
        self.registered = np.zeros((horizon, horizon))
        self.adapted = np.zeros((horizon, horizon))
        self.count = 0  # origins pushed so far; the newest is at (count - 1) % H

    def push(self, anchor: np.ndarray, ok: bool, registered: np.ndarray, adapted: np.ndarray) -> None:
        """An origin: its anchor (one value, or one per step) and the two readouts' forecasts from it."""
        k = self.count % len(self.ok)
        self.anchor[k], self.ok[k] = anchor, ok
        self.registered[k], self.adapted[k] = registered, adapted
        self.count += 1

    def pending(self) -> np.ndarray:
        """The adapted forecasts made at the origins held, oldest first (a checkpoint keeps them)."""
        back = np.arange(len(self.ok), 0, -1)
        return self.adapted[(self.count - back) % len(self.ok)]

    def restore_pending(self, adapted: np.ndarray) -> None:
        """:meth:`pending` of the same origins, from a checkpoint (the forecasts they were issued with)."""
        back = np.arange(len(self.ok), 0, -1)
        self.adapted[(self.count - back) % len(self.ok)] = adapted

    def matured(self, y: float, ts_ns: int, step_ns: int) -> Matured:
        """The pairs the target ``y`` (observed at ``ts_ns``, the time after the newest origin) completes."""
        H = len(self.ok)
        back = np.arange(1, min(H, self.count) + 1)
        slots = (self.count - back) % H
        use = self.ok[slots]
        slots, back = slots[use], back[use]
        return Matured(
            back - 1,
            self.registered[slots, back - 1],
            y - self.anchor[slots, back - 1],
            self.adapted[slots, back - 1],
            ts_ns - back * step_ns,
        )


class ESNStream(DesignStream):
    """A reservoir state for one series, advanced one observation at a time: after the
    same inputs it holds exactly the state of a run over the whole history. With an
    :class:`OnlineReadout` on the model, each observed target is learnt from (the pairs it
    completes and the new origin) before the next forecast."""

    def __init__(self, online: OnlineDesign, model: ESNForecaster, state: np.ndarray, recent: np.ndarray) -> None:
        super().__init__(online)
        self.model, self.state = model, state
        self.recent = recent  # last ``model.recent_rows`` scaled input rows
        learning = isinstance(model.readout, OnlineReadout)
        self.ring: _Origins = _Origins(model.config.horizon) if learning else None  # type: ignore[assignment]

    def advance(self, ts: pd.Timestamp, values: Mapping[str, float]) -> None:
        type(self).advance_all([self], ts, [values])

    def _push(self, x: np.ndarray, y: float) -> None:  # pragma: no cover - advance goes through advance_all
        raise NotImplementedError

    def _features(self) -> np.ndarray:
        return np.concatenate([self.state, self.recent[-1], self.recent[-self.model.config.lookback :, 0]])

    @staticmethod
    def _anchors(streams: Sequence[ESNStream]) -> np.ndarray:
        """What each stream's forecast from now is a change from, (len(streams), 1 or H): one
        call over their recent targets laid end to end (each holds a season and more)."""
        recent = np.concatenate([s.recent[:, 0] for s in streams])
        R = len(streams[0].recent)
        return streams[0].model.anchor_at(recent, np.arange(1, len(streams) + 1) * R - 1)

    def _forecast_scaled(self) -> np.ndarray:
        assert self.model.readout is not None
        return self.model.readout(self._features()[None, :])[0] + self._anchors([self])[0]

    @classmethod
    def advance_all(cls, streams: Sequence[ESNStream], ts: pd.Timestamp, values: Sequence[Mapping[str, float]]) -> None:
        """One reservoir step for all ``streams`` (of one model) in one matrix product; an
        adapting readout learns from the targets observed at ``ts`` first."""
        if not streams:
            return
        rows = [s.online.row(ts, v) for s, v in zip(streams, values, strict=True)]
        X = np.array([x for x, _ in rows], dtype=np.float64)
        model = streams[0].model
        states = model.recurrence.step(np.array([s.state for s in streams]), X)
        for s, state, x in zip(streams, states, X, strict=True):
            s.state = state
            s.recent = np.vstack([s.recent[1:], x])
        readout = model.readout
        if not isinstance(readout, OnlineReadout):
            return
        step_ns = (model.freq or pd.Timedelta(hours=1)).value
        # The targets observed now complete earlier origins' forecasts: learnt first, so that
        # the origins of now (and their forecasts) already see them.
        observed = [(s, y) for s, (_, y) in zip(streams, rows, strict=True) if np.isfinite(y)]
        parts = [s.ring.matured(y, ts.value, step_ns) for s, y in observed]
        if parts:
            readout.update(ts, model.freq or pd.Timedelta(hours=1), Matured.concat(parts))
        Z = np.array([s._features() for s in streams])
        forecasts = zip(readout.registered(Z), readout.adapted(Z), cls._anchors(streams), strict=True)
        for s, (_, y), (reg, pred, anchor) in zip(streams, rows, forecasts, strict=True):
            s.ring.push(anchor, bool(np.isfinite(y)), reg, pred)

    @classmethod
    def forecast_all(cls, streams: Sequence[ESNStream]) -> list[np.ndarray | None]:
        """Every stream's forecast through the readout in one matrix product."""
        if not streams:
            return []
        readout = streams[0].model.readout
        assert readout is not None
        scaled = readout(np.array([s._features() for s in streams]))
        return [s.online.unscale(f) for s, f in zip(streams, scaled + cls._anchors(streams), strict=True)]
