"""Forecasts from the champion: CLI, HTTP API on a real store, dashboard in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from streamcast import services
from streamcast.api import create_app
from streamcast.cli import app
from streamcast.config import Settings
from streamcast.store import Store
from tests.conftest import ingest_weather, weather_csv

runner = CliRunner()


@pytest.fixture
def champion(settings: Settings, data_dir: Path) -> Settings:
    """A store with nyc-weather up to 2013-12-29 and a registered (baseline) champion."""
    ingest_weather(settings, data_dir / "w.csv", end="2013-12-30")
    services.train(settings=settings, models=["naive", "seasonal_naive"], folds=2)
    return settings


def test_forecast_then_latest_moves_with_new_data(champion: Settings, data_dir: Path) -> None:
    res = runner.invoke(app, ["forecast"])
    assert res.exit_code == 0, res.output
    latest = json.loads(runner.invoke(app, ["predictions", "latest", "--format", "json"]).output)
    assert [f["series_id"] for f in latest] == ["EWR", "JFK", "LGA"]
    for f in latest:
        assert len(f["points"]) == 24
        assert f["model"]["version"] == "1" and f["model"]["name"] in ("naive", "seasonal_naive")
        assert all(p["lo"] <= p["yhat"] <= p["hi"] for p in f["points"])
        assert f["origin_ts"] == "2013-12-29T23:00:00+00:00"

    # The same forecast again (a second run, a Prefect retry) replaces the stored one.
    assert runner.invoke(app, ["forecast"]).exit_code == 0
    again = json.loads(runner.invoke(app, ["predictions", "latest", "--format", "json"]).output)
    assert [f["forecast_id"] for f in again] == [f["forecast_id"] for f in latest]
    with Store(champion.database_url) as store:
        assert store.table_counts()["forecasts"] == 3 * 24

    # New observations arrive; the next forecast starts from the new origin.
    ingest_weather(champion, data_dir / "new.csv", start="2013-12-30")
    assert runner.invoke(app, ["forecast", "--series", "JFK"]).exit_code == 0
    jfk = json.loads(runner.invoke(app, ["predictions", "latest", "--series", "JFK", "--format", "json"]).output)
    assert jfk[0]["origin_ts"] == "2013-12-30T23:00:00+00:00"
    ewr = json.loads(runner.invoke(app, ["predictions", "latest", "--series", "EWR", "--format", "json"]).output)
    assert ewr[0]["origin_ts"] == "2013-12-29T23:00:00+00:00"  # not re-forecast

    csv = runner.invoke(app, ["predictions", "latest", "--format", "csv"]).output.splitlines()
    assert csv[0].startswith("forecast_id,series_id,target") and len(csv) == 1 + 72
    table = runner.invoke(app, ["predictions", "latest", "--series", "LGA"]).output
    assert "LGA temp" in table and "yhat" in table


def test_forecast_errors_are_one_line(settings: Settings, weather_store: Settings) -> None:
    res = runner.invoke(app, ["forecast"])
    assert res.exit_code == 2 and "no champion registered" in res.output
    res = runner.invoke(app, ["predictions", "latest"])
    assert res.exit_code == 2 and "no forecasts" in res.output
    res = runner.invoke(app, ["predictions", "latest", "--series", "NOPE"])
    assert res.exit_code == 2 and "unknown series 'NOPE'" in res.output


def test_http_api_on_a_real_store(champion: Settings) -> None:
    runner.invoke(app, ["forecast"])
    client = TestClient(create_app(champion, cache_seconds=0))
    health = client.get("/health").json()
    with Store(champion.database_url) as store:  # the kept totals /health reads are every row
        counted = store.table_counts(scan=True)
    assert health == {
        "status": "ok",
        "store": "sqlite",
        "observations": counted["observations"],
        "forecasts": counted["forecasts"],
    }
    assert counted["forecasts"] == 3 * 24 and counted["observations"] > 0
    series = client.get("/series").json()
    assert [s["series_id"] for s in series] == ["EWR", "JFK", "LGA"] and "temp" in series[0]["variables"]
    one = client.get("/forecasts/latest", params={"series_id": "LGA", "target": "temp"})
    assert one.status_code == 200
    body = one.json()
    assert body["series_id"] == "LGA" and body["model"]["version"] == "1" and len(body["points"]) == 24
    assert set(body["points"][0]) == {"ts", "step", "yhat", "lo", "hi"}
    assert len(client.get("/forecasts/latest").json()) == 3
    missing = client.get("/forecasts/latest", params={"series_id": "XYZ"})
    assert missing.status_code == 404 and missing.json()["error"] == "unknown series 'XYZ'"
    assert client.get("/forecasts/latest", params={"series_id": "LGA", "target": "humid"}).status_code == 404
    assert client.get("/forecasts/latest", params={"target": ""}).status_code == 422
    assert client.get("/", params={"days": 0}).status_code == 422
    assert client.get("/scores").json() == []
    drift = client.get("/drift").json()  # trained, nothing scored yet: the threshold, no live MASE
    best = min(r["mase"] for r in client.app.state.store.latest_comparison("temp").to_dict("records"))  # type: ignore[attr-defined]
    assert drift["live_mase"] is None and not drift["drifted"]
    assert (
        drift["threshold"] == pytest.approx(champion.drift_factor * best) and drift["window"] == champion.drift_window
    )
    untrained = client.get("/drift", params={"target": "humid"})
    assert untrained.status_code == 404 and untrained.json() == {"error": "no training of 'humid' yet", "status": 404}
    spec = client.get("/openapi.json").json()
    assert "/forecasts/latest" in spec["paths"] and "LatestForecast" in spec["components"]["schemas"]
    page = client.get("/").text
    assert page.count('class="chart"') == 3 and page.count('class="forecast"') == 3
    assert "model comparison" in page and "seasonal_naive" in page


def test_api_process_does_not_import_tensorflow(champion: Settings) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from streamcast.api import create_app; from fastapi.testclient import TestClient; "
        "c = TestClient(create_app()); c.get('/'); c.get('/forecasts/latest'); "
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(settings: Settings) -> Iterator[str]:
    """The app on a real uvicorn server on 127.0.0.1; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _chromium(tmp_path: Path) -> list[str]:
    """Headless Chromium that can reach 127.0.0.1 only: every other host fails to resolve."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]


@pytest.mark.slow
def test_dashboard_draws_a_forecast_chart_per_series_in_chromium(
    champion: Settings, data_dir: Path, tmp_path: Path
) -> None:
    assert runner.invoke(app, ["forecast"]).exit_code == 0
    # A day later: the first forecast has matured (scored, overlaid on the actuals) and a new one is issued.
    later = weather_csv(data_dir / "later.csv", start="2013-12-30", end="2013-12-31")
    res = runner.invoke(
        app, ["ingest", "--source", "csv", "--path", str(later), "--series-col", "origin", "--unit", "temp=°F"]
    )
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["forecast"]).exit_code == 0
    browser = _chromium(tmp_path)
    with _serving(champion) as base:
        url = f"{base}/"
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
        shot = tmp_path / "dashboard.png"
        subprocess.run(
            [*browser, f"--screenshot={shot}", "--window-size=1200,1400", url], capture_output=True, timeout=90
        )
    for sid in ("EWR", "JFK", "LGA"):
        chart = dom.split(f'data-series="{sid}"', 1)
        assert len(chart) == 2, f"no chart for {sid}"
        svg = chart[1].split("</svg>", 1)[0]
        assert 'class="forecast"' in svg and 'class="actual"' in svg and 'class="interval"' in svg
        assert svg.count('class="past"') == 1  # the forecast issued a day earlier, against what arrived
        assert "°F" in svg  # the unit on the y axis
        ticks = [float(t.replace(",", "")) for t in re.findall(r'text-anchor="end">([-\d.,]+)</text>', svg)]
        steps = {round(b - a, 6) for a, b in itertools.pairwise(ticks)}
        assert len(ticks) >= 3 and len(steps) == 1 and steps.pop() in {1, 2, 5, 10, 20, 50}  # round tick values
    assert "<h1>streamcast — temp (°F)</h1>" in dom
    live = dom.split("live scores", 1)[1].split("</table>", 1)[0]
    assert live.count("<tr>") == 2 and ("<td>naive</td>" in live or "<td>seasonal_naive</td>" in live)
    assert "72" in live  # 3 series x 24 matured points
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    from PIL import Image

    pixels = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20) or []
    blue = sum(n for n, (r, g, b) in pixels if b > 150 and r < 100)  # the forecast lines are blue
    assert blue > 500


@pytest.mark.slow
def test_swagger_ui_and_redoc_render_offline_in_chromium(settings: Settings, store: Store, tmp_path: Path) -> None:
    """/docs and /redoc load their scripts from the API itself: with every host but
    127.0.0.1 unreachable, Chromium still renders every operation."""
    browser = _chromium(tmp_path)
    with _serving(settings) as base:
        pages = {
            page: subprocess.run(
                [*browser, "--virtual-time-budget=10000", "--dump-dom", f"{base}/{page}"],
                capture_output=True,
                text=True,
                timeout=90,
            ).stdout
            for page in ("docs", "redoc")
        }
    for path in ("/forecasts/latest", "/series", "/scores", "/health"):
        assert f'data-path="{path}"' in pages["docs"], f"Swagger UI did not render {path}"
    assert "/forecasts/latest" in pages["redoc"] and "LatestForecast" in pages["redoc"]
    assert "cdn" not in pages["docs"].lower() and "cdn" not in pages["redoc"].lower()


def test_every_error_has_one_json_shape(settings: Settings, store: Store) -> None:
    client = TestClient(create_app(settings))
    errors = {
        "unknown series": client.get("/forecasts/latest", params={"series_id": "XYZ"}),
        "unknown route": client.get("/no/such/route"),
        "wrong method": client.post("/health"),
        "invalid parameter": client.get("/forecasts/latest", params={"target": ""}),
        "invalid dashboard window": client.get("/", params={"days": 0}),
    }
    for what, res in errors.items():
        body = res.json()
        assert set(body) == {"error", "status"} and body["status"] == res.status_code >= 400, (what, body)
        assert isinstance(body["error"], str) and "\n" not in body["error"] and body["error"], (what, body)
    assert errors["unknown route"].status_code == 404 and errors["wrong method"].status_code == 405
    assert errors["invalid parameter"].json()["error"].startswith("target: ")
    # The schema describes those bodies: the 404 and 422 answers of every operation are ErrorBody.
    spec = client.get("/openapi.json").json()
    latest = spec["paths"]["/forecasts/latest"]["get"]["responses"]
    assert latest["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_dashboard_pages_and_searches_many_series_at_a_fixed_cost(settings: Settings, store: Store) -> None:
    """30 series: a page charts `per_page` of them with previous/next links, `q` finds series
    by id, and the number of queries a page makes does not grow with the series on it."""
    import sqlalchemy as sa

    ts = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    rows = [(f"meter-{k:02d}", t, float(k + i % 24)) for k in range(30) for i, t in enumerate(ts)]
    wide = pd.DataFrame(rows, columns=["meter", "ts", "load"])
    csv = settings.data_dir / "meters.csv"
    wide.to_csv(csv, index=False)
    services.ingest(settings=settings, source="csv", path=csv, series_col="meter")
    origin = ts[-1]
    points = pd.DataFrame(
        [
            {
                "forecast_id": f"f-{sid}-{o:%H}",
                "series_id": sid,
                "target": "load",
                "issued_at": o,
                "origin_ts": o,
                "step": h,
                "ts": o + pd.Timedelta(hours=h),
                "yhat": 1.0,
                "lo": 0.0,
                "hi": 2.0,
                "model_name": "naive",
                "model_version": "1",
                "run_id": "r",
            }
            for sid in wide["meter"].unique()
            for o in (origin - pd.Timedelta(hours=12), origin)
            for h in (1, 2)
        ]
    )
    store.write_forecasts(points)
    client = TestClient(create_app(settings, cache_seconds=0))

    page1 = client.get("/", params={"target": "load"}).text
    assert page1.count('<svg class="chart"') == 12 and 'data-series="meter-00"' in page1
    assert "series 1&ndash;12 of 30" in page1 and "page=2" in page1 and "previous" not in page1
    page3 = client.get("/", params={"target": "load", "page": 3}).text
    assert page3.count('<svg class="chart"') == 6 and 'data-series="meter-29"' in page3 and "next" not in page3
    found = client.get("/", params={"target": "load", "q": "ER-1"}).text  # case-insensitive substring
    assert found.count('<svg class="chart"') == 10 and "of 10 matching" in found
    assert client.get("/", params={"target": "load", "q": "<nope>"}).text.count("<svg") == 0
    assert "&lt;nope&gt;" in client.get("/", params={"target": "load", "q": "<nope>"}).text  # data, not markup

    engine = client.app.state.store._engine  # type: ignore[attr-defined]
    counts = []
    for per_page in (2, 30):
        statements: list[str] = []

        def record(*args: Any, into: list[str] = statements) -> None:
            into.append(args[2])

        sa.event.listen(engine, "before_cursor_execute", record)
        body = client.get("/", params={"target": "load", "per_page": per_page}).text
        sa.event.remove(engine, "before_cursor_execute", record)
        counts.append(len(statements))
        assert body.count('class="past"') == per_page  # the earlier forecast, overlaid per series
    assert counts[0] == counts[1], counts


def test_forecast_of_many_series_prints_an_overview_not_a_table_each(settings: Settings, data_dir: Path) -> None:
    """25 meters: the CLI shows one row for each of the first 20 and says where the other 5
    are; csv has every point of every series."""
    import numpy as np

    ts = pd.date_range("2024-01-01", periods=24 * 28, freq="h", tz="UTC")
    rng = np.random.default_rng(1)
    frame = pd.concat(
        pd.DataFrame(
            {
                "meter": f"m{k:02d}",
                "ts": ts,
                "load": 10 + k + np.sin(np.arange(len(ts)) / 4) + rng.normal(0, 0.1, len(ts)),
            }
        )
        for k in range(25)
    )
    frame.to_csv(data_dir / "meters.csv", index=False)
    res = runner.invoke(
        app, ["ingest", "--source", "csv", "--path", str(data_dir / "meters.csv"), "--series-col", "meter"]
    )
    assert res.exit_code == 0, res.output
    services.train(settings=settings, target="load", models=["naive", "seasonal_naive"], folds=5)
    out = runner.invoke(app, ["forecast", "--target", "load"], terminal_width=200)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "issued 25 forecast(s)" in text and "... and 5 more series" in text
    shown = {sid for sid in re.findall(r"\bm\d\d\b", out.output)}
    assert shown == {f"m{k:02d}" for k in range(20)}
    assert "ts (UTC)" not in out.output  # no per-step table
    csv = runner.invoke(app, ["predictions", "latest", "--target", "load", "--format", "csv"])
    points = pd.read_csv(io.StringIO(csv.output))
    assert len(points) == 25 * 24 and points["series_id"].nunique() == 25
