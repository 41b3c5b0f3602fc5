"""User-facing errors: the CLI prints the message on one line and exits with code 2."""


class GdistillError(Exception):
    """Bad input or state the user can fix; the message says what was wrong and what to do."""


class TrainingDiverged(GdistillError):
    """A non-finite loss: training stops and keeps its last good checkpoint."""
