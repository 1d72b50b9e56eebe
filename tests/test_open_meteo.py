"""Open-Meteo source against a local server that answers in Open-Meteo's JSON format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.errors import InputError
from streamcast.sources.open_meteo import OpenMeteoClient, poll_batches
from streamcast.store import Store


class FakeOpenMeteo:
    """Serves /v1/forecast and /v1/archive; can fail the next N requests with 503."""

    def __init__(self) -> None:
        self.fail_next = 0
        self.requests: list[dict[str, Any]] = []
        self.end = pd.Timestamp("2024-03-01T12:00Z")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                outer.requests.append({"path": url.path, **q})
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                names = q["hourly"].split(",")
                if "bogus" in names:
                    body = {
                        "error": True,
                        "reason": "Cannot initialize WeatherVariable from invalid String value bogus",
                    }
                    self._json(400, body)
                    return
                times = pd.date_range(end=outer.end + pd.Timedelta(hours=3), periods=48, freq="h")
                hourly: dict[str, Any] = {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in times]}
                for i, n in enumerate(names):
                    hourly[n] = [round(5 + i + 0.1 * k, 2) for k in range(len(times))]
                self._json(
                    200,
                    {
                        "latitude": float(q["latitude"]),
                        "longitude": float(q["longitude"]),
                        "timezone": "UTC",
                        "hourly_units": {"time": "iso8601"},
                        "hourly": hourly,
                    },
                )

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake() -> Iterator[FakeOpenMeteo]:
    f = FakeOpenMeteo()
    t = threading.Thread(target=f.server.serve_forever, daemon=True)
    t.start()
    yield f
    f.server.shutdown()


def test_retries_then_reads_hourly_values(fake: FakeOpenMeteo) -> None:
    fake.fail_next = 2
    client = OpenMeteoClient(fake.url, fake.url, retries=3, backoff=0.01)
    frame = client.hourly(40.7, -74.0, ["temperature_2m", "relative_humidity_2m"])
    assert len(fake.requests) == 3 and fake.requests[-1]["timezone"] == "UTC"
    assert list(frame.columns) == ["temperature_2m", "relative_humidity_2m"] and len(frame) == 48
    assert str(frame.index.tz) == "UTC"
    fake.fail_next = 10
    with pytest.raises(InputError, match="unavailable after 2 attempts: HTTP 503"):
        OpenMeteoClient(fake.url, fake.url, retries=1, backoff=0.01).hourly(1, 2, ["temperature_2m"])
    fake.fail_next = 0
    with pytest.raises(InputError, match="invalid String value bogus"):
        client.hourly(1, 2, ["bogus"])


def test_polling_yields_only_past_and_new_hours(fake: FakeOpenMeteo) -> None:
    client = OpenMeteoClient(fake.url, fake.url, backoff=0.01)
    clock = iter([fake.end, fake.end + pd.Timedelta(hours=2)])
    batches = list(
        poll_batches(
            client, 40.7, -74.0, ["temperature_2m"], "nyc", poll_seconds=0, max_polls=2, now=lambda: next(clock)
        )
    )
    times = [b.frame["ts"].iloc[0] for b in batches]
    assert times == sorted(times) and len(set(times)) == len(times)  # nothing twice
    assert times[-1] == fake.end + pd.Timedelta(hours=2)  # the second poll added the two new hours only
    assert len(times) == 48 - 3 + 2


def test_cli_ingest_open_meteo(fake: FakeOpenMeteo, data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCAST_OPEN_METEO_URL", fake.url)
    monkeypatch.setenv("STREAMCAST_OPEN_METEO_ARCHIVE_URL", fake.url)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "ingest",
            "--source",
            "open-meteo",
            "--latitude",
            "40.7",
            "--longitude",
            "-74",
            "--variables",
            "temperature_2m,wind_direction_10m",
            "--start",
            "2024-02-01",
            "--end",
            "2024-03-01",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert fake.requests[-1]["path"] == "/v1/archive" and fake.requests[-1]["start_date"] == "2024-02-01"
    summary = json.loads(res.output)[0]
    assert summary["new"] == 2 * 48
    store = Store(f"sqlite:///{data_dir / 'streamcast.db'}")
    assert store.series_ids() == ["40.70,-74.00"]
    assert store.units()["temperature_2m"] == "°C" and store.units()["wind_direction_10m"] == "°"
    store.dispose()
    res = runner.invoke(app, ["ingest", "--source", "open-meteo", "--latitude", "40.7"])
    assert res.exit_code == 2 and "--longitude" in res.output
