"""The ESN's reservoir run for many series at once (issue 15): the same states as
reservoirpy's own run of each series, whatever the blocks, in fit, predict and streams."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.models import create_model
from streamcast.models.esn import ESNForecaster, _Recurrence
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


def test_a_forecast_from_the_end_equals_the_same_origin_among_others() -> None:
    """From the end of every series only the last states are computed (no state history):
    the same forecasts as that origin gets in a run that keeps every state."""
    model = create_model("esn", **ESN_TINY).fit(PANEL, TRAIN_END, VAL_START)
    ends = {sid: f.iloc[: len(f) - k] for k, (sid, f) in enumerate(PANEL.items())}  # different ends
    last = model.predict(ends)
    for sid, frame in ends.items():
        both = model.predict({sid: frame}, [frame.index[-25], frame.index[-1]])
        expected = both[both["origin_ts"] == frame.index[-1]]["yhat"].to_numpy()
        np.testing.assert_allclose(last[last["series_id"] == sid]["yhat"].to_numpy(), expected, rtol=0, atol=1e-9)
