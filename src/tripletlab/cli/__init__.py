"""The ``tripletlab`` command: a thin argparse layer over :mod:`tripletlab.training` and
:mod:`tripletlab.evaluation`.

Subcommands: ``train`` (then pictures and ``report.html``), ``evaluate`` (a run or a
checkpoint on any dataset and split, to JSON), ``plot`` (pictures and ``report.html``),
``embed`` (a dataset to an embeddings file, :mod:`tripletlab.inference`) and ``export`` (the
model to ONNX, :mod:`tripletlab.export`). Search: ``index build`` (an index file from an
embeddings file), ``search``, ``calibrate`` (match thresholds written into the index
file) and ``match`` (each query's label, or "unknown"), over
:mod:`tripletlab.search.commands`. ``serve`` puts a run's network and an index behind a page
and a JSON API (:mod:`tripletlab.serve`, the optional ``[serve]`` extra).
Each builds a config and calls one library function. User errors (bad flags, missing data,
unusable folders, checkpoints or input files, an output that would overwrite one of the
command's inputs, a file that cannot be written: :class:`tripletlab.io.WriteError`) print one
line and exit with status 2; Ctrl-C during training saves a checkpoint and exits with 130.
Progress bars go to stderr, only when it is a terminal and without ``--quiet``.

``torchrun --nproc-per-node N -m tripletlab train ...`` trains on N processes
(:mod:`tripletlab.distributed`): rank 0 alone writes the run folder, the log and the report;
every rank's errors name the rank (``tripletlab: rank 1: error: ...``).

The modules, one concept each (every public name is importable from here; a test that
patches a library function patches it in the module that calls it):

- :mod:`~tripletlab.cli.app`: :func:`build_parser` over every subcommand and :func:`main`
  (the console script ``tripletlab``, ``python -m tripletlab``), which maps errors to exit
  statuses.
- :mod:`~tripletlab.cli.common`: the exit statuses, the flag types the subcommands share and
  :func:`format_metrics`.
- :mod:`~tripletlab.cli.progress`: :class:`ProgressBars` for the library's progress callbacks.
- :mod:`~tripletlab.cli.train`: ``train``: its flags (generated from the config's fields),
  :func:`build_config` (defaults, then
  ``--config``, then flags) and :func:`resolve_config` (checked before anything is written),
  the run folder (:class:`RunFolder`: a start that fails before the first checkpoint leaves
  nothing behind), :class:`CliReporter` (bars, ``log.jsonl``, TensorBoard, the throughput
  without warm-up steps) and :func:`cmd_train`.
- :mod:`~tripletlab.cli.evaluate`: ``evaluate`` and ``plot``.
- :mod:`~tripletlab.cli.embed`: ``embed`` and ``export``.
- :mod:`~tripletlab.cli.search`: ``index build``, ``search``, ``calibrate`` and ``match``
  (:data:`SEARCH_COMMANDS`).
- :mod:`~tripletlab.cli.serve`: ``serve`` (the token from ``--token`` or
  ``$TRIPLETLAB_TOKEN``, the warning when the host is not 127.0.0.1).
"""

from tripletlab.cli.app import build_parser, main
from tripletlab.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, format_metrics
from tripletlab.cli.embed import cmd_embed, cmd_export
from tripletlab.cli.evaluate import cmd_evaluate, cmd_plot
from tripletlab.cli.progress import ProgressBars
from tripletlab.cli.search import (
    SEARCH_COMMANDS,
    cmd_calibrate,
    cmd_index,
    cmd_match,
    cmd_search,
)
from tripletlab.cli.train import CliReporter, RunFolder, build_config, cmd_train, resolve_config

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "SEARCH_COMMANDS",
    "CliReporter",
    "ProgressBars",
    "RunFolder",
    "build_config",
    "build_parser",
    "cmd_calibrate",
    "cmd_embed",
    "cmd_evaluate",
    "cmd_export",
    "cmd_index",
    "cmd_match",
    "cmd_plot",
    "cmd_search",
    "cmd_train",
    "format_metrics",
    "main",
    "resolve_config",
]
