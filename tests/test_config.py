"""The config file: found walking up from the current folder, paths relative to it,
the environment on top; read-only commands never create a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.config import get_settings

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project folder with sub-folders, no streamcast variables in the environment."""
    for var in ("STREAMCAST_DATA_DIR", "STREAMCAST_DB_URL", "STREAMCAST_CONFIG", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    return tmp_path


def test_every_sub_folder_finds_the_same_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "streamcast.toml").write_text('data_dir = "var/store"\nmax_gap_steps = 5\n')
    csv = project / "obs.csv"
    csv.write_text("station,ts,temp\nA,2024-01-01T00:00Z,1\nA,2024-01-01T01:00Z,2\n")

    monkeypatch.chdir(project / "notebooks" / "deep")
    res = runner.invoke(app, ["ingest", "--source", "csv", "--path", str(csv), "--series-col", "station"])
    assert res.exit_code == 0, res.output
    assert (project / "var" / "store" / "streamcast.db").exists()

    monkeypatch.chdir(project / "scripts")
    res = runner.invoke(app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert [s["series_id"] for s in status["series"]] == ["A"]
    assert status["config_file"] == str(project / "streamcast.toml")
    assert status["data_dir"] == str(project / "var" / "store")
    assert status["mlflow"] == f"sqlite:///{project / 'var' / 'store' / 'mlflow.db'}"
    human = "".join(runner.invoke(app, ["status"]).output.split())  # long paths wrap at the console's width
    assert f"settings:{project / 'streamcast.toml'}" in human and f"datafolder:{project / 'var' / 'store'}" in human
    assert get_settings().max_gap_steps == 5
    assert not (project / "scripts" / "data").exists() and not (project / "notebooks" / "deep" / "data").exists()


def test_the_environment_overrides_the_file_and_relative_sqlite_urls_follow_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "streamcast.toml").write_text(
        'db_url = "sqlite:///db/obs.db"\nmlflow_tracking_uri = "sqlite:///db/mlflow.db"\n'
    )
    monkeypatch.chdir(project / "notebooks")
    s = get_settings()
    assert s.database_url == f"sqlite:///{project / 'db' / 'obs.db'}"
    assert s.tracking_uri == f"sqlite:///{project / 'db' / 'mlflow.db'}"
    assert s.data_dir == project / "data"  # beside the file, not in the current folder
    monkeypatch.setenv("STREAMCAST_DB_URL", "sqlite:////elsewhere/x.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    s = get_settings()
    assert s.database_url == "sqlite:////elsewhere/x.db" and s.tracking_uri == "http://127.0.0.1:5000"


def test_pyproject_tool_table_and_the_walk_past_pyprojects_without_one(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.streamcast]\ndata_dir = "d"\n')
    (project / "notebooks" / "pyproject.toml").write_text('[project]\nname = "inner"\n')  # no [tool.streamcast]
    monkeypatch.chdir(project / "notebooks" / "deep")
    s = get_settings()
    assert s.config_file == project / "pyproject.toml" and s.data_dir == project / "d"


@pytest.mark.parametrize(
    ("content", "problem"),
    [("data_dir = [unclosed\n", "not valid TOML"), ('data_folder = "x"\n', "unknown setting 'data_folder'")],
)
def test_a_broken_config_file_is_one_line_and_exit_2(
    project: Path, monkeypatch: pytest.MonkeyPatch, content: str, problem: str
) -> None:
    (project / "streamcast.toml").write_text(content)
    monkeypatch.chdir(project / "scripts")
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and problem in lines[0] and str(project / "streamcast.toml") in lines[0]


def test_read_only_commands_never_create_a_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "scripts")  # no config file anywhere above a temporary folder
    for command in (["status"], ["predictions", "latest"], ["scores"]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2 and "no streamcast store at" in res.output, (command, res.output)
    assert not any(project.rglob("*.db"))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"STREAMCAST_SEED": "abc"}, "invalid setting STREAMCAST_SEED='abc': Input should be a valid integer"),
        ({"STREAMCAST_ADAPT_THRESHOLD": "-1"}, "invalid setting STREAMCAST_ADAPT_THRESHOLD='-1': Input should be"),
        ("max_gap_steps = 'many'\n", "invalid setting streamcast.toml: max_gap_steps='many': Input should be"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_where_it_was_set(
    project: Path, monkeypatch: pytest.MonkeyPatch, where: dict[str, str] | str, expected: str
) -> None:
    monkeypatch.chdir(project)
    if isinstance(where, str):
        (project / "streamcast.toml").write_text(where)
    else:
        for k, v in where.items():
            monkeypatch.setenv(k, v)
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: " + expected), res.output
    assert not (project / "data").exists()  # nothing was created
