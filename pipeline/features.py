"""Feature preparation: regularisation now; windows, scaling and calendar features
for the forecasters build on it."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from streamcast.errors import InputError

GAP_COLUMN = "long_gap"


def panel_freq(panel: dict[str, pd.DataFrame]) -> pd.Timedelta:
    """The time step of a regularised panel (every series shares it)."""
    f = next(iter(panel.values()))
    return pd.Timedelta(f.index.freq) if f.index.freq is not None else f.index[1] - f.index[0]


def season_for(freq: pd.Timedelta) -> int:
    """The main season of data at ``freq``: a day's steps below a day (24 for hourly data,
    48 half-hourly, 96 quarter-hourly), a week's days for daily data, else none (1)."""
    day = pd.Timedelta(days=1)
    if freq < day and day % freq == pd.Timedelta(0):
        return int(day / freq)
    return 7 if freq == day else 1


def infer_freq(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The series step: the most common spacing between consecutive timestamps."""
    if len(index) > 1 and index.is_monotonic_increasing:
        d = np.diff(index.asi8)
        if d[0] > 0 and (d == d[0]).all():  # already on a grid: the common case, without a mode
            return pd.Timedelta(index[1] - index[0])
    idx = index.sort_values().unique()
    if len(idx) < 2:
        raise InputError("need at least two timestamps to infer a frequency")
    diffs = pd.Series(idx[1:] - idx[:-1])
    step = diffs.mode().iloc[0]
    if step <= pd.Timedelta(0):
        raise InputError("timestamps must increase")
    return pd.Timedelta(step)


def _run_lengths(missing: np.ndarray) -> np.ndarray:
    """For each position, the length of the run of missing values it belongs to (0 if present)."""
    out = np.zeros(len(missing), dtype=int)
    i = 0
    n = len(missing)
    while i < n:
        if missing[i]:
            j = i
            while j < n and missing[j]:
                j += 1
            out[i:j] = j - i
            i = j
        else:
            i += 1
    return out


def regularise(
    frame: pd.DataFrame,
    freq: str | pd.Timedelta | None = None,
    max_gap: int = 3,
) -> pd.DataFrame:
    """Put one series on a regular time grid.

    ``frame`` is indexed by UTC timestamps with one column per variable. Values
    are resampled to ``freq`` (inferred when None; several values in one slot are
    averaged), gaps of at most ``max_gap`` steps are filled by time interpolation,
    and longer gaps stay missing (a variable's own NaN is what keeps training
    windows off it). The column ``long_gap`` marks slots where the series
    reported nothing at all and nothing could be filled: the station was silent.
    """
    if frame.empty:
        out = frame.copy()
        out[GAP_COLUMN] = pd.Series(dtype=bool)
        return out
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("regularise expects a DatetimeIndex")
    step = pd.Timedelta(freq) if freq is not None else infer_freq(frame.index)
    # Already regular and aligned as resample's bins would be: the same frame, without
    # resampling (a stream's warm-up and a forecast regularise every series of a panel).
    on_grid = _on_grid(frame.index, step)
    if on_grid:
        values = frame.to_numpy(dtype=float, copy=True)
        if not np.isnan(values).any():
            # Nothing to fill: numpy only (a forecast regularises a thousand such series).
            return _grid_frame(values, frame.columns, frame.index[0], step, frame.index.name)
    resampled = frame.astype(float) if on_grid else frame.sort_index().resample(step).mean()
    filled = resampled.copy()
    for col in resampled.columns:
        missing = resampled[col].isna().to_numpy()
        if not missing.any():
            continue
        runs = _run_lengths(missing)
        interp = resampled[col].interpolate(method="time", limit_area="inside")
        short = missing & (runs <= max_gap)
        filled[col] = resampled[col].where(~short, interp)
    filled[GAP_COLUMN] = np.isnan(filled.to_numpy(dtype=float)).all(axis=1)
    filled.index.freq = step  # type: ignore[misc]
    return filled


def _grid_frame(
    values: np.ndarray, columns: Sequence[str], first: pd.Timestamp, step: pd.Timedelta, name: Any
) -> pd.DataFrame:
    """What :func:`regularise` makes of a series already on its grid with nothing to fill:
    its float ``values`` (T, columns; not copied), no long gap, the grid from ``first``."""
    out = {c: values[:, j] for j, c in enumerate(columns)}
    out[GAP_COLUMN] = np.zeros(len(values), dtype=bool)
    index = pd.date_range(first, periods=len(values), freq=step, name=name)
    return pd.DataFrame(out, index=index, copy=False)


def _on_grid(index: pd.DatetimeIndex, step: pd.Timedelta) -> bool:
    """Whether ``index`` is strictly increasing by exactly ``step``, starting on a bin
    edge of ``resample(step)`` (whose bins start at midnight of the first day)."""
    if len(index) < 2 or not index.is_monotonic_increasing:
        return len(index) == 1 and (index[0] - index[0].normalize()) % step == pd.Timedelta(0)
    d = np.diff(index.asi8)
    return (
        bool((d == d[0]).all())
        and index[1] - index[0] == step
        and (index[0] - index[0].normalize()) % step == pd.Timedelta(0)
    )


# --- model inputs --------------------------------------------------------------

# Calendar inputs by name: "hour" (of day), "doy" (day of year), "dow" (day of week,
# what people's rhythms follow) as sin/cos pairs, and "holiday:<country>" (1 on the public
# holidays of a country or subdivision the `holidays` package knows: US, AU-VIC, ...);
# "tz:<IANA zone>" reads them all in that zone's local time instead of UTC (people keep
# local hours and days: a holiday in Melbourne starts at 13:00 UTC the day before).
DEFAULT_CALENDAR = ["hour", "doy", "dow"]
PRE_DOW_CALENDAR = ["hour", "doy"]  # what models saved before "dow" existed were trained on
CALENDAR_PARTS = ("hour", "doy", "dow")
# Directions are angles: 359° and 1° are neighbours, so they enter as sin/cos.
CIRCULAR_VARIABLES = {"wind_dir", "wind_direction_10m"}


def has_weekly_rhythm(panel: Mapping[str, pd.DataFrame], target: str, end: pd.Timestamp, season: int = 24) -> bool:
    """Whether ``target`` repeats by the week more than by the day up to ``end``: a day
    ahead, the weekly seasonal random walk (the value a week before each step, moved by the
    week's change since: y[t+h-7m] + y[t] - y[t-7m]) beats the daily one (y[t+h-m] + y[t] -
    y[t-m]) by 10%, pooled over series. Moving both by the latest change makes the test
    blind to a drifting level, which a plain week-ago value is not. Weather does not
    repeat by the week; load, traffic and footfall do, and then the day of week is a
    model input."""
    week = 7 * season
    h = np.arange(1, season + 1)[None, :]
    by_day = by_week = 0.0
    for frame in panel.values():
        y = frame[target].loc[:end].to_numpy(dtype=float)
        if len(y) <= 2 * week + season:
            continue
        t = np.arange(week, len(y) - season, WEEKLY_TEST_STRIDE)[:, None]
        future = y[t + h]
        day_err = np.abs(future - (y[t + h - season] + y[t] - y[t - season]))
        week_err = np.abs(future - (y[t + h - week] + y[t] - y[t - week]))
        both = np.isfinite(day_err) & np.isfinite(week_err)
        by_day += float(day_err[both].sum())
        by_week += float(week_err[both].sum())
    return by_day > 0 and by_week < 0.9 * by_day


# Every how many steps an origin of the weekly test is taken (prime to 24 and 168, so the
# origins meet every hour of the week).
WEEKLY_TEST_STRIDE = 5


def check_calendar(calendar: Sequence[str]) -> list[str]:
    """``calendar`` if every name is known; a holiday calendar must exist in `holidays`, a
    zone in the time-zone database, and there is at most one zone."""
    zones = [name.removeprefix("tz:") for name in calendar if name.startswith("tz:")]
    for name in calendar:
        if name.startswith("holiday:"):
            _holiday_calendar(name.removeprefix("holiday:"))
        elif name.startswith("tz:"):
            check_zone(name.removeprefix("tz:"))
        elif name not in CALENDAR_PARTS:
            raise InputError(
                f"unknown calendar feature {name!r}; use {', '.join(CALENDAR_PARTS)}, holiday:<country> or tz:<zone>"
            )
    if len(zones) > 1:
        raise InputError(f"a calendar is read in one time zone, not {len(zones)}")
    return list(calendar)


def check_zone(zone: str) -> str:
    """``zone`` if the time-zone database knows it (ingest's ``--tz`` and the calendar's)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {zone!r} (use an IANA name such as UTC or America/New_York)") from None
    return zone


def calendar_zone(calendar: Sequence[str]) -> str | None:
    """The time zone ``calendar`` is read in (its "tz:" entry), None for UTC."""
    return next((name.removeprefix("tz:") for name in calendar if name.startswith("tz:")), None)


def calendar_features(index: pd.DatetimeIndex, calendar: Sequence[str] = DEFAULT_CALENDAR) -> np.ndarray:
    """The ``calendar`` inputs at each time of ``index`` (UTC; read in the calendar's zone
    when it names one), shape (T, columns)."""
    zone = calendar_zone(calendar)
    if index.freq is not None and len(index) > 1:
        # A panel's series share their time grid: computed once per grid, not per series.
        step = pd.Timedelta(index.freq).value
        tz = zone or (None if index.tz is None else str(index.tz))
        return _calendar_on_grid(index[0].value, len(index), step, tz, tuple(calendar)).copy()
    if zone is not None:
        index = (index.tz_localize("UTC") if index.tz is None else index).tz_convert(zone)
    return _calendar_at(index, calendar)


@functools.lru_cache(maxsize=64)
def _calendar_on_grid(first: int, length: int, step: int, tz: str | None, calendar: tuple[str, ...]) -> np.ndarray:
    index = pd.DatetimeIndex(first + step * np.arange(length, dtype=np.int64))
    return _calendar_at(index if tz is None else index.tz_localize("UTC").tz_convert(tz), calendar)


def _calendar_at(index: pd.DatetimeIndex, calendar: Sequence[str]) -> np.ndarray:
    hour = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    holidays = [_is_holiday(index, name.removeprefix("holiday:")) for name in calendar if name.startswith("holiday:")]
    return _calendar(hour, index.dayofyear.to_numpy(), index.dayofweek.to_numpy(), calendar, holidays)


def _calendar(
    hour: np.ndarray, dayofyear: np.ndarray, dayofweek: np.ndarray, calendar: Sequence[str], holidays: list[np.ndarray]
) -> np.ndarray:
    angles = {
        "hour": 2 * np.pi * hour / 24.0,
        "doy": 2 * np.pi * (dayofyear - 1 + hour / 24.0) / 365.25,
        "dow": 2 * np.pi * (dayofweek + hour / 24.0) / 7.0,
    }
    columns = []
    for name in calendar:
        if name in angles:
            columns += [np.sin(angles[name]), np.cos(angles[name])]
    columns += holidays
    return np.column_stack(columns).astype(np.float32)


@functools.cache
def _holiday_calendar(code: str) -> Any:
    import holidays

    country, _, subdivision = code.partition("-")
    try:
        return holidays.country_holidays(country, subdiv=subdivision or None)
    except NotImplementedError:
        raise InputError(f"no public holiday calendar for {code!r} (use an ISO code such as US or AU-VIC)") from None


def _is_holiday(index: pd.DatetimeIndex, code: str) -> np.ndarray:
    days = _holiday_calendar(code)
    dates = index.normalize()
    unique = pd.DatetimeIndex(dates.unique())
    flags = {d: float(d.date() in days) for d in unique}
    return np.array([flags[d] for d in dates], dtype=np.float32)


def expand_circular(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace circular variables (degrees) by their sin/cos components."""
    out = frame.copy()
    for col in CIRCULAR_VARIABLES & set(frame.columns):
        rad = np.deg2rad(out.pop(col))
        out[f"{col}_sin"] = np.sin(rad)
        out[f"{col}_cos"] = np.cos(rad)
    return out


def expand_circular_values(values: Mapping[str, float]) -> dict[str, float]:
    """:func:`expand_circular` for one observation's values."""
    out = dict(values)
    for col in CIRCULAR_VARIABLES & set(out):
        rad = np.deg2rad(out.pop(col))
        out[f"{col}_sin"], out[f"{col}_cos"] = float(np.sin(rad)), float(np.cos(rad))
    return out


def prepare_panel(
    wide: pd.DataFrame, freq: str | pd.Timedelta | None = None, max_gap: int = 3
) -> dict[str, pd.DataFrame]:
    """Split a (series_id, ts)-indexed wide frame into regularised per-series frames."""
    panel: dict[str, pd.DataFrame] = {}
    if wide.empty:
        return panel
    # Split by position rather than groupby + droplevel (a third of the time at 1,000 series).
    wide = wide if wide.index.is_monotonic_increasing else wide.sort_index()
    sids = wide.index.get_level_values("series_id")
    times = wide.index.get_level_values("ts")
    values = wide.to_numpy()
    codes, uniques = pd.factorize(sids, sort=True)
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(codes)]
    ready, steps = _ready_series(times, values, starts, stops, freq, list(wide.columns))
    for a, b, done, step in zip(starts, stops, ready, steps, strict=True):
        sid = str(uniques[codes[a]])
        if done:  # on its grid with nothing to fill: regularise's fast path, checked for all series above
            step_ = pd.Timedelta(int(step))
            panel[sid] = _grid_frame(values[a:b].astype(float), wide.columns, times[a], step_, times.name)
            continue
        f = pd.DataFrame(values[a:b], index=times[a:b], columns=wide.columns)
        if CIRCULAR_VARIABLES & set(f.columns):
            f = expand_circular(f)
        panel[sid] = regularise(f, freq=freq, max_gap=max_gap)
    return panel


def _ready_series(
    times: pd.DatetimeIndex,
    values: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    freq: str | pd.Timedelta | None,
    columns: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Which series (rows ``starts[i]:stops[i]`` of a panel sorted by series and time) are
    already what :func:`regularise` makes of them, and their steps (ns), checked for all at
    once: strictly every step (``freq``, or when None the series' own first spacing, which
    is then what ``infer_freq`` finds) from a bin edge (UTC), no value missing, no circular
    variable to expand. A stream's warm-up and a forecast prepare a thousand such series,
    where the checks one series at a time cost as much as the rest."""
    n = len(starts)
    none = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    if not n or CIRCULAR_VARIABLES & set(columns) or str(times.tz) != "UTC":
        return none
    try:
        numeric = np.asarray(values, dtype=float)
        given = pd.Timedelta(freq).value if freq is not None else 0
    except (TypeError, ValueError):
        return none
    t = times.as_unit("ns").asi8
    lengths = stops - starts
    if freq is None:  # a single time has no spacing to infer (regularise says so)
        steps = np.where(lengths > 1, t[np.minimum(starts + 1, len(t) - 1)] - t[starts], 0)
    else:
        steps = np.full(n, given, dtype=np.int64)
    # Within a series every spacing is its step: count the positions where it is not.
    # (Each series' first row compares with the previous series and is not counted.)
    broken = np.r_[0, np.diff(t) != np.repeat(steps, lengths)[1:]].astype(np.int64)
    within = np.cumsum(broken)
    regular = within[stops - 1] - within[starts] == 0
    day = pd.Timedelta(days=1).value
    aligned = (steps > 0) & ((t[starts] % day) % np.maximum(steps, 1) == 0)
    missing = np.isnan(numeric).any(axis=1) if numeric.ndim == 2 else np.isnan(numeric)
    gaps = np.r_[0, np.cumsum(missing)]
    return regular & aligned & (gaps[stops] - gaps[starts] == 0), steps


def select_covariates(
    panel: dict[str, pd.DataFrame], target: str, end: pd.Timestamp, max_missing: float = 0.3
) -> list[str]:
    """Variables other than the target that are present often enough before ``end``.

    Sparse variables (wind gusts are reported only when gusty) would mostly feed
    the model fill-in values, so they are left out.
    """
    cols: set[str] | None = None
    for frame in panel.values():
        train = frame.loc[:end].drop(columns=[GAP_COLUMN, target], errors="ignore")
        ok = {c for c in train.columns if len(train) and train[c].isna().mean() <= max_missing}
        cols = ok if cols is None else cols & ok
    return sorted(cols or [])


class Scaler(BaseModel):
    """Per-series mean and standard deviation of each column, fitted on training data only."""

    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]

    @classmethod
    def fit(cls, panel: dict[str, pd.DataFrame], columns: list[str], end: pd.Timestamp) -> Scaler:
        mean: dict[str, dict[str, float]] = {}
        std: dict[str, dict[str, float]] = {}
        for sid, frame in panel.items():
            train = frame.loc[:end]
            mean[sid], std[sid] = {}, {}
            for c in columns:
                vals = train[c].dropna() if c in train else pd.Series(dtype=float)
                mean[sid][c] = float(vals.mean()) if len(vals) else 0.0
                s = float(vals.std()) if len(vals) > 1 else 1.0
                std[sid][c] = s if np.isfinite(s) and s > 1e-8 else 1.0
        return cls(mean=mean, std=std)

    def stats(self, sid: str, column: str) -> tuple[float, float]:
        if sid in self.mean:
            return self.mean[sid][column], self.std[sid][column]
        # A series unseen in training borrows the average statistics of the others.
        m = float(np.mean([v[column] for v in self.mean.values()]))
        s = float(np.mean([v[column] for v in self.std.values()]))
        return m, s


@dataclass
class Design:
    """One series on its regular grid, ready for a model.

    ``X`` holds the scaled target, covariates and calendar features with gaps
    filled (forward, then the training mean) so any position can be an input;
    ``y`` is the scaled target with NaN where it was not observed, so no
    training target is ever invented.
    """

    series_id: str
    X: np.ndarray  # (T, F) float32
    y: np.ndarray  # (T,) float64, NaN where missing
    target_mean: float
    target_std: float

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return values * self.target_std + self.target_mean


# A missing input is carried forward this many steps, then replaced by the training mean.
FILL_LIMIT = 24


def forward_fill(values: np.ndarray, limit: int) -> np.ndarray:
    """pandas' ``ffill(limit=limit).fillna(0.0)`` of the columns of ``values`` (T, k), in numpy:
    each NaN takes the last value at most ``limit`` steps before it, else 0 (the training mean
    of a scaled input)."""
    rows = np.arange(len(values))[:, None]
    last = np.where(np.isnan(values), -1, rows)
    np.maximum.accumulate(last, axis=0, out=last)
    usable = (last >= 0) & (rows - last <= limit)
    taken = np.take_along_axis(values, np.maximum(last, 0), axis=0)
    return np.where(usable, taken, 0.0)


def build_design(
    sid: str,
    frame: pd.DataFrame,
    target: str,
    covariates: list[str],
    scaler: Scaler,
    calendar: Sequence[str] = DEFAULT_CALENDAR,
) -> Design:
    """One series' design: :func:`build_designs` of it alone."""
    return build_designs({sid: frame}, target, covariates, scaler, calendar)[sid]


def build_designs(
    frames: Mapping[str, pd.DataFrame],
    target: str,
    covariates: list[str],
    scaler: Scaler,
    calendar: Sequence[str] = DEFAULT_CALENDAR,
) -> dict[str, Design]:
    """Every series' :class:`Design`, in the order of ``frames``: its target and covariates
    scaled by the series' training statistics, forward filled (:func:`forward_fill`), and
    the calendar of its times. The series on one time grid (a panel's usually are) are
    built together, a dozen array operations per grid instead of per series (at 10,000
    series one at a time cost 4.8 s of a stream's warm-up); each series off a grid alone.
    Grouping never changes a series' arrays (each column is scaled and filled on its own)."""
    cols = [target, *covariates]
    groups: dict[tuple[object, ...], list[str]] = {}
    for sid, frame in frames.items():
        index = frame.index
        key: tuple[object, ...] = (sid,)  # off any grid: alone
        if isinstance(index, pd.DatetimeIndex) and index.freq is not None and len(index) > 1:
            key = (int(index[0].value), len(index), int(pd.Timedelta(index.freq).value), str(index.tz))
        groups.setdefault(key, []).append(sid)
    out: dict[str, Design] = {}
    for sids in groups.values():
        T, k = len(frames[sids[0]]), len(cols)
        scaled = np.empty((len(sids), T, k))
        stats = [[scaler.stats(sid, c) for c in cols] for sid in sids]
        for i, sid in enumerate(sids):
            frame = frames[sid]
            for j, c in enumerate(cols):
                scaled[i, :, j] = frame[c].to_numpy(dtype=float) if c in frame else np.nan
        scaled -= np.array([[m for m, _ in row] for row in stats])[:, None, :]
        scaled /= np.array([[sd for _, sd in row] for row in stats])[:, None, :]
        # Each column of each series filled on its own: the series' columns side by side.
        wide = scaled.transpose(1, 0, 2).reshape(T, len(sids) * k)
        filled = forward_fill(wide, FILL_LIMIT).reshape(T, len(sids), k)
        cal = calendar_features(pd.DatetimeIndex(frames[sids[0]].index), calendar)
        X = np.empty((len(sids), T, k + cal.shape[1]), dtype=np.float32)
        X[:, :, :k] = filled.transpose(1, 0, 2)
        X[:, :, k:] = cal
        for i, sid in enumerate(sids):
            m, sd = stats[i][0]
            out[sid] = Design(series_id=sid, X=X[i], y=scaled[i, :, 0].copy(), target_mean=m, target_std=sd)
    return {sid: out[sid] for sid in frames}


class OnlineDesign:
    """:func:`build_design` one observation at a time: the same scaling, the same forward
    fill (at most ``FILL_LIMIT`` steps, then the training mean) and the same calendar,
    without a DataFrame per row (a stream's latency is made of these)."""

    def __init__(
        self,
        sid: str,
        target: str,
        covariates: list[str],
        scaler: Scaler,
        calendar: Sequence[str] = DEFAULT_CALENDAR,
    ) -> None:
        self.calendar = list(calendar)
        self.zone = calendar_zone(self.calendar)  # None: the times' own zone (UTC)
        self.columns = [target, *covariates]
        stats = [scaler.stats(sid, c) for c in self.columns]
        self.mean = np.array([m for m, _ in stats])
        self.std = np.array([s for _, s in stats])
        self.last = np.zeros(len(self.columns))  # the last row's scaled, filled values
        self.fill_run = np.full(len(self.columns), FILL_LIMIT)  # steps filled since a value (capped)

    @classmethod
    def after(
        cls,
        frame: pd.DataFrame,
        design: Design,
        target: str,
        covariates: list[str],
        scaler: Scaler,
        calendar: Sequence[str] = DEFAULT_CALENDAR,
    ) -> OnlineDesign:
        """Continue where ``design`` (built from ``frame``) ends."""
        online = cls(design.series_id, target, covariates, scaler, calendar)
        if len(design.y):
            online.last = design.X[-1, : len(online.columns)].astype(np.float64)
            for j, c in enumerate(online.columns):
                # numpy, not Series.isna: a stream's warm-up does this for every series
                missing = np.isnan(frame[c].to_numpy(dtype=float)) if c in frame else np.ones(len(frame), dtype=bool)
                present = np.flatnonzero(~missing)
                online.fill_run[j] = min(len(missing) - 1 - present[-1], FILL_LIMIT) if len(present) else FILL_LIMIT
        return online

    def row(self, ts: pd.Timestamp, values: Mapping[str, float]) -> tuple[np.ndarray, float]:
        """The design row at ``ts`` from one observation's raw values by variable (absent or
        NaN: missing; directions in degrees): (X row, scaled target)."""
        values = expand_circular_values(values)
        raw = np.array([values.get(c, np.nan) for c in self.columns], dtype=np.float64)
        scaled = (raw - self.mean) / self.std
        seen = np.isfinite(scaled)
        carry = ~seen & (self.fill_run < FILL_LIMIT)
        filled = np.where(seen, scaled, np.where(carry, self.last, 0.0))
        self.fill_run = np.where(seen, 0, self.fill_run + carry)
        self.last = filled
        x = np.concatenate([filled, self._calendar_row(ts)])
        return x.astype(np.float32), float(scaled[0])

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return values * self.std[0] + self.mean[0]

    def _calendar_row(self, ts: pd.Timestamp) -> np.ndarray:
        """``calendar_features`` of one time, without building an index (a stream's hot path:
        the series observed at one time share it, so it is computed once per time)."""
        zone = self.zone or (None if ts.tz is None else str(ts.tz))
        return _calendar_row_at(ts.value, zone, tuple(self.calendar))


@functools.lru_cache(maxsize=256)
def _calendar_row_at(value: int, tz: str | None, calendar: tuple[str, ...]) -> np.ndarray:
    ts = pd.Timestamp(value, tz=tz)
    day = ts.normalize().date()
    holidays = [
        np.array([float(day in _holiday_calendar(name.removeprefix("holiday:")))], dtype=np.float32)
        for name in calendar
        if name.startswith("holiday:")
    ]
    hour = np.array([ts.hour + ts.minute / 60.0])
    row = _calendar(hour, np.array([ts.dayofyear]), np.array([ts.dayofweek]), calendar, holidays)[0].astype(np.float64)
    row.setflags(write=False)  # shared by every caller at this time
    return row


def window_ends(y: np.ndarray, lookback: int, horizon: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Positions t where the target is observed over [t-lookback+1, t+horizon].

    A window never spans a long gap: every input and every training target in it
    was observed (or filled across a short gap during regularisation).
    """
    n = len(y)
    stop = n - horizon if stop is None else min(stop, n - horizon)
    bad = np.concatenate([[0], np.cumsum(np.isnan(y))])
    t = np.arange(max(start, lookback - 1), max(stop, 0))
    if len(t) == 0:
        return t
    n_bad = bad[t + horizon + 1] - bad[t - lookback + 1]
    return t[n_bad == 0]


def make_windows(design: Design, ends: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, lookback, F) and future targets (N, horizon) for window end positions."""
    offsets = np.arange(-lookback + 1, 1)
    X = design.X[ends[:, None] + offsets[None, :]]
    future = np.arange(1, horizon + 1)
    Y = design.y[np.clip(ends[:, None] + future[None, :], 0, len(design.y) - 1)]
    return X, Y
