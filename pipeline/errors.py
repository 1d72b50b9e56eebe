"""Exceptions that users see as one-line messages."""


class StreamcastError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""

    exit_code = 1


class InputError(StreamcastError):
    """A whole input (file, request) is unusable; nothing was written."""

    exit_code = 2


class SchemaError(StreamcastError):
    """The store's tables cannot be brought up to this version automatically."""
