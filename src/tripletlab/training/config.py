"""The typed run config: :class:`TrainConfig` in six parts (:class:`DataConfig`,
:class:`ModelConfig`, :class:`ObjectiveConfig`, :class:`OptimConfig`, :class:`RunConfig`,
:class:`DistributedConfig`), its ``Literal`` choices, the defaults resolved per dataset and
objective, and :func:`config_from_dict`, which reads and checks a config dict.

Each field carries its help text (and flag name, short option, metavar where they differ
from the field's) in its metadata; :data:`CONFIG_FIELDS` describes every field once, for
:func:`config_from_dict` and for the ``tripletlab train`` flags, which are generated from it.
A field's flat key (``lr``, ``model``, ``distributed_loss``) is its flag without the dashes;
``config.json`` is written nested (``{"optim": {"lr": ...}}``) and both layouts are read.
"""

from __future__ import annotations

import copy
import math
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from tripletlab.checks import check_choice
from tripletlab.data import (
    DATASET_FORMS,
    Augmentation,
    absolute_dataset,
    default_hflip,
    default_image_size,
)
from tripletlab.data.load import FOLDER_IMAGE_SIZE
from tripletlab.data.photo import PHOTO_GRAYSCALE, PHOTO_JITTER, PHOTO_SCALE
from tripletlab.distances import Distance
from tripletlab.distributed import DistributedLoss
from tripletlab.losses import PAIR_MININGS, TRIPLET_MININGS, PairMining, TripletMining
from tripletlab.models import PRETRAINED_MODELS, WEIGHTS_URL_ENV, ModelName
from tripletlab.samplers import BIG_CLASS, TARGET_BATCH, SmallClassPolicy

Objective = Literal["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
OptimizerName = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[OptimizerName, ...] = get_args(OptimizerName)
Schedule = Literal["cosine", "step", "constant"]
SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)
DeviceName = Literal["auto", "cpu", "cuda"]
AmpMode = Literal["auto", "on", "off"]
#: A mining of either online objective, or ``none`` (what the other objectives resolve to).
Mining = Literal[TripletMining, PairMining, "none"]
MININGS: tuple[Mining, ...] = get_args(Mining)

K = TypeVar("K", bound=str)

# ------------------------------------------------------------- defaults per dataset, objective

# 28x28 sets are centred; a padded random crop lowered Fashion-MNIST's 1-NN accuracy at the
# default budget (docs/results.md); image folders keep it.
_CROP_PADDING: dict[str, int] = {"fashion-mnist": 0, "mnist": 0, "digits": 1}
_IMAGEFOLDER_CROP_PADDING = 2
_EARLIER_DEFAULT_IMAGE_SIZE = 28  # the default of every dataset before 48 for folders

# semi-hard: batch-hard from a fresh network collapses to d_ap = d_an (the loss sits at the
# margin) at these learning rates; semi-hard does not (bench_models).
_MINING: dict[Objective, Mining] = {"triplet": "semi_hard", "contrastive": "hard_negative"}


def _default_crop_padding(dataset: str) -> int:
    """The random crop's padding for ``dataset`` when none is given."""
    return _CROP_PADDING.get(dataset, _IMAGEFOLDER_CROP_PADDING)


def _default_mining(objective: Objective) -> Mining:
    """The mining of ``objective`` when none is given (``none`` for the offline ones)."""
    return _MINING.get(objective, "none")


def _default_margin(objective: Objective) -> float:
    """The margin of ``objective`` when none is given: 1.0 between contrastive pairs, 0.2
    between the distances of a triplet."""
    return 1.0 if objective in ("contrastive", "siamese") else 0.2


def _show(value: object) -> str:
    """A setting as it is written on the command line: ``true``, ``0.001``, ``0,1,2``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _by_key(keys: tuple[K, ...], rule: Callable[[K], object]) -> str:
    """``a, b 1; c 2``: what ``rule`` gives each key, keys with the same value together."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(_show(rule(key)), []).append(key)
    return "; ".join(f"{', '.join(k)} {v}" for v, k in groups.items())


def _per(what: str, keys: tuple[K, ...], rule: Callable[[K], object]) -> str:
    """``default per WHAT: a, b 1; c 2``: the default ``rule`` gives each key, keys with the
    same value together."""
    return f"default per {what}: " + _by_key(keys, rule)


def _digits_augmentation(dataset: str) -> str:
    """What ``--augment digits`` does to ``dataset`` with the default crop padding and flips."""
    crop, flip = _default_crop_padding(dataset) > 0, default_hflip(dataset)
    return {
        (True, True): "crops and flips",
        (True, False): "crops only",
        (False, True): "flips only",
        (False, False): "nothing",
    }[crop, flip]


def _flag(
    help: str = "",
    *,
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
) -> dict[str, str | None]:
    """A config field's metadata, what its ``tripletlab train`` flag needs: the help text
    (the flag adds the default unless it is None, when the text must say what None means),
    the flag's name when it is not the field's, a short option, a metavar."""
    return {"help": help, "flag": flag, "short": short, "metavar": metavar}


class ConfigError(ValueError):
    """A setting out of range: one line naming the flag (``--lr must be ...``), with the
    config key and the problem kept apart (:attr:`key`, :attr:`problem`) so that a caller
    that read the value from a file can name the file and the key instead."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"--{key.replace('_', '-')} {problem}")


#: Passes over the training set of a default run (Fashion-MNIST's tuned length, docs/results.md).
DEFAULT_PASSES = 13
#: Steps of a default run at least: a small training set is passed over more often.
MIN_STEPS = 3000
#: Steps of a default epoch at least (one validation, one checkpoint an epoch).
MIN_EPOCH_STEPS = 100
#: Validations without a better score that stop a run with class-disjoint validation.
DEFAULT_PATIENCE = 5

#: The fraction of the training classes that validates a run with unseen test classes.
DEFAULT_VAL_CLASSES = 0.2


def _check_class_split(d: DataConfig) -> None:
    """The class split's rules that hold for every dataset (the class ids themselves are
    checked against the data when it is loaded)."""
    v = d.val_classes
    if v is not None and (v < 0 or (v >= 1 and v != int(v))):
        raise ConfigError(
            "val_classes",
            f"must be 0, a fraction in (0, 1) or a whole number of classes, got {_show(v)}",
        )
    if d.unseen_classes is not None:
        if d.unseen_classes < 2:
            raise ConfigError(
                "unseen_classes",
                f"must be >= 2 (held-out classes are scored among themselves), got "
                f"{d.unseen_classes}; leave it out to train on every class",
            )
        if d.train_classes or d.test_classes:
            given = "train_classes" if d.train_classes else "test_classes"
            raise ConfigError(
                "unseen_classes",
                f"and --{given.replace('_', '-')} are two ways to split the classes; give one",
            )
    for key, ids in (("train_classes", d.train_classes), ("test_classes", d.test_classes)):
        if ids and min(ids) < 0:
            raise ConfigError(key, f"must be class ids >= 0, got {_show(ids)}")
    overlap = sorted(set(d.train_classes or ()) & set(d.test_classes or ()))
    if overlap:
        raise ConfigError(
            "test_classes", f"must not repeat training classes, got {_show(overlap)} in both"
        )


def _check_photo_settings(d: DataConfig) -> None:
    """The photo preset's settings in their ranges (checked whatever ``augment`` is)."""
    if not 0 < d.crop_scale <= 1:
        raise ConfigError("crop_scale", f"must be in (0, 1], got {_show(d.crop_scale)}")
    if not 0 <= d.jitter <= 2:
        raise ConfigError("jitter", f"must be in [0, 2], got {_show(d.jitter)}")
    if not 0 <= d.grayscale <= 1:
        raise ConfigError("grayscale", f"must be a probability in [0, 1], got {_show(d.grayscale)}")


def _check_pretrained(m: ModelConfig, o: OptimConfig) -> None:
    """``--pretrained`` fits the model (a path made absolute, in place), and the settings
    that keep a pretrained backbone's weights are given with it."""
    if m.pretrained is None:
        for key, on in (
            ("freeze_backbone_epochs", o.freeze_backbone_epochs > 0),
            ("frozen_backbone", o.frozen_backbone),
            ("freeze_batchnorm", o.freeze_batchnorm),
        ):
            if on:
                raise ConfigError(key, "keeps what a pretrained backbone learnt; add --pretrained")
        return
    if m.name not in PRETRAINED_MODELS:
        raise ConfigError(
            "pretrained",
            f"needs one of the models {', '.join(PRETRAINED_MODELS)} (torchvision's), not {m.name}",
        )
    if m.width not in (None, 64):
        raise ConfigError("pretrained", f"needs torchvision's width 64, not --width {m.width}")
    if not m.pretrained:
        raise ConfigError("pretrained", "must be imagenet or the path of a weights file")
    if m.pretrained != "imagenet":
        m.pretrained = os.path.abspath(os.path.expanduser(m.pretrained))


# ------------------------------------------------------------------------------- the parts


@dataclass
class DataConfig:
    """The dataset, its class split and validation hold-out, and the augmentation."""

    dataset: str = field(
        default="fashion-mnist",
        metadata=_flag(
            f"{', '.join(DATASET_FORMS)}; imagefolder:PATH: one sub-folder of images per "
            "class; csv:FILE: a table of path,label[,split] rows (open-metric-learning's df.csv "
            "too); cub200, cars196, sop (Stanford Online Products), inshop (In-Shop, with a "
            "query/gallery test): the extracted archives, with the class-disjoint splits",
            metavar="NAME",
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_flag(
            "folder holding the IDX files (default: $TRIPLETLAB_DATA, system locations, "
            "~/.cache/tripletlab, then a download)",
            metavar="DIR",
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_flag(
            "image folders, csv tables, benchmarks: where their images are cached, decoded at "
            "--image-size (default: $TRIPLETLAB_IMAGE_CACHE, else ~/.cache/tripletlab/images)",
            metavar="DIR",
        ),
    )
    workers: int | None = field(
        default=None,
        metadata=_flag(
            "processes that decode the images of image folders, csv tables and benchmarks "
            "into the cache (default: the CPUs this process may use, at most 16)"
        ),
    )
    image_size: int | None = field(
        default=None,
        metadata=_flag(
            "side the images are resized to: image folders, csv tables and the benchmarks "
            f"always (default {FOLDER_IMAGE_SIZE}), fashion-mnist and mnist when not 28 (their "
            "default); digits stay 8x8"
        ),
    )
    strict: bool = field(
        default=False,
        metadata=_flag(
            "image folders, csv tables, benchmarks: missing or unreadable files are errors"
        ),
    )
    train_classes: list[int] | None = field(
        default=None,
        metadata=_flag(
            "train on these class ids only (e.g. 0,1,2,3,4; default: all)", metavar="IDS"
        ),
    )
    test_classes: list[int] | None = field(
        default=None, metadata=_flag("test on these class ids only (default: all)", metavar="IDS")
    )
    unseen_classes: int | None = field(
        default=None,
        metadata=_flag(
            "hold the last N classes (class ids; an image folder's in the order of its folder "
            "names sorted by character code) out of training; RUN/classes.json names them "
            "(default: none)",
            metavar="N",
        ),
    )
    val_size: int = field(
        default=2000,
        metadata=_flag(
            "training images held out to pick the best epoch, at most a fifth of them, when "
            "validation is not class-disjoint (--val-classes 0); 0: none"
        ),
    )
    val_classes: float | None = field(
        default=None,
        metadata=_flag(
            "training classes held out, with all their training images, as a class-disjoint "
            "validation set: the best epoch is the one with the highest leave-one-out MAP@R "
            "among them; a count N >= 1 or a fraction of the training classes (at least 2, "
            "leaving at least 2 to train on); 0: same-class validation (--val-size) "
            f"(default: {DEFAULT_VAL_CLASSES:g} when the test classes are not training classes "
            "(--unseen-classes, --train-classes, --test-classes, the benchmarks' splits, image "
            "folders whose train/ and test/ hold other classes) and at least 4 train, else 0)",
            metavar="N|FRACTION",
        ),
    )
    augment: Augmentation | None = field(
        default=None,
        metadata=_flag(
            "augmentation of the training images: none; digits: random crops after zero "
            "padding (--crop-padding) and horizontal flips (--hflip), which with their "
            "defaults do, per dataset: "
            + _by_key(DATASET_FORMS, _digits_augmentation)
            + "; photos: random resized crops (--crop-scale), horizontal flips (--hflip), "
            "colour jitter (--jitter) and random greyscale (--grayscale) on the device, "
            "torchvision's semantics (default: photos with --pretrained, the fine-tuning "
            "recipe; digits for a network trained from scratch, grey or colour, which did "
            "better on colour icons at 28 px, docs/results.md; true and false, in the configs "
            "of earlier versions, read as digits and none)",
            metavar="none|digits|photos",
        ),
    )
    crop_padding: int | None = field(
        default=None,
        metadata=_flag(
            "random crop of --augment digits: pad each side by this many pixels, then cut an "
            "image of the original size at a random offset; 0: no crop "
            f"({_per('dataset', DATASET_FORMS, _default_crop_padding)})"
        ),
    )
    crop_scale: float = field(
        default=PHOTO_SCALE[0],
        metadata=_flag(
            "random resized crop of --augment photos: the smallest area of a crop, as a "
            "fraction of the image (the largest is the whole image; aspect ratios 3/4 to "
            "4/3), resized back to the image's size",
            metavar="FRACTION",
        ),
    )
    jitter: float = field(
        default=PHOTO_JITTER,
        metadata=_flag(
            "colour jitter of --augment photos: brightness, contrast and saturation factors "
            "in [1 - J, 1 + J], a hue shift within J / 4 of a turn; 0: none",
            metavar="J",
        ),
    )
    grayscale: float = field(
        default=PHOTO_GRAYSCALE,
        metadata=_flag("probability that --augment photos makes an image grey", metavar="P"),
    )
    hflip: bool | None = field(
        default=None,
        metadata=_flag(
            "random horizontal flips with --augment digits or photos "
            f"({_per('dataset', DATASET_FORMS, default_hflip)})"
        ),
    )
    tta: bool | None = field(
        default=None,
        metadata=_flag(
            "evaluate with the embeddings of each image and its mirror image averaged "
            "(default: as --hflip)"
        ),
    )


@dataclass
class ModelConfig:
    """The embedding network."""

    name: ModelName = field(default="small", metadata=_flag("the network", flag="model"))
    width: int | None = field(
        default=None,
        metadata=_flag("base width of the backbone (default: the model's own; 32 for small)"),
    )
    embedding_dim: int = field(default=64, metadata=_flag("width of the embedding"))
    normalize_embeddings: bool = field(default=True, metadata=_flag("L2-normalise the output"))
    pretrained: str | None = field(
        default=None,
        metadata=_flag(
            f"start the backbone ({', '.join(PRETRAINED_MODELS)}) from pretrained weights: "
            "imagenet: torchvision's ImageNet file, downloaded once into torch's hub cache "
            "($TORCH_HOME/hub/checkpoints) and checked against the digest prefix in its name "
            f"(${WEIGHTS_URL_ENV}: another base URL); PATH: a .pth/.pt (read with "
            "weights_only) or .safetensors file of torchvision's names and shapes (fc.* "
            "ignored). The run then uses 3 channels (grey images repeated), ImageNet's mean "
            "and std and the standard 7x7 stem at every --image-size; evaluate, embed and "
            "--resume rebuild the network without the file (default: none, random weights)",
            metavar="imagenet|PATH",
        ),
    )


@dataclass
class ObjectiveConfig:
    """The loss, its mining, margin and distance, and the P x K batches it sees."""

    name: Objective = field(default="triplet", metadata=_flag("the loss", flag="objective"))
    mining: Mining | None = field(
        default=None,
        metadata=_flag(
            f"triplet: {', '.join(TRIPLET_MININGS)}; contrastive: {', '.join(PAIR_MININGS)} "
            f"({_per('objective', OBJECTIVES, _default_mining)})"
        ),
    )
    margin: float | None = field(
        default=None,
        metadata=_flag(f"margin of the loss ({_per('objective', OBJECTIVES, _default_margin)})"),
    )
    distance: Distance = field(
        default="euclidean", metadata=_flag("between embeddings, in the loss and evaluation")
    )
    labels_per_batch: int | None = field(
        default=None,
        metadata=_flag(
            f"P: classes per batch (default from the training classes of 2 images or more: "
            f"10 when the median class holds {BIG_CLASS} images or more, else {TARGET_BATCH} / "
            "K rounded up; at most the number of classes, lowered until the classes fill P x K "
            "and the processes share it evenly)",
            short="p",
            metavar="P",
        ),
    )
    samples_per_label: int | None = field(
        default=None,
        metadata=_flag(
            f"K: images per class in a batch, at most (default: {BIG_CLASS} when the median "
            f"class holds {BIG_CLASS} images or more, else 4, or the median class size when "
            "smaller, at least 2)",
            short="k",
            metavar="K",
        ),
    )
    small_classes: SmallClassPolicy = field(
        default="fill",
        metadata=_flag(
            "classes of fewer than K images: fill: each gives all its images once and more "
            "classes fill the batch to P x K, classes of one image are left out; replace: "
            "padded to K by drawing again (duplicates, the behaviour of earlier versions); "
            "drop: left out"
        ),
    )
    memory_size: int = field(
        default=0,
        metadata=_flag(
            "cross-batch memory (Wang et al. 2020; triplet and contrastive): mine each batch's "
            "anchors against the batch and the last M embeddings of earlier steps (0: none; "
            "with several processes, of the global batch). Not in checkpoints: --resume "
            "starts with an empty memory and counts --memory-warmup-steps again",
            metavar="M",
        ),
    )
    memory_warmup_steps: int = field(
        default=0,
        metadata=_flag("steps before the cross-batch memory is used and filled", metavar="S"),
    )


@dataclass
class OptimConfig:
    """The optimizer, the learning-rate schedule and the length of the run."""

    epochs: int | None = field(
        default=None,
        metadata=_flag(
            f"epochs to train, at most (default from the data: {DEFAULT_PASSES} passes over the "
            f"training set, at least {MIN_STEPS} steps, in epochs of one pass but at least "
            f"{MIN_EPOCH_STEPS} steps)"
        ),
    )
    steps_per_epoch: int | None = field(
        default=None,
        metadata=_flag(
            "batches per epoch, each followed by a validation and a checkpoint (default: one "
            f"pass over the training set; at least {MIN_EPOCH_STEPS} steps when --epochs is not "
            "given)"
        ),
    )
    patience: int | None = field(
        default=None,
        metadata=_flag(
            "stop once this many validations in a row did not improve on the best one (the "
            f"best checkpoint is what the run keeps); 0: never (default: {DEFAULT_PATIENCE} with "
            "a class-disjoint validation, which measures what unseen classes get; else 0)",
            metavar="N",
        ),
    )
    optimizer: OptimizerName = field(default="adam", metadata=_flag())
    lr: float = field(default=1e-3, metadata=_flag("peak learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_flag("weight decay"))
    schedule: Schedule = field(
        default="cosine", metadata=_flag("learning-rate schedule after the warm-up")
    )
    warmup_epochs: float = field(default=0.5, metadata=_flag("linear warm-up"))
    freeze_backbone_epochs: int = field(
        default=0,
        metadata=_flag(
            "with --pretrained: train only the embedding head (and a softmax classifier) for "
            "the first N epochs, the backbone frozen with its BatchNorm statistics",
            metavar="N",
        ),
    )
    backbone_lr_scale: float = field(
        default=1.0,
        metadata=_flag(
            "the backbone's learning rate is --lr times this (e.g. 0.1 for a pretrained one); "
            "the schedule scales both alike",
            metavar="S",
        ),
    )
    frozen_backbone: bool = field(
        default=False,
        metadata=_flag(
            "with --pretrained: the fast path for a CPU: the backbone stays frozen for the "
            "whole run, its features of every training image are computed once (cached beside "
            "the decoded images) and only the embedding head trains on them"
        ),
    )
    frozen_views: int = field(
        default=1,
        metadata=_flag(
            "with --frozen-backbone: the views of each training image whose features are "
            "computed: the image itself, then N-1 copies under the run's augmentation, one "
            "drawn at random for each row of a batch",
            metavar="N",
        ),
    )
    freeze_batchnorm: bool = field(
        default=False,
        metadata=_flag(
            "with --pretrained: keep the backbone's BatchNorm running statistics (its layers "
            "normalise with them, in eval mode, while their scale and shift still train), "
            "the usual practice for small batches"
        ),
    )


@dataclass
class RunConfig:
    """Where the run goes and how it computes: folder, seed, device, precision, threads."""

    out: str | None = field(
        default=None,
        metadata=_flag(
            "run folder (default: a new runs/<date>-<time>-<dataset>-<objective>)", metavar="DIR"
        ),
    )
    seed: int = field(
        default=0,
        metadata=_flag("seeds the data split, the batches, the augmentation and the network"),
    )
    device: DeviceName = field(default="auto", metadata=_flag("auto: CUDA when available"))
    amp: AmpMode = field(
        default="auto",
        metadata=_flag(
            "bfloat16 mixed-precision training; auto: on CUDA and on CPUs with native bfloat16 "
            "(e.g. AVX512-BF16)"
        ),
    )
    threads: int | None = field(
        default=None, metadata=_flag("CPU threads for torch (default: torch's choice)")
    )
    eval_batch_size: int = field(
        default=256, metadata=_flag("images per forward pass when embedding")
    )
    compile: bool = field(
        default=False,
        metadata=_flag(
            "compile the training steps' network with torch.compile (inductor). Measured no "
            "faster on a 2-core CPU, for the small network or ResNet-18 (docs/benchmarks.md): "
            "one to try on other hardware. Needs a C++ compiler on a CPU; where it cannot "
            "compile, the run trains without it, with one warning"
        ),
    )
    tensorboard: bool = field(
        default=False, metadata=_flag("also write TensorBoard scalars (needs tensorboard)")
    )


@dataclass
class DistributedConfig:
    """How processes under ``torchrun`` share the loss and the BatchNorm statistics."""

    loss: DistributedLoss = field(
        default="global",
        metadata=_flag(
            "global: every process mines and computes the loss over the whole gathered batch, "
            "gradients equal a single process's; local: only its own anchors against the gathered "
            "batch, cheaper, the gradients differ",
            flag="distributed_loss",
        ),
    )
    sync_bn: bool = field(
        default=False, metadata=_flag("BatchNorm statistics over the global batch (CUDA only)")
    )


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run folder.

    ``None`` means "the default for this dataset or objective", resolved by
    :meth:`resolved`, or what the field's help says.

    Example:
        >>> c = TrainConfig(data=DataConfig(dataset="digits"), optim=OptimConfig(epochs=2))
        >>> c.optim.epochs, c.resolved().data.crop_padding
        (2, 1)
        >>> config_from_dict({"dataset": "digits", "epochs": 2}) == c
        True
    """

    data: DataConfig = field(default_factory=DataConfig, metadata={"title": "data"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"title": "model"})
    objective: ObjectiveConfig = field(
        default_factory=ObjectiveConfig, metadata={"title": "objective"}
    )
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"title": "optimisation"})
    run: RunConfig = field(default_factory=RunConfig, metadata={"title": "run"})
    distributed: DistributedConfig = field(
        default_factory=DistributedConfig,
        metadata={
            "title": "distributed (torchrun --nproc-per-node N -m tripletlab train ...; "
            "docs/distributed.md)"
        },
    )

    def resolved(self) -> TrainConfig:
        """A copy with dataset- and objective-dependent defaults filled in (and an image
        folder's path made absolute, so the run finds its images from any folder), validated.

        Every check needs the config alone (no data), so a bad setting fails before a run
        folder is created or a dataset loaded.

        Raises:
            ValueError: one line naming the setting: a value of the wrong type, an unknown
                choice, a mining the objective does not have; a :class:`ConfigError` for a
                value out of range (NaN or Inf anywhere, a count below 1, a negative
                margin, weight decay, warm-up, validation size or crop padding, a learning
                rate that is not positive, one class or one image per class in the batches
                of an online objective, a class split that cannot work on any dataset).
        """
        c = copy.deepcopy(self)
        for key, value in c.flat().items():
            _checked(_BY_KEY[key], value)
        for key, value in c.flat().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {value}")
        d, o = c.data, c.objective
        d.dataset = absolute_dataset(d.dataset)
        _check_pretrained(c.model, c.optim)
        if o.mining is None:
            o.mining = _default_mining(o.name)
        if o.name == "triplet":
            check_choice("mining", o.mining, TRIPLET_MININGS)
        elif o.name == "contrastive":
            check_choice("mining (for contrastive)", o.mining, PAIR_MININGS)
        if o.margin is None:
            o.margin = _default_margin(o.name)
        if o.margin < 0:
            raise ConfigError("margin", f"must be a finite number >= 0, got {o.margin}")
        if d.hflip is None:
            d.hflip = default_hflip(d.dataset)  # digits are not mirror-symmetric
        if d.tta is None:
            d.tta = d.hflip  # evaluate with flipped copies when trained with them
        if d.crop_padding is None:
            d.crop_padding = _default_crop_padding(d.dataset)
        if d.dataset == "digits":
            # digits are 8x8 and never resized; 28 is what the configs of earlier versions
            # hold when it was not given.
            if d.image_size not in (None, 8, _EARLIER_DEFAULT_IMAGE_SIZE):
                raise ConfigError(
                    "image_size",
                    f"{d.image_size}: digits images are 8x8 and are not resized; leave it out",
                )
            d.image_size = 8
        if d.image_size is None:
            d.image_size = default_image_size(d.dataset)
        counts = {
            "labels_per_batch": o.labels_per_batch,
            "samples_per_label": o.samples_per_label,
            "epochs": c.optim.epochs,
            "steps_per_epoch": c.optim.steps_per_epoch,
            "embedding_dim": c.model.embedding_dim,
            "width": c.model.width,
            "image_size": d.image_size,
            "threads": c.run.threads,
            "workers": d.workers,
            "frozen_views": c.optim.frozen_views,
            "eval_batch_size": c.run.eval_batch_size,
        }
        for key, count in counts.items():
            if count is not None and count < 1:
                raise ConfigError(
                    key, f"must be >= 1, got {count}; give a whole number from 1, or leave it out"
                )
        amounts = {
            "val_size": d.val_size,
            "crop_padding": d.crop_padding,
            "weight_decay": c.optim.weight_decay,
            "warmup_epochs": c.optim.warmup_epochs,
            "memory_size": o.memory_size,
            "memory_warmup_steps": o.memory_warmup_steps,
            "patience": c.optim.patience or 0,
            "freeze_backbone_epochs": c.optim.freeze_backbone_epochs,
        }
        for key, amount in amounts.items():
            if amount < 0:
                raise ConfigError(key, f"must be >= 0, got {_show(amount)}")
        if c.optim.lr <= 0:
            raise ConfigError("lr", f"must be a positive number, got {c.optim.lr}")
        _check_photo_settings(d)
        if c.optim.backbone_lr_scale <= 0:
            raise ConfigError(
                "backbone_lr_scale",
                f"must be a positive number, got {_show(c.optim.backbone_lr_scale)} (to keep "
                "the backbone as it is, use --freeze-backbone-epochs)",
            )
        if o.memory_size and o.name not in ("triplet", "contrastive"):
            raise ConfigError(
                "memory_size", f"is for the triplet and contrastive objectives, not {o.name}"
            )
        if o.name in ("triplet", "contrastive"):  # online mining within each P x K batch
            if o.labels_per_batch == 1:
                raise ConfigError(
                    "labels_per_batch",
                    f"1 gives batches of one class, without negatives, so {o.name} has nothing "
                    "to mine; use -p 2 or more",
                )
            if o.samples_per_label == 1:
                raise ConfigError(
                    "samples_per_label",
                    f"1 gives batches without positive pairs, so {o.name} has nothing to "
                    "mine; use -k 2 or more",
                )
        _check_class_split(d)
        return c

    def flat(self) -> dict[str, object]:
        """The settings as one flat dict keyed by :attr:`ConfigField.key` (``lr``,
        ``model``, ``distributed_loss``): the layout of ``--config`` files and of the
        ``config.json`` of earlier versions."""
        nested = asdict(self)
        return {f.key: nested[f.part][f.name] for f in CONFIG_FIELDS}


# --------------------------------------------------------------------- the fields, described

FieldKind = Literal["str", "int", "float", "bool", "int_list", "choice"]

_EXPECTED: dict[FieldKind, str] = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "int_list": "a list of integers (e.g. [0, 1, 2])",
    "choice": "one of",
}


@dataclass(frozen=True)
class ConfigField:
    """One setting of :class:`TrainConfig`: where it lives, its type and its flag.

    Attributes:
        part, name: ``config.<part>.<name>`` (``optim``, ``lr``).
        key: its flat key, unique over all parts (``lr``; ``model`` for ``model.name``);
            the flag is ``--`` + the key with ``-`` for ``_``.
        kind: the type of a value; ``choice`` for a ``Literal``, whose values are ``choices``.
        optional: None is a valid value (the default, resolved or described in ``help``).
        default: the field's default.
        help, short, metavar: for the flag (see ``_flag``).
    """

    part: str
    name: str
    key: str
    kind: FieldKind
    choices: tuple[str, ...]
    optional: bool
    default: object
    help: str
    short: str | None
    metavar: str | None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as written on the command line (empty for None)."""
        return "" if self.default is None else _show(self.default)

    @property
    def expected(self) -> str:
        """What a value must be, for error messages."""
        text = _EXPECTED[self.kind]
        if self.kind == "choice":
            text += ": " + ", ".join(self.choices)
        return text + (" or null" if self.optional else "")


@dataclass(frozen=True)
class ConfigPart:
    """One part of :class:`TrainConfig` (``optim``), its title and its fields."""

    name: str
    title: str
    fields: tuple[ConfigField, ...]


def _kind(hint: object) -> tuple[FieldKind, tuple[str, ...], bool]:
    """``(kind, choices, optional)`` of a field's type hint."""
    args = get_args(hint)
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if optional:
        (hint,) = (a for a in args if a is not type(None))
    if get_origin(hint) is Literal:
        return "choice", get_args(hint), optional
    simple: dict[object, FieldKind] = {str: "str", int: "int", float: "float", bool: "bool"}
    if hint in simple:
        return simple[hint], (), optional
    if get_origin(hint) is list and get_args(hint) == (int,):
        return "int_list", (), optional
    raise TypeError(f"config fields cannot have the type {hint}")


def _describe() -> tuple[ConfigPart, ...]:
    parts = []
    for part in fields(TrainConfig):
        cls = get_type_hints(TrainConfig)[part.name]
        hints = get_type_hints(cls)
        described = []
        for f in fields(cls):
            kind, choices, optional = _kind(hints[f.name])
            described.append(
                ConfigField(
                    part=part.name,
                    name=f.name,
                    key=f.metadata["flag"] or f.name,
                    kind=kind,
                    choices=choices,
                    optional=optional,
                    default=f.default,
                    help=f.metadata["help"],
                    short=f.metadata["short"],
                    metavar=f.metadata["metavar"],
                )
            )
        parts.append(ConfigPart(part.name, part.metadata["title"], tuple(described)))
    return tuple(parts)


#: The parts of :class:`TrainConfig` in order, each with its fields.
CONFIG_PARTS: tuple[ConfigPart, ...] = _describe()
#: Every field of every part, in order.
CONFIG_FIELDS: tuple[ConfigField, ...] = tuple(f for p in CONFIG_PARTS for f in p.fields)
_BY_KEY: dict[str, ConfigField] = {f.key: f for f in CONFIG_FIELDS}
if len(_BY_KEY) != len(CONFIG_FIELDS):
    raise TypeError("two config fields have the same key; give one a flag= of its own")


def _checked(f: ConfigField, value: object) -> object:
    """``value`` if it fits ``f`` (an int as a float where a float is expected), else a
    one-line ``ValueError`` naming the key and what it must be."""
    if value is None:
        if f.optional:
            return None
    elif f.kind == "choice":
        return check_choice(f.key.replace("_", " "), value, f.choices)
    elif (f.kind == "bool" and isinstance(value, bool)) or (
        f.kind == "str" and isinstance(value, str)
    ):
        return value
    elif not isinstance(value, bool):  # bool is an int to Python, not to a config
        if f.kind == "int" and isinstance(value, int):
            return value
        if f.kind == "float" and isinstance(value, (int, float)):
            return float(value)
        if (
            f.kind == "int_list"
            and isinstance(value, list)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return list(value)
    raise ValueError(f"config key {f.key} must be {f.expected}, got {value!r}")


# ---------------------------------------------------------------------------- reading dicts


def flatten_config(raw: Mapping[str, object]) -> dict[str, object]:
    """The flat form (keyed by :attr:`ConfigField.key`) of a config dict, nested as
    ``config.json`` (``{"optim": {"lr": 0.01}}``), flat as older runs and checkpoints and
    ``--config`` files (``{"lr": 0.01}``), or a mix; ``-`` may stand for ``_`` in keys.
    The values are not checked (see :func:`config_from_dict`).

    Raises:
        ValueError: unknown keys (listing the valid ones), a key given twice.
    """
    parts = {p.name: p for p in CONFIG_PARTS}
    flat: dict[str, object] = {}
    given: dict[str, str] = {}  # flat key -> where it was given (for the error)

    def put(key: str, where: str, value: object) -> None:
        if key in given:
            raise ValueError(f"config key {key} is given twice ({given[key]} and {where})")
        flat[key], given[key] = value, where

    unknown: list[str] = []
    for raw_key, value in raw.items():
        key = raw_key.replace("-", "_")
        if key in parts and isinstance(value, Mapping):
            names = {f.name: f for f in parts[key].fields}
            bad = []
            for raw_name, v in value.items():
                f = names.get(str(raw_name).replace("-", "_"))
                if f is None:
                    bad.append(f"{raw_key}.{raw_name}")
                else:
                    put(f.key, f"{raw_key}.{raw_name}", v)
            if bad:
                raise ValueError(
                    f"unknown config key(s) {', '.join(bad)}; valid keys in {key}: "
                    f"{', '.join(names)}"
                )
        elif key in _BY_KEY:
            put(key, raw_key, value)
        elif key == "extra" and value == {}:
            continue  # an unused field, always empty, of the configs of earlier versions
        else:
            unknown.append(raw_key)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(_BY_KEY))}"
            f" (or grouped in the tables {', '.join(parts)}, as in a run's config.json)"
        )
    return flat


#: ``augment`` as the configs of earlier versions hold it: true was the crops and flips that
#: are now ``digits``, whatever the dataset.
_EARLIER_AUGMENT: dict[bool, Augmentation] = {True: "digits", False: "none"}


def config_from_dict(raw: Mapping[str, object]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a dict (a config file, ``config.json``, a
    checkpoint's ``config``) in the nested or the flat layout (:func:`flatten_config`),
    checking every value against its field's type; ``augment`` true or false, as earlier
    versions wrote it, is read as ``digits`` or ``none``.

    Raises:
        ValueError: one line: unknown keys (listing the valid ones), a value of the wrong
            type (naming the key and the type), an unknown choice (listing the valid ones).
    """
    settings: dict[str, dict[str, Any]] = {p.name: {} for p in CONFIG_PARTS}
    for key, value in flatten_config(raw).items():
        f = _BY_KEY[key]
        if key == "augment" and isinstance(value, bool):
            value = _EARLIER_AUGMENT[value]
        settings[f.part][f.name] = _checked(f, value)
    return TrainConfig(
        data=DataConfig(**settings["data"]),
        model=ModelConfig(**settings["model"]),
        objective=ObjectiveConfig(**settings["objective"]),
        optim=OptimConfig(**settings["optim"]),
        run=RunConfig(**settings["run"]),
        distributed=DistributedConfig(**settings["distributed"]),
    )
