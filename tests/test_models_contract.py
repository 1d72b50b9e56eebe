"""Contract every candidate must honour, on a small synthetic seasonal panel.

One table lists every candidate with its tiny test config and the error bound it
must beat; a test fails when a registered candidate is missing from the table.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.features import make_windows, prepare_panel
from streamcast.metrics import seasonal_naive_scale
from streamcast.models import REGISTRY, NotFittedError, create_model, get_model_class
from streamcast.models.base import Forecaster
from streamcast.models.esn import MEMORY_TOLERANCE
from streamcast.models.keras import KerasForecaster
from streamcast.models.statistical import StatisticalForecaster

H = 12
KERAS_TINY = {"units": 16, "epochs": 25, "lookback": 24, "batch_size": 64, "patience": 4, "learning_rate": 5e-3}

# candidate -> (tiny config, max MASE on the synthetic backtest window)
CONTRACT: dict[str, tuple[dict, float]] = {
    "naive": ({}, 2.2),
    "seasonal_naive": ({}, 1.3),
    "weekly_naive": ({}, 3.0),  # no weekly rhythm in this panel
    "ets": ({}, 1.3),  # AutoETS may choose no season on 20 days (it does for C)
    "theta": ({}, 0.8),
    "mstl": ({}, 1.0),
    "lstm": (KERAS_TINY, 0.8),
    "rnn": (KERAS_TINY, 0.8),
    "cnn": (KERAS_TINY, 0.8),
    "cnn_lstm": (KERAS_TINY, 0.8),
    "esn": ({"units": 60, "lookback": 12, "warmup": 24}, 0.7),
    "hopfield": ({"lookback_grid": [12, 24], "beta_grid": [5.0, 20.0]}, 1.0),
    "ensemble": (
        {
            "members": ["naive", "seasonal_naive", "esn", "hopfield"],
            "member_overrides": {
                "esn": {"units": 60, "lookback": 12, "warmup": 24},
                "hopfield": {"lookback_grid": [12]},
            },
        },
        0.7,
    ),
}


def synthetic_panel(n: int = 24 * 30, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Three 'stations': daily cycle + slow drift + AR noise; dewpoint leads temperature."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    rows = []
    for k, sid in enumerate(["A", "B", "C"]):
        noise = np.zeros(n)
        for t in range(1, n):
            noise[t] = 0.8 * noise[t - 1] + rng.normal(0, 0.6)
        daily = 6 * np.sin(2 * np.pi * (idx.hour.to_numpy() - 9) / 24)
        drift = 3 * np.sin(2 * np.pi * np.arange(n) / (24 * 11) + k)
        temp = 40 + 3 * k + daily + drift + noise
        dewp = temp - 8 + np.roll(noise, -2) + rng.normal(0, 0.3, n)
        f = pd.DataFrame(
            {"series_id": sid, "ts": idx, "temp": temp, "dewp": dewp, "wind_dir": (np.arange(n) * 7) % 360}
        )
        rows.append(f)
    wide = pd.concat(rows).set_index(["series_id", "ts"])
    wide.iloc[100:102, 0] = np.nan  # a short gap, interpolated
    return prepare_panel(wide)


PANEL = synthetic_panel()
INDEX = PANEL["A"].index
ORIGINS = list(INDEX[-H - 1 - 24 * 4 : -H : 24])  # 5 daily origins at the end
TRAIN_END = ORIGINS[0]
VAL_START = TRAIN_END - pd.Timedelta(hours=24 * 5)


def _fit(name: str, seed: int = 7) -> Forecaster:
    config, _ = CONTRACT[name]
    return create_model(name, horizon=H, seed=seed, **config).fit(PANEL, TRAIN_END, VAL_START)


@pytest.fixture(scope="module")
def fitted() -> dict[str, Forecaster]:
    return {name: _fit(name) for name in CONTRACT}


def test_every_candidate_is_in_the_contract_table() -> None:
    assert set(CONTRACT) == set(REGISTRY)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_shape_finite_and_error_bound(fitted: dict[str, Forecaster], name: str) -> None:
    model = fitted[name]
    fc = model.predict(PANEL, ORIGINS)
    assert len(fc) == 3 * len(ORIGINS) * H
    assert fc.groupby(["series_id", "origin_ts"]).size().eq(H).all()
    assert np.isfinite(fc["yhat"]).all()
    first = fc[(fc.series_id == "A") & (fc.origin_ts == ORIGINS[0])]
    assert first["ts"].tolist() == list(pd.date_range(ORIGINS[0] + pd.Timedelta(hours=1), periods=H, freq="h"))
    truth = pd.concat({s: f["temp"] for s, f in PANEL.items()}).rename("actual")
    truth.index.names = ["series_id", "ts"]
    scored = fc.join(truth, on=["series_id", "ts"])
    mase = np.mean(
        [
            (g.yhat - g.actual).abs().mean() / seasonal_naive_scale(PANEL[s]["temp"].loc[:TRAIN_END], 24)
            for s, g in scored.groupby("series_id")
        ]
    )
    assert mase < CONTRACT[name][1], f"{name}: MASE {mase:.3f}"


@pytest.mark.parametrize("name", list(CONTRACT))
def test_save_load_gives_identical_forecasts(fitted: dict[str, Forecaster], name: str, tmp_path: Path) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = Forecaster.load(tmp_path / name)
    assert loaded.config == model.config
    a, b = model.predict(PANEL, ORIGINS), loaded.predict(PANEL, ORIGINS)
    np.testing.assert_array_equal(a["yhat"].to_numpy(), b["yhat"].to_numpy())


@pytest.mark.parametrize("name", list(CONTRACT))
def test_predict_before_fit_is_refused(name: str, tmp_path: Path) -> None:
    model = create_model(name, horizon=H)
    with pytest.raises(NotFittedError):
        model.predict(PANEL)
    with pytest.raises(NotFittedError):
        model.save(tmp_path)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_forecasts_use_only_data_up_to_the_origin(fitted: dict[str, Forecaster], name: str) -> None:
    model = fitted[name]
    origin = ORIGINS[2]
    tampered = {s: f.copy() for s, f in PANEL.items()}
    for f in tampered.values():
        f.loc[f.index > origin, ["temp", "dewp"]] += 50.0
    a = model.predict(PANEL, [origin])
    b = model.predict(tampered, [origin])
    np.testing.assert_array_equal(a["yhat"].to_numpy(), b["yhat"].to_numpy())


def test_ensemble_weights_ignore_the_backtest_actuals(fitted: dict[str, Forecaster]) -> None:
    weights = fitted["ensemble"].weights  # type: ignore[attr-defined]
    assert weights and abs(sum(weights.values()) - 1) < 1e-9
    tampered = {s: f.copy() for s, f in PANEL.items()}
    for f in tampered.values():
        f.loc[f.index > TRAIN_END, "temp"] = f.loc[f.index > TRAIN_END, "temp"][::-1].to_numpy() + 30.0
    config, _ = CONTRACT["ensemble"]
    again = create_model("ensemble", horizon=H, seed=7, **config).fit(tampered, TRAIN_END, VAL_START)
    assert again.weights == weights  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["esn", "mstl", "ensemble"])
def test_refit_learns_the_latest_data_with_the_same_config(fitted: dict[str, Forecaster], name: str) -> None:
    """The winner is registered refit on all the data: same config and seed, a fit that has
    seen what came after the backtest's training end; the backtest fit is left as it was."""
    model = fitted[name]
    before = model.predict(PANEL, ORIGINS)
    end = INDEX[-1]
    refit = model.refit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
    assert refit is not model and refit.config == model.config
    assert refit.scaler is not None and model.scaler is not None
    assert refit.scaler.mean != model.scaler.mean  # statistics now include the backtest window
    pd.testing.assert_frame_equal(model.predict(PANEL, ORIGINS), before)
    latest = refit.predict(PANEL)
    assert latest["yhat"].notna().all() and latest.groupby("series_id").size().eq(H).all()
    if name == "ensemble":
        # Weights stay as chosen on the backtest's validation slice; each member is refit.
        assert refit.weights == model.weights  # type: ignore[attr-defined]
        for member, m in refit.members.items():  # type: ignore[attr-defined]
            assert m is not model.members[member]  # type: ignore[attr-defined]
            assert m.scaler is not None and m.scaler.mean != model.members[member].scaler.mean  # type: ignore[attr-defined]
    elif not isinstance(model, StatisticalForecaster):
        # A refit is a fresh fit: the same as fitting the config from scratch on the same data.
        # (A statistical model's refit keeps each series' chosen form: tests/test_statistical.py.)
        fresh = create_model(name, **model.config.model_dump()).fit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
        pd.testing.assert_frame_equal(fresh.predict(PANEL), latest)


def test_a_network_refit_averages_the_backtest_fit_with_a_fit_on_all_the_data(
    fitted: dict[str, Forecaster], tmp_path: Path
) -> None:
    model = fitted["rnn"]
    end = INDEX[-1]
    refit = model.refit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
    fresh = create_model("rnn", **model.config.model_dump()).fit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
    expected = (model.predict(PANEL)["yhat"].to_numpy() + fresh.predict(PANEL)["yhat"].to_numpy()) / 2
    got = refit.predict(PANEL)
    np.testing.assert_allclose(got["yhat"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert refit.config.horizon == H and refit.config.target == model.config.target
    assert refit.scaler == fresh.scaler  # its statistics include the backtest window
    # It saves and loads as one forecaster, as the registry stores it.
    again = Forecaster.load(refit.save(tmp_path / "refit"))
    np.testing.assert_allclose(again.predict(PANEL)["yhat"].to_numpy(), got["yhat"].to_numpy(), rtol=0, atol=1e-9)


def test_a_large_panels_network_refit_continues_from_the_backtest_fit(tmp_path: Path) -> None:
    """When a pass over the windows was several epochs (a large panel), the refit starts
    from the backtest fit's weights, at a quarter of its learning rate, for a quarter of
    its update budget: one network, within those few Adam steps of the fit it continues
    (each moves a weight by about the learning rate at most), where a fresh fit lands
    anywhere."""
    tiny = {**KERAS_TINY, "epochs": 4, "patience": 50, "epoch_batches": 3, "max_updates": 12}
    end = INDEX[-1]
    model = create_model("rnn", horizon=H, **tiny).fit(PANEL, TRAIN_END, VAL_START)
    assert model.fit_info["batches_per_epoch"] == 3 < -(-model.fit_info["train_windows"] // tiny["batch_size"])
    refit = model.refit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
    assert isinstance(refit, KerasForecaster) and refit.fit_info["warm_start"] is True
    assert int(refit.network.optimizer.iterations.numpy()) == 3  # a quarter of 12 updates
    warm_rate = tiny["learning_rate"] / 4
    assert float(np.asarray(refit.network.optimizer.learning_rate)) == pytest.approx(warm_rate)
    fresh = create_model("rnn", **model.config.model_dump()).fit(PANEL, end, end - pd.Timedelta(hours=24 * 5))
    assert fresh.fit_info["warm_start"] is False

    def furthest(a: KerasForecaster, b: KerasForecaster) -> float:
        pairs = zip(a.network.get_weights(), b.network.get_weights(), strict=True)
        return max(float(np.abs(x - y).max()) for x, y in pairs)

    assert furthest(refit, model) <= 3 * warm_rate * 1.5
    assert furthest(fresh, model) > 10 * 3 * warm_rate
    # It saves and loads as one forecaster, as the registry stores it.
    again = Forecaster.load(refit.save(tmp_path / "refit"))
    np.testing.assert_allclose(again.predict(PANEL)["yhat"], refit.predict(PANEL)["yhat"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["esn", "rnn", "cnn", "hopfield", "ensemble"])
def test_fixed_seed_reproduces_forecasts(fitted: dict[str, Forecaster], name: str) -> None:
    again = _fit(name)
    np.testing.assert_allclose(
        again.predict(PANEL, ORIGINS)["yhat"].to_numpy(),
        fitted[name].predict(PANEL, ORIGINS)["yhat"].to_numpy(),
        rtol=0,
        atol=1e-6,
    )


def test_a_seeded_network_is_the_same_while_other_threads_draw_random_numbers(fitted: dict[str, Forecaster]) -> None:
    """A Dask worker's or Prefect's threads draw from Python's global ``random`` while a
    task fits: the same seed must still give the same network (Keras takes the seeds of
    its initializers and dropout from a generator of its own)."""
    import random
    import threading

    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()
            stop.wait(0.0005)

    other = threading.Thread(target=draw, daemon=True)
    other.start()
    try:
        again = _fit("rnn")
    finally:
        stop.set()
        other.join()
    for mine, theirs in zip(again.network.get_weights(), fitted["rnn"].network.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_streaming_one_observation_at_a_time_equals_the_batch_forecast(
    fitted: dict[str, Forecaster], name: str
) -> None:
    """The streaming hook (by default a window re-predicted from its end; the ESN steps its
    reservoir; the ensemble combines its members' streams) forecasts what predict() does."""
    _assert_stream_equals_batch(fitted[name], "B")


def _assert_stream_equals_batch(model: Forecaster, sid: str) -> None:
    """A stream of ``sid`` started 60 steps before the end and fed 24 observations one at a
    time forecasts what predict() does from the same origin."""
    frame = PANEL[sid]
    start = len(frame) - 60
    stream = model.stream(sid, frame.iloc[: start + 1])
    for t in range(start + 1, start + 25):
        stream.advance(frame.index[t], frame.iloc[t].to_dict())
    batch = model.predict({sid: frame}, [frame.index[start + 24]])["yhat"].to_numpy()
    # An ESN's batch run warms on its measured warm-up before the origin, the stream on the
    # one before its start: the same state to the warm-up's tolerance (in standard deviations).
    atol = 10 * MEMORY_TOLERANCE * float(frame[model.config.target].std()) if model.kind == "esn" else 1e-6
    np.testing.assert_allclose(stream.forecast(), batch, rtol=0, atol=atol)


@pytest.mark.parametrize("name", ["rnn", "theta"])
def test_window_streams_forecast_together_what_each_alone_does(fitted: dict[str, Forecaster], name: str) -> None:
    """``forecast_all`` of window streams asks their model once for every series (a network:
    one forward pass, where one per series made a streamed hour of 1,000 series take
    seconds); each series gets what its stream alone forecasts, and a series with nothing
    observed yet gets None."""
    model = fitted[name]
    streams = model.streams({sid: f.iloc[:-24] for sid, f in PANEL.items()})
    streams["new"] = model.stream("new", PANEL["A"].iloc[:0])
    cls = type(streams["A"])
    calls: list[int] = []
    if name == "rnn":
        forward = model._forward()
        model._forward_fn = lambda x: calls.append(len(x)) or forward(x)  # type: ignore[attr-defined]
    for ts in INDEX[-24:-22]:
        for sid in PANEL:
            streams[sid].advance(ts, {k: float(v) for k, v in PANEL[sid].loc[ts].items() if k != "long_gap"})
        calls.clear()
        together = cls.forecast_all(list(streams.values()))
        if name == "rnn":
            assert calls == [len(PANEL)]  # the three series' windows in one pass; none for "new"
        assert together[-1] is None
        for sid, fc in zip(PANEL, together, strict=False):
            # A network computes in float32, and a batch of three sums in another order
            # than a batch of one: equal to float32's precision (relative 1e-7, a few ulps).
            np.testing.assert_allclose(fc, streams[sid].forecast(), rtol=1e-6, atol=1e-6)
        assert not np.allclose(together[0], together[1])


@pytest.mark.parametrize("name", list(CONTRACT))
def test_search_space_names_config_fields(name: str) -> None:
    config_cls = get_model_class(name).config_cls
    assert set(config_cls.search_space) <= set(config_cls.model_fields)


def test_baselines_are_exact() -> None:
    naive, snaive = _fit("naive"), _fit("seasonal_naive")
    origin = ORIGINS[1]
    y = PANEL["A"]["temp"]
    pos = y.index.get_loc(origin)
    fc_n = naive.predict({"A": PANEL["A"]}, [origin])["yhat"].to_numpy()
    fc_s = snaive.predict({"A": PANEL["A"]}, [origin])["yhat"].to_numpy()
    np.testing.assert_allclose(fc_n, np.full(H, y.iloc[pos]))
    np.testing.assert_allclose(fc_s, y.iloc[pos + 1 - 24 : pos + 1 - 24 + H].to_numpy())


def _python(code: str, log_level: str) -> str:
    """stderr of ``code`` run in a fresh interpreter with TensorFlow's C++ log level set."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": log_level}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stderr


def _import_notices(stderr: str) -> bool:
    # oneDNN's notice on CPUs where it is on by default, the CPU feature guard's elsewhere.
    return "oneDNN" in stderr or "cpu_feature_guard" in stderr


@pytest.fixture(scope="module")
def tensorflow_prints_notices() -> bool:
    return _import_notices(_python("import tensorflow", "0"))


@pytest.mark.parametrize("level, shown", [("3", False), ("0", True)])
def test_tensorflow_import_notice_follows_the_log_level(
    tensorflow_prints_notices: bool, level: str, shown: bool
) -> None:
    """TensorFlow prints notices from C++ before TF_CPP_MIN_LOG_LEVEL applies; loading
    Keras through the models hides them unless the level asks for C++ info messages."""
    if not tensorflow_prints_notices:
        pytest.skip("this TensorFlow build prints no notice at import on this machine")
    stderr = _python("from streamcast.models.keras import load_keras; load_keras()", level)
    assert _import_notices(stderr) is shown, stderr


def test_tensorflow_hands_back_the_memory_of_a_fit_s_tensors() -> None:
    """TensorFlow's x86 wheels allocate through oneDNN's BFC pool, which keeps every
    tensor's memory after the tensor is gone: each network fit on a large panel left its
    windows' high-water mark behind. Loaded through the models, a 256 MB tensor's memory
    goes back to the system when the tensor does."""
    code = """
import gc, numpy as np
from streamcast.models.keras import load_keras
load_keras()
import tensorflow as tf
def rss():  # resident MB (Linux)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
tf.constant(np.ones(16, np.float32))  # the allocator exists
before = rss()
x = np.ones((64, 1024, 1024), np.float32)  # 256 MB
t = tf.constant(x)
del x, t
gc.collect()
print(rss() - before)
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}  # as a user's shell
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    kept = float(out.stdout.strip().splitlines()[-1])
    assert kept < 64, f"{kept:.0f} MB of a 256 MB tensor's memory kept after it was deleted"


def test_weekly_naive_repeats_last_week_and_wins_where_people_set_the_rhythm() -> None:
    """A load-like series (busy weekdays, quiet weekends): the value a week ago beats the
    value a day ago, and is exactly what weekly_naive forecasts."""
    idx = pd.date_range("2024-01-01", periods=24 * 42, freq="h", tz="UTC")
    weekday = np.asarray(idx.dayofweek < 5)
    load = 50 + 30 * weekday * np.sin(np.pi * ((idx.hour.to_numpy() - 6) % 24) / 24) ** 2
    load = load + np.random.default_rng(1).normal(0, 1, len(idx))
    panel = prepare_panel(pd.DataFrame({"series_id": "grid", "ts": idx, "temp": load}).set_index(["series_id", "ts"]))
    origins = list(idx[-24 * 7 - 1 : -25 : 24])  # a week of daily origins, Monday included
    train_end = origins[0]
    errors = {}
    for name in ("seasonal_naive", "weekly_naive"):
        fc = (
            create_model(name, horizon=24)
            .fit(panel, train_end, train_end - pd.Timedelta(days=7))
            .predict(panel, origins)
        )
        actual = panel["grid"]["temp"].reindex(fc["ts"]).to_numpy()
        errors[name] = float(np.abs(fc["yhat"].to_numpy() - actual).mean())
        if name == "weekly_naive":
            week_ago = panel["grid"]["temp"].reindex(fc["ts"] - pd.Timedelta(days=7)).to_numpy()
            np.testing.assert_allclose(fc["yhat"].to_numpy(), week_ago)
    assert errors["weekly_naive"] < 0.5 * errors["seasonal_naive"]


def test_ensemble_weights_are_chosen_at_the_backtests_times_of_day() -> None:
    """The members forecast the validation slice at origins every ``origin_step`` back from
    the training end (the backtest's origins fall there), not every step from the slice's
    start: on half-hourly load the ensemble's weights chosen one season apart from the slice's
    start were 1.55x the MSTL member's backtest error, on the backtest's grid 1.01x."""
    val_start = TRAIN_END - pd.Timedelta(hours=24 * 5 + 5)  # five hours off the daily grid
    model = create_model("ensemble", horizon=H, members=["naive", "seasonal_naive"], origin_step=H)
    model.fit(PANEL, TRAIN_END, val_start)
    assert model.fit_info["origin_stride"] == H
    for member in model.members.values():
        (frame,) = member._validation.values()
        origins = pd.DatetimeIndex(frame["origin_ts"].unique())
        assert ((TRAIN_END - origins) % pd.Timedelta(hours=H) == pd.Timedelta(0)).all()
        assert origins.min() >= val_start and origins.max() == TRAIN_END - pd.Timedelta(hours=H)
        assert len(origins) == 10  # 125 hours hold ten 12-hour steps back from the end


def test_ensemble_validation_origins_never_fall_a_whole_number_of_weeks_apart() -> None:
    """The ensemble's validation origins are a multiple of the backtest's step apart, no
    denser than its sparsest member allows, and never 7 days apart (one weekday only)."""
    from streamcast.models.ensemble import validation_origin_stride

    week = 168
    assert validation_origin_stride(24, 1, week) == 24  # daily origins: every weekday
    assert validation_origin_stride(24, 30, week) == 48
    assert validation_origin_stride(24, 150, week) == 192  # 168 would be one weekday: next multiple of 24
    assert validation_origin_stride(12, 1, week) == 12
    for step, sparsest in ((24, 100), (24, 160), (48, 300), (12, 170), (6, 1000)):
        stride = validation_origin_stride(step, sparsest, week)
        assert stride % step == 0 and stride >= sparsest and stride < sparsest + 2 * step + week
        assert math.gcd(stride, week) == math.gcd(step, week)


def test_competitive_weights_average_the_members_close_to_the_best() -> None:
    """Members within the margin of the best validation error get equal weights, the rest
    none; where their average is worse on validation than the best member alone (members
    sharing one bias), there are no competitive weights (the ensemble selects forward)."""
    from streamcast.models.ensemble import competitive_weights

    truth = np.linspace(0.0, 1.0, 50)
    val = {"over": truth + 1.0, "under": truth - 1.05, "far": truth + 5.0}
    assert competitive_weights(val, truth, margin=0.10) == {"over": 0.5, "under": 0.5}
    assert competitive_weights(val, truth, margin=0.01) == {"over": 1.0}
    assert competitive_weights(val, truth, margin=10.0) is None  # with "far" the average is worse
    same_side = {"a": truth + 1.0, "b": truth + 1.05, "c": truth - 1.08}
    assert competitive_weights(same_side, truth, margin=0.10) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert competitive_weights({"a": truth + 1.0, "b": truth + 1.05}, truth, margin=0.10) is None
    gaps = {"a": np.where(truth > 0.5, np.nan, truth + 1.0), "b": np.full(50, np.nan)}
    assert competitive_weights(gaps, truth, margin=0.10) == {"a": 1.0}  # a member with no forecasts is left out


def test_ensemble_weighting_is_chosen_by_config() -> None:
    """The default averages the competitive members; ``weighting="forward"`` is greedy forward
    selection. Both are never worse on validation than the best member, and an ensemble
    records every member's validation error and the weights (logged as fit_ metrics)."""
    members = {"members": ["naive", "seasonal_naive"]}
    for weighting, margin in (("competitive", 10.0), ("competitive", 0.0), ("forward", 0.1)):
        model = create_model("ensemble", horizon=H, weighting=weighting, margin=margin, **members)
        model.fit(PANEL, TRAIN_END, VAL_START)
        info = model.fit_info
        assert set(info["validation_mae"]) == {"naive", "seasonal_naive"}
        if weighting == "competitive" and margin == 0.0:  # the best alone
            assert info["weighting"] == "competitive" and len(model.weights) == 1  # type: ignore[attr-defined]
        elif weighting == "competitive":  # both in the margin: averaged, or forward where the average is worse
            blend = len(model.weights) == 2 and set(model.weights.values()) == {0.5}  # type: ignore[attr-defined]
            assert info["weighting"] == ("competitive" if blend else "forward")
        else:
            assert info["weighting"] == "forward"
        best = min(info["validation_mae"].values())
        chosen = {n: info["validation_mae"][n] for n in model.weights}  # type: ignore[attr-defined]
        assert abs(sum(model.weights.values()) - 1) < 1e-9  # type: ignore[attr-defined]
        assert min(chosen.values()) == best  # the best member is always in
    from streamcast.tracking import _info_metrics

    logged = _info_metrics("fit", model.fit_info)
    assert logged["fit_weights_" + next(iter(model.weights))] == next(iter(model.weights.values()))  # type: ignore[attr-defined]
    assert "fit_validation_mae_naive" in logged and "fit_weighting" not in logged


def test_ensemble_selection_keeps_its_best_round() -> None:
    """Greedy rounds can get worse (here the third, which must add a model to a perfect
    blend): the weights kept are the best round's, never worse than the best member."""
    from streamcast.models.ensemble import select_weights

    truth = np.linspace(0.0, 1.0, 50)
    val = {"over": truth + 1.0, "under": truth - 1.0, "far": truth + 5.0}
    assert select_weights(val, truth, rounds=3) == {"over": 0.5, "under": 0.5}
    single = {"good": truth + 0.1, "bad": truth + 3.0}
    assert select_weights(single, truth, rounds=5) == {"good": 1.0}


@pytest.mark.parametrize("name", ["ets", "theta", "mstl"])
def test_statistical_models_take_series_never_seen_and_too_short(fitted: dict[str, Forecaster], name: str) -> None:
    """A series unseen in training gets its own model, estimated on what precedes the
    origin; one too short for any model gets the last value (finite, never an error)."""
    model = fitted[name]
    new = {"Z": PANEL["A"] * 1.5}
    fc = model.predict(new, ORIGINS[:1])
    assert len(fc) == H and np.isfinite(fc["yhat"]).all()
    assert not np.allclose(fc["yhat"], new["Z"]["temp"].loc[ORIGINS[0]])  # a model, not the last value
    short = {"tiny": PANEL["B"].iloc[:2]}
    last = short["tiny"]["temp"].iloc[-1]
    np.testing.assert_allclose(model.predict(short)["yhat"].to_numpy(), np.full(H, last))


def test_esn_readout_from_summed_blocks_equals_reservoirpys_ridge_on_all_rows() -> None:
    """The ESN fits its readout series by series from summed statistics (memory independent
    of the panel); the result is reservoirpy's Ridge on every row at once."""
    from reservoirpy.nodes import Ridge

    from streamcast.models.esn import _RidgeStats

    rng = np.random.default_rng(0)
    blocks = [(rng.normal(size=(n, 30)), rng.normal(size=(n, 4))) for n in (50, 7, 120)]
    stats = _RidgeStats.of(*blocks[0])
    for z, y in blocks[1:]:
        stats.add(z, y)
    Z, Y = np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    node = Ridge(ridge=0.5)
    node.fit(Z, Y)
    mine = stats.solve(0.5)
    assert np.allclose(mine.Wout, node.Wout, atol=1e-10) and np.allclose(mine.bias, np.ravel(node.bias), atol=1e-10)


def test_keras_windows_of_a_large_panel_are_an_even_share_of_every_series() -> None:
    """Past ``max_train_windows`` / ``max_val_windows`` (all series together) a network
    trains on every k-th window of each series, built only for those: bounded memory and
    time on a thousand series, every series represented; below the caps every window."""
    tiny = {**KERAS_TINY, "epochs": 1}
    every = create_model("rnn", horizon=H, **tiny, max_train_windows=None, max_val_windows=None)
    every.fit(PANEL, TRAIN_END, VAL_START)
    capped = create_model("rnn", horizon=H, **tiny, max_train_windows=300, max_val_windows=60)
    capped.fit(PANEL, TRAIN_END, VAL_START)
    full, part = every.fit_info, capped.fit_info
    assert full["train_windows"] > 300 and full["val_windows"] > 60
    assert part["train_windows"] <= 300 + 3 and part["val_windows"] <= 60 + 3  # + one per series
    # every k-th window, k the smallest stride within the cap that does not alias the seasons
    from streamcast.models.base import window_stride

    season = capped.config.season
    assert part["train_windows"] >= full["train_windows"] // window_stride(full["train_windows"], 300, season)
    assert part["val_windows"] >= full["val_windows"] // window_stride(full["val_windows"], 60, season)
    # Three windows' worth: each series still gives (at least) its first one.
    designs = capped._designs({sid: f.loc[:TRAIN_END] for sid, f in PANEL.items()})
    val_pos = {sid: int(f.index.searchsorted(VAL_START)) for sid, f in PANEL.items()}
    few = create_model("rnn", horizon=H, **tiny, max_train_windows=3)
    few.scaler, few.covariates = capped.scaler, capped.covariates
    X, _ = few._windows(designs, val_pos)["train"]
    firsts = [make_windows(d, few.split_ends(d, val_pos[sid], few.config.lookback)[0][:1], 24, H)[0][0]
              for sid, d in designs.items()]  # fmt: skip
    assert 3 <= len(X) <= 6 and all(any(np.array_equal(x, f) for x in X) for f in firsts)


def _one_series(temp: np.ndarray) -> dict[str, pd.DataFrame]:
    idx = pd.date_range("2024-01-01", periods=len(temp), freq="h", tz="UTC")
    return prepare_panel(pd.DataFrame({"series_id": "S", "ts": idx, "temp": temp}).set_index(["series_id", "ts"]))


def _weekdays(n: int, seed: int = 2) -> np.ndarray:
    """Load set by people: a working-day peak on a daily cycle, the level wandering."""
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    rng = np.random.default_rng(seed)
    peak = np.asarray(idx.dayofweek < 5) * np.exp(-(((idx.hour.to_numpy() - 13) / 4.0) ** 2))
    level = np.cumsum(rng.normal(0, 0.3, n))
    return 50 + level + 8 * np.sin(2 * np.pi * idx.hour.to_numpy() / 24) + 12 * peak + rng.normal(0, 0.5, n)


def test_a_weekly_anchor_follows_people_and_forecasts_them_better() -> None:
    """On working-day load the weekly seasonal random walk (y[t+h-168] + y[t] - y[t-168])
    is the anchor "auto" takes, and an ESN anchored there forecasts the weekdays after a
    weekend (and the weekend after weekdays) better than one anchored a day back."""
    n = 24 * 40
    panel = _one_series(_weekdays(n))
    index = panel["S"].index
    origins = list(index[-24 * 10 - 1 : -H : 24])
    train_end, val_start = origins[0], origins[0] - pd.Timedelta(days=8)
    truth = panel["S"]["temp"]
    config = {"horizon": H, "units": 60, "lookback": 12, "warmup": 24}
    assert create_model("esn", **config).fit(panel, train_end, val_start).config.anchor == "weekly"
    mae = {}
    for anchor in ("weekly", "seasonal"):
        fc = create_model("esn", **config, anchor=anchor).fit(panel, train_end, val_start).predict(panel, origins)
        mae[anchor] = float(np.abs(fc["yhat"].to_numpy() - truth.loc[pd.DatetimeIndex(fc["ts"])].to_numpy()).mean())
    assert mae["weekly"] < 0.8 * mae["seasonal"], mae


def test_an_averaged_anchor_is_the_mean_of_seasonal_random_walks() -> None:
    """Averaged over cycles and moved by the change of a level window, by the formula; one
    cycle and a level of one step is the plain seasonal random walk; positions with too
    little history before them take the last value."""
    from streamcast.models.base import Anchor, anchor_values

    x = np.random.default_rng(0).normal(size=600).cumsum()
    positions = np.arange(600 - 30)
    m, h = 24, np.arange(1, 31)  # 30 steps: the last 6 are two seasons ahead
    got = Anchor(m, 30, cycles=3, level=5).values(x, positions)
    for p in (150, 300, 569):
        c = (h - 1) // m + 1
        expected = np.mean(
            [
                x[p + h - c * j * m]
                + x[p - 4 : p + 1].mean()
                - np.array([x[p - b - 4 : p - b + 1].mean() for b in c * j * m])
                for j in (1, 2, 3)
            ],
            axis=0,
        )
        np.testing.assert_allclose(got[p], expected, rtol=1e-12)
    assert Anchor(m, 30, 3, 5).lag == 2 * 3 * m + 4
    np.testing.assert_array_equal(got[:148], np.repeat(x[:148, None], 30, axis=1))
    np.testing.assert_array_equal(Anchor(m, 30).values(x, positions), anchor_values(x, positions, 30, m, seasonal=True))


def test_the_anchor_follows_the_data_and_is_kept_through_refit_and_save(tmp_path: Path) -> None:
    """A daily shape whose level and amplitude drift out of the training range (as climate
    normals in a new season) is forecast as a change from the seasonal random walk
    (y[t+h-24] + y[t] - y[t-24]); a random walk with a faint daily cycle as a change from
    the last value. The choice is made on the
    validation slice, kept by the refit and the saved model, and the seasonal anchor
    forecasts the seasonal series better than the last value does."""
    n = 24 * 40
    t = np.arange(n)
    rng = np.random.default_rng(1)
    shaped = 50 - 0.03 * t + (8 - 6 * t / n) * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.02, n)
    walk = 50 + np.cumsum(rng.normal(0, 1.0, n)) + 0.2 * np.sin(2 * np.pi * t / 24)
    config = {"horizon": H, "units": 60, "lookback": 12, "warmup": 24}
    periodic = np.tile(50 + 8 * np.sin(2 * np.pi * np.arange(24) / 24), 40)  # the seasonal walk is (all but) exact
    for temp, expected in ((shaped, "seasonal"), (walk, "last"), (periodic, "seasonal"), (_weekdays(n), "weekly")):
        panel = _one_series(temp)
        index = panel["S"].index
        train_end, val_start = index[-24 * 6], index[-24 * 12]
        model = create_model("esn", **config).fit(panel, train_end, val_start)
        assert model.config.anchor == expected
        assert model.refit(panel, index[-1], val_start).config.anchor == expected
        model.save(tmp_path / "saved")
        assert Forecaster.load(tmp_path / "saved").config.anchor == expected
    panel = _one_series(shaped)
    index = panel["S"].index
    origins = list(index[-24 * 5 - 1 : -H : 24])
    train_end, val_start = origins[0], origins[0] - pd.Timedelta(days=6)
    truth = panel["S"]["temp"]
    mae = {}
    for anchor in ("seasonal", "last"):
        fc = create_model("esn", **config, anchor=anchor).fit(panel, train_end, val_start).predict(panel, origins)
        mae[anchor] = float(np.abs(fc["yhat"].to_numpy() - truth.loc[pd.DatetimeIndex(fc["ts"])].to_numpy()).mean())
    assert mae["seasonal"] < 0.7 * mae["last"], mae


ANCHORS = {
    "last": {"anchor": "last"},
    "weekly": {"anchor": "weekly"},
    "weekly-mean": {"anchor": "weekly", "anchor_cycles": 2, "anchor_level": 6},
}


@pytest.mark.parametrize(
    ("name", "anchor"), [("esn", "last"), ("rnn", "last"), ("esn", "weekly"), ("hopfield", "weekly-mean")]
)
def test_a_stream_forecasts_what_predict_does_with_another_anchor(name: str, anchor: str) -> None:
    """The contract's panel takes the seasonal anchor; the last value's streams agree too, and
    the weekly anchors' (a stream keeps the weeks of targets they reach back over)."""
    config, _ = CONTRACT[name]
    model = create_model(name, horizon=H, seed=7, **config, **ANCHORS[anchor]).fit(PANEL, TRAIN_END, VAL_START)
    assert model.config.anchor == ANCHORS[anchor]["anchor"]
    _assert_stream_equals_batch(model, "C")


@pytest.mark.parametrize(("total", "cap", "season"), [(1_500_000, 200_000, 24), (40_000, 9_000, 48), (900, 100, 7)])
def test_a_window_cap_keeps_every_phase_of_the_seasons(total: int, cap: int, season: int) -> None:
    """A capped panel keeps every k-th window of each series: at most the cap, and k never
    aliases the daily or weekly season (every 8th hourly window is 3 hours of the day)."""
    from streamcast.models.base import window_stride

    k = window_stride(total, cap, season)
    kept = np.arange(0, total, k)
    assert len(kept) <= cap
    assert set(kept % (7 * season)) == set(range(7 * season))  # every hour of every weekday
    assert window_stride(total, None, season) == window_stride(cap, cap, season) == 1


def test_hopfield_chooses_beta_on_a_capped_share_of_validation_windows() -> None:
    """Past ``max_val_windows`` (all series together) the Hopfield memory chooses beta and
    the lookback on every k-th validation window of each series; the grid's retrievals
    share one similarity product and return what each beta alone does."""
    every = create_model("hopfield", horizon=H, max_val_windows=None).fit(PANEL, TRAIN_END, VAL_START)
    capped = create_model("hopfield", horizon=H, max_val_windows=60).fit(PANEL, TRAIN_END, VAL_START)
    full, part = every.fit_info["validation_windows"], capped.fit_info["validation_windows"]
    assert full > 60 and part <= 60 + len(PANEL)
    assert set(capped.fit_info["val_mae"]) == set(every.fit_info["val_mae"])  # the whole grid still scored
    assert capped.keys is not None and capped.values is not None
    Q = capped.keys[:50]
    grid = capped.config.beta_grid
    for beta, together in zip(grid, capped.retrieve_each(Q, capped.keys, capped.values, grid), strict=True):
        np.testing.assert_array_equal(together, capped.retrieve(Q, capped.keys, capped.values, beta))


def test_a_keras_fit_takes_at_most_its_budget_of_updates() -> None:
    """``max_updates`` bounds the optimizer steps: a panel with more batches an epoch runs
    fewer epochs (a count, so the same seed gives the same weights anywhere); a small one
    keeps its epochs."""
    tiny = {**KERAS_TINY, "epochs": 8, "patience": 20}
    free = create_model("rnn", horizon=H, **tiny, max_updates=None).fit(PANEL, TRAIN_END, VAL_START)
    batches = -(-free.fit_info["train_windows"] // tiny["batch_size"])
    assert free.fit_info["epochs_allowed"] == free.fit_info["epochs_run"] == 8
    capped = create_model("rnn", horizon=H, **tiny, max_updates=3 * batches + 1).fit(PANEL, TRAIN_END, VAL_START)
    assert capped.fit_info["epochs_allowed"] == capped.fit_info["epochs_run"] == 3
    roomy = create_model("rnn", horizon=H, **tiny, max_updates=100 * batches).fit(PANEL, TRAIN_END, VAL_START)
    assert roomy.fit_info["epochs_allowed"] == 8


def test_a_large_panels_epochs_are_a_bounded_number_of_batches() -> None:
    """Past ``epoch_batches`` batches a pass, an epoch (what early stopping and the
    learning-rate schedule count) is that many batches, read on across passes: the same
    number of updates as whole passes would take, checked more often, and the same
    weights for the same seed."""
    tiny = {**KERAS_TINY, "epochs": 2, "patience": 50}
    whole = create_model("rnn", horizon=H, **tiny).fit(PANEL, TRAIN_END, VAL_START)
    batches = whole.fit_info["batches_per_epoch"]
    assert batches == -(-whole.fit_info["train_windows"] // tiny["batch_size"]) and batches >= 6
    assert int(whole.network.optimizer.iterations.numpy()) == 2 * batches
    per_epoch = batches // 3
    split = [
        create_model("rnn", horizon=H, **tiny, epoch_batches=per_epoch).fit(PANEL, TRAIN_END, VAL_START) for _ in "ab"
    ]
    info = split[0].fit_info
    assert info["batches_per_epoch"] == per_epoch
    assert info["epochs_allowed"] == info["epochs_run"] == -(-2 * batches // per_epoch)
    assert int(split[0].network.optimizer.iterations.numpy()) == info["epochs_run"] * per_epoch
    for a, b in zip(split[0].network.get_weights(), split[1].network.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    capped = create_model("rnn", horizon=H, **tiny, epoch_batches=per_epoch, max_updates=4 * per_epoch + 1)
    capped.fit(PANEL, TRAIN_END, VAL_START)
    assert capped.fit_info["epochs_allowed"] == 4
    assert int(capped.network.optimizer.iterations.numpy()) == 4 * per_epoch
