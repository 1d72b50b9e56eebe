"""The statistical models people would otherwise use, in the same race as the networks:
statsforecast's AutoETS, AutoTheta and MSTL.

They are local models: each series gets its own, fitted once on the training period
before the validation slice (the last ``fit_window`` steps of it). At every origin the
fitted model is applied to the window ending there with statsforecast's ``forward``,
which filters the new data with the parameters already estimated instead of searching
for them again: the refit per origin costs a filter pass, not a model search. A winner
refit on all the data keeps the form each series' search chose (ETS(M,Ad,A), the theta
variant, MSTL's trend model) and re-estimates its parameters on the latest window. They
forecast in the series' own units (multiplicative seasonality needs them), so the
scaled design is unscaled on the way in and scaled again on the way out.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from streamcast.features import Design, OnlineDesign
from streamcast.models.base import Forecaster, ModelConfig
from streamcast.models.streams import SeriesStream, WindowStream

log = logging.getLogger(__name__)

# What statsforecast raises when a window cannot carry a model (too short, constant, ...).
_MODEL_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError, IndexError)


class StatisticalConfig(ModelConfig):
    use_covariates: bool = False  # univariate models: covariates are not read
    fit_window: int = Field(
        0, ge=0, description="steps each fit and forecast sees; 0: the model's default (four weeks, MSTL eight)"
    )


class StatisticalForecaster(Forecaster):
    """One statsforecast model per series, estimated once and applied at every origin."""

    config_cls: ClassVar[type[ModelConfig]] = StatisticalConfig
    config: StatisticalConfig
    predicts_change = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.local: dict[str, Any] = {}  # series id -> fitted statsforecast model
        self.fallbacks = 0  # forecasts where the model could not run and the last value stood in
        self._forms: dict[str, Any] = {}  # series id -> the fitted model whose form a refit keeps
        self._saved_window = 0  # a loaded model's window as fitted (the default may have changed since)

    @classmethod
    def prepare_runtime(cls) -> None:
        import statsforecast.models  # noqa: F401 - heavy import, not billed to a fit

    default_weeks: ClassVar[int] = 4  # the window without ``fit_window``, in weeks of daily seasons

    @property
    def window(self) -> int:
        return self.config.fit_window or self._saved_window or self.default_weeks * 7 * self.config.season

    # Each validation origin is a forward per series (MSTL: a decomposition): 5,000 of them
    # calibrate the intervals as well as 20,000 (120,000 residuals over 24 steps).
    max_validation_origins: ClassVar[int] = 5_000

    @property
    def validation_stride(self) -> int:
        # One forecast per season (or per horizon, when shorter) inside the validation
        # slice: MSTL decomposes its window at every origin, so hourly origins would cost
        # minutes per series.
        return min(self.config.season, self.config.horizon)

    def _ready(self) -> bool:
        return bool(self.local)

    @abstractmethod
    def _model(self, n: int) -> Any:
        """A fresh statsforecast model for a window of ``n`` observations."""

    def refit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Forecaster:
        """The same config fit on all the data, each series' model keeping the form its
        search chose in this fit (re-estimated on the latest window, not searched again:
        on 100 hourly series AutoETS' search took 27 s, one estimate of each chosen form
        4.2 s). A series whose form does not suit its new window
        (too short for its season), or whose search had failed, is searched again."""
        self._check_fitted("refit")
        out = self._successor()
        out._forms = {sid: m for sid, m in self.local.items() if m is not None}
        return out.fit(panel, train_end, val_start)

    def _successor(self) -> StatisticalForecaster:
        """A fresh forecaster of this config to refit (what it may reuse handed over)."""
        return type(self)(self.config)

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        tails = {sid: _observed_tail(_levels(d)[: val_pos[sid]], self.window) for sid, d in designs.items()}
        forms = {sid: self._form(self._forms[sid], len(y)) if sid in self._forms else None for sid, y in tails.items()}
        workers = _workers() if len(tails) >= PARALLEL_FITS else 1
        if workers <= 1:
            self.local = {sid: self._estimate(y, forms[sid]) for sid, y in tails.items()}
        else:  # a model search per series: the series split across worker processes
            sids = list(tails)
            chunks = _chunks(len(sids), workers)
            calls = [(self._part([]), [tails[sids[i]] for i in c], [forms[sids[i]] for i in c]) for c in chunks]
            fitted = _in_workers(workers, _estimate_chunk, calls)
            pairs = (zip(c, models, strict=True) for c, models in zip(chunks, fitted, strict=True))
            self.local = {sids[i]: m for chunk in pairs for i, m in chunk}
        self._forms = {}
        self.fit_info = {
            "series": len(self.local),
            "window": self.window,
            "forms_kept": sum(f is not None for f in forms.values()),
        }

    def _estimate(self, y: np.ndarray, form: Any = None) -> Any:
        """The series' model fit on ``y``: ``form`` (an unfitted model of a form chosen
        before) re-estimated, or, without one or where it cannot be, a model search."""
        if len(y) < 3:
            return None
        for model in (form, self._model(len(y))):
            if model is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return self._fit_model(model, y)
            except _MODEL_ERRORS as exc:
                error = exc
        log.warning("%s: cannot fit %d observations (%s); the last value stands in", self.kind, len(y), error)
        return None

    def _fit_model(self, model: Any, y: np.ndarray) -> Any:
        """``model`` (unfitted statsforecast model) fit on ``y``."""
        return model.fit(y)

    def _form(self, fitted: Any, n: int) -> Any:
        """An unfitted model of ``fitted``'s chosen form for a window of ``n`` steps, or
        None where the form does not suit it (a search then chooses again)."""
        return None

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        return self._predict_here([design], [positions])[0]

    def _predict_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Series after series; a large panel's series split across worker processes (each
        series' forecasts are its own: the result is the same however they are split)."""
        total = sum(len(p) for p in positions)
        workers = _workers() if total >= PARALLEL_FORWARDS else 1
        if workers <= 1 or len(designs) < 2:
            return self._predict_here(designs, positions)
        chunks = _chunks(len(designs), workers)
        args = [
            (self._part([designs[i].series_id for i in c]), [designs[i] for i in c], [positions[i] for i in c])
            for c in chunks
        ]
        out: list[np.ndarray] = [np.empty(0)] * len(designs)
        for c, (preds, fallbacks) in zip(chunks, _in_workers(workers, _predict_chunk, args), strict=True):
            self.fallbacks += fallbacks
            for i, pred in zip(c, preds, strict=True):
                out[i] = pred
        return out

    def _predict_here(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scaled forecasts at ``positions`` of each of ``designs``, in this process: every
        origin's window through its series' model, a block of windows at a time (prepared
        together, see :meth:`_prepare_windows`)."""
        H = self.config.horizon
        levels = [_levels(d) for d in designs]
        for design, level, pos in zip(designs, levels, positions, strict=True):
            if design.series_id not in self.local and len(pos):  # not seen in training: estimate on what precedes
                self.local[design.series_id] = self._estimate(_observed_tail(level[: int(pos.min()) + 1], self.window))
        origins = [(k, int(p)) for k, pos in enumerate(positions) for p in pos]
        means: list[np.ndarray] = []
        for b in range(0, len(origins), PREPARE_BLOCK):
            block = origins[b : b + PREPARE_BLOCK]
            models = [self.local[designs[k].series_id] for k, _ in block]
            windows = [_observed_tail(levels[k][: p + 1], self.window) for k, p in block]
            prepared = self._prepare_windows(models, windows)
            means += [self._forward(m, y, H, pre) for m, y, pre in zip(models, windows, prepared, strict=True)]
        out, start = [], 0
        for design, pos in zip(designs, positions, strict=True):
            forecasts = np.array(means[start : start + len(pos)]).reshape(len(pos), H)
            out.append((forecasts - design.target_mean) / design.target_std)
            start += len(pos)
        return out

    def _prepare_windows(self, models: Sequence[Any], windows: Sequence[np.ndarray]) -> list[Any]:
        """What the forecasts of many windows can share, computed once for all of them
        (MSTL: their decompositions as one matrix product); None: nothing."""
        return [None] * len(windows)

    def _part(self, series: Sequence[str]) -> StatisticalForecaster:
        """This forecaster with only ``series``' local models (what one worker needs)."""
        part = copy.copy(self)
        part.local = {sid: self.local[sid] for sid in series if sid in self.local}
        part.fallbacks = 0
        part._forms = {}
        part._validation = {}
        return part

    def _forward(self, model: Any, y: np.ndarray, H: int, prepared: Any = None) -> np.ndarray:
        last = y[-1] if len(y) else np.nan
        if model is not None and len(y) >= 3:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mean = self._mean(model, y, H, prepared)
                if np.all(np.isfinite(mean)):
                    return mean
            except _MODEL_ERRORS:
                pass
        self.fallbacks += 1
        return np.full(H, last)

    def _mean(self, model: Any, y: np.ndarray, H: int, prepared: Any = None) -> np.ndarray:
        """The fitted model applied to the window ``y`` (with what :meth:`_prepare_windows` gave
        for it): its next H values."""
        return np.asarray(model.forward(y=y, h=H)["mean"], dtype=np.float64)

    def _stream(self, design: Design, online: OnlineDesign) -> SeriesStream:
        return WindowStream(self, design, online, self.window)

    def _save(self, path: Path) -> None:
        # statsforecast models are plain Python objects; pickle is how statsforecast saves them.
        (path / "local_models.pkl").write_bytes(pickle.dumps(self.local))

    def _load(self, path: Path) -> None:
        self.local = pickle.loads((path / "local_models.pkl").read_bytes())
        self._saved_window = int(self.fit_info.get("window", 0))


class ETSForecaster(StatisticalForecaster):
    """statsforecast AutoETS (error, trend and season chosen by AICc) with the daily season."""

    kind = "ets"

    def _model(self, n: int) -> Any:
        from statsforecast.models import AutoETS

        return AutoETS(season_length=self.config.season if n >= 2 * self.config.season else 1)

    def _form(self, fitted: Any, n: int) -> Any:
        return _ets_form(fitted, n)


class ThetaForecaster(StatisticalForecaster):
    """statsforecast AutoTheta (standard, optimised or dynamic theta, chosen by MSE)."""

    kind = "theta"

    def _model(self, n: int) -> Any:
        from statsforecast.models import AutoTheta

        return AutoTheta(season_length=self.config.season if n >= 2 * self.config.season else 1)

    def _form(self, fitted: Any, n: int) -> Any:
        from statsforecast.models import AutoTheta

        if fitted.season_length > 1 and n < 2 * fitted.season_length:
            return None
        return AutoTheta(
            season_length=fitted.season_length,
            decomposition_type=fitted.decomposition_type,
            model=str(fitted.model_["modeltype"]),
        )


class MSTLForecaster(StatisticalForecaster):
    """statsforecast MSTL: daily and weekly seasons (24 and 168 for hourly data) removed by
    LOESS, the rest forecast by AutoETS, the seasons by their last cycle.

    The decomposition (:func:`mstl_decompose`, R's LOESS jumps) is the same at the fit and
    at every origin. Where a call decomposes at least as many full windows as a window has
    steps (a large panel's backtest, fit or forecast), it builds the decomposition once as
    matrices (:class:`MSTLOperator`): every window after that costs a matrix-vector
    product. The matrices are kept through the refit and saved with the models."""

    kind = "mstl"
    # Eight weekly cycles, not four: the weekly season is estimated from twice the weeks. With
    # statsforecast's MSTL refit at 30 daily origins of the last 30 days of a series, MASE went
    # 0.139 -> 0.114 (taylor-demand), 1.237 -> 1.080 (tmy-weather), 0.886 -> 0.744
    # (city-temperatures) from four weeks to eight; twelve gained at most 1% more.
    default_weeks = 8

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.operators: dict[tuple[int, tuple[int, ...]], MSTLOperator] = {}  # (n, seasons) -> operator

    def seasons(self, n: int) -> list[int]:
        """The seasons a window of ``n`` steps holds at least twice."""
        return [m for m in (self.config.season, 7 * self.config.season) if n >= 2 * m + 1]

    def _model(self, n: int) -> Any:
        from statsforecast.models import MSTL, AutoETS

        seasons = self.seasons(n)
        if not seasons:
            return AutoETS(model="ZZN")
        return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))

    def _form(self, fitted: Any, n: int) -> Any:
        from statsforecast.models import MSTL

        if not isinstance(fitted, MSTL):
            return _ets_form(fitted, n) if not self.seasons(n) else None
        trend = _ets_form(fitted.trend_forecaster, n)
        if trend is None or self.seasons(n) != fitted.season_length:
            return None
        return MSTL(season_length=fitted.season_length, trend_forecaster=trend)

    def _successor(self) -> StatisticalForecaster:
        out = MSTLForecaster(self.config)
        out.operators = dict(self.operators)
        return out

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        self._prepare_operator(len(designs))
        super()._fit(designs, val_pos)
        self.fit_info["operators"] = len(self.operators)

    def _predict_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._prepare_operator(sum(len(p) for p in positions))
        return super()._predict_many(designs, positions)

    def _prepare_operator(self, windows: int) -> None:
        """Build the full window's operator when ``windows`` decompositions would cost more
        than building it (n decompositions)."""
        n = self.window
        key = (n, tuple(self.seasons(n)))
        if not key[1] or key in self.operators or windows < OPERATOR_BREAK_EVEN * n or n > MAX_OPERATOR_STEPS:
            return
        start = time.perf_counter()
        workers = _workers() if n >= PARALLEL_OPERATOR_STEPS else 1
        self.operators[key] = MSTLOperator.build(n, key[1], workers=workers)
        log.info(
            "mstl: decomposition of %d-step windows as matrices in %.1f s (%d processes)",
            n,
            time.perf_counter() - start,
            workers,
        )

    def _fit_model(self, model: Any, y: np.ndarray) -> Any:
        from statsforecast.models import MSTL

        if not isinstance(model, MSTL):
            return model.fit(y)
        adjusted, _ = mstl_adjust(y, model.season_length, self._operator(model, len(y)))
        model.trend_forecaster = model.trend_forecaster.new().fit(y=adjusted)
        return model

    def _prepare_windows(self, models: Sequence[Any], windows: Sequence[np.ndarray]) -> list[Any]:
        """Each window an operator decomposes, adjusted with the others of its length in one
        matrix product: (seasonally adjusted window, last cycles); None for the rest."""
        from statsforecast.models import MSTL

        out: list[Any] = [None] * len(windows)
        groups: dict[int, tuple[MSTLOperator, list[int]]] = {}
        for i, (model, y) in enumerate(zip(models, windows, strict=True)):
            operator = self._operator(model, len(y)) if isinstance(model, MSTL) else None
            if operator is not None:
                groups.setdefault(id(operator), (operator, []))[1].append(i)
        for operator, idx in groups.values():
            Y = np.stack([windows[i] for i in idx])
            adjusted = Y @ operator.adjust.T
            cycles = [Y @ cycle.T for cycle in operator.last_cycles]
            for k, i in enumerate(idx):
                out[i] = (adjusted[k], [c[k] for c in cycles])
        return out

    def _mean(self, model: Any, y: np.ndarray, H: int, prepared: Any = None) -> np.ndarray:
        from statsforecast.models import MSTL

        if not isinstance(model, MSTL):
            return super()._mean(model, y, H)
        if prepared is not None:
            adjusted, cycles = prepared
            return mstl_mean(model, adjusted, cycles, H)
        return mstl_forward(model, y, H, operator=self._operator(model, len(y)))

    def _operator(self, model: Any, n: int) -> MSTLOperator | None:
        """The operator that decomposes ``model``'s windows of ``n`` steps, if built."""
        return self.operators.get((n, tuple(_periods(model.season_length))))

    def _save(self, path: Path) -> None:
        super()._save(path)
        if self.operators:
            (path / "mstl_operators.pkl").write_bytes(pickle.dumps(self.operators))

    def _load(self, path: Path) -> None:
        super()._load(path)
        saved = path / "mstl_operators.pkl"
        self.operators = pickle.loads(saved.read_bytes()) if saved.exists() else {}


# A call builds the decomposition operator when it has at least this many full windows
# per step of a window to decompose (building it costs one decomposition per step).
OPERATOR_BREAK_EVEN = 1.0
# Windows longer than this are decomposed one by one (the matrix is n x n float64: 128 MB
# at 4,096 steps, e.g. four weeks of 10-minute data; eight weeks of half-hours are 2,688).
MAX_OPERATOR_STEPS = 4_096


@dataclass(frozen=True)
class MSTLOperator:
    """:func:`mstl_decompose` of every window of ``n`` steps as matrices. STL without
    robustness iterations is linear in the data (its LOESS weights depend on positions
    only), and so is MSTL's sequence of STLs: decomposing the n unit vectors gives the
    matrices, and then a window's decomposition is a matrix-vector product (0.1 ms where
    statsmodels took 13 ms for 672 steps with seasons 24 and 168; equal to 1e-12)."""

    periods: tuple[int, ...]  # ascending
    adjust: np.ndarray  # (n, n): y -> trend + remainder (the seasonally adjusted window)
    last_cycles: tuple[np.ndarray, ...]  # per period: (period, n): y -> the season's last cycle

    @property
    def n(self) -> int:
        return int(self.adjust.shape[0])

    @classmethod
    def build(cls, n: int, periods: Sequence[int], jumps: bool = True, workers: int = 1) -> MSTLOperator:
        """Decompose the ``n`` unit vectors, their columns split across ``workers`` processes
        (each column is its own decomposition: the matrices are the same however split)."""
        periods = sorted(periods)
        if workers <= 1:
            adjust, last_cycles = _operator_columns(n, periods, jumps, np.arange(n))
        else:
            chunks = _chunks(n, workers)
            parts = _in_workers(workers, _operator_columns, [(n, periods, jumps, c) for c in chunks])
            adjust = np.concatenate([a for a, _ in parts], axis=1)
            last_cycles = [np.concatenate(cols, axis=1) for cols in zip(*(c for _, c in parts), strict=True)]
        return cls(periods=tuple(periods), adjust=adjust, last_cycles=tuple(last_cycles))


def _operator_columns(
    n: int, periods: list[int], jumps: bool, columns: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The operator's ``columns``: each unit vector e_j less its seasons (n, len(columns)),
    and each season's last cycle of it (period, len(columns))."""
    adjust = np.zeros((n, len(columns)))
    last_cycles = [np.zeros((p, len(columns))) for p in periods]
    for k, j in enumerate(columns):
        unit = np.zeros(n)
        unit[j] = 1.0
        _, seas, _ = mstl_decompose(unit, periods, jumps)
        adjust[:, k] = unit - seas.sum(axis=0)
        for cycle, p, component in zip(last_cycles, periods, seas, strict=True):
            cycle[:, k] = component[-p:]
    return adjust, last_cycles


def _ets_form(fitted: Any, n: int) -> Any:
    """An unfitted AutoETS of the form a fitted one chose (error, trend, season, damping)."""
    from statsforecast.models import AutoETS

    m = int(fitted.model_["m"])
    components = str(fitted.model_["components"])
    if m > 1 and n < 2 * m:
        return None
    return AutoETS(season_length=m, model=components[:3], damped=components[3] == "D")


def mstl_decompose(
    y: np.ndarray, periods: Sequence[int], jumps: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """statsforecast's ``mstl`` (R's ``forecast::mstl``: seasonal windows 11, 15, ..., two
    passes over the seasons) with R's ``stl`` LOESS jumps for each season (``jumps``; False:
    statsmodels' jumps of 1, which is what statsforecast runs): (trend, seasonals, remainder)."""
    from statsmodels.tsa.seasonal import STL

    periods = sorted(periods)
    windows = 7 + 4 * np.arange(1, len(periods) + 1)
    iterate = 1 if len(periods) == 1 else 2
    seas = np.zeros((len(periods), len(y)))
    deseas = np.array(y, dtype=np.float64)
    fit = None
    for _ in range(iterate):
        for i, (period, window) in enumerate(zip(periods, windows, strict=True)):
            deseas = deseas + seas[i]
            kwargs = stl_jumps(period, int(window)) if jumps else {}
            fit = STL(deseas, period=period, seasonal=int(window), seasonal_deg=0, **kwargs).fit()
            seas[i] = fit.seasonal
            deseas = deseas - seas[i]
    assert fit is not None
    trend = np.asarray(fit.trend)
    return trend, seas, deseas - trend


def mstl_adjust(
    y: np.ndarray, periods: int | Sequence[int], operator: MSTLOperator | None = None, jumps: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The window ``y`` seasonally adjusted (trend + remainder) and each season's last
    cycle (ascending periods), through ``operator`` when it decomposes windows this long."""
    periods = _periods(periods)
    if operator is not None and operator.n == len(y) and list(operator.periods) == periods:
        return operator.adjust @ y, [cycle @ y for cycle in operator.last_cycles]
    trend, seas, remainder = mstl_decompose(y, periods, jumps)
    return trend + remainder, [component[-period:] for period, component in zip(periods, seas, strict=True)]


def _periods(season_length: int | Sequence[int]) -> list[int]:
    return sorted(int(m) for m in np.atleast_1d(season_length))


def mstl_forward(
    model: Any, y: np.ndarray, H: int, jumps: bool = True, operator: MSTLOperator | None = None
) -> np.ndarray:
    """statsforecast ``MSTL.forward(y, h)["mean"]`` of a fitted MSTL, decomposing ``y`` with
    :func:`mstl_decompose` (or ``operator``): the trend forecaster filters the seasonally
    adjusted window, each season repeats its last cycle."""
    return mstl_mean(model, *mstl_adjust(y, model.season_length, operator, jumps), H)


def mstl_mean(model: Any, adjusted: np.ndarray, cycles: Sequence[np.ndarray], H: int) -> np.ndarray:
    """A fitted MSTL's next H values from its window's decomposition: the trend forecaster
    filters the seasonally adjusted window, each season repeats its last cycle."""
    mean = np.asarray(model.trend_forecaster.forward(y=adjusted, h=H)["mean"], dtype=np.float64)
    for cycle in cycles:
        mean = mean + np.tile(cycle, -(-H // len(cycle)))[:H]
    return mean


def stl_jumps(period: int, seasonal: int) -> dict[str, int]:
    """R's ``stl`` defaults for the LOESS jumps of one season (``ceiling(window / 10)``).
    statsforecast follows R's ``forecast::mstl`` but leaves statsmodels' jumps at 1 (a LOESS
    fit at every point): on hourly data with a weekly season that made each forward 170 ms."""

    def next_odd(x: float) -> int:
        k = int(np.ceil(x))
        return k if k % 2 else k + 1

    trend = next_odd(1.5 * period / (1 - 1.5 / seasonal))
    low_pass = next_odd(period + 1) if period % 2 == 0 else next_odd(period)
    return {
        "seasonal_jump": int(np.ceil(seasonal / 10)),
        "trend_jump": int(np.ceil(trend / 10)),
        "low_pass_jump": int(np.ceil(low_pass / 10)),
    }


# Forecasts (series x origins), and series to fit, beyond which a panel's series are split
# across worker processes (starting them costs a few seconds).
PARALLEL_FORWARDS = 2_000
PARALLEL_FITS = 50
# An operator this long is built in worker processes (eight weeks of hourly steps, 1,344:
# 36-37 s in one process, 22 s in two on 2 cores; four weeks, 672, about 9 s in one).
PARALLEL_OPERATOR_STEPS = 1_000
# Windows forecast together in one process (their decompositions one matrix product).
PREPARE_BLOCK = 2_048


def _workers() -> int:
    """Worker processes for a large panel: one per core (up to 8); none inside a daemonic
    process (a Dask worker), which may not start children."""
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def _chunks(n: int, workers: int) -> list[np.ndarray]:
    """Indices 0..n-1 in a few chunks per worker (uneven series costs even out)."""
    return [c for c in np.array_split(np.arange(n), workers * 4) if len(c)]


def _in_workers(workers: int, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``fn(*args)`` for each of ``calls`` in ``workers`` spawned processes, in order. Spawned,
    not forked: a training process holds TensorFlow's and BLAS's threads."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return [f.result() for f in [pool.submit(fn, *args) for args in calls]]


def _estimate_chunk(model: StatisticalForecaster, tails: Sequence[np.ndarray], forms: Sequence[Any]) -> list[Any]:
    """One worker's share of a fit: each series' model estimated on its tail (in its form)."""
    return [model._estimate(y, form) for y, form in zip(tails, forms, strict=True)]


def _predict_chunk(
    model: StatisticalForecaster, designs: Sequence[Design], positions: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], int]:
    """One worker's share: its series' forecasts, and how many fell back to the last value."""
    preds = model._predict_here(designs, positions)
    return preds, model.fallbacks


def _levels(design: Design) -> np.ndarray:
    """The target in its own units (NaN where it was not observed)."""
    return design.y.astype(np.float64) * design.target_std + design.target_mean


def _observed_tail(y: np.ndarray, window: int) -> np.ndarray:
    """The last ``window`` steps from the first observed value on, gaps carried forward
    (statsforecast models take no missing values)."""
    y = y[-window:]
    observed = np.flatnonzero(~np.isnan(y))
    if len(observed) == 0:
        return y[:0]
    y = y[observed[0] :]
    idx = np.where(np.isnan(y), 0, np.arange(len(y)))
    return y[np.maximum.accumulate(idx)]
