"""Budgeted hyperparameter search (Optuna) on the validation slice.

Each tunable candidate gets an equal share of the time budget. Trials run one
by one (ask/tell) and a trial only starts if the time its predecessors took
still fits in the remaining budget; Keras fits also stop at the deadline. The
objective is the mean absolute error of forecasts issued inside the validation
slice, in units of each series' spread, so no station dominates. A fixed seed
gives the same trials and the same best configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.models import create_model
from pipeline.models.ensemble import validation_forecasts

log = logging.getLogger(__name__)

KERAS = {"lstm", "rnn", "cnn", "cnn_lstm"}
TUNABLE = ["esn", "hopfield", *sorted(KERAS)]


def search_space(name: str, trial: Any) -> dict[str, Any]:
    """The main hyperparameters of each family."""
    if name == "esn":
        return {
            "units": trial.suggest_int("units", 100, 800, log=True),
            "spectral_radius": trial.suggest_float("spectral_radius", 0.4, 1.3),
            "leak_rate": trial.suggest_float("leak_rate", 0.05, 1.0, log=True),
            "input_scaling": trial.suggest_float("input_scaling", 0.05, 2.0, log=True),
            "ridge": trial.suggest_float("ridge", 1e-2, 1e4, log=True),
        }
    if name == "hopfield":
        return {
            "lookback": trial.suggest_categorical("lookback", [12, 24, 48]),
            "beta": trial.suggest_float("beta", 1.0, 150.0, log=True),
            "covariate_weight": trial.suggest_float("covariate_weight", 0.0, 2.0),
        }
    if name in KERAS:
        return {
            "units": trial.suggest_categorical("units", [16, 32, 64, 128]),
            "lookback": trial.suggest_categorical("lookback", [24, 48, 72]),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        }
    raise ValueError(f"{name} has no tunable hyperparameters")


@dataclass
class TrialRecord:
    candidate: str
    number: int
    params: dict[str, Any]
    value: float
    seconds: float


@dataclass
class TuningResult:
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    best_value: dict[str, float] = field(default_factory=dict)
    trials: list[TrialRecord] = field(default_factory=list)
    seconds: float = 0.0


def validation_error(
    model: Any, panel: dict[str, pd.DataFrame], val_start: pd.Timestamp, train_end: pd.Timestamp, target: str
) -> float:
    fc = validation_forecasts(model, panel, val_start, train_end)
    truth = pd.concat({s: f[target] for s, f in panel.items()}).rename("actual")
    truth.index.names = ["series_id", "ts"]
    fc = fc.join(truth, on=["series_id", "ts"]).dropna(subset=["actual"])
    spread = fc["series_id"].map({s: float(np.nanstd(f[target].loc[:train_end])) for s, f in panel.items()})
    return float((np.abs(fc["yhat"] - fc["actual"]) / spread).mean())


def tune(
    panel: dict[str, pd.DataFrame],
    candidates: list[str],
    train_end: pd.Timestamp,
    val_start: pd.Timestamp,
    budget_seconds: float,
    seed: int = 42,
    base_config: dict[str, dict[str, Any]] | None = None,
    max_trials: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    target: str = "temp",
    horizon: int = 24,
) -> TuningResult:
    """Search each tunable candidate's hyperparameters within ``budget_seconds`` in total."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [c for c in candidates if c in TUNABLE]
    result = TuningResult()
    if not names or budget_seconds <= 0:
        return result
    if KERAS & set(names):
        from pipeline.models.keras import load_keras

        load_keras()  # a one-time import, not part of any trial's cost

    started = time.perf_counter()
    share = budget_seconds / len(names)
    for i, name in enumerate(names):
        # Unused time of earlier candidates passes on to the later ones.
        deadline = started + share * (i + 1)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        durations: list[float] = []
        overheads: list[float] = []  # trial time outside the (interruptible) Keras fit
        while max_trials is None or len(durations) < max_trials:
            remaining = deadline - time.perf_counter()
            expected = float(np.mean(durations)) if durations else 0.0
            if remaining <= 0 or expected > remaining:
                break
            trial = study.ask()
            params = search_space(name, trial)
            overrides = {
                **(base_config or {}).get(name, {}),
                **params,
                "seed": seed,
                "target": target,
                "horizon": horizon,
            }
            if name in KERAS:
                # Leave room for building the network and scoring the validation slice.
                reserve = 2.0 * max(overheads) if overheads else 0.5 * remaining
                overrides["max_fit_seconds"] = max(remaining - reserve, 0.5)
            t0 = time.perf_counter()
            try:
                model = create_model(name, **overrides).fit(panel, train_end, val_start)
                value = validation_error(model, panel, val_start, train_end, target)
            except (ValueError, np.linalg.LinAlgError) as exc:
                log.warning("%s trial %d failed: %s", name, trial.number, exc)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                durations.append(time.perf_counter() - t0)
                continue
            seconds = time.perf_counter() - t0
            durations.append(seconds)
            if name in KERAS:
                overheads.append(max(seconds - float(model.fit_info.get("fit_seconds", model.fit_seconds)), 0.0))
            study.tell(trial, value)
            record = TrialRecord(name, trial.number, params, value, seconds)
            result.trials.append(record)
            if on_trial:
                on_trial(record)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            result.best[name] = dict(study.best_params)
            result.best_value[name] = float(study.best_value)
    result.seconds = time.perf_counter() - started
    return result
