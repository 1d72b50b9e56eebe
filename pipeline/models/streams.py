"""Following one series one observation at a time (the streaming hook of every model).

``Forecaster.stream(series_id, history)`` returns a :class:`SeriesStream` positioned
after the history; the stream processor feeds it each new observation and asks for a
fresh forecast. By default a window of recent rows is kept and the model re-predicts
from its end; the ESN steps its reservoir instead, the ensemble combines its members'.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from streamcast.features import Design, OnlineDesign

if TYPE_CHECKING:
    from streamcast.models.base import Forecaster


class SeriesStream(ABC):
    """One series' forecasting state."""

    @abstractmethod
    def advance(self, ts: pd.Timestamp, values: Mapping[str, float]) -> None:
        """Take the observation at ``ts`` (raw values by variable; missing ones are absent)."""

    @abstractmethod
    def forecast(self) -> np.ndarray | None:
        """The next H values from the current state, or None while there is nothing to forecast from."""

    # Many series at one time step: a family whose state is an array (the ESN's reservoir)
    # advances and forecasts them all in one matrix product; by default one after another.
    @classmethod
    def advance_all(cls, streams: Sequence[Self], ts: pd.Timestamp, values: Sequence[Mapping[str, float]]) -> None:
        """:meth:`advance` each stream (of this class) with its values at ``ts``."""
        for stream, v in zip(streams, values, strict=True):
            stream.advance(ts, v)

    @classmethod
    def forecast_all(cls, streams: Sequence[Self]) -> list[np.ndarray | None]:
        """:meth:`forecast` of each stream (of this class)."""
        return [stream.forecast() for stream in streams]


class DesignStream(SeriesStream):
    """A stream whose model reads scaled design rows, built one at a time like ``build_design``."""

    def __init__(self, online: OnlineDesign) -> None:
        self.online = online

    def advance(self, ts: pd.Timestamp, values: Mapping[str, float]) -> None:
        x, y = self.online.row(ts, values)
        self._push(x, y)

    def forecast(self) -> np.ndarray | None:
        scaled = self._forecast_scaled()
        return None if scaled is None else self.online.unscale(scaled)

    @abstractmethod
    def _push(self, x: np.ndarray, y: float) -> None:
        """Take one scaled input row and the scaled target (NaN if not observed)."""

    @abstractmethod
    def _forecast_scaled(self) -> np.ndarray | None: ...


class WindowStream(DesignStream):
    """The last ``context`` design rows in a buffer; each forecast re-predicts from its end."""

    def __init__(self, model: Forecaster, design: Design, online: OnlineDesign, context: int) -> None:
        super().__init__(online)
        self.model, self.context = model, context
        self._design = design
        n = min(len(design.y), context)
        # Twice the context, so that rows shift back only once per ``context`` observations.
        self._X = np.zeros((2 * context, design.X.shape[1]), dtype=np.float32)
        self._y = np.full(2 * context, np.nan)
        self._X[:n], self._y[:n] = design.X[len(design.y) - n :], design.y[len(design.y) - n :]
        self._n = n

    def _push(self, x: np.ndarray, y: float) -> None:
        if self._n == len(self._y):
            keep = self.context - 1
            self._X[:keep], self._y[:keep] = self._X[self._n - keep : self._n], self._y[self._n - keep : self._n]
            self._n = keep
        self._X[self._n], self._y[self._n] = x, y
        self._n += 1

    def _forecast_scaled(self) -> np.ndarray | None:
        if self._n == 0:
            return None
        return self.model.forecast_scaled(self._window(), np.array([self._n - 1]))[0]

    def _window(self) -> Design:
        d = self._design
        return Design(d.series_id, self._X[: self._n], self._y[: self._n], d.target_mean, d.target_std)

    @classmethod
    def forecast_all(cls, streams: Sequence[WindowStream]) -> list[np.ndarray | None]:
        """Every stream's forecast with one :meth:`Forecaster.forecast_scaled_many` call per
        model (a network forecasts all its series in one batched forward pass, where one call
        per series cost ~2 ms each: 7 s an hour for an ensemble of two networks at 1,000 series)."""
        out: list[np.ndarray | None] = [None] * len(streams)
        by_model: dict[int, list[int]] = {}
        for k, stream in enumerate(streams):
            if stream._n:
                by_model.setdefault(id(stream.model), []).append(k)
        for ks in by_model.values():
            model = streams[ks[0]].model
            scaled = model.forecast_scaled_many(
                [streams[k]._window() for k in ks], [np.array([streams[k]._n - 1]) for k in ks]
            )
            for k, forecast in zip(ks, scaled, strict=True):
                out[k] = streams[k].online.unscale(forecast[0])
        return out
