"""Streaming: replay and Redis Streams through the champion, live scoring, drift retraining."""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast import services
from streamcast.cli import app
from streamcast.config import Settings, services_required
from streamcast.features import prepare_panel
from streamcast.models.esn import MEMORY_TOLERANCE
from streamcast.sources.replay import replay_batches, replay_frame
from streamcast.sources.stream import StreamBatch
from streamcast.store import Store
from streamcast.streaming import StreamProcessor, StreamStats
from tests.conftest import ingest_weather

pytestmark = pytest.mark.slow
REDIS_URL = os.environ.get("STREAMCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
STREAM_START = pd.Timestamp("2013-12-20T00:00Z")


def _history_and_champion(settings: Settings, data_dir: Path, models: list[str], **overrides) -> None:
    """Store nyc-weather from late October up to STREAM_START, register a champion on it."""
    ingest_weather(settings, data_dir / "h.csv", end="2013-12-20")
    services.train(settings=settings, models=models, folds=2, model_overrides=overrides)


def _redis():
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if services_required():
            pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc} (STREAMCAST_REQUIRE_SERVICES=1)")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    return client


def _wait_until_idle(client, stream: str, group: str, min_idle_ms: int, timeout: float = 30) -> None:
    """Until every pending entry of the group has been idle ``min_idle_ms`` (what XAUTOCLAIM waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = client.xpending_range(stream, group, min="-", max="+", count=10_000)
        if all(p["time_since_delivered"] >= min_idle_ms for p in pending):
            return
        time.sleep(0.05)
    raise AssertionError(f"entries of {stream} still not idle for {min_idle_ms} ms after {timeout} s")


def test_replay_forecasts_every_timestamp_and_scores_matured_points(
    settings: Settings, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history_and_champion(settings, data_dir, ["naive"])
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=35))
    proc = StreamProcessor(settings)
    stats = proc.run(replay_batches(frame, speed=0))
    proc.close()
    assert stats.batches == 36 and stats.new == stats.observations > 0
    store = Store(settings.database_url)
    fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
    origins = fc.groupby("series_id")["origin_ts"].nunique()
    assert origins.to_dict() == {"EWR": 36, "JFK": 36, "LGA": 36}
    live = store.live_scores("temp")
    # Points of step h mature h hours after their origin: 35 - h + 1 per series.
    assert live.set_index("step")["n"].loc[1] == 3 * 35 and live.set_index("step")["n"].loc[24] == 3 * 12
    assert (live["mase"] > 0).all()
    # Live coverage per step: the share of matured actuals inside the interval issued with them.
    scored = store.recent_residuals("temp", "1", 100_000).merge(fc[["forecast_id", "step", "lo", "hi"]])
    inside = ((scored["actual"] >= scored["lo"]) & (scored["actual"] <= scored["hi"])).groupby(scored["step"]).mean()
    assert live.set_index("step")["coverage"].to_dict() == pytest.approx(inside.to_dict())
    # `streamcast scores` shows what the drift trigger compares: the windowed live MASE and its threshold.
    monkeypatch.setenv("STREAMCAST_DRIFT_WINDOW", "5")
    monkeypatch.setenv("STREAMCAST_DRIFT_FACTOR", "1.5")
    res = CliRunner().invoke(app, ["scores", "--json"])
    assert res.exit_code == 0, res.output
    drift = json.loads(res.output)["drift"]
    trained = store.latest_comparison("temp")
    since = pd.Timestamp(trained["created_at"].max())
    since = since.tz_localize("UTC") if since.tzinfo is None else since
    assert drift["window"] == 5 and drift["live_mase"] == pytest.approx(store.recent_live_mase("temp", since, 5))
    # The stream's drift check reads the same live MASE from what it scored, not the store.
    window = settings.drift_window
    followed = sorted(proc.states)
    assert proc.live_errors.mase(since, followed) == (
        True,
        pytest.approx(store.recent_live_mase("temp", since, window)),
    )
    assert proc.live_errors.mase(pd.Timestamp.now(tz="UTC"), followed) == (False, None)  # since a later training
    short = proc.live_errors.mase(since, [*followed, "XYZ"])  # a series without a full window: the store answers
    assert short == (False, None)
    assert drift["threshold"] == pytest.approx(1.5 * float(trained.sort_values("rank")["mase"].iloc[0]))
    text = CliRunner().invoke(app, ["scores"]).output
    assert "coverage" in text and "drift check: live MASE" in " ".join(text.split())
    # Replaying the same hours again doubles nothing.
    again = StreamProcessor(settings)
    again.run(replay_batches(frame, speed=0))
    again.close()
    assert store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3)).shape[0] == fc.shape[0]
    store.dispose()


def test_every_matured_point_is_scored_once_across_a_batch_forecast_a_restart_and_a_gap(
    settings: Settings, data_dir: Path
) -> None:
    """The stream scores the points it issued from memory and reads the store only for
    times an earlier issuer may have forecast: the batch forecast before it, its own
    forecasts before a restart, the hours after a series' gap. Whichever way, every
    forecast point whose actual arrived is scored exactly once, against that actual."""
    _history_and_champion(settings, data_dir, ["naive"])
    services.forecast(settings=settings)  # another process's forecast from the last stored hour
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=39))
    gap = (frame["series_id"] == "EWR") & frame["ts"].between(
        STREAM_START + pd.Timedelta(hours=8), STREAM_START + pd.Timedelta(hours=10)
    )
    frame = frame[~gap]
    first = frame[frame["ts"] < STREAM_START + pd.Timedelta(hours=20)]
    rest = frame[frame["ts"] >= STREAM_START + pd.Timedelta(hours=20)]
    # After the restart, batches of five hours: forecasts issued early in a batch mature later in it.
    times = sorted(rest["ts"].unique())
    chunks = [rest[rest["ts"].isin(times[i : i + 5])].reset_index(drop=True) for i in range(0, len(times), 5)]
    for batches in (replay_batches(first, speed=0), (StreamBatch(c, time.perf_counter()) for c in chunks)):
        proc = StreamProcessor(settings)  # the second one starts with nothing in memory (a restart)
        proc.run(batches)
        proc.close()
    store = Store(settings.database_url)
    points = store.forecasts_between(STREAM_START - pd.Timedelta(days=1), STREAM_START + pd.Timedelta(days=3))
    actuals = store.load_wide(start=STREAM_START - pd.Timedelta(days=1))["temp"].dropna().rename("actual").reset_index()
    due = points.merge(actuals, on=["series_id", "ts"])
    scored = store.recent_residuals("temp", "1", 10**6)
    store.dispose()
    assert points["origin_ts"].min() < STREAM_START and due["ts"].max() == frame["ts"].max()
    assert not scored.duplicated(["forecast_id", "step"]).any()
    got = scored.set_index(["forecast_id", "step"]).sort_index()
    want = due.set_index(["forecast_id", "step"]).sort_index()
    assert got.index.equals(want.index), (len(got), len(want))
    np.testing.assert_allclose(got["yhat"], want["yhat"])
    np.testing.assert_allclose(got["actual"], want["actual"])


def test_esn_stream_state_matches_a_batch_run(settings: Settings, data_dir: Path) -> None:
    _history_and_champion(settings, data_dir, ["esn"], esn={"units": 60})
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=11))
    proc = StreamProcessor(settings, adapt=False)  # the registered readout: the batch run's
    proc.run(replay_batches(frame, speed=0))
    proc.close()
    assert proc.handle is not None
    model = proc.handle.bundle.model
    assert model.kind == "esn"
    # The same history (what the stream warmed on, then what it was fed) through the reservoir in one go.
    store = Store(settings.database_url)
    history = store.load_wide(series_ids=["JFK"], start=STREAM_START - pd.Timedelta(days=30))
    panel = prepare_panel(history, freq=model.freq, max_gap=proc.handle.max_gap)
    batch = model.predict(panel, [panel["JFK"].index[-1]])["yhat"].to_numpy()
    # Both warmed on the measured warm-up (before the stream's start, and before the origin):
    # the same state to its tolerance, in the target's standard deviations.
    atol = 10 * MEMORY_TOLERANCE * float(panel["JFK"]["temp"].std())
    np.testing.assert_allclose(proc.states["JFK"].stream.forecast(), batch, rtol=0, atol=atol)
    stored = store.latest_forecasts(series_id="JFK")
    store.dispose()
    np.testing.assert_allclose(stored.sort_values("step")["yhat"].to_numpy(), batch, rtol=0, atol=atol)


def _issued_after(settings: Settings, proc: StreamProcessor, shift: pd.Timestamp) -> pd.DataFrame:
    """The scored points of the forecasts issued in the 48 h from ``shift``, with their intervals."""
    store = Store(settings.database_url)
    scored = store.recent_residuals("temp", proc.handle.version if proc.handle else "", 1_000_000)
    issued = store.forecasts_between(STREAM_START, shift + pd.Timedelta(hours=200))
    store.dispose()
    points = scored.merge(issued[["forecast_id", "step", "origin_ts", "lo", "hi"]], on=["forecast_id", "step"])
    return points[(points["origin_ts"] >= shift) & (points["origin_ts"] < shift + pd.Timedelta(hours=48))]


@pytest.mark.parametrize("change", ["level +10", "daily swings x2"])
def test_after_a_change_the_adapting_stream_beats_the_frozen_one(
    settings: Settings, data_dir: Path, tmp_path: Path, change: str
) -> None:
    # An ESN champion streamed with and without its online readout (no retrain), the data
    # changed from hour 24: +10 °F (its errors jump; the adapting one corrects within hours,
    # and both issue intervals that widen to keep covering about 90%), or each value's
    # deviation from its day's mean doubled (the dynamics change, not the level).
    _history_and_champion(settings, data_dir, ["esn"], esn={"units": 60})
    frozen_dir = tmp_path / "frozen"
    shutil.copytree(data_dir, frozen_dir)
    shift = STREAM_START + pd.Timedelta(hours=24)
    frame = replay_frame("nyc-weather", STREAM_START, shift + pd.Timedelta(hours=95))
    late = frame["ts"] >= shift
    if change == "level +10":
        frame.loc[late, "temp"] += 10.0
    else:
        mean = frame.groupby([frame["series_id"], frame["ts"].dt.floor("D")])["temp"].transform("mean")
        frame.loc[late, "temp"] = (mean + 2.0 * (frame["temp"] - mean))[late]
    cfg = settings.model_copy(update={"drift_factor": 1e6, "retrain_hours": 1e6})
    runs = {}
    for adapt, where in ((False, frozen_dir), (True, data_dir)):
        run_cfg = cfg.model_copy(update={"data_dir": where})
        proc = StreamProcessor(run_cfg, adapt=adapt)
        proc.run(replay_batches(frame, speed=0))
        proc.close()
        assert adapt == (proc.readout is not None and proc.readout.active)
        runs[adapt] = _issued_after(run_cfg, proc, shift)
    frozen, adapted = runs[False], runs[True]
    assert len(frozen) == len(adapted) > 2000
    mae = {k: float((v["actual"] - v["yhat"]).abs().mean()) for k, v in runs.items()}  # one °F scale: MASE's ratio
    if change != "level +10":
        assert mae[True] <= 0.9 * mae[False], mae
        return
    assert mae[True] <= 0.8 * mae[False], mae
    for after in (frozen, adapted):
        inside = (after["actual"] >= after["lo"]) & (after["actual"] <= after["hi"])
        assert 0.85 <= inside.mean() <= 0.95, inside.mean()
    # The widths the stream issued just before the shift would have covered far less.
    issued = Store(cfg.model_copy(update={"data_dir": frozen_dir}).database_url)
    last = issued.forecasts_between(shift, shift + pd.Timedelta(hours=24))
    issued.dispose()
    last = last[last["origin_ts"] == shift - pd.Timedelta(hours=1)].groupby("step").first()
    width = last["hi"] - last["yhat"]
    fixed = (frozen["actual"] - frozen["yhat"]).abs() <= frozen["step"].map(width)
    assert fixed.mean() < 0.8, fixed.mean()


def _readout_state(store: Store) -> dict[str, np.ndarray]:
    row = store.stream_checkpoint("temp")
    assert row is not None
    with np.load(io.BytesIO(row["state"]), allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def test_a_stream_killed_after_its_checkpoint_resumes_the_same_adapted_readout(
    settings: Settings, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that dies with batches committed after its last checkpoint (kill -9: no
    close) and is restarted through the CLI warms up to the checkpoint and replays the
    stored rest: its readout equals an uninterrupted run's over the same entries, every
    forecast is stored once, and the registered champion is untouched."""
    _history_and_champion(settings, data_dir, ["esn"], esn={"units": 60})
    twin_dir = tmp_path / "twin"
    shutil.copytree(data_dir, twin_dir)
    frame = _shifted(36)
    monkeypatch.setenv("STREAMCAST_DRIFT_FACTOR", "1e6")  # the CLI's stream below: no retrain
    cfg = settings.model_copy(update={"retrain_hours": 1e6, "drift_factor": 1e6})
    whole = StreamProcessor(cfg.model_copy(update={"data_dir": twin_dir}), check_every=5)
    whole.run(replay_batches(frame, speed=0))
    whole.close()
    assert whole.readout is not None and whole.readout.pairs > 0
    assert not np.allclose(whole.readout.weights(), whole.readout.W0)  # it learnt from the shift

    crashed = StreamProcessor(cfg, check_every=5)
    crashed.run(replay_batches(frame[frame["ts"] < STREAM_START + pd.Timedelta(hours=18)], speed=0))
    # Killed here: hours 15-17 are committed, the checkpoint (hour 14) does not cover them.
    store = Store(settings.database_url)
    at_kill = _readout_state(store)
    assert pd.Timestamp(int(at_kill["t"][0]), tz="UTC") == STREAM_START + pd.Timedelta(hours=14)
    store.dispose()
    del crashed
    from streamcast.sources.redis_stream import publish_rows

    client = _redis()
    name = f"streamcast-test-{uuid.uuid4().hex[:8]}"
    publish_rows(REDIS_URL, name, frame[frame["ts"] >= STREAM_START + pd.Timedelta(hours=18)])
    try:
        res = CliRunner().invoke(
            app,
            [
                "stream",
                "--source",
                "redis",
                "--redis-url",
                REDIS_URL,
                "--stream",
                name,
                "--batch-size",
                "3",
                "--stop-after-idle",
                "1",
            ],
            catch_exceptions=False,
        )
    finally:
        client.delete(name)
    assert res.exit_code == 0, res.output
    store = Store(settings.database_url)
    resumed = _readout_state(store)
    fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
    store.dispose()
    assert int(resumed["pairs"][0]) == whole.readout.pairs
    for key in ("A", "B"):  # the resumed reservoirs forgot their start to the warm-up's tolerance
        np.testing.assert_allclose(resumed[key], getattr(whole.readout, key), rtol=100 * MEMORY_TOLERANCE, atol=1e-12)
    twin = Store(Settings(data_dir=twin_dir).database_url)
    fc_whole = twin.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
    twin.dispose()
    assert len(fc) == len(fc_whole) == fc["forecast_id"].nunique() * 24  # once each, none lost
    merged = fc.merge(fc_whole, on=["forecast_id", "step"])
    assert len(merged) == len(fc)
    atol = 10 * MEMORY_TOLERANCE * float(merged["yhat_y"].std())  # the warm-up's tolerance, as above
    np.testing.assert_allclose(merged["yhat_x"], merged["yhat_y"], rtol=0, atol=atol)
    from streamcast.forecasting import load_champion

    registered = load_champion(settings, "temp").bundle.model.readout
    np.testing.assert_array_equal(np.vstack([registered.Wout, registered.bias[None, :]]), whole.readout.W0)
    # --no-adapt streams the registered readout and leaves the checkpoint as it was.
    publish_rows(REDIS_URL, name, frame.iloc[:0])
    res = CliRunner().invoke(
        app,
        [
            "stream",
            "--source",
            "redis",
            "--redis-url",
            REDIS_URL,
            "--stream",
            name,
            "--no-adapt",
            "--stop-after-idle",
            "0.5",
        ],
        catch_exceptions=False,
    )
    client.delete(name)
    assert res.exit_code == 0, res.output
    store = Store(settings.database_url)
    np.testing.assert_array_equal(_readout_state(store)["B"], resumed["B"])
    store.dispose()


def test_level_shift_triggers_a_drift_retrain(settings: Settings, data_dir: Path) -> None:
    _history_and_champion(settings, data_dir, ["naive"])
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=47))
    shifted = frame.copy()
    late = shifted["ts"] >= STREAM_START + pd.Timedelta(hours=12)
    # A sensor fault: temperatures jump by 40 °F and keep drifting upward.
    shifted.loc[late, "temp"] += 40 + np.arange(late.sum()) * 0.3
    cfg = settings.model_copy(update={"drift_factor": 1.5, "drift_window": 24, "retrain_hours": 1e6})
    calls: list[str] = []

    def retrain(target: str) -> None:
        calls.append(target)
        services.train(settings=cfg, models=["naive"], folds=2)

    proc = StreamProcessor(cfg, retrain=retrain, check_every=4)
    stats = proc.run(replay_batches(shifted, speed=0))
    proc.close()
    reasons = [r["reason"] for r in stats.retrains]
    assert "drift" in reasons and calls
    store = Store(settings.database_url)
    triggers = store.retrain_triggers()
    store.dispose()
    assert "drift" in set(triggers["reason"]) and "live MASE" in triggers["detail"].iloc[0]
    assert triggers["outcome"].iloc[0] == "retrained"


def _shifted(hours: int) -> pd.DataFrame:
    """``hours`` of streamed nyc-weather whose temperatures jump by 40 °F after 12 hours."""
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=hours - 1))
    late = frame["ts"] >= STREAM_START + pd.Timedelta(hours=12)
    frame.loc[late, "temp"] += 40 + np.arange(late.sum()) * 0.3
    return frame


def test_a_drift_retrain_runs_in_the_background_while_the_stream_goes_on(settings: Settings, data_dir: Path) -> None:
    """The trigger starts `streamcast train` in a process of its own and returns: the
    stream keeps forecasting with the current champion, starts no second retrain while
    that one runs, and records how it ended at its next check after it did."""
    from streamcast.retraining import ProcessJob, background_launcher
    from streamcast.specs import TrainSpec

    _history_and_champion(settings, data_dir, ["naive"])
    frame = _shifted(60)
    cfg = settings.model_copy(update={"drift_factor": 1.5, "drift_window": 24, "retrain_hours": 1e6})
    launch = background_launcher(TrainSpec(target="temp", models=["naive", "seasonal_naive"], folds=2), cfg)
    jobs: list[tuple[ProcessJob, int]] = []

    def start(target: str) -> ProcessJob:
        job = launch(target)
        jobs.append((job, proc.stats.batches))
        return job

    proc = StreamProcessor(cfg, retrain=start, check_every=4)
    cut = STREAM_START + pd.Timedelta(hours=48)
    for batch in replay_batches(frame[frame["ts"] < cut], speed=0):
        proc.process(batch)
        if len(jobs) == 1 and jobs[0][1] == proc.stats.batches - 1:
            assert jobs[0][0].poll() is None  # the trigger's batch returned; the training runs on
    assert len(jobs) == 1, "one retrain at a time"
    job, at_batch = jobs[0]
    assert proc.stats.batches > at_batch and proc.handle is not None and proc.handle.version == "1"
    assert job.process.wait(timeout=300) == 0, job.log_path.read_text()[-2000:]
    assert "registered streamcast-temp version 2" in " ".join(job.log_path.read_text().split())
    for batch in replay_batches(frame[frame["ts"] >= cut], speed=0):  # the next check sees it ended
        proc.process(batch)
    proc.close()
    store = Store(settings.database_url)
    triggers = store.retrain_triggers()
    store.dispose()
    assert triggers["reason"].tolist()[:2] == ["drift", "retrain_done"]
    assert triggers["outcome"].iloc[0].startswith("started: streamcast train (pid")
    assert triggers["outcome"].iloc[1] == "exit 0"
    # A short backtest never moves @champion: the stream kept version 1 throughout.
    assert proc.handle.version == "1" and "swap" not in set(triggers["reason"])


def test_the_stream_swaps_to_a_new_champion_at_a_batch_boundary(settings: Settings, data_dir: Path) -> None:
    """When the registry's @champion moves (a retrain, a deployment, a person), the stream
    swaps at its next check: later forecasts come from the new version, warmed on history."""
    import mlflow

    _history_and_champion(settings, data_dir, ["naive"])
    services.train(settings=settings, models=["seasonal_naive"], folds=2)  # v2, @challenger
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=23))
    cfg = settings.model_copy(update={"retrain_hours": 1e6})
    proc = StreamProcessor(cfg, check_every=4)
    frozen_at_load: list[int] = []
    load_champion = proc._load_champion

    def counted(before: pd.Timestamp) -> None:
        frozen_at_load.append(gc.get_freeze_count())
        load_champion(before)

    proc._load_champion = counted  # type: ignore[method-assign]
    batches = list(replay_batches(frame, speed=0))
    for batch in batches[:6]:
        proc.process(batch)
    assert proc.handle is not None and (proc.handle.version, proc.handle.kind) == ("1", "naive")
    # What the stream holds is frozen out of the collector's full passes while it runs, and
    # what the process held before (modules) out of those the first load's allocations set off ...
    assert gc.get_freeze_count() > 0 and frozen_at_load[0] > 0
    replaced = weakref.ref(next(iter(proc.states.values())).stream)
    mlflow.MlflowClient(settings.tracking_uri).set_registered_model_alias("streamcast-temp", "champion", "2")
    swapped_at = None
    for batch in batches[6:]:
        proc.process(batch)
        if swapped_at is None and proc.handle.version == "2":
            swapped_at = batch.frame["ts"].max()
    assert replaced() is None  # ... yet the states a swap replaces are let go
    assert len(frozen_at_load) == 2 and frozen_at_load[1] >= frozen_at_load[0]
    proc.close()
    assert gc.get_freeze_count() == 0  # and all of it is released when the stream ends
    assert swapped_at is not None and proc.handle.kind == "seasonal_naive"
    store = Store(settings.database_url)
    fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
    swaps = store.retrain_triggers()
    store.dispose()
    origins = pd.to_datetime(fc["origin_ts"], utc=True)
    assert set(fc.loc[origins <= swapped_at, "model_version"]) == {"1"}  # the swap follows its batch
    assert set(fc.loc[origins > swapped_at, "model_version"]) == {"2"}
    assert swaps["reason"].tolist() == ["swap"] and swaps["outcome"].iloc[0] == "streaming v2 (seasonal_naive)"


def test_redis_consumer_killed_mid_stream_loses_and_doubles_nothing(any_store: Store, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, db_url=any_store.url)  # SQLite and PostgreSQL
    from streamcast.sources.redis_stream import publish_rows

    client = _redis()
    _history_and_champion(settings, data_dir, ["naive"])
    stream = f"streamcast-test-{uuid.uuid4().hex[:8]}"
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=59))
    publish_rows(REDIS_URL, stream, frame)
    expected_obs = int(frame.drop(columns=["series_id", "ts"]).notna().sum().sum()) - int(
        (frame["wind_speed"] > 200).sum()
    )
    exe = str(Path(sys.executable).with_name("streamcast"))
    env = {
        **os.environ,
        "STREAMCAST_DATA_DIR": str(data_dir),
        "STREAMCAST_DB_URL": any_store.url,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }

    def command(name: str, idle: float) -> list[str]:
        return [
            exe,
            "stream",
            "--source",
            "redis",
            "--stream",
            stream,
            "--group",
            "g",
            "--consumer",
            name,
            "--redis-url",
            REDIS_URL,
            "--batch-size",
            "6",
            "--stop-after-idle",
            str(idle),
            "--claim-idle-ms",
            "1000",
        ]

    store = Store(settings.database_url)
    try:
        first = subprocess.Popen(command("c1", 30), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and store.table_counts()["forecasts"] < 24 * 3 * 10:
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = store.table_counts()["forecasts"] // 24
        assert 0 < done_before < 180, "kill must land mid-stream"
        # A replacement consumer claims what c1 left pending (once idle for --claim-idle-ms), then reads the rest.
        _wait_until_idle(client, stream, "g", min_idle_ms=1000)
        second = subprocess.run(command("c2", 2), env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        obs = store.load_observations(start=STREAM_START)
        assert len(obs) == expected_obs
        assert not obs.duplicated(["series_id", "variable", "ts"]).any()
        fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=5))
        per_series = fc.groupby("series_id")["origin_ts"].nunique().to_dict()
        assert per_series == {"EWR": 60, "JFK": 60, "LGA": 60}
        assert fc.groupby("forecast_id").size().eq(24).all()
        assert client.xpending(stream, "g")["pending"] == 0
    finally:
        store.dispose()
        client.delete(stream)


def test_redis_fields_are_typed_but_bad_values_still_reach_quarantine() -> None:
    from streamcast.sources.redis_stream import _typed
    from streamcast.validation import parse_wide

    rows = [
        {"series_id": "A", "ts": "2024-01-01T00:00:00+00:00", "temp": "12.5", "dewp": ""},
        {"series_id": "A", "ts": "2024-01-01T01:00:00+00:00", "temp": "warm", "dewp": "3"},
    ]
    parsed = parse_wide(_typed(pd.DataFrame(rows)), "redis", time_col="ts", series_col="series_id")
    assert parsed.quarantine_by_reason == {"non_numeric": 1}
    assert sorted(parsed.observations["value"]) == [3.0, 12.5]
    bad_time = _typed(pd.DataFrame([{"series_id": "A", "ts": "yesterday", "temp": "1"}]))
    assert parse_wide(bad_time, "redis", time_col="ts", series_col="series_id").quarantine_by_reason == {
        "bad_timestamp": 1
    }


def test_latency_summary_reports_the_warm_up_batch_on_its_own() -> None:
    stats = StreamStats(latencies_ms=[900.0, 10.0, 12.0, 11.0])
    s = stats.summary()
    assert s["first_batch_ms"] == 900.0
    assert s["latency_p50_ms"] == 11.0 and s["latency_p99_ms"] < 12.0
    one = StreamStats(latencies_ms=[40.0]).summary()
    assert one["latency_p50_ms"] == one["first_batch_ms"] == 40.0
    assert np.isnan(StreamStats().summary()["first_batch_ms"])


def test_malformed_and_far_future_redis_entries_are_quarantined_and_never_block_the_group(
    settings: Settings, data_dir: Path
) -> None:
    from typer.testing import CliRunner

    from streamcast.cli import app

    client = _redis()
    _history_and_champion(settings, data_dir, ["naive"])
    stream = f"streamcast-test-{uuid.uuid4().hex[:8]}"
    hour = [(STREAM_START + pd.Timedelta(hours=h)).isoformat() for h in range(4)]
    entries = [
        {"series_id": "EWR", "ts": hour[0], "temp": "41.0"},
        {"series_id": "EWR", "ts": hour[1], "temp": "warm"},  # its only variable is not a number
        {"series_id": "EWR", "temp": "42.0"},  # no time
        {"ts": hour[1], "temp": "42.0"},  # no series
        {"series_id": "EWR", "ts": hour[1]},  # no variables
        {"series_id": "EWR", "ts": "2023-12-20T00:00:00+00:00", "temp": "40.0"},  # ten years ahead
        {"series_id": "EWR", "ts": hour[1], "temp": "42.0"},
        {"series_id": "EWR", "ts": hour[2], "temp": "43.0"},
        {"series_id": "EWR", "ts": hour[3], "temp": "44.0"},
    ]
    for fields in entries:
        client.xadd(stream, fields)
    args = ["stream", "--source", "redis", "--stream", stream, "--group", "g", "--redis-url", REDIS_URL]
    try:
        # One entry per batch: each malformed entry is alone in its batch, the case that used to block the group.
        res = CliRunner().invoke(app, [*args, "--batch-size", "1", "--stop-after-idle", "1"])
        assert res.exit_code == 0, res.output
        assert client.xpending(stream, "g")["pending"] == 0
        with Store(settings.database_url) as store:
            q = store.quarantine_rows()
            assert q["reason"].value_counts().to_dict() == {"unusable_entry": 4, "too_far_ahead": 1}
            details = q.loc[q.reason == "unusable_entry", "detail"]
            assert details.str.contains("no numeric variable").sum() == 2  # "warm"; no variables at all
            assert details.str.contains("time column").sum() == 1
            assert details.str.contains("series column").sum() == 1
            assert q.loc[q.reason == "too_far_ahead", "ts_raw"].tolist() == ["2023-12-20T00:00:00+00:00"]
            obs = store.load_observations(series_ids=["EWR"], variables=["temp"], start=STREAM_START)
            assert obs["value"].tolist() == [41.0, 42.0, 43.0, 44.0]
            fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
            # The in-order entries behind the far-future one still get their forecasts.
            assert sorted(fc.loc[fc.series_id == "EWR", "origin_ts"].unique()) == [pd.Timestamp(t) for t in hour]
    finally:
        client.delete(stream)


def _redis_server(port: int, folder: Path) -> subprocess.Popen:
    """A private redis-server that persists every write (so a restart keeps stream and group)."""
    import redis

    folder.mkdir(exist_ok=True)
    args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    proc = subprocess.Popen([*args, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"redis-server did not start on port {port}")


def test_the_stream_rides_out_a_broker_restart_and_resumes(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    import shutil
    import socket

    from streamcast.sources.redis_stream import publish_rows

    if shutil.which("redis-server") is None:
        if services_required():
            pytest.fail("redis-server not installed (STREAMCAST_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path / "redis")
    _history_and_champion(settings, data_dir, ["naive"])
    frame = replay_frame("nyc-weather", STREAM_START, STREAM_START + pd.Timedelta(hours=23))
    first, rest = (
        frame[frame.ts < STREAM_START + pd.Timedelta(hours=12)],
        frame[frame.ts >= STREAM_START + pd.Timedelta(hours=12)],
    )
    publish_rows(url, "obs", first)
    exe = str(Path(sys.executable).with_name("streamcast"))
    env = {**os.environ, "STREAMCAST_DATA_DIR": str(data_dir), "MLFLOW_TRACKING_URI": settings.tracking_uri}
    args = ["stream", "--source", "redis", "--stream", "obs", "--redis-url", url, "--batch-size", "3"]
    consumer = subprocess.Popen(
        [exe, *args, "--stop-after-idle", "3", "--broker-retry-seconds", "60"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []  # the consumer's stderr, line by line, as it writes it
    assert consumer.stderr is not None
    stderr = consumer.stderr
    reader = threading.Thread(target=lambda: said.extend(iter(stderr.readline, "")), daemon=True)
    reader.start()
    store = Store(settings.database_url)
    try:
        deadline = time.monotonic() + 120
        while store.table_counts()["forecasts"] < 12 * 3 * 24:
            assert consumer.poll() is None and time.monotonic() < deadline, "".join(said)
            time.sleep(0.05)
        server.kill()  # the broker dies under the running consumer ...
        server.wait()
        # ... stays down until the consumer says it cannot reach it (a broker back at once
        # would be met by the client's own reconnect, unnoticed) ...
        deadline = time.monotonic() + 60
        while not any("unreachable" in line for line in said):
            assert consumer.poll() is None and time.monotonic() < deadline, "".join(said)
            time.sleep(0.05)
        server = _redis_server(port, tmp_path / "redis")  # ... and comes back with its data
        publish_rows(url, "obs", rest)
        consumer.wait(timeout=180)
        reader.join(timeout=10)
        assert consumer.returncode == 0, "".join(said)[-2000:]
        fc = store.forecasts_between(STREAM_START, STREAM_START + pd.Timedelta(days=3))
        assert fc.groupby("series_id")["origin_ts"].nunique().to_dict() == {"EWR": 24, "JFK": 24, "LGA": 24}
        import redis

        assert redis.Redis(port=port).xpending("obs", "streamcast")["pending"] == 0
    finally:
        consumer.kill()
        store.dispose()
        server.kill()


def test_the_forecasts_a_stream_remembers_stay_bounded_and_what_it_let_go_is_read_from_the_store() -> None:
    """The stream scores its own forecasts from memory: a block per origin (all series
    together), let go a horizon after its last point. Memory then holds about two horizons
    however long the stream runs, and a time whose origins were let go is no longer
    *covered*, so its points are read from the store instead of being missed."""
    from streamcast.streaming import _Block, _Outstanding

    H, hour = 24, pd.Timedelta(hours=1)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    series = ["a", "b", "c"]
    memory = _Outstanding()
    for k in range(200):
        origin = start + k * hour
        block = _Block(
            origin, hour, series, [f"{s}{k}" for s in series], np.zeros((3, H)), np.ones(H), "esn", "1", "r", origin
        )
        memory.add([block])
        memory.retire((origin + hour).value)  # the next hour's actuals arrive and are matched
    assert len(memory.blocks) <= 2 * H + 1
    now = start + 200 * hour
    assert memory.covers("a", now.value) and memory.covers("c", (now - (H - 1) * hour).value)
    assert not memory.covers("a", (now - 3 * H * hour).value)  # its origins were let go
    assert not memory.covers("z", now.value)  # never forecast here
    remembered = pd.Timestamp(memory.remembered_from(["a", "b"]))
    assert remembered == min(b.origin for b in memory.blocks)  # the store is read for the origins before it
    assert memory.remembered_from(["a", "z"]) is None
