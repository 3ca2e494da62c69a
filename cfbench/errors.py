"""Errors a user can cause: each one is printed by the CLI as one line, no traceback."""


class CfbenchError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class MissingWeights(CfbenchError):
    """Published weight files that are not where they were looked for; ``names`` are their
    entries in `cfbench.weights.WEIGHTS`, so that a run can list every missing file at once."""

    def __init__(self, message: str, *names: str):
        super().__init__(message)
        self.names = list(names)
