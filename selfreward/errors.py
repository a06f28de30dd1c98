"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class SelfRewardError(Exception):
    """A problem the user can fix: bad config, missing file, unusable data or model."""
