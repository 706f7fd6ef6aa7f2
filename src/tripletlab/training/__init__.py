"""Training: a typed config, one plain epoch function that returns its diagnostics, and
``fit``, which runs epochs with checkpoints, resume and a final evaluation.

The loop never prints or logs by itself: :func:`train_epoch` returns :class:`EpochStats`
and calls an optional per-step callback; :func:`fit` takes a :class:`Reporter` that the CLI
implements (progress bar, JSONL log, TensorBoard). Everything that the run writes goes to
its run folder, each file atomically (temporary file + rename).

Objectives:
    - ``triplet``: online triplet loss on P x K batches, any mining mode.
    - ``contrastive``: online contrastive loss on P x K batches (``all`` or
      ``hard_negative`` pairs).
    - ``siamese``: offline random pairs, contrastive loss (siamese-triplet's SiameseMNIST).
    - ``triplet-offline``: offline random triplets (siamese-triplet's TripletMNIST).
    - ``softmax``: cross-entropy classification baseline; the embedding is the layer before
      the classifier.

Under ``torchrun`` (a process group is initialised), :func:`fit` trains data-parallel: each
rank loads its shard of every batch, triplet and contrastive losses mine over the gathered
global batch, DDP averages the gradients, and rank 0 alone reads and writes the run folder
(:mod:`tripletlab.distributed`). A single process runs exactly as without it.

The modules, one concept each (every public name is importable from here,
``from tripletlab.training import fit``):

- :mod:`~tripletlab.training.config`: :class:`TrainConfig` in its parts (:class:`DataConfig`,
  :class:`ModelConfig`, :class:`ObjectiveConfig`, :class:`OptimConfig`, :class:`RunConfig`,
  :class:`DistributedConfig`; resolved and validated by :meth:`TrainConfig.resolved`, which
  raises :class:`ConfigError` for a value out of range),
  :func:`config_from_dict` (nested or flat dicts, every value checked), the field
  descriptions the ``train`` flags are generated from (:data:`CONFIG_FIELDS`) and the
  choices (:data:`OBJECTIVES`, :data:`OPTIMIZERS`, :data:`SCHEDULES`, :data:`MININGS`,
  devices, mixed precision).
- :mod:`~tripletlab.training.errors`: :class:`TrainingError`, :class:`Diverged`
  (:class:`NonFiniteLoss`, :class:`NonFiniteWeights`).
- :mod:`~tripletlab.training.checkpoints`: :func:`load_checkpoint`
  (:data:`CHECKPOINT_VERSION`; the keys it checks, :data:`MODEL_KEYS` or :data:`RESUME_KEYS`)
  and :class:`InferenceSpec`, what each checkpoint stores so
  that the model can be used without its training data; the writes are
  :mod:`tripletlab.io`'s.
- :mod:`~tripletlab.training.devices`: :func:`pick_device` and a run's
  :func:`embedding_mode` (a :class:`tripletlab.embedding.EmbedMode`).
- :mod:`~tripletlab.training.optim`: :func:`make_optimizer`, :func:`make_schedule`.
- :mod:`~tripletlab.training.objective`: :class:`ObjectiveFn`, an objective's batches and
  loss, single-process or data-parallel.
- :mod:`~tripletlab.training.loop`: :func:`load_batch`, :func:`train_epoch` (with
  :class:`StepInfo` and :class:`EpochStats`) and :func:`evaluate`.
- :mod:`~tripletlab.training.data`: :func:`load_config_dataset`, :func:`prepare_data`
  (class split, validation hold-out), :func:`has_class_split`, :func:`inference_spec`.
- :mod:`~tripletlab.training.network`: the run's network from its config
  (:func:`run_network`) and its seeded initial weights, the untrained baseline
  (:func:`untrained_network`).
- :mod:`~tripletlab.training.reporter`: what :func:`fit` tells its caller
  (:class:`Reporter`, :class:`SilentReporter`).
- :mod:`~tripletlab.training.interrupts`: Ctrl-C deferred to the end of a step.
- :mod:`~tripletlab.training.run`: :func:`fit` as a sequence of named steps, and what it
  returns or raises (:class:`RunResult`, :class:`Interrupted`, :data:`RESUMABLE`).
"""

from tripletlab.training.checkpoints import (
    CHECKPOINT_VERSION,
    MODEL_KEYS,
    RESUME_KEYS,
    InferenceSpec,
    load_checkpoint,
)
from tripletlab.training.config import (
    CONFIG_FIELDS,
    CONFIG_PARTS,
    MININGS,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    AmpMode,
    ConfigError,
    ConfigField,
    ConfigPart,
    DataConfig,
    DeviceName,
    DistributedConfig,
    FieldKind,
    Mining,
    ModelConfig,
    Objective,
    ObjectiveConfig,
    OptimConfig,
    OptimizerName,
    RunConfig,
    Schedule,
    TrainConfig,
    config_from_dict,
    flatten_config,
)
from tripletlab.training.data import (
    has_class_split,
    inference_spec,
    load_config_dataset,
    prepare_data,
    seen_test_set,
)
from tripletlab.training.devices import embedding_mode, pick_device
from tripletlab.training.errors import Diverged, NonFiniteLoss, NonFiniteWeights, TrainingError
from tripletlab.training.loop import (
    EpochStats,
    StepInfo,
    evaluate,
    load_batch,
    train_epoch,
)
from tripletlab.training.network import run_network, untrained_network
from tripletlab.training.objective import ObjectiveFn
from tripletlab.training.optim import make_optimizer, make_schedule
from tripletlab.training.reporter import Reporter, SilentReporter
from tripletlab.training.run import (
    RESUMABLE,
    TRAINING_KEYS,
    Interrupted,
    RunResult,
    fit,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "CONFIG_FIELDS",
    "CONFIG_PARTS",
    "MININGS",
    "MODEL_KEYS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "RESUMABLE",
    "RESUME_KEYS",
    "SCHEDULES",
    "TRAINING_KEYS",
    "AmpMode",
    "ConfigError",
    "ConfigField",
    "ConfigPart",
    "DataConfig",
    "DeviceName",
    "DistributedConfig",
    "Diverged",
    "EpochStats",
    "FieldKind",
    "InferenceSpec",
    "Interrupted",
    "Mining",
    "ModelConfig",
    "NonFiniteLoss",
    "NonFiniteWeights",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveFn",
    "OptimConfig",
    "OptimizerName",
    "Reporter",
    "RunConfig",
    "RunResult",
    "Schedule",
    "SilentReporter",
    "StepInfo",
    "TrainConfig",
    "TrainingError",
    "config_from_dict",
    "embedding_mode",
    "evaluate",
    "fit",
    "flatten_config",
    "has_class_split",
    "inference_spec",
    "load_batch",
    "load_checkpoint",
    "load_config_dataset",
    "make_optimizer",
    "make_schedule",
    "pick_device",
    "prepare_data",
    "run_network",
    "seen_test_set",
    "train_epoch",
    "untrained_network",
]
