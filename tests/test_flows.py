"""The flows end to end under one session-scoped Prefect test harness."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from streamcast.config import Settings
from streamcast.specs import IngestSpec, TrainSpec
from streamcast.store import Store
from tests.conftest import weather_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextmanager
def _run_logs() -> Iterator[list[str]]:
    """Messages of the flow and task run loggers (what `make run` prints) while inside."""
    import logging

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    messages: list[str] = []
    handler = Collect(level=logging.INFO)
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_ingest_train_forecast_flows_write_rows_and_artifacts(
    harness: None, settings: Settings, data_dir: Path
) -> None:
    from flows.forecast import forecast_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    landing = data_dir / "landing"
    landing.mkdir()
    weather_csv(landing / "weather.csv", end="2013-12-30")
    summaries = ingest_flow(IngestSpec(source="landing", series_col="origin"))
    assert len(summaries) == 1 and summaries[0]["new"] > 10_000
    assert (landing / "done" / "weather.csv").exists()
    assert any("weather.csv" in a.data for a in _artifacts("ingest-summary"))

    results = train_flow(TrainSpec(models=["naive", "seasonal_naive"], folds=2))
    assert list(results) == ["temp"]
    result = results["temp"]
    assert result["alias"] == "champion" and result["version"] == "1"
    table = _artifacts("comparison-temp")
    assert table and "seasonal_naive" in table[0].data
    link = _artifacts("mlflow-training-run")
    assert link and result["parent_run_id"] in link[0].data

    ids = forecast_flow()
    assert len(ids) == 3
    store = Store(settings.database_url)
    latest = store.latest_forecasts()
    store.dispose()
    assert set(latest["forecast_id"]) == set(ids) and len(latest) == 72
    assert (latest["model_version"] == "1").all()
    forecast_table = _artifacts("latest-forecast-temp")
    assert forecast_table and "EWR" in forecast_table[0].data


def test_pipeline_flow_trains_only_when_due(harness: None, settings: Settings, data_dir: Path) -> None:
    from flows.pipeline_flow import pipeline_flow

    path = weather_csv(data_dir / "w.csv", end="2013-12-30")
    ingest = IngestSpec(source="csv", path=path, series_col="origin")
    train = TrainSpec(target="temp,dewp", models=["naive"], folds=2)  # two targets, each on its own
    with _run_logs() as messages:
        first = pipeline_flow(ingest, train)
    assert list(first["targets"]) == ["temp", "dewp"]
    for target, done in first["targets"].items():
        assert done["decision"]["reason"] == "no_champion" and done["training"]["alias"] == "champion"
        assert done["training"]["registered_model"] == f"streamcast-{target}"
        assert len(done["forecast_ids"]) == 3 and {f["target"] for f in done["latest"]} == {target}
    # The run's log (make run's console) shows the ingest summary and each candidate finishing.
    logged = " ".join(messages)
    rows = first["ingest"][0]["rows_read"]
    assert f"ingest csv ({path}): {rows:,} rows, {first['ingest'][0]['new']:,} new" in logged, logged[-2000:]
    assert "training: naive done: fit " in logged and ", MASE " in logged
    again = pipeline_flow(ingest, train)
    assert again["ingest"][0]["new"] == 0
    for done in again["targets"].values():
        assert done["training"] is None and len(done["latest"]) == 3


def test_train_flow_on_dask_fans_candidates_out_with_the_same_results(
    harness: None, settings: Settings, data_dir: Path
) -> None:
    """--task-runner dask: each candidate is fitted in its own task and backtested by chunks
    of series on a local Dask cluster of worker processes (the ESN fitted by parts over the
    chunks); the comparison equals the in-process run's (a Keras network's too), and the
    runs report to the flow's Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    from flows.forecast import forecast_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    path = weather_csv(data_dir / "w.csv", end="2013-12-30")
    ingest_flow(IngestSpec(source="csv", path=path, series_col="origin"))
    # A tiny SimpleRNN too: Keras in a worker process, beside the worker's own threads,
    # must give the in-process metrics (it did not while Keras seeded from global `random`).
    tiny_rnn = {"units": 8, "epochs": 6, "lookback": 24, "batch_size": 64, "patience": 3}
    small_esn = {"units": 60, "lookback": 12, "warmup": 24}  # fitted by parts all the same
    spec = TrainSpec(
        models=["naive", "seasonal_naive", "esn", "rnn"],
        folds=2,
        model_overrides={"rnn": tiny_rnn, "esn": small_esn},
    )
    local = train_flow(spec)["temp"]
    fanned = train_flow(spec, task_runner="dask", chunk_size=2)["temp"]  # EWR, JFK | LGA
    mase = {r["candidate"]: r["mase"] for r in local["comparison"]}
    assert {r["candidate"]: r["mase"] for r in fanned["comparison"]} == pytest.approx(mase, rel=1e-9)
    assert fanned["winner"] == local["winner"] and fanned["version"] == "2"
    assert not any((data_dir / "backtests").glob("*/*"))  # hand-over folders are cleaned up

    def task_runs(name: str) -> list[Any]:
        with get_client(sync_client=True) as client:
            return client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))

    chunks, parts = task_runs("backtest-chunk"), task_runs("fit-part")
    assert len(task_runs("choose-winner")) == 1
    assert len(chunks) == 4 * 2 and all(r.state is not None and r.state.is_completed() for r in chunks)
    assert len(parts) == 2 * (2 if fanned["winner"] == "esn" else 1)  # the ESN's fit (and refit) by chunks
    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list({r.flow_run_id for r in chunks + parts})))
        )
    assert len(flows) == 1  # all belong to the one fan-out run

    # Forecasting fans out too: three series in chunks of two are two tasks.
    def forecast_tasks() -> int:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="issue-forecast")))
        return sum(1 for r in runs if r.state is not None and r.state.is_completed())

    before = forecast_tasks()
    started = pd.Timestamp.now(tz="UTC")
    ids = forecast_flow(task_runner="dask", chunk_size=2)
    assert len(ids) == 3
    store = Store(settings.database_url)
    latest = store.latest_forecasts()
    mark = store.score_mark("temp")  # every chunk scored: the next forecast scores from the run's start
    store.dispose()
    assert mark is not None and mark >= started
    assert set(latest["forecast_id"]) == set(ids) and set(latest["series_id"]) == {"EWR", "JFK", "LGA"}
    assert forecast_tasks() - before == 2


def test_train_flow_refuses_an_unknown_task_runner(harness: None) -> None:
    from flows.train import train_flow

    with pytest.raises(Exception, match="task_runner"):
        train_flow(TrainSpec(models=["naive"], folds=2), task_runner="ray")  # type: ignore[arg-type]


def test_flow_scripts_take_the_fan_out_options_and_refuse_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m flows.train` / `make run`: --chunk-size and --dask-workers parsed, below 1 refused."""
    from flows.runners import DEFAULT_CHUNK_SIZE, parse_training_args

    monkeypatch.setattr("sys.argv", ["train", "--task-runner", "dask", "--dask-workers", "3", "--chunk-size", "10"])
    args = parse_training_args("test")
    assert (args.task_runner, args.dask_workers, args.chunk_size) == ("dask", 3, 10)
    monkeypatch.setattr("sys.argv", ["train"])
    args = parse_training_args("test")
    assert (args.dask_workers, args.chunk_size) == (None, DEFAULT_CHUNK_SIZE)
    for flag in ("--dask-workers", "--chunk-size"):
        monkeypatch.setattr("sys.argv", ["train", flag, "0"])
        with pytest.raises(SystemExit) as exc:
            parse_training_args("test")
        assert exc.value.code == 2
