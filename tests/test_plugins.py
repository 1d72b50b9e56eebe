"""Plug-in candidates: an installed package adds a forecaster through the
``streamcast.models`` entry-point group and it races, registers, forecasts, loads as the
MLflow pyfunc and joins the ensemble like a built-in one (examples/streamcast-drift)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.errors import InputError
from streamcast.models import candidates, default_candidates, get_model_class, plugins

ROOT = Path(__file__).resolve().parent.parent
STREAMCAST = Path(sys.executable).parent / "streamcast"


def _run(env: dict[str, str], *args: str) -> str:
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/streamcast-drift installed with pip into a folder of its own (offline)."""
    src = tmp_path_factory.mktemp("src") / "streamcast-drift"
    shutil.copytree(ROOT / "examples" / "streamcast-drift", src)
    target = tmp_path_factory.mktemp("site")
    install = ["install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", "--target", str(target)]
    subprocess.run([sys.executable, "-m", "pip", *install, str(src)], check=True, capture_output=True)
    assert list(target.glob("streamcast_drift-*.dist-info"))
    return target


@pytest.fixture
def env(plugin_path: Path, data_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(plugin_path)}


def _trending(days: int) -> pd.DataFrame:
    """Two meters whose level climbs steadily: the drift forecaster's home ground."""
    rng = np.random.default_rng(3)
    ts = pd.date_range("2024-03-01", periods=24 * days, freq="h", tz="UTC")
    frames = []
    for k, sid in enumerate(["m1", "m2"]):
        load = 20 + (0.5 + 0.2 * k) * np.arange(len(ts)) + 2 * np.sin(2 * np.pi * ts.hour / 24)
        frames.append(pd.DataFrame({"ts": ts, "meter": sid, "load": load + rng.normal(0, 0.5, len(ts))}))
    return pd.concat(frames)


@pytest.mark.slow
def test_an_installed_plugin_races_registers_forecasts_and_loads_as_pyfunc(env: dict[str, str], data_dir: Path) -> None:
    history = _trending(40)
    history.to_csv(data_dir / "meters.csv", index=False)
    _run(
        env,
        str(STREAMCAST),
        "ingest",
        "--source",
        "csv",
        "--path",
        str(data_dir / "meters.csv"),
        "--series-col",
        "meter",
    )
    help_text = _run(env, str(STREAMCAST), "train", "--help")
    assert "drift" in help_text  # --models lists it among the choices

    # The plug-in alone: first version, so it becomes the champion.
    out = _run(env, str(STREAMCAST), "train", "--target", "load", "--models", "drift", "--folds", "3")
    assert "drift" in out
    _run(env, str(STREAMCAST), "forecast", "--target", "load")
    latest = json.loads(_run(env, str(STREAMCAST), "predictions", "latest", "--target", "load", "--format", "json"))
    assert {f["model"]["name"] for f in latest} == {"drift"}
    # A climbing series: the forecast keeps climbing past the last observation.
    m1 = next(f for f in latest if f["series_id"] == "m1")
    assert m1["points"][-1]["yhat"] > m1["points"][0]["yhat"] + 5

    script = f"""
import json, mlflow, pandas as pd
from mlflow import MlflowClient
frame = pd.read_csv({str(data_dir / "meters.csv")!r}).rename(columns={{"meter": "series_id"}})
model = mlflow.pyfunc.load_model("models:/streamcast-load@champion")
fc = model.predict(frame)
runs = mlflow.search_runs(experiment_names=["streamcast"], filter_string="attributes.run_name = 'drift'")
print(json.dumps({{"rows": len(fc), "series": sorted(fc["series_id"].unique()),
                   "window": runs["params.window"].dropna().unique().tolist(),
                   "kind": MlflowClient().get_model_version_by_alias("streamcast-load", "champion").tags.get("kind")}}))
"""
    loaded = json.loads(_run(env, sys.executable, "-c", script).strip().splitlines()[-1])
    assert loaded["series"] == ["m1", "m2"] and loaded["rows"] == 2 * 24
    assert loaded["window"] == ["168"]  # its config is logged as params like a built-in's
    assert loaded["kind"] == "drift"

    # In a race with a built-in and the ensemble: the ensemble may draw on it.
    out = _run(env, str(STREAMCAST), "train", "--target", "load", "--models", "naive,drift,ensemble", "--folds", "3")
    assert all(name in out for name in ("naive", "drift", "ensemble"))
    members = _run(
        env,
        sys.executable,
        "-c",
        "import mlflow; r = mlflow.search_runs(experiment_names=['streamcast'], "
        "filter_string=\"attributes.run_name = 'ensemble'\"); print(r['params.members'].iloc[0])",
    )
    assert "drift" in members


def _fake_plugin(root: Path, name: str, value: str, module: str) -> None:
    """A package that declares entry point ``name`` as it would be installed (a dist-info folder)."""
    dist = root / f"fake_{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[streamcast.models]\n{name} = {value}\n")
    (root / f"fake_{name}.py").write_text(module)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    plugins.cache_clear()
    yield tmp_path / "site"
    plugins.cache_clear()


def test_a_broken_plugin_is_refused_in_one_line_naming_it(site: Path) -> None:
    subclass = (
        "from streamcast.models.baselines import NaiveForecaster\nclass Wrong(NaiveForecaster):\n    kind = '{}'\n"
    )
    _fake_plugin(site, "wrongkind", "fake_wrongkind:Wrong", subclass.format("other"))
    _fake_plugin(site, "notamodel", "fake_notamodel:thing", "thing = 42\n")
    _fake_plugin(site, "noimport", "fake_noimport:X", "import a_module_nobody_has\n")
    _fake_plugin(site, "naive", "fake_naive:Wrong", subclass.format("naive"))  # a built-in's name
    plugins.cache_clear()
    assert {"wrongkind", "notamodel", "noimport"} <= set(candidates())
    assert "wrongkind" in default_candidates() and default_candidates()[-1] == "ensemble"
    assert "naive" not in plugins()  # the built-in keeps its name
    for name, says in [
        ("wrongkind", "has kind 'other'"),
        ("notamodel", "is not a streamcast Forecaster subclass"),
        ("noimport", "failed to load: No module named 'a_module_nobody_has'"),
    ]:
        with pytest.raises(InputError, match=says) as err:
            get_model_class(name)
        assert "\n" not in str(err.value) and name in str(err.value) and "fake-" in str(err.value)
