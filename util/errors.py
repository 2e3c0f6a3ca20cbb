"""One exception type for problems the user can fix (bad flags, bad data).

The entry point catches it, prints one line naming the problem and the fix, and
exits non-zero before anything is written; everything else is a real bug and
keeps its traceback.
"""


class ConfigError(ValueError):
    """A user-fixable problem with flags or input data."""
