"""Budgeted hyperparameter search (Optuna) on the validation slice, at several cut-offs.

Each tunable candidate (one whose config declares a search space) gets an equal share
of the time budget (a candidate whose share earlier ones used up is not tuned). Trials
run one by one (ask/tell) and a trial only starts if its predicted time still fits in
the remaining budget: the most time per unit of cost (``ModelConfig.relative_cost``,
e.g. a reservoir's size squared) its predecessors took, times its own cost; fits that
can stop early (Keras' ``max_fit_seconds``) stop at the deadline. The objective is the mean
absolute error of forecasts issued inside the validation slice, in units of each
series' spread, so no station dominates, averaged over folds: the slice is cut into
consecutive blocks and each block is forecast by a fit that ended where it starts, so
a trial is never scored on what its fit or its early stopping saw. A fixed seed gives
the same trials and the same best configuration. The default config is scored first: a tuned one replaces it
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

from streamcast.features import panel_freq
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
    started: float  # seconds after the tuning began


@dataclass
class TuningResult:
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # only candidates whose tuning beat the default
    best_value: dict[str, float] = field(default_factory=dict)
    default_value: dict[str, float] = field(default_factory=dict)  # the untuned config's validation error
    trials: list[TrialRecord] = field(default_factory=list)
    seconds: float = 0.0
    folds: int = 0  # validation cut-offs every config was scored on


DEFAULT_FOLDS = 2
MIN_FIT_SECONDS = 0.5  # the shortest fit an interruptible trial is given on a fold
MAX_MISFITS = 5  # proposals in a row too costly for the time left end a search


@dataclass(frozen=True)
class Fold:
    """One scoring block of the validation slice: a trial is fit on the data before
    ``start`` (its own early stopping and selection on the ``start - fit_val_start``
    steps before that) and scored on forecasts issued inside ``[start, end]``."""

    fit_val_start: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp


def tuning_folds(
    panel: dict[str, pd.DataFrame],
    val_start: pd.Timestamp,
    train_end: pd.Timestamp,
    horizon: int,
    folds: int = DEFAULT_FOLDS,
) -> list[Fold]:
    """The validation slice cut into ``folds`` consecutive blocks, each scored by a fit that
    ended where the block starts: no trial is scored on data its fit (or its early
    stopping) has seen, and a config must do well at several cut-offs, not one. Fewer
    folds when the slice is too short for every block to hold a whole forecast."""
    freq = panel_freq(panel)
    steps = int((train_end - val_start) / freq) + 1
    folds = max(1, min(folds, steps // (2 * horizon)))
    block = steps // folds
    out = []
    for k in range(folds):
        start = val_start + k * block * freq
        end = train_end if k == folds - 1 else start + (block - 1) * freq
        out.append(Fold(fit_val_start=start - block * freq, start=start, end=end))
    return out


def validation_error(
    model: Forecaster, panel: dict[str, pd.DataFrame], val_start: pd.Timestamp, train_end: pd.Timestamp
) -> float:
    """Mean absolute error of the forecasts issued inside ``[val_start, train_end]`` whose
    targets end by ``train_end``, in units of each series' spread."""
    target = model.config.target
    fc = with_actuals(model.validation_forecasts(panel, val_start, train_end), panel, target)
    fc = fc.dropna(subset=["actual"])
    spread = fc["series_id"].map(series_spread(panel, target, train_end))
    return float((np.abs(fc["yhat"] - fc["actual"]) / spread).mean())


def fold_error(name: str, config: dict[str, Any], panel: dict[str, pd.DataFrame], fold: Fold) -> float:
    """A config's validation error on one fold, fit afresh on the data before its block."""
    model = create_model(name, **config).fit(panel, fold.start, fold.fit_val_start)
    return validation_error(model, panel, fold.start, fold.end)


def tune(
    panel: dict[str, pd.DataFrame],
    candidates: dict[str, Forecaster],
    train_end: pd.Timestamp,
    val_start: pd.Timestamp,
    budget_seconds: float,
    max_trials: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    folds: int = DEFAULT_FOLDS,
) -> TuningResult:
    """Search each tunable candidate's hyperparameters within ``budget_seconds`` in total.

    ``candidates`` are unfitted models: their configs are where each trial starts from
    (target, horizon, seed and any overrides), and the seed also seeds the sampler.
    Every config, the default first, is scored on ``folds`` cut-offs inside the
    validation slice (see :func:`tuning_folds`).
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
    horizon = max(m.config.horizon for m in tunable.values())
    cuts = tuning_folds(panel, val_start, train_end, horizon, folds)
    result.folds = len(cuts)
    for i, (name, base) in enumerate(tunable.items()):
        # Unused time of earlier candidates passes on to the later ones.
        deadline = started + share * (i + 1)
        if time.perf_counter() >= deadline:
            log.warning("tuning: no time left for %s (earlier candidates used its share)", name)
            continue
        study, records, default = _search(name, base, panel, cuts, started, deadline, max_trials, on_trial)
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
    folds: list[Fold],
    began: float,
    deadline: float,
    max_trials: int | None,
    on_trial: Callable[[TrialRecord], None] | None,
) -> tuple[Any, list[TrialRecord], float | None]:
    """One candidate's study, until its deadline (or ``max_trials``), and the validation
    error of its default config (scored first, as the bar the trials must clear)."""
    import optuna

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=base.config.seed))
    records: list[TrialRecord] = []
    seconds_per_cost: list[float] = []  # each config's time over its relative cost
    overheads: list[float] = []  # time per fold outside an interruptible fit
    interruptible = "max_fit_seconds" in base.config_cls.model_fields

    def relative_cost(params: dict[str, Any]) -> float:
        return base.config_cls(**{**base.config.model_dump(), **params}).relative_cost()

    def evaluate(params: dict[str, Any], label: str) -> float | None:
        """Fit with ``params`` over the base config on every fold and score it, within the
        deadline (an interruptible fit stops there); None if a fit fails."""
        overrides = {**base.config.model_dump(), **params}
        cost = relative_cost(params)
        t0 = time.perf_counter()
        # Interruptible fits share an allowance that leaves room for building the network
        # and scoring each block; the default, scored first, gets a quarter of the time so
        # the trials still get theirs. Each fold takes what is left of it over the folds left.
        remaining = deadline - t0
        if overheads:
            allowance = remaining - 2.0 * max(overheads) * len(folds)
        else:
            allowance = (0.25 if not seconds_per_cost else 0.5) * remaining
        errors = []
        try:
            for i, fold in enumerate(folds):
                config = dict(overrides)
                if interruptible:
                    spent = time.perf_counter() - t0
                    config["max_fit_seconds"] = max((allowance - spent) / (len(folds) - i), MIN_FIT_SECONDS)
                f0 = time.perf_counter()
                errors.append(fold_error(name, config, panel, fold))
                if interruptible:
                    # Whatever ran past the fit's limit (building, tracing, scoring) is overhead.
                    overheads.append(max(time.perf_counter() - f0 - config["max_fit_seconds"], 0.0))
        except (ValueError, np.linalg.LinAlgError) as exc:
            log.warning("%s %s failed: %s", name, label, exc)
            return None
        finally:
            seconds_per_cost.append((time.perf_counter() - t0) / cost)
        return float(np.mean(errors))

    default = evaluate({}, "default config")
    misfits = 0  # proposals in a row too costly for the time left
    while max_trials is None or len(records) < max_trials:
        remaining = deadline - time.perf_counter()
        # The config must still fit. An interruptible fit is cut to the time left, so what
        # must fit there is its fixed cost (building, tracing, scoring each fold, as
        # measured) and a short fit per fold; any other takes the most time per unit of
        # cost a config has taken so far, times its own cost (a larger reservoir costs more
        # than any config before it: an 8 s search of esn overran by 1.2 s on one).
        if remaining <= 0 or (overheads and len(folds) * (max(overheads) + MIN_FIT_SECONDS) > remaining):
            break
        trial = study.ask()
        params = suggest(trial, base.config.search_space)
        if not overheads:
            if max(seconds_per_cost) * relative_cost(params) > remaining:
                # Too costly for the time left: a cheaper proposal may still fit.
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                misfits += 1
                if misfits >= MAX_MISFITS:
                    break
                continue
            misfits = 0
        t0 = time.perf_counter()
        value = evaluate(params, f"trial {trial.number}")
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, value)
        records.append(TrialRecord(name, trial.number, params, value, time.perf_counter() - t0, t0 - began))
        if on_trial:
            on_trial(records[-1])
    return study, records, default
