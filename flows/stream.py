"""Stream flow: the same loop as `streamcast stream`, under Prefect."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.retrain import deployment_launcher
from streamcast import services
from streamcast.specs import StreamSpec


@flow(name="stream", log_prints=True)
def stream_flow(spec: StreamSpec = StreamSpec(speed=0)) -> dict[str, Any]:
    """Until the source ends (a replay's period, ``stop_after_idle`` for Redis, ``max_polls``).
    A retrain runs as the ``train/retrain-daily`` deployment when a Prefect API is configured,
    else in a background process; the stream never waits for it."""
    logger = get_run_logger()
    stats = services.stream(spec, on_start=logger.info, retrain=deployment_launcher(spec))
    summary = stats.summary()
    logger.info("stream done: %s", {k: v for k, v in summary.items() if k != "retrains"})
    return summary
