"""Budgeted hyperparameter search (Optuna) on the validation slice.

Each tunable candidate (one whose config declares a search space) gets an equal share
of the time budget. Trials run one by one (ask/tell) and a trial only starts if the
time its predecessors took still fits in the remaining budget; fits that can stop
early (Keras' ``max_fit_seconds``) stop at the deadline. The objective is the mean
absolute error of forecasts issued inside the validation slice, in units of each
series' spread, so no station dominates. A fixed seed gives the same trials and the
same best configuration. The default config is scored first: a tuned one replaces it
only where it forecasts the validation slice better.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from streamcast.metrics import series_spread, with_actuals
from streamcast.models import Forecaster, create_model
from streamcast.models.search import Choice, FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """One Optuna suggestion per dimension of ``space``, in its order."""
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, IntRange):
            params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, FloatRange):
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        else:
            assert isinstance(dim, Choice)
            params[name] = trial.suggest_categorical(name, list(dim.options))
    return params


@dataclass
class TrialRecord:
    candidate: str
    number: int
    params: dict[str, Any]
    value: float
    seconds: float


@dataclass
class TuningResult:
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # only candidates whose tuning beat the default
    best_value: dict[str, float] = field(default_factory=dict)
    default_value: dict[str, float] = field(default_factory=dict)  # the untuned config's validation error
    trials: list[TrialRecord] = field(default_factory=list)
    seconds: float = 0.0


def validation_error(
    model: Forecaster, panel: dict[str, pd.DataFrame], val_start: pd.Timestamp, train_end: pd.Timestamp
) -> float:
    """Mean absolute error of the validation-slice forecasts, in units of each series' spread."""
    target = model.config.target
    fc = with_actuals(model.validation_forecasts(panel, val_start, train_end), panel, target)
    fc = fc.dropna(subset=["actual"])
    spread = fc["series_id"].map(series_spread(panel, target, train_end))
    return float((np.abs(fc["yhat"] - fc["actual"]) / spread).mean())


def tune(
    panel: dict[str, pd.DataFrame],
    candidates: dict[str, Forecaster],
    train_end: pd.Timestamp,
    val_start: pd.Timestamp,
    budget_seconds: float,
    max_trials: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuningResult:
    """Search each tunable candidate's hyperparameters within ``budget_seconds`` in total.

    ``candidates`` are unfitted models: their configs are where each trial starts from
    (target, horizon, seed and any overrides), and the seed also seeds the sampler.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tunable = {n: m for n, m in candidates.items() if m.config.search_space}
    result = TuningResult()
    if not tunable or budget_seconds <= 0:
        return result
    for m in tunable.values():
        m.prepare_runtime()  # a one-time import, not part of any trial's cost
    started = time.perf_counter()
    share = budget_seconds / len(tunable)
    for i, (name, base) in enumerate(tunable.items()):
        # Unused time of earlier candidates passes on to the later ones.
        study, records, default = _search(
            name, base, panel, train_end, val_start, started + share * (i + 1), max_trials, on_trial
        )
        result.trials += records
        if default is not None:
            result.default_value[name] = default
        # A tuned config replaces the default only if it forecasts the validation slice better.
        if records and (default is None or study.best_value < default):
            result.best[name] = dict(study.best_params)
            result.best_value[name] = float(study.best_value)
    result.seconds = time.perf_counter() - started
    return result


def _search(
    name: str,
    base: Forecaster,
    panel: dict[str, pd.DataFrame],
    train_end: pd.Timestamp,
    val_start: pd.Timestamp,
    deadline: float,
    max_trials: int | None,
    on_trial: Callable[[TrialRecord], None] | None,
) -> tuple[Any, list[TrialRecord], float | None]:
    """One candidate's study, until its deadline (or ``max_trials``), and the validation
    error of its default config (scored first, as the bar the trials must clear)."""
    import optuna

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=base.config.seed))
    records: list[TrialRecord] = []
    durations: list[float] = []
    overheads: list[float] = []  # trial time outside an interruptible fit
    interruptible = "max_fit_seconds" in base.config_cls.model_fields

    def evaluate(params: dict[str, Any], label: str) -> float | None:
        """Fit with ``params`` over the base config and score the validation slice, within
        the deadline (an interruptible fit stops there); None if the fit fails."""
        overrides = {**base.config.model_dump(), **params}
        remaining = deadline - time.perf_counter()
        if interruptible:
            # Leave room for building the network and scoring the validation slice.
            # The default, scored first, gets a quarter of the time so trials still get theirs.
            reserve = 2.0 * max(overheads) if overheads else (0.75 if not durations else 0.5) * remaining
            overrides["max_fit_seconds"] = max(remaining - reserve, 0.5)
        t0 = time.perf_counter()
        try:
            model = create_model(name, **overrides).fit(panel, train_end, val_start)
            value = validation_error(model, panel, val_start, train_end)
        except (ValueError, np.linalg.LinAlgError) as exc:
            log.warning("%s %s failed: %s", name, label, exc)
            durations.append(time.perf_counter() - t0)
            return None
        seconds = time.perf_counter() - t0
        durations.append(seconds)
        if interruptible:
            overheads.append(max(seconds - model.fit_seconds, 0.0))
        return value

    default = evaluate({}, "default config")
    while max_trials is None or len(records) < max_trials:
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or float(np.mean(durations)) > remaining:
            break
        trial = study.ask()
        params = suggest(trial, base.config.search_space)
        t0 = time.perf_counter()
        value = evaluate(params, f"trial {trial.number}")
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, value)
        records.append(TrialRecord(name, trial.number, params, value, time.perf_counter() - t0))
        if on_trial:
            on_trial(records[-1])
    return study, records, default
