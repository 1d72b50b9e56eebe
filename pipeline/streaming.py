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
from pipeline.features import CIRCULAR_VARIABLES, build_design, calendar_features, prepare_panel
from pipeline.forecasting import HISTORY_DAYS, ChampionHandle, load_champion
from pipeline.ingest import write_batch
from pipeline.metrics import seasonal_naive_scale
from pipeline.monitoring import retrain_decision
from pipeline.sources.stream import StreamBatch
from pipeline.store import Store, optional_float, utcnow
from pipeline.validation import parse_wide

log = logging.getLogger(__name__)
FILL_LIMIT = 24  # same as build_design's forward-fill limit


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


class _SeriesState:
    """One series' recent raw history and, for an ESN champion, its reservoir state."""

    def __init__(self, series_id: str, recent: pd.DataFrame, scale: float, keep_rows: int = HISTORY_DAYS * 24) -> None:
        self.series_id = series_id
        self._recent = recent  # raw wide rows indexed by ts (UTC), bounded length
        self._pending: list[tuple[pd.Timestamp, dict[str, float]]] = []
        self.keep_rows = keep_rows
        self.scale = scale
        self.esn: Any = None
        self.last_x: np.ndarray | None = None  # last scaled input row (ESN)
        self.fill_run: np.ndarray | None = None  # consecutive forward-filled steps per input column
        self.last_ts: pd.Timestamp | None = recent.index.max() if len(recent) else None

    def append(self, ts: pd.Timestamp, values: dict[str, float]) -> None:
        # Rows are buffered: a DataFrame is only built when a window model needs it.
        self._pending.append((ts, values))
        self.last_ts = ts

    @property
    def recent(self) -> pd.DataFrame:
        if self._pending:
            new = pd.DataFrame(
                [v for _, v in self._pending], index=pd.DatetimeIndex([t for t, _ in self._pending], name="ts")
            )
            self._recent = pd.concat([self._recent, new]).iloc[-self.keep_rows :]
            self._pending = []
        return self._recent


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
            state = _SeriesState(str(sid), recent, scale, self.keep_rows)
            self._init_esn(state)
            self.states[str(sid)] = state

    def _panel(self, state: _SeriesState, tail: int | None = None) -> dict[str, pd.DataFrame]:
        recent = state.recent if tail is None else state.recent.iloc[-tail:]
        wide = recent.assign(series_id=state.series_id).set_index("series_id", append=True)
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
        state.last_x = design.X[-1].copy()
        state.fill_run = np.zeros(design.X.shape[1], dtype=int)

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
        obs = parsed.observations
        forecast_rows: list[dict[str, Any]] = []
        arrived: list[tuple[_SeriesState, pd.Timestamp, float]] = []
        # Plain dicts, not pivot tables: a stream batch holds a handful of values.
        rows_by_series: dict[str, dict[pd.Timestamp, dict[str, float]]] = {}
        for sid, var, t, v in zip(obs["series_id"], obs["variable"], obs["ts"], obs["value"], strict=True):
            rows_by_series.setdefault(str(sid), {}).setdefault(pd.Timestamp(t), {})[str(var)] = float(v)
        for sid, rows in sorted(rows_by_series.items()):
            state = self.states.get(sid)
            if state is None:
                state = _SeriesState(sid, pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="ts")), float("nan"))
                self.states[sid] = state
            for ts, row in sorted(rows.items()):
                if state.last_ts is not None and ts <= state.last_ts:
                    # A late or redelivered observation: stored, not replayed through the model.
                    continue
                forecast_rows.extend(self._advance(state, ts, row))
                if self.target in row:
                    arrived.append((state, ts, row[self.target]))
        score_rows = self._score(arrived, forecast_rows)

        def write_derived(conn: Any) -> None:
            self.store.write_forecast_records(forecast_rows, conn)
            self.store.write_scores(score_rows, conn)

        # Observations, forecasts and scores commit together: one commit per batch, and
        # a crash leaves either all of them or none (the entries are then redelivered).
        summary = write_batch(self.store, parsed, "stream", "stream", also=write_derived)
        self.stats.batches += 1
        self.stats.observations += summary.observations_read
        self.stats.new += summary.new
        self.stats.unchanged += summary.unchanged
        self.stats.quarantined += summary.quarantined_total
        self.stats.forecasts += len({r["forecast_id"] for r in forecast_rows})
        self.stats.scored_points += len(score_rows)
        if batch.ack:
            batch.ack()
        self.stats.latencies_ms.append((time.perf_counter() - batch.received_at) * 1000)
        self._since_check += len(obs["ts"].unique()) if not obs.empty else 0
        if self._since_check >= self.check_every:
            self._since_check = 0
            self._maybe_retrain(obs["ts"].max() if not obs.empty else None)

    def _esn_input(self, state: _SeriesState, ts: pd.Timestamp, values: dict[str, float]) -> np.ndarray:
        """The scaled input row for one step, computed like :func:`build_design` does for a
        whole frame (per-series scaling, forward fill up to a day then the mean, calendar)."""
        assert self.handle is not None and state.last_x is not None and state.fill_run is not None
        model = self.handle.bundle.model
        assert model.scaler is not None
        vals = dict(values)
        for var in CIRCULAR_VARIABLES & set(vals):
            rad = np.deg2rad(vals.pop(var))
            vals[f"{var}_sin"], vals[f"{var}_cos"] = float(np.sin(rad)), float(np.cos(rad))
        cols = [self.target, *model.covariates]
        scaled = np.empty(len(cols))
        for j, c in enumerate(cols):
            v = vals.get(c, np.nan)
            if np.isfinite(v):
                m, sd = model.scaler.stats(state.series_id, c)
                scaled[j] = (v - m) / sd
                state.fill_run[j] = 0
            elif state.fill_run[j] < FILL_LIMIT:
                scaled[j] = state.last_x[j]
                state.fill_run[j] += 1
            else:
                scaled[j] = 0.0
        x = np.concatenate([scaled, calendar_features(pd.DatetimeIndex([ts]))[0]]).astype(np.float32)
        state.last_x = x
        return x

    def _advance(self, state: _SeriesState, ts: pd.Timestamp, row: dict[str, float]) -> list[dict[str, Any]]:
        """Move ``state`` to the observation at ``ts`` and return the fresh forecast's points
        as store records (empty when the champion cannot forecast this series yet)."""
        assert self.handle is not None
        previous = state.last_ts
        state.append(ts, row)
        model = self.handle.bundle.model
        freq = model.freq or pd.Timedelta(hours=1)
        if state.esn is not None and previous is not None:
            # One reservoir step per regular time step since the last observation;
            # hours that never arrived are forward filled.
            steps = max(round((ts - previous) / freq), 1)
            for k in range(steps - 1, -1, -1):
                state.esn.advance(self._esn_input(state, ts - k * freq, row if k == 0 else {}))
            yhat = np.asarray(state.esn.forecast_values(), dtype=float)
            width = self.handle.bundle.calibration.half_width[: len(yhat)]
            origin = ts.to_pydatetime()
            step_dt = freq.to_pytimedelta()
            points: list[tuple[int, Any, float, float | None, float | None]] = [
                (h + 1, origin + (h + 1) * step_dt, float(y), float(y - w), float(y + w))
                for h, (y, w) in enumerate(zip(yhat, width, strict=True))
            ]
        else:
            if self.target not in state.recent:
                return []
            if state.esn is None and model.kind == "esn":
                self._init_esn(state)
            fc = self.handle.bundle.forecast_panel(self._panel(state))
            if fc.empty:
                return []
            fc = fc[fc["origin_ts"] == ts]
            origin = ts.to_pydatetime()
            points = [
                (int(h), pd.Timestamp(t).to_pydatetime(), float(y), optional_float(lo), optional_float(hi))
                for h, t, y, lo, hi in zip(fc["step"], fc["ts"], fc["yhat"], fc["lo"], fc["hi"], strict=True)
            ]
        common = {
            "forecast_id": stream_forecast_id(state.series_id, self.target, ts, self.handle.version),
            "series_id": state.series_id,
            "target": self.target,
            "issued_at": utcnow(),
            "origin_ts": origin,
            "model_name": self.handle.kind,
            "model_version": self.handle.version,
            "run_id": self.handle.run_id,
        }
        return [{**common, "step": h, "ts": t, "yhat": y, "lo": lo, "hi": hi} for h, t, y, lo, hi in points]

    def _score(
        self, arrived: list[tuple[_SeriesState, pd.Timestamp, float]], pending: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Score every forecast point whose time has just been observed: those stored
        before (one query per batch) and those issued earlier in this same batch."""
        if not arrived:
            return []
        by_key = {(st.series_id, ts.to_pydatetime()): (st, actual) for st, ts, actual in arrived}
        matured = self.store.forecasts_for_times(
            self.target, sorted({k[0] for k in by_key}), sorted({k[1] for k in by_key})
        )
        matured += [r for r in pending if (r["series_id"], r["ts"]) in by_key]
        now = utcnow()
        rows = []
        for r in matured:
            hit = by_key.get((r["series_id"], r["ts"]))
            if hit is None:
                continue
            state, actual = hit
            scale = state.scale if np.isfinite(state.scale) and state.scale > 0 else None
            err = abs(actual - r["yhat"])
            rows.append(
                {
                    "forecast_id": r["forecast_id"],
                    "step": int(r["step"]),
                    "series_id": r["series_id"],
                    "target": self.target,
                    "ts": r["ts"],
                    "yhat": float(r["yhat"]),
                    "actual": actual,
                    "abs_error": err,
                    "scaled_error": err / scale if scale else None,
                    "model_name": r["model_name"],
                    "model_version": r["model_version"],
                    "scored_at": now,
                }
            )
        return rows

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
