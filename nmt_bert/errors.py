"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a wrong config value.

    The message is a single line, names the file (and line) where one applies, and is
    printed without a traceback.
    """


def first_line(err: BaseException | str) -> str:
    """The first non-empty line of an exception's message (or its type name): libraries'
    multi-line messages become one line."""
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(err).__name__ if isinstance(err, BaseException) else ""
