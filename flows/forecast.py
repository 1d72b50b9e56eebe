"""Forecast flow: forecast every series from the champion and publish the latest table.

With ``task_runner="dask"`` the series are forecast in chunks, one task per chunk, on
a Dask cluster (each worker loads the champion once per chunk).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow

from flows.runners import check_task_runner, dask_task_runner
from flows.tasks import (
    forecast_task,
    latest_forecasts_task,
    mark_scored_task,
    publish_forecast_artifact,
    series_ids_task,
)
from streamcast.config import DEFAULT_TARGET
from streamcast.specs import split_targets


@flow(name="forecast-fan-out", log_prints=True)
def forecast_fan_out_flow(
    target: str = DEFAULT_TARGET, series: list[str] | None = None, chunk_size: int = 50
) -> list[str]:
    """One forecast task per chunk of ``chunk_size`` series on this flow's task runner."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    checked_at = datetime.now(UTC)  # before any chunk reads the store (see mark_scored)
    ids = series or series_ids_task()
    of_all = series is None
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    futures = [forecast_task.submit(target, chunk, of_all) for chunk in chunks]
    print(f"forecasting {len(ids)} series in {len(futures)} task(s)")
    issued = sorted(fid for f in futures for fid in f.result())
    if of_all:  # every chunk scored what matured for its series: the next run scores from here
        mark_scored_task(target, checked_at)
    return issued


def issue_forecasts(
    target: str,
    series: list[str] | None,
    task_runner: str,
    dask_address: str | None,
    chunk_size: int,
    dask_workers: int | None = None,
) -> list[str]:
    """Forecast in this flow's process or fanned out over Dask (call inside a flow)."""
    check_task_runner(task_runner)
    if task_runner == "dask":
        fan_out = forecast_fan_out_flow.with_options(task_runner=dask_task_runner(dask_address, dask_workers))
        return fan_out(target, series, chunk_size)
    return forecast_task(target, series)


@flow(name="forecast", log_prints=True)
def forecast_flow(
    target: str = DEFAULT_TARGET,
    series: list[str] | None = None,
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
    chunk_size: int = 50,
    dask_workers: int | None = None,
) -> list[str]:
    """``target``: one variable, or several comma-separated (each from its own champion);
    ``dask_workers``: the size of a local Dask cluster (default: one per core)."""
    ids: list[str] = []
    for name in split_targets(target):
        issued = issue_forecasts(name, series, task_runner, dask_address, chunk_size, dask_workers)
        publish_forecast_artifact(latest_forecasts_task(name), name)
        print(f"issued {len(issued)} forecast(s) of {name}")
        ids += issued
    return ids


if __name__ == "__main__":
    forecast_flow()
