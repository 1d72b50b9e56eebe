"""Ingest flow: bundled data, a file, or the landing folder."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.tasks import ingest_task, publish_ingest_artifact


@flow(name="ingest", log_prints=True)
def ingest_flow(
    source: str = "landing",
    path: str | None = None,
    series_col: str | None = None,
    time_col: str | None = None,
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    summaries = ingest_task(source, path, series_col, time_col, tz)
    publish_ingest_artifact(summaries)
    return summaries


if __name__ == "__main__":
    ingest_flow(source="nyc-weather")
