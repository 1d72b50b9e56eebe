"""Pipeline flow: ingest -> (train and register when due or drifting) -> forecast.

Named pipeline_flow.py, not pipeline.py: Prefect puts this folder on sys.path when it
loads a flow, and a flows/pipeline.py would shadow the `pipeline` package.

`make run` runs it once on the bundled data and prints the comparison, the
champion and the latest forecast per series.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from prefect import flow

from flows.forecast import issue_forecasts
from flows.runners import check_task_runner
from flows.tasks import (
    ingest_task,
    latest_forecasts_task,
    publish_forecast_artifact,
    publish_ingest_artifact,
    publish_training_artifacts,
    retrain_decision_task,
)
from flows.train import run_training


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    source: str = "landing",
    path: str | None = None,
    series_col: str | None = None,
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
    retrain: str = "auto",  # auto: when due or drifting; always; never
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """``task_runner="dask"`` fans training (one task per candidate) and forecasting (one
    task per chunk of series) out over the Dask cluster at ``dask_address``, else a
    local one."""
    check_task_runner(task_runner)
    summaries = ingest_task(source, path, series_col)
    publish_ingest_artifact(summaries)
    decision = retrain_decision_task(target)
    training = None
    if retrain == "always" or (retrain == "auto" and decision["retrain"]):
        print(f"training: {decision['reason'] or 'requested'} ({decision['detail']})")
        training = run_training(target, models, horizon, folds, epochs, seed, task_runner, dask_address)
        publish_training_artifacts(training, target)
    else:
        print(f"no retraining: {decision['detail']}")
    ids = issue_forecasts(target, None, task_runner, dask_address, chunk_size=50)
    latest = latest_forecasts_task(target)
    publish_forecast_artifact(latest, target)
    return {"ingest": summaries, "training": training, "forecast_ids": ids, "latest": latest, "decision": decision}


def main() -> None:
    """Console entry for `make run`: run the flow once and print what a user wants to see."""
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description="Run the streamcast pipeline flow once.")
    ap.add_argument("--source", default="nyc-weather")
    ap.add_argument("--target", default="temp")
    ap.add_argument("--models", default=None, help="comma-separated candidates")
    ap.add_argument("--folds", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--retrain", default="auto", choices=["auto", "always", "never"])
    ap.add_argument(
        "--task-runner",
        default="default",
        choices=["default", "dask"],
        help="dask: one task per candidate and per chunk of series on a Dask cluster",
    )
    ap.add_argument("--dask-address", default=None, help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (else local)")
    args = ap.parse_args()
    out = pipeline_flow(
        source=args.source,
        target=args.target,
        models=args.models.split(",") if args.models else None,
        folds=args.folds,
        epochs=args.epochs,
        retrain=args.retrain,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
    )
    import sys

    # A wide table even when make's output is piped or logged.
    console = Console(width=None if sys.stdout.isatty() else 120)
    tr = out["training"]
    if tr:
        t = Table(title="model comparison (rolling-origin backtest, best first)", title_justify="left")
        for col in ("candidate", "MASE", "MAE", "RMSE", "sMAPE %", "90% coverage", "fit s"):
            t.add_column(col, justify="left" if col == "candidate" else "right")
        for i, r in enumerate(tr["comparison"]):
            t.add_row(
                r["candidate"],
                f"{r['mase']:.3f}",
                f"{r['mae']:.2f}",
                f"{r['rmse']:.2f}",
                f"{r['smape']:.1f}",
                f"{r['coverage']:.1%}",
                f"{r['fit_seconds']:.1f}",
                style="bold green" if i == 0 else None,
            )
        console.print(t)
        console.print(
            f"champion: {tr['registered_model']} v{tr['version']} is @{tr['alias']} (winner {tr['winner']})",
            highlight=False,
        )
    t = Table(title=f"latest {args.target} forecast per series (first 6 of 24 hours)", title_justify="left")
    for col in ("series", "origin (UTC)", "model", "+1h", "+2h", "+3h", "+4h", "+5h", "+6h", "+24h"):
        t.add_column(col)
    for f in out["latest"]:
        pts = f["points"]
        t.add_row(
            f["series_id"],
            f["origin_ts"][:16].replace("T", " "),
            f"{f['model']['name']} v{f['model']['version']}",
            *[f"{p['yhat']:.1f}" for p in pts[:6]],
            f"{pts[-1]['yhat']:.1f} [{pts[-1]['lo']:.1f}, {pts[-1]['hi']:.1f}]",
        )
    console.print(t)


if __name__ == "__main__":
    main()
