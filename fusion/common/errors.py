"""The one project exception: its message is a single line a user can act on."""


class FusevalError(Exception):
    """A user-facing error; the CLI prints it as one line and exits non-zero."""
