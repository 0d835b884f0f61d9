"""Errors the user can fix. The CLI turns them into one sentence and exit code 2."""


class UsageError(Exception):
    """Bad input or environment that the user can correct; never shown as a traceback."""


class DataError(UsageError):
    """A dataset is missing, truncated or malformed."""
