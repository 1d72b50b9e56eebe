"""Issue forecasts from the registered champion and write them with full provenance."""

from __future__ import annotations

import hashlib
import math
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamcast import tracking
from streamcast.backtest import Calibration, conformal_quantile, tracked_quantile
from streamcast.bundle import ForecastBundle
from streamcast.config import Settings
from streamcast.errors import NotFoundError
from streamcast.features import prepare_panel
from streamcast.metrics import mase_scale, point_errors
from streamcast.store import Store, utcnow

# History loaded for a forecast or a stream's warm-up: what the champion looks back at
# (``Forecaster.history_steps``), and at least a week of seasons for the MASE scale of
# live scores (the seasonal naive MAE over it); far less than the whole store.
MIN_HISTORY_SEASONS = 7
# Intervals follow the champion's latest matured points: the last RECALIBRATION_POINTS
# of them, once there are at least MIN_LIVE_POINTS (before that, the validation slice's).
RECALIBRATION_POINTS = 2000
MIN_LIVE_POINTS = 48
# A batch stamps its finish time inside its transaction: one that finished shortly before
# the batch path last scored may have committed only after that run read the store, so
# batches count as new from this long before the mark on.
SCORE_MARK_MARGIN = pd.Timedelta(minutes=15)


@dataclass
class ChampionHandle:
    """The registered champion, loaded: its bundle and where it came from."""

    bundle: ForecastBundle
    name: str
    version: str
    run_id: str
    kind: str

    @property
    def max_gap(self) -> int:
        return int(self.bundle.meta["max_gap"])

    @property
    def history(self) -> pd.Timedelta:
        """How far back a forecast or a stream's warm-up reads the store."""
        model = self.bundle.model
        steps = max(model.history_steps, MIN_HISTORY_SEASONS * model.config.season)
        return steps * (model.freq or pd.Timedelta(hours=1))


def champion_version(target: str) -> str | None:
    """The registry's ``@champion`` version of ``target`` now (None before the first), from
    the MLflow that :func:`load_champion` configured (a stream asks at every check)."""
    mv = tracking.current_champion(target)
    return None if mv is None else str(mv.version)


def load_champion(settings: Settings, target: str) -> ChampionHandle:
    """The champion's bundle, cached on disk per version so forecasts don't re-download it."""
    tracking.configure(settings)
    mv = tracking.current_champion(target)
    if mv is None:
        raise NotFoundError(f"no champion registered for {target!r}: run `streamcast train --target {target}` first")
    cache = settings.data_dir / "models" / tracking.registered_name(target) / f"v{mv.version}"
    bundle_dir = cache / "bundle"
    if not (bundle_dir / "bundle.json").exists():
        tmp = cache.with_name(cache.name + f".tmp-{uuid.uuid4().hex[:6]}")
        src, _ = tracking.download_bundle(target, tracking.CHAMPION, tmp)
        cache.mkdir(parents=True, exist_ok=True)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        shutil.move(str(src), bundle_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    bundle = ForecastBundle(Path(bundle_dir))
    return ChampionHandle(
        bundle=bundle,
        name=mv.name,
        version=str(mv.version),
        run_id=str(mv.run_id),
        kind=bundle.meta.get("kind", bundle.model.kind),
    )


def forecast_id(series_id: str, target: str, origin: pd.Timestamp, version: str) -> str:
    """Deterministic: a redelivered observation re-issues the same forecast, not a new one.

    The origin (UTC) leads, then a hash of the rest (``20240301T050000-`` and 16 hex
    digits): new forecasts' keys sort after the stored ones, so the primary key grows at
    its end instead of on a random page per forecast (at 1,000 series a stream hour's
    inserts stay flat as the table grows). Migration 0006 gave stored forecasts these ids."""
    stamp = pd.Timestamp(origin)
    key = f"{series_id}|{target}|{stamp.isoformat()}|{version}"
    utc = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return f"{utc:%Y%m%dT%H%M%S}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def forecast_frame(
    handle: ChampionHandle,
    panel: dict[str, pd.DataFrame],
    target: str,
    issued_at: pd.Timestamp | None = None,
    calibration: Calibration | None = None,
) -> pd.DataFrame:
    """Rows for the ``forecasts`` table: one forecast_id per series, H points each, with
    intervals from ``calibration`` (default: the bundle's, from the validation slice)."""
    fc = handle.bundle.forecast_panel(panel, calibration=calibration)
    # Deterministic, as in the stream: forecasting the same data again (a second run, a
    # Prefect retry) re-issues the same forecast, which replaces the stored one.
    firsts = fc.drop_duplicates("series_id")
    ids = {
        sid: forecast_id(sid, target, origin, handle.version)
        for sid, origin in zip(firsts["series_id"], firsts["origin_ts"], strict=True)
    }
    return fc.assign(
        forecast_id=fc["series_id"].map(ids),
        target=target,
        issued_at=issued_at or pd.Timestamp(utcnow()),
        model_name=handle.kind,
        model_version=handle.version,
        run_id=handle.run_id,
    )


def issue_forecast(
    settings: Settings,
    target: str,
    series: list[str] | None = None,
    handle: ChampionHandle | None = None,
    chunk_of_all: bool = False,
) -> pd.DataFrame:
    """Forecast every series (or ``series``) from its latest observations and store the points.

    ``chunk_of_all``: ``series`` is one chunk of a forecast of every series (the Dask
    fan-out), which moves the target's scoring mark once all chunks are done
    (:func:`mark_scored`); each chunk's scoring is bounded by the mark meanwhile."""
    handle = handle or load_champion(settings, target)
    with Store(settings.database_url) as store:
        known = store.series_ids()
        missing = sorted(set(series or []) - set(known))
        if missing:
            raise NotFoundError(f"unknown series: {', '.join(missing)} (known: {', '.join(known)})")
        checked_at = utcnow()  # before the read: what commits later is new to the next run
        last = store.newest_ts(target)
        if last is None:
            raise NotFoundError(f"no {target!r} observations in the store")
        wide = store.load_wide(series_ids=series, start=last - handle.history)
        panel = prepare_panel(wide, max_gap=handle.max_gap)
        # What matured since the last forecast is scored first, so the new intervals know
        # it (a run of some series only, not part of a forecast of all, reads all of their
        # history's points: the target's mark is of every series).
        season = handle.bundle.model.config.season
        score_matured(
            store, target, panel, season, checked_at if series is None else None, series is None or chunk_of_all
        )
        fc = forecast_frame(
            handle, panel, target, calibration=live_calibration(store, handle, target, settings.interval_rate)
        )
        store.write_forecasts(fc, replace=True)
    return fc


def score_matured(
    store: Store,
    target: str,
    panel: Mapping[str, pd.DataFrame],
    season: int,
    checked_at: datetime | None = None,
    bounded: bool | None = None,
) -> int:
    """Score every stored forecast point of ``panel``'s series whose actual has arrived
    since (batch ingests between forecasts); MASE scales come from the panel's history.

    With ``checked_at`` (taken before ``panel``, of every series, was read), only points
    between the earliest and the latest observation written by the batches finished since
    the last such run are read (not every point of the panel's history: an hourly forecast
    flow at 1,000 series stores 24,000 points an hour, most of them not matured yet), and
    the target's mark moves to ``checked_at``. ``bounded`` (default: with ``checked_at``):
    read only those points, and leave the mark (a chunk of a forecast of every series)."""
    if not panel:
        return 0
    start = min(f.index[0] for f in panel.values())
    span: tuple[datetime | pd.Timestamp, datetime | None] | None = (start, None)
    bounded = checked_at is not None if bounded is None else bounded
    mark = store.score_mark(target) if bounded else None
    if mark is not None:
        written = store.written_since(mark - SCORE_MARK_MARGIN)
        span = (max(start, written[0]), written[1]) if written is not None else None
    points = store.unscored_points(target, sorted(panel), *span) if span is not None else None
    count = _score_points(store, target, panel, season, points) if points is not None and len(points) else 0
    if checked_at is not None:
        store.set_score_mark(target, checked_at)
    return count


def mark_scored(settings: Settings, target: str, checked_at: datetime) -> None:
    """Every chunk of a forecast of every series that began at ``checked_at`` has scored
    what matured: the next forecast's scoring reads from there (:func:`score_matured`)."""
    with Store(settings.database_url) as store:
        store.set_score_mark(target, checked_at)


def _score_points(
    store: Store, target: str, panel: Mapping[str, pd.DataFrame], season: int, points: pd.DataFrame
) -> int:
    """Store the scores of matured ``points`` (``unscored_points``: with their actuals)."""
    scales = {}
    for sid in points["series_id"].unique().tolist():
        frame = panel.get(sid)
        if frame is None or target not in frame:
            scales[sid] = float("nan")
            continue
        y = frame[target].to_numpy(dtype=float)
        scales[sid] = mase_scale(y[~np.isnan(y)], season)[0]
    ts = pd.DatetimeIndex(points["ts"])
    matured = MaturedPoints(
        points["forecast_id"].tolist(),
        points["step"].astype(int).tolist(),
        points["series_id"].tolist(),
        list(ts.to_pydatetime()),
        ts.as_unit("ns").asi8,
        points["yhat"].to_numpy(dtype=float),
        points["actual"].to_numpy(dtype=float),
        points["series_id"].map(scales).to_numpy(dtype=float),
        points["model_name"].tolist(),
        [None if v is None or v != v else str(v) for v in points["model_version"].tolist()],
        points["lo"].to_numpy(dtype=float),  # None (issued without an interval) -> NaN
        points["hi"].to_numpy(dtype=float),
    )
    return store.write_score_columns(matured.score_columns(target))


def live_calibration(store: Store, handle: ChampionHandle, target: str, rate: float) -> Calibration:
    """The champion's intervals recalibrated on its most recent matured points (see
    :func:`live_factor`)."""
    return handle.bundle.calibration.scaled(live_factor(store, handle, target, rate))


def live_factor(store: Store, handle: ChampionHandle, target: str, rate: float) -> float:
    """How much the champion's validation widths stretch to hold on its most recent matured
    points: their errors in units of their step's width. Of the conformal quantile of the
    last ``RECALIBRATION_POINTS`` (normalised split conformal) and the level a quantile
    tracker reaches from it through them in the order they matured, the larger: the
    tracker widens within hours of a change (``rate``: log units per season of points all
    outside, the ``interval_rate`` setting) and the window remembers its worst days, so
    the intervals widen fast and narrow only as the bad days leave the window (on the
    bench's deployments this held 0.87-0.89 where either alone gave 0.82-0.87).
    1 until ``MIN_LIVE_POINTS`` have matured."""
    recent = store.recent_residuals(target, handle.version, RECALIBRATION_POINTS)
    scores, usable = _width_units(handle, recent["step"], recent["actual"], recent["yhat"])
    if usable.sum() < MIN_LIVE_POINTS:
        return 1.0
    level = handle.bundle.calibration.level
    start = conformal_quantile(scores[usable], level)
    per_step = rate / handle.bundle.model.config.season
    return max(start, tracked_quantile(scores[usable], recent["ts"].to_numpy()[usable], level, per_step, start))


def tracked_factor(handle: ChampionHandle, factor: float, matured: MaturedPoints, rate: float) -> float:
    """``factor`` (:func:`live_factor`) moved on by matured points as they arrive (the
    stream's; those of other versions are not this champion's)."""
    mine = np.array([v == handle.version for v in matured.model_version], dtype=bool)
    if not mine.any():
        return factor
    scores, usable = _width_units(handle, np.asarray(matured.step)[mine], matured.actual[mine], matured.yhat[mine])
    per_step = rate / handle.bundle.model.config.season
    times = matured.ts_ns[mine]
    return tracked_quantile(scores[usable], times[usable], handle.bundle.calibration.level, per_step, factor)


@dataclass
class MaturedPoints:
    """Forecast points whose actuals have arrived, as columns: what the stream scores each
    batch (at 1,000 series, 24,000 points an hour, where a dict per point cost more than
    storing them)."""

    forecast_id: list[str]
    step: list[int]
    series_id: list[str]
    ts: list[datetime]
    ts_ns: np.ndarray  # ``ts`` as UTC nanoseconds
    yhat: np.ndarray
    actual: np.ndarray
    scale: np.ndarray  # each point's series' MASE scale
    model_name: list[str]
    model_version: list[str | None]
    lo: np.ndarray  # the interval each point was issued with (NaN: none)
    hi: np.ndarray

    def __len__(self) -> int:
        return len(self.forecast_id)

    def score_columns(self, target: str) -> dict[str, list[Any]]:
        """The ``scores`` rows of these points, as columns in store types."""
        errors = point_errors(self.actual, self.yhat, self.scale)
        n = len(self)
        return {
            "forecast_id": self.forecast_id,
            "step": self.step,
            "series_id": self.series_id,
            "target": [target] * n,
            "ts": self.ts,
            "yhat": self.yhat.tolist(),
            "actual": self.actual.tolist(),
            "abs_error": errors["abs_error"].tolist(),
            "scaled_error": _nullable(errors["scaled_error"]),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "scored_at": [utcnow()] * n,
            "lo": _nullable(self.lo),
            "hi": _nullable(self.hi),
        }


def _nullable(values: np.ndarray) -> list[float | None]:
    """Floats with NaN as None (the store's NULL)."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _width_units(handle: ChampionHandle, steps: Any, actual: Any, yhat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors in units of their step's validation width, and which are usable
    (steps whose width is positive)."""
    half = handle.bundle.calibration.half_width
    width = half[np.clip(np.asarray(steps, dtype=int), 1, len(half)) - 1]
    usable = width > 0
    err = np.abs(np.asarray(actual, dtype=float) - np.asarray(yhat, dtype=float))
    return np.divide(err, width, out=np.zeros_like(err), where=usable), usable
