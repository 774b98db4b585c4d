"""The one error type for user mistakes (bad setting, path or file)."""


class LicSweepError(Exception):
    """A problem the user can fix: the message names the setting or file and what to do.

    Entry points print it without a traceback and exit non-zero; bugs keep their traceback.
    """


class ConfigError(LicSweepError, ValueError):
    """A setting has a value that cannot work."""
