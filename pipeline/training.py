"""Train and compare: backtest the candidates, log everything to MLflow, register the winner.

:func:`run_training` does it all in this process. The fan-out path splits the same work
so that a task runner can spread it: :func:`backtest_candidate_to` backtests one
candidate wherever it runs and saves the result in a folder, and
:func:`finish_training_from` logs and registers from those folders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamcast import tracking
from streamcast.backtest import (
    BacktestConfig,
    BacktestResult,
    backtest_candidate,
    fit_to_history,
    load_candidate,
    plan_backtest,
    refit_winner,
    run_backtest,
    save_candidate,
)
from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.features import GAP_COLUMN, has_weekly_rhythm, panel_freq, prepare_panel, season_for
from streamcast.models import Forecaster, create_model, get_model_class
from streamcast.specs import TrainSpec
from streamcast.store import Store, data_source
from streamcast.tuning import TuningResult, tune

Progress = Callable[[str, str], None]


@dataclass
class TrainOutcome:
    result: BacktestResult
    comparison: pd.DataFrame
    runs: tracking.TrainingRuns
    registry: tracking.RegistryOutcome
    tuning: TuningResult | None = None

    @property
    def winner(self) -> str:
        return self.result.winner

    def summary(self) -> dict[str, Any]:
        """Plain data for flows, artifacts and JSON: the comparison and the registry's decision."""
        reg = self.registry
        return {
            "winner": self.winner,
            "comparison": self.comparison.round(4).to_dict("records"),
            "parent_run_id": self.runs.parent_run_id,
            "experiment_id": self.runs.experiment_id,
            "registered_model": reg.name,
            "version": reg.version,
            "alias": reg.alias,
            "previous_champion": reg.previous_champion,
            "previous_champion_mase": reg.previous_champion_mase,
            "held_back": reg.held_back,
            "origins": [self.result.origins[0].isoformat(), self.result.origins[-1].isoformat()],
        }


def load_panel(settings: Settings, target: str, series: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The regularised panel of the store's data (each fan-out worker loads its own)."""
    with Store(settings.database_url) as store:
        wide = store.load_wide(series_ids=series)
    if wide.empty:
        raise InputError("the store has no observations: run `streamcast ingest` first")
    if target not in wide.columns:
        raise InputError(f"no variable {target!r} in the store (have: {', '.join(map(str, wide.columns))})")
    return prepare_panel(wide, max_gap=settings.max_gap_steps)


def backtest_for(spec: TrainSpec, panel: dict[str, pd.DataFrame]) -> BacktestConfig:
    """The spec's backtest, shortened to fit a short history where the user left the
    number of origins or the validation slice at their defaults, with the data's season."""
    return fit_to_history(panel, with_season(spec, panel).backtest_config(), spec.model_fields_set)


def fitted_to_data(spec: TrainSpec, panel: dict[str, pd.DataFrame]) -> TrainSpec:
    """``spec`` with what it leaves open decided from the data: the season from the
    frequency (24 for hourly data, 48 half-hourly, 7 daily) unless given, then the calendar.
    Every candidate of a training gets the same season and inputs."""
    return with_calendar(with_season(spec, panel), panel)


def with_season(spec: TrainSpec, panel: dict[str, pd.DataFrame]) -> TrainSpec:
    """``spec`` with the season of its data's frequency, unless it names one."""
    if "season" in spec.model_fields_set:
        return spec
    return spec.model_copy(update={"season": season_for(panel_freq(panel))})


def with_calendar(spec: TrainSpec, panel: dict[str, pd.DataFrame]) -> TrainSpec:
    """``spec`` with its calendar decided, when it leaves it open: hour of day and day of
    year; day of week when the target has a weekly rhythm before the backtest; the public
    holidays of ``spec.holidays``. Every candidate of a training gets the same inputs."""
    if spec.calendar is not None:
        return spec
    train_end = plan_backtest(panel, backtest_for(spec, panel)).train_end
    calendar = ["hour", "doy"]
    if has_weekly_rhythm(panel, spec.target, train_end, spec.season):
        calendar.append("dow")
    if spec.holidays:
        calendar.append(f"holiday:{spec.holidays}")
    return spec.model_copy(update={"calendar": calendar})


def candidate_config(spec: TrainSpec, name: str, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """A candidate's full config as plain data: what the spec asks of it (target, horizon,
    seed, epochs where it has them, an ensemble's members: the other candidates in the race,
    overrides) plus tuned values; a worker rebuilds it from this."""
    fields = get_model_class(name).config_cls.model_fields
    shared = {
        "target": spec.target,
        "horizon": spec.horizon,
        "seed": spec.seed,
        "epochs": spec.epochs,
        "calendar": spec.calendar,
        "season": spec.season,
    }
    config = {k: v for k, v in shared.items() if k in fields and v is not None}
    others = [m for m in spec.models if m != name]
    if "members" in fields and others:
        config["members"] = others  # an ensemble in a race combines the other racers (overrides may say otherwise)
    config.update(spec.model_overrides.get(name, {}))
    config.update(tuned or {})
    return create_model(name, **config).config.model_dump()


def build_candidates(spec: TrainSpec, tuned: dict[str, dict[str, Any]] | None = None) -> dict[str, Forecaster]:
    return {name: create_model(name, **candidate_config(spec, name, (tuned or {}).get(name))) for name in spec.models}


@dataclass
class TrainingPlan:
    """What a training run backtests: the panel and the candidates with their final
    (possibly tuned) configs."""

    spec: TrainSpec
    panel: dict[str, pd.DataFrame]
    candidates: dict[str, Forecaster]
    tuning: TuningResult | None = None


def plan_training(spec: TrainSpec, settings: Settings, on_progress: Progress | None = None) -> TrainingPlan:
    """Load the panel, build the candidates and, with a tuning budget, tune them first."""
    panel = load_panel(settings, spec.target)
    spec = fitted_to_data(spec, panel)
    candidates = build_candidates(spec)
    if spec.tune_minutes <= 0:
        return TrainingPlan(spec, panel, candidates)
    plan = plan_backtest(panel, backtest_for(spec, panel))

    def trial_progress(rec: Any) -> None:
        if on_progress:
            on_progress(f"tune {rec.candidate}", f"trial {rec.number}: {rec.value:.4f} ({rec.seconds:.0f}s)")

    tuning = tune(
        panel,
        candidates,
        plan.train_end,
        plan.val_start,
        spec.tune_minutes * 60,
        max_trials=spec.tune_max_trials,
        on_trial=trial_progress,
    )
    return TrainingPlan(spec, panel, build_candidates(spec, tuning.best), tuning)


def run_training(spec: TrainSpec, settings: Settings, on_progress: Progress | None = None) -> TrainOutcome:
    """Backtest the candidates on the store's data, log to MLflow, register the winner."""
    plan = plan_training(spec, settings, on_progress)
    result = run_backtest(plan.panel, plan.candidates, backtest_for(spec, plan.panel), on_progress=on_progress)
    return finish_training(settings, plan.panel, result, plan.tuning, on_progress, refit=spec.refit)


def finish_training(
    settings: Settings,
    panel: dict[str, pd.DataFrame],
    result: BacktestResult,
    tuning: TuningResult | None = None,
    on_progress: Progress | None = None,
    refit: bool = True,
) -> TrainOutcome:
    """Log the backtest to MLflow, register the winner (refit on all the data unless
    ``refit`` is off) behind the champion gate and record the comparison in the store
    (the dashboard reads it there, never from MLflow)."""
    target = result.config.target
    final = None
    if refit:
        if on_progress:
            on_progress(f"refit {result.winner}", "fit on all the data")
        final = refit_winner(panel, result)
        if on_progress:
            on_progress(f"refit {result.winner}", "done")
    tracking.configure(settings)
    if on_progress:
        on_progress("mlflow", "log")
    runs = tracking.log_backtest(result, panel, data_tags(panel, target, settings), tuning=tuning)
    if on_progress:
        on_progress("registry", "register")
    registry = tracking.register_winner(result, runs, panel, settings.max_gap_steps, history_example(panel), final)
    comparison = result.comparison()
    with Store(settings.database_url) as store:
        store.write_comparison(runs.parent_run_id, target, comparison, registry.version, registry.alias)
    return TrainOutcome(result=result, comparison=comparison, runs=runs, registry=registry, tuning=tuning)


def data_tags(panel: dict[str, pd.DataFrame], target: str, settings: Settings) -> dict[str, str]:
    """What the training saw, as MLflow tags."""
    return {
        "data.series": ",".join(sorted(panel)),
        "data.start": min(f.index[0] for f in panel.values()).isoformat(),
        "data.end": max(f.index[-1] for f in panel.values()).isoformat(),
        "data.target_rows": str(sum(int(f[target].notna().sum()) for f in panel.values())),
        "data.store": settings.database_url.split("://")[0],
        "data.source": data_source(settings.database_url),
    }


def history_example(panel: dict[str, pd.DataFrame], hours: int = 96) -> pd.DataFrame:
    """A small wide history frame, as users pass to the pyfunc (ts as ISO text)."""
    sid = sorted(panel)[0]
    frame = panel[sid].drop(columns=[GAP_COLUMN]).iloc[-hours:]
    # The pyfunc takes raw variables: fold wind direction components back into degrees.
    if {"wind_dir_sin", "wind_dir_cos"} <= set(frame.columns):
        frame["wind_dir"] = np.rad2deg(np.arctan2(frame.pop("wind_dir_sin"), frame.pop("wind_dir_cos"))) % 360
    out = frame.reset_index(names="ts")
    out.insert(0, "series_id", sid)
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


# --- fan-out: one candidate per worker -------------------------------------------------


def backtest_candidate_to(
    spec: TrainSpec,
    name: str,
    config: dict[str, Any],
    out_dir: Path,
    settings: Settings,
    members: dict[str, str] | None = None,
) -> Path:
    """Backtest one candidate from its config on the store's data and save the result
    under ``out_dir/name`` (a candidate with members loads their saved results first).

    This is the unit a task runner spreads over workers: it takes and returns plain
    values and paths, and reads the data from the store itself.
    """
    panel = load_panel(settings, spec.target)
    plan = plan_backtest(panel, backtest_for(spec, panel))
    model = create_model(name, **config)
    wanted = {n: p for n, p in (members or {}).items() if n in model.member_names}
    model.attach({n: load_candidate(Path(p)).model for n, p in wanted.items()})
    return save_candidate(backtest_candidate(panel, plan, name, model), out_dir / name)


def finish_training_from(spec: TrainSpec, results: dict[str, str], settings: Settings) -> TrainOutcome:
    """:func:`finish_training` for candidates backtested elsewhere and saved with
    :func:`backtest_candidate_to`."""
    panel = load_panel(settings, spec.target)
    result = plan_backtest(panel, backtest_for(spec, panel))
    for name, path in results.items():
        result.candidates[name] = load_candidate(Path(path))
    return finish_training(settings, panel, result, refit=spec.refit)
