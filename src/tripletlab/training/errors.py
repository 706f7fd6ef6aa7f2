"""The errors a training run raises for its user: one line each, no traceback needed."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (unusable run folder or checkpoint): one line for the user."""


class Diverged(TrainingError):
    """The run's numbers stopped being finite; the last checkpoint is left as it was."""


class NonFiniteLoss(Diverged):
    """The loss became NaN or infinite."""


class NonFiniteWeights(Diverged):
    """A weight or buffer became NaN or infinite (the loss may still look finite)."""
