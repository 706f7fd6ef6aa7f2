"""The run config (:mod:`tripletlab.training.config`): defaults resolved per dataset and
objective, the help that states them, reading nested and flat dicts, and the one-line
errors for values of the wrong type."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tripletlab.data import DATASETS, PATH_FORMS
from tripletlab.training import (
    CONFIG_FIELDS,
    CONFIG_PARTS,
    OBJECTIVES,
    ConfigError,
    ConfigField,
    DataConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    config_from_dict,
)

#: The config of a run as the previous version wrote it into config.json and its
#: checkpoints (``asdict`` of the flat dataclass, with the unused ``extra``), resolved.
FLAT: dict[str, object] = {
    "dataset": "digits",
    "data_dir": None,
    "out": "runs/old",
    "model": "small",
    "width": 8,
    "embedding_dim": 64,
    "normalize_embeddings": True,
    "objective": "triplet",
    "mining": "semi_hard",
    "margin": 0.2,
    "distance": "euclidean",
    "labels_per_batch": 10,
    "samples_per_label": 16,
    "epochs": 2,
    "steps_per_epoch": None,
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 0.0001,
    "schedule": "cosine",
    "warmup_epochs": 0.5,
    "augment": True,
    "crop_padding": 1,
    "hflip": False,
    "tta": False,
    "image_size": 28,
    "train_classes": [0, 1, 2, 3, 4, 5, 6],
    "test_classes": None,
    "unseen_classes": None,
    "val_size": 150,
    "seed": 0,
    "device": "auto",
    "amp": "auto",
    "threads": None,
    "eval_batch_size": 256,
    "tensorboard": False,
    "strict": False,
    "distributed_loss": "global",
    "sync_bn": False,
    "extra": {},
}


def field_of(key: str) -> ConfigField:
    return next(f for f in CONFIG_FIELDS if f.key == key)


def test_resolved_defaults_and_errors() -> None:
    with pytest.raises(ValueError, match="--steps-per-epoch must be >= 1"):
        TrainConfig(optim=OptimConfig(steps_per_epoch=0)).resolved()
    c = TrainConfig(data=DataConfig(dataset="mnist")).resolved()
    assert (c.objective.mining, c.objective.margin, c.data.hflip, c.data.crop_padding) == (
        "semi_hard",
        0.2,
        False,
        0,
    )
    assert c.data.tta is False
    c = TrainConfig(objective=ObjectiveConfig(name="triplet-offline")).resolved()
    assert (c.objective.mining, c.objective.margin) == ("none", 0.2)
    c = TrainConfig(objective=ObjectiveConfig(name="contrastive")).resolved()
    assert (c.objective.mining, c.objective.margin, c.data.hflip, c.data.tta) == (
        "hard_negative",
        1.0,
        True,
        True,
    )
    c = TrainConfig(data=DataConfig(dataset="imagefolder:x", hflip=False, tta=True)).resolved()
    assert (c.data.crop_padding, c.data.hflip, c.data.tta) == (2, False, True)
    with pytest.raises(ValueError, match="unknown mining"):
        TrainConfig(objective=ObjectiveConfig(name="contrastive", mining="batch_hard")).resolved()
    with pytest.raises(ValueError, match="--margin must be"):
        TrainConfig(objective=ObjectiveConfig(margin=-1.0)).resolved()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"labels_per_batch": 1}, "--labels-per-batch 1 gives batches of one class, without neg"),
        ({"samples_per_label": 1}, "--samples-per-label 1 gives batches without positive pairs"),
        (
            {"objective": "contrastive", "labels_per_batch": 1},
            "--labels-per-batch 1 gives batches of one class, without negatives, so contrastive",
        ),
        (
            {"objective": "contrastive", "samples_per_label": 1},
            "--samples-per-label 1 gives batches without positive pairs, so contrastive",
        ),
        ({"val_size": -1}, "--val-size must be >= 0, got -1"),
        ({"warmup_epochs": -0.5}, "--warmup-epochs must be >= 0, got -0.5"),
        ({"weight_decay": -1e-4}, "--weight-decay must be >= 0, got -0.0001"),
        ({"crop_padding": -1}, "--crop-padding must be >= 0, got -1"),
        ({"threads": 0}, "--threads must be >= 1, got 0"),
        ({"eval_batch_size": 0}, "--eval-batch-size must be >= 1, got 0"),
        ({"memory_size": -1}, "--memory-size must be >= 0, got -1"),
        ({"memory_warmup_steps": -2}, "--memory-warmup-steps must be >= 0, got -2"),
        (
            {"objective": "softmax", "memory_size": 8},
            "--memory-size is for the triplet and contrastive objectives, not softmax",
        ),
        ({"image_size": 0}, "--image-size must be >= 1, got 0"),
        ({"unseen_classes": 0}, "--unseen-classes must be >= 2 (held-out classes are scored"),
        ({"unseen_classes": 1}, "--unseen-classes must be >= 2"),
        (
            {"unseen_classes": 3, "train_classes": [0, 1]},
            "--unseen-classes and --train-classes are two ways to split the classes; give one",
        ),
        ({"train_classes": [0, -1]}, "--train-classes must be class ids >= 0, got 0,-1"),
        (
            {"train_classes": [0, 1, 2], "test_classes": [2, 3]},
            "--test-classes must not repeat training classes, got 2 in both",
        ),
        ({"lr": float("nan")}, "--lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "--lr must be a finite number, got inf"),
        ({"margin": float("nan")}, "--margin must be a finite number, got nan"),
        ({"warmup_epochs": float("nan")}, "--warmup-epochs must be a finite number, got nan"),
        ({"weight_decay": float("nan")}, "--weight-decay must be a finite number, got nan"),
        ({"dataset": "digits", "image_size": 64}, "--image-size 64: digits images are 8x8"),
        (
            {"pretrained": "imagenet"},
            "--pretrained needs one of the models resnet18, resnet34, resnet50 (torchvision's), "
            "not small",
        ),
        (
            {"model": "resnet18", "pretrained": "imagenet", "width": 32},
            "--pretrained needs torchvision's width 64, not --width 32",
        ),
        ({"model": "resnet18", "pretrained": ""}, "--pretrained must be imagenet or the path"),
        (
            {"freeze_backbone_epochs": 1},
            "--freeze-backbone-epochs keeps what a pretrained backbone learnt; add --pretrained",
        ),
        ({"freeze_batchnorm": True}, "--freeze-batchnorm keeps what a pretrained backbone"),
        (
            {"model": "resnet50", "pretrained": "imagenet", "freeze_backbone_epochs": -1},
            "--freeze-backbone-epochs must be >= 0, got -1",
        ),
        ({"backbone_lr_scale": 0}, "--backbone-lr-scale must be a positive number, got 0 (to"),
        ({"backbone_lr_scale": float("nan")}, "--backbone-lr-scale must be a finite number"),
    ],
)
def test_settings_that_cannot_train_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as info:
        config_from_dict(settings).resolved()
    assert "\n" not in str(info.value)
    key = info.value.key
    assert key in settings and str(info.value) == f"--{key.replace('_', '-')} {info.value.problem}"


@pytest.mark.parametrize("objective", ["siamese", "triplet-offline", "softmax"])
def test_offline_objectives_take_one_class_or_image_per_batch_row(objective: str) -> None:
    # P and K only size their batches (P x K random pairs, triplets or images).
    settings = {"objective": objective, "labels_per_batch": 1, "samples_per_label": 1}
    assert config_from_dict(settings).resolved().objective.labels_per_batch == 1


def test_the_resolved_image_size_is_the_one_trained_on() -> None:
    assert config_from_dict({"dataset": "digits"}).resolved().data.image_size == 8
    assert config_from_dict({"dataset": "digits", "image_size": 8}).resolved().data.image_size == 8
    assert config_from_dict({"dataset": "mnist", "image_size": 14}).resolved().data.image_size == 14
    assert config_from_dict({"dataset": "mnist"}).resolved().data.image_size == 28
    assert config_from_dict({"dataset": "fashion-mnist"}).resolved().data.image_size == 28
    for folder in ("imagefolder:x", "csv:x.csv", "cub200:x", "sop:x"):  # photos, from scratch
        assert config_from_dict({"dataset": folder}).resolved().data.image_size == 48
    old = {"dataset": "imagefolder:x", "image_size": 28}  # a config.json of earlier versions
    assert config_from_dict(old).resolved().data.image_size == 28
    assert config_from_dict({"dataset": "digits", "image_size": 28}).resolved().data.image_size == 8


def test_resolved_leaves_the_config_alone() -> None:
    config = TrainConfig(data=DataConfig(train_classes=[0, 1]))
    resolved = config.resolved()
    resolved.data.train_classes = [5]
    assert config.objective.mining is None and config.data.train_classes == [0, 1]


def test_resolved_checks_the_types_of_a_config_built_in_python() -> None:
    config = TrainConfig(optim=OptimConfig(epochs="2"))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^config key epochs must be an integer or null, got '2'$"
    ):
        config.resolved()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": "two"}, "config key epochs must be an integer or null, got 'two'"),
        ({"epochs": 2.5}, "config key epochs must be an integer or null, got 2.5"),
        ({"epochs": True}, "config key epochs must be an integer or null, got True"),
        ({"lr": "0.1"}, "config key lr must be a number, got '0.1'"),
        ({"augment": "no"}, "unknown augment 'no'; choose one of: none, digits, photos"),
        ({"hflip": 1}, "config key hflip must be a boolean (true or false) or null, got 1"),
        ({"dataset": None}, "config key dataset must be a string, got None"),
        (
            {"train_classes": "0,1,2"},
            "config key train_classes must be a list of integers (e.g. [0, 1, 2]) or null, "
            "got '0,1,2'",
        ),
        ({"train_classes": [0, True]}, "config key train_classes must be a list of integers"),
        ({"model": "vgg"}, "unknown model 'vgg'; choose one of: small, embeddingnet, resnet18"),
        ({"distributed_loss": 1}, "unknown distributed loss 1; choose one of: global, local"),
        ({"mining": "hardest"}, "unknown mining 'hardest'; choose one of: batch_all"),
        (
            {"colour": "red"},
            "unknown config key(s) colour; valid keys: amp, augment, backbone_lr_scale, cache_dir",
        ),
        ({"optim": {"lr": 0.1, "colour": 1}}, "unknown config key(s) optim.colour; valid keys in"),
        ({"optim": 0.1}, "unknown config key(s) optim; valid keys:"),
        ({"extra": {"a": 1}}, "unknown config key(s) extra; valid keys:"),
        ({"lr": 0.1, "optim": {"lr": 0.2}}, "config key lr is given twice (lr and optim.lr)"),
    ],
)
def test_bad_values_fail_in_one_line(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)) as info:
        config_from_dict(raw)
    assert "\n" not in str(info.value)


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown config key") as info:
        config_from_dict({"colour": "red"})
    assert all(f.key in str(info.value) for f in CONFIG_FIELDS)
    with pytest.raises(ValueError, match="unknown config key") as info:
        config_from_dict({"model": {"colour": "red"}})
    assert str(info.value).endswith(
        "valid keys in model: name, width, embedding_dim, normalize_embeddings, pretrained"
    )


def test_ints_are_floats_where_floats_are_expected() -> None:
    config = config_from_dict({"lr": 1, "margin": 0, "warmup_epochs": 2})
    assert (config.optim.lr, config.objective.margin, config.optim.warmup_epochs) == (1, 0, 2)
    assert all(type(v) is float for v in (config.optim.lr, config.objective.margin))


def test_flat_configs_of_earlier_versions_load() -> None:
    config = config_from_dict(FLAT)
    # fields added since: their defaults ("fill" is the batches of earlier versions when no
    # class is small; no cross-batch memory; no class-disjoint validation setting)
    later = {"small_classes": "fill", "memory_size": 0, "memory_warmup_steps": 0}
    later |= {"cache_dir": None, "workers": None}  # the image cache (issue 15)
    later |= {"frozen_backbone": False, "frozen_views": 1}
    later["val_classes"] = later["patience"] = later["pretrained"] = None
    later |= {"crop_scale": 0.2, "jitter": 0.2, "grayscale": 0.0}  # of --augment photos
    later["augment"] = "digits"  # what augment true did: crops and flips
    later |= {"freeze_backbone_epochs": 0, "backbone_lr_scale": 1.0, "freeze_batchnorm": False}
    later["compile"] = False  # --compile (issue 17)
    assert config.flat() == {k: v for k, v in FLAT.items() if k != "extra"} | later
    assert (config.data.dataset, config.model.name, config.model.width) == ("digits", "small", 8)
    assert (config.objective.name, config.objective.labels_per_batch) == ("triplet", 10)
    assert (config.optim.epochs, config.run.out, config.distributed.loss) == (
        2,
        "runs/old",
        "global",
    )
    # It was saved resolved; digits' image size is now recorded as the 8 it always was.
    assert config.resolved() == replace(config, data=replace(config.data, image_size=8))


def test_nested_configs_load_as_written() -> None:
    config = config_from_dict(FLAT).resolved()
    nested = json.loads(json.dumps(asdict(config)))  # as fit writes config.json
    assert list(nested) == [p.name for p in CONFIG_PARTS]
    assert nested["optim"]["lr"] == 0.001 and nested["model"]["name"] == "small"
    assert config_from_dict(nested) == config
    # a mix, with dashes for underscores as a TOML file may hold them
    mixed = {"dataset": "digits", "optim": {"warmup-epochs": 1}, "embedding-dim": 8}
    c = config_from_dict(mixed)
    assert (c.data.dataset, c.optim.warmup_epochs, c.model.embedding_dim) == ("digits", 1.0, 8)
    assert config_from_dict({}) == TrainConfig()


def test_every_field_has_a_unique_key_and_help() -> None:
    keys = [f.key for f in CONFIG_FIELDS]
    assert len(set(keys)) == len(keys)
    for f in CONFIG_FIELDS:
        assert f.help or f.choices, f.key
        if f.default is None:  # the help says what None stands for
            assert "default" in f.help, f.key


def defaults_in_help(help_text: str) -> dict[str, str]:
    """``{name: value}`` from the ``(default per X: a, b 1; c 2)`` part of a help text."""
    found = re.search(r"\(default per \w+: ([^)]*)\)", help_text)
    assert found, help_text
    shown = {}
    for group in found.group(1).split("; "):
        names, value = group.rsplit(" ", 1)
        shown.update(dict.fromkeys(names.split(", "), value))
    return shown


def as_written(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize("key", ["crop_padding", "hflip"])
def test_the_help_of_per_dataset_defaults_matches_resolved(key: str) -> None:
    shown = defaults_in_help(field_of(key).help)
    names = (*DATASETS, *PATH_FORMS)
    assert set(shown) == set(names)
    for name in names:
        resolved = config_from_dict({"dataset": name}).resolved()
        assert shown[name] == as_written(resolved.flat()[key]), name
        assert resolved.data.tta == resolved.data.hflip  # "default: as --hflip"
    assert "(default: as --hflip)" in field_of("tta").help


def test_the_help_of_augment_says_what_digits_does_per_dataset() -> None:
    phrases = {
        (True, True): "crops and flips",
        (True, False): "crops only",
        (False, True): "flips only",
        (False, False): "nothing",
    }
    text = field_of("augment").help
    shown = {}
    for group in text.split("per dataset: ")[1].split("; photos:")[0].split("; "):
        does = next(p for p in phrases.values() if group.endswith(" " + p))
        shown.update(dict.fromkeys(group.removesuffix(" " + does).split(", "), does))
    names = (*DATASETS, *PATH_FORMS)
    assert set(shown) == set(names)
    for name in names:
        c = config_from_dict({"dataset": name}).resolved()
        assert shown[name] == phrases[bool(c.data.crop_padding), bool(c.data.hflip)], name
    assert "default: photos with --pretrained" in text and "digits for a network trained" in text


@pytest.mark.parametrize(
    ("raw", "augment"),
    [
        ({"augment": True}, "digits"),
        ({"augment": False}, "none"),
        ({"data": {"augment": True}}, "digits"),  # a config.json of an earlier version
        ({"data": {"augment": False}}, "none"),
        ({"augment": "photos"}, "photos"),
        ({}, None),  # decided by the training images' channels (fit)
    ],
)
def test_augment_of_earlier_configs_keeps_its_meaning(
    raw: dict[str, object], augment: str | None
) -> None:
    assert config_from_dict(raw).resolved().data.augment == augment


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"crop_scale": 0.0}, "--crop-scale must be in (0, 1], got 0"),
        ({"crop_scale": 1.5}, "--crop-scale must be in (0, 1], got 1.5"),
        ({"jitter": -0.1}, "--jitter must be in [0, 2], got -0.1"),
        ({"jitter": 3}, "--jitter must be in [0, 2], got 3"),
        ({"grayscale": 1.2}, "--grayscale must be a probability in [0, 1], got 1.2"),
    ],
)
def test_photo_settings_out_of_range(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        config_from_dict(settings).resolved()


@pytest.mark.parametrize("key", ["mining", "margin"])
def test_the_help_of_per_objective_defaults_matches_resolved(key: str) -> None:
    shown = defaults_in_help(field_of(key).help)
    assert set(shown) == set(OBJECTIVES)
    for objective in OBJECTIVES:
        resolved = config_from_dict({"objective": objective}).resolved()
        assert shown[objective] == as_written(resolved.flat()[key]), objective


def test_a_pretrained_weights_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = {"model": "resnet34", "pretrained": "w/r34.pth", "freeze_batchnorm": True}
    config = config_from_dict(settings).resolved()
    assert config.model.pretrained == str(tmp_path / "w" / "r34.pth")
    assert config_from_dict({**settings, "pretrained": "imagenet"}).resolved().model.pretrained == (
        "imagenet"
    )
