"""The HTTP API against its own OpenAPI schema (schemathesis): for generated requests, no
5xx, and every response matches what the schema declares."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from streamcast import services
from streamcast.api import create_app
from streamcast.config import Settings
from streamcast.store import Store
from tests.conftest import two_step_forecast


def _app_on_a_store(tmp_path: Path) -> Any:
    """The API on a small real store: two series (one id that looks like markup), a forecast."""
    cfg = Settings(data_dir=tmp_path)
    csv = tmp_path / "obs.csv"
    csv.write_text("ts,station,temp\n2024-01-01T00:00Z,A,1\n2024-01-01T01:00Z,A,2\n2024-01-01T00:00Z,[b],3\n")
    services.ingest(settings=cfg, source="csv", path=csv, series_col="station")
    points = two_step_forecast("naive", "1")
    with Store(cfg.database_url) as store:
        store.write_forecasts(points)
    return create_app(cfg, cache_seconds=0)


# Loaded when the module is collected (schemathesis parametrizes from the schema then).
_DATA = tempfile.TemporaryDirectory(prefix="streamcast-api-schema-")
schema = schemathesis.openapi.from_asgi("/openapi.json", _app_on_a_store(Path(_DATA.name)))


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case) -> None:
    case.call_and_validate()
