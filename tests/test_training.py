"""Train and compare through MLflow: nested runs, registered pyfunc, champion/challenger gate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast import services, training
from streamcast.cli import app
from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.models import Forecaster
from streamcast.specs import TrainSpec

pytestmark = pytest.mark.slow


def _history(settings: Settings, hours: int = 120) -> pd.DataFrame:
    from streamcast.store import Store

    store = Store(settings.database_url)
    wide = store.load_wide(start=pd.Timestamp("2013-12-20T00:00Z")).reset_index()
    store.dispose()
    out = wide.groupby("series_id").tail(hours).copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # the pyfunc's schema takes ISO 8601 text
    return out


def test_train_logs_runs_registers_champion_then_challenger(weather_store: Settings) -> None:
    import mlflow

    outcome = services.train(
        settings=weather_store,
        models=["naive", "seasonal_naive", "esn"],
        folds=3,
        model_overrides={"esn": {"units": 80}},
    )
    reg = outcome.registry
    assert (reg.name, reg.version, reg.alias) == ("streamcast-temp", "1", "champion")
    mase = outcome.comparison.set_index("candidate")["mase"]
    assert outcome.winner == mase.idxmin()

    client = mlflow.MlflowClient()
    parent = client.get_run(outcome.runs.parent_run_id)
    assert parent.data.tags["streamcast.winner"] == outcome.winner
    assert int(parent.data.tags["data.target_rows"]) > 4000
    # The training input is an MLflow dataset (the UI's Datasets column), the experiment a model-training one.
    (used,) = parent.inputs.dataset_inputs
    assert used.dataset.name == "streamcast-temp" and used.dataset.digest
    assert json.loads(used.dataset.source)["uri"] == str((weather_store.data_dir / "streamcast.db").resolve())
    assert {t.key: t.value for t in used.tags}.get("mlflow.data.context") == "training"
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {c.data.tags["streamcast.kind"] for c in children} == {"naive", "seasonal_naive", "esn"}
    esn_run = next(c for c in children if c.data.tags["streamcast.kind"] == "esn")
    assert {"mase", "mae", "rmse", "smape", "fit_seconds", "coverage"} <= set(esn_run.data.metrics)
    assert esn_run.data.params["units"] == "80" and esn_run.data.params["kind"] == "esn"
    steps = client.get_metric_history(esn_run.info.run_id, "mae_step")
    assert sorted(m.step for m in steps) == list(range(1, 25))
    artifacts = {a.path for a in client.list_artifacts(esn_run.info.run_id)}
    assert {"forecast_vs_actual_esn.png", "comparison.md", "series_metrics.csv"} <= artifacts
    per_series = pd.read_csv(client.download_artifacts(esn_run.info.run_id, "series_metrics.csv"))
    assert sorted(per_series["series_id"]) == ["EWR", "JFK", "LGA"]
    assert {"mae", "rmse", "smape", "mase", "coverage"} <= set(per_series.columns)
    assert per_series["mase"].mean() == pytest.approx(mase["esn"], abs=1e-6)
    assert not any(k.startswith("mase_") and k != "mase_step" for k in esn_run.data.metrics)
    version = client.get_model_version("streamcast-temp", "1")
    assert version.tags["kind"] == outcome.winner and float(version.tags["mase"]) == pytest.approx(mase.min(), abs=1e-4)

    winner_run = next(c for c in children if c.data.tags["streamcast.kind"] == outcome.winner)
    assert winner_run.data.metrics["refit_seconds"] > 0  # the refit's own metrics, on the winner's run
    # Its requirements are declared, not guessed by loading it in a child process: streamcast
    # with its model libraries and the library that wrote the winner's files, pinned as installed.
    from importlib.metadata import version as installed

    reqs = Path(mlflow.artifacts.download_artifacts("models:/streamcast-temp/1")) / "requirements.txt"
    lines = set(reqs.read_text().split())
    assert f"streamcast[train]=={installed('streamcast')}" in lines and f"numpy=={installed('numpy')}" in lines
    if outcome.winner == "esn":
        assert f"reservoirpy=={installed('reservoirpy')}" in lines
    assert not any(line.startswith(("dask", "psutil")) for line in lines), lines

    model = mlflow.pyfunc.load_model("models:/streamcast-temp@champion")
    fc = model.predict(_history(weather_store))
    assert fc.groupby("series_id").size().to_dict() == {"EWR": 24, "JFK": 24, "LGA": 24}
    assert (fc["lo"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["hi"]).all()
    assert fc[fc.series_id == "EWR"]["ts"].iloc[0] == "2013-12-31T00:00:00Z"
    # Only series_id and ts are required: a temperature-only history works too.
    fc_temp_only = model.predict(_history(weather_store)[["series_id", "ts", "temp"]])
    assert len(fc_temp_only) == 72

    # A naive-only training on the same window cannot beat the champion: it lost to it there.
    res = CliRunner().invoke(app, ["train", "--models", "naive", "--folds", "3"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "@challenger" in flat and "champion version 1 keeps its alias" in flat, flat[-800:]
    assert "already exists" not in flat and "Created version" not in flat  # MLflow's notices stay off the console
    assert str(client.get_model_version_by_alias("streamcast-temp", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("streamcast-temp", "challenger")
    assert str(challenger.version) == "2" and challenger.tags["kind"] == "naive"
    # Same window, same models: the champion re-scored gives its own MASE, naive gives its own.
    assert float(challenger.tags["champion_mase_same_window"]) == pytest.approx(mase.min(), abs=1e-4)
    assert float(challenger.tags["mase"]) == pytest.approx(mase["naive"], abs=1e-4)


def test_several_targets_train_register_and_forecast_each(weather_store: Settings) -> None:
    from mlflow import MlflowClient

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--target", "temp,humd", "--models", "naive", "--folds", "3"])
    assert res.exit_code == 2 and "no variable 'humd' in the store; nothing was trained" in res.output
    client = MlflowClient(weather_store.tracking_uri)
    assert client.search_registered_models() == []  # the first target did not train either

    res = runner.invoke(app, ["train", "--target", "temp, humid", "--models", "naive,seasonal_naive", "--folds", "3"])
    assert res.exit_code == 0, res.output
    for target in ("temp", "humid"):
        champion = client.get_model_version_by_alias(f"streamcast-{target}", "champion")
        run = client.get_run(champion.run_id)
        assert run.data.params["target"] == target  # the registered run is the candidate's: its config
    res = runner.invoke(app, ["forecast", "--target", "temp,humid"])
    assert res.exit_code == 0, res.output
    assert "forecast(s) of temp" in res.output and "forecast(s) of humid" in res.output
    for target in ("temp", "humid"):
        res = runner.invoke(app, ["predictions", "latest", "--target", target, "--format", "json"])
        latest = json.loads(res.output)
        assert {f["target"] for f in latest} == {target} and len(latest) == 3
    humid = json.loads(runner.invoke(app, ["predictions", "latest", "--target", "humid", "--format", "json"]).output)
    assert all(0 <= p["yhat"] <= 100 for f in humid for p in f["points"])  # humidity, not temperature


def test_train_rejects_unknown_model_and_empty_store(settings: Settings) -> None:
    res = CliRunner().invoke(app, ["train", "--models", "naive"])
    assert res.exit_code == 2 and "no observations" in res.output
    res = CliRunner().invoke(app, ["train", "--models", "naive,prophet"])
    assert res.exit_code == 2 and "unknown model(s) prophet" in res.output
    with pytest.raises(InputError, match="unknown model"):
        services.train(settings=settings, models=["prophet"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_serve_answers_invocations(weather_store: Settings, data_dir: Path) -> None:
    services.train(settings=weather_store, models=["naive", "seasonal_naive"], folds=2)
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # mlflow execs uvicorn from PATH, as in an activated venv
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": weather_store.tracking_uri,
        "PATH": bindir + os.pathsep + os.environ["PATH"],
    }
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/streamcast-temp@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=data_dir,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            time.sleep(0.5)
        history = _history(weather_store, 48)
        payload = {"dataframe_split": json.loads(history.to_json(orient="split", index=False))}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert r.status_code == 200, r.text
        preds = pd.DataFrame(r.json()["predictions"])
        assert preds.groupby("series_id").size().to_dict() == {"EWR": 24, "JFK": 24, "LGA": 24}
        assert {"yhat", "lo", "hi", "ts", "step"} <= set(preds.columns)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_tuning_trials_are_nested_mlflow_runs(weather_store: Settings) -> None:
    """Through the CLI, as users run it: --tune-minutes and --tune-max-trials reach the tuner."""
    import mlflow

    from streamcast.models.esn import ESNConfig

    res = CliRunner().invoke(
        app, ["train", "--models", "naive,esn", "--folds", "2", "--tune-minutes", "2", "--tune-max-trials", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "tuning: 2 trials" in res.output
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("streamcast")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("streamcast.role") == "training")
    trials = [r for r in runs if r.data.tags.get("streamcast.role") == "tuning-trial"]
    assert len(trials) == 2 and all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    assert all("val_scaled_mae" in t.data.metrics for t in trials)
    assert parent.data.tags["streamcast.tuning_folds"] == "2"  # each config scored at two cut-offs
    best = min(trials, key=lambda t: t.data.metrics["val_scaled_mae"])
    esn = next(
        r
        for r in runs
        if r.data.tags.get("streamcast.kind") == "esn" and r.data.tags.get("streamcast.role") == "candidate"
    )
    # The backtested ESN is the best trial's configuration if that beat the default on the
    # validation slice, else the default.
    default = parent.data.metrics["default_val_scaled_mae.esn"]
    untuned = ESNConfig(kind="esn")
    tuned = best.data.metrics["val_scaled_mae"] < default
    chosen = best.data.params if tuned else {"units": str(untuned.units), "leak_rate": str(untuned.leak_rate)}
    assert esn.data.params["units"] == chosen["units"]
    assert float(esn.data.params["leak_rate"]) == float(chosen["leak_rate"])


def _train_apart(
    spec: TrainSpec, settings: Settings, out_dir: Path, chunk_size: int
) -> tuple[training.TrainOutcome, Path]:
    """The fan-out flow's steps in the order it runs them, in this process; and the ESN
    refit on all the data by parts (the flow does that when it wins)."""
    plan = training.plan_fan_out(spec, settings, chunk_size, out_dir)
    spec, chunks = plan["spec"], plan["chunks"]

    def fit(c: dict[str, Any], members: dict[str, str], refit: bool = False) -> Path:
        folder = training.fit_candidate_to(spec, c["name"], c["config"], out_dir, settings, members, refit)
        if (folder / training.BEGUN).exists():
            parts = [str(training.fit_part_to(spec, folder, settings, ch, k)) for k, ch in enumerate(chunks)]
            folder = training.end_fit_to(folder, parts)
        return folder

    results: dict[str, str] = {}
    for c in sorted(plan["candidates"], key=lambda c: bool(c["members"])):  # the ensemble last
        folder = fit(c, dict(results))
        parts = [str(training.forecast_chunk_to(spec, folder, settings, ch, k)) for k, ch in enumerate(chunks)]
        results[c["name"]] = str(training.assemble_candidate_to(c["name"], folder, parts))
    winner = next(c for c in plan["candidates"] if c["name"] == training.winner_of(spec, results, settings))
    refit = str(fit(winner, {}, refit=True)) if winner["name"] == "esn" else None
    esn = next(c for c in plan["candidates"] if c["name"] == "esn")
    return training.finish_training_from(spec, results, settings, refit), fit(esn, {}, refit=True)


def test_candidates_backtested_by_chunks_of_series_give_the_same_training(
    weather_store: Settings, tmp_path: Path
) -> None:
    """The fan-out path (each candidate fit once, the ESN by parts over chunks of series,
    every backtest forecast chunk by chunk, results handed over as folders, the ensemble
    attaching its members' saved models, the ESN winner refit by parts) compares,
    calibrates and registers like train()."""
    ensemble = {"members": ["naive", "seasonal_naive", "esn"], "rounds": 10}
    esn = {"units": 40, "forecast_warmup": 96}
    spec = TrainSpec(
        models=["naive", "seasonal_naive", "esn", "ensemble"],
        folds=3,
        model_overrides={"ensemble": ensemble, "esn": esn},
    )
    together = services.train(spec, settings=weather_store)
    apart, esn_refit = _train_apart(spec, weather_store, tmp_path, chunk_size=2)  # EWR, JFK | LGA
    a = together.comparison.set_index("candidate").sort_index()
    b = apart.comparison.set_index("candidate").sort_index()
    pd.testing.assert_frame_equal(a.drop(columns="fit_seconds"), b.drop(columns="fit_seconds"), rtol=1e-9)
    assert apart.registry.version == "2" and apart.winner == together.winner
    # The ensemble's MLflow run says how it weighted and what: the weights and every
    # member's validation error as metrics, the way chosen as a tag.
    import mlflow

    run = mlflow.get_run(together.runs.candidate_run_ids["ensemble"])
    weights = together.result.candidates["ensemble"].model.weights  # type: ignore[attr-defined]
    assert {k.removeprefix("fit_weights_"): v for k, v in run.data.metrics.items() if k.startswith("fit_weights_")} == (
        pytest.approx(weights)
    )
    assert {k for k in run.data.metrics if k.startswith("fit_validation_mae_")} == {
        f"fit_validation_mae_{m}" for m in ensemble["members"]
    }
    assert run.data.tags["streamcast.fit_weighting"] in ("competitive", "forward")
    for name, mine in apart.result.candidates.items():
        theirs = together.result.candidates[name]
        np.testing.assert_allclose(mine.calibration.half_width, theirs.calibration.half_width, rtol=1e-9)
        keys = ["series_id", "origin_ts", "step"]
        pd.testing.assert_frame_equal(
            mine.forecasts.sort_values(keys).reset_index(drop=True),
            theirs.forecasts.sort_values(keys).reset_index(drop=True),
            rtol=1e-9,
        )
    # Refit by parts on all the data, the ESN forecasts as refit in one process.
    panel = training.load_panel(weather_store, "temp")
    end = max(f.index[-1] for f in panel.values())
    val_start = end - (together.result.config.val_steps - 1) * pd.Timedelta(hours=1)
    in_one = together.result.candidates["esn"].model.refit(panel, end, val_start)
    by_parts = Forecaster.load(esn_refit / "model")
    assert by_parts.fit_info["train_rows"] == in_one.fit_info["train_rows"] > 0
    pd.testing.assert_frame_equal(by_parts.predict(panel), in_one.predict(panel), rtol=1e-9)


def test_a_chunk_size_below_one_is_refused(weather_store: Settings, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="chunk size"):
        training.plan_fan_out(TrainSpec(models=["naive"]), weather_store, 0, tmp_path)


def test_every_step_of_a_fan_out_run_sees_the_panel_of_its_first_read(weather_store: Settings, tmp_path: Path) -> None:
    """A worker reads a run's panel once: each chunk is cut from it (however many chunks
    it is given), even after more observations arrive; another run reads the new data."""
    from tests.conftest import ingest_weather

    run = tmp_path / "run"
    whole = training.run_panel(weather_store, "temp", run)
    ingest_weather(weather_store, tmp_path / "earlier.csv", start="2013-10-01", end="2013-10-20")
    for chunk in (["EWR"], ["JFK"], ["LGA"], ["EWR", "JFK"], ["JFK", "LGA"], ["EWR", "LGA"]):
        part = training.run_panel(weather_store, "temp", run, chunk)
        assert list(part) == chunk
        for sid in chunk:
            pd.testing.assert_frame_equal(part[sid], whole[sid])
    again = training.run_panel(weather_store, "temp", run)
    assert all(again[sid].index.equals(f.index) for sid, f in whole.items())
    later = training.run_panel(weather_store, "temp", tmp_path / "another-run")
    assert later["EWR"].index[0] < whole["EWR"].index[0] == pd.Timestamp("2013-10-20", tz="UTC")
    # A chunk read on its own (a worker without the whole panel) is the same regularised data.
    alone = training.run_panel(weather_store, "temp", tmp_path / "a-third-run", ["JFK"])
    pd.testing.assert_frame_equal(alone["JFK"], later["JFK"])


def test_store_and_mlflow_both_on_postgresql(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-machine set-up: the store and MLflow's tracking store and registry on
    PostgreSQL (artifacts in the data folder); train, register, forecast."""
    import mlflow

    from streamcast.store import Store
    from tests.conftest import _postgres_database, ingest_weather

    store_db, mlflow_db = _postgres_database(), _postgres_database()
    try:
        store_url, mlflow_url = next(store_db), next(mlflow_db)
        monkeypatch.setenv("STREAMCAST_DB_URL", store_url)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        settings = Settings(data_dir=data_dir)
        assert settings.database_url == store_url and settings.tracking_uri == mlflow_url
        ingest_weather(settings, data_dir / "weather.csv", start="2013-11-01")
        outcome = services.train(settings=settings, models=["naive", "seasonal_naive"], folds=3)
        assert (outcome.registry.version, outcome.registry.alias) == ("1", "champion")
        version = mlflow.MlflowClient().get_model_version_by_alias("streamcast-temp", "champion")
        assert str(version.version) == "1" and mlflow.get_tracking_uri() == mlflow_url
        assert (data_dir / "mlartifacts").is_dir()
        fc = services.forecast(settings=settings)
        assert set(fc["series_id"]) == {"EWR", "JFK", "LGA"}
        store = Store(store_url)
        latest = store.latest_forecasts()
        assert len(latest) == 72 and (latest["model_version"] == "1").all()
        store.dispose()
    finally:
        store_db.close()
        mlflow_db.close()


def test_a_short_history_gets_a_backtest_that_fits_it_and_says_so(settings: Settings, data_dir: Path) -> None:
    import mlflow

    from tests.conftest import ingest_weather

    ingest_weather(settings, data_dir / "eight_weeks.csv", start="2013-11-01", end="2013-12-27")  # 56 days
    res = CliRunner().invoke(app, ["train", "--models", "naive,seasonal_naive"])
    assert res.exit_code == 0, res.output
    assert "too short for the default backtest" in res.output
    run = mlflow.search_runs(experiment_names=["streamcast"], filter_string="tags.`streamcast.role` = 'training'")
    params = run.iloc[0]
    folds, val_steps = int(params["params.backtest.folds"]), int(params["params.backtest.val_steps"])
    assert 5 <= folds < 30 and 7 * 24 <= val_steps < 720
    assert params["params.backtest.fitted_to_history"] == "True"
    # Asked for explicitly, 60 origins cannot fit (the validation slice gives way only down to a week).
    explicit = CliRunner().invoke(app, ["train", "--models", "naive", "--folds", "60"])
    assert explicit.exit_code == 2
    lines = [line for line in explicit.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not enough history to train" in lines[0] and "60 origins" in lines[0]


def test_too_short_a_history_is_refused_with_what_it_needs(settings: Settings, data_dir: Path) -> None:
    from tests.conftest import ingest_weather

    ingest_weather(settings, data_dir / "ten_days.csv", start="2013-12-01", end="2013-12-11")
    res = CliRunner().invoke(app, ["train", "--models", "naive"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not enough history to train" in lines[0] and "need 482" in lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "entry", "bad", "error"),
    [
        ("STREAMCAST_HOLIDAYS", "US", "holiday:US", "XX", "no public holiday calendar for 'XX'"),
        ("STREAMCAST_CALENDAR_TZ", "America/New_York", "tz:America/New_York", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_the_calendar_the_environment_asks_for_reaches_every_candidate(
    weather_store: Settings,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    entry: str,
    bad: str,
    error: str,
) -> None:
    """Public holidays and the calendar's time zone from the environment; a bad one stops training in one line."""
    monkeypatch.setenv(variable, value)
    outcome = services.train(settings=Settings(data_dir=weather_store.data_dir), models=["naive", "esn"], folds=2)
    for name in ("naive", "esn"):
        # Weather has no weekly rhythm: no day-of-week input; what the environment asks for is there.
        assert outcome.result.candidates[name].model.config.calendar == ["hour", "doy", entry]
    monkeypatch.setenv(variable, bad)
    with pytest.raises(InputError, match=error):
        services.train(settings=Settings(data_dir=weather_store.data_dir), models=["naive"], folds=2)


def test_a_series_with_a_weekly_rhythm_trains_with_the_day_of_week(settings: Settings, data_dir: Path) -> None:
    import numpy as np

    idx = pd.date_range("2024-01-01", periods=24 * 49, freq="h", tz="UTC")
    busy = np.asarray(idx.dayofweek < 5) * np.sin(np.pi * ((idx.hour.to_numpy() - 6) % 24) / 24) ** 2
    load = 50 + 30 * busy + np.random.default_rng(3).normal(0, 1, len(idx))
    pd.DataFrame({"ts": idx, "load": load}).to_csv(data_dir / "load.csv", index=False)
    services.ingest(settings=settings, source="csv", path=data_dir / "load.csv", series_id="grid")
    outcome = services.train(settings=settings, target="load", models=["naive", "weekly_naive", "esn"])
    assert outcome.result.candidates["esn"].model.config.calendar == ["hour", "doy", "dow"]
    assert outcome.winner in ("weekly_naive", "esn")  # the day-a-week-ago rhythm is what matters here


def test_half_hourly_data_trains_with_its_own_seasons(settings: Settings, data_dir: Path) -> None:
    """Seasons come from the frequency: a day is 48 half-hours, a week 336."""
    import numpy as np

    idx = pd.date_range("2024-01-01", periods=48 * 35, freq="30min", tz="UTC")
    day = np.sin(2 * np.pi * (idx.hour.to_numpy() * 2 + idx.minute.to_numpy() // 30) / 48)
    demand = 100 + 20 * day + np.random.default_rng(5).normal(0, 1, len(idx))
    pd.DataFrame({"ts": idx, "demand": demand}).to_csv(data_dir / "demand.csv", index=False)
    services.ingest(settings=settings, source="csv", path=data_dir / "demand.csv", series_id="grid")
    outcome = services.train(settings=settings, target="demand", models=["naive", "seasonal_naive", "mstl"])
    assert outcome.result.config.season == 48
    for name in ("seasonal_naive", "mstl"):
        assert outcome.result.candidates[name].model.config.season == 48
    assert outcome.result.candidates["mstl"].model.seasons(48 * 28) == [48, 336]  # type: ignore[attr-defined]
    # A season of 24 would be half a day out of phase: the day-ago value beats the last one.
    mase = outcome.comparison.set_index("candidate")["mase"]
    assert mase["seasonal_naive"] < 0.5 * mase["naive"]


def test_a_short_backtest_cannot_overturn_the_champion(weather_store: Settings) -> None:
    """The champion won on 3 origins; a better model on 2 may be registered, never crowned."""
    import mlflow

    first = services.train(settings=weather_store, models=["naive"], folds=3)
    assert first.registry.alias == "champion"
    res = CliRunner().invoke(app, ["train", "--models", "naive,esn", "--folds", "2"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "champion version 1 keeps its alias" in flat and "moving @champion takes at least 30" in flat, flat[-600:]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("streamcast-temp", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("streamcast-temp", "challenger")
    assert challenger.tags["origins"] == "2" and float(challenger.tags["mase"]) < float(
        challenger.tags["champion_mase_same_window"]
    )


def test_the_registered_version_is_the_winner_refit_on_all_the_data(weather_store: Settings) -> None:
    """The version that forecasts has seen every observation; the champion gate still scores
    the fit the backtest measured, which never saw the window it is scored on."""
    import mlflow

    from streamcast import tracking
    from streamcast.bundle import ForecastBundle

    outcome = services.train(
        settings=weather_store, models=["naive", "esn"], folds=3, model_overrides={"esn": {"units": 80}}
    )
    history = training.load_panel(weather_store, "temp")
    last = max(f.index[-1] for f in history.values())
    assert outcome.registry.refit_through == last.isoformat()
    bundle = ForecastBundle(tracking.download_bundle("temp", "champion")[0])
    assert bundle.meta["refit"] is True and bundle.meta["trained_through"] == last.isoformat()
    winner = outcome.result.candidates[outcome.winner].model
    assert bundle.model.scaler != winner.scaler  # refit: statistics through the last observation
    assert bundle.backtest_model.scaler == winner.scaler  # the backtest's fit travels along
    # Intervals from the backtest's out-of-sample residuals, as the refit will forecast.
    from streamcast.backtest import Calibration

    bt = outcome.result.candidates[outcome.winner].forecasts.dropna(subset=["actual"])
    expected = Calibration.from_residuals(bt.assign(residual=bt["actual"] - bt["yhat"]), 24, 0.9)
    assert bundle.calibration.half_width.tolist() == pytest.approx(expected.half_width.tolist())
    client = mlflow.MlflowClient()
    run = client.get_run(outcome.registry.run_id)
    assert run.data.tags["streamcast.refit_train_end"] == last.isoformat() and "refit_seconds" in run.data.metrics
    # What the refit's fit reports is logged beside it (a large panel's network: warm_start).
    assert run.data.metrics["refit_train_rows"] > 0
    assert run.data.metrics["refit_forecast_warmup"] == bundle.model.config.forecast_warmup  # measured by the refit

    # --no-refit registers the backtest's fit; the gate re-scores the champion's backtest
    # fit on this window (the refit has seen it): its MASE is the one the backtest measured.
    res = CliRunner().invoke(app, ["train", "--models", "naive", "--folds", "3", "--no-refit"])
    assert res.exit_code == 0, res.output
    assert "refit on all the data" not in res.output
    challenger = client.get_model_version_by_alias("streamcast-temp", "challenger")
    mase = outcome.comparison.set_index("candidate")["mase"]
    assert float(challenger.tags["champion_mase_same_window"]) == pytest.approx(mase.min(), abs=1e-4)
    unrefit = ForecastBundle(tracking.download_bundle("temp", "challenger")[0])
    assert unrefit.meta["refit"] is False and not (unrefit.path / "backtest_forecaster").exists()
    assert unrefit.meta["trained_through"] == outcome.result.train_end.isoformat()


def _panel_forecasts(n_series: int) -> tuple[object, dict[str, pd.DataFrame], pd.DataFrame]:
    """A candidate's backtest forecasts for ``n_series`` synthetic series (ids with markup)."""
    import numpy as np

    from streamcast.backtest import CandidateResult

    idx = pd.date_range("2024-01-01", periods=24 * 6, freq="h", tz="UTC")
    history, rows = {}, []
    for k in range(n_series):
        sid = f"$meter_{k}$ [b]"
        history[sid] = pd.DataFrame({"temp": np.sin(np.arange(len(idx)) / 4) + k}, index=idx)
        for origin in idx[48:-24:24]:
            ts = pd.date_range(origin + pd.Timedelta(hours=1), periods=24, freq="h")
            actual = history[sid]["temp"].reindex(ts).to_numpy()
            yhat = actual + 0.1 * (k + 1)
            rows.append(
                pd.DataFrame(
                    {"series_id": sid, "origin_ts": origin, "step": np.arange(1, 25), "ts": ts}
                    | {"yhat": yhat, "lo": yhat - 1, "hi": yhat + 1, "actual": actual}
                )
            )
    fc = pd.concat(rows, ignore_index=True)
    per_series = pd.DataFrame({"series_id": list(history), "mase": [0.1 * (k + 1) for k in range(n_series)]})
    return CandidateResult("esn", None, fc, None, 0.0, 0.0), history, per_series  # type: ignore[arg-type]


def test_forecast_plots_have_a_fixed_budget_whatever_the_number_of_series(tmp_path: Path) -> None:
    """Three series are drawn in full; a thousand give the best, median and worst plus one
    panel with every series' MASE, so the figure does not grow with the panel."""
    from PIL import Image

    from streamcast.tracking import plot_forecasts, plotted_series

    cand, history, per_series = _panel_forecasts(3)
    assert [sid for sid, _ in plotted_series(per_series)] == sorted(history)
    small = Image.open(plot_forecasts(cand, history, "temp", per_series, tmp_path / "3.png")).size

    cand, history, per_series = _panel_forecasts(41)
    chosen = plotted_series(per_series)
    assert chosen == [
        ("$meter_0$ [b]", "best MASE"),
        ("$meter_20$ [b]", "median MASE"),
        ("$meter_40$ [b]", "worst MASE"),
    ]
    many = Image.open(plot_forecasts(cand, history, "temp", per_series, tmp_path / "41.png")).size
    assert many[0] == small[0] and many[1] <= small[1] * 4 / 3 + 1  # one panel more, not 38


def test_a_challenger_beats_the_champion_only_by_more_than_float_noise() -> None:
    """Seen on a 3-meter load panel: the same ESN re-scored from its bundle differed in the
    last digits and train said the challenger was better but held back at MASE 0.703 vs 0.703."""
    from streamcast.tracking import beats

    assert not beats(0.70300000000001, 0.703) and not beats(0.703, 0.70300000000001)
    assert beats(0.70, 0.703) and not beats(0.703, 0.70)


def test_training_data_digest_covers_every_row(settings: Settings) -> None:
    """The dataset logged with a training run: its digest changes with any row (MLflow's
    own digest reads only the first 10,000), and its schema names the three columns."""
    import mlflow
    import numpy as np

    from streamcast import tracking

    tracking.configure(settings)
    idx = pd.date_range("2024-01-01", periods=6000, freq="h", tz="UTC")
    panel = {sid: pd.DataFrame({"temp": np.arange(6000.0) + k}, index=idx) for k, sid in enumerate(["a", "b"])}
    edited = {**panel, "b": panel["b"].assign(temp=lambda f: f["temp"].where(f.index != idx[-1], -1.0))}
    digests = []
    for p in (panel, panel, edited):
        with mlflow.start_run() as run:
            tracking.log_training_data(p, "temp", None)
        (used,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
        digests.append(used.dataset.digest)
        schema = json.loads(used.dataset.schema)["mlflow_colspec"]
        assert [(c["name"], c["type"]) for c in schema] == [
            ("series_id", "string"),
            ("ts", "datetime"),
            ("temp", "double"),
        ]
    assert digests[0] == digests[1] != digests[2]
