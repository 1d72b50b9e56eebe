"""Pipeline flow: ingest -> (train and register when due or drifting) -> forecast.

Named pipeline_flow.py, not pipeline.py: Prefect puts this folder on sys.path when it
loads a flow, and a flows/pipeline.py would shadow a `pipeline` package there.

`make run` runs it once on the bundled data and prints the comparison, the
champion and the latest forecast per series.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from prefect import flow

from flows.forecast import issue_forecasts
from flows.runners import DEFAULT_CHUNK_SIZE, check_task_runner, parse_training_args
from flows.tasks import (
    ingest_task,
    latest_forecasts_task,
    publish_forecast_artifact,
    publish_ingest_artifact,
    publish_training_artifacts,
    retrain_decision_task,
)
from flows.train import train_on
from streamcast import services
from streamcast.specs import IngestSpec, TrainSpec


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    ingest_spec: IngestSpec = IngestSpec(source="landing"),
    train_spec: TrainSpec = TrainSpec(),
    retrain: Literal["auto", "always", "never"] = "auto",  # auto: when due or drifting
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """``task_runner="dask"`` fans training (tasks by candidate and by chunk of
    ``chunk_size`` series) and forecasting (one task per chunk of 50 series) out over the
    Dask cluster at ``dask_address``, else a local one of ``dask_workers`` processes."""
    check_task_runner(task_runner)
    summaries = ingest_task(ingest_spec)
    for s in summaries:
        quarantined = sum(s["quarantined"].values())
        print(
            f"ingest {s['source']} ({s['source_ref']}): {s['rows_read']:,} rows, {s['new']:,} new, "
            f"{s['updated']:,} revised, {s['unchanged']:,} unchanged, {quarantined:,} quarantined "
            f"in {s['elapsed_seconds']:.1f}s"
        )
    publish_ingest_artifact(summaries)
    targets = {}
    for spec in services.training_specs(train_spec):  # several targets (temp,humid): each in turn
        target = spec.target
        decision = retrain_decision_task(target)
        training = None
        if retrain == "always" or (retrain == "auto" and decision["retrain"]):
            print(f"training {target}: {decision['reason'] or 'requested'} ({decision['detail']})")
            training = train_on(spec, task_runner, dask_address, chunk_size, dask_workers)
            publish_training_artifacts(training, target)
        else:
            print(f"no retraining of {target}: {decision['detail']}")
        ids = issue_forecasts(target, None, task_runner, dask_address, 50, dask_workers)
        latest = latest_forecasts_task(target)
        publish_forecast_artifact(latest, target)
        targets[target] = {"training": training, "forecast_ids": ids, "latest": latest, "decision": decision}
    return {"ingest": summaries, "targets": targets}


def main() -> None:
    """Console entry for `make run`: run the flow once and print what a user wants to see."""
    from rich.console import Console
    from rich.text import Text

    from streamcast.cli import render

    args = parse_training_args(
        "Run the streamcast pipeline flow once.",
        ("--source", {"default": "nyc-weather", "help": "what to ingest first (as `streamcast ingest --source`)"}),
        ("--retrain", {"default": "auto", "choices": ["auto", "always", "never"]}),
    )
    spec = args.train_spec
    out = pipeline_flow(
        IngestSpec.of(source=args.source),
        spec,
        args.retrain,
        args.task_runner,
        args.dask_address,
        args.chunk_size,
        args.dask_workers,
    )
    # A wide table even when make's output is piped or logged.
    console = Console(width=None if sys.stdout.isatty() else 120)
    for target, done in out["targets"].items():
        tr = done["training"]
        if tr:
            console.print(render.comparison(tr["comparison"]))
            console.print(
                Text(f"champion: {tr['registered_model']} v{tr['version']} is @{tr['alias']} (winner {tr['winner']})")
            )
        console.print(render.latest_overview(done["latest"], target))


if __name__ == "__main__":
    main()
