"""Rolling-origin backtest: fit once before the first origin, then forecast at F
origins from only the data available at each, and score every candidate the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from streamcast.config import DEFAULT_TARGET
from streamcast.errors import InputError
from streamcast.features import panel_freq
from streamcast.metrics import aggregate, coverage, mase_scale, score_points, with_actuals
from streamcast.models.base import Forecaster

log = logging.getLogger(__name__)


class BacktestConfig(BaseModel):
    """Where and how candidates are compared (the defaults of ``streamcast train``)."""

    target: str = DEFAULT_TARGET
    horizon: int = Field(24, ge=1, description="steps forecast at once (H)")
    folds: int = Field(30, ge=1, description="backtest origins (F)")
    step: int = Field(24, ge=1, description="steps between origins")
    val_steps: int = Field(24 * 30, ge=1, description="validation slice at the end of the training period")
    season: int = Field(24, ge=1, description="season of the MASE scale")
    level: float = Field(0.9, gt=0, lt=1, description="prediction interval coverage")
    fitted_to_history: bool = Field(
        False, description="folds and validation slice were shortened to fit a short history (see fit_to_history)"
    )


MIN_FOLDS = 5  # fewer origins than this say too little about a candidate
MIN_VALIDATION_SEASONS = 7  # the validation slice spans at least this many seasons (a week of hourly data)


@dataclass
class Calibration:
    """Split-conformal interval half-widths per step, from validation residuals."""

    level: float
    half_width: np.ndarray  # (H,)
    n: int

    @classmethod
    def from_residuals(cls, residuals: pd.DataFrame, horizon: int, level: float) -> Calibration:
        widths = np.full(horizon, np.nan)
        n = 0
        for h, grp in residuals.groupby("step"):
            r = np.abs(grp["residual"].to_numpy())
            n = len(r)
            widths[int(h) - 1] = conformal_quantile(r, level)
        # A step without residuals borrows its neighbour's width.
        widths = pd.Series(widths).ffill().bfill().fillna(0.0).to_numpy()
        return cls(level=level, half_width=widths, n=n)

    def scaled(self, factor: float) -> Calibration:
        """These widths times ``factor`` (the shape over steps stays)."""
        return Calibration(self.level, self.half_width * factor, self.n)

    def apply(self, forecast: pd.DataFrame) -> pd.DataFrame:
        out = forecast.copy()
        w = self.half_width[out["step"].to_numpy() - 1]
        out["lo"] = out["yhat"] - w
        out["hi"] = out["yhat"] + w
        return out


@dataclass
class CandidateResult:
    name: str
    model: Forecaster
    forecasts: pd.DataFrame  # series_id, origin_ts, step, ts, yhat, lo, hi, actual
    calibration: Calibration
    fit_seconds: float
    predict_seconds: float


@dataclass
class BacktestResult:
    config: BacktestConfig
    origins: list[pd.Timestamp]
    train_end: pd.Timestamp
    val_start: pd.Timestamp
    scales: dict[str, float]
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    # Series whose MASE scale is not the seasonal naive MAE (constant or short series): the basis used.
    scale_fallbacks: dict[str, str] = field(default_factory=dict)
    _comparison: tuple[list[tuple[Any, ...]], pd.DataFrame] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def scored_candidate(self, name: str) -> pd.DataFrame:
        """``name``'s forecasts that have actuals, with their errors (MASE on ``scales``)."""
        return score_points(self.candidates[name].forecasts, self.scales)

    def scored(self) -> pd.DataFrame:
        """Every candidate's scored points in one frame (``candidate`` column): as large as
        all the backtests together; :meth:`comparison` never builds it."""
        frames = []
        for name in self.candidates:
            s = self.scored_candidate(name)
            s.insert(0, "candidate", name)
            frames.append(s)
        return pd.concat(frames, ignore_index=True)

    def metrics_by_step(self) -> pd.DataFrame:
        """MAE, RMSE, sMAPE, MASE per candidate, series and step."""
        return aggregate(self.scored(), ["candidate", "series_id", "step"])

    def comparison(self) -> pd.DataFrame:
        """One row per candidate, best first: mean MASE over series, pooled MAE/RMSE/sMAPE;
        at equal MASE the candidates others are built from first, then by name.

        Scored one candidate at a time (all of them at once were 9 million points and a
        1.7 GB transient at 1,000 series), and kept until the candidates change: the
        winner, MLflow logging and the registry all ask for it."""
        # The candidates and their forecast frames themselves (held, so compared by identity).
        key = [(n, c, c.forecasts, c.fit_seconds) for n, c in self.candidates.items()]
        if self._comparison is not None and _same_candidates(self._comparison[0], key):
            return self._comparison[1].copy()
        mase, overall, covered = {}, [], {}
        for name in self.candidates:
            scored = self.scored_candidate(name).assign(candidate=name)
            mase[name] = aggregate(scored, ["series_id"])["mase"].mean()
            overall.append(aggregate(scored, ["candidate"]))
            covered.update(coverage(scored, ["candidate"]))
        pooled = (
            pd.concat(overall).set_index("candidate") if overall else pd.DataFrame(columns=["mae", "rmse", "smape"])
        )
        table = pd.DataFrame(
            {
                "mase": pd.Series(mase, dtype=float),
                "mae": pooled["mae"],
                "rmse": pooled["rmse"],
                "smape": pooled["smape"],
                "coverage": pd.Series(covered, dtype=float),
                "fit_seconds": pd.Series({n: c.fit_seconds for n, c in self.candidates.items()}, dtype=float),
            }
        ).sort_index()
        # At equal MASE a candidate built from others (an ensemble that kept one member)
        # ranks after them: the same forecasts from the simpler model.
        table["composite"] = [bool(getattr(self.candidates[n].model, "member_names", None)) for n in table.index]
        table = table.sort_values(["mase", "composite"], kind="stable").drop(columns="composite")
        table = table.reset_index(names="candidate")
        self._comparison = (key, table)
        return table.copy()

    @property
    def winner(self) -> str:
        """The candidate with the lowest MASE; never one whose MASE is NaN or infinite."""
        best = self.comparison().iloc[0]
        if not np.isfinite(best["mase"]):
            raise InputError(
                f"no candidate has a finite MASE on {self.config.target!r} (no actuals at the backtest's "
                "forecast times?); nothing is registered"
            )
        return str(best["candidate"])


def _same_candidates(kept: list[tuple[Any, ...]], now: list[tuple[Any, ...]]) -> bool:
    """The same names, candidate objects, forecast frames (by identity) and fit times."""
    return len(kept) == len(now) and all(
        a[0] == b[0] and a[1] is b[1] and a[2] is b[2] and a[3] == b[3] for a, b in zip(kept, now, strict=True)
    )


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Finite-sample split-conformal quantile: the ceil((n+1)*level)-th smallest score."""
    r = np.sort(scores)
    k = min(int(np.ceil((len(r) + 1) * level)), len(r))
    return float(r[k - 1])


def tracked_quantile(scores: np.ndarray, times: np.ndarray, level: float, rate: float, start: float) -> float:
    """The level of an online quantile tracker after ``scores`` arrived at ``times``
    (Angelopoulos, Candes & Tibshirani 2023, "Conformal PID control", its P term; adaptive
    conformal inference in the score's units). Points that mature at one time count as
    one step: with ``miss`` the share of them above the level, ``log q`` moves by
    ``rate * (miss - (1 - level))``. It rises while more than ``1 - level`` of the points
    fall outside and sinks while fewer do; over any sequence, the share of misses after T
    steps is within ``(|log q_T - log q_0| + rate) / (rate * T)`` of ``1 - level``. Works on
    the log scale so the level stays positive and moves by the same factor at any scale."""
    if len(scores) == 0:
        return start
    order = np.argsort(times, kind="stable")
    s, t = np.asarray(scores, dtype=float)[order], np.asarray(times)[order]
    bounds = np.flatnonzero(np.r_[True, t[1:] != t[:-1], True])
    log_q = float(np.log(max(start, 1e-12)))
    for a, b in itertools.pairwise(bounds):
        miss = float(np.mean(s[a:b] > np.exp(log_q)))
        log_q += rate * (miss - (1.0 - level))
    return float(np.exp(log_q))


def fit_to_history(panel: dict[str, pd.DataFrame], cfg: BacktestConfig, fixed: Collection[str]) -> BacktestConfig:
    """``cfg`` when the history holds it. Otherwise, of ``folds`` and ``val_steps``, those
    not in ``fixed`` (the ones the user left at their defaults) shrink to what the history
    allows: the validation slice to a quarter of the room (at least ``MIN_VALIDATION_SEASONS``
    seasons, and as much training data before it), the origins to what is left (at least
    ``MIN_FOLDS``). Below that minimum, or when the user fixed both, an :class:`InputError`
    says how much history is needed."""
    end = min(f.index[-1] for f in panel.values())
    start = max(f.index[0] for f in panel.values())
    freq = panel_freq(panel)
    room = int((end - start) / freq) - 2 * cfg.horizon - 1  # steps for (folds - 1) * step + validation
    if (cfg.folds - 1) * cfg.step + cfg.val_steps <= room:
        return cfg
    # Shortened, the training period before the validation slice is kept at least as long as it.
    val_free, folds_free = "val_steps" not in fixed, "folds" not in fixed
    min_val = min(cfg.val_steps, MIN_VALIDATION_SEASONS * cfg.season) if val_free else cfg.val_steps
    least_folds = min(cfg.folds, MIN_FOLDS) if folds_free else cfg.folds
    val = cfg.val_steps
    if val_free:  # a quarter of the room, at least min_val, and room left for the fewest origins
        val = min(cfg.val_steps, max(min_val, room // 4), max(min_val, (room - (least_folds - 1) * cfg.step) // 2))
    folds = min(cfg.folds, (room - 2 * val) // cfg.step + 1) if folds_free else cfg.folds
    if folds < least_folds or (folds - 1) * cfg.step + 2 * val > room:
        have = int((end - start) / freq) + 1
        need = (least_folds - 1) * cfg.step + 2 * min_val + 2 * cfg.horizon + 2
        raise InputError(
            f"not enough history to train: every series shares {have} steps ({_days(have, freq)}, "
            f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}); {least_folds} origins {cfg.step} steps apart, "
            f"a {min_val}-step validation slice, as much training before it and the horizon need {need} "
            f"({_days(need, freq)})"
        )
    return cfg.model_copy(update={"folds": folds, "val_steps": val, "fitted_to_history": True})


def _days(steps: int, freq: pd.Timedelta) -> str:
    return f"{steps * freq / pd.Timedelta(days=1):.1f} days"


def plan_origins(panel: dict[str, pd.DataFrame], cfg: BacktestConfig) -> list[pd.Timestamp]:
    """F origins, ``step`` apart, the last leaving exactly H steps of data after it."""
    end = min(f.index[-1] for f in panel.values())
    freq = panel_freq(panel)
    last = end - cfg.horizon * freq
    origins = [last - (cfg.folds - 1 - k) * cfg.step * freq for k in range(cfg.folds)]
    start = max(f.index[0] for f in panel.values())
    if origins[0] - cfg.val_steps * freq <= start + cfg.horizon * freq:
        raise InputError(
            f"not enough history for {cfg.folds} origins {cfg.step} steps apart plus a {cfg.val_steps}-step "
            f"validation slice (data from {start} to {end})"
        )
    return origins


def validation_residuals(
    model: Forecaster,
    panel: dict[str, pd.DataFrame],
    val_start: pd.Timestamp,
    train_end: pd.Timestamp,
    target: str,
    stride: int | None = None,
) -> pd.DataFrame:
    """Residuals of forecasts issued inside the validation slice whose targets are all
    at or before ``train_end``: calibration never sees the points it is scored on
    (``stride``: steps between origins, else the model's choice for this panel)."""
    fc = with_actuals(model.validation_forecasts(panel, val_start, train_end, stride), panel, target)
    fc["residual"] = fc["actual"] - fc["yhat"]
    return fc.dropna(subset=["residual"])


def plan_backtest(panel: dict[str, pd.DataFrame], cfg: BacktestConfig) -> BacktestResult:
    """Origins, training cut-off, validation slice and MASE scales, before any candidate runs."""
    origins = plan_origins(panel, cfg)
    freq = panel_freq(panel)
    train_end = origins[0]
    val_start = train_end - (cfg.val_steps - 1) * freq
    scales, fallbacks = {}, {}
    for sid, f in panel.items():
        scales[sid], basis = mase_scale(f[cfg.target].loc[:train_end], cfg.season)
        if basis != "seasonal_naive":
            fallbacks[sid] = basis
    if fallbacks:
        log.warning("MASE scale falls back for %d series (constant or short history): %s", len(fallbacks), fallbacks)
    return BacktestResult(
        config=cfg, origins=origins, train_end=train_end, val_start=val_start, scales=scales, scale_fallbacks=fallbacks
    )


def backtest_candidate(
    panel: dict[str, pd.DataFrame],
    plan: BacktestResult,
    name: str,
    model: Forecaster,
    on_progress: Callable[[str, str], None] | None = None,
) -> CandidateResult:
    """Fit one candidate before the first origin, forecast at every origin and calibrate
    its intervals on the validation slice. Candidates are independent of each other (an
    ensemble gets its fitted members attached first), so they can run anywhere."""
    cfg = plan.config
    if on_progress:
        on_progress(name, "fit")
    model.fit(panel, train_end=plan.train_end, val_start=plan.val_start)
    if on_progress:
        on_progress(name, "predict")
    t0 = time.perf_counter()
    fc = model.predict(panel, plan.origins)
    predict_seconds = time.perf_counter() - t0
    calib = Calibration.from_residuals(
        validation_residuals(model, panel, plan.val_start, plan.train_end, cfg.target), cfg.horizon, cfg.level
    )
    fc = with_actuals(calib.apply(fc), panel, cfg.target)
    log.info("%s: fit %.1fs", name, model.fit_seconds)
    if on_progress:
        mase = aggregate(score_points(fc, plan.scales), ["series_id"])["mase"].mean()
        on_progress(name, f"done: fit {model.fit_seconds:.1f}s, MASE {mase:.3f}")
    return CandidateResult(name, model, fc, calib, model.fit_seconds, predict_seconds)


@dataclass
class Refit:
    """The winner refit on all the data: what gets registered and forecasts."""

    model: Forecaster
    calibration: Calibration
    train_end: pd.Timestamp
    val_start: pd.Timestamp
    seconds: float


def refit_winner(panel: dict[str, pd.DataFrame], result: BacktestResult, model: Forecaster | None = None) -> Refit:
    """Fit the backtest's winner again (same config, same seed) on every observation, with
    the validation slice moved to the end of the data, and calibrate its intervals there.

    ``model``: the winner already refit so (by parts, on other workers).

    The backtest scored the winner as fit before its first origin; deployed, that model
    would forecast from a fit that misses the backtest window and the validation slice
    before it. Refit, it has seen the most recent data, as a forecaster refit on all the
    data does in darts or statsforecast.

    Its intervals are calibrated on the backtest's residuals: forecasts issued 1 to F
    steps after a fit ended, by a fit that never saw them, which is exactly how the
    refit forecasts after deployment (the validation slice's residuals come from the
    stretch early stopping and model selection looked at, and run narrow)."""
    cfg = result.config
    cand = result.candidates[result.winner]
    freq = panel_freq(panel)
    train_end = max(f.index[-1] for f in panel.values())
    val_start = train_end - (cfg.val_steps - 1) * freq
    t0 = time.perf_counter()
    seconds = model.fit_seconds if model is not None else 0.0
    model = model if model is not None else cand.model.refit(panel, train_end, val_start)
    scored = cand.forecasts.dropna(subset=["actual"])
    calib = Calibration.from_residuals(
        scored.assign(residual=scored["actual"] - scored["yhat"]), cfg.horizon, cfg.level
    )
    return Refit(model, calib, train_end, val_start, seconds + time.perf_counter() - t0)


def run_backtest(
    panel: dict[str, pd.DataFrame],
    models: dict[str, Forecaster],
    cfg: BacktestConfig,
    on_progress: Callable[[str, str], None] | None = None,
) -> BacktestResult:
    """Fit each candidate once before the first origin and forecast at every origin."""
    result = plan_backtest(panel, cfg)
    # Candidates built from others (the ensemble) go last and reuse their members,
    # already fitted on the same data.
    for name in sorted(models, key=lambda n: bool(models[n].member_names)):
        model = models[name].attach({n: c.model for n, c in result.candidates.items()})
        result.candidates[name] = backtest_candidate(panel, result, name, model, on_progress)
    for c in result.candidates.values():
        c.model.forget_validation()
    return result


def save_candidate(result: CandidateResult, path: Path) -> Path:
    """Write a candidate's backtest (model, forecasts, calibration, timings) to ``path``:
    how a candidate backtested on another worker hands its result back."""
    path.mkdir(parents=True, exist_ok=True)
    result.model.save(path / "model")
    result.forecasts.to_parquet(path / "forecasts.parquet")
    meta = {
        "name": result.name,
        "level": result.calibration.level,
        "half_width": result.calibration.half_width.tolist(),
        "n_calibration": result.calibration.n,
        "fit_seconds": result.fit_seconds,
        "predict_seconds": result.predict_seconds,
    }
    (path / "candidate.json").write_text(json.dumps(meta, indent=2))
    return path


def load_candidate(path: Path) -> CandidateResult:
    meta = json.loads((path / "candidate.json").read_text())
    calib = Calibration(level=meta["level"], half_width=np.asarray(meta["half_width"]), n=meta["n_calibration"])
    return CandidateResult(
        name=meta["name"],
        model=Forecaster.load(path / "model"),
        forecasts=pd.read_parquet(path / "forecasts.parquet"),
        calibration=calib,
        fit_seconds=meta["fit_seconds"],
        predict_seconds=meta["predict_seconds"],
    )
