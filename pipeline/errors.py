"""Exceptions that users see as one-line messages.

The library raises these, never bare ValueError/LookupError for a user's mistake: the
CLI prints the message on one line with the class' exit code, the HTTP API maps
:class:`NotFoundError` to 404, and flows fail with the same message.
"""


class StreamcastError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""

    exit_code = 1


class InputError(StreamcastError):
    """A whole input (file, request, option) is unusable; nothing was written."""

    exit_code = 2


class NotFoundError(InputError):
    """What was asked for does not exist (yet): a series, a champion, a forecast."""


class SchemaError(StreamcastError):
    """The store's tables cannot be brought up to this version automatically."""


class UnavailableError(StreamcastError):
    """A service the command needs (the store's database, the Redis broker) cannot be reached."""

    exit_code = 3
