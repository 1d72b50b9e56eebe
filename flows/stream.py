"""Stream flow: the same loop as `streamcast stream`, under Prefect."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from streamcast import services
from streamcast.specs import StreamSpec


@flow(name="stream", log_prints=True)
def stream_flow(spec: StreamSpec = StreamSpec(speed=0)) -> dict[str, Any]:
    """Until the source ends (a replay's period, ``stop_after_idle`` for Redis, ``max_polls``)."""
    logger = get_run_logger()
    stats = services.stream(spec, on_start=logger.info)
    summary = stats.summary()
    logger.info("stream done: %s", {k: v for k, v in summary.items() if k != "retrains"})
    return summary
