"""Train flow: backtest the candidates, log to MLflow, register behind the champion gate.

With ``task_runner="dask"`` every candidate is fitted and backtested as its own task
on a Dask cluster (prefect-dask), the ensemble last with its members' results; one
final task logs them all to MLflow and registers the winner. Tasks pass configs and
folder paths, never frames or models: the data folder must be shared with the workers.
"""

from __future__ import annotations

import argparse
import shutil
import uuid
from typing import Any, Literal

from prefect import flow

from flows.runners import check_task_runner, dask_task_runner
from flows.tasks import (
    backtest_candidate_task,
    finish_training_task,
    plan_candidates_task,
    publish_training_artifacts,
    train_task,
)
from pipeline.config import get_settings


@flow(name="train-fan-out", log_prints=True)
def train_fan_out_flow(
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """One task per candidate on whatever task runner this flow runs with."""
    configs = plan_candidates_task(target, models, horizon, epochs, seed)
    out_dir = (get_settings().data_dir / "backtests" / uuid.uuid4().hex[:12]).resolve()
    try:
        singles = {
            name: backtest_candidate_task.submit(target, horizon, folds, name, cfg, str(out_dir))
            for name, cfg in configs.items()
            if name != "ensemble"
        }
        paths = {name: future.result() for name, future in singles.items()}
        print(f"backtested {', '.join(paths)} in parallel tasks")
        if "ensemble" in configs:
            members = {n: p for n, p in paths.items() if n in configs["ensemble"]["members"]}
            paths["ensemble"] = backtest_candidate_task.submit(
                target, horizon, folds, "ensemble", configs["ensemble"], str(out_dir), members
            ).result()
        return finish_training_task(target, horizon, folds, paths)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # MLflow holds the logged models now


def run_training(
    target: str,
    models: list[str] | None,
    horizon: int,
    folds: int,
    epochs: int | None,
    seed: int,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Train in this flow's process or fanned out over Dask (call inside a flow)."""
    check_task_runner(task_runner)
    if task_runner == "dask":
        fan_out = train_fan_out_flow.with_options(task_runner=dask_task_runner(dask_address))
        return fan_out(target, models, horizon, folds, epochs, seed)
    return train_task(target, models, horizon, folds, epochs, seed)


@flow(name="train", log_prints=True)
def train_flow(
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """``task_runner``: ``default`` trains in this flow's process; ``dask`` fans the
    candidates out over the Dask cluster at ``dask_address`` (else a local one)."""
    result = run_training(target, models, horizon, folds, epochs, seed, task_runner, dask_address)
    publish_training_artifacts(result, target)
    print(f"winner {result['winner']}: {result['registered_model']} v{result['version']} -> @{result['alias']}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the streamcast train flow once.")
    ap.add_argument("--target", default="temp")
    ap.add_argument("--models", default=None, help="comma-separated candidates")
    ap.add_argument("--folds", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--task-runner", default="default", choices=["default", "dask"])
    ap.add_argument("--dask-address", default=None, help="scheduler address, e.g. tcp://10.0.0.5:8786")
    args = ap.parse_args()
    train_flow(
        target=args.target,
        models=args.models.split(",") if args.models else None,
        folds=args.folds,
        epochs=args.epochs,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
    )


if __name__ == "__main__":
    main()
