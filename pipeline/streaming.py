"""The streaming loop: store each observation, advance the champion, forecast, score, retrain.

For each new observation of a series: the store is updated idempotently, the
champion's state moves one step (through the model's streaming hook: an ESN takes
one reservoir step, window models shift their window), a fresh forecast is stored,
forecast points that have now matured are scored against the actual, and retraining
starts when live MASE drifts from the backtest or the retrain interval elapses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from streamcast.backtest import Calibration
from streamcast.config import DEFAULT_TARGET, Settings
from streamcast.entries import parse_entries
from streamcast.features import prepare_panel
from streamcast.forecasting import (
    HISTORY_DAYS,
    ChampionHandle,
    forecast_id,
    live_calibration,
    load_champion,
    score_records,
)
from streamcast.ingestion import IngestSummary, write_batch
from streamcast.metrics import mase_scale
from streamcast.models.streams import SeriesStream
from streamcast.monitoring import retrain_decision
from streamcast.sources.stream import StreamBatch
from streamcast.store import Store, Transaction, utcnow

log = logging.getLogger(__name__)

Row = dict[str, float]


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

    def count(
        self, summary: IngestSummary, forecast_rows: list[dict[str, Any]], score_rows: list[dict[str, Any]]
    ) -> None:
        self.batches += 1
        self.observations += summary.observations_read
        self.new += summary.new
        self.unchanged += summary.unchanged
        self.quarantined += summary.quarantined_total
        self.forecasts += len({r["forecast_id"] for r in forecast_rows})
        self.scored_points += len(score_rows)

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles. The first batch also loads the champion and warms
        its state, so it is reported on its own and left out of the percentiles."""
        steady = self.latencies_ms[1:] if len(self.latencies_ms) > 1 else self.latencies_ms
        p50, p99 = (float(v) for v in np.percentile(steady, [50, 99])) if steady else (float("nan"), float("nan"))
        return {
            "batches": self.batches,
            "observations": self.observations,
            "new": self.new,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "forecasts": self.forecasts,
            "scored_points": self.scored_points,
            "retrains": self.retrains,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "first_batch_ms": float(self.latencies_ms[0]) if self.latencies_ms else float("nan"),
        }


@dataclass
class SeriesState:
    """One series as the stream follows it: the champion's stream of it and its MASE scale."""

    series_id: str
    stream: SeriesStream
    scale: float  # in-sample seasonal naive MAE of the recent history: live MASE's denominator
    last_ts: pd.Timestamp | None
    has_target: bool  # no forecast before the target was observed once


class StreamProcessor:
    """Consumes :class:`StreamBatch` es and keeps forecasts and scores current."""

    def __init__(
        self,
        settings: Settings,
        target: str = DEFAULT_TARGET,
        retrain: Callable[[str], None] | None = None,
        check_every: int = 6,
    ) -> None:
        self.settings = settings
        self.target = target
        self.store = Store(settings.database_url)
        self.retrain_fn = retrain
        self.check_every = check_every
        self.handle: ChampionHandle | None = None
        self.calibration: Calibration | None = None  # the champion's, recalibrated on matured points
        self.states: dict[str, SeriesState] = {}
        self.stats = StreamStats()
        self.newest: pd.Timestamp | None = None  # the newest observation stored: how far ahead entries may be
        self._since_check = 0

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

    # --- one batch ----------------------------------------------------------------

    def process(self, batch: StreamBatch) -> None:
        """Store, advance, forecast and score one batch; everything derived from it commits
        with its observations, and only then is the batch acknowledged."""
        if batch.frame.empty:
            if batch.ack:
                batch.ack()
            return
        if self.newest is None:
            self.newest = self.store.newest_ts()
        max_ahead = pd.Timedelta(hours=self.settings.stream_max_ahead_hours)
        parsed = parse_entries(batch.frame, self.settings.bounds, self.newest, max_ahead)
        obs = parsed.observations
        if not obs.empty:
            self.newest = max(self.newest, obs["ts"].max()) if self.newest is not None else obs["ts"].max()
        if self.handle is None and not obs.empty:
            self._load(obs["ts"].min())
        forecast_rows, arrived = self._advance_all(obs)
        score_rows = self._score(arrived, forecast_rows)

        def write_derived(tx: Transaction) -> None:
            tx.write_forecast_records(forecast_rows)
            tx.write_scores(score_rows)

        # One commit per batch: a crash leaves all of it or none (the entries are then redelivered).
        summary = write_batch(self.store, parsed, "stream", "stream", also=write_derived)
        self.stats.count(summary, forecast_rows, score_rows)
        if batch.ack:
            batch.ack()
        self.stats.latencies_ms.append((time.perf_counter() - batch.received_at) * 1000)
        self._since_check += obs["ts"].nunique()
        if self._since_check >= self.check_every:
            self._since_check = 0
            if self.handle is not None:
                self.calibration = live_calibration(self.store, self.handle, self.target)
            self._maybe_retrain(obs["ts"].max() if not obs.empty else None)

    def _advance_all(self, obs: pd.DataFrame) -> tuple[list[dict[str, Any]], list[tuple[SeriesState, datetime, float]]]:
        """Every series' new rows through its stream, in time order: the fresh forecasts'
        points, and the target values that arrived (to score earlier forecasts with)."""
        # Plain dicts, not pivot tables: a stream batch holds a handful of values.
        rows: dict[str, dict[pd.Timestamp, Row]] = {}
        for sid, var, t, v in zip(obs["series_id"], obs["variable"], obs["ts"], obs["value"], strict=True):
            rows.setdefault(str(sid), {}).setdefault(pd.Timestamp(t), {})[str(var)] = float(v)
        forecast_rows: list[dict[str, Any]] = []
        arrived = []
        for sid, by_time in sorted(rows.items()):
            state = self.states.get(sid) or self._new_state(sid)
            for ts, row in sorted(by_time.items()):
                if state.last_ts is not None and ts <= state.last_ts:
                    continue  # a late or redelivered observation: stored, not replayed through the model
                forecast_rows += self._advance(state, ts, row)
                if self.target in row:
                    arrived.append((state, ts.to_pydatetime(), row[self.target]))
        return forecast_rows, arrived

    def _advance(self, state: SeriesState, ts: pd.Timestamp, row: Row) -> list[dict[str, Any]]:
        """Move ``state`` to the observation at ``ts`` and return the fresh forecast's points
        as store records (none while the series has no target to forecast from)."""
        assert self.handle is not None and self.calibration is not None
        freq = self.handle.bundle.model.freq or pd.Timedelta(hours=1)
        if state.last_ts is not None:
            # Steps that never arrived are taken with nothing observed (forward filled).
            for k in range(max(round((ts - state.last_ts) / freq), 1) - 1, 0, -1):
                state.stream.advance(ts - k * freq, {})
        state.stream.advance(ts, row)
        state.last_ts = ts
        state.has_target = state.has_target or self.target in row
        yhat = state.stream.forecast() if state.has_target else None
        if yhat is None:
            return []
        width = self.calibration.half_width[: len(yhat)]
        origin, step = ts.to_pydatetime(), freq.to_pytimedelta()
        common = {
            "forecast_id": forecast_id(state.series_id, self.target, ts, self.handle.version),
            "series_id": state.series_id,
            "target": self.target,
            "issued_at": utcnow(),
            "origin_ts": origin,
            "model_name": self.handle.kind,
            "model_version": self.handle.version,
            "run_id": self.handle.run_id,
        }
        return [
            {
                **common,
                "step": h + 1,
                "ts": origin + (h + 1) * step,
                "yhat": float(y),
                "lo": float(y - w),
                "hi": float(y + w),
            }
            for h, (y, w) in enumerate(zip(yhat, width, strict=True))
        ]

    def _score(
        self, arrived: list[tuple[SeriesState, datetime, float]], pending: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Score every forecast point whose time has just been observed: those stored
        before (one query per batch) and those issued earlier in this same batch."""
        if not arrived:
            return []
        by_key = {(st.series_id, ts): (st, actual) for st, ts, actual in arrived}
        matured = self.store.forecasts_for_times(
            self.target, sorted({k[0] for k in by_key}), sorted({k[1] for k in by_key})
        )
        matured = [r for r in matured + pending if (r["series_id"], r["ts"]) in by_key]
        if not matured:
            return []
        hits = [by_key[(r["series_id"], r["ts"])] for r in matured]
        return score_records(
            matured,
            np.array([actual for _, actual in hits], dtype=float),
            np.array([st.scale for st, _ in hits], dtype=float),
            self.target,
        )

    # --- champion and series state ---------------------------------------------------

    def _load(self, before: pd.Timestamp) -> None:
        """The champion, and every series' state warmed on the stored history before ``before``."""
        self.handle = load_champion(self.settings, self.target)
        self.calibration = live_calibration(self.store, self.handle, self.target)
        history = self.store.load_wide(
            start=before - pd.Timedelta(days=HISTORY_DAYS), end=before - pd.Timedelta(seconds=1)
        )
        self.states = {}
        if history.empty:
            return
        model = self.handle.bundle.model
        panel = prepare_panel(history, freq=model.freq, max_gap=self.handle.max_gap)
        self.states = {sid: self._new_state(sid, frame) for sid, frame in panel.items()}

    def _new_state(self, sid: str, history: pd.DataFrame | None = None) -> SeriesState:
        """A series' stream positioned after its (regularised) history; none for a new series."""
        assert self.handle is not None
        if history is None:
            history = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="ts"))
        model = self.handle.bundle.model
        seen = self.target in history and bool(history[self.target].notna().any())
        scale = mase_scale(history[self.target], model.config.season)[0] if seen else float("nan")
        state = SeriesState(sid, model.stream(sid, history), scale, history.index.max() if len(history) else None, seen)
        self.states[sid] = state
        return state

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
