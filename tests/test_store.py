"""The store on SQLite and PostgreSQL: idempotent upserts, revisions, batches."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from streamcast.config import Settings
from streamcast.ingestion import ingest_frame
from streamcast.store import Store


def _long(
    values: list[float], start: str = "2024-03-01T00:00Z", series: str = "A", variable: str = "temp"
) -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(values), freq="h")
    return pd.DataFrame({"series_id": series, "variable": variable, "ts": ts, "value": values})


def _write(store: Store, obs: pd.DataFrame):
    with store.transaction() as tx:
        return tx.upsert_observations(obs, tx.start_batch("test", None, None))


def _drop_column(url: str, table: str, column: str) -> None:
    """Make the database look like one an older streamcast wrote (with its own connection,
    as that version would have)."""
    import sqlalchemy as sa

    from streamcast.store import migrate

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.exec_driver_sql(f"DROP TABLE {migrate.VERSION_TABLE}")  # versions before migrations had none
    engine.dispose()
    migrate._current.clear()  # this process saw the store current before it was made old


def test_upsert_is_idempotent_and_counts_revisions(any_store: Store) -> None:
    first = _write(any_store, _long([1.0, 2.0, 3.0]))
    assert (first.new, first.updated, first.unchanged) == (3, 0, 0)
    again = _write(any_store, _long([1.0, 2.0, 3.0]))
    assert (again.new, again.updated, again.unchanged) == (0, 0, 3)
    revised = _write(any_store, _long([1.0, 2.5, 3.0, 4.0]))
    assert (revised.new, revised.updated, revised.unchanged) == (1, 1, 2)

    stored = any_store.load_observations()
    assert stored["value"].tolist() == [1.0, 2.5, 3.0, 4.0]
    assert str(stored["ts"].dt.tz) == "UTC"
    summary = any_store.series_summary()
    assert summary.loc[0, "count"] == 4
    assert summary.loc[0, "revised"] == 1


@pytest.mark.parametrize("hours", [2, 80])  # a streamed hour or two of many series; a long backfill
def test_large_batches_match_stored_values_by_key(
    any_store: Store, monkeypatch: pytest.MonkeyPatch, hours: int
) -> None:
    """Past the small-batch size, a batch at a few times (10,000 series streaming an hour)
    and one over a long period are matched against what is stored by two other paths: the
    same new / revised / unchanged counts and values either way, series in several queries."""
    obs_module = importlib.import_module("streamcast.store.observations")
    monkeypatch.setattr(obs_module, "_SMALL_BATCH", 10)
    monkeypatch.setattr(obs_module, "_IN_CHUNK", 7)
    by_times = []
    at_times = obs_module._stored_values_at_times
    monkeypatch.setattr(obs_module, "_stored_values_at_times", lambda *a: by_times.append(1) or at_times(*a))
    series = [f"s{i:02d}" for i in range(20)]
    start = "2024-03-01T00:00Z"
    first = pd.concat(
        [_long([float(i)] * hours, start, sid, var) for i, sid in enumerate(series) for var in ("a", "b")]
    )
    counts = _write(any_store, first)
    assert (counts.new, counts.updated, counts.unchanged) == (len(first), 0, 0)
    later = pd.concat(
        [_long([float(i)] * (hours + 1), start, sid, var) for i, sid in enumerate(series) for var in ("a", "b")]
    )
    later.loc[(later["series_id"] == "s03") & (later["variable"] == "b"), "value"] += 0.5  # revised, every time
    counts = _write(any_store, later)
    assert (counts.new, counts.updated, counts.unchanged) == (40, hours, len(first) - hours)
    stored = any_store.load_observations().sort_values(["series_id", "variable", "ts"]).reset_index(drop=True)
    expected = later.sort_values(["series_id", "variable", "ts"]).reset_index(drop=True)
    np.testing.assert_array_equal(stored["value"].to_numpy(), expected["value"].to_numpy())
    assert stored["series_id"].tolist() == expected["series_id"].tolist()
    assert len(by_times) == (2 if hours <= obs_module._FEW_TIMES else 0)


def test_timestamps_round_trip_in_utc(any_store: Store) -> None:
    obs = _long([5.0], start="2024-06-01T12:30:00+02:00")
    _write(any_store, obs)
    got = any_store.load_observations()
    assert got["ts"].iloc[0] == pd.Timestamp("2024-06-01T10:30:00Z")
    # Range queries compare instants, not wall-clock text.
    assert len(any_store.load_observations(start=pd.Timestamp("2024-06-01T10:30Z"))) == 1
    assert len(any_store.load_observations(start=pd.Timestamp("2024-06-01T10:31Z"))) == 0


def test_ingest_batch_recorded_with_counts_and_watermark(any_store: Store, settings: Settings) -> None:
    frame = pd.DataFrame(
        {
            "ts": ["2024-01-01T00:00Z", "2024-01-01T01:00Z", "2024-01-01T02:00Z"],
            "temp": ["10", "11", "500"],
            "humid": ["50", "x", "52"],
        }
    )
    summary = ingest_frame(any_store, frame, source="csv", source_ref="mem.csv", settings=settings)
    assert summary.new == 4  # 2 temps + 2 humids
    assert summary.quarantined == {"non_numeric": 1, "out_of_bounds": 1}
    batch = any_store.last_batch()
    assert batch is not None
    assert (batch["new"], batch["quarantined"], batch["observations_read"]) == (4, 2, 4)
    assert pd.Timestamp(batch["watermark"]).tz_localize(None) == pd.Timestamp("2024-01-01T02:00")
    q = any_store.quarantine_rows()
    assert sorted(q["reason"]) == ["non_numeric", "out_of_bounds"]
    assert set(q["value_raw"]) == {"x", "500"}

    # The same bad input again is not quarantined twice.
    ingest_frame(any_store, frame, source="csv", source_ref="mem.csv", settings=settings)
    assert len(any_store.quarantine_rows()) == 2


def test_load_wide_pivots_variables(any_store: Store) -> None:
    _write(any_store, pd.concat([_long([1.0, 2.0]), _long([7.0, 8.0], variable="dewp"), _long([3.0], series="B")]))
    wide = any_store.load_wide()
    assert list(wide.columns) == ["dewp", "temp"]
    assert wide.loc[("A", pd.Timestamp("2024-03-01T01:00Z"))].tolist() == [8.0, 2.0]
    assert any_store.series_ids() == ["A", "B"]


def test_newest_times_and_series_walk_the_key(any_store: Store) -> None:
    # Series with different variables and ends; ids a user might have (quote, space, unicode).
    assert any_store.newest_ts() is None and any_store.newest_ts("temp") is None and any_store.series_ids() == []
    rng = np.random.default_rng(3)
    parts = []
    for sid in ["A", "B o'Hare", "C\u00fcrich", "D"]:
        for variable in rng.choice(["dewp", "temp", "wind"], size=int(rng.integers(1, 4)), replace=False):
            parts.append(_long(list(rng.normal(size=int(rng.integers(1, 30)))), series=sid, variable=str(variable)))
    frame = pd.concat(parts)
    _write(any_store, frame)
    ends = frame.groupby("variable")["ts"].max()
    assert any_store.newest_ts() == frame["ts"].max()
    for variable, end in ends.items():
        assert any_store.newest_ts(str(variable)) == end
    assert any_store.newest_ts("humid") is None
    assert any_store.series_ids() == sorted(frame["series_id"].unique())


def test_time_range_reads_every_series_in_order(any_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A range read names the series in chunks; here 7 series in chunks of 3.
    monkeypatch.setattr(importlib.import_module("streamcast.store.observations"), "_IN_CHUNK", 3)
    frame = pd.concat(
        [_long([float(k), float(k) + 0.5, 9.0], series=f"s{k}", variable=v) for k in range(7) for v in ("temp", "dewp")]
    )
    _write(any_store, frame)
    got = any_store.load_observations(start=pd.Timestamp("2024-03-01T01:00Z"), end=pd.Timestamp("2024-03-01T01:00Z"))
    assert len(got) == 14 and got["ts"].eq(pd.Timestamp("2024-03-01T01:00Z")).all()
    assert list(zip(got["series_id"], got["variable"], strict=True)) == sorted(
        (f"s{k}", v) for k in range(7) for v in ("dewp", "temp")
    )
    assert got.set_index(["series_id", "variable"])["value"].to_dict() == {
        (f"s{k}", v): k + 0.5 for k in range(7) for v in ("dewp", "temp")
    }
    only = any_store.load_observations(series_ids=["s6", "s1"], variables=["temp"], start=pd.Timestamp("2024-03-01"))
    assert only.groupby("series_id")["value"].apply(list).to_dict() == {"s1": [1.0, 1.5, 9.0], "s6": [6.0, 6.5, 9.0]}
    assert any_store.load_observations(series_ids=[], start=pd.Timestamp("2024-03-01")).empty


@pytest.mark.parametrize("n", [0])
def test_empty_upsert_writes_nothing(any_store: Store, n: int) -> None:
    counts = _write(any_store, _long([1.0] * n))
    assert (counts.new, counts.updated, counts.unchanged) == (0, 0, 0)
    assert any_store.table_counts()["observations"] == 0


def _downgrade(url: str, revision: str) -> tuple[set[str], dict[str, set[str]]]:
    """Take the store at ``url`` back to ``revision``, as an older streamcast left it (the
    next Store upgrades it again): the tables it then has, and each one's index names."""
    import sqlalchemy as sa
    from alembic import command

    from streamcast.store import migrate

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), revision)
        inspector = sa.inspect(conn)
        tables = set(inspector.get_table_names())
        indexes = {t: {ix["name"] for ix in inspector.get_indexes(t)} for t in tables}
    engine.dispose()
    migrate._current.clear()
    return tables, indexes


def _scores(series: str, errors: list[float], start: str = "2024-03-02T00:00Z") -> list[dict]:
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    ts = pd.date_range(start, periods=len(errors), freq="h", tz="UTC")
    return [
        {
            "forecast_id": f"{series}-{i}",
            "step": 1,
            "series_id": series,
            "target": "temp",
            "ts": t.to_pydatetime(),
            "yhat": 0.0,
            "actual": e,
            "abs_error": e,
            "scaled_error": e,
            "model_name": "naive",
            "model_version": "1",
            "scored_at": now,
        }
        for i, (t, e) in enumerate(zip(ts, errors, strict=True))
    ]


def test_live_mase_uses_the_latest_window_per_series_and_waits_for_a_full_one(any_store: Store) -> None:
    since = pd.Timestamp("2000-01-01", tz="UTC")
    any_store.write_scores(_scores("A", [5.0, 5.0, 1.0, 1.0]))  # old errors fall out of a window of 2
    assert any_store.recent_live_mase("temp", since, window=8) is None  # 4 points: not a full window yet
    any_store.write_scores(_scores("B", [3.0, 3.0, 3.0, 3.0]))
    assert any_store.recent_live_mase("temp", since, window=2) == pytest.approx((1 + 1 + 3 + 3) / 4)
    assert any_store.recent_live_mase("temp", since, window=8) == pytest.approx((5 + 5 + 1 + 1 + 12) / 8)
    assert any_store.recent_live_mase("other", since, window=2) is None


def test_a_store_from_an_older_version_gets_its_new_nullable_columns(any_store: Store) -> None:
    _drop_column(any_store.url, "scores", "scaled_error")  # a store written before scores.scaled_error existed
    with Store(any_store.url) as upgraded:
        upgraded.write_scores(_scores("A", [2.0, 4.0]))
        assert upgraded.recent_live_mase("temp", pd.Timestamp("2000-01-01", tz="UTC"), window=2) == 3.0


def test_a_missing_required_column_stops_with_a_clear_error(any_store: Store) -> None:
    from streamcast.errors import SchemaError

    _drop_column(any_store.url, "scores", "model_name")
    with pytest.raises(SchemaError, match=r"scores\.model_name is missing .* new database"):
        Store(any_store.url)


def test_a_large_batch_is_stored_exactly_and_counted_like_a_small_one(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above BULK_ROWS PostgreSQL copies through a staging table: the same rows, values and
    counts as the row path, whatever the series ids hold (quotes, commas, tabs, newlines),
    however the rows are cut into chunks on the way in and out (here mid-series)."""
    import numpy as np

    from streamcast.store.observations import BULK_ROWS

    # The package exports the table under the module's name: patch the module itself.
    module = importlib.import_module("streamcast.store.observations")
    monkeypatch.setattr(module, "COPY_ROWS", 7_001)
    monkeypatch.setattr(module, "_READ_ROWS", 9_999)  # and read back in batches

    ids = ["plain", "with,comma", 'quote"d', "tab\there", "new\nline", "back\\slash", "ünïcode ☃", "[b]x[/b]"]
    per_series = BULK_ROWS // len(ids) + 10
    rng = np.random.default_rng(0)
    first = pd.concat(
        [_long(rng.normal(size=per_series).tolist(), series=sid, variable=v) for sid in ids for v in ("temp", "wind")],
        ignore_index=True,
    )
    assert len(first) > BULK_ROWS
    counts = _write(any_store, first)
    assert (counts.new, counts.updated, counts.unchanged) == (len(first), 0, 0)

    # Again with 100 values revised and 50 new hours per series and variable.
    second = pd.concat(
        [first, pd.concat([_long([1.5] * 50, start="2030-01-01T00:00Z", series=s, variable="temp") for s in ids])],
        ignore_index=True,
    )
    revised = rng.choice(len(first), size=100, replace=False)
    second.loc[revised, "value"] += 1.0
    counts = _write(any_store, second)
    assert (counts.new, counts.updated, counts.unchanged) == (50 * len(ids), 100, len(first) - 100)

    stored = any_store.load_observations()
    assert sorted(stored["series_id"].unique()) == sorted(ids)
    key = ["series_id", "variable", "ts"]
    merged = second.merge(stored, on=key, suffixes=("", "_stored"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) == len(second)
    np.testing.assert_array_equal(merged["value"].to_numpy(), merged["value_stored"].to_numpy())
    assert int(any_store.series_summary()["revised"].sum()) == 100


def _points(series: str, yhat: list[float], origin: str, version: str = "1") -> pd.DataFrame:
    ts = pd.date_range(pd.Timestamp(origin) + pd.Timedelta(hours=1), periods=len(yhat), freq="h")
    return pd.DataFrame(
        {
            "forecast_id": f"{series}|{origin}",
            "series_id": series,
            "target": "temp",
            "issued_at": pd.Timestamp("2024-03-02T01:02:03.456789+01:00"),
            "origin_ts": pd.Timestamp(origin),
            "ts": ts,
            "step": np.arange(1, len(yhat) + 1),
            "yhat": yhat,
            "lo": [v - 1 for v in yhat],
            "hi": [v + 1 for v in yhat],
            "model_name": "esn",
            "model_version": version,
            "run_id": None,
        }
    )


def test_forecast_points_round_trip_through_the_bulk_insert(any_store: Store) -> None:
    """Forecasts go through the driver's executemany, not SQLAlchemy's types: times, NULLs
    and odd ids must read back exactly, and replace / keep must hold per (forecast_id, step)."""
    sid = 'Sta\'tion "Ö"; DROP TABLE forecasts; --'
    first = _points(sid, [1.0, 2.0, 3.0], "2024-03-02T05:00:00+02:00")
    first.loc[1, ["lo", "hi"]] = float("nan")  # a step without an interval
    assert any_store.write_forecasts(first) == 3
    got = any_store.latest_forecasts(series_id=sid).sort_values("step").reset_index(drop=True)
    assert got["series_id"].unique().tolist() == [sid]
    assert got["ts"].tolist() == [pd.Timestamp(f"2024-03-02T0{h}:00Z") for h in (4, 5, 6)]
    assert got["issued_at"].iloc[0] == pd.Timestamp("2024-03-02T00:02:03.456789Z")
    assert got["origin_ts"].iloc[0] == pd.Timestamp("2024-03-02T03:00Z")
    assert got["yhat"].tolist() == [1.0, 2.0, 3.0] and got["lo"].iloc[[0, 2]].tolist() == [0.0, 2.0]
    assert got["lo"].isna().tolist() == [False, True, False] and got["hi"].isna().tolist() == [False, True, False]
    assert got["run_id"].isna().all()

    # Without replace a forecast already stored is kept; with it, overwritten.
    any_store.write_forecasts(first.assign(yhat=9.0, model_version="2"))
    assert any_store.latest_forecasts(series_id=sid)["model_version"].unique().tolist() == ["1"]
    any_store.write_forecasts(first.assign(yhat=9.0, model_version="2"), replace=True)
    replaced = any_store.latest_forecasts(series_id=sid)
    assert replaced["yhat"].tolist() == [9.0, 9.0, 9.0] and len(replaced) == 3
    # The stream's records (driver types): a redelivered forecast changes nothing.
    records = first.assign(yhat=7.0).to_dict("records")
    for r in records:
        for c in ("issued_at", "origin_ts", "ts"):
            r[c] = r[c].to_pydatetime()
    any_store.write_forecast_records(records)
    assert any_store.latest_forecasts(series_id=sid)["yhat"].tolist() == [9.0, 9.0, 9.0]
    # Points matured: their actuals arrive and are found by time, on both dialects.
    _write(any_store, _long([4.0, 5.0], start="2024-03-02T04:00Z", series=sid))
    unscored = any_store.unscored_points("temp", [sid], pd.Timestamp("2024-03-02", tz="UTC"))
    assert sorted(zip(unscored["step"], unscored["actual"], strict=True)) == [(1, 4.0), (2, 5.0)]
    assert sorted(unscored["ts"].tolist()) == [pd.Timestamp(f"2024-03-02T0{h}:00Z") for h in (4, 5)]
    # The stream's read of the points at a few times, bounded to origins it does not remember.
    later = _points(sid, [6.0, 7.0], "2024-03-02T04:00Z")  # origin 04:00, points at 05:00 and 06:00
    any_store.write_forecasts(later)
    at = [datetime(2024, 3, 2, h, tzinfo=UTC) for h in (5, 6)]
    every = any_store.forecasts_for_times("temp", [sid], at)
    got = sorted(zip(every["origin_ts"].dt.hour, every["yhat"], strict=True))
    assert got == [(3, 9.0), (3, 9.0), (4, 6.0), (4, 7.0)]
    assert str(every["ts"].dt.tz) == "UTC" and set(every["ts"]) == set(pd.DatetimeIndex(at))
    before = any_store.forecasts_for_times("temp", [sid], at, origin_before=datetime(2024, 3, 2, 4, tzinfo=UTC))
    assert sorted(zip(before["ts"].dt.hour, before["step"], strict=True)) == [(5, 2), (6, 3)]
    assert any_store.forecasts_for_times("temp", [sid], [datetime(2030, 1, 1, tzinfo=UTC)]).empty


def test_a_started_stream_reads_the_points_of_earlier_origins_without_its_own(any_store: Store) -> None:
    """After a start a stream scores each arriving actual against the stored points of
    origins before the first it remembers; the points of its own later origins at that
    time (one per series for every hour it has run) are not read and filtered out but left
    out by the index range (ts, then origin; migration 0014, with its downgrade and upgrade)."""
    import sqlalchemy as sa

    for origin in ("2024-03-02T00:00Z", "2024-03-02T01:00Z", "2024-03-02T02:00Z", "2024-03-02T03:00Z"):
        any_store.write_forecasts(_points("A", [1.0, 2.0, 3.0, 4.0], origin))
    at, started = [datetime(2024, 3, 2, 4, tzinfo=UTC)], datetime(2024, 3, 2, 2, tzinfo=UTC)

    def read() -> list[tuple[int, int]]:
        found = any_store.forecasts_for_times("temp", ["A"], at, origin_before=started)
        return sorted(zip(found["origin_ts"].dt.hour, found["step"], strict=True))

    assert read() == [(0, 4), (1, 3)]
    if sa.make_url(any_store.url).get_backend_name() == "sqlite":
        plan = [step for step in _plan_of_scores_read(any_store, read, "forecasts") if "forecasts" in step]
        assert plan and all("ix_forecasts_time_origin" in s and "origin_ts<?" in s for s in plan), plan
    names = _downgrade(any_store.url, "0013")[1]["forecasts"]
    assert "ix_forecasts_time" in names and "ix_forecasts_time_origin" not in names
    with Store(any_store.url) as upgraded:
        assert sorted(upgraded.forecasts_for_times("temp", ["A"], at, origin_before=started)["step"]) == [3, 4]
    engine = sa.create_engine(any_store.url)
    with engine.connect() as conn:
        assert "ix_forecasts_time_origin" in {ix["name"] for ix in sa.inspect(conn).get_indexes("forecasts")}
    engine.dispose()


def test_the_column_insert_takes_what_a_row_insert_took(any_store: Store) -> None:
    """On PostgreSQL the columns go as one statement of typed arrays, which refuses what a
    statement per row accepted: a column mixing Python types (an int among floats, numpy
    scalars, a pandas Timestamp among datetimes) and a replace that repeats a key (the last
    row wins, as one row at a time). SQLite stored a numpy integer as a blob."""
    origin = datetime(2024, 3, 2, 3, tzinfo=UTC)
    columns = {c: list(v) for c, v in _points("M", [1.0, 2.0, 3.0], "2024-03-02T03:00Z").to_dict("list").items()}
    columns["yhat"] = [1, np.float64(2.5), 3.25]  # int, numpy float, float
    columns["step"] = [np.int64(1), 2, 3]
    columns["ts"] = [pd.Timestamp(origin + timedelta(hours=1)), *(origin + timedelta(hours=h) for h in (2, 3))]
    for c in ("issued_at", "origin_ts"):
        columns[c] = [origin if i else pd.Timestamp(origin) for i in range(3)]
    assert any_store.write_forecast_columns(columns) == 3
    got = any_store.latest_forecasts(series_id="M").sort_values("step")
    assert got["yhat"].tolist() == [1.0, 2.5, 3.25] and got["step"].tolist() == [1, 2, 3]
    assert got["ts"].tolist() == [pd.Timestamp(origin) + pd.Timedelta(hours=h) for h in (1, 2, 3)]

    twice = _points("M", [7.0, 8.0], "2024-03-02T03:00Z").assign(step=[2, 2])  # one key, two rows
    any_store.write_forecasts(twice, replace=True)
    assert any_store.latest_forecasts(series_id="M").sort_values("step")["yhat"].tolist() == [1.0, 8.0, 3.25]
    any_store.write_forecasts(twice.assign(yhat=[5.0, 6.0]))  # kept: the stored row wins over both
    assert any_store.latest_forecasts(series_id="M").sort_values("step")["yhat"].tolist() == [1.0, 8.0, 3.25]

    # Too long for its column: PostgreSQL refuses it, as a row insert did, never cuts it to
    # fit (an array cast to varchar(n) would); SQLite does not check lengths.
    long_id, long_series = "F" * 65, "S" * 129
    if any_store.dialect == "postgresql":
        with pytest.raises(sa.exc.DataError, match="too long"):
            any_store.write_forecast_columns({**columns, "forecast_id": [long_id] * 3})
        with pytest.raises(sa.exc.DataError, match="too long"):
            _write(any_store, _long([1.0], series=long_series))
        assert any_store.latest_forecasts(series_id="M")["forecast_id"].map(len).max() < 65
        assert long_series[:128] not in any_store.series_summary()["series_id"].tolist()
    else:
        assert any_store.write_forecast_columns({**columns, "forecast_id": [long_id] * 3}) == 3


def test_scores_given_out_of_key_order_are_stored_as_given(any_store: Store) -> None:
    """A table stored in its key's order (scores) takes a write's rows sorted by key: every
    row is stored with its own values, and of two rows with one key the first given is kept
    (as one row at a time kept it), however the key sorts against the other rows."""
    rows = _scores("B", [1.0, 2.0, 3.0]) + _scores("A", [4.0, 5.0]) + _scores("A", [9.0])  # "A-0" twice
    rows = rows[::-1]  # the last hour's first, series "B" before "A"
    for i, r in enumerate(rows):
        r["yhat"] = float(len(rows) - i)  # a sort by whole rows would put the later A-0 first
    columns = {c: [r[c] for r in rows] for c in rows[0]}
    assert any_store.write_score_columns(columns) == 6
    got = any_store.recent_residuals("temp", "1", 100).set_index("forecast_id")
    assert len(got) == 5
    given = {r["forecast_id"]: (r["yhat"], r["actual"]) for r in rows[::-1]}  # of a repeated id, the first given
    assert {fid: (row["yhat"], row["actual"]) for fid, row in got.iterrows()} == given
    assert got.loc["A-0", "actual"] == 9.0  # given before A-0's 4.0
    assert any_store.table_counts()["scores"] == any_store.table_counts(scan=True)["scores"] == 5


def test_a_background_checkpoint_moves_committed_writes_into_the_database_file(tmp_path) -> None:
    """The stream's store leaves its commits' write-ahead log to a thread: its connections
    never checkpoint in a commit, and what they commit still reaches the main file."""
    import shutil
    import sqlite3
    import time

    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}", background_checkpoint=True)
    plain = Store(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        with store._engine.connect() as conn, plain._engine.connect() as other:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            assert other.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        obs = pd.concat([_long(list(range(500)), series=f"s{k}") for k in range(20)], ignore_index=True)
        assert _write(store, obs).new == len(obs)
        deadline = time.monotonic() + 60
        while True:  # the database file alone (no log), copied while the store is open
            shutil.copyfile(path, tmp_path / "copy.db")
            with sqlite3.connect(tmp_path / "copy.db") as copy:
                try:
                    n = copy.execute("SELECT count(*) FROM observations").fetchone()[0]
                except sqlite3.DatabaseError:  # not even the schema checkpointed yet, or a copy
                    n = 0  # torn by a checkpoint writing the file meanwhile (the next one is whole)
            if n == len(obs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert n == len(obs)
    finally:
        store.dispose()
        plain.dispose()
    assert store._checkpointer is None


def test_recalibration_reads_the_latest_scores_of_a_version_through_an_index(store: Store) -> None:
    """Every forecast and stream start reads the champion version's latest matured points:
    an index range, not a sort of the whole scores table (it grows by H points per series
    and hour)."""
    plan = " ".join(_plan_of_scores_read(store, lambda: store.recent_residuals("temp", "1", 2000)))
    assert "ix_scores_version_scored" in plan and "TEMP B-TREE" not in plan, plan


def _plan_of_scores_read(store: Store, read, table: str = "scores") -> list[str]:
    """SQLite's plan (EXPLAIN QUERY PLAN, one line per step) of the last statement ``read``
    sent that reads ``table``."""
    import sqlalchemy as sa

    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if f"FROM {table}" in statement:
            seen.append((statement, parameters))

    sa.event.listen(store._engine, "before_cursor_execute", capture)
    try:
        read()
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", capture)
    statement, parameters = seen[-1]
    with store._engine.connect() as conn:
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]


def _versioned(series: str, version: str | None, scored_at: str, errors: list[float], start: str) -> list[dict]:
    return [
        {**row, "forecast_id": f"{series}-{version}-{row['forecast_id']}", "model_version": version,
         "scored_at": pd.Timestamp(scored_at).to_pydatetime()}
        for row in _scores(series, errors, start)
    ]  # fmt: skip


def test_live_mase_reads_what_every_version_scored_since_the_training_and_nothing_older(any_store: Store) -> None:
    """The drift check's live MASE: each series' latest points (by time) among those scored
    since the training, whichever version issued them (none: a point issued without one),
    and nothing scored before it however recent its time; read through one range of the
    version-and-scoring-time index per version, not a scan of every score (migration 0011,
    with its downgrade and upgrade)."""
    import sqlalchemy as sa

    trained = pd.Timestamp("2024-03-05T12:00Z")
    any_store.write_scores(_versioned("A", "1", "2024-03-05T06:00Z", [9.0, 9.0], "2024-03-04T22:00Z"))  # before
    any_store.write_scores(_versioned("A", "2", "2024-03-05T13:00Z", [1.0, 1.0], "2024-03-05T00:00Z"))
    any_store.write_scores(_versioned("B", None, "2024-03-05T13:00Z", [3.0, 3.0], "2024-03-05T00:00Z"))
    any_store.write_scores(_versioned("C", "", "2024-03-05T14:00Z", [5.0, 5.0], "2024-03-05T00:00Z"))
    # Scored late, after the training, for times before anything else of A's: scored since.
    any_store.write_scores(_versioned("A", "1", "2024-03-05T15:00Z", [7.0], "2024-03-01T00:00Z"))

    assert any_store.recent_live_mase("temp", trained, window=2) == pytest.approx((1 + 1 + 3 + 3 + 5 + 5) / 6)
    assert any_store.recent_live_mase("temp", trained, window=3) == pytest.approx((7 + 1 + 1 + 3 + 3 + 5 + 5) / 7)
    assert any_store.recent_live_mase("temp", trained, window=8) is None  # 7 points scored since
    before = trained - pd.Timedelta(days=1)
    assert any_store.recent_live_mase("temp", before, window=4) == pytest.approx((9 + 9 + 1 + 1 + 6 + 10) / 8)
    assert any_store.recent_live_mase("temp", pd.Timestamp("2024-03-06", tz="UTC"), window=1) is None
    assert any_store.recent_live_mase("humid", before, window=1) is None

    engine = sa.create_engine(any_store.url)
    if engine.dialect.name == "sqlite":
        plan = _plan_of_scores_read(any_store, lambda: any_store.recent_live_mase("temp", trained, window=2))
        reads = [step for step in plan if " scores " in f" {step} "]
        assert reads and all("ix_scores_version_scored" in step and "scored_at>?" in step for step in reads), plan

    engine.dispose()
    names = _downgrade(any_store.url, "0010")[1]["scores"]
    assert "ix_scores_version_time" in names and "ix_scores_version_scored" not in names
    with Store(any_store.url) as upgraded:
        assert upgraded.recent_live_mase("temp", trained, window=2) == pytest.approx(3.0)
        assert upgraded.recent_residuals("temp", "1", 1)["ts"].tolist() == [pd.Timestamp("2024-03-01", tz="UTC")]


def test_forecasts_stored_under_old_ids_get_the_new_ones_and_a_reissue_still_replaces(any_store: Store) -> None:
    """Migration 0006: a stored id of the old form (32 hex digits of a hash) becomes the
    origin-first id the code now issues, in ``scores`` as in ``forecasts``, so that the same
    forecast issued again after the upgrade replaces the stored one; ids of another form stay."""
    import hashlib

    import sqlalchemy as sa

    from streamcast.forecasting import forecast_id
    from streamcast.store import migrate

    origin = "2024-03-02T05:00:00+02:00"
    key = f"JFK|temp|{pd.Timestamp(origin).isoformat()}|1"
    old = hashlib.sha1(key.encode()).hexdigest()[:32]
    any_store.write_forecasts(
        pd.concat([_points("JFK", [1.0, 2.0, 3.0], origin).assign(forecast_id=old), _points("LGA", [5.0], origin)])
    )
    score = {
        "forecast_id": old,
        "step": 2,
        "series_id": "JFK",
        "target": "temp",
        "ts": datetime(2024, 3, 2, 5, tzinfo=UTC),
        "yhat": 2.0,
        "actual": 2.5,
        "abs_error": 0.5,
        "scaled_error": 0.25,
        "model_name": "esn",
        "model_version": "1",
        "scored_at": datetime(2024, 3, 2, 6, tzinfo=UTC),
    }
    any_store.write_scores([score])
    engine = sa.create_engine(any_store.url)  # the store as the previous version left it
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0005'"))
    engine.dispose()
    migrate._current.clear()

    new = forecast_id("JFK", "temp", pd.Timestamp(origin), "1")
    assert new == f"20240302T030000-{old[:16]}"  # the origin in UTC, then the same hash
    with Store(any_store.url) as upgraded:  # a writer upgrades the store
        assert set(upgraded.latest_forecasts()["forecast_id"]) == {new, f"LGA|{origin}"}
        assert upgraded.recent_residuals("temp", "1", 10)[["forecast_id", "step"]].values.tolist() == [[new, 2]]
        upgraded.write_forecasts(_points("JFK", [7.0, 8.0, 9.0], origin).assign(forecast_id=new), replace=True)
        jfk = upgraded.latest_forecasts(series_id="JFK")
        assert jfk["yhat"].tolist() == [7.0, 8.0, 9.0] and set(jfk["forecast_id"]) == {new}


def test_observation_times_read_back_to_the_microsecond_on_either_side_of_the_epoch(any_store: Store) -> None:
    """PostgreSQL's times are read as integer microseconds since the epoch and SQLite's as
    text: both must give back exactly the instants stored, before 1970 as after."""
    times = pd.DatetimeIndex(
        ["1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.000001Z", "2024-03-02T01:02:03.456789Z"]
    )
    obs = pd.DataFrame({"series_id": "A", "variable": "temp", "ts": times, "value": [1.0, 2.0, 3.0]})
    _write(any_store, obs)
    got = any_store.load_observations(start=pd.Timestamp("1969-01-01", tz="UTC"))
    assert got["ts"].tolist() == times.tolist() and got["value"].tolist() == [1.0, 2.0, 3.0]
    wide = any_store.load_wide(series_ids=["A"])
    assert wide.index.get_level_values("ts").equals(times.rename("ts"))


def test_an_older_sqlite_store_gets_its_observations_clustered_by_key_and_keeps_every_row(store: Store) -> None:
    """Migration 0007: observations written by a version with a rowid table are rebuilt
    WITHOUT ROWID (each stored once, in key order) with their values, batches and revision
    counts, and upserts after it count new, revised and unchanged keys as before."""
    import sqlalchemy as sa

    from streamcast.store import migrate

    _write(store, _long([1.0, 2.0, 3.0]))
    _write(store, _long([1.0, 2.5, 3.0]))  # one revision
    _write(store, _long([7.0, 8.0], series="B"))
    before = store.load_observations().sort_values(["series_id", "ts"]).reset_index(drop=True)
    engine = sa.create_engine(store.url)  # the table as 0001-0006 made it, holding the same rows
    with engine.begin() as conn:
        kept = conn.exec_driver_sql("SELECT * FROM observations ORDER BY series_id, variable, ts").fetchall()
        conn.exec_driver_sql("DROP TABLE observations")
        conn.exec_driver_sql(
            "CREATE TABLE observations (series_id VARCHAR(128) NOT NULL, variable VARCHAR(128) NOT NULL, "
            "ts DATETIME NOT NULL, value FLOAT NOT NULL, batch_id INTEGER, revisions INTEGER DEFAULT '0' NOT NULL, "
            "PRIMARY KEY (series_id, variable, ts))"
        )
        conn.exec_driver_sql("INSERT INTO observations VALUES (?, ?, ?, ?, ?, ?)", [tuple(r) for r in kept])
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0006'"))
    migrate._current.clear()

    with Store(store.url) as upgraded:
        pd.testing.assert_frame_equal(
            upgraded.load_observations().sort_values(["series_id", "ts"]).reset_index(drop=True), before
        )
        with engine.connect() as conn:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'observations'").scalar()
            rows = conn.exec_driver_sql("SELECT * FROM observations ORDER BY series_id, variable, ts").fetchall()
        assert "WITHOUT ROWID" in sql.upper()
        assert rows == kept  # batch ids and revision counts too
        counts = _write(upgraded, _long([1.0, 2.0, 3.0, 4.0]))
        assert (counts.new, counts.updated, counts.unchanged) == (1, 1, 2)
    engine.dispose()


def test_an_older_store_gets_time_led_forecast_and_score_keys_and_keeps_every_score(any_store: Store) -> None:
    """Migration 0008 (and its downgrade): scores keyed by (forecast, step) are rekeyed by
    (time, forecast, step) with every row kept, the forecasts' series-first index gives way
    to a time index, and scoring, re-scoring and reading matured points work as before."""
    import sqlalchemy as sa
    from alembic import command

    from streamcast.store import migrate
    from streamcast.store.schema import scores

    origin = "2024-03-01T02:00Z"
    _write(any_store, _long([10.0, 11.0, 12.0, 13.0, 14.0, 15.0], series="A"))
    any_store.write_forecasts(pd.concat([_points("A", [1.0, 2.0, 3.0], origin), _points("B", [5.0], origin)]))
    matured = [
        {
            "forecast_id": f"A|{origin}",
            "step": k,
            "series_id": "A",
            "target": "temp",
            "ts": datetime(2024, 3, 1, 2 + k, tzinfo=UTC),
            "yhat": float(k),
            "actual": 10.0 + 2 + k,
            "abs_error": 12.0,
            "scaled_error": 6.0,
            "model_name": "esn",
            "model_version": "1",
            "scored_at": datetime(2024, 3, 2, k, tzinfo=UTC),
        }
        for k in (1, 2)
    ]
    engine = sa.create_engine(any_store.url)

    def state() -> tuple[list[str], set[str], list[tuple]]:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            key = inspector.get_pk_constraint("scores")["constrained_columns"]
            indexes = {ix["name"] for ix in inspector.get_indexes("forecasts")}
            rows = conn.execute(sa.text("SELECT * FROM scores ORDER BY forecast_id, step")).fetchall()
        return key, indexes, [tuple(r) for r in rows]

    with engine.begin() as conn:  # the schema as 0007 left it
        command.downgrade(migrate._config(conn), "0007")
    migrate._current.clear()
    key, indexes, _ = state()
    assert key == ["forecast_id", "step"]
    assert "ix_forecasts_target_time" in indexes and "ix_forecasts_time" not in indexes
    with engine.begin() as conn:  # an older version's score
        conn.execute(sa.insert(scores), matured[:1])
    _, _, before = state()

    with Store(any_store.url) as upgraded:  # a writer upgrades the store
        key, indexes, rows = state()
        assert key == ["ts", "forecast_id", "step"]
        assert "ix_forecasts_time_origin" in indexes and "ix_forecasts_target_time" not in indexes
        assert "ix_forecasts_time" not in indexes  # 0014 widened it to (ts, origin_ts)
        # Every score kept; 0009 gave it the interval its point was issued with (1 +- 1).
        assert [r[:12] for r in rows] == before and [r[12:] for r in rows] == [(0.0, 2.0)]
        if upgraded.dialect == "sqlite":
            with engine.connect() as conn:
                sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'scores'").scalar()
            assert "WITHOUT ROWID" in sql.upper()
        # Step 2 matured and is unscored; step 3's actual (05:00) has arrived too; B has none.
        unscored = upgraded.unscored_points("temp", ["A", "B"], pd.Timestamp("2024-03-01T00:00Z"))
        assert sorted(zip(unscored["step"], unscored["actual"], strict=True)) == [(2, 14.0), (3, 15.0)]
        assert upgraded.write_scores(matured) == 2  # the stored one again and a new one
        assert len(state()[2]) == 2  # scored once each
        assert upgraded.unscored_points("temp", ["A"], pd.Timestamp("2024-03-01T00:00Z"))["step"].tolist() == [3]
        points = upgraded.forecasts_issued_between("temp", ["A"], pd.Timestamp(origin), pd.Timestamp(origin))
        assert points["step"].tolist() == [1, 2, 3] and set(points["series_id"]) == {"A"}
        assert upgraded.live_summary("temp")["n"].tolist() == [2]
    engine.dispose()


def test_live_error_comes_from_totals_that_count_a_score_written_twice_once(any_store: Store) -> None:
    """Live MAE, MASE and coverage by model, version and step are the means over every
    matured point (computed here from the stored scores), written by the stream's and the
    batch's paths alike; a score written again (a redelivered batch) counts once, and a
    store upgraded from before the totals (0008) gets them from the scores it holds."""
    import sqlalchemy as sa
    from alembic import command

    from streamcast.store import migrate

    origin = pd.Timestamp("2024-03-01T00:00Z")
    rng = np.random.default_rng(3)
    points = pd.concat(
        [
            _points("A", [10.0, 11.0, 12.0], "2024-03-01T00:00Z"),
            _points("B", [20.0, 21.0, 22.0], "2024-03-01T00:00Z", version="2"),
            _points("C", [5.0, 6.0, 7.0], "2024-03-01T00:00Z").assign(lo=np.nan, hi=np.nan),  # no interval
        ]
    )
    any_store.write_forecasts(points)
    scored = points.assign(
        actual=points["yhat"] + rng.choice([-2.0, -0.5, 0.5, 2.0], len(points)),
        scored_at=origin + pd.Timedelta(hours=5),
    )
    scored["abs_error"] = (scored["actual"] - scored["yhat"]).abs()
    scored["scaled_error"] = np.where(scored["series_id"] == "B", np.nan, scored["abs_error"] / 2)
    columns = ["forecast_id", "step", "series_id", "target", "ts", "yhat", "actual", "abs_error", "scaled_error"]
    columns += ["model_name", "model_version", "scored_at", "lo", "hi"]

    def as_columns(frame: pd.DataFrame) -> dict[str, list]:
        out = {c: frame[c].tolist() for c in columns}
        for c in ("ts", "scored_at"):
            out[c] = [t.to_pydatetime() for t in frame[c]]
        for c in ("scaled_error", "lo", "hi"):
            out[c] = [None if v is None or v != v else float(v) for v in frame[c]]
        return out

    first, rest = scored[scored["step"] == 1], scored[scored["step"] > 1]
    any_store.write_score_columns(as_columns(first))  # the stream's path
    rows = as_columns(pd.concat([first.iloc[:1], rest]))  # one of them stored already
    any_store.write_scores([dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)])

    inside = ((scored["actual"] >= scored["lo"]) & (scored["actual"] <= scored["hi"])).astype(float)
    expected = (
        scored.assign(inside=inside.where(scored["lo"].notna()))
        .groupby(["model_name", "model_version", "step"])
        .agg(n=("yhat", "size"), mae=("abs_error", "mean"), mase=("scaled_error", "mean"), coverage=("inside", "mean"))
        .reset_index()
    )
    live = any_store.live_scores("temp")
    assert live["n"].tolist() == expected["n"].tolist() == [2, 2, 2, 1, 1, 1]
    for c in ("mae", "mase", "coverage"):
        got, want = live[c].astype(float).to_numpy(), expected[c].to_numpy()
        assert np.allclose(got, want, equal_nan=True), c
    summary = any_store.live_summary("temp").set_index("model_version")
    assert summary.loc["1", "n"] == 6 and summary.loc["2", "n"] == 3 and pd.isna(summary.loc["2", "mase"])
    assert summary.loc["1", "last_ts"] == origin + pd.Timedelta(hours=3)

    any_store.write_score_columns(as_columns(scored))  # every score again: nothing changes
    pd.testing.assert_frame_equal(any_store.live_scores("temp"), live)

    engine = sa.create_engine(any_store.url)
    with engine.begin() as conn:  # the store as 0008 left it: no totals, no intervals in scores
        command.downgrade(migrate._config(conn), "0008")
        assert not sa.inspect(conn).has_table("score_totals")
    migrate._current.clear()
    with Store(any_store.url) as upgraded:
        pd.testing.assert_frame_equal(upgraded.live_scores("temp"), live)
    engine.dispose()


def test_the_newest_issue_and_a_page_of_latest_forecasts(any_store: Store) -> None:
    """The dashboard's header (the most recently issued forecast's model and time) and its
    page (the latest forecast of the page's series only)."""
    assert any_store.newest_issue("temp") is None
    early, late = pd.Timestamp("2024-03-02T01:00Z"), pd.Timestamp("2024-03-02T03:00Z")
    any_store.write_forecasts(
        pd.concat(
            [
                _points("A", [1.0, 2.0], "2024-03-01T00:00Z").assign(issued_at=early),
                _points("A", [3.0, 4.0], "2024-03-01T01:00Z", version="2").assign(issued_at=late),
                _points("B", [5.0, 6.0], "2024-03-01T00:00Z").assign(issued_at=early),
                _points("C", [7.0, 8.0], "2024-03-01T00:00Z").assign(issued_at=early),
            ]
        )
    )
    assert any_store.newest_issue("temp") == {"model_name": "esn", "model_version": "2", "issued_at": late}
    assert any_store.newest_issue("humid") is None
    page = any_store.latest_forecasts(target="temp", series_ids=["A", "C"])
    assert page[["series_id", "yhat"]].values.tolist() == [["A", 3.0], ["A", 4.0], ["C", 7.0], ["C", 8.0]]
    assert any_store.latest_forecasts(target="temp", series_ids=[]).empty


def test_the_batch_path_scores_what_matured_since_its_last_run_late_data_included(
    any_store: Store, settings: Settings
) -> None:
    """``streamcast forecast`` scores the points matured by the observations written since
    its last run (a late backfill included, and a batch that committed as that run read),
    reading no point older than those observations; without a mark (the first run, or a
    run of some series) it reads every point of the history it loads."""
    import sqlalchemy as sa

    from streamcast.forecasting import SCORE_MARK_MARGIN, score_matured
    from streamcast.store.schema import ingest_batches

    def ingest(series: str, values: list[float], start: str) -> None:
        ts = pd.date_range(start, periods=len(values), freq="h", tz="UTC")
        frame = pd.DataFrame({"series": series, "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "temp": values})
        ingest_frame(any_store, frame, source="csv", source_ref=None, series_col="series", settings=settings)

    engine = sa.create_engine(any_store.url)

    def run(marked: bool = True, age: bool = True) -> int:
        checked_at = pd.Timestamp.now(tz="UTC")
        panel = prepare_panel(any_store.load_wide())
        written = score_matured(any_store, "temp", panel, 24, checked_at if marked else None)
        if age:  # the batches read finished long ago (not within the margin of this run's mark)
            with engine.begin() as conn:
                conn.execute(ingest_batches.update().values(finished_at=datetime(2000, 1, 1, tzinfo=UTC)))
        return written

    def scored() -> list[tuple[str, int]]:
        live = any_store.recent_residuals("temp", "1", 1000).merge(
            any_store.forecasts_between(pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-03", tz="UTC")),
            on=["forecast_id", "step"],
        )
        return sorted(zip(live["series_id"], live["step"], strict=True))

    from streamcast.features import prepare_panel

    for sid in ("A", "B"):
        ingest(sid, [10.0] * 6, "2024-03-01T00:00Z")  # history to 05:00
    any_store.write_forecasts(pd.concat([_points(s, [1.0, 2.0, 3.0], "2024-03-01T05:00Z") for s in "AB"]))
    assert run() == 0 and any_store.score_mark("temp") is not None  # nothing matured; the mark is set
    assert run() == 0  # nothing written since: no point is read

    ingest("A", [11.0, 12.0], "2024-03-01T06:00Z")
    assert run() == 2 and scored() == [("A", 1), ("A", 2)]
    ingest("B", [11.0, 12.0, 13.0], "2024-03-01T06:00Z")  # late: B's actuals after A's run
    ingest("A", [13.0], "2024-03-01T08:00Z")
    assert run() == 4 and scored() == [("A", 1), ("A", 2), ("A", 3), ("B", 1), ("B", 2), ("B", 3)]

    # A point issued after its actual was stored (by a process behind the store): the
    # marked run does not read back that far; an unmarked one does.
    any_store.write_forecasts(_points("A", [5.0], "2024-03-01T04:00Z"))
    ingest("B", [14.0], "2024-03-01T09:00Z")
    assert run() == 0
    # A chunk of a forecast of every series (the Dask fan-out): bounded by the mark, which it leaves.
    mark = any_store.score_mark("temp")
    assert score_matured(any_store, "temp", prepare_panel(any_store.load_wide()), 24, None, bounded=True) == 0
    assert any_store.score_mark("temp") == mark
    assert run(marked=False) == 1 and ("A", 1) in scored()

    # A batch that finished shortly before the mark (committing while that run read) is new.
    any_store.write_forecasts(_points("B", [7.0], "2024-03-01T09:00Z"))
    ingest("B", [15.0], "2024-03-01T10:00Z")
    any_store.set_score_mark("temp", pd.Timestamp.now(tz="UTC") + SCORE_MARK_MARGIN / 2)
    assert run() == 1
    any_store.write_forecasts(_points("B", [8.0], "2024-03-01T10:00Z"))
    ingest("B", [16.0], "2024-03-01T11:00Z")
    any_store.set_score_mark("temp", pd.Timestamp.now(tz="UTC") + SCORE_MARK_MARGIN * 2)
    assert run() == 0  # finished well before the mark: not new

    # From before the marks (0009): no mark, batches without their earliest time; the first
    # run reads the whole history it loads.
    any_store.write_forecasts(_points("A", [8.0], "2024-03-01T07:00Z"))
    engine.dispose()
    assert "score_marks" not in _downgrade(any_store.url, "0009")[0]
    with Store(any_store.url) as upgraded:
        assert upgraded.score_mark("temp") is None
        assert upgraded.written_since(pd.Timestamp("2024-01-01", tz="UTC")) is None
    assert run() == 2 and any_store.score_mark("temp") is not None  # A's 08:00 and B's 11:00


def test_the_latest_forecast_of_every_series_walks_the_index_and_agrees_with_the_ranking(any_store: Store) -> None:
    """Every series' latest forecast per target (the newest issue; of two issued at once, the
    later origin), found one probe per series and target, is what ranking every forecast
    of those series gives; a target filter, and a store without forecasts, too."""
    issued = [pd.Timestamp(f"2024-03-0{d}T00:30Z") for d in (2, 3, 4)]
    odd = 'Sta\'tion "Ö"'
    frames = []
    for k, sid in enumerate(["A", "B", odd, "Z"]):
        for d, at in enumerate(issued[: k + 1]):  # A one forecast, B two, ... Z three
            origin = f"2024-03-0{d + 1}T2{k}:00Z"
            frames.append(_points(sid, [float(10 * k + d), 1.0], origin).assign(issued_at=at))
    # B again, issued at the same time as its second forecast, from a later origin
    frames.append(_points("B", [99.0, 1.0], "2024-03-02T23:00Z").assign(issued_at=issued[1]))
    frames.append(_points("A", [7.0, 7.0], "2024-03-05T00:00Z").assign(issued_at=issued[2], target="humid"))
    assert any_store.latest_forecasts().empty
    any_store.write_forecasts(pd.concat(frames))

    every = sorted(["A", "B", odd, "Z"])
    for target in ("temp", "humid", None):
        walked = any_store.latest_forecasts(target=target).reset_index(drop=True)
        ranked = any_store.latest_forecasts(target=target, series_ids=every).reset_index(drop=True)
        pd.testing.assert_frame_equal(walked, ranked)
    temp = any_store.latest_forecasts(target="temp")
    firsts = temp[temp["step"] == 1].set_index("series_id")["yhat"].to_dict()
    assert firsts == {"A": 0.0, "B": 99.0, odd: 22.0, "Z": 32.0}
    assert any_store.latest_forecasts(target="humid")["series_id"].unique().tolist() == ["A"]
    assert len(any_store.latest_forecasts()) == 2 * 5 and any_store.latest_forecasts(target="wind").empty


def test_the_series_summary_is_kept_as_observations_are_written(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``series_stats`` (migration 0012) answers `status` and GET /series as the aggregate of
    every observation would: after a first load (PostgreSQL's bulk path at this size), new
    keys after, before and inside a series' span, a new series and variable, revisions, a
    batch stored again, keys another writer stored first, and a store upgraded from 0011."""

    obs_module = importlib.import_module("streamcast.store.observations")  # the package exports a table of this name

    def check() -> None:
        got = any_store.series_summary()
        pd.testing.assert_frame_equal(got, any_store.series_summary(scan=True), check_dtype=False)

    load = pd.concat(
        [_long(list(np.arange(5_000.0)), series=s, variable=v) for s in ("A", "B") for v in ("temp", "humid")]
    )
    assert _write(any_store, load).new == 20_000
    check()
    assert any_store.series_summary()["count"].tolist() == [5_000] * 4

    later = _long([1.0, 2.0], start="2024-12-01T00:00Z")  # A temp: after its span
    before = _long([3.0], start="2024-02-01T00:00Z", series="B", variable="humid")
    other = _long([4.0, 5.0, 6.0], series='Sta\'tion "Ö"', variable="wind")
    revised = _long([-1.0, 1.0], start="2024-03-01T00:00Z")  # A temp: the first a revision, the second unchanged
    counts = _write(any_store, pd.concat([later, before, other, revised]))
    assert (counts.new, counts.updated, counts.unchanged) == (6, 1, 1)
    check()
    _write(any_store, pd.concat([later, before, other, revised]))  # stored again: nothing changes
    check()
    a_temp = any_store.series_summary().set_index(["series_id", "variable"]).loc[("A", "temp")]
    assert (a_temp["count"], a_temp["revised"]) == (5_002, 1)

    # Another writer stored some of these keys first: the write cannot tell which it inserted.
    monkeypatch.setattr(obs_module, "_stored_values", lambda conn, obs: np.full(len(obs), np.nan))
    counts = _write(any_store, _long([7.0, 8.0, 9.0], start="2024-12-01T01:00Z"))  # 01:00 stored, 02-03:00 new
    assert (counts.new, counts.updated) == (2, 1)
    monkeypatch.undo()
    check()

    # Half stored already (values changed), half new: on PostgreSQL the bulk path, which
    # cannot tell which keys it inserted.
    overlap = pd.concat(
        [
            _long(list(np.arange(5_000.0) + 0.5), start="2024-06-13T04:00Z", series=s, variable=v)
            for s in ("A", "B")
            for v in ("temp", "humid")
        ]
    )
    counts = _write(any_store, overlap)
    assert (counts.new, counts.updated) == (4 * 2_500 - 4, 4 * 2_500 + 4)  # A temp: its four December keys stored
    check()

    tables, indexes = _downgrade(any_store.url, "0011")
    assert "series_stats" not in tables and "ix_observations_revised" not in indexes["observations"]
    with Store(any_store.url) as upgraded:
        pd.testing.assert_frame_equal(upgraded.series_summary(), upgraded.series_summary(scan=True), check_dtype=False)
        assert len(upgraded.series_summary()) == 5


def test_table_counts_are_kept_as_points_are_written(any_store: Store) -> None:
    """`status` and GET /health read the rows of observations, forecasts and scores from
    what their writes keep (migration 0013), and must say what counting every row says:
    after new forecasts, a forecast replaced and one issued again, points of two targets in
    one write (some stored already), the stream's columns redelivered, scores and
    observations, and a store upgraded from 0012 (the upgrade counts the stored points)."""

    def check(points: int) -> None:
        counts = any_store.table_counts()
        assert counts == any_store.table_counts(scan=True) and counts["forecasts"] == points, counts

    check(0)
    a = _points("A", [1.0, 2.0, 3.0], "2024-03-02T03:00Z")
    any_store.write_forecasts(a, replace=True)
    check(3)
    any_store.write_forecasts(a.assign(yhat=9.0), replace=True)  # replaced: the same points
    any_store.write_forecasts(a.assign(yhat=7.0))  # kept
    check(3)
    assert any_store.latest_forecasts(series_id="A")["yhat"].tolist() == [9.0] * 3
    longer = _points("A", [1.0, 2.0, 3.0, 4.0], "2024-03-02T03:00Z").assign(yhat=5.0)  # one step more
    any_store.write_forecasts(longer, replace=True)
    check(4)
    assert any_store.latest_forecasts(series_id="A")["yhat"].tolist() == [5.0] * 4

    humid = _points("B", [1.0, 2.0], "2024-03-02T04:00Z").assign(target="humid", forecast_id="B|humid")
    both = pd.concat([longer, humid, _points("C", [1.0], "2024-03-02T04:00Z")], ignore_index=True)
    columns = {c: both[c].tolist() for c in both.columns}
    for c in ("issued_at", "origin_ts", "ts"):
        columns[c] = [v.to_pydatetime() for v in columns[c]]
    any_store.write_forecast_columns(columns)  # A's stored already; B's humid and C's new
    check(7)
    any_store.write_forecast_columns(columns)  # redelivered
    any_store.write_forecast_records(both.to_dict("records"))
    check(7)
    assert any_store.latest_forecasts(target="humid")["series_id"].tolist() == ["B", "B"]

    any_store.write_scores(_scores("A", [1.0, 2.0]))
    any_store.write_scores(_scores("A", [1.0, 2.0]))  # again: counted once
    _write(any_store, _long([1.0, 2.0, 3.0]))
    check(7)
    assert any_store.table_counts()["scores"] == 2 and any_store.table_counts()["observations"] == 3

    tables = _downgrade(any_store.url, "0012")[0]
    assert "forecast_totals" not in tables
    upgraded = Store(any_store.url)  # upgrades again, counting the points stored
    try:
        assert upgraded.table_counts() == upgraded.table_counts(scan=True) and upgraded.table_counts()["forecasts"] == 7
        upgraded.write_forecasts(_points("D", [1.0], "2024-03-02T05:00Z"))
        assert upgraded.table_counts()["forecasts"] == 8 == upgraded.table_counts(scan=True)["forecasts"]
    finally:
        upgraded.dispose()
