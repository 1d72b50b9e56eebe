"""Open-Meteo hourly weather over HTTP (forecast API for recent hours, archive API for history).

Requests go through httpx with retries and exponential backoff on connection
errors, timeouts and 5xx/429 answers. Only hours at or before "now" are treated
as observations; the API's future hours are forecasts and are not ingested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.sources.stream import StreamBatch

if TYPE_CHECKING:
    from streamcast.sources import OpenStream
    from streamcast.specs import IngestSpec, StreamSpec

log = logging.getLogger(__name__)

# Open-Meteo's default units (streamcast asks for no other) of its common hourly variables.
UNITS = {
    "temperature_2m": "°C",
    "apparent_temperature": "°C",
    "dew_point_2m": "°C",
    "relative_humidity_2m": "%",
    "cloud_cover": "%",
    "pressure_msl": "hPa",
    "surface_pressure": "hPa",
    "precipitation": "mm",
    "rain": "mm",
    "snowfall": "cm",
    "wind_speed_10m": "km/h",
    "wind_gusts_10m": "km/h",
    "wind_direction_10m": "°",
    "shortwave_radiation": "W/m²",
}
DEFAULT_VARIABLES = [
    "temperature_2m",
    "relative_humidity_2m",
    "dew_point_2m",
    "pressure_msl",
    "wind_speed_10m",
    "wind_direction_10m",
    "precipitation",
]


class OpenMeteoClient:
    def __init__(
        self,
        base_url: str,
        archive_url: str,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 20.0,
    ) -> None:
        self.base_url, self.archive_url = base_url.rstrip("/"), archive_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self.http = httpx.Client(timeout=timeout)

    @classmethod
    def for_settings(cls, settings: Settings) -> OpenMeteoClient:
        """A client of the APIs the settings name (``STREAMCAST_OPEN_METEO_URL`` and ``..._ARCHIVE_URL``)."""
        return cls(settings.open_meteo_url, settings.open_meteo_archive_url)

    def _get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                r = self.http.get(url, params=params)
                if r.status_code == 200:
                    data: dict[str, Any] = r.json()
                    return data
                if r.status_code == 400:
                    # Open-Meteo explains bad requests (unknown variable, bad date) in "reason".
                    reason = (
                        r.json().get("reason", r.text[:200])
                        if r.headers.get("content-type", "").startswith("application/json")
                        else r.text[:200]
                    )
                    raise InputError(f"open-meteo rejected the request: {reason}")
                last = f"HTTP {r.status_code}"
                if r.status_code not in (429, 500, 502, 503, 504):
                    break
            except (httpx.TransportError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                delay = self.backoff * 2**attempt
                log.warning("open-meteo %s failed (%s); retrying in %.1fs", url, last, delay)
                time.sleep(delay)
        raise InputError(f"open-meteo unavailable after {self.retries + 1} attempts: {last}")

    def hourly(
        self,
        latitude: float,
        longitude: float,
        variables: list[str],
        *,
        past_days: int | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> pd.DataFrame:
        """Hourly values as a wide frame indexed by UTC timestamps."""
        params: dict[str, Any] = {
            "latitude": latitude,
            "longitude": longitude,
            "hourly": ",".join(variables),
            "timezone": "UTC",
        }
        if start or end:
            url = f"{self.archive_url}/v1/archive"
            params.update({"start_date": start, "end_date": end})
        else:
            url = f"{self.base_url}/v1/forecast"
            params.update({"past_days": past_days if past_days is not None else 2, "forecast_days": 1})
        data = self._get(url, params)
        hourly = data.get("hourly")
        if not isinstance(hourly, dict) or "time" not in hourly:
            raise InputError("open-meteo answer has no hourly data")
        frame = pd.DataFrame({v: hourly.get(v) for v in variables if v in hourly})
        frame.index = pd.to_datetime(pd.Series(hourly["time"]), utc=True).rename("ts")
        return frame.apply(pd.to_numeric, errors="coerce")

    def close(self) -> None:
        self.http.close()


def observations_frame(frame: pd.DataFrame, series_id: str, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Wide rows (series_id, ts, variables) for hours that have happened."""
    now = now or pd.Timestamp.now(tz="UTC")
    past = frame[frame.index <= now].dropna(how="all")
    out = past.reset_index()
    out.insert(0, "series_id", series_id)
    return out


def poll_batches(
    client: OpenMeteoClient,
    latitude: float,
    longitude: float,
    variables: list[str],
    series_id: str,
    poll_seconds: float = 900.0,
    max_polls: int | None = None,
    now: Any = None,
) -> Iterator[StreamBatch]:
    """Poll the forecast API and yield hours newer than any yielded before, oldest first."""
    watermark: pd.Timestamp | None = None
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        try:
            frame = observations_frame(
                client.hourly(latitude, longitude, variables), series_id, now() if callable(now) else None
            )
        except InputError as exc:
            log.warning("open-meteo poll failed: %s", exc)
            frame = pd.DataFrame()
        if not frame.empty:
            fresh = frame if watermark is None else frame[frame["ts"] > watermark]
            for _, rows in fresh.groupby("ts", sort=True):
                yield StreamBatch(frame=rows.reset_index(drop=True), received_at=time.perf_counter())
            if not fresh.empty:
                watermark = fresh["ts"].max()
        if max_polls is None or polls < max_polls:
            time.sleep(poll_seconds)


def archive_frame(spec: IngestSpec, settings: Settings) -> pd.DataFrame:
    """Wide rows (series_id, ts, variables) of the archive (or recent hours) the spec asks for."""
    assert spec.latitude is not None and spec.longitude is not None  # the spec refuses it otherwise
    client = OpenMeteoClient.for_settings(settings)
    try:
        hourly = client.hourly(
            spec.latitude, spec.longitude, spec.variables or DEFAULT_VARIABLES, start=spec.start, end=spec.end
        )
    finally:
        client.close()
    frame = observations_frame(hourly, spec.location_series_id())
    if frame.empty:
        raise InputError("open-meteo returned no hourly values up to now")
    return frame


def poll_stream(spec: StreamSpec, settings: Settings) -> OpenStream:
    from streamcast.sources import OpenStream

    assert spec.latitude is not None and spec.longitude is not None  # the spec refuses it otherwise
    client = OpenMeteoClient.for_settings(settings)
    names, sid = spec.variables or DEFAULT_VARIABLES, spec.location_series_id()
    batches = poll_batches(client, spec.latitude, spec.longitude, names, sid, spec.poll_seconds, spec.max_polls)
    description = f"polling open-meteo every {spec.poll_seconds:g}s for {sid}: {', '.join(names)}"
    return OpenStream(batches, description, client.close)
