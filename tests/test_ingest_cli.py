"""Ingestion through the CLI, as a user runs it: bundled data, files, landing folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.store import Store
from tests.test_store import _drop_column

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _status_json() -> dict:
    res = _invoke("status", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.mark.slow
def test_nyc_weather_twice_is_idempotent_and_a_change_is_one_revision(any_store: Store, data_dir: Path) -> None:
    first = _invoke("ingest", "--source", "nyc-weather", "--json")
    assert first.exit_code == 0, first.output
    units = any_store.units()
    assert units["temp"] == "°F" and units["humid"] == "%" and units["wind_speed"] == "mph"
    s1 = json.loads(first.output)[0]
    assert s1["new"] > 200_000 and s1["updated"] == 0
    assert s1["quarantined"] == {"out_of_bounds": 1}  # the famous 1048 mph wind at EWR
    status1 = _status_json()
    assert {r["series_id"] for r in status1["series"]} == {"EWR", "JFK", "LGA"}

    second = json.loads(_invoke("ingest", "--source", "nyc-weather", "--json").output)[0]
    assert (second["new"], second["updated"], second["unchanged"]) == (0, 0, s1["new"])
    status2 = _status_json()
    assert status2["series"] == status1["series"]
    assert status2["quarantine"] == status1["quarantine"]
    assert status2["tables"]["observations"] == status1["tables"]["observations"]

    # A corrected value for one existing key comes back as exactly one revision.
    csv = data_dir / "fix.csv"
    csv.write_text("origin,time_hour,temp\nEWR,2013-01-01T06:00:00Z,99.5\n")
    fix = json.loads(
        _invoke("ingest", "--source", "csv", "--path", str(csv), "--series-col", "origin", "--json").output
    )[0]
    assert (fix["new"], fix["updated"], fix["unchanged"]) == (0, 1, 0)
    obs = any_store.load_observations(series_ids=["EWR"], variables=["temp"], end=pd.Timestamp("2013-01-01T06:00Z"))
    assert obs["value"].tolist() == [99.5]
    revised = {(r["series_id"], r["variable"]): r["revised"] for r in _status_json()["series"]}
    assert revised[("EWR", "temp")] == 1 and sum(revised.values()) == 1


def test_csv_without_time_column_exits_2_and_writes_nothing(store: Store, data_dir: Path) -> None:
    good = data_dir / "good.csv"
    good.write_text("ts,temp\n2024-01-01T00:00Z,1\n")
    assert _invoke("ingest", "--source", "csv", "--path", str(good)).exit_code == 0
    before = store.table_counts()

    bad = data_dir / "bad.csv"
    bad.write_text("when,temp\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,2\n")
    res = _invoke("ingest", "--source", "csv", "--path", str(bad))
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.csv" in lines[0] and "no time column" in lines[0]
    assert store.table_counts() == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty"), (b"\xff\xfe\x00garbage\x00", "unreadable"), (b"ts,temp\n", "no data rows")],
)
def test_unusable_files_exit_2_with_one_line(store: Store, data_dir: Path, content: bytes, problem: str) -> None:
    path = data_dir / "x.csv"
    path.write_bytes(content)
    res = _invoke("ingest", "--source", "csv", "--path", str(path))
    assert res.exit_code == 2, res.output
    assert problem in res.output and "x.csv" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert store.table_counts()["ingest_batches"] == 0


def test_missing_file_and_bad_timezone(data_dir: Path) -> None:
    res = _invoke("ingest", "--source", "csv", "--path", str(data_dir / "nope.csv"))
    assert res.exit_code == 2 and "file not found" in res.output
    f = data_dir / "a.csv"
    f.write_text("ts,temp\n2024-01-01 00:00,1\n")
    res = _invoke("ingest", "--source", "csv", "--path", str(f), "--tz", "Mars/Olympus")
    assert res.exit_code == 2 and "unknown time zone" in res.output


def test_csv_with_bad_rows_keeps_good_ones(store: Store, data_dir: Path) -> None:
    path = data_dir / "mixed.csv"
    path.write_text(
        "site,timestamp,temp,humid\n"
        "A,2024-01-01T00:00Z,10,50\n"
        "A,yesterday,11,51\n"
        "B,2024-01-01T00:00Z,12,n/a\n"
        "B,2024-01-01T01:00Z,warm,52\n"
        "B,2024-01-01T02:00Z,13,140\n"
    )
    res = _invoke("ingest", "--source", "csv", "--path", str(path), "--series-col", "site", "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)[0]
    assert s["quarantined"] == {"bad_timestamp": 1, "non_numeric": 1, "out_of_bounds": 1}
    assert s["new"] == 5  # A: temp+humid; B: temp@00, humid@01, temp@02
    q = store.quarantine_rows()
    assert set(q["reason"]) == {"bad_timestamp", "non_numeric", "out_of_bounds"}
    assert q.loc[q.reason == "non_numeric", "value_raw"].item() == "warm"
    human = _invoke("ingest", "--source", "csv", "--path", str(path), "--series-col", "site")
    assert "quarantined: bad_timestamp" in human.output and "rows/s" in human.output


def test_parquet_with_naive_times_and_tz(store: Store, data_dir: Path) -> None:
    path = data_dir / "obs.parquet"
    pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=3, freq="h"), "temp": [1.0, 2.0, 3.0]}).to_parquet(path)
    res = _invoke("ingest", "--source", "parquet", "--path", str(path), "--series-id", "home", "--tz", "Europe/Paris")
    assert res.exit_code == 0, res.output
    obs = store.load_observations()
    assert obs["series_id"].unique().tolist() == ["home"]
    assert obs["ts"].iloc[0] == pd.Timestamp("2023-12-31T23:00Z")


def test_landing_folder_ingests_each_file_once(store: Store, data_dir: Path) -> None:
    landing = data_dir / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text("ts,temp\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,2\n")
    (landing / "broken.csv").write_text("when,temp\n2024-01-01T00:00Z,1\n")
    res = _invoke("ingest", "--source", "landing")
    assert res.exit_code == 0, res.output
    assert (landing / "done" / "a.csv").exists() and not (landing / "a.csv").exists()
    assert (landing / "failed" / "broken.csv").exists()
    assert "no time column" in (landing / "failed" / "broken.csv.error.txt").read_text()
    assert store.table_counts()["observations"] == 2

    # The same content dropped again (any name) is recognised by its hash and skipped.
    (landing / "a-copy.csv").write_text("ts,temp\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,2\n")
    res = _invoke("ingest", "--source", "landing")
    assert "already ingested" in res.output
    assert store.table_counts()["ingest_batches"] == 1
    assert (landing / "done" / "a-copy.csv").exists()
    assert "no new files" in _invoke("ingest", "--source", "landing").output


def test_light_commands_do_not_import_tensorflow() -> None:
    code = "import sys, streamcast.cli, streamcast.store, streamcast.ingestion; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_store_that_cannot_be_upgraded_is_one_line_and_exit_1(data_dir: Path) -> None:
    """Through the console script, as users run it: no traceback."""
    url = f"sqlite:///{data_dir / 'streamcast.db'}"
    Store(url).dispose()
    _drop_column(url, "scores", "model_name")
    code = "from streamcast.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "db", "upgrade"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: scores.model_name is missing"), out.stderr


def test_a_csv_ingested_without_its_series_column_says_which_column_it_is(store: Store, data_dir: Path) -> None:
    path = data_dir / "stations.csv"
    lines = ["station,note,ts,temp"] + [
        f"{sid},ok,2024-01-01T{h:02d}:00Z,{10 + h + k}" for h in range(6) for k, sid in enumerate(["[b]north", "south"])
    ]
    path.write_text("\n".join(lines) + "\n")
    res = _invoke("ingest", "--source", "csv", "--path", str(path), "--json")
    assert res.exit_code == 0, res.output
    hints = json.loads(res.output)[0]["hints"]
    # "note" repeats within a timestamp, so only "station" tells the colliding rows apart.
    assert hints == [
        "column 'station' looks like a series column (2 distinct values sharing timestamps), "
        "but every row went to one series; ingest again with --series-col station"
    ]
    human = _invoke("ingest", "--source", "csv", "--path", str(path))
    assert "--series-col station" in " ".join(human.output.split())
    # With the series column named, or with one series per file, nothing to hint.
    named = _invoke("ingest", "--source", "csv", "--path", str(path), "--series-col", "station", "--json")
    assert json.loads(named.output)[0]["hints"] == []
    one = data_dir / "one.csv"
    one.write_text("ts,site,temp\n2024-01-01T00:00Z,A,1\n2024-01-01T01:00Z,A,2\n")
    assert json.loads(_invoke("ingest", "--source", "csv", "--path", str(one), "--json").output)[0]["hints"] == []


def test_units_are_recorded_on_ingest_and_a_bad_one_is_one_line(any_store: Store, data_dir: Path) -> None:
    csv = data_dir / "meters.csv"
    csv.write_text("ts,meter,load,temp\n2024-01-01T00:00Z,m1,5,1\n2024-01-01T01:00Z,m1,6,2\n")
    bad = _invoke("ingest", "--source", "csv", "--path", str(csv), "--series-col", "meter", "--unit", "load")
    assert bad.exit_code == 2 and "expected variable=unit, e.g. temp=°C" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    missing = _invoke("ingest", "--source", "csv", "--path", str(data_dir / "nope.csv"), "--unit", "load=kW")
    assert missing.exit_code == 2 and any_store.units() == {}  # an unusable input records nothing
    ok = _invoke(
        "ingest",
        "--source",
        "csv",
        "--path",
        str(csv),
        "--series-col",
        "meter",
        "--unit",
        "load=kW",
        "--unit",
        "temp=°C",
    )
    assert ok.exit_code == 0, ok.output
    assert any_store.units() == {"load": "kW", "temp": "°C"}
    # A later ingest corrects a unit; the others stay.
    assert (
        _invoke("ingest", "--source", "csv", "--path", str(csv), "--series-col", "meter", "--unit", "load=MW").exit_code
        == 0
    )
    assert any_store.units() == {"load": "MW", "temp": "°C"}


def test_a_csv_read_in_chunks_parses_exactly_as_read_whole(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV is read a chunk of rows at a time into categorical columns; with chunks of two
    rows, cells that are text in one chunk and numbers in another, a column empty in a
    whole chunk, a late bad time and blanks around ids give the same observations,
    quarantine records (with their row numbers) and counts as one chunk."""
    from streamcast.config import Settings
    from streamcast.sources import files
    from streamcast.validation import parse_wide

    path = data_dir / "messy.csv"
    path.write_text(
        "site,timestamp,temp,humid,note\n"
        "A,2024-01-01T00:00Z,10,,x\n"
        " A ,2024-01-01T01:00Z,11,,\n"
        "B,2024-01-01T00:00Z,warm,52,y\n"
        "B,2024-01-01T01:00Z,13,140,\n"
        "B,yesterday,14,53,z\n"
        "A,2024-01-01T02:00Z,12.5,54,\n"
        "A,2024-01-01T02:00Z,12.5,54,\n"
    )
    whole = files.read_wide_file(path)
    monkeypatch.setattr(files, "CSV_CHUNK_ROWS", 2)
    chunked = files.read_wide_file(path)
    assert isinstance(chunked["temp"].dtype, pd.CategoricalDtype)
    assert chunked.astype(object).fillna("").values.tolist() == whole.astype(object).fillna("").values.tolist()
    bounds = Settings().bounds
    a, b = (
        parse_wide(f, "messy.csv", time_col="timestamp", series_col="site", bounds=bounds) for f in (whole, chunked)
    )
    pd.testing.assert_frame_equal(a.observations, b.observations)
    assert a.observations["series_id"].unique().tolist() == ["A", "B"]
    assert [(q["row_number"], q["reason"]) for q in a.quarantine] == [
        (q["row_number"], q["reason"]) for q in b.quarantine
    ]
    assert {q["reason"] for q in b.quarantine} == {"bad_timestamp", "non_numeric", "out_of_bounds"}
    assert (a.rows_read, a.duplicates_dropped, a.missing, a.ignored_columns) == (
        b.rows_read,
        b.duplicates_dropped,
        b.missing,
        b.ignored_columns,
    )


def test_status_of_many_series_is_per_variable_and_the_series_furthest_behind(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past OVERVIEW_ROWS series, `status` does not print a row per series and variable (a
    thousand series were 2,000 rows and over a second of drawing): a row per variable with
    how many series are behind its newest observation, then the rows furthest behind;
    `--json` still lists every one."""
    from streamcast.cli.render import OVERVIEW_ROWS

    n = OVERVIEW_ROWS + 5
    names = [f"S{i:02d}" for i in range(n - 1)] + ["late[/bold]"]
    rows = ["station,time,temp,humid"]
    for i, name in enumerate(names):
        for h in range(12):
            if name == "late[/bold]" and h >= 3:
                break  # temp and humid both stop at 02:00
            humid = "" if (i == 4 and h >= 6) else "50"  # S04's humid stops at 05:00
            rows.append(f"{name},2024-01-01T{h:02d}:00Z,{10 + h},{humid}")
    path = data_dir / "panel.csv"
    path.write_text("\n".join(rows) + "\n")
    assert _invoke("ingest", "--source", "csv", "--path", str(path), "--series-col", "station").exit_code == 0

    from streamcast.cli.app import console

    monkeypatch.setattr(console, "_width", 200)  # a row a line
    res = _invoke("status")
    assert res.exit_code == 0, res.output
    tables = res.output.split("observations: the 20 series and variables furthest behind")
    assert len(tables) == 2 and "observations by variable" in tables[0]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in res.output.splitlines() if "│" in line]
    by_variable = {c[0]: c[1:] for c in cells if len(c) == 7}
    # humid: 25 series, 24 x 12 - 6 + 3 observations, two behind its newest (late, S04); temp: one.
    span = ["2024-01-01 00:00", "2024-01-01 11:00"]
    assert by_variable == {
        "humid": [f"{n}", f"{(n - 1) * 12 - 3}", *span, "2", "0"],
        "temp": [f"{n}", f"{(n - 1) * 12 + 3}", *span, "1", "0"],
    }
    behind = [(c[0], c[1], c[4]) for c in cells if len(c) == 6]  # by lag behind the variable's newest
    assert behind[:3] == [
        ("late[/bold]", "humid", "2024-01-01 02:00"),
        ("late[/bold]", "temp", "2024-01-01 02:00"),
        ("S04", "humid", "2024-01-01 05:00"),
    ]
    assert len(behind) == OVERVIEW_ROWS and f"... and {2 * n - OVERVIEW_ROWS} more" in res.output
    every = _status_json()["series"]
    assert len(every) == 2 * n and {r["series_id"] for r in every} == set(names)

    # The late hours arrive: nothing is behind (and a variable observed less recently than
    # another is not behind for that: each is measured against its own newest).
    fill = ["station,time,temp,humid", *(f"late[/bold],2024-01-01T{h:02d}:00Z,1,50" for h in range(3, 12))]
    fill += [f"S04,2024-01-01T{h:02d}:00Z,{10 + h},50" for h in range(6, 12)]
    fill += [f"S{i:02d},2024-01-01T12:00Z,1," for i in range(n - 1)] + ["late[/bold],2024-01-01T12:00Z,1,"]
    path.write_text("\n".join(fill) + "\n")
    assert _invoke("ingest", "--source", "csv", "--path", str(path), "--series-col", "station").exit_code == 0
    res = _invoke("status")
    assert "observations: the first 20 series and variables (none behind)" in res.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in res.output.splitlines() if "│" in line]
    assert {c[0]: c[5] for c in cells if len(c) == 7} == {"humid": "0", "temp": "0"}
