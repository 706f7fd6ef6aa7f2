"""What the subcommands share (:mod:`tripletlab.cli.common`): the metrics as text."""

from __future__ import annotations

from tripletlab.cli import format_metrics


def test_flat_metrics_one_line_each() -> None:
    text = format_metrics({"precision_at_1": 0.91234, "knn_gallery": "train", "num_test": 3})
    assert text.splitlines() == [
        "precision_at_1  0.9123",
        "knn_gallery     train",
        "num_test        3",
    ]


def test_grouped_metrics_a_column_per_group_and_the_notes_below() -> None:
    metrics = {
        "seen": {"knn_accuracy": 0.9, "pair_floor": 0.8, "held_out_pair_accuracy": 0.85},
        "unseen": {"knn_accuracy": 0.5, "pair_floor": 0.7, "held_out_pair_accuracy": 0.65},
        "train_seconds": 12.5,
    }
    blocks = format_metrics(metrics).split("\n\n")
    assert blocks[0].splitlines()[0].split() == ["metric", "seen", "unseen"]
    assert blocks[1] == "train_seconds  12.5000"
    notes = blocks[2].splitlines()
    assert notes[0].startswith("note: unseen: the images of the classes held out of training")
    assert notes[1].startswith("note: unseen: held_out_pair_accuracy 0.6500 is below pair_floor")
    assert len(notes) == 2  # the seen group is above its floor
