"""The streaming loop: store each observation, advance the champion, forecast, score, retrain.

For each new observation of a series: the store is updated idempotently, the
champion's state moves one step (through the model's streaming hook: an ESN takes
one reservoir step, window models shift their window), a fresh forecast is stored,
forecast points that have now matured are scored against the actual, and retraining
starts when live MASE drifts from the backtest or the retrain interval elapses.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from streamcast.backtest import Calibration
from streamcast.config import DEFAULT_TARGET, Settings
from streamcast.entries import parse_entries
from streamcast.features import prepare_panel
from streamcast.forecasting import (
    ChampionHandle,
    champion_version,
    forecast_id,
    live_factor,
    load_champion,
    score_records,
    tracked_factor,
)
from streamcast.ingestion import IngestSummary, write_batch
from streamcast.metrics import mase_scale
from streamcast.models.esn import ESNForecaster, OnlineReadout
from streamcast.models.streams import SeriesStream
from streamcast.monitoring import retrain_decision
from streamcast.retraining import Launcher, RetrainJob
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
        retrain: Launcher | None = None,
        check_every: int = 6,
        adapt: bool = True,
    ) -> None:
        self.settings = settings
        self.target = target
        self.store = Store(settings.database_url, background_checkpoint=True)
        self.retrain_fn = retrain  # trains in place (returns None) or starts a RetrainJob
        self.job: RetrainJob | None = None  # the retrain running elsewhere, if any
        self.check_every = check_every
        self.adapt = adapt  # an ESN champion's readout learns from matured actuals
        self.readout: OnlineReadout | None = None  # the adapting readout, if any
        self.handle: ChampionHandle | None = None
        self.calibration: Calibration | None = None  # the champion's, recalibrated on matured points
        self.interval_factor = 1.0  # its validation widths times this (live_factor, then tracked per batch)
        self.states: dict[str, SeriesState] = {}
        self.stats = StreamStats()
        self.newest: pd.Timestamp | None = None  # the newest observation stored: how far ahead entries may be
        self.outstanding = _Outstanding()  # forecasts issued here that have points still to mature
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
        checkpoint = self._checkpoint()
        if checkpoint is not None:  # what was learnt since the last check (all of it is committed)
            self.store.write_stream_checkpoint(*checkpoint)
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
        self._since_check += obs["ts"].nunique()
        checking = self._since_check >= self.check_every
        checkpoint = self._checkpoint() if checking else None

        def write_derived(tx: Transaction) -> None:
            tx.write_forecast_records(forecast_rows)
            tx.write_scores(score_rows)
            if checkpoint is not None:
                tx.write_stream_checkpoint(*checkpoint)

        # One commit per batch: a crash leaves all of it or none (the entries are then redelivered).
        summary = write_batch(self.store, parsed, "stream", "stream", also=write_derived)
        self.stats.count(summary, forecast_rows, score_rows)
        if batch.ack:
            batch.ack()
        self.stats.latencies_ms.append((time.perf_counter() - batch.received_at) * 1000)
        self.outstanding.add(forecast_rows)  # committed: later batches score them from memory
        if self.handle is not None and score_rows:
            # The next forecasts' intervals know what just matured (a quantile tracker, per batch).
            self.interval_factor = tracked_factor(
                self.handle, self.interval_factor, score_rows, self.settings.stream_interval_rate
            )
            self.calibration = self.handle.bundle.calibration.scaled(self.interval_factor)
        if checking:
            self._since_check = 0
            self._maybe_retrain(obs["ts"].max() if not obs.empty else None)

    def _advance_all(
        self, obs: pd.DataFrame, forecast: bool = True
    ) -> tuple[list[dict[str, Any]], list[tuple[SeriesState, datetime, float]]]:
        """Every series' new rows through its stream, in time order: the fresh forecasts'
        points, and the target values that arrived (to score earlier forecasts with). The
        series observed at one time move together (an ESN steps all their reservoirs in one
        matrix product and forecasts them in another)."""
        # Plain dicts, not pivot tables: a stream batch holds a handful of values per series.
        rows: dict[str, dict[pd.Timestamp, Row]] = {}
        for sid, var, t, v in zip(obs["series_id"], obs["variable"], obs["ts"], obs["value"], strict=True):
            rows.setdefault(str(sid), {}).setdefault(pd.Timestamp(t), {})[str(var)] = float(v)
        at: dict[pd.Timestamp, list[tuple[SeriesState, Row]]] = {}
        for sid, by_time in sorted(rows.items()):
            state = self.states.get(sid) or self._new_state(sid)
            for ts, row in by_time.items():
                at.setdefault(ts, []).append((state, row))
        forecast_rows: list[dict[str, Any]] = []
        arrived = []
        for ts in sorted(at):
            # A late or redelivered observation is stored, not replayed through the model.
            moving = [(st, row) for st, row in at[ts] if st.last_ts is None or ts > st.last_ts]
            for st, _ in moving:
                self._fill_gap(st, ts)
            for group in _by_stream_class([st for st, _ in moving], [row for _, row in moving]):
                type(group[0][0].stream).advance_all([st.stream for st, _ in group], ts, [r for _, r in group])
            for st, row in moving:
                st.last_ts = ts
                st.has_target = st.has_target or self.target in row
                if self.target in row:
                    arrived.append((st, ts.to_pydatetime(), row[self.target]))
            ready = [st for st, _ in moving if st.has_target and forecast]  # none before the target was seen
            for group in _by_stream_class(ready, [{}] * len(ready)):
                members = [st for st, _ in group]
                yhats = type(members[0].stream).forecast_all([m.stream for m in members])
                for st, yhat in zip(members, yhats, strict=True):
                    forecast_rows += self._points(st, ts, yhat)
        return forecast_rows, arrived

    def _fill_gap(self, state: SeriesState, ts: pd.Timestamp) -> None:
        """Steps of ``state``'s series that never arrived before ``ts``: taken with nothing
        observed (forward filled), one at a time (rare)."""
        assert self.handle is not None
        if state.last_ts is None:
            return
        freq = self.handle.bundle.model.freq or pd.Timedelta(hours=1)
        for k in range(max(round((ts - state.last_ts) / freq), 1) - 1, 0, -1):
            state.stream.advance(ts - k * freq, {})

    def _points(self, state: SeriesState, ts: pd.Timestamp, yhat: np.ndarray | None) -> list[dict[str, Any]]:
        """The fresh forecast of ``state``'s series from ``ts`` as store records."""
        assert self.handle is not None and self.calibration is not None
        if yhat is None:
            return []
        freq = self.handle.bundle.model.freq or pd.Timedelta(hours=1)
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
        """Score every forecast point whose time has just been observed: those this process
        issued in earlier batches (from memory), those issued earlier in this same batch,
        and, where a point may have been issued before this process followed the series
        (after a start, restart or swap), those stored (one query per batch)."""
        if not arrived:
            return []
        by_key = {(st.series_id, ts): (st, actual) for st, ts, actual in arrived}
        unknown = [k for k in by_key if not self.outstanding.covers(*k)]
        sids = sorted({k[0] for k in unknown})
        stored = (
            # Only what was issued before this process remembers every origin of a series:
            # the rest is in memory (a full horizon of its own forecasts is 24 points per
            # series and time, which read back cost more than the rest of the batch).
            self.store.forecasts_for_times(
                self.target, sids, sorted({k[1] for k in unknown}), self.outstanding.remembered_from(sids)
            )
            if unknown
            else []
        )
        remembered = [r for sid, ts in by_key for r in self.outstanding.matured(sid, ts)]
        matured: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        for r in remembered + pending + stored:
            point = (r["forecast_id"], r["step"])
            if point not in seen and (r["series_id"], r["ts"]) in by_key:
                seen.add(point)
                matured.append(r)
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
        """The champion, and every series' state warmed on the stored history before ``before``.

        An adapting ESN readout resumes from the target's checkpoint when it is of this
        champion: the series are warmed up to where the checkpoint had processed each of
        them, and what the store holds after that (batches committed after the last check)
        is replayed through the same path as live entries, forecasts aside."""
        self.handle = load_champion(self.settings, self.target)
        self.outstanding.forget_coverage()  # what was issued before this champion is read from the store
        self.interval_factor = live_factor(self.store, self.handle, self.target, self.settings.stream_interval_rate)
        self.calibration = self.handle.bundle.calibration.scaled(self.interval_factor)
        history = self.store.load_wide(start=before - self.handle.history, end=before - pd.Timedelta(seconds=1))
        self.states = {}
        model = self.handle.bundle.model
        self.readout = None
        resumed: _Resume | None = None
        if self.adapt and isinstance(model, ESNForecaster) and model.readout is not None:
            registered = model.readout.base if isinstance(model.readout, OnlineReadout) else model.readout
            self.readout = OnlineReadout(
                registered,
                self.settings.adapt_forgetting,
                self.settings.adapt_prior,
                _validation_noise(self.handle.bundle.calibration, model),
                self.settings.adapt_threshold,
            )
            model.readout = self.readout  # this process's copy; the registered version never changes
            resumed = self._resume(self.readout)
        if history.empty:
            return
        warm, replay = (history, None) if resumed is None else resumed.split(history)
        panel = prepare_panel(warm, freq=model.freq, max_gap=self.handle.max_gap)
        # Every series warmed at once (the ESN runs all reservoirs together over the history).
        streams = model.streams(panel)
        self.states = {sid: self._state(sid, streams[sid], frame) for sid, frame in panel.items()}
        if resumed is not None:
            for sid, adapted in resumed.pending.items():
                if sid in self.states:
                    self.states[sid].stream.ring.restore_pending(adapted)  # type: ignore[attr-defined]
        if replay is not None and not replay.empty:
            long = replay.reset_index().melt(id_vars=["series_id", "ts"], var_name="variable").dropna()
            self._advance_all(long, forecast=False)
            log.info("resumed the adapted readout: replayed %d stored observations after its checkpoint", len(long))

    def _checkpoint(self) -> tuple[str, str, str, bytes] | None:
        """The adapted readout and how far it has processed each series, as a checkpoint row."""
        if self.readout is None or self.handle is None:
            return None
        seen = {sid: st.last_ts for sid, st in self.states.items() if st.last_ts is not None}
        order = sorted(seen)
        H = self.readout.W0.shape[1]
        arrays = {
            **self.readout.state(),
            "series": np.array(order, dtype=str),
            "last_ns": np.array([seen[sid].value for sid in order], dtype=np.int64),
            # The adapted forecasts of the origins still waiting for targets (scored when they mature).
            "pending": np.array([self.states[sid].stream.ring.pending() for sid in order]).reshape(len(order), H, H),  # type: ignore[attr-defined]
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return self.target, self.handle.version, self.handle.run_id, buf.getvalue()

    def _resume(self, readout: OnlineReadout) -> _Resume | None:
        """The target's checkpoint restored into ``readout`` if it is of the champion streaming."""
        assert self.handle is not None
        row = self.store.stream_checkpoint(self.target)
        if row is None:
            return None
        if (row["model_version"], row["run_id"]) != (self.handle.version, self.handle.run_id):
            log.info(
                "stream checkpoint is of v%s, streaming v%s: the readout starts from the registered one",
                row["model_version"],
                self.handle.version,
            )
            return None
        with np.load(io.BytesIO(row["state"]), allow_pickle=False) as arrays:
            state = {k: arrays[k] for k in arrays.files}
        try:
            readout.restore(state)
        except ValueError as exc:
            log.warning("stream checkpoint not used (%s): the readout starts from the registered one", exc)
            return None
        last = dict(zip(state["series"].tolist(), state["last_ns"].tolist(), strict=True))
        pending = dict(zip(state["series"].tolist(), state["pending"], strict=True))
        return _Resume(last, readout.t, pending)

    def _new_state(self, sid: str) -> SeriesState:
        """The stream of a series first seen now: nothing before it to warm on."""
        assert self.handle is not None
        history = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="ts"))
        state = self._state(sid, self.handle.bundle.model.stream(sid, history), history)
        self.states[sid] = state
        return state

    def _state(self, sid: str, stream: SeriesStream, history: pd.DataFrame) -> SeriesState:
        """A series' state: its stream positioned after its (regularised) history."""
        assert self.handle is not None
        y = history.get(self.target)
        seen = y is not None and not bool(np.isnan(y.to_numpy(dtype=float)).all())
        scale = mase_scale(y, self.handle.bundle.model.config.season)[0] if seen else float("nan")
        return SeriesState(sid, stream, scale, history.index.max() if len(history) else None, seen)

    def _maybe_retrain(self, at: pd.Timestamp | None) -> None:
        """At a batch boundary: swap to a new champion if the registry's alias moved (a
        retrain of ours or anyone's), follow a retrain running elsewhere, or start one
        when a trigger fires; at most one at a time."""
        self._follow_champion(at)
        if self.job is not None:
            code = self.job.poll()
            if code is None:
                return  # still training: the stream goes on with the current champion
            self._record("retrain_done", self.job.description, f"exit {code}")
            self.job = None
            self._follow_champion(at)
        decision = retrain_decision(self.store, self.settings, self.target)
        if not decision.retrain:
            return
        log.warning("retraining %s: %s (%s)", self.target, decision.reason, decision.detail)
        outcome = "no retrain function configured"
        if self.retrain_fn is not None:
            try:
                self.job = self.retrain_fn(self.target)
                outcome = "retrained" if self.job is None else f"started: {self.job.description}"
            except Exception as exc:  # noqa: BLE001 - the stream must keep going; the trigger records why
                outcome = f"failed: {type(exc).__name__}: {exc}"[:250]
        self._record(decision.reason, decision.detail, outcome)
        if outcome == "retrained" and at is not None:
            self._load(at + pd.Timedelta(seconds=1))

    def _follow_champion(self, at: pd.Timestamp | None) -> None:
        """Swap to the registry's ``@champion`` when it is no longer the version streaming:
        at a batch boundary, its state warmed on the stored history like the first batch's."""
        if self.handle is None or at is None:
            return
        version = champion_version(self.target)
        if version is None or version == self.handle.version:
            return
        before = f"v{self.handle.version} ({self.handle.kind})"
        self._load(at + pd.Timedelta(seconds=1))
        assert self.handle is not None
        self._record("swap", f"@champion moved from {before}", f"streaming v{self.handle.version} ({self.handle.kind})")

    def _record(self, reason: str, detail: str, outcome: str) -> None:
        self.store.record_retrain(self.target, reason, detail, outcome)
        self.stats.retrains.append({"reason": reason, "detail": detail, "outcome": outcome})


def _validation_noise(calibration: Calibration, model: ESNForecaster) -> np.ndarray:
    """Per step, the registered readout's residual variance on validation in its scaled
    units: the 90% conformal half-width as 1.645 standard deviations of a normal error,
    over the target's average training standard deviation (the readout works on each
    series scaled by its own)."""
    assert model.scaler is not None
    std = float(np.mean([s[model.config.target] for s in model.scaler.std.values()]))
    z = NormalDist().inv_cdf(0.5 + calibration.level / 2)
    sd = np.maximum(calibration.half_width / z / std, 1e-6)
    return sd**2


def _ns(t: datetime) -> int:
    """A UTC-aware time as integer nanoseconds: what the stream's bookkeeping of issued
    forecasts compares (plain integer arithmetic; steps are exact multiples)."""
    return pd.Timestamp(t).value


@dataclass
class _Issued:
    """One forecast this stream issued and committed, as long as it has points to mature
    (times in UTC nanoseconds)."""

    forecast_id: str
    origin_ns: int
    step_ns: int
    yhat: np.ndarray
    model_name: str
    model_version: str | None
    last_ns: int  # the time of its last point


class _Outstanding:
    """The forecasts this process issued whose last step has not matured yet, per series.

    A stream scores each arriving actual against every point forecast for its time: at
    1,000 series that is 24,000 points an hour, which read back from the store cost more
    than the rest of the batch. They are scored from here instead; a series' time is
    *covered* once every origin that can have a point at it was issued (and remembered)
    here, and uncovered times (the first horizon after a start, restart or champion swap,
    or after a gap) are still read from the store. A forecast another process issues
    meanwhile for a covered time (a batch ``streamcast forecast`` beside the stream) is
    scored by that process's next run (``score_matured``), not by the stream."""

    def __init__(self) -> None:
        self.by_series: dict[str, list[_Issued]] = {}
        self.since: dict[str, int] = {}  # per series: remembered every origin from this one on (ns)
        self.last_origin: dict[str, int] = {}  # per series: the newest origin remembered (ns)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Remember committed forecast points (store records, all points of a forecast together)."""
        start = 0
        while start < len(records):
            first = records[start]
            end = start + 1
            while end < len(records) and records[end]["forecast_id"] == first["forecast_id"]:
                end += 1
            sid, origin = first["series_id"], _ns(first["origin_ts"])
            issued = _Issued(
                first["forecast_id"],
                origin,
                _ns(first["ts"]) - origin,
                np.array([r["yhat"] for r in records[start:end]]),
                first["model_name"],
                first["model_version"],
                _ns(records[end - 1]["ts"]),
            )
            last = self.last_origin.get(sid)
            if sid not in self.since or last is None or origin - last != issued.step_ns:
                self.since[sid] = origin  # the first, or an origin skipped (a gap): covered from here
            self.by_series.setdefault(sid, []).append(issued)
            self.last_origin[sid] = origin
            start = end

    def covers(self, series_id: str, ts: datetime) -> bool:
        """Every forecast with a point at ``ts`` of the series was issued here (is remembered)."""
        since, last, held = self.since.get(series_id), self.last_origin.get(series_id), self.by_series.get(series_id)
        if since is None or last is None or not held:
            return False
        t, step, horizon = _ns(ts), held[-1].step_ns, len(held[-1].yhat)
        return t - horizon * step >= since and t - step <= last

    def matured(self, series_id: str, ts: datetime) -> list[dict[str, Any]]:
        """The remembered points at ``ts`` of the series, as store records (the scoring
        path's); forecasts whose last point this was, or whose horizon passed, are dropped."""
        held = self.by_series.get(series_id)
        if not held:
            return []
        t = _ns(ts)
        out = []
        for f in held:
            if f.origin_ns < t <= f.last_ns:
                k, rest = divmod(t - f.origin_ns, f.step_ns)
                if not rest:
                    out.append(
                        {
                            "forecast_id": f.forecast_id,
                            "step": k,
                            "series_id": series_id,
                            "ts": ts,
                            "yhat": float(f.yhat[k - 1]),
                            "model_name": f.model_name,
                            "model_version": f.model_version,
                        }
                    )
        self.by_series[series_id] = [f for f in held if f.last_ns > t]
        return out

    def remembered_from(self, series_ids: Sequence[str]) -> datetime | None:
        """An origin from which on every forecast of each of ``series_ids`` is remembered
        here (the earliest of theirs), or None when one of them has none."""
        since = [s for sid in series_ids if (s := self.since.get(sid)) is not None]
        return pd.Timestamp(min(since), tz="UTC").to_pydatetime() if since and len(since) == len(series_ids) else None

    def forget_coverage(self) -> None:
        """Read from the store again until a horizon of fresh forecasts is remembered (a new champion)."""
        self.since.clear()


@dataclass
class _Resume:
    """Where an adapted readout's checkpoint had processed each series (ns), and its time."""

    last_ns: dict[str, int]
    t: pd.Timestamp | None
    pending: dict[str, np.ndarray]  # the adapted forecasts of each series' origins held at the checkpoint

    def split(self, history: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``history`` as (what the checkpoint had seen: warm up on it, what it had not: replay)."""
        sids = history.index.get_level_values("series_id").astype(str)
        ts = history.index.get_level_values("ts")
        default = self.t.value if self.t is not None else np.iinfo(np.int64).min
        cut = np.array([self.last_ns.get(s, default) for s in sids], dtype=np.int64)
        seen = ts.as_unit("ns").asi8 <= cut
        return history[seen], history[~seen]


def _by_stream_class(states: list[SeriesState], rows: list[Row]) -> list[list[tuple[SeriesState, Row]]]:
    """``states`` (with their rows) grouped by the class of their stream: the unit a family
    batches over (one model's streams are all of one class)."""
    groups: dict[type, list[tuple[SeriesState, Row]]] = {}
    for st, row in zip(states, rows, strict=True):
        groups.setdefault(type(st.stream), []).append((st, row))
    return list(groups.values())
