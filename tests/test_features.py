"""Regularisation on exact small arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.errors import InputError
from streamcast.features import (
    FILL_LIMIT,
    OnlineDesign,
    Scaler,
    build_design,
    build_designs,
    calendar_features,
    check_calendar,
    expand_circular,
    infer_freq,
    regularise,
)


def _frame(values: list[float], drop: list[int] | None = None) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=len(values), freq="h", tz="UTC")
    f = pd.DataFrame({"temp": values}, index=idx)
    return f.drop(idx[drop or []])


def test_short_gaps_interpolated_long_gaps_marked() -> None:
    nan = np.nan
    f = _frame([0, 1, nan, nan, 4, 5, nan, nan, nan, nan, 10, 11], drop=[3])
    out = regularise(f, max_gap=3)
    assert len(out) == 12  # the dropped slot comes back
    np.testing.assert_allclose(out["temp"].to_numpy()[:6], [0, 1, 2, 3, 4, 5])
    assert out["temp"].iloc[6:10].isna().all()
    assert out["long_gap"].tolist() == [False] * 6 + [True] * 4 + [False] * 2


def test_gap_limit_is_configurable() -> None:
    f = _frame([0, np.nan, np.nan, 3])
    assert regularise(f, max_gap=1)["temp"].isna().sum() == 2
    np.testing.assert_allclose(regularise(f, max_gap=2)["temp"], [0, 1, 2, 3])


def test_resample_to_explicit_freq_averages() -> None:
    idx = pd.DatetimeIndex(["2024-01-01T00:00Z", "2024-01-01T00:30Z", "2024-01-01T01:00Z"])
    out = regularise(pd.DataFrame({"temp": [1.0, 3.0, 5.0]}, index=idx), freq="1h")
    assert out["temp"].tolist() == [2.0, 5.0]


def test_infer_freq() -> None:
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC").delete([4])
    assert infer_freq(idx) == pd.Timedelta("1h")
    with pytest.raises(InputError):
        infer_freq(idx[:1])


@pytest.mark.parametrize(
    "start, freq",
    [("2024-01-01 00:00", "1h"), ("2024-01-01 00:30", "1h"), ("2024-01-01 00:00", "30min"), ("2024-01-01 03:00", "2h")],
)
def test_a_series_already_on_its_grid_regularises_as_resampling_would(
    start: str, freq: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path for a series already on its grid (no resample) gives the frame the
    resample path gives, gaps and all; an offset grid (bins start at midnight) resamples."""
    import streamcast.features as features

    idx = pd.date_range(start, periods=60, freq=freq, tz="UTC")
    frame = pd.DataFrame({"temp": np.arange(60.0), "count": np.arange(60)}, index=idx)
    frame.iloc[10:12, 0] = np.nan  # interpolated
    frame.iloc[20:30] = np.nan  # a long silence in both
    frame.loc[idx[40], "temp"] = np.nan
    fast = regularise(frame)
    monkeypatch.setattr(features, "_on_grid", lambda index, step: False)
    slow = regularise(frame)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.index.freq == pd.Timedelta(freq) and fast["long_gap"].sum() == 10
    monkeypatch.undo()
    complete = frame.fillna(1.0)  # nothing to fill: the numpy-only path
    fast = regularise(complete)
    monkeypatch.setattr(features, "_on_grid", lambda index, step: False)
    pd.testing.assert_frame_equal(fast, regularise(complete))
    assert fast.index.freq == pd.Timedelta(freq) and not fast["long_gap"].any()


def test_a_panel_splits_and_its_calendar_is_shared_as_series_by_series() -> None:
    """prepare_panel splits by position and calendar_features reuse one grid's inputs: both
    must give what the per-series path gives (series with their own spans and gaps)."""
    import streamcast.features as features

    rng = np.random.default_rng(1)
    parts = []
    for sid, start, n in (("b", "2024-01-01 03:00", 50), ("a", "2024-01-02", 30), ("c's", "2024-01-01", 40)):
        idx = pd.date_range(start, periods=n, freq="h", tz="UTC", name="ts")
        parts.append(
            pd.DataFrame({"temp": rng.normal(size=n), "wind_dir": rng.uniform(0, 360, n)}, index=idx).assign(
                series_id=sid
            )
        )
    wide = pd.concat(parts).reset_index().set_index(["series_id", "ts"]).sort_index()
    wide.iloc[5, 0] = np.nan
    panel = features.prepare_panel(wide)
    assert list(panel) == ["a", "b", "c's"]
    for sid, frame in wide.groupby(level="series_id"):
        expected = regularise(expand_circular(frame.droplevel("series_id")))
        pd.testing.assert_frame_equal(panel[str(sid)], expected)
    calendar = ["hour", "doy", "dow", "holiday:US"]
    idx = panel["b"].index
    shared = features.calendar_features(idx, calendar)
    shared[:] = -9.0  # a caller's copy: the cache stays intact
    again = features.calendar_features(idx, calendar)
    assert np.array_equal(again, features._calendar_at(idx, calendar))
    assert np.array_equal(again, features.calendar_features(pd.DatetimeIndex(list(idx)), calendar))  # no freq


def _gappy_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    idx = pd.date_range("2024-12-30 20:00", periods=80, freq="h", tz="UTC")  # across a year end
    frame = pd.DataFrame({"temp": rng.normal(10, 3, 80), "dewp": rng.normal(5, 2, 80)}, index=idx)
    frame.iloc[5:8, 0] = np.nan  # a short gap in the target
    frame.iloc[20:60, 1] = np.nan  # a covariate silent for longer than the fill limit
    frame.iloc[:3, 1] = np.nan  # ... and missing before its first value
    return frame


@pytest.mark.parametrize(
    ("head", "calendar"),
    [
        (0, None),
        (10, None),
        (30, None),
        (50, None),
        (10, ["hour", "doy", "dow", "holiday:US"]),
        (10, ["hour", "doy", "dow", "holiday:AU-VIC", "tz:Australia/Melbourne"]),  # the data crosses New Year there
    ],
)
def test_online_design_rows_equal_build_design(head: int, calendar: list[str] | None) -> None:
    """The stream's one-row design equals build_design's rows exactly: scaling, forward
    fill for at most FILL_LIMIT steps then the training mean, calendar; also when it
    continues a design that ends inside a gap."""
    frame = _gappy_frame()
    scaler = Scaler.fit({"A": frame}, ["temp", "dewp"], frame.index[-1])
    cal = {"calendar": calendar} if calendar else {}
    full = build_design("A", frame, "temp", ["dewp"], scaler, **cal)
    assert FILL_LIMIT < 40  # the covariate's gap outlasts the fill
    start = build_design("A", frame.iloc[:head], "temp", ["dewp"], scaler, **cal)
    online = OnlineDesign.after(frame.iloc[:head], start, "temp", ["dewp"], scaler, **cal)
    for t in range(head, len(frame)):
        x, y = online.row(frame.index[t], frame.iloc[t].dropna().to_dict())
        np.testing.assert_array_equal(x, full.X[t])
        assert (np.isnan(y) and np.isnan(full.y[t])) or y == full.y[t]
    np.testing.assert_allclose(online.unscale(np.array([0.0, 1.0])), full.unscale(np.array([0.0, 1.0])))


@pytest.mark.parametrize("calendar", [None, ["hour", "doy", "dow", "holiday:AU-VIC", "tz:Australia/Melbourne"]])
def test_designs_built_together_equal_those_built_one_by_one(calendar: list[str] | None) -> None:
    """build_designs (the series on one time grid together) gives each series the arrays it
    gets built alone, to the bit, in the order given: series sharing a grid, on grids of
    their own (a later start, a shorter length), off any grid, without a covariate, unseen
    in training. (What a design holds is checked row by row against OnlineDesign, an
    implementation of its own, above.)"""
    frame = _gappy_frame()
    rng = np.random.default_rng(1)
    frames = {
        "A": frame,
        "B": frame * 1.5 + rng.normal(0, 1, frame.shape),  # the same grid, its own gaps' values
        "C": frame.iloc[10:],
        "D": frame.iloc[:40],
        "E": frame.drop(columns="dewp"),  # the same grid, never had the covariate
        "F": frame.iloc[[0, 1, 2, 5, 6, 9]],  # no frequency: one by one
        "G": frame.iloc[10:] - 3.0,  # C's grid
    }
    scaler = Scaler.fit(frames, ["temp", "dewp"], frame.index[-1])
    frames["new"] = frame + 2.0  # the scaler has not seen it: the others' average statistics
    assert frames["F"].index.freq is None and frames["A"].index.freq is not None
    cal = {"calendar": calendar} if calendar else {}
    together = build_designs(frames, "temp", ["dewp"], scaler, **cal)
    assert list(together) == list(frames)
    for sid, f in frames.items():
        alone = build_design(sid, f, "temp", ["dewp"], scaler, **cal)
        got = together[sid]
        assert got.series_id == sid and got.X.dtype == alone.X.dtype == np.float32
        np.testing.assert_array_equal(got.X, alone.X)
        np.testing.assert_array_equal(got.y, alone.y)  # NaN where the target was not observed, in both
        assert (got.target_mean, got.target_std) == (alone.target_mean, alone.target_std)


def test_online_design_takes_directions_in_degrees() -> None:
    idx = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")
    raw = pd.DataFrame({"temp": [1.0, 2, 3, 4, 5, 6], "wind_dir": [350.0, 10, 90, 180, 270, 0]}, index=idx)
    frame = expand_circular(raw)
    covariates = ["wind_dir_cos", "wind_dir_sin"]
    scaler = Scaler.fit({"A": frame}, ["temp", *covariates], idx[-1])
    full = build_design("A", frame, "temp", covariates, scaler)
    online = OnlineDesign("A", "temp", covariates, scaler)
    rows = np.array([online.row(t, raw.loc[t].to_dict())[0] for t in idx])
    np.testing.assert_allclose(rows, full.X, rtol=0, atol=1e-6)


def test_the_calendar_tells_weekdays_from_weekends_and_marks_holidays() -> None:
    from streamcast.features import calendar_features, check_calendar

    idx = pd.DatetimeIndex(["2024-07-01T12:00Z", "2024-07-04T12:00Z", "2024-07-06T12:00Z", "2024-07-08T12:00Z"])
    default = calendar_features(idx)
    assert default.shape == (4, 6)  # hour, day of year and day of week as sin/cos pairs
    dow = default[:, 4:6]
    assert not np.allclose(dow[0], dow[2])  # Monday and Saturday differ ...
    assert np.allclose(dow[0], dow[3])  # ... one Monday is like the next
    with_holidays = calendar_features(idx, ["hour", "doy", "dow", "holiday:US"])
    assert with_holidays[:, 6].tolist() == [0.0, 1.0, 0.0, 0.0]  # Independence Day
    with pytest.raises(InputError, match="unknown calendar feature"):
        check_calendar(["month"])
    with pytest.raises(InputError, match="no public holiday calendar"):
        check_calendar(["holiday:XX"])


def test_a_model_saved_before_the_day_of_week_input_loads_with_its_own_calendar(tmp_path) -> None:
    import json

    from streamcast.models import create_model
    from streamcast.models.base import Forecaster
    from tests.test_models_contract import PANEL, TRAIN_END, VAL_START

    old = create_model("esn", horizon=12, units=40, lookback=12, warmup=24, calendar=["hour", "doy"])
    old.fit(PANEL, TRAIN_END, VAL_START)
    path = old.save(tmp_path / "old")
    meta = json.loads((path / "forecaster.json").read_text())
    del meta["config"]["calendar"]  # as streamcast wrote it before the calendar was configurable
    (path / "forecaster.json").write_text(json.dumps(meta))
    loaded = Forecaster.load(path)
    assert loaded.config.calendar == ["hour", "doy"]
    origins = [TRAIN_END]
    pd.testing.assert_frame_equal(loaded.predict(PANEL, origins), old.predict(PANEL, origins))


def test_a_weekly_rhythm_is_told_from_weather() -> None:
    from streamcast.features import has_weekly_rhythm
    from tests.test_models_contract import PANEL, TRAIN_END

    idx = pd.date_range("2024-01-01", periods=24 * 42, freq="h", tz="UTC")
    busy = np.asarray(idx.dayofweek < 5) * np.sin(np.pi * ((idx.hour.to_numpy() - 6) % 24) / 24) ** 2
    load = pd.DataFrame({"temp": 50 + 30 * busy + np.random.default_rng(1).normal(0, 1, len(idx))}, index=idx)
    assert has_weekly_rhythm({"grid": load}, "temp", idx[-1])
    # A wandering level makes a week-old value worse than yesterday's; the rhythm is still there.
    wandering = load.assign(temp=load["temp"] + np.cumsum(np.random.default_rng(2).normal(0, 1.5, len(idx))))
    assert has_weekly_rhythm({"grid": wandering}, "temp", idx[-1])
    assert not has_weekly_rhythm(PANEL, "temp", TRAIN_END)  # daily cycle and drift, nothing weekly


@pytest.mark.parametrize(
    "freq, season", [("h", 24), ("30min", 48), ("15min", 96), ("D", 7), ("7min", 1), ("7D", 1), ("2D", 1)]
)
def test_the_season_follows_the_frequency(freq: str, season: int) -> None:
    from streamcast.features import season_for

    assert season_for(pd.Timedelta(pd.tseries.frequencies.to_offset(freq))) == season


def test_forward_fill_is_pandas_ffill_with_a_limit_then_zero() -> None:
    from streamcast.features import forward_fill

    rng = np.random.default_rng(3)
    values = rng.normal(size=(200, 4))
    values[rng.random(values.shape) < 0.5] = np.nan
    values[:7, 1] = np.nan  # missing before the first value
    values[50:90, 2] = np.nan  # longer than the limit
    for limit in (1, 3, 24):
        expected = pd.DataFrame(values).ffill(limit=limit).fillna(0.0).to_numpy()
        np.testing.assert_array_equal(forward_fill(values, limit), expected)
    assert forward_fill(np.empty((0, 2)), 3).shape == (0, 2)


@st.composite
def _panels(draw: st.DrawFn) -> pd.DataFrame:
    """Series on the hourly grid or off it: shifted off a bin edge, with a step missing or
    doubled, a missing value, a single row, a different start."""
    parts = []
    for k in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 30))
        start = pd.Timestamp("2024-03-01", tz="UTC") + pd.Timedelta(hours=draw(st.integers(0, 48)))
        start += pd.Timedelta(minutes=draw(st.sampled_from([0, 0, 0, 20])))
        steps = np.ones(n, dtype=int)
        if n > 2 and draw(st.booleans()):
            steps[draw(st.integers(1, n - 1))] = draw(st.sampled_from([2, 3]))
        idx = pd.DatetimeIndex(start + pd.to_timedelta(np.cumsum(steps) - 1, unit="h"), name="ts")
        values = draw(st.lists(st.floats(-50, 50), min_size=n, max_size=n))
        frame = pd.DataFrame({"temp": values, "humid": np.arange(n, dtype=float)}, index=idx)
        if draw(st.booleans()):
            frame.iloc[draw(st.integers(0, n - 1)), draw(st.integers(0, 1))] = np.nan
        parts.append(frame.assign(series_id=f"s{k}"))
    return pd.concat(parts).reset_index().set_index(["series_id", "ts"]).sort_index()


@given(_panels())
@settings(max_examples=60, deadline=None)
def test_a_panel_prepares_as_its_series_regularise_one_by_one(wide: pd.DataFrame) -> None:
    """prepare_panel checks, for all series at once, which are already on their grid with
    nothing to fill, and builds those without regularise: every series must come out as
    regularise makes it alone, whatever its shape."""
    import streamcast.features as features

    hour = pd.Timedelta(hours=1)
    for freq in (hour, None):  # given, or inferred series by series
        alone = {}
        for sid, frame in wide.groupby(level="series_id"):
            try:
                alone[str(sid)] = regularise(frame.droplevel("series_id"), freq=freq)
            except InputError as exc:  # a single time without a frequency: the panel says so too
                with pytest.raises(InputError, match=str(exc)):
                    features.prepare_panel(wide, freq=freq)
                break
        else:
            panel = features.prepare_panel(wide, freq=freq)
            assert list(panel) == sorted(alone)
            for sid, expected in alone.items():
                pd.testing.assert_frame_equal(panel[sid], expected)


def test_prepare_panel_takes_the_panel_path_only_for_series_ready_as_they_are() -> None:
    """Which series skip regularise: on the grid from a bin edge with no value missing."""
    import streamcast.features as features

    idx = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC", name="ts")
    frames = {
        "clean": pd.DataFrame({"temp": np.arange(6.0)}, index=idx),
        "nan": pd.DataFrame({"temp": [1.0, np.nan, 3, 4, 5, 6]}, index=idx),
        "shifted": pd.DataFrame({"temp": np.arange(6.0)}, index=idx + pd.Timedelta(minutes=20)),
        "skips": pd.DataFrame({"temp": np.arange(5.0)}, index=idx.delete(3)),
        "single": pd.DataFrame({"temp": [1.0]}, index=idx[:1]),
    }
    wide = pd.concat({k: f for k, f in frames.items()}, names=["series_id"]).sort_index()
    sids = wide.index.get_level_values("series_id")
    codes, uniques = pd.factorize(sids, sort=True)
    bounds = np.flatnonzero(np.diff(codes)) + 1
    ready, steps = features._ready_series(
        wide.index.get_level_values("ts"),
        wide.to_numpy(),
        np.r_[0, bounds],
        np.r_[bounds, len(codes)],
        pd.Timedelta(hours=1),
        ["temp"],
    )
    assert dict(zip(uniques, ready.tolist(), strict=True)) == {
        "clean": True,
        "nan": False,
        "shifted": False,
        "single": True,
        "skips": False,
    }
    assert set(steps.tolist()) == {pd.Timedelta(hours=1).value}
    # Without a frequency each series' own first spacing is its step; one time has none.
    ready, steps = features._ready_series(
        wide.index.get_level_values("ts"), wide.to_numpy(), np.r_[0, bounds], np.r_[bounds, len(codes)], None, ["temp"]
    )
    assert dict(zip(uniques, ready.tolist(), strict=True))["clean"] and not ready[list(uniques).index("single")]


def test_a_calendar_in_a_time_zone_reads_hours_days_and_holidays_there() -> None:
    """With "tz:<zone>", people's calendar is read in their local time: Christmas in
    Melbourne (UTC+11 then) starts at 13:00 UTC on the 24th, and so do its day of week and
    hour; on a grid, at scattered times and one row at a time alike."""
    idx = pd.date_range("2024-12-24T11:00Z", periods=4, freq="h")  # 22:00-01:00 in Melbourne
    local = ["hour", "dow", "holiday:AU-VIC", "tz:Australia/Melbourne"]
    utc = calendar_features(idx, local[:-1])
    there = calendar_features(idx, local)
    assert there.shape == utc.shape  # the zone is how the inputs are read, not an input
    assert utc[:, -1].tolist() == [0.0, 0.0, 0.0, 0.0]  # still the 24th in UTC
    assert there[:, -1].tolist() == [0.0, 0.0, 1.0, 1.0]  # Christmas from local midnight
    hour = 2 * np.pi * np.array([22.0, 23.0, 0.0, 1.0]) / 24
    np.testing.assert_allclose(there[:, 0], np.sin(hour), atol=1e-6)
    melbourne = pd.DatetimeIndex(idx.tz_convert("Australia/Melbourne"))
    assert np.array_equal(there, calendar_features(melbourne, local))  # whatever zone the index is in
    assert np.array_equal(there, calendar_features(pd.DatetimeIndex(list(idx)), local))  # no freq
    scaler = Scaler.fit({"A": pd.DataFrame({"y": [1.0, 2.0]}, index=idx[:2])}, ["y"], idx[1])
    online = OnlineDesign("A", "y", [], scaler, local)
    rows = np.array([online.row(t, {"y": 1.0})[0][1:] for t in idx])
    assert np.array_equal(rows, there)


@pytest.mark.parametrize(
    ("calendar", "error"),
    [
        (["hour", "tz:Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["hour", "tz:UTC", "tz:Europe/London"], "one time zone, not 2"),
    ],
)
def test_a_calendar_zone_must_be_known_and_single(calendar: list[str], error: str) -> None:
    with pytest.raises(InputError, match=error):
        check_calendar(calendar)
