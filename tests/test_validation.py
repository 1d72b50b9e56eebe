"""Row-level validation: every bad row gets a reason, good rows survive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.cells import parse_numbers, parse_timestamps
from streamcast.config import DEFAULT_BOUNDS
from streamcast.errors import InputError
from streamcast.validation import parse_wide, resolve_time_column


def test_time_column_resolution_order() -> None:
    assert resolve_time_column(["x", "date", "ts"], None, "f") == "ts"
    assert resolve_time_column(["x", "time_hour"], None, "f") == "time_hour"
    assert resolve_time_column(["x", "when"], "when", "f") == "when"
    with pytest.raises(InputError, match="no time column"):
        resolve_time_column(["x", "y"], None, "f.csv")
    with pytest.raises(InputError, match="'when' not found"):
        resolve_time_column(["x"], "when", "f.csv")


def test_naive_timestamps_are_utc_unless_tz_given() -> None:
    frame = pd.DataFrame({"ts": ["2024-07-01 12:00", "2024-07-01T13:00:00+00:00"], "temp": ["1", "2"]})
    utc = parse_wide(frame, "f").observations
    assert utc["ts"].tolist() == [pd.Timestamp("2024-07-01T12:00Z"), pd.Timestamp("2024-07-01T13:00Z")]
    ny = parse_wide(frame, "f", tz="America/New_York").observations
    # Naive 12:00 in New York (EDT, UTC-4) is 16:00 UTC; the aware value is untouched.
    assert sorted(ny["ts"].tolist()) == [pd.Timestamp("2024-07-01T13:00Z"), pd.Timestamp("2024-07-01T16:00Z")]


def test_ambiguous_local_time_is_quarantined() -> None:
    # 01:30 on 2024-11-03 happens twice in New York.
    frame = pd.DataFrame({"ts": ["2024-11-03 01:30", "2024-11-03 03:00"], "temp": ["1", "2"]})
    parsed = parse_wide(frame, "f", tz="America/New_York")
    assert parsed.quarantine_by_reason == {"ambiguous_local_time": 1}
    assert len(parsed.observations) == 1


def test_bad_rows_get_reasons_and_good_rows_stay() -> None:
    frame = pd.DataFrame(
        {
            "station": ["A", "A", "A", "A", "", "A"],
            "ts": [
                "2024-01-01T00:00Z",
                "not a time",
                "2024-01-01T02:00Z",
                "2024-01-01T03:00Z",
                "2024-01-01T04:00Z",
                "2024-01-01T05:00Z",
            ],
            "temp": ["10.5", "11", "abc", "900", "12", "inf"],
            "humid": ["40", "41", "42", "", "44", "45"],
            "note": ["ok", "ok", "ok", "ok", "ok", "ok"],
        }
    )
    parsed = parse_wide(frame, "f.csv", series_col="station", bounds=DEFAULT_BOUNDS)
    assert parsed.quarantine_by_reason == {
        "bad_timestamp": 1,
        "missing_series": 1,
        "non_finite": 1,
        "non_numeric": 1,
        "out_of_bounds": 1,
    }
    assert parsed.ignored_columns == ["note"]
    obs = parsed.observations
    # temp: rows 1 only; humid: rows 1, 3, 4, 6 (row 2 has a bad time, row 5 no series)
    assert obs[obs.variable == "temp"]["value"].tolist() == [10.5]
    assert obs[obs.variable == "humid"]["value"].tolist() == [40.0, 42.0, 45.0]
    bad_ts = next(r for r in parsed.quarantine if r["reason"] == "bad_timestamp")
    assert (bad_ts["row_number"], bad_ts["ts_raw"]) == (2, "not a time")


def test_conflicting_duplicates_are_quarantined_identical_ones_collapse() -> None:
    frame = pd.DataFrame(
        {
            "ts": ["2024-01-01T00:00Z", "2024-01-01T00:00Z", "2024-01-01T01:00Z", "2024-01-01T01:00Z"],
            "temp": ["1", "2", "3", "3"],
        }
    )
    parsed = parse_wide(frame, "f")
    assert parsed.quarantine_by_reason == {"conflicting_duplicate": 2}
    assert parsed.duplicates_dropped == 1
    assert parsed.observations["value"].tolist() == [3.0]


def test_file_level_errors() -> None:
    with pytest.raises(InputError, match="no data rows"):
        parse_wide(pd.DataFrame({"ts": [], "temp": []}), "f")
    with pytest.raises(InputError, match="no numeric variable columns"):
        parse_wide(pd.DataFrame({"ts": ["2024-01-01"], "name": ["x"]}), "f")
    with pytest.raises(InputError, match="series column 'site' not found"):
        parse_wide(pd.DataFrame({"ts": ["2024-01-01"], "temp": ["1"]}), "f", series_col="site")


# Cells that repeat (a panel's times and readings) and Python values that hash alike
# (a stream's JSON: 1, 1.0 and True) next to text that means the same after stripping.
_CELLS = st.sampled_from(
    [
        "2024-01-01T00:00Z", " 2024-01-01T00:00Z ", "2024-01-01 00:00", "2024-03-31 02:30",
        "2024-10-27 02:30", "2024-02-30", "1500-01-01", "", "NA", " nan", "-", "1", " 1 ",
        "1.0", "1e400", "-0", "x", 1, 1.0, True, 0, False, None, float("nan"), 2.5,
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(cells=st.lists(_CELLS, min_size=1, max_size=40))
def test_each_cell_parses_as_it_would_on_its_own(cells: list[object]) -> None:
    """Columns are parsed one distinct cell at a time: a cell's time, number and reason
    must be what it gets alone, however often it repeats and whatever sits beside it."""
    column = pd.Series(cells, dtype=object)
    times, why = parse_timestamps(column, "Europe/Berlin")
    values, present = parse_numbers(column)
    for i, cell in enumerate(cells):
        alone = pd.Series([cell], dtype=object)
        t1, w1 = parse_timestamps(alone, "Europe/Berlin")
        assert (pd.isna(times.iloc[i]) and pd.isna(t1.iloc[0])) or times.iloc[i] == t1.iloc[0], cell
        assert why.iloc[i] == w1.iloc[0], cell
        v1, p1 = parse_numbers(alone)
        assert np.array_equal(values[i : i + 1], v1, equal_nan=True) and present[i] == p1[0], cell


def test_series_ids_are_stripped_and_observations_sorted_by_series_variable_time() -> None:
    frame = pd.DataFrame(
        {
            "site": [" b", "a ", "b", "é", "a", None, "  "],
            "ts": ["2024-01-01T01:00Z", "2024-01-01T01:00Z", "2024-01-01T00:00Z", "2024-01-01T00:00Z",
                   "2024-01-01T00:00Z", "2024-01-01T00:00Z", "2024-01-01T00:00Z"],
            "zeta": ["1", "2", "3", "4", "5", "6", "7"],
            "alpha": ["10", "20", "30", "40", "50", "60", "70"],
        }
    )  # fmt: skip
    parsed = parse_wide(frame, "f", series_col="site")
    obs = parsed.observations
    assert parsed.quarantine_by_reason == {"missing_series": 2}
    assert list(zip(obs["series_id"], obs["variable"], obs["value"], strict=True)) == [
        ("a", "alpha", 50.0), ("a", "alpha", 20.0), ("a", "zeta", 5.0), ("a", "zeta", 2.0),
        ("b", "alpha", 30.0), ("b", "alpha", 10.0), ("b", "zeta", 3.0), ("b", "zeta", 1.0),
        ("é", "alpha", 40.0), ("é", "zeta", 4.0),
    ]  # fmt: skip
    assert obs.groupby(["series_id", "variable"])["ts"].apply(lambda t: t.is_monotonic_increasing).all()
