"""MLflow: the only module that talks to the tracking server and the registry.

A training is a parent run with one nested run per candidate. The winner is
logged as a pyfunc and registered as ``streamcast-<target>``; the ``champion``
alias moves only when the winner beats the current champion re-scored on the
same backtest window, otherwise the new version becomes ``challenger``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamcast.backtest import BacktestConfig, BacktestResult, CandidateResult, Refit
from streamcast.config import Settings
from streamcast.metrics import aggregate, coverage, score_points, with_actuals

log = logging.getLogger(__name__)

EXPERIMENT = "streamcast"
EXPERIMENT_KIND = "custom_model_development"  # the MLflow UI opens it on its runs
CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(target: str) -> str:
    return f"streamcast-{target}"


def configure(settings: Settings) -> str:
    """Point MLflow at the project's tracking store and make sure the experiment exists.

    Called explicitly by whoever is about to log, never at import.
    """
    import os
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    # MLflow's chatter (schema hints, cloudpickle notice) is not news to our users.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.tracking_uri.startswith("sqlite:"):
        db = settings.tracking_uri.removeprefix("sqlite:///")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        artifact_location = None
        if not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
            settings.artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_location = settings.artifact_root.as_uri()
        client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
        exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    # MLflow 3.4+ opens an experiment by its kind: this one is model training, not GenAI.
    if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    mlflow.set_experiment(EXPERIMENT)
    return settings.tracking_uri


def log_training_data(panel: dict[str, pd.DataFrame], target: str, source: str | None) -> None:
    """The training input as an MLflow dataset on the active run (its Datasets column):
    the target of every series in long form, with MLflow's digest of it and its source."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.exceptions import MlflowException
    from mlflow.types import ColSpec, Schema

    frame = pd.concat(
        [pd.DataFrame({"series_id": sid, "ts": f.index, target: f[target].to_numpy()}) for sid, f in panel.items()],
        ignore_index=True,
    )
    name = f"streamcast-{target}"
    # MLflow would digest only the first 10,000 rows and infer the schema value by value
    # (half a minute at 1,000 series); the digest here covers every row, vectorised, and
    # the schema is known.
    digest = hashlib.md5(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:8]
    try:
        if source is None:
            raise MlflowException("no source")
        dataset = from_pandas(frame, source=source, name=name, targets=target, digest=digest)
    except MlflowException:  # none, or a database URL MLflow has no source type for: the run is
        dataset = from_pandas(frame, name=name, targets=target, digest=digest)
    dataset.schema = Schema([ColSpec("string", "series_id"), ColSpec("datetime", "ts"), ColSpec("double", target)])  # type: ignore[misc]
    mlflow.log_input(dataset, context="training")


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


PLOT_SERIES = 3  # panels in a candidate's forecast plot, however many series there are


def plotted_series(per_series: pd.DataFrame) -> list[tuple[str, str]]:
    """Which series a forecast plot shows, and why: all of them up to ``PLOT_SERIES``,
    else the best, median and worst by MASE (a fixed budget, not one panel per series)."""
    ranked = per_series.sort_values(["mase", "series_id"], na_position="last", ignore_index=True)
    sids = ranked["series_id"].astype(str).tolist()
    if len(sids) <= PLOT_SERIES:
        return [(sid, "") for sid in sorted(sids)]
    return [(sids[0], "best MASE"), (sids[(len(sids) - 1) // 2], "median MASE"), (sids[-1], "worst MASE")]


def plot_forecasts(
    cand: CandidateResult, history: dict[str, pd.DataFrame], target: str, per_series: pd.DataFrame, path: Path
) -> Path:
    """Forecast vs actual over the backtest window with intervals, for at most
    ``PLOT_SERIES`` series; with more, a last panel shows every series' MASE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = plotted_series(per_series)
    many = len(per_series) > PLOT_SERIES
    rows = len(shown) + many
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.8 * rows), squeeze=False)
    for ax, (sid, why) in zip(axes[:, 0], shown, strict=False):
        fc = cand.forecasts[cand.forecasts.series_id == sid].sort_values("ts")
        start = fc["ts"].min() - pd.Timedelta(days=2)
        actual = history[sid][target].loc[start : fc["ts"].max()]
        ax.plot(actual.index, actual.to_numpy(), color="black", lw=1, label="actual")
        for i, (_, one) in enumerate(fc.groupby("origin_ts")):
            ax.fill_between(
                one["ts"],
                one["lo"],
                one["hi"],
                color="tab:blue",
                alpha=0.15,
                lw=0,
                label="90% interval" if i == 0 else None,
            )
            ax.plot(one["ts"], one["yhat"], color="tab:blue", lw=1, label="forecast" if i == 0 else None)
        # Series ids are user data: plain text, never mathtext.
        ax.set_title(f"{cand.name} — {sid}" + (f" ({why})" if why else ""), loc="left", fontsize=10, usetex=False)
        ax.title.set_parse_math(False)
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    if many:
        ax = axes[-1, 0]
        ax.hist(per_series["mase"].dropna().to_numpy(), bins=min(50, max(10, len(per_series) // 20)), color="tab:blue")
        ax.set_title(f"{cand.name} — MASE of all {len(per_series)} series", loc="left", fontsize=10)
        ax.set_xlabel("MASE")
        ax.set_ylabel("series")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@dataclass
class TrainingRuns:
    parent_run_id: str
    candidate_run_ids: dict[str, str]
    experiment_id: str


def log_backtest(
    result: BacktestResult,
    panel: dict[str, pd.DataFrame],
    tags: dict[str, str],
    run_name: str | None = None,
    tuning: Any = None,
) -> TrainingRuns:
    """Log a parent run with one nested run per candidate: params, metrics, per-step MAE, plot, table."""
    import mlflow

    cfg = result.config
    table = result.comparison()
    run_ids: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=run_name or f"train-{cfg.target}") as parent:
        tmpdir = Path(tmp)
        mlflow.set_tags({**tags, "streamcast.role": "training", "streamcast.target": cfg.target})
        log_training_data(panel, cfg.target, tags.get("data.source"))
        if result.scale_fallbacks:
            mlflow.set_tag("streamcast.mase_scale_fallbacks", json.dumps(result.scale_fallbacks)[:4000])
        mlflow.log_params({f"backtest.{k}": v for k, v in cfg.model_dump().items()})
        mlflow.log_params(
            {
                "backtest.train_end": result.train_end.isoformat(),
                "backtest.val_start": result.val_start.isoformat(),
                "backtest.first_origin": result.origins[0].isoformat(),
                "backtest.last_origin": result.origins[-1].isoformat(),
            }
        )
        (tmpdir / "comparison.csv").write_text(table.to_csv(index=False))
        (tmpdir / "comparison.md").write_text(_markdown(table))
        mlflow.log_artifact(str(tmpdir / "comparison.csv"))
        mlflow.log_artifact(str(tmpdir / "comparison.md"))
        best = table.iloc[0]
        mlflow.log_metrics({"best_mase": float(best["mase"]), "best_coverage": float(best["coverage"])})
        if tuning is not None:
            mlflow.log_metric("tuning_seconds", float(tuning.seconds))
            mlflow.set_tag("streamcast.tuning_folds", str(tuning.folds))
            # The bar each candidate's trials had to clear: its default config's validation error.
            mlflow.log_metrics({f"default_val_scaled_mae.{n}": v for n, v in tuning.default_value.items()})
            for rec in tuning.trials:
                with mlflow.start_run(run_name=f"tune-{rec.candidate}-{rec.number}", nested=True):
                    mlflow.set_tags({"streamcast.role": "tuning-trial", "streamcast.kind": rec.candidate})
                    mlflow.log_params({k: str(v) for k, v in rec.params.items()})
                    mlflow.log_metrics({"val_scaled_mae": rec.value, "trial_seconds": rec.seconds})
        mlflow.set_tag("streamcast.winner", str(best["candidate"]))
        for name, cand in result.candidates.items():
            row = table.set_index("candidate").loc[name]
            with mlflow.start_run(run_name=name, nested=True) as child:
                run_ids[name] = child.info.run_id
                mlflow.set_tags({**tags, "streamcast.role": "candidate", "streamcast.kind": name})
                # What a fit decided in words (an ensemble's weighting): tags beside the fit_ metrics.
                words = {f"streamcast.fit_{k}": v for k, v in cand.model.fit_info.items() if isinstance(v, str)}
                mlflow.set_tags(words)
                mlflow.log_params(_flatten(cand.model.config.model_dump()))
                mlflow.log_params({"covariates": json.dumps(cand.model.covariates)})
                metrics = {
                    "mase": float(row["mase"]),
                    "mae": float(row["mae"]),
                    "rmse": float(row["rmse"]),
                    "smape": float(row["smape"]),
                    "coverage": float(row["coverage"]),
                    "fit_seconds": float(cand.fit_seconds),
                    "predict_seconds": float(cand.predict_seconds),
                }
                metrics.update(_info_metrics("fit", cand.model.fit_info))
                mine = result.scored_candidate(name)
                per_step = aggregate(mine, ["step"])
                stepped = [("mae_step", float(r.mae), int(r.step)) for r in per_step.itertuples(index=False)]
                stepped += [("mase_step", float(r.mase), int(r.step)) for r in per_step.itertuples(index=False)]
                _log_metrics_at_once(child.info.run_id, metrics, stepped)
                # Per-series metrics as one table (series ids are data, not metric names).
                per_series = aggregate(mine, ["series_id"])
                per_series["coverage"] = coverage(mine, ["series_id"]).reindex(per_series["series_id"]).to_numpy()
                (tmpdir / name).mkdir(exist_ok=True)
                per_series.to_csv(tmpdir / name / "series_metrics.csv", index=False)
                mlflow.log_artifact(str(tmpdir / name / "series_metrics.csv"))
                plot = plot_forecasts(cand, panel, cfg.target, per_series, tmpdir / f"forecast_vs_actual_{name}.png")
                mlflow.log_artifact(str(plot))
                mlflow.log_artifact(str(tmpdir / "comparison.md"))
        return TrainingRuns(parent.info.run_id, run_ids, parent.info.experiment_id)


# Libraries a registered forecaster's files are written by, pinned as installed.
PINNED = (
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "statsforecast",
    "reservoirpy",
)


def pip_requirements(model: Any) -> list[str]:
    """What loading ``model`` as the pyfunc needs: streamcast with its model libraries, the
    libraries that wrote its files pinned as installed, and the distribution of any plug-in
    model among its members. Without them MLflow loads the model in a child process to
    guess (about 10 s and 700 MB at 1,000 series, and it guessed dask and psutil)."""
    from importlib import metadata

    roots: set[str] = set()
    pending = [model]
    while pending:
        m = pending.pop()
        roots.add(type(m).__module__.split(".")[0])
        pending.extend(getattr(m, "members", {}).values())
    plugins = {d for r in roots - {"streamcast"} for d in metadata.packages_distributions().get(r, [])}
    out = [f"streamcast[train]=={metadata.version('streamcast')}"]
    for dist in sorted(set(PINNED) | plugins):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and bool(np.isfinite(v))


def _info_metrics(prefix: str, info: dict[str, Any]) -> dict[str, float]:
    """A model's ``fit_info`` numbers as metrics, one level of mappings spelled out: an
    ensemble's ``weights`` are ``fit_weights_<member>`` (member names are candidate names)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, dict):
            out.update({f"{prefix}_{k}_{n}": float(x) for n, x in v.items() if _finite_number(x)})
        elif _finite_number(v):
            out[f"{prefix}_{k}"] = float(v)
    return out


def _log_metrics_at_once(run_id: str, metrics: dict[str, float], stepped: list[tuple[str, float, int]]) -> None:
    """A candidate's metrics and per-step curves in one request (one call per value was
    60 tracking-store writes a candidate)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, 0) for k, v in metrics.items()] + [Metric(k, v, now, step) for k, v, step in stepped]
    mlflow.MlflowClient().log_batch(run_id, metrics=batch)


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


# --- registry ------------------------------------------------------------------


@dataclass
class RegistryOutcome:
    name: str
    version: str
    alias: str  # "champion" or "challenger"
    new_mase: float
    previous_champion: str | None  # version
    previous_champion_mase: float | None
    run_id: str
    held_back: str | None = None  # why a better challenger did not move @champion
    refit_through: str | None = None  # the registered forecaster was refit on data up to here


def current_champion(target: str) -> Any | None:
    """The ModelVersion behind ``@champion``, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(registered_name(target), CHAMPION)
    except MlflowException:
        return None


def download_bundle(target: str, alias: str = CHAMPION, dst: Path | None = None) -> tuple[Path, Any]:
    """Fetch the bundle (forecaster + calibration) of ``streamcast-<target>@alias``."""
    import mlflow

    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(registered_name(target), alias)
    dst = dst or Path(tempfile.mkdtemp(prefix="streamcast-model-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{registered_name(target)}/{mv.version}", dst_path=str(dst)
    )
    return Path(local) / "artifacts" / "bundle", mv


def rescore_champion(target: str, result: BacktestResult, panel: dict[str, pd.DataFrame]) -> tuple[Any, float] | None:
    """The current champion's mean MASE on this training's backtest origins."""
    from streamcast.bundle import ForecastBundle

    mv = current_champion(target)
    if mv is None:
        return None
    bundle_path, _ = download_bundle(target, CHAMPION)
    bundle = ForecastBundle(bundle_path)
    # A champion refit on all its data may have seen this window: score it as it was
    # fit for its own backtest, before that window.
    fc = bundle.calibration.apply(bundle.backtest_model.predict(panel, result.origins))
    fc = with_actuals(fc, panel, result.config.target)
    scored = score_points(fc, result.scales)
    mase = float(aggregate(scored, ["series_id"])["mase"].mean())
    return mv, mase


def _pyfunc_signature(bundle: Path, history_example: pd.DataFrame) -> Any:
    """The pyfunc's signature, inferred from forecasting ``history_example``; only
    series_id and ts are required inputs (history may carry any subset of variables)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    from streamcast.bundle import ForecastBundle, StreamcastPyfunc

    probe = StreamcastPyfunc()
    probe.bundle = ForecastBundle(bundle)
    inferred = infer_signature(history_example, probe.predict(None, history_example))
    assert inferred.inputs is not None
    inputs = Schema(
        [ColSpec(type=c.type, name=c.name, required=c.name in ("series_id", "ts")) for c in inferred.inputs.inputs]
    )
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def register_winner(
    result: BacktestResult,
    runs: TrainingRuns,
    panel: dict[str, pd.DataFrame],
    max_gap: int,
    history_example: pd.DataFrame,
    refit: Refit | None = None,
) -> RegistryOutcome:
    """Log the winner as a pyfunc in its nested run, register it, and move the aliases.

    With ``refit`` the registered forecaster is the winner refit on all the data (its
    backtest fit travels along for the champion gate)."""
    import mlflow

    from streamcast.bundle import StreamcastPyfunc, save_bundle

    cfg = result.config
    table = result.comparison().set_index("candidate")
    winner = result.winner
    cand = result.candidates[winner]
    new_mase = float(table.loc[winner, "mase"])
    name = registered_name(cfg.target)
    rescored = rescore_champion(cfg.target, result, panel)

    with tempfile.TemporaryDirectory() as tmp:
        trained = {"trained_through": (refit.train_end if refit else result.train_end).isoformat()}
        bundle = save_bundle(
            Path(tmp) / "bundle",
            refit.model if refit else cand.model,
            refit.calibration if refit else cand.calibration,
            max_gap,
            {"target": cfg.target, "kind": winner, "mase": new_mase, "refit": refit is not None, **trained},
            backtest_model=cand.model if refit else None,
        )
        signature = _pyfunc_signature(bundle, history_example)
        # MLflow prints its registry notices ("Registered model ... already exists. Creating a
        # new version", "Created version ...") straight to stderr, inside our progress
        # display: keep them in the debug log, where the version is also recorded.
        chatter = io.StringIO()
        with mlflow.start_run(run_id=runs.candidate_run_ids[winner]):
            with contextlib.redirect_stderr(chatter):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=StreamcastPyfunc(),
                    artifacts={"bundle": str(bundle)},
                    signature=signature,
                    input_example=history_example,
                    registered_model_name=name,
                    pip_requirements=pip_requirements(refit.model if refit else cand.model),
                )
            log.debug("MLflow: %s", chatter.getvalue().strip())
            if refit:
                # e.g. a network's warm_start, epochs_run
                refit_info = _info_metrics("refit", refit.model.fit_info)
                _log_metrics_at_once(runs.candidate_run_ids[winner], {"refit_seconds": refit.seconds, **refit_info}, [])
                mlflow.set_tags({"streamcast.refit_train_end": refit.train_end.isoformat()})
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    tags = {
        "kind": winner,
        "target": cfg.target,
        "mase": f"{new_mase:.4f}",
        "mae": f"{table.loc[winner, 'mae']:.4f}",
        "coverage": f"{table.loc[winner, 'coverage']:.4f}",
        "training_run_id": runs.parent_run_id,
        "origins": str(len(result.origins)),
        **trained,
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    held_back = _too_short_to_crown(result, rescored[0] if rescored else None)
    better = rescored is None or beats(new_mase, rescored[1])
    if better and held_back is None:
        alias = CHAMPION
        client.set_registered_model_alias(name, CHAMPION, version)
    else:
        alias = CHALLENGER
        client.set_registered_model_alias(name, CHALLENGER, version)
    if rescored is not None:
        client.set_model_version_tag(name, version, "champion_mase_same_window", f"{rescored[1]:.4f}")
    with mlflow.start_run(run_id=runs.parent_run_id):
        mlflow.set_tags({"streamcast.registered_version": version, "streamcast.alias": alias})
    return RegistryOutcome(
        name=name,
        version=version,
        alias=alias,
        new_mase=new_mase,
        previous_champion=str(rescored[0].version) if rescored else None,
        previous_champion_mase=rescored[1] if rescored else None,
        run_id=runs.candidate_run_ids[winner],
        held_back=held_back if alias == CHALLENGER and better else None,
        refit_through=refit.train_end.isoformat() if refit else None,
    )


def beats(new_mase: float, champion_mase: float) -> bool:
    """Better by more than float noise: the same model re-scored from its saved bundle can
    differ from the one in memory in the last digits, and that is a tie."""
    return new_mase < champion_mase * (1 - 1e-6)


def _too_short_to_crown(result: BacktestResult, champion: Any | None) -> str | None:
    """Why this backtest is too short to move ``@champion`` (None when it is long enough):
    it needs the default number of origins (or all a short history allows) and at least
    as many as the backtest the champion won on, so that two origins cannot overturn thirty."""
    if champion is None:
        return None
    default = int(BacktestConfig.model_fields["folds"].default)
    needed = max(int(champion.tags.get("origins", default)), 0 if result.config.fitted_to_history else default)
    if len(result.origins) >= needed:
        return None
    return f"its backtest has {len(result.origins)} origins; moving @champion takes at least {needed}"
