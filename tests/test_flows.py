"""The flows end to end under one session-scoped Prefect test harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.store import Store
from tests.conftest import weather_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
    summaries = ingest_flow(source="landing", series_col="origin")
    assert len(summaries) == 1 and summaries[0]["new"] > 10_000
    assert (landing / "done" / "weather.csv").exists()
    assert any("weather.csv" in a.data for a in _artifacts("ingest-summary"))

    result = train_flow(models=["naive", "seasonal_naive"], folds=2)
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
    first = pipeline_flow(source="csv", path=str(path), series_col="origin", models=["naive"], folds=2)
    assert first["decision"]["reason"] == "no_champion" and first["training"]["alias"] == "champion"
    assert len(first["forecast_ids"]) == 3
    again = pipeline_flow(source="csv", path=str(path), series_col="origin", models=["naive"], folds=2)
    assert again["training"] is None and again["ingest"][0]["new"] == 0
    assert len(again["latest"]) == 3
