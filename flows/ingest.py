"""Ingest flow: bundled data, a file, the landing folder or Open-Meteo."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.tasks import ingest_task, publish_ingest_artifact
from streamcast.specs import IngestSpec


@flow(name="ingest", log_prints=True)
def ingest_flow(spec: IngestSpec = IngestSpec(source="landing")) -> list[dict[str, Any]]:
    summaries = ingest_task(spec)
    publish_ingest_artifact(summaries)
    return summaries


if __name__ == "__main__":
    ingest_flow(IngestSpec(source="nyc-weather"))
