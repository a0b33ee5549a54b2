"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a wrong config value.

    The message is a single line, names the file (and line) where one applies, and is
    printed without a traceback.
    """
