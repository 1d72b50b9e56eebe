"""The streaming loop: store each observation, advance the champion, forecast, score, retrain.

For each new observation of a series: the store is updated idempotently, the
champion's state moves one step (an ESN takes one reservoir step; window models
shift their window), a fresh forecast is stored, forecast points that have now
matured are scored against the actual, and retraining starts when live MASE
drifts from the backtest or the retrain interval elapses.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Settings
from pipeline.features import build_design, prepare_panel
from pipeline.forecasting import HISTORY_DAYS, ChampionHandle, load_champion
from pipeline.ingest import write_batch
from pipeline.metrics import seasonal_naive_scale
from pipeline.monitoring import retrain_decision
from pipeline.sources.stream import StreamBatch
from pipeline.store import Store, utcnow
from pipeline.validation import parse_wide

log = logging.getLogger(__name__)


def stream_forecast_id(series_id: str, target: str, origin: pd.Timestamp, version: str) -> str:
    """Deterministic: a redelivered observation re-issues the same forecast, not a new one."""
    key = f"{series_id}|{target}|{pd.Timestamp(origin).isoformat()}|{version}"
    return hashlib.sha1(key.encode()).hexdigest()[:32]


@dataclass
class StreamStats:
    batches: int = 0
    observations: int = 0
    new: int = 0
    unchanged: int = 0
    quarantined: int = 0
    forecasts: int = 0
    scored_points: int = 0
    retrains: list[dict[str, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "batches": self.batches,
            "observations": self.observations,
            "new": self.new,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "forecasts": self.forecasts,
            "scored_points": self.scored_points,
            "retrains": self.retrains,
            "latency_p50_ms": float(np.nanpercentile(lat, 50)),
            "latency_p99_ms": float(np.nanpercentile(lat, 99)),
        }


class _SeriesState:
    """One series' recent raw history and, for an ESN champion, its reservoir state."""

    def __init__(self, series_id: str, recent: pd.DataFrame, scale: float) -> None:
        self.series_id = series_id
        self.recent = recent  # raw wide rows indexed by ts (UTC), bounded length
        self.scale = scale
        self.esn: Any = None

    @property
    def last_ts(self) -> pd.Timestamp | None:
        return self.recent.index.max() if len(self.recent) else None


class StreamProcessor:
    """Consumes :class:`StreamBatch` es and keeps forecasts and scores current."""

    def __init__(
        self,
        settings: Settings,
        target: str = "temp",
        retrain: Callable[[str], None] | None = None,
        check_every: int = 6,
        keep_rows: int = HISTORY_DAYS * 24,
    ) -> None:
        self.settings = settings
        self.target = target
        self.store = Store(settings.database_url)
        self.retrain_fn = retrain
        self.check_every = check_every
        self.keep_rows = keep_rows
        self.handle: ChampionHandle | None = None
        self.states: dict[str, _SeriesState] = {}
        self.stats = StreamStats()
        self._since_check = 0

    # --- set-up ---------------------------------------------------------------

    def _load(self, before: pd.Timestamp) -> None:
        """Champion and per-series state from the store's history before ``before``."""
        self.handle = load_champion(self.settings, self.target)
        wide = self.store.load_wide(
            start=before - pd.Timedelta(days=HISTORY_DAYS), end=before - pd.Timedelta(seconds=1)
        )
        self.states = {}
        if wide.empty:
            return
        for sid, frame in wide.groupby(level="series_id"):
            recent = frame.droplevel("series_id")
            scale = seasonal_naive_scale(recent[self.target], 24) if self.target in recent else float("nan")
            state = _SeriesState(str(sid), recent, scale)
            self._init_esn(state)
            self.states[str(sid)] = state

    def _panel(self, state: _SeriesState) -> dict[str, pd.DataFrame]:
        wide = state.recent.assign(series_id=state.series_id).set_index("series_id", append=True)
        wide = wide.reorder_levels(["series_id", "ts"]) if wide.index.names == ["ts", "series_id"] else wide
        wide.index = wide.index.set_names(["series_id", "ts"])
        assert self.handle is not None
        return prepare_panel(wide, max_gap=int(self.handle.bundle.meta.get("max_gap", 3)))

    def _init_esn(self, state: _SeriesState) -> None:
        assert self.handle is not None
        model = self.handle.bundle.model
        if model.kind != "esn" or len(state.recent) < 2 or self.target not in state.recent:
            state.esn = None
            return
        frame = self._panel(state)[state.series_id]
        design = build_design(state.series_id, frame, self.target, model.covariates, model.scaler)  # type: ignore[arg-type]
        state.esn = model.stream(design)  # type: ignore[attr-defined]

    # --- per batch --------------------------------------------------------------

    def process(self, batch: StreamBatch) -> None:
        frame = batch.frame
        if frame.empty:
            if batch.ack:
                batch.ack()
            return
        parsed = parse_wide(frame, "stream", time_col="ts", series_col="series_id", bounds=self.settings.bounds)
        if self.handle is None and not parsed.observations.empty:
            self._load(parsed.observations["ts"].min())
        summary = write_batch(self.store, parsed, "stream", "stream")
        self.stats.batches += 1
        self.stats.observations += summary.observations_read
        self.stats.new += summary.new
        self.stats.unchanged += summary.unchanged
        self.stats.quarantined += summary.quarantined_total
        obs = parsed.observations
        forecast_rows: list[pd.DataFrame] = []
        score_rows: list[dict[str, Any]] = []
        for sid, grp in obs.groupby("series_id"):
            wide = grp.pivot_table(index="ts", columns="variable", values="value", aggfunc="last").sort_index()
            wide.columns.name = None
            state = self.states.get(str(sid))
            if state is None:
                state = _SeriesState(str(sid), wide.iloc[:0], float("nan"))
                self.states[str(sid)] = state
            for ts, row in wide.iterrows():
                ts = pd.Timestamp(ts)
                if state.last_ts is not None and ts <= state.last_ts:
                    # A late or redelivered observation: stored (above), not replayed through the model.
                    continue
                fc = self._advance(state, ts, row)
                if fc is not None:
                    forecast_rows.append(fc)
                if self.target in row and pd.notna(row[self.target]):
                    score_rows.extend(self._score(state, ts, float(row[self.target])))
        if forecast_rows:
            all_fc = pd.concat(forecast_rows, ignore_index=True)
            self.store.write_forecasts(all_fc)
            self.stats.forecasts += all_fc["forecast_id"].nunique()
        self.stats.scored_points += self.store.write_scores(score_rows)
        if batch.ack:
            batch.ack()
        self.stats.latencies_ms.append((time.perf_counter() - batch.received_at) * 1000)
        self._since_check += len(obs["ts"].unique()) if not obs.empty else 0
        if self._since_check >= self.check_every:
            self._since_check = 0
            self._maybe_retrain(obs["ts"].max() if not obs.empty else None)

    def _advance(self, state: _SeriesState, ts: pd.Timestamp, row: pd.Series) -> pd.DataFrame | None:
        assert self.handle is not None
        new = row.to_frame().T
        new.index = pd.DatetimeIndex([ts], name="ts")
        previous = state.last_ts
        state.recent = pd.concat([state.recent, new]).iloc[-self.keep_rows :]
        if self.target not in state.recent:
            return None
        model = self.handle.bundle.model
        calib = self.handle.bundle.calibration
        if state.esn is not None and previous is not None:
            # One reservoir step per regular time step since the last observation.
            frame = self._panel(state)[state.series_id]
            design = build_design(state.series_id, frame.iloc[-48:], self.target, model.covariates, model.scaler)  # type: ignore[arg-type]
            steps = round((ts - previous) / (model.freq or pd.Timedelta(hours=1)))
            for x in design.X[-max(steps, 1) :]:
                state.esn.advance(x)
            yhat = state.esn.forecast_values()
            H = len(yhat)
            freq = model.freq or pd.Timedelta(hours=1)
            fc = pd.DataFrame(
                {
                    "series_id": state.series_id,
                    "origin_ts": ts,
                    "step": np.arange(1, H + 1),
                    "ts": [ts + h * freq for h in range(1, H + 1)],
                    "yhat": yhat,
                }
            )
            fc = calib.apply(fc)
        else:
            if state.esn is None and model.kind == "esn":
                self._init_esn(state)
            fc = self.handle.bundle.forecast_panel(self._panel(state))
            if fc.empty:
                return None
        fc["forecast_id"] = stream_forecast_id(state.series_id, self.target, ts, self.handle.version)
        fc["target"] = self.target
        fc["issued_at"] = pd.Timestamp(utcnow())
        fc["model_name"] = self.handle.kind
        fc["model_version"] = self.handle.version
        fc["run_id"] = self.handle.run_id
        return fc

    def _score(self, state: _SeriesState, ts: pd.Timestamp, actual: float) -> list[dict[str, Any]]:
        matured = self.store.forecasts_for_times(self.target, state.series_id, [ts])
        now = utcnow()
        scale = state.scale if np.isfinite(state.scale) and state.scale > 0 else None
        return [
            {
                "forecast_id": r.forecast_id,
                "step": int(r.step),
                "series_id": state.series_id,
                "target": self.target,
                "ts": ts.to_pydatetime(),
                "yhat": float(r.yhat),
                "actual": actual,
                "abs_error": abs(actual - r.yhat),
                "scaled_error": abs(actual - r.yhat) / scale if scale else None,
                "model_name": r.model_name,
                "model_version": r.model_version,
                "scored_at": now,
            }
            for r in matured.itertuples(index=False)
        ]

    def _maybe_retrain(self, at: pd.Timestamp | None) -> None:
        decision = retrain_decision(self.store, self.settings, self.target)
        if not decision.retrain:
            return
        log.warning("retraining %s: %s (%s)", self.target, decision.reason, decision.detail)
        outcome = "no retrain function configured"
        if self.retrain_fn is not None:
            try:
                self.retrain_fn(self.target)
                outcome = "retrained"
            except Exception as exc:  # noqa: BLE001 - the stream must keep going; the trigger records why
                outcome = f"failed: {type(exc).__name__}: {exc}"[:250]
        self.store.record_retrain(self.target, decision.reason, decision.detail, outcome)
        self.stats.retrains.append({"reason": decision.reason, "detail": decision.detail, "outcome": outcome})
        if outcome == "retrained" and at is not None:
            self._load(at + pd.Timedelta(seconds=1))

    def run(
        self,
        batches: Iterable[StreamBatch],
        max_batches: int | None = None,
        on_batch: Callable[[StreamStats], None] | None = None,
    ) -> StreamStats:
        for i, batch in enumerate(batches):
            self.process(batch)
            if on_batch:
                on_batch(self.stats)
            if max_batches is not None and i + 1 >= max_batches:
                break
        return self.stats

    def close(self) -> None:
        self.store.dispose()
