"""Budgeted tuning: respects its budget, reproducible with a fixed seed, trials in MLflow."""

from __future__ import annotations

import time
from typing import ClassVar

import pandas as pd
import pytest

from streamcast import tuning
from streamcast.models import REGISTRY, ModelConfig, create_model
from streamcast.models.baselines import NaiveForecaster
from streamcast.models.search import IntRange, SearchSpace
from streamcast.tuning import fold_error, tune, tuning_folds
from tests.test_models_contract import PANEL, TRAIN_END, VAL_START


class CostlyConfig(ModelConfig):
    search_space: ClassVar[SearchSpace] = {"work": IntRange(1, 40)}
    work: int = 1

    def relative_cost(self) -> float:
        # A fit's cost besides its waiting (preparing, scoring) is charged per unit of work
        # here, so the tuner's prediction errs on the long side, never the short.
        return float(self.work)


class CostlyForecaster(NaiveForecaster):
    """The naive forecast after ``work`` x 50 ms of waiting per fit: a candidate whose
    configs cost what their parameter says, however busy the machine is."""

    kind = "costly"
    config_cls = CostlyConfig

    def _fit(self, designs: dict, val_pos: dict) -> None:
        time.sleep(0.05 * self.config.work)
        super()._fit(designs, val_pos)


class OtherCostlyForecaster(CostlyForecaster):
    kind = "other_costly"


def _candidates(*names: str, seed: int, **config: object) -> dict:
    return {n: create_model(n, horizon=12, seed=seed, **config) for n in names}


pytestmark = pytest.mark.slow


def test_budget_is_respected_within_ten_percent() -> None:
    budget = 8.0
    t0 = time.perf_counter()
    result = tune(PANEL, _candidates("esn", "hopfield", seed=3), TRAIN_END, VAL_START, budget)
    elapsed = time.perf_counter() - t0
    assert elapsed <= budget * 1.1, elapsed
    assert len(result.trials) >= 4 and set(result.default_value) == {"esn", "hopfield"}
    # A tuned config is kept only where it beats the default on the validation slice.
    for name, value in result.best_value.items():
        assert value < result.default_value[name]
    for name in set(result.default_value) - set(result.best):
        assert all(t.value >= result.default_value[name] for t in result.trials if t.candidate == name)


def test_a_trial_starts_only_if_its_own_cost_fits_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    # The seeded sampler proposes work 9, 35, 9, 37, 20, ... Judged by the slowest config
    # so far (the default's 0.5 s, then 0.9 s), one of work 35 (3.5 s over both folds)
    # would start with a second left of a 3 s budget and overrun it by seconds. Judged by
    # its own cost, it does not start, and a cheaper proposal may take its place.
    monkeypatch.setitem(REGISTRY, "costly", f"{__name__}:CostlyForecaster")
    budget = 3.0
    result = tune(PANEL, _candidates("costly", seed=5, work=5), TRAIN_END, VAL_START, budget)
    assert set(result.default_value) == {"costly"} and result.trials
    assert all(t.started + t.seconds <= budget for t in result.trials)
    assert result.seconds <= budget


def test_a_candidate_whose_share_was_spent_before_its_turn_is_not_tuned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(REGISTRY, "costly", f"{__name__}:CostlyForecaster")
    monkeypatch.setitem(REGISTRY, "other_costly", f"{__name__}:OtherCostlyForecaster")
    # The first default config alone (2 folds x 1.5 s) outlasts the whole 2 s budget.
    candidates = {"costly": create_model("costly", horizon=12, work=30), **_candidates("other_costly", seed=5)}
    result = tune(PANEL, candidates, TRAIN_END, VAL_START, 2.0)
    assert set(result.default_value) == {"costly"} and not result.trials
    assert "no time left for other_costly" in caplog.text


# Epochs, patience and updates no fit could use up in a test: only a time limit ends it
# (uncut, one fit of this rnn on PANEL would run for hours).
ENDLESS = {"epochs": 100_000, "patience": 100_000, "max_updates": None}


def test_a_keras_fit_stops_at_its_time_limit_and_says_so() -> None:
    cut = create_model("rnn", horizon=12, seed=3, max_fit_seconds=1.0, **ENDLESS).fit(PANEL, TRAIN_END, VAL_START)
    assert cut.fit_info["time_limited"] is True
    assert 0 < cut.fit_info["epochs_run"] < cut.fit_info["epochs_allowed"]
    free = create_model("rnn", horizon=12, seed=3, epochs=2).fit(PANEL, TRAIN_END, VAL_START)
    assert free.fit_info["time_limited"] is False and free.fit_info["epochs_run"] == 2


def test_keras_trials_stop_at_the_deadline() -> None:
    import keras  # noqa: F401 - importing TensorFlow is a process cost, not part of the budget

    # Each config is two fits (one per validation fold), each with its own building and
    # tracing: 4 s of fixed cost per config on a slow 2-core machine, before any training;
    # on one twice as slow again, the default config took 10.5 s of a 20 s budget and left
    # no room for a trial. 30 s leaves a trial room on both.
    budget = 30.0
    t0 = time.perf_counter()
    result = tune(PANEL, _candidates("rnn", seed=3, **ENDLESS), TRAIN_END, VAL_START, budget)
    elapsed = time.perf_counter() - t0
    # What the tuner decides: every trial starts before the deadline, and with the fixed
    # cost of a config (building, tracing, scoring both folds; 0.4 s a fold on an idle
    # 2-core machine) still to spare, so its fits get a share of the time.
    assert result.trials
    assert all(t.started + 2 * tuning.MIN_FIT_SECONDS < budget for t in result.trials)
    # Its fits stop at their limits (the test above): the search ends past the deadline
    # only by what cannot be interrupted, however slow the machine is meanwhile. That work
    # took 40 s on a loaded CI machine once, so the bound here only tells a search whose
    # fits stopped (seconds past the budget) from one whose fits ran on (hours).
    assert elapsed <= 4 * budget and result.seconds <= elapsed


def test_fixed_seed_gives_the_same_search() -> None:
    a = tune(PANEL, _candidates("esn", seed=11), TRAIN_END, VAL_START, 60, max_trials=4)
    b = tune(PANEL, _candidates("esn", seed=11), TRAIN_END, VAL_START, 60, max_trials=4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert a.best == b.best


def test_folds_cut_the_validation_slice_and_never_score_what_their_fit_saw() -> None:
    folds = tuning_folds(PANEL, VAL_START, TRAIN_END, horizon=12, folds=2)
    assert len(folds) == 2 and folds[0].start == VAL_START and folds[-1].end == TRAIN_END
    hour = pd.Timedelta(hours=1)
    assert folds[1].start == folds[0].end + hour  # consecutive blocks covering the slice
    assert all(f.fit_val_start < f.start for f in folds)
    # Too short a slice for two whole 60-step forecasts per block: one fold.
    assert len(tuning_folds(PANEL, VAL_START, TRAIN_END, horizon=60, folds=2)) == 1

    # Fold 0's score depends only on data up to its block's end: rewriting everything after
    # it (fold 1's block included) leaves it unchanged; rewriting inside its block does not.
    config = {"horizon": 12, "seed": 3, "units": 60, "lookback": 12, "warmup": 24}
    first = fold_error("esn", config, PANEL, folds[0])
    later = {s: f.copy() for s, f in PANEL.items()}
    for f in later.values():
        f.loc[f.index > folds[0].end, "temp"] += 25.0
    assert fold_error("esn", config, later, folds[0]) == pytest.approx(first, rel=1e-9)
    inside = {s: f.copy() for s, f in PANEL.items()}
    for f in inside.values():
        f.loc[(f.index > folds[0].start) & (f.index <= folds[0].end), "temp"] += 25.0
    assert fold_error("esn", config, inside, folds[0]) > 2 * first
