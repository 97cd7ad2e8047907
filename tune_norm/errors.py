"""The one exception type for mistakes a user can fix (bad config, bad data, bad folder)."""


class UserError(Exception):
    """A problem in the user's input, stated in one sentence; the CLI prints it and exits 2."""
