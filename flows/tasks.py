"""Prefect tasks wrapping the service layer. Tasks take and return specs, ids, paths and
small dicts — never DataFrames or models — and only I/O tasks retry, with backoff."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from streamcast import queries, services
from streamcast.config import get_settings
from streamcast.specs import IngestSpec, TrainSpec

IO_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "cache_policy": NO_CACHE}


@task(name="ingest", **IO_RETRIES)
def ingest_task(spec: IngestSpec) -> list[dict[str, Any]]:
    return [s.to_dict() for s in services.ingest(spec).summaries]


@task(name="decide-retrain", **IO_RETRIES)
def retrain_decision_task(target: str) -> dict[str, Any]:
    d = services.decide_retrain(target)
    return {"retrain": d.retrain, "reason": d.reason, "detail": d.detail}


@task(name="train-and-register", cache_policy=NO_CACHE)
def train_task(spec: TrainSpec) -> dict[str, Any]:
    """Backtest, log to MLflow and register; not retried (a retry would repeat a long fit).
    Each candidate's progress goes to the run's log (and so to ``make run``'s console)."""
    logger = get_run_logger()

    def progress(name: str, stage: str) -> None:
        logger.info("training: %s %s", name, stage)

    return services.train(spec, on_progress=progress).summary()


@task(name="plan-fan-out", cache_policy=NO_CACHE)
def plan_fan_out_task(spec: TrainSpec, chunk_size: int, out_dir: str) -> dict[str, Any]:
    """The spec as in-process training completes it, each candidate's full config as plain
    data (for workers that rebuild it), its members and how it fits, and the chunks of series."""
    from streamcast.training import plan_fan_out

    return plan_fan_out(spec, get_settings(), chunk_size, Path(out_dir))


# Fits are not retried: a retry would repeat a long fit.
@task(name="fit-candidate", cache_policy=NO_CACHE)
def fit_candidate_task(
    spec: TrainSpec, name: str, config: dict[str, Any], out_dir: str, members: dict[str, str], refit: bool = False
) -> str:
    """One candidate fit on the whole panel (a family fit by parts only begins here)."""
    from streamcast.training import fit_candidate_to

    return str(fit_candidate_to(spec, name, config, Path(out_dir), get_settings(), members, refit))


@task(name="fit-part", cache_policy=NO_CACHE)
def fit_part_task(spec: TrainSpec, folder: str, series: list[str], index: int) -> str:
    from streamcast.training import fit_part_to

    return str(fit_part_to(spec, Path(folder), get_settings(), series, index))


@task(name="end-fit", cache_policy=NO_CACHE)
def end_fit_task(folder: str, parts: list[str]) -> str:
    from streamcast.training import end_fit_to

    return str(end_fit_to(Path(folder), parts))


@task(name="backtest-chunk", cache_policy=NO_CACHE)
def forecast_chunk_task(spec: TrainSpec, folder: str, series: list[str], index: int) -> str:
    """A fitted candidate's backtest forecasts and validation residuals for one chunk of series."""
    from streamcast.training import forecast_chunk_to

    return str(forecast_chunk_to(spec, Path(folder), get_settings(), series, index))


@task(name="backtest-candidate", cache_policy=NO_CACHE)
def assemble_candidate_task(name: str, folder: str, chunks: list[str]) -> str:
    """One candidate's backtest put together from its chunks; returns its result folder."""
    from streamcast.training import assemble_candidate_to

    return str(assemble_candidate_to(name, Path(folder), chunks))


@task(name="choose-winner", cache_policy=NO_CACHE)
def winner_task(spec: TrainSpec, results: dict[str, str]) -> str:
    from streamcast.training import winner_of

    return winner_of(spec, results, get_settings())


@task(name="log-and-register", cache_policy=NO_CACHE)
def finish_training_task(spec: TrainSpec, results: dict[str, str], refit_model: str | None = None) -> dict[str, Any]:
    """Log the candidates' backtests to MLflow and register the winner (not retried: a
    retry after a partial log would leave a second parent run)."""
    from streamcast.training import finish_training_from

    return finish_training_from(spec, results, get_settings(), refit_model).summary()


@task(name="issue-forecast", **IO_RETRIES)
def forecast_task(target: str, series: list[str] | None = None, chunk_of_all: bool = False) -> list[str]:
    """Forecast from the champion; returns the forecast ids written to the store.
    ``chunk_of_all``: ``series`` is one chunk of a forecast of every series."""
    return sorted(services.forecast(target, series, chunk_of_all=chunk_of_all)["forecast_id"].unique().tolist())


@task(name="mark-scored", **IO_RETRIES)
def mark_scored_task(target: str, checked_at: datetime) -> None:
    """Every chunk of a forecast of every series begun at ``checked_at`` has scored what matured."""
    services.mark_scored(target, checked_at)


@task(name="latest-forecasts", **IO_RETRIES)
def latest_forecasts_task(target: str) -> list[dict[str, Any]]:
    return queries.latest_forecasts(target)


@task(name="list-series", **IO_RETRIES)
def series_ids_task() -> list[str]:
    return queries.series_ids()


@task(name="publish-training-artifacts", **IO_RETRIES)
def publish_training_artifacts(result: dict[str, Any], target: str) -> None:
    create_table_artifact(
        key=f"comparison-{target}".replace("_", "-"),
        table=result["comparison"],
        description=f"Model comparison for {target}: winner {result['winner']}, registered "
        f"{result['registered_model']} v{result['version']} as @{result['alias']}",
    )
    ui = get_settings().mlflow_ui_url.rstrip("/")
    create_link_artifact(
        key="mlflow-training-run",
        link=f"{ui}/#/experiments/{result['experiment_id']}/runs/{result['parent_run_id']}",
        link_text=f"MLflow run {result['parent_run_id']}",
        description="Parent MLflow run of this training (open with `make mlflow-ui` or `make stack`)",
    )


@task(name="publish-forecast-artifact", **IO_RETRIES)
def publish_forecast_artifact(latest: list[dict[str, Any]], target: str) -> None:
    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    rows = [
        {
            "series_id": f["series_id"],
            "origin_ts": f["origin_ts"],
            "step": p["step"],
            "ts": p["ts"],
            "yhat": rounded(p["yhat"]),
            "lo": rounded(p["lo"]),
            "hi": rounded(p["hi"]),
            "model": f"{f['model']['name']} v{f['model']['version']}",
        }
        for f in latest
        for p in f["points"]
    ]
    create_table_artifact(
        key=f"latest-forecast-{target}".replace("_", "-"),
        table=rows,
        description=f"Latest {target} forecast per series",
    )


@task(name="publish-ingest-artifact", **IO_RETRIES)
def publish_ingest_artifact(summaries: list[dict[str, Any]]) -> None:
    lines = ["| source | rows | new | updated | unchanged | quarantined | obs/s |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {s['source']} {s['source_ref']} | {s['rows_read']:,} | {s['new']:,} | {s['updated']:,} | "
        f"{s['unchanged']:,} | {s['quarantined_total']:,} | {s['observations_per_second']:,.0f} |"
        for s in summaries
    ] or ["| (nothing new) | | | | | | |"]
    create_markdown_artifact(key="ingest-summary", markdown="\n".join(lines), description="What the ingest wrote")
