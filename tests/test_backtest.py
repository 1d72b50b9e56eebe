"""Rolling-origin backtest on the synthetic panel with the fast candidates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from streamcast.backtest import BacktestConfig, Calibration, plan_origins, run_backtest
from streamcast.errors import InputError
from streamcast.models import create_model
from tests.test_models_contract import synthetic_panel

CFG = BacktestConfig(horizon=12, folds=6, step=24, val_steps=24 * 5)


@pytest.fixture(scope="module")
def result():
    panel = synthetic_panel()
    models = {name: create_model(name, horizon=12) for name in ("naive", "seasonal_naive")}
    models["esn"] = create_model("esn", horizon=12, units=60, lookback=12, warmup=24)
    return panel, run_backtest(panel, models, CFG)


def test_origins_are_evenly_spaced_and_leave_a_full_horizon() -> None:
    panel = synthetic_panel()
    origins = plan_origins(panel, CFG)
    assert len(origins) == 6
    assert set(np.diff(origins)) == {pd.Timedelta(hours=24)}
    assert origins[-1] + pd.Timedelta(hours=12) == panel["A"].index[-1]
    with pytest.raises(InputError, match="not enough history"):
        plan_origins(panel, CFG.model_copy(update={"folds": 40}))


def test_metrics_per_candidate_series_and_step(result) -> None:
    _, res = result
    by_step = res.metrics_by_step()
    assert set(by_step.columns) >= {"candidate", "series_id", "step", "mae", "rmse", "smape", "mase"}
    assert len(by_step) == 3 * 3 * 12
    assert (by_step["rmse"] >= by_step["mae"] - 1e-12).all()
    table = res.comparison()
    assert list(table["mase"]) == sorted(table["mase"])
    assert res.winner == table.iloc[0]["candidate"]
    # On series with learnable dynamics, a fitted model beats both baselines.
    mase = table.set_index("candidate")["mase"]
    assert mase["esn"] < min(mase["naive"], mase["seasonal_naive"])
    # Every candidate was fit once before the first origin, scored on the same points.
    counts = res.scored().groupby("candidate").size()
    assert counts.nunique() == 1


def test_comparison_scores_candidates_one_at_a_time_as_pooled(result) -> None:
    """The comparison scores one candidate at a time (all of them pooled were a 1.7 GB frame
    at 1,000 series); it must equal the pooled computation, and follow the candidates."""
    from streamcast.metrics import aggregate, coverage

    _, res = result
    scored = res.scored()
    per_series = aggregate(scored, ["candidate", "series_id"]).groupby("candidate")["mase"].mean()
    pooled = aggregate(scored, ["candidate"]).set_index("candidate")
    table = res.comparison().set_index("candidate")
    np.testing.assert_allclose(table["mase"], per_series.reindex(table.index), rtol=1e-12)
    for col in ("mae", "rmse", "smape"):
        np.testing.assert_allclose(table[col], pooled[col].reindex(table.index), rtol=1e-12)
    np.testing.assert_allclose(table["coverage"], coverage(scored, ["candidate"]).reindex(table.index), rtol=1e-12)
    # A candidate whose forecasts change is scored again: the kept table is not stale.
    cand = res.candidates["naive"]
    worse = cand.forecasts.assign(yhat=cand.forecasts["yhat"] + 100.0)
    res.candidates["naive"] = dataclasses.replace(cand, forecasts=worse)
    try:
        assert res.comparison().set_index("candidate").loc["naive", "mase"] > table.loc["naive", "mase"] * 5
    finally:
        res.candidates["naive"] = cand
    assert res.comparison().set_index("candidate").loc["naive", "mase"] == table.loc["naive", "mase"]


def test_candidates_forget_their_validation_forecasts_after_the_backtest(result) -> None:
    """Calibration and the ensemble read each candidate's validation forecasts during the
    backtest; kept afterwards they would be held through the refit and MLflow logging."""
    _, res = result
    assert all(c.model._validation == {} for c in res.candidates.values())


def test_intervals_are_calibrated_before_the_first_origin(result) -> None:
    panel, res = result
    cal = res.candidates["esn"].calibration
    assert cal.half_width.shape == (12,) and (cal.half_width > 0).all()
    # Scrambling everything after the training end changes no interval width.
    tampered = {s: f.copy() for s, f in panel.items()}
    for f in tampered.values():
        f.loc[f.index > res.train_end, "temp"] = 1000.0
    again = run_backtest(tampered, {"esn": create_model("esn", horizon=12, units=60, lookback=12, warmup=24)}, CFG)
    np.testing.assert_allclose(again.candidates["esn"].calibration.half_width, cal.half_width)
    cov = res.comparison().set_index("candidate")["coverage"]
    assert ((cov > 0.5) & (cov <= 1.0)).all()


def test_conformal_quantile_is_finite_sample_correct() -> None:
    resid = pd.DataFrame({"step": [1] * 9, "residual": np.arange(1.0, 10.0)})
    cal = Calibration.from_residuals(resid, horizon=2, level=0.8)
    # ceil((9+1)*0.8) = 8th smallest |residual| = 8; step 2 borrows step 1.
    assert cal.half_width.tolist() == [8.0, 8.0]


def test_an_ensemble_that_kept_one_member_ranks_after_it() -> None:
    """An ensemble whose only member is naive forecasts what naive does: the tie goes to
    the simpler model, whatever the names' order."""
    panel = synthetic_panel()
    models = {"naive": create_model("naive", horizon=12)}
    models["ensemble"] = create_model("ensemble", horizon=12, members=["naive"])
    out = run_backtest(panel, models, CFG)
    table = out.comparison()
    assert table["mase"].iloc[0] == table["mase"].iloc[1]
    assert table["candidate"].tolist() == ["naive", "ensemble"] and out.winner == "naive"


def test_progress_reports_each_candidates_fit_seconds_and_mase() -> None:
    """What `make run` and `streamcast train` show per candidate as it finishes."""
    panel = synthetic_panel()
    seen: list[tuple[str, str]] = []
    out = run_backtest(
        panel,
        {n: create_model(n, horizon=12) for n in ("naive", "seasonal_naive")},
        CFG,
        on_progress=lambda name, stage: seen.append((name, stage)),
    )
    mase = out.comparison().set_index("candidate")["mase"]
    for name in ("naive", "seasonal_naive"):
        stages = [stage for who, stage in seen if who == name]
        assert stages[0] == "fit" and stages[-1].startswith("done: fit ")
        assert stages[-1].endswith(f"MASE {mase[name]:.3f}")


def test_validation_origins_are_bounded_on_a_large_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every validation step is an origin on a small panel; on a large one the origins of all
    series together stay under the cap (calibration needs a quantile per step, not millions
    of points), spread over the slice and the same for every series."""
    import streamcast.models.base as base

    panel = synthetic_panel()
    train_end = panel["A"].index[-100]
    val_start = train_end - pd.Timedelta(hours=24 * 5 - 1)
    model = create_model("naive", horizon=12).fit(panel, train_end, val_start)
    every = model.validation_forecasts(panel, val_start, train_end)
    per_series = 24 * 5 - 12  # origins whose 12 targets end by train_end
    assert every.groupby("series_id")["origin_ts"].nunique().tolist() == [per_series] * 3
    monkeypatch.setattr(base, "MAX_VALIDATION_ORIGINS", 60)
    model = create_model("naive", horizon=12).fit(panel, train_end, val_start)
    capped = model.validation_forecasts(panel, val_start, train_end)
    origins = capped.groupby("series_id")["origin_ts"].unique()
    assert 3 * len(origins["A"]) <= 60 and 3 * len(origins["A"]) >= 60 // 2  # most of the budget, no more
    assert all(list(o) == list(origins["A"]) for o in origins)
    assert origins["A"].min() == val_start and origins["A"].max() > train_end - pd.Timedelta(hours=24 + 12)
