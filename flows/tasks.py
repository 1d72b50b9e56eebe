"""Prefect tasks wrapping library calls. Tasks take and return ids, paths and small
dicts — never DataFrames or models — and only I/O tasks retry, with backoff."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from pipeline.config import get_settings

IO_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "cache_policy": NO_CACHE}


@task(name="ingest", **IO_RETRIES)
def ingest_task(
    source: str = "nyc-weather",
    path: str | None = None,
    series_col: str | None = None,
    time_col: str | None = None,
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    from pathlib import Path

    from pipeline import ingest
    from pipeline.store import Store

    settings = get_settings()
    store = Store(settings.database_url)
    try:
        if source == "nyc-weather":
            summaries = [ingest.ingest_dataset(store, "nyc-weather", settings)]
        elif source == "landing":
            result = ingest.ingest_landing(
                store, settings, Path(path) if path else None, series_col=series_col, time_col=time_col, tz=tz
            )
            summaries = result.ingested
        else:
            if path is None:
                raise ValueError(f"source {source!r} needs a path")
            summaries = [
                ingest.ingest_file(
                    store, Path(path), settings, fmt=source, series_col=series_col, time_col=time_col, tz=tz
                )
            ]
    finally:
        store.dispose()
    return [s.to_dict() for s in summaries]


@task(name="decide-retrain", **IO_RETRIES)
def retrain_decision_task(target: str) -> dict[str, Any]:
    from pipeline.monitoring import retrain_decision
    from pipeline.store import Store

    settings = get_settings()
    store = Store(settings.database_url)
    try:
        d = retrain_decision(store, settings, target)
    finally:
        store.dispose()
    return {"retrain": d.retrain, "reason": d.reason, "detail": d.detail}


@task(name="train-and-register", cache_policy=NO_CACHE)
def train_task(
    target: str, models: list[str] | None, horizon: int, folds: int, epochs: int | None, seed: int
) -> dict[str, Any]:
    """Backtest, log to MLflow and register; not retried (a retry would repeat a long fit)."""
    from pipeline.training import train

    outcome = train(
        get_settings(), target=target, models=models, horizon=horizon, folds=folds, epochs=epochs, seed=seed
    )
    return _training_summary(outcome)


@task(name="plan-candidates", cache_policy=NO_CACHE)
def plan_candidates_task(
    target: str, models: list[str] | None, horizon: int, epochs: int | None, seed: int
) -> dict[str, dict[str, Any]]:
    """Each candidate's full config as plain data, for workers that rebuild it."""
    from pipeline.training import candidate_configs

    return candidate_configs(target, models, horizon, seed, epochs)


@task(name="backtest-candidate", cache_policy=NO_CACHE)
def backtest_candidate_task(
    target: str,
    horizon: int,
    folds: int,
    name: str,
    config: dict[str, Any],
    out_dir: str,
    members: dict[str, str] | None = None,
) -> str:
    """One candidate's fit and backtest, wherever the task runner puts it; returns the
    folder holding its result. Not retried: a retry would repeat a long fit."""
    from pathlib import Path

    from pipeline.training import backtest_candidate_to

    path = backtest_candidate_to(get_settings(), target, horizon, folds, name, config, Path(out_dir), members)
    return str(path)


@task(name="log-and-register", cache_policy=NO_CACHE)
def finish_training_task(target: str, horizon: int, folds: int, results: dict[str, str]) -> dict[str, Any]:
    """Log the candidates' backtests to MLflow and register the winner (not retried: a
    retry after a partial log would leave a second parent run)."""
    from pipeline.training import finish_training_from

    return _training_summary(finish_training_from(get_settings(), target, horizon, folds, results))


def _training_summary(outcome: Any) -> dict[str, Any]:
    reg = outcome.registry
    return {
        "winner": outcome.winner,
        "comparison": outcome.comparison.round(4).to_dict("records"),
        "parent_run_id": outcome.runs.parent_run_id,
        "experiment_id": outcome.runs.experiment_id,
        "registered_model": reg.name,
        "version": reg.version,
        "alias": reg.alias,
        "previous_champion": reg.previous_champion,
        "previous_champion_mase": reg.previous_champion_mase,
        "origins": [outcome.result.origins[0].isoformat(), outcome.result.origins[-1].isoformat()],
    }


@task(name="issue-forecast", **IO_RETRIES)
def forecast_task(target: str, series: list[str] | None = None) -> list[str]:
    """Forecast from the champion; returns the forecast ids written to the store."""
    from pipeline.forecasting import issue_forecast

    fc = issue_forecast(get_settings(), target=target, series=series)
    return sorted(fc["forecast_id"].unique().tolist())


@task(name="latest-forecasts", **IO_RETRIES)
def latest_forecasts_task(target: str) -> list[dict[str, Any]]:
    from pipeline.queries import latest_payload
    from pipeline.store import Store

    store = Store(get_settings().database_url)
    try:
        return latest_payload(store.latest_forecasts(target=target))
    finally:
        store.dispose()


@task(name="publish-training-artifacts", **IO_RETRIES)
def publish_training_artifacts(result: dict[str, Any], target: str) -> None:
    settings = get_settings()
    create_table_artifact(
        key=f"comparison-{target}".replace("_", "-"),
        table=result["comparison"],
        description=f"Model comparison for {target}: winner {result['winner']}, registered "
        f"{result['registered_model']} v{result['version']} as @{result['alias']}",
    )
    url = f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{result['experiment_id']}/runs/{result['parent_run_id']}"
    create_link_artifact(
        key="mlflow-training-run",
        link=url,
        link_text=f"MLflow run {result['parent_run_id']}",
        description="Parent MLflow run of this training (open with `make mlflow-ui` or `make stack`)",
    )


@task(name="publish-forecast-artifact", **IO_RETRIES)
def publish_forecast_artifact(latest: list[dict[str, Any]], target: str) -> None:
    rows = [
        {
            "series_id": f["series_id"],
            "origin_ts": f["origin_ts"],
            "step": p["step"],
            "ts": p["ts"],
            "yhat": round(p["yhat"], 2),
            "lo": round(p["lo"], 2) if p["lo"] is not None else None,
            "hi": round(p["hi"], 2) if p["hi"] is not None else None,
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
    for s in summaries:
        lines.append(
            f"| {s['source']} {s['source_ref']} | {s['rows_read']:,} | {s['new']:,} | {s['updated']:,} | "
            f"{s['unchanged']:,} | {s['quarantined_total']:,} | {s['observations_per_second']:,.0f} |"
        )
    if not summaries:
        lines.append("| (nothing new) | | | | | | |")
    create_markdown_artifact(key="ingest-summary", markdown="\n".join(lines), description="What the ingest wrote")


@task(name="list-series", **IO_RETRIES)
def series_ids_task() -> list[str]:
    from pipeline.store import Store

    store = Store(get_settings().database_url)
    try:
        return store.series_ids()
    finally:
        store.dispose()
