"""Budgeted tuning: respects its budget, reproducible with a fixed seed, trials in MLflow."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from pipeline.tuning import tune
from tests.test_models_contract import PANEL, TRAIN_END, VAL_START

pytestmark = pytest.mark.slow


def test_budget_is_respected_within_ten_percent() -> None:
    budget = 8.0
    t0 = time.perf_counter()
    result = tune(PANEL, ["esn", "hopfield"], TRAIN_END, VAL_START, budget, seed=3, horizon=12)
    elapsed = time.perf_counter() - t0
    assert elapsed <= budget * 1.1, elapsed
    assert len(result.trials) >= 4 and set(result.best) == {"esn", "hopfield"}


def test_keras_trials_stop_at_the_deadline() -> None:
    import keras  # noqa: F401 - importing TensorFlow is a process cost, not part of the budget

    budget = 6.0
    t0 = time.perf_counter()
    result = tune(
        PANEL,
        ["rnn"],
        TRAIN_END,
        VAL_START,
        budget,
        seed=3,
        horizon=12,
        base_config={"rnn": {"epochs": 500, "patience": 500}},
    )
    assert time.perf_counter() - t0 <= budget * 1.1
    assert result.trials
    assert result.seconds <= budget * 1.1


def test_fixed_seed_gives_the_same_search() -> None:
    a = tune(PANEL, ["esn"], TRAIN_END, VAL_START, 60, seed=11, max_trials=4, horizon=12)
    b = tune(PANEL, ["esn"], TRAIN_END, VAL_START, 60, seed=11, max_trials=4, horizon=12)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert a.best == b.best
    assert isinstance(pd.Timestamp(TRAIN_END), pd.Timestamp)
