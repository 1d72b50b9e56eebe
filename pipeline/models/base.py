"""One interface for every forecaster (darts-style template method).

The base class owns everything that must be the same for every candidate: cutting
data at the training end, covariate choice, per-series scaling fitted on training
data only, building designs, the train/validation split of windows, the
change-from-last-value target and adding the last value back, refusing to predict
before ``fit``, saving the config beside the weights, and following a series one
observation at a time. Subclasses add only what differs: ``_fit`` and ``_predict`` on
scaled arrays, ``_save``/``_load`` for weights, and optionally ``_stream`` (the ESN
steps its reservoir) or members (the ensemble). Models never import MLflow, Prefect
or the store.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from streamcast.config import DEFAULT_TARGET
from streamcast.errors import InputError
from streamcast.features import (
    DEFAULT_CALENDAR,
    PRE_DOW_CALENDAR,
    Design,
    OnlineDesign,
    Scaler,
    build_designs,
    check_calendar,
    panel_freq,
    select_covariates,
    window_ends,
)
from streamcast.models.search import SearchSpace
from streamcast.models.streams import SeriesStream, WindowStream

# Validation origins of all series together (each forecasts H points): enough residuals
# per step for calibration, tuning and ensemble weights, bounded however many series.
MAX_VALIDATION_ORIGINS = 20_000


class NotFittedError(RuntimeError):
    """predict() or save() was called before fit()."""


WEEK_SEASONS = 7  # the weekly anchor reaches back seven daily seasons


class ModelConfig(BaseModel):
    """A candidate's full configuration: logged as params, saved with the weights, enough
    to rebuild it. ``search_space`` names what tuning may change, and within what range."""

    model_config = ConfigDict(extra="forbid")
    search_space: ClassVar[SearchSpace] = {}

    kind: str
    target: str = DEFAULT_TARGET
    horizon: int = 24
    lookback: int = 48
    season: int = 24
    use_covariates: bool = True
    seed: int = 42
    calendar: Annotated[list[str], AfterValidator(check_calendar)] = Field(
        default_factory=lambda: list(DEFAULT_CALENDAR)
    )
    # What a change-predicting model's forecast is a change from: the last value, or the
    # value one season before each step moved by the last season's change (y[t+h-m] +
    # y[t] - y[t-m], the seasonal random walk: a daily shape that drifts slowly), or the
    # same a week back ("weekly", m' = 7m: a weekly shape, as people drive load and traffic).
    # "auto" takes a seasonal anchor when it forecasts the validation slice clearly better.
    anchor: Literal["auto", "last", "seasonal", "weekly"] = "auto"
    # A seasonal anchor averaged over this many past seasons (or weeks), moved by the change
    # of the mean of the last ``anchor_level`` steps: less of one noisy value in every
    # forecast. "auto" chooses both with the anchor; 1 and 1 are the plain random walk.
    anchor_cycles: int = Field(1, ge=1, le=WEEK_SEASONS)
    anchor_level: int = Field(1, ge=1)

    def relative_cost(self) -> float:
        """A fit's time, up to a factor, as the search space changes it: what lets tuning
        tell whether a trial's config still fits the time left from what configs cost so far."""
        return 1.0


class Forecaster(ABC):
    """Direct multi-horizon forecaster: all ``horizon`` steps at once from one origin."""

    kind: ClassVar[str]
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig
    # Networks learn the change from an anchor (the last observed value, or the seasonal
    # random walk: ``ModelConfig.anchor``), so an untrained one starts from that forecast;
    # the base class subtracts it from targets and adds it back.
    predicts_change: ClassVar[bool] = True

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
        self._fit_window: tuple[pd.Timestamp, pd.Timestamp] | None = None
        self._validation: dict[tuple[Any, ...], pd.DataFrame] = {}

    # --- public API ---------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.scaler is not None and self._ready()

    def _ready(self) -> bool:
        """Subclasses holding weights say whether they have them."""
        return True

    @property
    def history_steps(self) -> int:
        """Recent steps a forecast or a stream is warmed on: what the model looks back at.
        By default 30 seasons (30 days of hourly data); a family that knows it needs less
        (the ESN's fading memory) says so, and forecasts load less history."""
        return 30 * self.config.season

    @property
    def member_names(self) -> list[str]:
        """Candidates this one is built from (an ensemble's); they are fitted first."""
        return []

    def attach(self, fitted: Mapping[str, Forecaster]) -> Self:
        """Reuse members already fitted on the same data (only a candidate with members cares)."""
        return self

    @classmethod  # noqa: B027 - most families have nothing to load
    def prepare_runtime(cls) -> None:
        """Load heavy libraries up front, so that their import is not billed to a fit."""

    def fit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Self:
        """Fit on data up to ``train_end``; ``[val_start, train_end]`` is the validation slice
        (early stopping, model selection) and is never used for gradient steps."""
        started = time.perf_counter()
        designs, val_pos = self._prepare(panel, train_end, val_start)
        self._fit(designs, val_pos)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _prepare(
        self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp
    ) -> tuple[dict[str, Design], dict[str, int]]:
        """What every fit decides first: cut at ``train_end``, frequency, covariates, scaling
        (training data only), the anchor; the scaled designs and validation positions."""
        if not panel:
            raise InputError("cannot fit on an empty panel")
        if not val_start <= train_end:
            raise InputError("val_start must not be after train_end")
        cfg = self.config
        train = {sid: f.loc[:train_end] for sid, f in panel.items()}
        for sid, f in train.items():
            if cfg.target not in f.columns:
                raise InputError(f"series {sid!r} has no {cfg.target!r} column")
        self.freq = panel_freq(train)
        self.covariates = select_covariates(train, cfg.target, train_end) if cfg.use_covariates else []
        self.scaler = Scaler.fit(train, [cfg.target, *self.covariates], train_end)
        self._validation = {}
        designs = self._designs(train)
        val_pos = {sid: int(f.index.searchsorted(val_start)) for sid, f in train.items()}
        if self.predicts_change and cfg.anchor == "auto":
            self.config = cfg = cfg.model_copy(update=choose_anchor(designs, val_pos, cfg))
        return designs, val_pos

    # --- fitting by parts: a family whose fit sums over series ----------------------------
    # (the ESN's ridge readout) can be fit on chunks of series in different processes:
    # ``begin_fit`` on the whole panel takes the decisions that need every series (frequency,
    # covariates, scaling, anchor, the family's own), ``fit_part`` on each chunk returns
    # arrays to sum, ``end_fit`` solves. ``fit`` is the same three steps over one part.

    fits_by_parts: ClassVar[bool] = False

    def begin_fit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Self:
        """The decisions of a fit that need every series; then :meth:`fit_part` per chunk."""
        if not self.fits_by_parts:
            raise TypeError(f"{self.kind} is not fitted by parts")
        started = time.perf_counter()
        designs, val_pos = self._prepare(panel, train_end, val_start)
        self._fit_window = (train_end, val_start)
        self._begin_parts(designs, val_pos)
        self.fit_seconds = time.perf_counter() - started
        return self

    def fit_part(self, panel: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
        """What the series of ``panel`` (a chunk of the panel ``begin_fit`` saw) add to the fit."""
        if self._fit_window is None:
            raise NotFittedError(f"{self.kind}: call begin_fit() before fit_part()")
        train_end, val_start = self._fit_window
        train = {sid: f.loc[:train_end] for sid, f in panel.items()}
        designs = self._designs(train)
        val_pos = {sid: int(f.index.searchsorted(val_start)) for sid, f in train.items()}
        return self._fit_part(designs, val_pos)

    def end_fit(self, parts: Sequence[Mapping[str, np.ndarray]], part_seconds: float = 0.0) -> Self:
        """Finish the fit from every chunk's :meth:`fit_part` (``part_seconds``: their time)."""
        started = time.perf_counter()
        self._end_parts(parts)
        self.fit_seconds += part_seconds + time.perf_counter() - started
        return self

    def _begin_parts(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        raise NotImplementedError

    def _fit_part(self, designs: dict[str, Design], val_pos: dict[str, int]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _end_parts(self, parts: Sequence[Mapping[str, np.ndarray]]) -> None:
        raise NotImplementedError

    def refit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Forecaster:
        """A new forecaster with this one's config (and seed) fit on data up to ``train_end``:
        the backtest's winner refit on all the data before it is registered."""
        return type(self)(self.config).fit(panel, train_end, val_start)

    def predict(self, panel: dict[str, pd.DataFrame], origins: list[pd.Timestamp] | None = None) -> pd.DataFrame:
        """Forecast ``horizon`` steps after each origin, from data up to that origin only.

        Returns a long frame: series_id, origin_ts, step, ts, yhat. Without
        ``origins`` each series is forecast from its last timestamp.
        """
        self._check_fitted("predict")
        assert self.freq is not None
        H = self.config.horizon
        steps = np.arange(1, H + 1)
        cuts: dict[str, tuple[pd.DatetimeIndex, pd.DataFrame]] = {}
        for sid, frame in panel.items():
            if origins is None:  # from the end of every series (a deployed forecast): nothing to cut
                if len(frame):
                    cuts[sid] = (frame.index[-1:], frame)
                continue
            wanted = pd.DatetimeIndex(origins)
            wanted = wanted[wanted.isin(frame.index)]
            if len(wanted) == 0:
                continue
            # Cutting at the last origin makes leaks impossible, whatever _predict does.
            cuts[sid] = (wanted, frame.loc[: wanted.max()])
        designs = self._designs({sid: cut for sid, (_, cut) in cuts.items()})
        todo = [(wanted, designs[sid], cut.index.get_indexer(wanted)) for sid, (wanted, cut) in cuts.items()]
        # Every series at once: a family may batch them (the ESN runs its reservoirs together).
        forecasts = self.forecast_scaled_many([d for _, d, _ in todo], [p for _, _, p in todo])
        if not todo:
            return pd.DataFrame(columns=["series_id", "origin_ts", "step", "ts", "yhat"])
        sids, origin_ns, yhat = [], [], []
        for (wanted, design, _), scaled in zip(todo, forecasts, strict=True):
            if scaled.shape != (len(wanted), H):
                raise RuntimeError(f"{self.kind} returned shape {scaled.shape}, expected {(len(wanted), H)}")
            sids.append(np.repeat(np.array([design.series_id], dtype=object), len(wanted) * H))
            origin_ns.append(np.repeat(wanted.tz_convert("UTC").as_unit("ns").asi8, H))
            yhat.append(design.unscale(scaled).ravel())
        # One frame for all series (a frame per series cost a second at 1,000 series).
        origin = np.concatenate(origin_ns)
        step = np.tile(steps, len(origin) // H)
        return pd.DataFrame(
            {
                "series_id": np.concatenate(sids),
                "origin_ts": pd.DatetimeIndex(origin, tz="UTC"),
                "step": step,
                "ts": pd.DatetimeIndex(origin + step * self.freq.value, tz="UTC"),
                "yhat": np.concatenate(yhat),
            }
        )

    @property
    def validation_stride(self) -> int:
        """Steps between the origins of :meth:`validation_forecasts` (1: every step)."""
        return 1

    # At most this many validation origins over all series (None: MAX_VALIDATION_ORIGINS; a
    # model whose forecasts are dear, a filter pass per series and origin, asks for fewer).
    max_validation_origins: ClassVar[int | None] = None

    def validation_stride_for(
        self, panel: Mapping[str, pd.DataFrame], val_start: pd.Timestamp, train_end: pd.Timestamp
    ) -> int:
        """:attr:`validation_stride`, widened on a large panel so that all series together have
        at most ``MAX_VALIDATION_ORIGINS`` validation origins (a thousand series forecast at
        every step of a 30-day slice would be 17 million points, for a quantile per step); the
        widened stride is :func:`window_stride`'s, so origins still meet every hour of the week."""
        freq = panel_freq(dict(panel))
        per_series = max(int((train_end - self.config.horizon * freq - val_start) / freq) + 1, 1)
        cap = self.max_validation_origins or MAX_VALIDATION_ORIGINS
        return max(self.validation_stride, window_stride(per_series * len(panel), cap, self.config.season))

    def validation_forecasts(
        self,
        panel: dict[str, pd.DataFrame],
        val_start: pd.Timestamp,
        train_end: pd.Timestamp,
        stride: int | None = None,
        aligned: bool = False,
    ) -> pd.DataFrame:
        """Forecasts at origins ``stride`` steps apart (default :attr:`validation_stride`) in
        the validation slice whose H targets end by ``train_end``: what calibration, tuning
        and ensemble weights may look at; ``aligned``: at the times ``stride`` steps apart
        back from ``train_end`` (a backtest's origins are every ``step`` from it), not from
        ``val_start``. Remembered per fit: calibration and the ensemble both ask."""
        stride = stride or self.validation_stride_for(panel, val_start, train_end)
        key = (val_start, train_end, stride, aligned, tuple(sorted(panel)))
        cached = self._validation.get(key)
        if cached is None:
            freq = panel_freq(panel)
            first = val_start
            if aligned:  # on the grid of origins ``stride`` steps apart that ends at train_end
                first = train_end - ((train_end - val_start) // (freq * stride)) * (freq * stride)
            origins = list(pd.date_range(first, train_end - self.config.horizon * freq, freq=freq * stride))
            cached = self.predict({sid: f.loc[:train_end] for sid, f in panel.items()}, origins)
            self._validation = {key: cached}
        return cached.copy()

    def forget_validation(self) -> None:
        """Drop the remembered validation forecasts (once calibration and the ensemble
        have read them: at 1,000 series each candidate's are 480,000 rows)."""
        self._validation = {}

    def stream(self, series_id: str, frame: pd.DataFrame) -> SeriesStream:
        """Follow one series from the end of ``frame`` (its regularised recent history):
        the returned stream takes one observation at a time and forecasts after each."""
        return self._stream(*self._stream_inputs(series_id, frame))

    def streams(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, SeriesStream]:
        """:meth:`stream` for many series at once (a family may warm them together)."""
        return {sid: self._stream(*inputs) for sid, inputs in self._streams_inputs(frames).items()}

    def _stream_inputs(self, series_id: str, frame: pd.DataFrame) -> tuple[Design, OnlineDesign]:
        return self._streams_inputs({series_id: frame})[series_id]

    def _streams_inputs(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, tuple[Design, OnlineDesign]]:
        """Each series' design over its history and the online design continuing it."""
        self._check_fitted("stream")
        assert self.scaler is not None
        target, calendar = self.config.target, self.config.calendar
        return {
            sid: (design, OnlineDesign.after(frames[sid], design, target, self.covariates, self.scaler, calendar))
            for sid, design in self._designs(frames).items()
        }

    def save(self, path: Path) -> Path:
        """Write config, feature state and weights to the folder ``path``."""
        self._check_fitted("save")
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
        from streamcast.models import get_model_class

        meta = json.loads((path / "forecaster.json").read_text())
        meta["config"].setdefault("calendar", PRE_DOW_CALENDAR)  # saved before the calendar was configurable
        klass = get_model_class(meta["config"]["kind"])
        model = klass(klass.config_cls(**meta["config"]))
        model.covariates = meta["covariates"]
        model.scaler = Scaler(**meta["scaler"])
        model.freq = pd.Timedelta(seconds=meta["freq_seconds"])
        model.fit_seconds = meta["fit_seconds"]
        model.fit_info = meta.get("fit_info", {})
        model._load(path)
        return model

    # --- what subclasses build on --------------------------------------------

    def split_ends(self, design: Design, val_pos: int, lookback: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Window end positions for training (all targets before the validation slice)
        and for validation (origins inside it)."""
        H = self.config.horizon
        start = max(start, self.anchor_lag)  # windows whose anchor is the configured one
        train = window_ends(design.y, lookback, H, start=start, stop=val_pos - H)
        val = window_ends(design.y, lookback, H, start=max(start, val_pos))
        return train, val

    def targets(self, design: Design, ends: np.ndarray) -> np.ndarray:
        """What ``_predict`` learns for each window end: the next H scaled target values,
        as change from the anchor (:meth:`anchor_at`) when the model predicts change."""
        future = design.y[ends[:, None] + np.arange(1, self.config.horizon + 1)[None, :]]
        return future - self.anchor_at(design.X[:, 0], ends) if self.predicts_change else future

    def forecast_scaled(self, design: Design, positions: np.ndarray) -> np.ndarray:
        """Scaled forecasts at ``positions`` of ``design`` (what streams call between observations)."""
        return self.forecast_scaled_many([design], [positions])[0]

    def forecast_scaled_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`forecast_scaled` of many series in one call (:meth:`_predict_many`)."""
        outs = self._predict_many(designs, positions)
        if not self.predicts_change:
            return outs
        return [out + self.anchor_at(d.X[:, 0], p) for out, d, p in zip(outs, designs, positions, strict=True)]

    @property
    def anchor(self) -> Anchor:
        cfg = self.config
        period = anchor_period(cfg.anchor, cfg.season) if self.predicts_change else 0
        return Anchor(period, cfg.horizon, cfg.anchor_cycles, cfg.anchor_level)

    @property
    def anchor_lag(self) -> int:
        """Steps back the anchor reaches: 0 for the last value."""
        return self.anchor.lag

    def anchor_at(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """What the forecasts at ``positions`` of the scaled, forward-filled target ``x`` are a
        change from: (len(positions), 1) for the last value, (len(positions), H) seasonal."""
        return self.anchor.values(x, positions)

    def _designs(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, Design]:
        """Each series' design (:func:`~streamcast.features.build_design`), the series on
        one time grid built together."""
        assert self.scaler is not None
        return build_designs(frames, self.config.target, self.covariates, self.scaler, self.config.calendar)

    def _check_fitted(self, action: str) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.kind}: call fit() before {action}()")

    # --- hooks --------------------------------------------------------------

    @abstractmethod
    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        """Fit on scaled designs; positions ``>= val_pos[sid]`` are the validation slice."""

    @abstractmethod
    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        """Scaled forecasts (as change from the last value if ``predicts_change``), shape
        (len(positions), horizon), using data up to each position."""

    def _predict_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`_predict` for each series; a family that can batch series overrides it."""
        return [self._predict(d, p) for d, p in zip(designs, positions, strict=True)]

    def _stream(self, design: Design, online: OnlineDesign) -> SeriesStream:
        """Default: keep a window of recent rows and re-predict from its end."""
        context = max(self.config.lookback, self.config.season, self.anchor_lag + 1) + 7 * self.config.season
        return WindowStream(self, design, online, context)

    def _save(self, path: Path) -> None:  # noqa: B027 - stateless models have no weights
        pass

    def _load(self, path: Path) -> None:  # noqa: B027
        pass


def anchor_values(x: np.ndarray, positions: np.ndarray, horizon: int, season: int, seasonal: bool) -> np.ndarray:
    """The last value of ``x`` at each position as a column, or with ``seasonal`` the seasonal
    random walk's forecast of every step: x[p+h-km] + k (x[p] - x[p-m]), k = ceil(h/m).
    Positions with less than a season before them fall back to the last value."""
    p = np.asarray(positions, dtype=np.int64)
    last = x[p, None].astype(np.float64)
    if not seasonal:
        return last
    m = season
    h = np.arange(1, horizon + 1)[None, :]
    k = (h - 1) // m + 1
    ok = p >= m
    q = np.where(ok, p, m)[:, None]  # stand-in positions where a season is missing
    out = x[q + h - k * m] + k * (x[q] - x[q - m])
    return np.where(ok[:, None], out, last)


def window_stride(total: int, cap: int | None, season: int = 1) -> int:
    """Every how many windows one is kept so that at most ``cap`` of ``total`` remain (each
    series keeps its evenly spaced share). The stride shares no factor with the daily and
    weekly seasons (``season`` and ``7 * season``): every 8th hourly window would train on
    three hours of the day only, every 11th meets all of them in every series."""
    if not cap or total <= cap:
        return 1
    stride = -(-total // cap)
    while math.gcd(stride, 7 * season) != 1:
        stride += 1
    return stride


def anchor_period(anchor: str, season: int) -> int:
    """The period of ``anchor`` with the daily season ``season`` (0: the last value)."""
    return {"seasonal": season, "weekly": WEEK_SEASONS * season}.get(anchor, 0)


@dataclass(frozen=True)
class Anchor:
    """A change-predicting model's anchor: the last value (``period`` 0), or the seasonal
    random walk of ``period`` averaged over ``cycles`` periods back, each moved by the change
    of the mean of ``level`` steps since: for step h (c = ceil(h / period) periods ahead),
    mean over j = 1..cycles of  x[p+h-c j period] + mean(x[p-level+1..p]) -
    mean(x[p-c j period-level+1..p-c j period]). One cycle and level one is
    x[p+h-c period] + c (x[p] - x[p-period]), the plain seasonal random walk."""

    period: int
    horizon: int
    cycles: int = 1
    level: int = 1

    @property
    def plain(self) -> bool:
        return self.cycles == 1 and self.level == 1

    @property
    def lag(self) -> int:
        """Steps back from a position the anchor reads (positions before it take the last value)."""
        if not self.period:
            return 0
        if self.plain:
            return self.period
        return -(-self.horizon // self.period) * self.cycles * self.period + self.level - 1

    def values(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The anchor at each of ``positions`` of ``x``: (len(positions), 1) for the last
        value, else (len(positions), horizon)."""
        if self.plain:
            return anchor_values(x, positions, self.horizon, self.period or 1, seasonal=self.period > 0)
        x = np.asarray(x, dtype=np.float64)  # sums over a stream's buffer or a whole history agree
        p = np.asarray(positions, dtype=np.int64)
        last = x[p, None]
        lag, m = self.lag, self.period
        ok = p >= lag
        q = np.where(ok, p, min(lag, len(x) - 1))[:, None]  # stand-in positions where history is short
        h = np.arange(1, self.horizon + 1)[None, :]
        c = (h - 1) // m + 1
        finite = np.isfinite(x)
        sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
        counts = np.concatenate([[0], np.cumsum(finite)])

        def mean_to(end: np.ndarray) -> np.ndarray:
            lo = np.maximum(end + 1 - self.level, 0)
            n = counts[end + 1] - counts[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                return (sums[end + 1] - sums[lo]) / n

        now = mean_to(q)
        out = np.zeros((len(p), self.horizon))
        for j in range(1, self.cycles + 1):
            back = c * j * m
            out += x[np.maximum(q + h - back, 0)] + now - mean_to(np.maximum(q - back, 0))
        return np.where(ok[:, None], out / self.cycles, last)


def anchor_grid(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """The anchors "auto" compares: (kind, cycles, level), simplest first."""
    m = cfg.season
    levels = sorted({1, max(m // 4, 1), max(m // 2, 1), m})
    grid = [("last", 1, 1), ("seasonal", 1, 1)]
    if "dow" in cfg.calendar:  # a weekly rhythm (the training's calendar says so)
        grid += [("weekly", k, lv) for k in WEEKLY_CYCLES for lv in levels]
    return grid


def choose_anchor(designs: dict[str, Design], val_pos: dict[str, int], cfg: ModelConfig) -> dict[str, Any]:
    """The anchor that forecasts the validation slice (every series' origins in it) best:
    the seasonal random walk when its mean absolute error is at most ``ANCHOR_MARGIN`` of the
    last value's, the best weekly one (over weeks and level windows) when at most that of
    both. Weekly anchors are candidates only for a target with a weekly rhythm (the day of
    week among the calendar inputs: weather's weekly anchors, averaged over weeks, can look
    better on validation and forecast worse), and an anchor other than the plain seasonal
    random walk only when a week of training windows remains after the history it reaches
    back over."""
    H, m = cfg.horizon, cfg.season
    week = WEEK_SEASONS * m

    def room(lag: int) -> bool:
        return sum(max(v - H - lag - cfg.lookback, 0) for v in val_pos.values()) >= week

    grid = {g: Anchor(anchor_period(g[0], m), H, g[1], g[2]) for g in anchor_grid(cfg)}
    grid = {g: a for g, a in grid.items() if g[0] != "weekly" or room(a.lag)}
    first = max(a.lag for a in grid.values())
    total = sum(max(len(d.y) - H - max(val_pos[sid], first), 0) for sid, d in designs.items())
    stride = window_stride(total, ANCHOR_ORIGINS, m)  # a large panel's share of its origins
    # Every series laid end to end: one anchor computation per candidate anchor, not one per
    # series (origins are at least ``first`` steps into their series: no anchor reads another).
    xs, ys, ends, offset = [], [], [], 0
    for sid, d in designs.items():
        xs.append(d.X[:, 0].astype(np.float64))
        ys.append(d.y.astype(np.float64))
        ends.append(offset + np.arange(max(val_pos[sid], first), len(d.y) - H, stride))
        offset += len(d.y)
    err = dict.fromkeys(grid, 0.0)
    all_ends = np.concatenate(ends) if ends else np.empty(0, np.int64)
    if len(all_ends):
        x, y = np.concatenate(xs), np.concatenate(ys)
        future = y[all_ends[:, None] + np.arange(1, H + 1)[None, :]]
        err = {g: float(np.nansum(np.abs(future - a.values(x, all_ends)))) for g, a in grid.items()}
    # (no validation points, or a constant target: all 0, the last value)
    chosen = ("last", 1, 1)
    for kind in ("seasonal", "weekly"):
        options = [g for g in grid if g[0] == kind]
        if not options:
            continue
        best = min(options, key=lambda g: err[g])
        if err[chosen] > 0 and err[best] <= ANCHOR_MARGIN * err[chosen]:
            chosen = best
    return {"anchor": chosen[0], "anchor_cycles": chosen[1], "anchor_level": chosen[2]}


ANCHOR_MARGIN = 0.8  # a seasonal anchor must beat the simpler ones by 20% on validation
ANCHOR_ORIGINS = 20_000  # validation origins of all series together that choose the anchor
# Weeks a weekly anchor may average over. The daily anchor stays the plain seasonal random
# walk: averaged over 7 days it forecast NYC's validation slice 20% better, yet the Hopfield
# memory forecast worse from it (backtest MASE 0.79 -> 0.85), and moved by the change of the
# last day's mean it made the CNN worse on city-temperatures (0.520 -> 0.579) while helping
# the ESN (0.663 -> 0.606): which helps depends on the model, and choosing per model would
# need each model fit twice.
WEEKLY_CYCLES = (1, 2, 3)
