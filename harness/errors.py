"""The one exception type the CLI turns into a single clear error line and a non-zero exit."""


class HarnessError(Exception):
    """A problem the user can fix (bad flag, missing data, unknown backend): shown as one line, no traceback."""
