"""Train flow: backtest the candidates, log to MLflow, register behind the champion gate."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.tasks import publish_training_artifacts, train_task


@flow(name="train", log_prints=True)
def train_flow(
    target: str = "temp",
    models: list[str] | None = None,
    horizon: int = 24,
    folds: int = 30,
    epochs: int | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    result = train_task(target, models, horizon, folds, epochs, seed)
    publish_training_artifacts(result, target)
    print(f"winner {result['winner']}: {result['registered_model']} v{result['version']} -> @{result['alias']}")
    return result


if __name__ == "__main__":
    train_flow()
