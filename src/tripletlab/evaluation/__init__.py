"""Evaluation of a trained run: load its checkpoint, embed a dataset, score it, draw it.

Three layers, each usable alone:

- :func:`evaluate_embeddings`: every metric of :mod:`tripletlab.metrics` on (N, D)
  embeddings, as one flat dict (the keys of ``metrics.json``); pure, no I/O.
- :func:`evaluate_images`: embed an :class:`~tripletlab.data.ImageSet` (and its k-NN gallery
  and the held-out set of the pair threshold) with a model, then the above. The end of
  :func:`tripletlab.training.fit` calls it, so training and ``tripletlab evaluate`` share
  one implementation.
- :func:`load_run`, :func:`evaluate_run`, :func:`plot_run`: a run folder (or one ``.pt``
  checkpoint) in, metrics or pictures out; :func:`run_evaluate` and :func:`run_plot` take a
  typed config and write the files, for the ``evaluate`` and ``plot`` commands.

The modules, one concept each (every public name is importable from here):

- :mod:`~tripletlab.evaluation.common`: :data:`DEVICES` and the choice check they share.
- :mod:`tripletlab.scores` (re-exported here; it lives below :mod:`tripletlab.training`, whose
  ``fit`` ends with it): :func:`evaluate_embeddings`, :func:`evaluate_images`; the metrics
  by group (``metrics=`` selects groups) and what each costs. Embedding itself is
  :mod:`tripletlab.embedding`.
- :mod:`~tripletlab.evaluation.runs`: :func:`load_run`, :func:`run_config`,
  :func:`check_image_shape`, :func:`run_data`.
- :mod:`~tripletlab.evaluation.evaluate`: seen and unseen classes (:func:`eval_groups`),
  :func:`evaluate_run` and the ``evaluate`` command.
- :mod:`~tripletlab.evaluation.plot`: :func:`plot_run` and the ``plot`` command.
"""

from tripletlab.embedding import Progress, Stats
from tripletlab.evaluation.common import DEVICES
from tripletlab.evaluation.evaluate import (
    EVALUATION_NAME,
    SPLITS,
    EvalConfig,
    EvalGroup,
    EvalResult,
    Split,
    eval_groups,
    evaluate_run,
    evaluation_path,
    run_evaluate,
)
from tripletlab.evaluation.plot import (
    PICTURES_DIR,
    PLOT_TRAIN_ITEMS,
    PlotConfig,
    PlotResult,
    default_projections,
    plot_run,
    run_plot,
)
from tripletlab.evaluation.runs import (
    LoadedRun,
    check_image_shape,
    load_run,
    run_config,
    run_data,
)
from tripletlab.scores import (
    CLUSTERING_MAX_ITEMS,
    FARS,
    METRIC_GROUPS,
    RECALL_KS,
    THRESHOLD_FIT_MAX_ITEMS,
    VERIFICATION_MAX_ITEMS,
    MetricGroup,
    Metrics,
    evaluate_embeddings,
    evaluate_images,
    to_json,
)

__all__ = [
    "CLUSTERING_MAX_ITEMS",
    "DEVICES",
    "EVALUATION_NAME",
    "FARS",
    "METRIC_GROUPS",
    "PICTURES_DIR",
    "PLOT_TRAIN_ITEMS",
    "RECALL_KS",
    "SPLITS",
    "THRESHOLD_FIT_MAX_ITEMS",
    "VERIFICATION_MAX_ITEMS",
    "EvalConfig",
    "EvalGroup",
    "EvalResult",
    "LoadedRun",
    "MetricGroup",
    "Metrics",
    "PlotConfig",
    "PlotResult",
    "Progress",
    "Split",
    "Stats",
    "check_image_shape",
    "default_projections",
    "eval_groups",
    "evaluate_embeddings",
    "evaluate_images",
    "evaluate_run",
    "evaluation_path",
    "load_run",
    "plot_run",
    "run_config",
    "run_data",
    "run_evaluate",
    "run_plot",
    "to_json",
]
