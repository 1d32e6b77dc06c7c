"""Errors that the user can fix, as opposed to bugs in tfd_sweep."""


class UserError(Exception):
    """A problem the user can fix: a bad value, a bad data file, an unwritable path.

    The entry points print the message alone, without a traceback, and exit non-zero.
    The message names the value or file, what was expected, what was found and the fix.
    """


class ConfigError(UserError):
    """One or more invalid configuration values."""


class DataError(UserError):
    """A missing or malformed data file."""
