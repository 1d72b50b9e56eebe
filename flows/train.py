"""Train flow: backtest the candidates, log to MLflow, register behind the champion gate.

With ``task_runner="dask"`` the work is spread on a Dask cluster (prefect-dask) by
candidate and by chunk of series: every candidate is fitted as its own task (the ESN's
fit, a sum over series, as one task per chunk) and backtested one task per chunk;
candidates built from others (the ensemble) go last with their members' results; the
winner is refit (the ESN again by chunks) and one final task logs them all to MLflow and
registers it. Adding workers keeps helping past the number of candidates. Tasks pass
specs, configs and folder paths, never frames or models: the data folder must be
shared with the workers.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any, Literal

from prefect import flow
from prefect.futures import PrefectFuture

from flows.runners import DEFAULT_CHUNK_SIZE, check_task_runner, dask_task_runner, parse_training_args
from flows.tasks import (
    assemble_candidate_task,
    end_fit_task,
    finish_training_task,
    fit_candidate_task,
    fit_part_task,
    forecast_chunk_task,
    plan_fan_out_task,
    publish_training_artifacts,
    train_task,
    winner_task,
)
from streamcast import services
from streamcast.config import get_settings
from streamcast.specs import TrainSpec


@flow(name="train-fan-out", log_prints=True)
def train_fan_out_flow(spec: TrainSpec, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Any]:
    """Fit every candidate as its own task and backtest it chunk by chunk of series, on
    whatever task runner this flow runs with; the ESN's fit (and refit) is itself spread
    over the chunks. Candidates built from others (the ensemble) go last."""
    out_dir = str((get_settings().data_dir / "backtests" / uuid.uuid4().hex[:12]).resolve())
    results: dict[str, str] = {}
    try:
        # On a worker: the one that plans keeps the run's panel for the fits that follow.
        plan = plan_fan_out_task.submit(spec, chunk_size, out_dir).result()
        spec, chunks = plan["spec"], plan["chunks"]
        for built_from_others in (False, True):
            futures = {}
            for c in plan["candidates"]:
                if bool(c["members"]) != built_from_others:
                    continue
                members = {n: results[n] for n in c["members"] if n in results}
                fitted = _fit(spec, c, chunks, out_dir, members)
                parts = [forecast_chunk_task.submit(spec, fitted, chunk, k) for k, chunk in enumerate(chunks)]
                futures[c["name"]] = assemble_candidate_task.submit(c["name"], fitted, parts)
            results |= {name: future.result() for name, future in futures.items()}
        print(f"backtested {', '.join(results)} in {len(chunks)} chunk(s) of series each")
        refit = None
        if spec.refit:
            name = winner_task.submit(spec, results).result()  # on a worker holding the panel
            winner = next(c for c in plan["candidates"] if c["name"] == name)
            if winner["by_parts"]:  # else the last task refits it (a network averages two fits)
                refit = _fit(spec, winner, chunks, out_dir, {}, refit=True).result()
        return finish_training_task.submit(spec, results, refit).result()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # MLflow holds the logged models now


def _fit(
    spec: TrainSpec,
    candidate: dict[str, Any],
    chunks: list[list[str]],
    out_dir: str,
    members: dict[str, str],
    refit: bool = False,
) -> PrefectFuture[str]:
    """Submit a candidate's fit: one task, or for a family fit by parts a task that begins
    it, one per chunk of series, and one that finishes it. The future is its folder."""
    name, config = candidate["name"], candidate["config"]
    begun = fit_candidate_task.submit(spec, name, config, out_dir, members, refit)
    if not candidate["by_parts"]:
        return begun
    parts = [fit_part_task.submit(spec, begun, chunk, k) for k, chunk in enumerate(chunks)]
    return end_fit_task.submit(begun, parts)


def train_on(
    spec: TrainSpec,
    task_runner: str = "default",
    dask_address: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """Train in this flow's process or fanned out over Dask (call inside a flow)."""
    check_task_runner(task_runner)
    spec = services.training_spec(spec)
    if task_runner == "dask":
        runner = dask_task_runner(dask_address, dask_workers)
        return train_fan_out_flow.with_options(task_runner=runner)(spec, chunk_size)
    return train_task(spec)


@flow(name="train", log_prints=True)
def train_flow(
    spec: TrainSpec = TrainSpec(),
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """``task_runner``: ``default`` trains in this flow's process; ``dask`` fans the
    candidates and chunks of ``chunk_size`` series out over the Dask cluster at
    ``dask_address`` (else a local one of ``dask_workers`` processes, one per core by
    default). Several
    targets (``target: temp,humid``) train in turn; the result maps each to its training."""
    results: dict[str, Any] = {}
    for one in services.training_specs(spec):
        result = results[one.target] = train_on(one, task_runner, dask_address, chunk_size, dask_workers)
        publish_training_artifacts(result, one.target)
        print(f"winner {result['winner']}: {result['registered_model']} v{result['version']} -> @{result['alias']}")
    return results


if __name__ == "__main__":
    args = parse_training_args("Run the streamcast train flow once.")
    train_flow(args.train_spec, args.task_runner, args.dask_address, args.chunk_size, args.dask_workers)
