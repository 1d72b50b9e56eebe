"""--help as a new user reads it: plain metavars, help on every option, choices listed, --version."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.models import candidates

COMMANDS = [
    ["ingest"],
    ["status"],
    ["train"],
    ["forecast"],
    ["serve"],
    ["stream"],
    ["scores"],
    ["predictions", "latest"],
    ["db", "upgrade"],
]


def _help(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_option_has_a_plain_metavar_and_help(command: list[str]) -> None:
    text = _help(*command)
    assert not re.search(r"<(bool|str|int|float|list\[\w+\])", text), text
    for line in text.splitlines():
        m = re.match(r"│\s+(--[\w-]+)(.*)│", line)
        if m:
            words = re.sub(r"\[[^\]]*\]", " ", m.group(2)).split()  # without [default: ...] and ranges
            # After the option (and its --no- form and metavar) comes a sentence of help.
            prose = [w for w in words if not w.startswith("--") and not w.isupper() and not w.startswith("[")]
            assert prose, f"{' '.join(command)} {m.group(1)} has no help"


def test_choices_version_and_completion_are_offered() -> None:
    train = " ".join(_help("train").split())
    assert all(name in train for name in candidates())  # --models lists its choices
    assert "--refit --no-refit" in train
    assert "open-meteo" in _help("ingest")
    top = _help()
    assert "--version" in top and "--install-completion" in top and "--show-completion" in top
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"streamcast {version('streamcast')}"
