"""The one exception type advgeom raises for bad input; the CLI prints it as one line."""
from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` (a message, an exception) on one line: its whitespace runs, newlines
    included, collapsed to single spaces, as every advgeom error and warning prints."""
    return " ".join(str(text).split())


class AdvgeomError(ValueError):
    """Bad input, missing data, corrupted file or impossible request, with a clear message."""


class DataError(AdvgeomError):
    """A data set could not be found, read or validated."""


class CheckpointError(AdvgeomError):
    """A checkpoint is missing, corrupted or does not match its config."""


class ConfigError(AdvgeomError):
    """A configuration file or override is malformed or names unknown keys."""
