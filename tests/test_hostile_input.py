"""Hostile input through the CLI, on both backends: nothing corrupted, nothing lost,
one-line errors, and user data never read as markup."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.store import Store
from streamcast.validation import parse_wide

runner = CliRunner()


def _ingest_csv(path: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["ingest", "--source", "csv", "--path", str(path), "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)[0]


def _quarantine(store: Store) -> pd.DataFrame:
    return store.quarantine_rows()


def test_timestamps_outside_the_supported_range_are_quarantined_not_wrapped(any_store: Store, data_dir: Path) -> None:
    csv = data_dir / "far.csv"
    csv.write_text(
        "ts,temp\n9999-12-31T23:00:00Z,1\n1500-01-01T00:00:00Z,2\n5000-01-01T00:00:00+02:00,3\n2024-01-01T00:00:00Z,4\n"
    )
    summary = _ingest_csv(csv)
    assert summary["quarantined"] == {"bad_timestamp": 3}
    obs = any_store.load_observations()
    assert obs["ts"].tolist() == [pd.Timestamp("2024-01-01T00:00Z")]
    assert obs["value"].tolist() == [4.0]


def test_spring_forward_and_autumn_back_local_times_have_their_own_reasons() -> None:
    frame = pd.DataFrame({"ts": ["2024-03-10 02:30", "2024-11-03 01:30", "2024-11-03 03:00"], "temp": ["1", "2", "3"]})
    parsed = parse_wide(frame, "f", tz="America/New_York")
    assert parsed.quarantine_by_reason == {"ambiguous_local_time": 1, "nonexistent_local_time": 1}
    assert parsed.observations["value"].tolist() == [3.0]


def test_empty_and_nan_cells_are_counted_as_missing_per_variable(store: Store, data_dir: Path) -> None:
    csv = data_dir / "gaps.csv"
    csv.write_text("ts,temp,humid\n2024-01-01T00:00Z,1,\n2024-01-01T01:00Z,NaN,50\n2024-01-01T02:00Z,,\n")
    summary = _ingest_csv(csv)
    assert summary["observations_read"] == 2
    assert summary["missing"] == {"temp": 2, "humid": 2}
    assert summary["quarantined"] == {}


def test_a_repeated_column_name_refuses_the_file_naming_it(store: Store, data_dir: Path) -> None:
    csv = data_dir / "twice.csv"
    csv.write_text("ts,temp,temp\n2024-01-01T00:00Z,1,2\n")
    res = runner.invoke(app, ["ingest", "--source", "csv", "--path", str(csv)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'temp' appears more than once" in lines[0]
    assert store.table_counts()["observations"] == 0


def test_names_no_backend_can_store_are_quarantined_and_the_rest_kept(any_store: Store, data_dir: Path) -> None:
    long_id, long_var = "s" * 129, "v" * 129
    frame = pd.DataFrame(
        {
            "ts": ["2024-01-01T00:00Z"] * 3,
            "station": ["good", long_id, "nul\x00id"],
            "temp": [1.0, 2.0, 3.0],
            long_var: [4.0, 5.0, 6.0],
            "bad\x00name": [7.0, 8.0, 9.0],
        }
    )
    path = data_dir / "names.parquet"
    frame.to_parquet(path)
    res = runner.invoke(
        app, ["ingest", "--source", "parquet", "--path", str(path), "--series-col", "station", "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)[0]
    assert summary["quarantined"] == {"bad_series_id": 2, "bad_variable_name": 2}
    obs = any_store.load_observations()
    assert obs[["series_id", "variable", "value"]].values.tolist() == [["good", "temp", 1.0]]
    q = _quarantine(any_store)
    assert set(q["reason"]) == {"bad_series_id", "bad_variable_name"}
    assert q["series_id"].str.len().max() <= 128
    assert not q["series_id"].fillna("").str.contains("\x00", regex=False).any()
    assert q.loc[q.reason == "bad_series_id", "detail"].str.contains("NUL|longer than 128").all()


def test_markup_in_user_data_is_printed_as_text(store: Store, data_dir: Path) -> None:
    csv = data_dir / "markup.csv"
    csv.write_text("ts,station,temp\n2024-01-01T00:00Z,[/bold],1\n2024-01-01T01:00Z,[red]x[/red],2\n")
    res = runner.invoke(app, ["ingest", "--source", "csv", "--path", str(csv), "--series-col", "station"])
    assert res.exit_code == 0, res.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "[/bold]" in status.output and "[red]x[/red]" in status.output

    header = data_dir / "header.csv"
    header.write_text("a,[/b]\n1,2\n")
    res = runner.invoke(app, ["ingest", "--source", "csv", "--path", str(header)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "[/b]" in lines[0] and "no time column" in lines[0]


def test_a_constant_series_gets_a_fallback_scale_and_never_a_nan_champion(settings, data_dir: Path) -> None:
    import numpy as np

    from streamcast import services

    ts = pd.date_range("2024-01-01", periods=24 * 45, freq="h", tz="UTC")
    wave = 10 + 5 * np.sin(2 * np.pi * np.arange(len(ts)) / 24) + np.random.default_rng(0).normal(0, 1, len(ts))
    frame = pd.DataFrame(
        {
            "ts": np.concatenate([ts, ts]),
            "station": ["flat"] * len(ts) + ["wave"] * len(ts),
            "temp": np.concatenate([np.full(len(ts), 5.0), wave]),
        }
    )
    frame.to_csv(data_dir / "flat.csv", index=False)
    services.ingest(settings=settings, source="csv", path=data_dir / "flat.csv", series_col="station")
    outcome = services.train(settings=settings, models=["naive", "seasonal_naive"], folds=2)
    assert outcome.result.scale_fallbacks == {"flat": "unit"}
    assert np.isfinite(outcome.comparison["mase"]).all()
    assert outcome.registry.alias == "champion"
    per_series = outcome.result.metrics_by_step().groupby(["candidate", "series_id"])["mase"].mean()
    assert per_series.loc[("naive", "flat")] == 0.0  # a constant is forecast exactly: MASE 0, not NaN


def test_a_winner_without_a_finite_mase_is_refused() -> None:
    import numpy as np

    from streamcast.backtest import BacktestConfig, BacktestResult, CandidateResult
    from streamcast.errors import InputError

    t = pd.Timestamp("2024-01-01T00:00Z")
    points = pd.DataFrame(
        {"series_id": ["a"], "origin_ts": [t], "step": [1], "ts": [t], "yhat": [1.0], "lo": [0.0], "hi": [2.0]}
    )
    result = BacktestResult(config=BacktestConfig(), origins=[t], train_end=t, val_start=t, scales={"a": np.inf})
    result.candidates["naive"] = CandidateResult("naive", None, points.assign(actual=3.0), None, 0.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no candidate has a finite MASE"):
        _ = result.winner


def test_concurrent_ingests_of_one_file_count_every_observation_once(any_store: Store, data_dir: Path) -> None:
    import threading

    import numpy as np

    from streamcast import services
    from streamcast.config import Settings

    ts = pd.date_range("2024-01-01", periods=2_000, freq="h", tz="UTC")
    frame = pd.DataFrame({"ts": np.tile(ts, 5), "station": np.repeat([f"s{i}" for i in range(5)], len(ts))})
    frame["temp"] = np.arange(len(frame)) % 40
    frame["humid"] = np.arange(len(frame)) % 90
    frame.to_csv(data_dir / "same.csv", index=False)
    settings = Settings(data_dir=data_dir, db_url=any_store.url)
    start = threading.Barrier(2)
    reports = []

    def ingest() -> None:
        start.wait()
        path = data_dir / "same.csv"
        reports.append(services.ingest(settings=settings, source="csv", path=path, series_col="station"))

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = [(r.summaries[0].new, r.summaries[0].updated, r.summaries[0].unchanged) for r in reports]
    assert sum(c[0] for c in counts) == 2 * len(frame)  # each observation is new exactly once
    assert all(c[1] == 0 for c in counts)
    assert sorted(c[2] for c in counts) == sorted(2 * len(frame) - c[0] for c in counts)
    status = runner.invoke(app, ["status", "--json"])
    assert sum(r["revised"] for r in json.loads(status.output)["series"]) == 0


@pytest.mark.parametrize(
    ("env", "command", "code", "message"),
    [
        (
            {"STREAMCAST_DB_URL": "postgresql+psycopg://postgres@127.0.0.1:9/none"},
            ["status"],
            3,
            "cannot reach the store",
        ),
        (
            {"STREAMCAST_DB_URL": "postgresql+psycopg://postgres@127.0.0.1:9/none"},
            ["ingest"],
            3,
            "cannot reach the store",
        ),
        ({"STREAMCAST_DB_URL": "not a url"}, ["status"], 2, "not a database URL"),
        ({"STREAMCAST_DB_URL": "mysql://u@h/db"}, ["status"], 2, "SQLite or PostgreSQL"),
        (
            {},
            ["stream", "--source", "redis", "--redis-url", "redis://127.0.0.1:9/0", "--broker-retry-seconds", "0.5"],
            3,
            "cannot reach the Redis broker",
        ),
        ({}, ["stream", "--source", "redis", "--redis-url", "http://nowhere"], 2, "not a Redis URL"),
    ],
)
def test_unreachable_or_malformed_services_are_one_line_with_a_documented_code(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, env: dict, command: list[str], code: int, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    res = runner.invoke(app, command)
    assert res.exit_code == code, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in res.output
