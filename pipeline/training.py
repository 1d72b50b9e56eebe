"""Train and compare: backtest the candidates, log everything to MLflow, register the winner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tracking
from pipeline.backtest import (
    BacktestConfig,
    BacktestResult,
    backtest_candidate,
    load_candidate,
    plan_backtest,
    run_backtest,
    save_candidate,
)
from pipeline.config import Settings
from pipeline.features import prepare_panel
from pipeline.models import CANDIDATES, create_model
from pipeline.store import Store

DEFAULT_MODELS = ["naive", "seasonal_naive", "esn", "hopfield", "rnn", "lstm", "cnn", "cnn_lstm", "ensemble"]
KERAS_MODELS = {"lstm", "rnn", "cnn", "cnn_lstm"}


@dataclass
class TrainOutcome:
    result: BacktestResult
    comparison: pd.DataFrame
    runs: tracking.TrainingRuns
    registry: tracking.RegistryOutcome
    tuning: Any = None

    @property
    def winner(self) -> str:
        return self.result.winner


def load_panel(store: Store, target: str, max_gap: int, series: list[str] | None = None) -> dict[str, pd.DataFrame]:
    wide = store.load_wide(series_ids=series)
    if wide.empty:
        raise ValueError("the store has no observations: run `streamcast ingest` first")
    if target not in wide.columns:
        raise ValueError(f"no variable {target!r} in the store (have: {', '.join(map(str, wide.columns))})")
    return prepare_panel(wide, max_gap=max_gap)


def store_panel(settings: Settings, target: str) -> dict[str, pd.DataFrame]:
    """The regularised panel of everything in the store (each fan-out worker loads its own)."""
    store = Store(settings.database_url)
    try:
        return load_panel(store, target, settings.max_gap_steps)
    finally:
        store.dispose()


def backtest_config(target: str, horizon: int, folds: int) -> BacktestConfig:
    return BacktestConfig(target=target, horizon=horizon, folds=folds, season=24)


def history_example(panel: dict[str, pd.DataFrame], hours: int = 96) -> pd.DataFrame:
    """A small wide history frame, as users pass to the pyfunc (ts as ISO text)."""
    sid = sorted(panel)[0]
    frame = panel[sid].drop(columns=["long_gap"]).iloc[-hours:]
    # The pyfunc takes raw variables: fold wind direction components back into degrees.
    if {"wind_dir_sin", "wind_dir_cos"} <= set(frame.columns):
        import numpy as np

        deg = np.rad2deg(np.arctan2(frame.pop("wind_dir_sin"), frame.pop("wind_dir_cos"))) % 360
        frame["wind_dir"] = deg
    out = frame.reset_index(names="ts")
    out.insert(0, "series_id", sid)
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def build_candidates(models: list[str], horizon: int, seed: int, epochs: int | None) -> dict[str, Any]:
    unknown = [m for m in models if m not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    out = {}
    for name in models:
        kw: dict[str, Any] = {"horizon": horizon, "seed": seed}
        if epochs is not None and name in KERAS_MODELS:
            kw["epochs"] = epochs
        out[name] = create_model(name, **kw)
    return out


def candidate_configs(
    target: str, models: list[str] | None, horizon: int, seed: int, epochs: int | None
) -> dict[str, dict[str, Any]]:
    """Each candidate's full config as plain data: what a worker needs to rebuild it."""
    candidates = build_candidates(models or DEFAULT_MODELS, horizon, seed, epochs)
    return {n: m.config.model_copy(update={"target": target}).model_dump() for n, m in candidates.items()}


@dataclass
class TrainingPlan:
    """What a training run backtests: the panel, the backtest settings and the
    candidates with their final (possibly tuned) configs."""

    panel: dict[str, pd.DataFrame]
    config: BacktestConfig
    candidates: dict[str, Any]
    tuning: Any = None


def plan_training(
    settings: Settings,
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
    on_progress: Callable[[str, str], None] | None = None,
    model_overrides: dict[str, dict[str, Any]] | None = None,
    tune_minutes: float = 0.0,
    tune_max_trials: int | None = None,
) -> TrainingPlan:
    """Load the panel, build the candidates and, with a tuning budget, tune them."""
    panel = store_panel(settings, target)
    cfg = backtest_config(target, horizon, folds)
    candidates = build_candidates(models or DEFAULT_MODELS, horizon, seed, epochs)
    tuning = None
    if tune_minutes > 0:
        from pipeline.backtest import plan_origins
        from pipeline.tuning import tune

        origins = plan_origins(panel, cfg)
        freq = origins[1] - origins[0] if len(origins) > 1 else pd.Timedelta(hours=1) * cfg.step
        step = freq / cfg.step
        val_start = origins[0] - (cfg.val_steps - 1) * step
        base = {n: {"epochs": epochs} for n in KERAS_MODELS if epochs is not None}
        base = {n: {**base.get(n, {}), **(model_overrides or {}).get(n, {})} for n in candidates}

        def trial_progress(rec: Any) -> None:
            if on_progress:
                on_progress(f"tune {rec.candidate}", f"trial {rec.number}: {rec.value:.4f} ({rec.seconds:.0f}s)")

        tuning = tune(
            panel,
            list(candidates),
            origins[0],
            val_start,
            tune_minutes * 60,
            seed=seed,
            base_config=base,
            max_trials=tune_max_trials,
            on_trial=trial_progress,
            target=target,
            horizon=horizon,
        )
        model_overrides = {n: {**(model_overrides or {}).get(n, {}), **p} for n, p in tuning.best.items()} | {
            n: v for n, v in (model_overrides or {}).items() if n not in tuning.best
        }
    for name, extra in (model_overrides or {}).items():
        if name in candidates:
            candidates[name] = create_model(name, **{**candidates[name].config.model_dump(), **extra})
    for m in candidates.values():
        m.config = m.config.model_copy(update={"target": target})
    return TrainingPlan(panel=panel, config=cfg, candidates=candidates, tuning=tuning)


def finish_training(
    settings: Settings,
    panel: dict[str, pd.DataFrame],
    result: BacktestResult,
    tuning: Any = None,
    on_progress: Callable[[str, str], None] | None = None,
) -> TrainOutcome:
    """Log the backtest to MLflow, register the winner behind the champion gate and
    record the comparison in the store."""
    target = result.config.target
    tracking.configure(settings)
    n_rows = sum(int(f[target].notna().sum()) for f in panel.values())
    first = min(f.index[0] for f in panel.values())
    last = max(f.index[-1] for f in panel.values())
    tags = {
        "data.series": ",".join(sorted(panel)),
        "data.start": first.isoformat(),
        "data.end": last.isoformat(),
        "data.target_rows": str(n_rows),
        "data.store": settings.database_url.split("://")[0],
    }
    if on_progress:
        on_progress("mlflow", "log")
    runs = tracking.log_backtest(result, panel, tags, tuning=tuning)
    if on_progress:
        on_progress("registry", "register")
    registry = tracking.register_winner(result, runs, panel, settings.max_gap_steps, history_example(panel))
    # The dashboard reads the comparison from the store, never from MLflow.
    store = Store(settings.database_url)
    try:
        store.write_comparison(runs.parent_run_id, target, result.comparison(), registry.version, registry.alias)
    finally:
        store.dispose()
    return TrainOutcome(result=result, comparison=result.comparison(), runs=runs, registry=registry, tuning=tuning)


def train(
    settings: Settings,
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
    on_progress: Callable[[str, str], None] | None = None,
    model_overrides: dict[str, dict[str, Any]] | None = None,
    tune_minutes: float = 0.0,
    tune_max_trials: int | None = None,
) -> TrainOutcome:
    """Backtest the candidates on the store's data, log to MLflow, register the winner."""
    plan = plan_training(
        settings,
        target,
        models,
        horizon,
        folds,
        epochs,
        seed,
        on_progress,
        model_overrides,
        tune_minutes,
        tune_max_trials,
    )
    result = run_backtest(plan.panel, plan.candidates, plan.config, on_progress=on_progress)
    return finish_training(settings, plan.panel, result, plan.tuning, on_progress)


# --- fan-out: one candidate per worker -------------------------------------------------


def backtest_candidate_to(
    settings: Settings,
    target: str,
    horizon: int,
    folds: int,
    name: str,
    config: dict[str, Any],
    out_dir: Path,
    members: dict[str, str] | None = None,
) -> Path:
    """Backtest one candidate from its config on the store's data and save the result
    under ``out_dir/name`` (an ensemble loads its members' saved results first).

    This is the unit a task runner spreads over workers: it takes and returns plain
    values and paths, and reads the data from the store itself.
    """
    panel = store_panel(settings, target)
    plan = plan_backtest(panel, backtest_config(target, horizon, folds))
    model = create_model(name, **config)
    if members:
        model.attach({n: load_candidate(Path(p)).model for n, p in members.items()})  # type: ignore[attr-defined]
    return save_candidate(backtest_candidate(panel, plan, name, model), out_dir / name)


def finish_training_from(
    settings: Settings, target: str, horizon: int, folds: int, results: dict[str, str]
) -> TrainOutcome:
    """:func:`finish_training` for candidates backtested elsewhere and saved with
    :func:`backtest_candidate_to`."""
    panel = store_panel(settings, target)
    result = plan_backtest(panel, backtest_config(target, horizon, folds))
    for name, path in results.items():
        result.candidates[name] = load_candidate(Path(path))
    return finish_training(settings, panel, result)
