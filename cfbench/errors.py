"""Errors a user can cause: each one is printed by the CLI as one line, no traceback."""


class CfbenchError(Exception):
    """A problem with the user's input or environment; the message says what to do."""
