"""The ``streamcast`` command line: thin commands (``app.py``) over the service layer,
and one rendering module (``render.py``) that ``make run``'s output shares."""

from __future__ import annotations

import sys

from streamcast.cli.app import app, report_error
from streamcast.errors import StreamcastError


def main() -> None:
    """The ``streamcast`` console script: a :class:`StreamcastError` that escapes a command
    (a store that cannot be upgraded, say) is one line and an exit code, no traceback."""
    try:
        app()
    except StreamcastError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
