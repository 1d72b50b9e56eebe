"""The ESN's reservoir run for many series at once (issue 15): the same states as
reservoirpy's own run of each series, whatever the blocks, in fit, predict and streams."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from streamcast.models import create_model
from streamcast.models.esn import MEMORY_TOLERANCE, ESNForecaster, Matured, OnlineReadout, _Readout, _Recurrence
from tests.test_models_contract import PANEL, TRAIN_END, VAL_START

ESN_TINY = {"units": 60, "lookback": 12, "warmup": 24, "horizon": 12}


def test_batched_reservoir_equals_reservoirpys_run_of_each_series() -> None:
    """Series of different lengths (one empty) run together: each gets the states
    reservoirpy's Reservoir computes for it alone, from the zero state."""
    model = ESNForecaster(units=80, seed=3)
    reservoir = model._make_reservoir(5)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(n, 5)) for n in (50, 120, 0, 80, 1, 120)]
    recurrence = _Recurrence(reservoir)
    every, last = recurrence.run(inputs), recurrence.run(inputs, last_only=True)
    for x, states, final in zip(inputs, every, last, strict=True):
        reservoir.reset()
        expected = np.asarray(reservoir.run(x)) if len(x) else np.zeros((0, 80))
        assert states.shape == expected.shape
        np.testing.assert_allclose(states, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(final, expected[-1] if len(x) else np.zeros(80), rtol=0, atol=1e-12)


def test_blocks_of_series_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fit and forecasts are the same whether all series' states are held at once or one
    series per block (what a large panel does to bound memory)."""
    import streamcast.models.esn as esn

    whole = create_model("esn", **ESN_TINY).fit(PANEL, TRAIN_END, VAL_START)
    monkeypatch.setattr(esn, "STATE_BLOCK_BYTES", 1)
    blocked = create_model("esn", **ESN_TINY).fit(PANEL, TRAIN_END, VAL_START)
    assert whole.fit_info["ridge"] == blocked.fit_info["ridge"]
    np.testing.assert_allclose(whole.readout.Wout, blocked.readout.Wout, rtol=0, atol=1e-9)
    origins = list(PANEL["A"].index[-13 - 48 : -13 : 24])
    a, b = whole.predict(PANEL, origins), blocked.predict(PANEL, origins)
    assert len(a) == 3 * len(origins) * 12
    np.testing.assert_allclose(a["yhat"].to_numpy(), b["yhat"].to_numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("cap", [None, 500])
def test_a_fit_by_parts_over_chunks_of_series_is_the_fit_in_one(cap: int | None) -> None:
    """begin_fit on the panel, fit_part per chunk of series (in any order), end_fit: the
    readout, its ridge and its forecasts are the one-process fit's; with a cap on the
    training windows, each series keeps the same share however the panel is split."""
    config = {**ESN_TINY, "max_train_windows": cap}
    whole = create_model("esn", **config).fit(PANEL, TRAIN_END, VAL_START)
    sids = sorted(PANEL)
    begun = create_model("esn", **config).begin_fit(PANEL, TRAIN_END, VAL_START)
    chunks = [sids[1:], sids[:1]]
    parts = [begun.fit_part({sid: PANEL[sid] for sid in chunk}) for chunk in chunks]
    by_parts = begun.end_fit(parts)
    assert by_parts.fit_info["ridge"] == whole.fit_info["ridge"]
    assert by_parts.fit_info["train_rows"] == whole.fit_info["train_rows"]
    assert by_parts.fit_info["train_stride"] == whole.fit_info["train_stride"]
    if cap is not None:  # every k-th window of each series: about the cap, not all of them
        every = create_model("esn", **ESN_TINY).fit(PANEL, TRAIN_END, VAL_START).fit_info["train_rows"]
        stride = whole.fit_info["train_stride"]
        assert stride >= -(-every // cap) > 1
        assert every // stride <= whole.fit_info["train_rows"] <= cap + len(PANEL)
        # no factor shared with the daily and weekly seasons: every hour of the day is trained on
        assert math.gcd(stride, 7 * whole.config.season) == 1
    pd.testing.assert_frame_equal(by_parts.predict(PANEL), whole.predict(PANEL), rtol=1e-9)
    with pytest.raises(TypeError, match="not fitted by parts"):
        create_model("naive").begin_fit(PANEL, TRAIN_END, VAL_START)


@pytest.mark.parametrize("name", ["esn", "ensemble"])
def test_streams_warmed_and_advanced_together_forecast_what_each_alone_does(name: str) -> None:
    """``streams`` warms every series in one run and ``advance_all``/``forecast_all`` move
    them in one step: each forecasts what a stream of that series alone does."""
    config = (
        ESN_TINY
        if name == "esn"
        else {"horizon": 12, "members": ["naive", "esn"], "member_overrides": {"esn": ESN_TINY}}
    )
    model = create_model(name, **config).fit(PANEL, TRAIN_END, VAL_START)
    frames = {sid: f.iloc[:-24] for sid, f in PANEL.items()}
    together = model.streams(frames)
    alone = {sid: model.stream(sid, f) for sid, f in frames.items()}
    assert sorted(together) == sorted(alone) == sorted(PANEL)
    cls = type(together["A"])
    for ts in PANEL["A"].index[-24:-21]:
        values = [{k: float(v) for k, v in PANEL[sid].loc[ts].items() if k != "long_gap"} for sid in together]
        cls.advance_all(list(together.values()), ts, values)
        for sid, v in zip(together, values, strict=True):
            alone[sid].advance(ts, v)
        batched = cls.forecast_all(list(together.values()))
        for sid, fc in zip(together, batched, strict=True):
            np.testing.assert_allclose(fc, alone[sid].forecast(), rtol=0, atol=1e-9)
    assert not np.allclose(batched[0], batched[1])  # each series its own state


def test_forecasts_warm_the_reservoir_on_a_bounded_tail() -> None:
    """Forecasts run the reservoir over ``forecast_warmup`` steps before their first origin,
    not the whole series: the state forgets its start, so the forecasts are those of a
    run from the series' first row (the ESN's echo state property, at the default config)."""
    origins = list(PANEL["A"].index[-13 - 48 : -13 : 24])
    bounded = create_model("esn", **ESN_TINY, forecast_warmup=200).fit(PANEL, TRAIN_END, VAL_START)
    full = create_model("esn", **ESN_TINY, forecast_warmup=10**6).fit(PANEL, TRAIN_END, VAL_START)
    a, b = bounded.predict(PANEL, origins), full.predict(PANEL, origins)
    np.testing.assert_allclose(a["yhat"].to_numpy(), b["yhat"].to_numpy(), rtol=0, atol=1e-6)
    short = create_model("esn", **ESN_TINY, forecast_warmup=2).fit(PANEL, TRAIN_END, VAL_START)
    assert not np.allclose(short.predict(PANEL, origins)["yhat"], b["yhat"], rtol=0, atol=1e-6)  # it is a tail


def test_the_warm_up_is_measured_from_how_fast_the_fitted_reservoir_forgets() -> None:
    """Without a ``forecast_warmup`` the fit measures one: whole seasons after which a start
    no longer moves a forecast (MEMORY_TOLERANCE target standard deviations on the sampled series).
    Its forecasts are those of a run from each series' first row; a reservoir with a long
    memory (small leak, large spectral radius) measures a longer warm-up."""
    origins = list(PANEL["A"].index[-13 - 48 : -13 : 24])
    model = create_model("esn", **ESN_TINY).fit(PANEL, TRAIN_END, VAL_START)
    warm = model.config.forecast_warmup
    assert warm is not None and warm % model.config.season == 0 and 0 < warm <= 30 * model.config.season
    assert model.fit_info["forecast_warmup"] == warm and model.history_steps == max(warm, ESN_TINY["lookback"])
    full = create_model("esn", **ESN_TINY, forecast_warmup=10**6).fit(PANEL, TRAIN_END, VAL_START)
    a, b = model.predict(PANEL, origins), full.predict(PANEL, origins)
    spread = max(float(f["temp"].std()) for f in PANEL.values())
    np.testing.assert_allclose(a["yhat"].to_numpy(), b["yhat"].to_numpy(), rtol=0, atol=10 * MEMORY_TOLERANCE * spread)
    slow = create_model("esn", **ESN_TINY, leak_rate=0.05, spectral_radius=1.2).fit(PANEL, TRAIN_END, VAL_START)
    assert slow.config.forecast_warmup is not None and slow.config.forecast_warmup > warm


def test_a_forecast_from_the_end_equals_the_same_origin_among_others() -> None:
    """From the end of every series only the last states are computed (no state history):
    the same forecasts as that origin gets in a run that keeps every state (warmed on a
    tail long enough that the runs' different starts are forgotten to 1e-14, not the
    measured warm-up's MEMORY_TOLERANCE target standard deviations)."""
    model = create_model("esn", **ESN_TINY, forecast_warmup=336).fit(PANEL, TRAIN_END, VAL_START)
    ends = {sid: f.iloc[: len(f) - k] for k, (sid, f) in enumerate(PANEL.items())}  # different ends
    last = model.predict(ends)
    for sid, frame in ends.items():
        both = model.predict({sid: frame}, [frame.index[-25], frame.index[-1]])
        expected = both[both["origin_ts"] == frame.index[-1]]["yhat"].to_numpy()
        np.testing.assert_allclose(last[last["series_id"] == sid]["yhat"].to_numpy(), expected, rtol=0, atol=1e-9)


# --- the online readout of a stream (issue 16) ------------------------------------------


def _online_fixture(units: int = 6, extra: int = 4, horizon: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = _Readout(Wout=rng.normal(size=(units + extra, horizon)), bias=rng.normal(size=horizon))
    return rng, base


def test_the_online_readout_is_the_exact_forgetting_least_squares_solution() -> None:
    """After any sequence of updates (gaps in time, a lagging series' late pair) each step's
    correction is the closed-form minimiser of the forgetting-weighted, ridge-anchored
    problem, shrunk by its James-Stein factor; the adapted weights forecast exactly what the
    correction does; the state round-trips through a checkpoint."""
    rng, base = _online_fixture()
    lam, prior, H = 0.9, 0.5, 3
    noise = np.array([0.5, 1.0, 2.0])
    online = OnlineReadout(base, lam, prior, noise, threshold=1.0)
    hour = pd.Timedelta(hours=1)
    t0 = pd.Timestamp("2024-01-01T00:00Z")
    seen: list[tuple[pd.Timestamp, int, float, float]] = []
    for k in [0, 1, 2, 5, 6, 6, 4, 9]:  # 5 after 2: a gap; 4 after 6: a late pair
        ts = t0 + k * hour
        m = int(rng.integers(1, 6))
        step, z = rng.integers(0, H, size=m), rng.normal(size=(m, 10))
        pairs = online.matured(step, z, np.zeros(m), np.zeros(m), np.full(m, ts.value))
        pairs.change = 1.5 * pairs.registered + 2.0 + rng.normal(scale=0.3, size=m)  # scale and offset moved
        online.update(ts, hour, pairs)
        seen += [(ts, int(h), float(f), float(c)) for h, f, c in zip(step, pairs.registered, pairs.change, strict=True)]
    end = t0 + 9 * hour
    z = rng.normal(size=(4, 10))
    registered = z @ base.Wout + base.bias
    expected = np.empty((H, 2))
    for h in range(H):
        rows = [(ts, f, c) for ts, hh, f, c in seen if hh == h]
        w = np.array([lam ** round((end - ts) / hour) for ts, _, _ in rows])
        phi = np.array([[f, 1.0] for _, f, _ in rows])
        r = np.array([c - f for _, f, c in rows])
        M = (phi * w[:, None]).T @ phi + prior * np.eye(2)
        theta = np.linalg.solve(M, (phi * w[:, None]).T @ r)
        expected[h] = max(0.0, 1 - 2 * 1.0 / (theta @ M @ theta / noise[h])) * theta
    np.testing.assert_allclose(online.correction(), expected, rtol=1e-10, atol=1e-12)
    adapted = registered * (1 + expected[:, 0]) + expected[:, 1]
    np.testing.assert_allclose(online(z), adapted, rtol=1e-10)
    W = online.weights()
    np.testing.assert_allclose(z @ W[:-1] + W[-1], adapted, rtol=1e-10)
    assert online.pairs == len(seen) and online.active
    again = OnlineReadout(base, lam, prior, noise, threshold=1.0)
    again.restore(online.state())
    np.testing.assert_array_equal(again.weights(), online.weights())
    with pytest.raises(ValueError, match="other settings"):
        OnlineReadout(base, 0.5, prior, noise, threshold=1.0).restore(online.state())
    with pytest.raises(ValueError, match="other settings"):
        OnlineReadout(base, lam, prior, noise * 2, threshold=1.0).restore(online.state())
    with pytest.raises(ValueError, match="noise"):
        OnlineReadout(base, lam, prior, np.array([1.0, 0.0, 1.0]))


def test_the_online_readout_corrects_a_shift_and_leaves_noise_alone() -> None:
    """Targets that only scatter around the registered forecasts (at the validation noise)
    leave the forecasts exactly the registered readout's; targets moved by an offset several
    times the noise are corrected toward it, step by step as their pairs mature."""
    rng, base = _online_fixture()
    H, hour, t0 = 3, pd.Timedelta(hours=1), pd.Timestamp("2024-01-01T00:00Z")
    z = rng.normal(size=(2, 10))
    registered = z @ base.Wout + base.bias

    def feed(online: OnlineReadout, offset: np.ndarray, hours: int) -> None:
        for k in range(hours):
            step, feats = np.repeat(np.arange(H), 3), rng.normal(size=(3 * H, 10))
            pairs = online.matured(step, feats, np.zeros(3 * H), np.zeros(3 * H), np.zeros(3 * H))
            pairs.change = pairs.registered + offset[step] + rng.normal(scale=1.0, size=3 * H)
            online.update(t0 + k * hour, hour, pairs)

    calm = OnlineReadout(base, 0.95, 5.0, np.ones(H))
    feed(calm, np.zeros(H), 200)
    np.testing.assert_array_equal(calm(z), registered)
    assert not calm.active and calm.pairs == 200 * 3 * H
    shifted = OnlineReadout(base, 0.95, 5.0, np.ones(H))
    feed(shifted, np.array([0.0, 0.0, 3.0]), 48)  # only step 3's targets moved
    moved = shifted(z) - registered
    np.testing.assert_array_equal(moved[:, :2], 0.0)
    assert np.all((moved[:, 2] > 2.0) & (moved[:, 2] < 4.0)), moved


@pytest.mark.parametrize("anchor", ["last", "seasonal"])
def test_an_adapting_stream_pairs_each_target_with_the_origins_it_completes(anchor: str) -> None:
    """A stream's learning equals the readout fed with the pairs built from one batch run
    over the whole series: each target against every forecast it matures, with its origin's
    features and the change from that origin's anchor for that step."""
    model = create_model("esn", **ESN_TINY, anchor=anchor).fit(PANEL, TRAIN_END, VAL_START)
    assert isinstance(model, ESNForecaster) and model.readout is not None
    base = model.readout
    lam, prior, H = 0.95, 1.0, ESN_TINY["horizon"]
    model.readout = online = OnlineReadout(base, lam, prior, np.full(H, 1e-4), threshold=0.0)
    streamed = 30
    frames = {sid: f.iloc[:-streamed] for sid, f in PANEL.items()}
    streams = model.streams(frames)
    cls = type(streams["A"])
    times = PANEL["A"].index[-streamed:]
    for ts in times:
        values = [{k: float(v) for k, v in PANEL[sid].loc[ts].items() if k != "long_gap"} for sid in streams]
        cls.advance_all(list(streams.values()), ts, values)
    # The same pairs from a batch run, fed to a fresh readout one time step at a time.
    batch = OnlineReadout(base, lam, prior, np.full(H, 1e-4), threshold=0.0)
    step_ns = pd.Timedelta(hours=1).value
    designs = model._designs(PANEL)
    states = {sid: model.states(d) for sid, d in designs.items()}
    n = len(PANEL["A"])
    for k in range(n - streamed, n):
        parts = []
        for sid, d in designs.items():
            if not np.isfinite(d.y[k]):
                continue
            origins = np.array([k - b for b in range(1, H + 1) if np.isfinite(d.y[k - b])])
            z = model.readout_features(d, states[sid], origins)
            steps = k - origins - 1
            anchors = np.broadcast_to(model.anchor_at(d.X[:, 0], origins), (len(origins), H))
            change = d.y[k] - anchors[np.arange(len(origins)), steps]
            parts.append(batch.matured(steps, z, change, np.zeros(len(origins)), np.zeros(len(origins))))
        ts = PANEL["A"].index[k]
        batch.update(ts, pd.Timedelta(hours=1), Matured.concat(parts))
    assert online.pairs == batch.pairs > 0 and step_ns
    np.testing.assert_allclose(online.A, batch.A, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(online.B, batch.B, rtol=1e-6, atol=1e-8)
    assert not np.allclose(online.weights(), online.W0)


def test_reservoir_tanh_matches_numpys_everywhere() -> None:
    """The reservoir's in-place tanh (through exp) agrees with np.tanh to rounding, also where
    exp overflows (large negative inputs), at +-inf, and propagates NaN."""
    from streamcast.models.esn import _tanh_inplace

    x = np.concatenate([np.linspace(-50, 50, 100_001), [-1e300, -800.0, -355.0, 1e-12, -1e-12, 800.0]])
    x = np.concatenate([x, [-np.inf, np.inf]])
    np.testing.assert_allclose(_tanh_inplace(x.copy()), np.tanh(x), rtol=0, atol=1e-15)
    assert np.isnan(_tanh_inplace(np.array([np.nan]))[0])
