"""What a streaming source hands to the processor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd


@dataclass
class StreamBatch:
    """Wide rows (series_id, ts, variables...) that arrived together.

    ``ack`` is called only after everything derived from the batch is committed:
    with an idempotent store, redelivery after a crash loses and doubles nothing.
    """

    frame: pd.DataFrame
    received_at: float
    ack: Callable[[], None] | None = None
