"""The streaming loop: store each observation, advance the champion, forecast, score, retrain.

For each new observation of a series: the store is updated idempotently, the
champion's state moves one step (through the model's streaming hook: an ESN takes
one reservoir step, window models shift their window), a fresh forecast is stored,
forecast points that have now matured are scored against the actual, and retraining
starts when live MASE drifts from the backtest or the retrain interval elapses.
"""

from __future__ import annotations

import gc
import io
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    MaturedPoints,
    champion_version,
    forecast_id,
    live_factor,
    load_champion,
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

    def count(self, summary: IngestSummary, issued: list[_Block], matured: MaturedPoints | None) -> None:
        self.batches += 1
        self.observations += summary.observations_read
        self.new += summary.new
        self.unchanged += summary.unchanged
        self.quarantined += summary.quarantined_total
        self.forecasts += sum(len(b.series) for b in issued)
        self.scored_points += len(matured) if matured is not None else 0

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
        self.live_errors = _LiveErrors(settings.drift_window)  # the drift check's live MASE, from memory
        self._since_check = 0
        self._frozen = False  # whether a load has frozen the heap (see :meth:`_load`)

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
        if self._frozen:  # what the loads froze may now become garbage
            gc.unfreeze()
            self._frozen = False

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
        issued, arrived = self._advance_all(obs)
        matured = self._score(arrived, issued)
        self._since_check += obs["ts"].nunique()
        checking = self._since_check >= self.check_every
        checkpoint = self._checkpoint() if checking else None
        scored = matured.score_columns(self.target) if matured is not None else None

        def write_derived(tx: Transaction) -> None:
            if issued:
                tx.write_forecast_columns(_concat([b.columns(self.target) for b in issued]))
            if scored is not None:
                tx.write_score_columns(scored)
            if checkpoint is not None:
                tx.write_stream_checkpoint(*checkpoint)

        # One commit per batch: a crash leaves all of it or none (the entries are then redelivered).
        summary = write_batch(self.store, parsed, "stream", "stream", also=write_derived)
        self.stats.count(summary, issued, matured)
        if batch.ack:
            batch.ack()
        self.stats.latencies_ms.append((time.perf_counter() - batch.received_at) * 1000)
        self.outstanding.add(issued)  # committed: later batches score them from memory
        if matured is not None and scored is not None:
            self.live_errors.add(scored, matured.ts_ns)
        if self.handle is not None and matured is not None:
            # The next forecasts' intervals know what just matured (a quantile tracker, per batch).
            self.interval_factor = tracked_factor(
                self.handle, self.interval_factor, matured, self.settings.stream_interval_rate
            )
            self.calibration = self.handle.bundle.calibration.scaled(self.interval_factor)
        if checking:
            self._since_check = 0
            self._maybe_retrain(obs["ts"].max() if not obs.empty else None)

    def _advance_all(
        self, obs: pd.DataFrame, forecast: bool = True
    ) -> tuple[list[_Block], list[tuple[SeriesState, pd.Timestamp, float]]]:
        """Every series' new rows through its stream, in time order: the fresh forecasts
        (a block per time and stream class), and the target values that arrived (to score
        earlier forecasts with). The
        series observed at one time move together (an ESN steps all their reservoirs in one
        matrix product and forecasts them in another)."""
        # Plain dicts, not pivot tables: a stream batch holds a handful of values per series.
        rows: dict[str, dict[pd.Timestamp, Row]] = {}
        # Each distinct time made a Timestamp once (a batch holds a few; 20,000 rows an hour at
        # 10,000 series), the rest as plain Python values.
        codes, times = pd.factorize(pd.DatetimeIndex(obs["ts"]))
        stamps = list(times)
        columns = (obs["series_id"].tolist(), obs["variable"].tolist(), codes.tolist(), obs["value"].tolist())
        for sid, var, code, v in zip(*columns, strict=True):
            rows.setdefault(str(sid), {}).setdefault(stamps[code], {})[str(var)] = float(v)
        at: dict[pd.Timestamp, list[tuple[SeriesState, Row]]] = {}
        for sid, by_time in sorted(rows.items()):
            state = self.states.get(sid) or self._new_state(sid)
            for ts, row in by_time.items():
                at.setdefault(ts, []).append((state, row))
        issued: list[_Block] = []
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
                    arrived.append((st, ts, row[self.target]))
            ready = [st for st, _ in moving if st.has_target and forecast]  # none before the target was seen
            for group in _by_stream_class(ready, [{}] * len(ready)):
                members = [st for st, _ in group]
                yhats = type(members[0].stream).forecast_all([m.stream for m in members])
                block = self._block(ts, members, yhats)
                if block is not None:
                    issued.append(block)
        return issued, arrived

    def _fill_gap(self, state: SeriesState, ts: pd.Timestamp) -> None:
        """Steps of ``state``'s series that never arrived before ``ts``: taken with nothing
        observed (forward filled), one at a time (rare)."""
        assert self.handle is not None
        if state.last_ts is None:
            return
        freq = self.handle.bundle.model.freq or pd.Timedelta(hours=1)
        if ts.value - state.last_ts.value == freq.value:  # the next step (as nanoseconds: every series, every hour)
            return
        for k in range(max(round((ts - state.last_ts) / freq), 1) - 1, 0, -1):
            state.stream.advance(ts - k * freq, {})

    def _block(self, ts: pd.Timestamp, states: list[SeriesState], yhats: list[np.ndarray | None]) -> _Block | None:
        """The fresh forecasts of ``states``' series from ``ts`` (those that have one)."""
        assert self.handle is not None and self.calibration is not None
        have = [(st.series_id, y) for st, y in zip(states, yhats, strict=True) if y is not None]
        if not have:
            return None
        Y = np.array([y for _, y in have], dtype=float)
        handle = self.handle
        return _Block(
            origin=ts,
            step=handle.bundle.model.freq or pd.Timedelta(hours=1),
            series=[sid for sid, _ in have],
            ids=[forecast_id(sid, self.target, ts, handle.version) for sid, _ in have],
            yhat=Y,
            half_width=self.calibration.half_width[: Y.shape[1]],
            model_name=handle.kind,
            model_version=handle.version,
            run_id=handle.run_id,
            issued_at=utcnow(),
        )

    def _score(
        self, arrived: list[tuple[SeriesState, pd.Timestamp, float]], pending: list[_Block]
    ) -> MaturedPoints | None:
        """Score every forecast point whose time has just been observed: those this process
        issued in earlier batches (from memory), those issued earlier in this same batch,
        and, where a point may have been issued before this process followed the series
        (after a start, restart or swap), those stored (one query per batch)."""
        if not arrived:
            return None
        by_time: dict[pd.Timestamp, list[tuple[SeriesState, float]]] = {}
        for st, ts, actual in arrived:
            by_time.setdefault(ts, []).append((st, actual))
        unknown = [(st.series_id, ts) for st, ts, _ in arrived if not self.outstanding.covers(st.series_id, ts.value)]
        sids = sorted({k[0] for k in unknown})
        stored = (
            # Only what was issued before this process remembers every origin of a series:
            # the rest is in memory (a full horizon of its own forecasts is 24 points per
            # series and time, which read back cost more than the rest of the batch).
            self.store.forecasts_for_times(
                self.target, sids, sorted({k[1] for k in unknown}), self.outstanding.remembered_from(sids)
            )
            if unknown
            else None
        )
        found = _Found()
        for ts, seen in by_time.items():
            sids, values = [st.series_id for st, _ in seen], [(st.scale, y) for st, y in seen]
            for block in [*self.outstanding.blocks, *pending]:
                found.add_block(block, ts, sids, values)
        self.outstanding.retire(max(by_time).value)
        if stored is not None and not stored.empty:
            at = {(st.series_id, ts): (st.scale, actual) for st, ts, actual in arrived}
            found.add_records(stored, at)
        return found.matured()

    # --- champion and series state ---------------------------------------------------

    def _load(self, before: pd.Timestamp) -> None:
        """The champion, and every series' state warmed on the stored history before ``before``.

        What a stream then holds for as long as it follows this champion (the model, every
        series' state, the modules) is frozen out of the garbage collector's full passes
        (``gc.freeze``, as the API does after start-up; released by :meth:`close`): at 10,000
        series the collector took 0.64 s of a 5.1 s hour walking it, 0.43 s with it frozen
        (in process, the hours of a stream's first day). What is held before the load is
        frozen first, so that the full passes the load's own allocations set off walk only
        what it makes: at 1,000 series each pass over the whole heap (modules, TensorFlow)
        took 0.15 s, and a first load set off two of them. On a swap the replaced champion's
        cycles are collected once, after the load."""
        swap = self._frozen
        gc.freeze()
        self._frozen = True
        try:
            self._load_champion(before)
        finally:
            if swap:
                gc.unfreeze()  # the states and model a swap replaced are collected with the load's garbage
            gc.collect()
            gc.freeze()

    def _load_champion(self, before: pd.Timestamp) -> None:
        """:meth:`_load` itself. An adapting ESN readout resumes from the target's checkpoint
        when it is of this champion: the series are warmed up to where the checkpoint had
        processed each of them, and what the store holds after that (batches committed
        after the last check) is replayed through the same path as live entries, forecasts
        aside."""
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
        followed = [sid for sid, st in self.states.items() if st.has_target]
        decision = retrain_decision(
            self.store, self.settings, self.target, live=lambda since: self.live_errors.mase(since, followed)
        )
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


@dataclass
class _Block:
    """Forecasts issued at one origin for many series by one champion, as arrays: the unit
    the stream issues, stores and scores (one per time and stream class in a batch)."""

    origin: pd.Timestamp
    step: pd.Timedelta
    series: list[str]
    ids: list[str]  # each series' forecast_id
    yhat: np.ndarray  # (series, horizon)
    half_width: np.ndarray  # (horizon,): the interval of every point
    model_name: str
    model_version: str | None
    run_id: str | None
    issued_at: datetime

    def __post_init__(self) -> None:
        self.row = {sid: k for k, sid in enumerate(self.series)}
        self.origin_ns, self.step_ns = self.origin.value, self.step.value
        self.last_ns = self.origin_ns + self.horizon * self.step_ns  # the time of its last point

    @property
    def horizon(self) -> int:
        return int(self.yhat.shape[1])

    def columns(self, target: str) -> dict[str, list[Any]]:
        """Its points as ``forecasts`` columns (series by series, step by step)."""
        n, H = self.yhat.shape
        origin, step = self.origin.to_pydatetime(), self.step.to_pytimedelta()
        return {
            "forecast_id": [f for f in self.ids for _ in range(H)],
            "series_id": [sid for sid in self.series for _ in range(H)],
            "target": [target] * (n * H),
            "issued_at": [self.issued_at] * (n * H),
            "origin_ts": [origin] * (n * H),
            "ts": [origin + (h + 1) * step for h in range(H)] * n,
            "step": list(range(1, H + 1)) * n,
            "yhat": self.yhat.ravel().tolist(),
            "lo": (self.yhat - self.half_width).ravel().tolist(),
            "hi": (self.yhat + self.half_width).ravel().tolist(),
            "model_name": [self.model_name] * (n * H),
            "model_version": [self.model_version] * (n * H),
            "run_id": [self.run_id] * (n * H),
        }


def _concat(columns: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """Column sets of the same names as one."""
    if len(columns) == 1:
        return columns[0]
    return {name: [v for c in columns for v in c[name]] for name in columns[0]}


class _Found:
    """Matured points as they are found (from blocks in memory, then stored records), each
    point once, with its actual and its series' MASE scale."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.steps: list[int] = []
        self.series: list[str] = []
        self.ts: list[datetime] = []
        self.ts_ns: list[int] = []
        self.yhat: list[float] = []
        self.scale: list[float] = []
        self.actual: list[float] = []
        self.names: list[str] = []
        self.versions: list[str | None] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add_block(self, block: _Block, ts: pd.Timestamp, sids: list[str], values: list[tuple[float, float]]) -> None:
        """The points of ``block`` at ``ts`` of ``sids`` (whose (scale, actual) are ``values``)."""
        t = ts.value
        if not block.origin_ns < t <= block.last_ns:
            return
        k, rest = divmod(t - block.origin_ns, block.step_ns)
        if rest:
            return
        hits = [(i, r) for i, sid in enumerate(sids) if (r := block.row.get(sid)) is not None]
        if not hits:
            return
        rows = [r for _, r in hits]
        m = len(rows)
        self.ids += [block.ids[r] for r in rows]
        self.steps += [k] * m
        self.series += [block.series[r] for r in rows]
        self.ts += [ts.to_pydatetime()] * m
        self.ts_ns += [t] * m
        yhat = block.yhat[rows, k - 1]
        half = block.half_width[k - 1]  # as the point was stored (``_Block.columns``)
        self.yhat += yhat.tolist()
        self.lo += (yhat - half).tolist()
        self.hi += (yhat + half).tolist()
        for i, _ in hits:
            scale, actual = values[i]
            self.scale.append(scale)
            self.actual.append(actual)
        self.names += [block.model_name] * m
        self.versions += [block.model_version] * m

    def add_records(self, stored: pd.DataFrame, at: dict[tuple[str, pd.Timestamp], tuple[float, float]]) -> None:
        """Stored points (``forecasts_for_times``) at the arrived times of ``at``, those not found yet."""
        seen = set(zip(self.ids, self.steps, strict=True))
        ts = pd.DatetimeIndex(stored["ts"]).as_unit("ns")
        columns = (
            stored["forecast_id"].tolist(),
            stored["step"].astype(int).tolist(),
            stored["series_id"].tolist(),
            ts,
            ts.to_pydatetime().tolist(),
            ts.asi8.tolist(),
            stored["yhat"].astype(float).tolist(),
            stored["model_name"].tolist(),
            [None if v is None or v != v else str(v) for v in stored["model_version"].tolist()],
            stored["lo"].astype(float).tolist(),  # NULL (issued without an interval) -> NaN
            stored["hi"].astype(float).tolist(),
        )
        for fid, step, sid, t, when, t_ns, yhat, name, version, lo, hi in zip(*columns, strict=True):
            hit = at.get((sid, t))
            if hit is None or (fid, step) in seen:
                continue
            seen.add((fid, step))
            self.ids.append(fid)
            self.steps.append(step)
            self.series.append(sid)
            self.ts.append(when)
            self.ts_ns.append(t_ns)
            self.yhat.append(yhat)
            self.scale.append(hit[0])
            self.actual.append(hit[1])
            self.names.append(name)
            self.versions.append(version)
            self.lo.append(lo)
            self.hi.append(hi)

    def matured(self) -> MaturedPoints | None:
        if not self.ids:
            return None
        return MaturedPoints(
            self.ids,
            self.steps,
            self.series,
            self.ts,
            np.array(self.ts_ns, dtype=np.int64),
            np.array(self.yhat, dtype=float),
            np.array(self.actual, dtype=float),
            np.array(self.scale, dtype=float),
            self.names,
            self.versions,
            np.array(self.lo, dtype=float),
            np.array(self.hi, dtype=float),
        )


class _Outstanding:
    """The forecasts this process issued whose points have not all matured (blocks).

    A stream scores each arriving actual against every point forecast for its time: at
    1,000 series that is 24,000 points an hour, which read back from the store cost more
    than the rest of the batch. They are scored from here instead; a series' time is
    *covered* once every origin that can have a point at it was issued (and remembered)
    here, and uncovered times (the first horizon after a start, restart or champion swap,
    or after a gap, or an actual arriving more than a horizon late) are still read from the
    store. A forecast another process issues meanwhile for a covered time (a batch
    ``streamcast forecast`` beside the stream) is scored by that process's next run
    (``score_matured``), not by the stream."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.since: dict[str, int] = {}  # per series: remembered every origin from this one on (ns)
        self.last_origin: dict[str, int] = {}  # per series: the newest origin remembered (ns)
        self.shape: dict[str, tuple[int, int]] = {}  # per series: (step, horizon) of its newest forecast
        self.kept_from = np.iinfo(np.int64).min  # blocks of origins before this one were let go (ns)

    def add(self, blocks: list[_Block]) -> None:
        """Remember committed forecasts."""
        for b in blocks:
            for sid in b.series:
                last = self.last_origin.get(sid)
                if sid not in self.since or last is None or b.origin_ns - last != b.step_ns:
                    self.since[sid] = b.origin_ns  # the first, or an origin skipped (a gap): covered from here
                self.last_origin[sid] = b.origin_ns
                self.shape[sid] = (b.step_ns, b.horizon)
            self.blocks.append(b)

    def covers(self, series_id: str, t: int) -> bool:
        """Every forecast with a point at ``t`` (ns) of the series was issued here (is remembered)."""
        since, last, shape = self.since.get(series_id), self.last_origin.get(series_id), self.shape.get(series_id)
        if since is None or last is None or shape is None:
            return False
        step, horizon = shape
        return t - horizon * step >= max(since, self.kept_from) and t - step <= last

    def retire(self, now: int) -> None:
        """Let go of the forecasts whose last point is a horizon or more before ``now`` (ns):
        an actual that late is scored from the store."""
        keep = []
        for b in self.blocks:
            if b.last_ns + (b.last_ns - b.origin_ns) <= now:
                self.kept_from = max(self.kept_from, b.origin_ns + b.step_ns)  # the next origin on is kept
            else:
                keep.append(b)
        self.blocks = keep

    def remembered_from(self, series_ids: Sequence[str]) -> datetime | None:
        """An origin from which on every forecast of each of ``series_ids`` is remembered
        here (the earliest of theirs), or None when one of them has none."""
        since = [s for sid in series_ids if (s := self.since.get(sid)) is not None]
        if not since or len(since) != len(series_ids):
            return None
        return pd.Timestamp(max(min(since), self.kept_from), tz="UTC").to_pydatetime()

    def forget_coverage(self) -> None:
        """Read from the store again until a horizon of fresh forecasts is remembered (a new champion)."""
        self.since.clear()


class _LiveErrors:
    """The scaled errors of the latest ``window`` points per series scored here (by time),
    each with when it was scored: the drift check's live MASE (what
    :meth:`~streamcast.store.Store.recent_live_mase` reads from every score since the
    last training, 24,000 more rows an hour at 1,000 series) once every series followed
    has a full window of points scored since that training; until then (after a start or
    a retrain) the store answers."""

    def __init__(self, window: int) -> None:
        self.window = max(window, 1)
        self.errors: dict[str, deque[tuple[datetime, float]]] = {}

    def add(self, columns: Mapping[str, Sequence[Any]], ts_ns: np.ndarray) -> None:
        """A committed batch's ``scores`` columns (the points' times as ``ts_ns``), in time order."""
        series, scaled, scored_at = columns["series_id"], columns["scaled_error"], columns["scored_at"]
        for i in np.argsort(ts_ns, kind="stable").tolist():
            if scaled[i] is None:  # no MASE scale: not in the live MASE (as in the store's)
                continue
            q = self.errors.get(series[i])
            if q is None:
                q = self.errors[series[i]] = deque(maxlen=self.window)
            q.append((scored_at[i], scaled[i]))

    def mase(self, since: pd.Timestamp, series: Sequence[str]) -> tuple[bool, float | None]:
        """(known, mean scaled error) of each series' latest ``window`` points scored at or
        after ``since``: known when each of ``series`` has that many here."""
        t = since.to_pydatetime()
        kept = [[e for at, e in self.errors.get(sid, ()) if at >= t] for sid in series]
        if not kept or any(len(errors) < self.window for errors in kept):
            return False, None
        return True, float(np.mean([e for errors in kept for e in errors]))


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
