"""The error type the CLI and the TUI show as one readable line instead of a traceback."""


class DgChatError(Exception):
    """A failure the user can act on; its message is one line, complete on its own."""


class DgChatWarning(UserWarning):
    """Something the user should know that does not stop the command; shown as one line."""
