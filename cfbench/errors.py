"""Errors a user can cause: each one is printed by the CLI as one line, no traceback."""


class CfbenchError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class MissingWeights(CfbenchError):
    """A published weight file that is not where it was looked for; ``name`` is its entry
    in `cfbench.weights.WEIGHTS`, so that a run can list every missing file at once."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name
