"""The errors a training run raises for its user: one line each, no traceback needed."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (unusable run folder or checkpoint): one line for the user."""


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""
