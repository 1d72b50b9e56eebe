"""The statistical candidates at scale (issue 15): MSTL's per-origin decomposition with R's
LOESS jumps, and a large panel's series forecast across worker processes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.models import Forecaster, create_model, statistical
from streamcast.models.statistical import mstl_forward
from tests.test_models_contract import PANEL, TRAIN_END, VAL_START


def _hourly(n: int = 1400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    weekly = (t % 168 > 120) * 4.0  # a weekend
    return 50 + 10 * np.sin(2 * np.pi * t / 24) + weekly + rng.normal(size=n).cumsum() * 0.2 + rng.normal(size=n)


@pytest.mark.parametrize("seasons", [[24, 168], [24]])
def test_mstl_forward_mirrors_statsforecast_and_its_jumps_stay_close(seasons: list[int]) -> None:
    """Without jumps the decomposition is statsforecast's own (to rounding); with R's jumps
    the forecasts stay within a small fraction of the series' spread of it."""
    from statsforecast.models import MSTL, AutoETS

    y = _hourly()
    window = 672
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN")).fit(y[:window])
        for k in range(0, 30, 7):
            tail = y[k * 24 : k * 24 + window]
            theirs = np.asarray(model.forward(y=tail, h=24)["mean"])
            np.testing.assert_allclose(mstl_forward(model, tail, 24, jumps=False), theirs, rtol=0, atol=1e-9)
            assert np.abs(mstl_forward(model, tail, 24) - theirs).max() < 0.02 * y.std()


@pytest.mark.parametrize("name", ["mstl"])
def test_a_panel_split_across_processes_fits_and_forecasts_what_one_process_does(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_model(name, horizon=24).fit(PANEL, TRAIN_END, VAL_START)
    origins = list(PANEL["A"].index[-24 * 6 : -24 : 24])
    alone = model.predict(PANEL, origins)
    monkeypatch.setattr(statistical, "PARALLEL_FORWARDS", 1)
    monkeypatch.setattr(statistical, "PARALLEL_FITS", 1)
    monkeypatch.setattr(statistical, "_workers", lambda: 2)
    split = model.predict(PANEL, origins)
    pd.testing.assert_frame_equal(alone, split)
    # Fitted in worker processes: the same models, so the same forecasts.
    again = create_model(name, horizon=24).fit(PANEL, TRAIN_END, VAL_START)
    assert sorted(again.local) == sorted(PANEL)
    pd.testing.assert_frame_equal(again.predict(PANEL, origins), alone)
    assert len(alone) == len(PANEL) * len(origins) * 24


@pytest.mark.parametrize("name", ["ets", "theta", "mstl"])
def test_a_refit_keeps_each_series_form_and_estimates_it_on_the_latest_data(name: str) -> None:
    """The winner refit on all the data re-estimates the form each series' search chose
    (not a new search) on the window ending where the data ends, and forecasts from it."""
    model = create_model(name, horizon=24).fit(PANEL, TRAIN_END, VAL_START)
    last = max(f.index[-1] for f in PANEL.values())
    refit = model.refit(PANEL, last, last - pd.Timedelta(hours=24 * 7))
    assert refit.fit_info["forms_kept"] == len(PANEL)
    for sid, before in model.local.items():
        after = refit.local[sid]
        assert type(after) is type(before)
        assert _form_of(after) == _form_of(before)
    # Estimated on later data than the backtest fit: other parameters, other forecasts.
    assert not refit.predict(PANEL)["yhat"].equals(model.predict(PANEL)["yhat"])


def _form_of(fitted: object) -> str:
    from statsforecast.models import MSTL

    if isinstance(fitted, MSTL):
        return f"MSTL{fitted.season_length}+{fitted.trend_forecaster.model_['components']}"
    model = fitted.model_  # type: ignore[attr-defined]
    return str(model.get("components", model.get("modeltype")))


def test_a_form_that_cannot_carry_the_new_window_gives_way_to_a_search() -> None:
    from statsforecast.models import AutoETS

    ets = create_model("ets", horizon=24)
    y = _hourly(700) - 60  # crosses zero: a multiplicative error cannot be estimated
    fitted = ets._estimate(y, AutoETS(model="MNN"))
    assert fitted is not None and str(fitted.model_["components"])[0] == "A"
    # Too short for the form's season: no form, the search chooses again.
    seasonal = ets._estimate(_hourly(700), AutoETS(season_length=24, model="ANA"))
    assert statistical._ets_form(seasonal, 30) is None
    assert statistical._ets_form(seasonal, 700) is not None


def test_a_refit_split_across_processes_is_the_refit_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("ets", horizon=24).fit(PANEL, TRAIN_END, VAL_START)
    last = max(f.index[-1] for f in PANEL.values())
    alone = model.refit(PANEL, last, last - pd.Timedelta(hours=24 * 7)).predict(PANEL)
    monkeypatch.setattr(statistical, "PARALLEL_FITS", 1)
    monkeypatch.setattr(statistical, "_workers", lambda: 2)
    split = model.refit(PANEL, last, last - pd.Timedelta(hours=24 * 7))
    assert split.fit_info["forms_kept"] == len(PANEL)
    pd.testing.assert_frame_equal(split.predict(PANEL), alone)


def test_the_decomposition_as_matrices_is_the_decomposition() -> None:
    """STL without robustness weights is linear in the data: the operator built from unit
    vectors decomposes any window of its length as statsmodels does (to rounding); a window
    of another length is decomposed directly."""
    operator = statistical.MSTLOperator.build(360, [168, 24])
    assert operator.periods == (24, 168) and operator.n == 360
    y = _hourly(2000, seed=3)
    for start in (0, 333, 1500):
        window = y[start : start + 360]
        adjusted, cycles = statistical.mstl_adjust(window, [24, 168], operator)
        direct, direct_cycles = statistical.mstl_adjust(window, [24, 168])
        np.testing.assert_allclose(adjusted, direct, rtol=0, atol=1e-9 * np.abs(window).max())
        for cycle, expected, period in zip(cycles, direct_cycles, (24, 168), strict=True):
            assert cycle.shape == (period,)
            np.testing.assert_allclose(cycle, expected, rtol=0, atol=1e-9 * np.abs(window).max())
    shorter = y[:359]  # not the operator's length: decomposed directly, not through it
    np.testing.assert_array_equal(
        statistical.mstl_adjust(shorter, [24, 168], operator)[0], statistical.mstl_adjust(shorter, [24, 168])[0]
    )


def test_a_saved_model_keeps_the_window_it_was_fitted_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A registered champion forecasts on the window it was fitted on, even after the
    default window changes (an upgrade must not move a deployed model's inputs)."""
    model = create_model("mstl", horizon=24).fit(PANEL, TRAIN_END, VAL_START)
    fitted = model.window
    expected = model.predict(PANEL)
    monkeypatch.setattr(statistical.MSTLForecaster, "default_weeks", 2)
    assert create_model("mstl", horizon=24).window != fitted
    loaded = Forecaster.load(model.save(tmp_path / "mstl"))
    assert loaded.window == fitted
    pd.testing.assert_frame_equal(loaded.predict(PANEL), expected)


def test_the_operator_built_across_processes_is_the_one_built_in_one() -> None:
    """Each column is its own unit vector's decomposition: split across two spawned
    processes, the matrices are the same, column for column."""
    alone = statistical.MSTLOperator.build(200, [24, 48])
    split = statistical.MSTLOperator.build(200, [24, 48], workers=2)
    assert split.periods == alone.periods
    np.testing.assert_array_equal(split.adjust, alone.adjust)
    for a, b in zip(split.last_cycles, alone.last_cycles, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mstl_decomposing_through_its_operator_forecasts_what_it_does_without(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A panel large enough builds the operator once, at the fit: the same fitted models and
    forecasts as window-by-window decompositions, kept through the refit and the save."""
    origins = list(PANEL["A"].index[-24 * 6 : -24 : 24])
    monkeypatch.setattr(statistical, "OPERATOR_BREAK_EVEN", float("inf"))
    direct = create_model("mstl", horizon=24, fit_window=360).fit(PANEL, TRAIN_END, VAL_START)
    assert direct.operators == {} and direct.fit_info["operators"] == 0
    expected = direct.predict(PANEL, origins)
    monkeypatch.setattr(statistical, "OPERATOR_BREAK_EVEN", 0.0)
    model = create_model("mstl", horizon=24, fit_window=360).fit(PANEL, TRAIN_END, VAL_START)
    assert list(model.operators) == [(360, (24, 168))] and model.fit_info["operators"] == 1

    def no_rebuild(*args: object) -> None:
        raise AssertionError("decomposed again where the operator decomposes")

    # From here every window is decomposed through the operator: the fit's, the refit's
    # and every forecast's (all series' windows in one matrix product).
    monkeypatch.setattr(statistical.MSTLOperator, "build", no_rebuild)
    monkeypatch.setattr(statistical, "mstl_decompose", no_rebuild)
    pd.testing.assert_frame_equal(model.predict(PANEL, origins), expected, check_exact=False, rtol=1e-9)
    last = max(f.index[-1] for f in PANEL.values())
    refit = model.refit(PANEL, last, last - pd.Timedelta(hours=24 * 7))
    assert refit.fit_info["operators"] == 1
    loaded = Forecaster.load(refit.save(tmp_path / "mstl"))
    assert list(loaded.operators) == [(360, (24, 168))]
    pd.testing.assert_frame_equal(loaded.predict(PANEL), refit.predict(PANEL))


def test_windows_too_long_for_a_matrix_are_decomposed_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistical, "OPERATOR_BREAK_EVEN", 0.0)
    monkeypatch.setattr(statistical, "MAX_OPERATOR_STEPS", 359)
    model = create_model("mstl", horizon=24, fit_window=360).fit(PANEL, TRAIN_END, VAL_START)
    assert model.operators == {} and model.fit_info["operators"] == 0
    assert len(model.predict(PANEL)) == len(PANEL) * 24
