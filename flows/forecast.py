"""Forecast flow: forecast every series from the champion and publish the latest table."""

from __future__ import annotations

from prefect import flow

from flows.tasks import forecast_task, latest_forecasts_task, publish_forecast_artifact


@flow(name="forecast", log_prints=True)
def forecast_flow(target: str = "temp", series: list[str] | None = None) -> list[str]:
    ids = forecast_task(target, series)
    publish_forecast_artifact(latest_forecasts_task(target), target)
    print(f"issued {len(ids)} forecast(s) of {target}")
    return ids


if __name__ == "__main__":
    forecast_flow()
