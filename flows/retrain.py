"""A stream's retrain as a Prefect deployment run: where a Prefect API is configured
(``PREFECT_API_URL``), a drift or interval trigger in the stream flow creates a run of
``train/retrain-daily`` for the target and its work pool's workers train; the stream
polls that run's state at its checks and swaps to the new champion when the alias moves.
Without a Prefect API the stream starts ``streamcast train`` in a background process
(:func:`streamcast.retraining.background_launcher`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from streamcast.retraining import Launcher
from streamcast.specs import StreamSpec

RETRAIN_DEPLOYMENT = "train/retrain-daily"


@dataclass
class DeploymentJob:
    """A flow run of the retrain deployment, polled through the Prefect API."""

    flow_run_id: uuid.UUID
    description: str

    def poll(self) -> int | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(self.flow_run_id).state
        if state is None or not state.is_final():
            return None
        return 0 if state.is_completed() else 1


def deployment_launcher(spec: StreamSpec, deployment: str = RETRAIN_DEPLOYMENT) -> Launcher | None:
    """Run ``deployment`` for the target with the stream's ``retrain_models``; None when no
    Prefect API is configured (the stream then trains in a background process)."""
    if not PREFECT_API_URL.value():
        return None

    def launch(target: str) -> DeploymentJob:
        parameters = {"spec": {"target": target, "models": list(spec.retrain_models)}}
        run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
        return DeploymentJob(run.id, f"{deployment} flow run {run.name} ({run.id})")

    return launch
