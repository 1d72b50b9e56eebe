"""Regularisation on exact small arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.features import infer_freq, regularise


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
    with pytest.raises(ValueError):
        infer_freq(idx[:1])
