"""Train and compare: backtest the candidates, log everything to MLflow, register the winner.

:func:`run_training` does it all in this process. The fan-out path splits the same work
by candidate and by chunk of series so that a task runner can spread it (see the
section at the end); :func:`finish_training_from` logs and registers from the folders
its steps write.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections import OrderedDict
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
    Calibration,
    CandidateResult,
    Refit,
    fit_to_history,
    load_candidate,
    plan_backtest,
    refit_winner,
    run_backtest,
    save_candidate,
    validation_residuals,
)
from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.features import GAP_COLUMN, has_weekly_rhythm, panel_freq, prepare_panel, season_for
from streamcast.metrics import with_actuals
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
    holidays of ``spec.holidays``; all read in ``spec.calendar_tz``. Every candidate of a
    training gets the same inputs."""
    if spec.calendar is not None:
        return spec
    train_end = plan_backtest(panel, backtest_for(spec, panel)).train_end
    calendar = ["hour", "doy"]
    if has_weekly_rhythm(panel, spec.target, train_end, spec.season):
        calendar.append("dow")
    if spec.holidays:
        calendar.append(f"holiday:{spec.holidays}")
    if spec.calendar_tz and spec.calendar_tz != "UTC":
        calendar.append(f"tz:{spec.calendar_tz}")
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
        "origin_step": spec.step,
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
    final: Refit | None = None,
) -> TrainOutcome:
    """Log the backtest to MLflow, register the winner (refit on all the data unless
    ``refit`` is off, or ``final``: refit already) behind the champion gate and record the comparison in the store
    (the dashboard reads it there, never from MLflow)."""
    target = result.config.target
    if refit and final is None:
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


# --- fan-out: by candidate and by chunk of series ---------------------------------------
#
# A task runner spreads a training as: fit each candidate once on the whole panel
# (:func:`fit_candidate_to`; a family fit by parts, the ESN, only begins there and sums
# :func:`fit_part_to` over chunks of series, finished by :func:`end_fit_to`); forecast its
# backtest origins and validation slice chunk by chunk (:func:`forecast_chunk_to`); put the
# chunks together (:func:`assemble_candidate_to`); log and register
# (:func:`finish_training_from`, with the winner refit by parts where it can be). Every
# step takes and returns plain values and folder paths and reads the store itself, so it
# runs on any worker that shares the data folder.

BEGUN = "begun.pkl"


_RUN_PANELS: OrderedDict[tuple[Any, ...], dict[tuple[str, ...] | None, dict[str, pd.DataFrame]]] = OrderedDict()
_RUNS_KEPT = 2  # runs whose panels a worker keeps (a run's chunks together are at most its whole panel)
_RUN_PANELS_LOCK = threading.Lock()


def run_panel(
    settings: Settings, target: str, run_dir: Path, series: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """The regularised panel (or the chunk ``series`` of it) as one fan-out run sees it:
    read from the store once per worker process and run, so every step of a run sees the
    same data even if more arrives meanwhile. A chunk is cut from the run's whole panel
    when this worker holds it (regularising is per series), else read on its own: a
    worker that only forecasts chunks reads only them."""
    run = (str(run_dir), settings.database_url, target, settings.max_gap_steps)
    part = tuple(series) if series else None
    with _RUN_PANELS_LOCK:  # a worker may run tasks on several threads
        loaded = _RUN_PANELS.setdefault(run, {})
        _RUN_PANELS.move_to_end(run)
        while len(_RUN_PANELS) > _RUNS_KEPT:
            _RUN_PANELS.popitem(last=False)
        whole = loaded.get(None)
        if part is not None and whole is not None:
            return {sid: whole[sid] for sid in part if sid in whole}
        if part not in loaded:
            loaded[part] = load_panel(settings, target, series)
            if part is None:  # the chunks read before are in it now
                for key in [k for k in loaded if k is not None]:
                    del loaded[key]
        return dict(loaded[part])


def series_chunks(series: list[str], chunk_size: int) -> list[list[str]]:
    """``series`` in chunks of at most ``chunk_size`` (in order)."""
    return [series[i : i + chunk_size] for i in range(0, len(series), chunk_size)]


def plan_fan_out(spec: TrainSpec, settings: Settings, chunk_size: int, out_dir: Path) -> dict[str, Any]:
    """What the fan-out run in ``out_dir`` runs: the spec with the data's decisions taken
    (season, calendar), each candidate's full config and members, and the chunks of series."""
    if chunk_size < 1:
        raise InputError("the chunk size must be at least 1 series")
    panel = run_panel(settings, spec.target, out_dir)
    spec = fitted_to_data(spec, panel)  # as in-process training decides it
    configs = {name: candidate_config(spec, name) for name in spec.models}
    return {
        "spec": spec,
        "candidates": [_planned(n, c) for n, c in configs.items()],
        "chunks": series_chunks(sorted(panel), chunk_size),
    }


def _planned(name: str, config: dict[str, Any]) -> dict[str, Any]:
    model = create_model(name, **config)
    return {"name": name, "config": config, "members": model.member_names, "by_parts": model.fits_by_parts}


def fit_candidate_to(
    spec: TrainSpec,
    name: str,
    config: dict[str, Any],
    out_dir: Path,
    settings: Settings,
    members: dict[str, str] | None = None,
    refit: bool = False,
) -> Path:
    """Fit one candidate on the whole panel before the backtest's first origin (with
    ``refit``, on all the data, the validation slice at its end) into ``out_dir/name``; a
    family fit by parts only begins (its chunks follow: :func:`fit_part_to`). The folder's
    ``window.json`` holds the backtest's origins and validation slice for the chunks."""
    panel = run_panel(settings, spec.target, out_dir)
    plan = plan_backtest(panel, backtest_for(spec, panel))
    train_end, val_start = plan.train_end, plan.val_start
    if refit:
        train_end = max(f.index[-1] for f in panel.values())
        val_start = train_end - (plan.config.val_steps - 1) * panel_freq(panel)
    model = create_model(name, **config)
    wanted = {n: p for n, p in (members or {}).items() if n in model.member_names}
    model.attach({n: load_candidate(Path(p)).model for n, p in wanted.items()})
    folder = out_dir / (f"{name}-refit" if refit else name)
    folder.mkdir(parents=True, exist_ok=True)
    window = {
        "origins": [o.isoformat() for o in plan.origins],
        "train_end": plan.train_end.isoformat(),
        "val_start": plan.val_start.isoformat(),
        # chosen on the whole panel: a chunk keeps the same validation origins
        "stride": model.validation_stride_for(panel, plan.val_start, plan.train_end),
        "horizon": plan.config.horizon,
        "level": plan.config.level,
    }
    (folder / "window.json").write_text(json.dumps(window))
    if model.fits_by_parts:
        with (folder / BEGUN).open("wb") as fh:
            pickle.dump(model.begin_fit(panel, train_end, val_start), fh)  # our own file, read back by our tasks
    else:
        model.fit(panel, train_end, val_start).save(folder / "model")
    return folder


def fit_part_to(spec: TrainSpec, folder: Path, settings: Settings, series: list[str], index: int) -> Path:
    """What the chunk ``series`` adds to a fit begun in ``folder``, saved beside it."""
    with (folder / BEGUN).open("rb") as fh:
        model = pickle.load(fh)
    started = time.perf_counter()
    arrays = model.fit_part(run_panel(settings, spec.target, folder.parent, series))
    path = folder / f"part-{index:05d}.npz"
    np.savez(path, seconds=np.array(time.perf_counter() - started), **arrays)
    return path


def end_fit_to(folder: Path, parts: list[str]) -> Path:
    """Finish a fit by parts from its chunks' parts; the fitted model goes to ``folder/model``."""
    with (folder / BEGUN).open("rb") as fh:
        model = pickle.load(fh)
    loaded = [dict(np.load(p)) for p in parts]
    model.end_fit(loaded, part_seconds=float(sum(float(p.pop("seconds")) for p in loaded)))
    model.save(folder / "model")
    return folder


def forecast_chunk_to(spec: TrainSpec, folder: Path, settings: Settings, series: list[str], index: int) -> Path:
    """The fitted candidate's backtest forecasts (with actuals) and validation residuals for
    the chunk ``series``, from only the data available at each origin."""
    window = json.loads((folder / "window.json").read_text())
    model = Forecaster.load(folder / "model")
    panel = run_panel(settings, spec.target, folder.parent, series)
    started = time.perf_counter()
    origins = [pd.Timestamp(o) for o in window["origins"]]
    forecasts = with_actuals(model.predict(panel, origins), panel, spec.target)
    seconds = time.perf_counter() - started
    train_end, val_start = pd.Timestamp(window["train_end"]), pd.Timestamp(window["val_start"])
    residuals = validation_residuals(model, panel, val_start, train_end, spec.target, stride=window["stride"])
    path = folder / f"chunk-{index:05d}"
    path.mkdir(exist_ok=True)
    forecasts.to_parquet(path / "forecasts.parquet")
    residuals[["series_id", "step", "residual"]].to_parquet(path / "residuals.parquet")
    (path / "seconds.json").write_text(json.dumps({"predict": seconds}))
    return path


def assemble_candidate_to(name: str, folder: Path, chunks: list[str]) -> Path:
    """One candidate's backtest from its chunks: forecasts, intervals calibrated on every
    chunk's validation residuals, timings; saved as :func:`load_candidate` reads it."""
    window = json.loads((folder / "window.json").read_text())
    forecasts = pd.concat([pd.read_parquet(Path(c) / "forecasts.parquet") for c in chunks], ignore_index=True)
    residuals = pd.concat([pd.read_parquet(Path(c) / "residuals.parquet") for c in chunks], ignore_index=True)
    calibration = Calibration.from_residuals(residuals, window["horizon"], window["level"])
    columns = [*forecasts.columns.drop("actual"), "lo", "hi", "actual"]  # as backtest_candidate orders them
    forecasts = calibration.apply(forecasts)[columns]
    predict = sum(json.loads((Path(c) / "seconds.json").read_text())["predict"] for c in chunks)
    model = Forecaster.load(folder / "model")
    result = CandidateResult(name, model, forecasts, calibration, model.fit_seconds, predict)
    return save_candidate(result, folder / "result")


def finish_training_from(
    spec: TrainSpec, results: dict[str, str], settings: Settings, refit_model: str | None = None
) -> TrainOutcome:
    """:func:`finish_training` for candidates backtested elsewhere (folders written by
    :func:`assemble_candidate_to`); ``refit_model``: the winner already refit elsewhere
    (a folder of :func:`fit_candidate_to` with ``refit``), else it is refit here."""
    panel, result = _gathered(spec, results, settings)
    final = None
    if refit_model is not None:
        final = refit_winner(panel, result, Forecaster.load(Path(refit_model) / "model"))
    return finish_training(settings, panel, result, refit=spec.refit, final=final)


def winner_of(spec: TrainSpec, results: dict[str, str], settings: Settings) -> str:
    """The backtest's winner among candidates backtested elsewhere."""
    return _gathered(spec, results, settings)[1].winner


def _gathered(
    spec: TrainSpec, results: dict[str, str], settings: Settings
) -> tuple[dict[str, pd.DataFrame], BacktestResult]:
    """The run's panel and its backtest with the candidates' results (``<run>/<name>/result``) loaded."""
    run_dir = Path(next(iter(results.values()))).parent.parent
    panel = run_panel(settings, spec.target, run_dir)
    result = plan_backtest(panel, backtest_for(spec, panel))
    for name, path in results.items():
        result.candidates[name] = load_candidate(Path(path))
    return panel, result
