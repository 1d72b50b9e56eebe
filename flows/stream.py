"""Stream flow: the same loop as `streamcast stream`, under Prefect."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from pipeline.config import get_settings


@flow(name="stream", log_prints=True)
def stream_flow(
    source: str = "replay",
    dataset: str = "nyc-weather",
    speed: float = 0.0,
    start: str | None = None,
    until: str | None = None,
    redis_url: str = "redis://127.0.0.1:6379/0",
    stream: str = "streamcast:observations",
    group: str = "streamcast",
    consumer: str = "prefect-stream",
    stop_after_idle: float | None = 30.0,
    target: str = "temp",
    retrain_models: list[str] | None = None,
) -> dict[str, Any]:
    import pandas as pd

    from pipeline.streaming import StreamProcessor

    settings = get_settings()
    logger = get_run_logger()

    def retrain(tgt: str) -> None:
        from pipeline.training import train

        train(settings, target=tgt, models=retrain_models or ["naive", "seasonal_naive", "esn"])

    if source == "replay":
        from pipeline.sources.replay import replay_batches, replay_frame

        frame = replay_frame(dataset, pd.Timestamp(start) if start else None, pd.Timestamp(until) if until else None)
        batches = replay_batches(frame, speed)
    elif source == "redis":
        from pipeline.sources.redis_stream import RedisStreamSource

        batches = RedisStreamSource(redis_url, stream, group, consumer, stop_after_idle_s=stop_after_idle).batches()
    else:
        raise ValueError(f"unknown stream source {source!r}: use replay or redis")
    processor = StreamProcessor(settings, target=target, retrain=retrain)
    try:
        stats = processor.run(batches)
    finally:
        processor.close()
    summary = stats.summary()
    logger.info("stream done: %s", {k: v for k, v in summary.items() if k != "retrains"})
    return summary
