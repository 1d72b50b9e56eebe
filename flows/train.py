"""Train flow: backtest the candidates, log to MLflow, register behind the champion gate.

With ``task_runner="dask"`` every candidate is fitted and backtested as its own task
on a Dask cluster (prefect-dask), candidates built from others (the ensemble) last
with their members' results; one final task logs them all to MLflow and registers the
winner. Tasks pass specs, configs and folder paths, never frames or models: the data
folder must be shared with the workers.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any, Literal

from prefect import flow

from flows.runners import check_task_runner, dask_task_runner, parse_training_args
from flows.tasks import (
    backtest_candidate_task,
    finish_training_task,
    plan_candidates_task,
    publish_training_artifacts,
    train_task,
)
from streamcast import services
from streamcast.config import get_settings
from streamcast.specs import TrainSpec


@flow(name="train-fan-out", log_prints=True)
def train_fan_out_flow(spec: TrainSpec) -> dict[str, Any]:
    """One task per candidate on whatever task runner this flow runs with."""
    plan = plan_candidates_task(spec)
    out_dir = (get_settings().data_dir / "backtests" / uuid.uuid4().hex[:12]).resolve()
    paths: dict[str, str] = {}
    try:
        # Candidates without members first, in parallel; then those built from them.
        for built_from_others in (False, True):
            futures = {
                c["name"]: backtest_candidate_task.submit(
                    spec, c["name"], c["config"], str(out_dir), {n: paths[n] for n in c["members"] if n in paths}
                )
                for c in plan
                if bool(c["members"]) == built_from_others
            }
            paths |= {name: future.result() for name, future in futures.items()}
        print(f"backtested {', '.join(paths)} in parallel tasks")
        return finish_training_task(spec, paths)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # MLflow holds the logged models now


def train_on(spec: TrainSpec, task_runner: str = "default", dask_address: str | None = None) -> dict[str, Any]:
    """Train in this flow's process or fanned out over Dask (call inside a flow)."""
    check_task_runner(task_runner)
    spec = services.training_spec(spec)
    if task_runner == "dask":
        return train_fan_out_flow.with_options(task_runner=dask_task_runner(dask_address))(spec)
    return train_task(spec)


@flow(name="train", log_prints=True)
def train_flow(
    spec: TrainSpec = TrainSpec(),
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """``task_runner``: ``default`` trains in this flow's process; ``dask`` fans the
    candidates out over the Dask cluster at ``dask_address`` (else a local one). Several
    targets (``target: temp,humid``) train in turn; the result maps each to its training."""
    results: dict[str, Any] = {}
    for one in services.training_specs(spec):
        result = results[one.target] = train_on(one, task_runner, dask_address)
        publish_training_artifacts(result, one.target)
        print(f"winner {result['winner']}: {result['registered_model']} v{result['version']} -> @{result['alias']}")
    return results


if __name__ == "__main__":
    args = parse_training_args("Run the streamcast train flow once.")
    train_flow(args.train_spec, task_runner=args.task_runner, dask_address=args.dask_address)
