"""The data of a run (:mod:`tripletlab.training.data`): the unseen-class protocol's test
and class-disjoint validation sets, and the same-class hold-out of runs without a class
split."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import inshop_replica
from PIL import Image
from training_helpers import Said, digits_config

from tripletlab.cli.common import format_metrics
from tripletlab.data import DataError, DiskImages
from tripletlab.models import IMAGENET_MEAN, IMAGENET_STD, build_model
from tripletlab.scores import baseline_scores, evaluate_embeddings
from tripletlab.training import ConfigError, config_from_dict, fit
from tripletlab.training.data import (
    class_disjoint_validation,
    inference_spec,
    load_config_dataset,
    prepare_data,
    pretrained_input,
)


def _classes(labels: torch.Tensor) -> set[int]:
    return set(torch.unique(labels).tolist())


def test_unseen_classes_are_tested_on_all_their_images_and_validated_apart() -> None:
    config = digits_config(unseen_classes=4).resolved()
    raw = load_config_dataset(config)
    splits, val = prepare_data(config)
    assert val is not None and class_disjoint_validation(splits, val)
    test, train, valc = (
        _classes(splits.test.labels),
        _classes(splits.train.labels),
        _classes(val.labels),
    )
    assert test == {6, 7, 8, 9} and len(valc) == 2  # 0.2 of 6 training classes, at least 2
    assert not (train & valc) and not (train & test) and not (valc & test)
    assert train | valc == set(range(6))
    for c in test:  # every image of a held-out class, from both splits
        n = int((raw.train.labels == c).sum() + (raw.test.labels == c).sum())
        assert int((splits.test.labels == c).sum()) == n
    for c in valc:  # every training image of a validation class
        assert int((val.labels == c).sum()) == int((raw.train.labels == c).sum())
    assert len(splits.train) + len(val) == int(torch.isin(raw.train.labels, torch.arange(6)).sum())


def test_val_classes_zero_keeps_same_class_validation() -> None:
    splits, val = prepare_data(digits_config(unseen_classes=4, val_classes=0).resolved())
    assert val is not None and len(val) == 150 and not class_disjoint_validation(splits, val)


def test_runs_without_class_split_are_unchanged() -> None:
    config = digits_config().resolved()
    splits, val = prepare_data(config)
    raw = load_config_dataset(config)
    g = torch.Generator().manual_seed(config.run.seed + 17)
    perm = torch.randperm(len(raw.train), generator=g)
    assert val is not None and torch.equal(val.labels, raw.train.labels[perm[:150]])
    assert torch.equal(splits.test.labels, raw.test.labels)


def test_bad_val_classes_are_one_line_errors() -> None:
    with pytest.raises(DataError, match=r"--val-classes 5 asks for 5 .* at most 4"):
        prepare_data(digits_config(unseen_classes=4, val_classes=5).resolved())
    with pytest.raises(DataError, match="needs classes held out"):
        prepare_data(digits_config(val_classes=2).resolved())
    with pytest.raises(ConfigError, match="whole number"):
        digits_config(unseen_classes=4, val_classes=2.5).resolved()


def test_a_run_with_unseen_classes_scores_them_leave_one_out_with_baselines(
    tmp_path: Path,
) -> None:
    said = Said()
    result = fit(digits_config(epochs=1, unseen_classes=4), tmp_path / "r", reporter=said)
    assert "val_map_at_r" in result.history[0] and "val_knn_accuracy" not in result.history[0]
    unseen, seen = result.metrics["unseen"], result.metrics["seen"]
    assert unseen["num_excluded_queries"] == 0 and unseen["knn_gallery"] == "leave-one-out"
    assert result.config is not None
    raw = load_config_dataset(result.config)
    held = torch.arange(6, 10)
    both = torch.isin(raw.train.labels, held).sum() + torch.isin(raw.test.labels, held).sum()
    assert unseen["num_test"] == int(both)  # every image of the held-out classes
    for group in (seen, unseen):
        base = group["baselines"]
        assert base["items"] == group["num_test"]
        for method in ("raw_pixels", "untrained"):
            assert set(base[method]) == {"precision_at_1", "map_at_r"}
            assert 0.0 < base[method]["precision_at_1"] <= 1.0
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk == result.metrics
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["data"]["val_classes"] == 2
    assert "baseline raw_pixels map_at_r" in format_metrics(result.metrics)
    # which classes each part holds, by name: 6-9 held out to test, 2 of 0-5 to validate
    names = json.loads((tmp_path / "r" / "classes.json").read_text())
    assert names["test"] == ["6", "7", "8", "9"] and len(names["validate"]) == 2
    assert sorted(names["train"] + names["validate"]) == [str(c) for c in range(6)]
    held_out = [m for m in said.messages if m.startswith("held out of training: ")]
    assert held_out == [
        f"held out of training: validate 2 classes ({', '.join(names['validate'])}); test 4 "
        f"classes (6, 7, 8, ...); every part's classes in {tmp_path / 'r' / 'classes.json'}"
    ]


def test_raw_pixel_baseline_is_cosine_retrieval_of_the_same_items() -> None:
    config = digits_config().resolved()
    test = load_config_dataset(config).test
    net = build_model("small", in_channels=1, image_size=8, embedding_dim=8, width=8)
    b = baseline_scores(test, net, ((0.5,), (0.25,)), torch.device("cpu"), seed=0)
    x = test.images[:].flatten(1).float() / 255
    m = evaluate_embeddings(x, test.labels, distance="cosine", metrics=["retrieval"])
    assert b["items"] == len(test) and "notes" not in b
    assert b["raw_pixels"] == {"precision_at_1": m["precision_at_1"], "map_at_r": m["map_at_r"]}


def test_a_query_gallery_split_keeps_its_gallery_past_the_validation_hold_out(
    tmp_path: Path,
) -> None:
    data = inshop_replica(tmp_path / "inshop")
    config = config_from_dict(
        {"dataset": f"inshop:{data.root}", "image_size": 16, "val_size": 6, "val_classes": 0}
    ).resolved()
    splits, val = prepare_data(config)
    raw = load_config_dataset(config)
    assert val is not None and len(val) == 6 and len(splits.train) == data.train - 6
    assert splits.gallery is not None and raw.gallery is not None
    assert splits.gallery.paths == raw.gallery.paths and len(splits.gallery) == data.gallery
    assert splits.test.paths == raw.test.paths and len(splits.test) == data.query


def test_a_dataset_whose_own_test_classes_are_unseen_validates_on_other_classes(
    tmp_path: Path,
) -> None:
    replica = inshop_replica(tmp_path / "inshop", train_items=10)
    config = digits_config(dataset=f"inshop:{replica.root}", image_size=8).resolved()
    splits, val = prepare_data(config)
    assert val is not None and class_disjoint_validation(splits, val)
    assert len(_classes(val.labels)) == 2 and len(_classes(splits.train.labels)) == 8  # a fifth
    assert splits.gallery is not None and len(splits.gallery) == replica.gallery
    same = digits_config(dataset=f"inshop:{replica.root}", image_size=8, val_classes=0)
    splits, val = prepare_data(same.resolved())
    assert val is not None and not class_disjoint_validation(splits, val)  # as asked


def test_a_pretrained_run_takes_3_channels_with_imagenet_statistics(tmp_path: Path) -> None:
    grey = load_config_dataset(digits_config())
    config = digits_config(model="resnet18", pretrained=str(tmp_path / "w.pth")).resolved()
    rgb = load_config_dataset(config)  # the weights file is not read here
    assert (rgb.mean, rgb.std) == (IMAGENET_MEAN, IMAGENET_STD)
    for a, b in ((grey.train, rgb.train), (grey.test, rgb.test)):
        x, y = a.images, b.images
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        assert y.shape == (len(a), 3, 8, 8) and y.is_contiguous()
        assert all(torch.equal(y[:, c], x[:, 0]) for c in range(3))
        assert torch.equal(a.labels, b.labels)
    spec = inference_spec(config, prepare_data(config)[0])
    assert (spec.channels, spec.mean, spec.std) == (3, IMAGENET_MEAN, IMAGENET_STD)


def test_pretrained_input_keeps_rgb_and_refuses_other_channel_counts() -> None:
    splits = load_config_dataset(digits_config())
    rgb = pretrained_input(pretrained_input(splits))
    assert rgb.train.images.shape[1] == 3
    two = replace(rgb.train, images=rgb.train.images[:][:, :2].contiguous())
    with pytest.raises(DataError, match="grey or RGB images, not 2 channels"):
        pretrained_input(replace(rgb, train=two, test=two, mean=(0.0, 0.0), std=(1.0, 1.0)))


def test_grey_images_of_the_image_cache_are_read_with_3_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (10, 10), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / c / f"{i}.png")
    settings = {"dataset": f"imagefolder:{tmp_path / 'imgs'}", "image_size": 8, "workers": 1}
    settings["cache_dir"] = str(tmp_path / "cache")
    grey = load_config_dataset(digits_config(**settings).resolved())
    config = digits_config(**settings, model="resnet18", pretrained="imagenet").resolved()
    rgb = load_config_dataset(config)
    assert isinstance(grey.train.images, DiskImages) and grey.train.images.shape[1] == 1
    assert isinstance(rgb.train.images, DiskImages) and rgb.train.images.shape[1] == 3
    assert torch.equal(rgb.train.images[:], grey.train.images[:].expand(-1, 3, -1, -1))
    assert (rgb.mean, rgb.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_classes_json_keeps_odd_folder_names(tmp_path: Path) -> None:
    """A class folder whose name is not UTF-8 or holds a newline: the run trains, its
    classes.json gives the names back, and its first lines show them escaped."""
    root = tmp_path / "photos"
    odd = [os.fsdecode(b"caf\xff"), "two\nlines", "c", "d", "e"]
    for c, name in enumerate(odd):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * c, 5 * i, 100)).save(root / name / f"{i}.png")
    config = digits_config(
        dataset=f"imagefolder:{root}",
        image_size=8,
        epochs=1,
        steps_per_epoch=2,
        val_size=0,
        unseen_classes=2,
    )
    said = Said()
    fit(config, tmp_path / "r", reporter=said)
    names = json.loads((tmp_path / "r" / "classes.json").read_text())
    assert sorted(names["train"] + names["test"]) == sorted(odd)
    assert names["test"] == sorted(odd)[-2:]  # the last two in sorted order
    held_out = [m for m in said.messages if m.startswith("held out of training")]
    assert len(held_out) == 1 and "\n" not in held_out[0]
