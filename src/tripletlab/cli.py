"""The ``tripletlab`` command: a thin argparse layer over :mod:`tripletlab.training` and
:mod:`tripletlab.evaluation`.

Subcommands: ``train`` (then pictures and ``report.html``), ``evaluate`` (a run or a
checkpoint on any dataset and split, to JSON), ``plot`` (pictures and ``report.html``),
``embed`` (a dataset to an embeddings file, :mod:`tripletlab.inference`) and ``export`` (the
model to ONNX, :mod:`tripletlab.export`). Search: ``index build`` (an index file from an
embeddings file), ``search`` and ``calibrate`` (match thresholds written into the index
file), over :mod:`tripletlab.indexing`.
Each builds a config and calls one library function. User errors (bad flags, missing data,
unusable folders or checkpoints) print one line and exit with status 2; Ctrl-C during
training saves a checkpoint and exits with 130. Progress bars go to stderr, only when it is a
terminal and without ``--quiet``.

``torchrun --nproc-per-node N -m tripletlab train ...`` trains on N processes
(:mod:`tripletlab.distributed`): rank 0 alone writes the run folder, the log and the report;
every rank's errors name the rank (``tripletlab: rank 1: error: ...``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from tripletlab import distributed
from tripletlab.calibration import DEFAULT_PRECISIONS, format_calibration
from tripletlab.data import DataError
from tripletlab.distances import DISTANCES
from tripletlab.evaluation import (
    METRIC_GROUPS,
    SPLITS,
    EvalConfig,
    PlotConfig,
    Progress,
    run_evaluate,
    run_plot,
)
from tripletlab.export import DEFAULT_OPSET, ExportConfig, run_export
from tripletlab.indexing import (
    GRID_MAX_QUERIES,
    CalibrateConfig,
    IndexBuildConfig,
    SearchConfig,
    format_search,
    run_calibrate,
    run_index_build,
    run_search,
)
from tripletlab.inference import EMBED_SPLITS, EmbedConfig, run_embed
from tripletlab.losses import PAIR_MININGS, TRIPLET_MININGS
from tripletlab.models import MODELS
from tripletlab.plots import PROJECTIONS
from tripletlab.report import format_value, metric_tables
from tripletlab.search import BACKENDS, FAISS_INDEXES, IndexConfig
from tripletlab.training import (
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    EpochStats,
    Interrupted,
    NonFiniteLoss,
    StepInfo,
    TrainConfig,
    TrainingError,
    atomic_write_text,
    config_from_dict,
    fit,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
T = TypeVar("T")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class ids, got {text!r}"
        ) from None


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train an embedding, evaluate it, write pictures and report.html",
        description="Train an embedding network, evaluate it on the test split (metrics.json) "
        "and write its pictures (PCA only; `tripletlab plot` adds t-SNE) and report.html into "
        "the run folder. Flags override --config; defaults are shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    a = p.add_argument
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        help=f"fashion-mnist, mnist, digits or imagefolder:PATH (default {d.dataset})",
    )
    g.add_argument(
        "--data-dir",
        help="folder holding the IDX files (else $TRIPLETLAB_DATA, "
        "system locations, ~/.cache/tripletlab, then a download)",
    )
    g.add_argument(
        "--image-size", type=int, help=f"image folders: resize to this (default {d.image_size})"
    )
    g.add_argument(
        "--strict", action="store_true", help="image folders: unreadable files are errors"
    )
    g.add_argument(
        "--train-classes", type=_int_list, help="train on these class ids only (e.g. 0,1,2,3,4)"
    )
    g.add_argument("--test-classes", type=_int_list, help="test on these class ids only")
    g.add_argument("--unseen-classes", type=int, help="hold the last N classes out of training")
    g.add_argument(
        "--val-size",
        type=int,
        help=f"training images held out to pick the best epoch (default {d.val_size})",
    )
    g.add_argument("--augment", type=_bool, help=f"random crops (and flips) (default {d.augment})")
    g.add_argument(
        "--crop-padding",
        type=int,
        help="padding of the random crop (default 2 for image folders, else 0: none)",
    )
    g.add_argument(
        "--hflip",
        type=_bool,
        help="random horizontal flips (default: Fashion-MNIST and image folders)",
    )
    g.add_argument(
        "--tta",
        type=_bool,
        help="evaluate with the embeddings of each image and its mirror image averaged "
        "(default: when training with --hflip)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"{', '.join(MODELS)} (default {d.model})")
    g.add_argument(
        "--width",
        type=int,
        help="base width of the backbone (default: the model's own; 32 for small)",
    )
    g.add_argument("--embedding-dim", type=int, help=f"(default {d.embedding_dim})")
    g.add_argument(
        "--normalize-embeddings",
        type=_bool,
        help=f"L2-normalise the output (default {d.normalize_embeddings})",
    )
    g = p.add_argument_group("objective")
    g.add_argument("--objective", help=f"{', '.join(OBJECTIVES)} (default {d.objective})")
    g.add_argument(
        "--mining",
        help=f"triplet: {', '.join(TRIPLET_MININGS)} (default semi_hard); "
        f"contrastive: {', '.join(PAIR_MININGS)} (default hard_negative)",
    )
    g.add_argument("--margin", type=float, help="0.2 for triplet losses, 1.0 for contrastive ones")
    g.add_argument("--distance", help=f"{', '.join(DISTANCES)} (default {d.distance})")
    g.add_argument(
        "-p",
        "--labels-per-batch",
        type=int,
        help="P: classes per batch (default: 10, or all classes when fewer)",
    )
    g.add_argument(
        "-k",
        "--samples-per-label",
        type=int,
        help=f"K: images per class in a batch (default {d.samples_per_label})",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"(default {d.epochs})")
    g.add_argument(
        "--steps-per-epoch",
        type=int,
        help="batches per epoch (default: one pass over the training set)",
    )
    g.add_argument("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default {d.optimizer})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    g.add_argument("--schedule", help=f"{', '.join(SCHEDULES)} (default {d.schedule})")
    g.add_argument(
        "--warmup-epochs", type=float, help=f"linear warm-up (default {d.warmup_epochs})"
    )
    g = p.add_argument_group("run")
    a("--out", help="run folder (default: a new runs/<date>-<time>-<dataset>-<objective>)")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    a("--config", metavar="FILE", help="TOML or JSON file of settings (keys as the flags, with _)")
    a("--seed", type=int, help=f"(default {d.seed})")
    a("--device", help="auto, cpu or cuda (default auto: CUDA when available)")
    a(
        "--amp",
        help="bfloat16 mixed-precision training: auto (on CUDA and on CPUs with native "
        "bfloat16, e.g. AVX512-BF16), on or off (default auto)",
    )
    a("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    a("--eval-batch-size", type=int, help=f"(default {d.eval_batch_size})")
    a(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars (needs tensorboard)",
    )
    a(
        "--no-report",
        action="store_true",
        help="skip the pictures and report.html at the end (tripletlab plot writes them later)",
    )
    a("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "distributed (torchrun --nproc-per-node N -m tripletlab train ...; docs/distributed.md)"
    )
    g.add_argument(
        "--distributed-loss",
        help="global: every process mines and computes the loss over the whole gathered "
        "batch, gradients equal a single process's; local: only its own anchors against the "
        "gathered batch, cheaper, the gradients differ (default global)",
    )
    g.add_argument(
        "--sync-bn",
        action="store_true",
        help="BatchNorm statistics over the global batch (CUDA only; default: per process)",
    )
    g.add_argument(
        "--dist-timeout",
        type=float,
        help="seconds a process waits for the others before it fails, when one died or hangs; "
        "must exceed the validation pass at the end of each epoch "
        f"(default {distributed.DEFAULT_TIMEOUT_S:g})",
    )


def _add_evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained run or checkpoint on a dataset and split",
        description="Load a run's best checkpoint (or the given .pt file, read with "
        "weights_only=True) and its saved config, score it and write the metrics as JSON "
        "(default RUN/evaluation.json; the training's metrics.json is left alone). Metrics: "
        "precision@1, R-precision, MAP@R, Recall@1/2/4/8, k-NN accuracy, pair accuracy "
        "(threshold tuned on the test pairs, and fitted on validation pairs), ROC AUC, "
        "TAR@FAR 1e-3/1e-2, NMI/AMI. A run trained on a class subset is reported for seen and "
        "unseen classes separately.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (uses checkpoints/best.pt) or a .pt")
    p.add_argument(
        "--dataset",
        help="fashion-mnist, mnist, digits or imagefolder:PATH (default: the run's); the "
        "run's class split and image size apply",
    )
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument(
        "--split",
        help=f"{', '.join(SPLITS)}: test = the run's test split; seen = test images of the "
        "training classes (1-NN against the training set); unseen = seen and unseen classes "
        "side by side (default: unseen for a run trained on a class subset, else test)",
    )
    p.add_argument("--out", metavar="FILE", help="JSON file to write (default RUN/evaluation.json)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--k", type=int, default=1, help="neighbours of the k-NN vote (default 1)")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="GROUP",
        help=f"compute only these groups: {', '.join(METRIC_GROUPS)} (default all)",
    )
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_plot_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot",
        help="write a run's pictures and report.html",
        description="Embed the test set and a seeded subsample of the training set with the "
        "run's best checkpoint; write the pictures (2-D embeddings, nearest neighbours, pair "
        "distances, learning curves, a TensorBoard projector export) into RUN_DIR/pictures "
        "and RUN_DIR/report.html.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the run folder (tripletlab train --out)")
    p.add_argument(
        "--projections",
        nargs="+",
        metavar="METHOD",
        help=f"2-D projections of the embedding plots: {', '.join(PROJECTIONS)} (default: "
        "direct for a 2-D embedding, else pca and tsne, and umap when umap-learn is installed)",
    )
    p.add_argument("--dataset", help="draw another dataset (default: the run's)")
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--train-items",
        type=int,
        default=PlotConfig.train_items,
        help=f"training images embedded and drawn (default {PlotConfig.train_items})",
    )
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_embed_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "embed",
        help="embed a dataset with a trained run into an embeddings file (.npz)",
        description="Embed the images of a dataset (default: the run's own) with a run's best "
        "checkpoint (or the given .pt file), with the run's normalisation and embedding mode "
        "(flip test-time augmentation, bfloat16 where it trained with it), and write "
        "embeddings, labels, ids (file paths for image folders, else SPLIT/INDEX), class "
        "names and how they were made to one .npz file (tripletlab.embeddingfile). Every "
        "class of the dataset is embedded, in its own train/test split.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (uses checkpoints/best.pt) or a .pt")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="embeddings file to write")
    p.add_argument(
        "--dataset",
        help="fashion-mnist, mnist, digits or imagefolder:PATH (default: the run's); resized "
        "to the run's image size",
    )
    p.add_argument(
        "--split",
        default="all",
        help=f"{', '.join(EMBED_SPLITS)}: the dataset's own split (default all: train, then test)",
    )
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run's model to ONNX",
        description="Export a run's best checkpoint (or the given .pt file) to ONNX, in "
        "float32: input `images`, uint8 (batch, C, H, W) pixels 0-255 with the run's "
        "normalisation inside the graph; output `embeddings`, float32 (batch, D), "
        "L2-normalised in the graph (and averaged with the mirror image's when the run uses "
        "flip test-time augmentation). The normalisation, image shape, embedding size, "
        "distance and class names are in the model's metadata_props. The file is checked "
        "with onnx.checker and against PyTorch with onnxruntime before it is written. Needs "
        "pip install 'tripletlab[onnx]'.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (uses checkpoints/best.pt) or a .pt")
    p.add_argument("--onnx", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, >= 18 (default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--tta",
        type=_bool,
        help="export flip test-time augmentation (default: as the run is evaluated)",
    )
    p.add_argument(
        "--data-dir",
        help="folder holding the run's IDX files, for its normalisation (default: the run's)",
    )


def _add_index_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = IndexConfig()
    p = sub.add_parser(
        "index",
        help="build a nearest-neighbour index from an embeddings file",
        description="Search indexes: `tripletlab index build` writes one index file (an .npz "
        "read without pickle: vectors or the faiss structure, labels, ids, thresholds).",
    )
    actions = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = actions.add_parser(
        "build",
        help="index an embeddings file",
        description="Index every item of an embeddings file (tripletlab embed) and write the "
        "index file atomically: nothing is written when building fails.",
    )
    b.add_argument("--embeddings", required=True, metavar="FILE.npz", help="embeddings file")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index file to write")
    b.add_argument(
        "--distance",
        help=f"{', '.join(DISTANCES)} (default: the embeddings file's, else {d.distance})",
    )
    b.add_argument(
        "--backend",
        help=f"{', '.join(BACKENDS)} (default exact; faiss when --faiss-index is given)",
    )
    b.add_argument(
        "--faiss-index",
        help=f"{', '.join(FAISS_INDEXES)}: exact, graph (HNSW) or inverted lists (default "
        f"{d.faiss_index})",
    )
    g = b.add_argument_group("faiss")
    g.add_argument(
        "--hnsw-m", type=int, default=d.hnsw_m, help=f"HNSW links per node, M (default {d.hnsw_m})"
    )
    g.add_argument(
        "--ef-construction",
        type=int,
        default=d.ef_construction,
        help=f"HNSW candidates while building (default {d.ef_construction})",
    )
    g.add_argument(
        "--ef-search",
        type=int,
        default=d.ef_search,
        help=f"HNSW candidates while searching, stored in the index (default {d.ef_search})",
    )
    g.add_argument("--nlist", type=int, help="IVF lists (default sqrt(N), at most N/39)")
    g.add_argument(
        "--nprobe",
        type=int,
        default=d.nprobe,
        help=f"IVF lists searched per query, stored in the index (default {d.nprobe})",
    )


def _add_search_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "search",
        help="find the nearest indexed items of queries",
        description="Search an index with the embeddings of a file, or with image files "
        "embedded by the run the index came from; print (query, rank, id, label, distance).",
    )
    p.add_argument("index", metavar="INDEX", help="an index file (tripletlab index build)")
    queries = p.add_mutually_exclusive_group(required=True)
    queries.add_argument("--embeddings", metavar="FILE.npz", help="queries: an embeddings file")
    queries.add_argument("--images", nargs="+", metavar="PATH", help="queries: image files")
    p.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    p.add_argument(
        "--grid",
        metavar="OUT.png",
        help=f"draw the first {GRID_MAX_QUERIES} queries and their neighbours (items: image "
        "files, or the dataset items of `tripletlab embed`)",
    )
    p.add_argument(
        "--run", metavar="RUN_DIR", help="the run that embeds --images (default: the index's)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (default: the index's)")
    p.add_argument("--nprobe", type=int, help="IVF lists searched (default: the index's)")
    p.add_argument(
        "--limit",
        type=int,
        default=20,
        help="print the neighbours of the first N queries (default 20; 0: all)",
    )


def _add_calibrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose match thresholds on labelled embeddings",
        description="Search labelled calibration embeddings in the index (an item does not "
        "match itself); store the distance threshold of maximal F1 and those reaching each "
        "target precision in the index file (rewritten atomically).",
    )
    p.add_argument("index", metavar="INDEX", help="an index file (tripletlab index build)")
    p.add_argument(
        "--embeddings", required=True, metavar="CAL.npz", help="labelled embeddings file"
    )
    p.add_argument(
        "--precision",
        type=float,
        nargs="+",
        default=list(DEFAULT_PRECISIONS),
        metavar="P",
        help="target precisions (default 0.9 0.99)",
    )
    p.add_argument("--plot", metavar="PR.png", help="precision, recall and F1 vs threshold")


def _add_search_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_index_parser(sub)
    _add_search_parser(sub)
    _add_calibrate_parser(sub)


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = file.read_text()
    if file.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {path} is not valid JSON ({err})") from None
    else:
        if sys.version_info < (3, 11):
            raise ValueError("TOML config files need Python >= 3.11; use a .json file")
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {path} is not valid TOML ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def build_config(ns: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    raw: dict[str, Any] = _read_config_file(ns.config) if getattr(ns, "config", None) else {}
    names = {f.name for f in fields(TrainConfig)}
    raw.update({k: v for k, v in vars(ns).items() if k in names})
    return config_from_dict(raw)


class CliReporter:
    """Progress bars on stderr, a JSONL log and optional TensorBoard scalars in the run folder."""

    def __init__(self, run_dir: Path, *, quiet: bool, tensorboard: bool) -> None:
        self.log = (run_dir / "log.jsonl").open("a")
        self.quiet = quiet
        self.bar: Any = None
        self.writer: Any = None
        self.global_step = 0
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "--tensorboard needs the tensorboard package: "
                    "pip install 'tripletlab[tensorboard]'"
                ) from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def _write(self, record: dict[str, Any]) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def epoch_start(self, epoch: int, steps: int) -> None:
        if not self.quiet:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI)
            self.bar = tqdm(
                total=steps, desc=f"epoch {epoch + 1}", unit="step", leave=True, disable=None
            )

    def step(self, epoch: int, info: StepInfo) -> None:
        self.global_step += 1
        self._write({"kind": "step", "epoch": epoch + 1, **vars(info)})
        if self.writer is not None:
            self.writer.add_scalar("train/loss", info.loss, self.global_step)
            self.writer.add_scalar("train/fraction_active", info.fraction_active, self.global_step)
            self.writer.add_scalar("train/lr", info.lr, self.global_step)
        if self.bar is not None:
            rate = self.bar.format_dict.get("rate") or 0.0
            self.bar.set_postfix(
                loss=f"{info.loss:.4f}",
                active=f"{info.fraction_active:.3f}",
                img_s=f"{rate * info.samples:.0f}",
                refresh=False,
            )
            self.bar.update(1)

    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        record = {"kind": "epoch", "epoch": epoch + 1, **vars(stats), **val}
        record["samples_per_second"] = stats.samples_per_second
        self._write(record)
        if self.writer is not None:
            for key, value in val.items():
                self.writer.add_scalar(f"val/{key}", value, epoch + 1)
            self.writer.add_scalar("epoch/loss", stats.loss, epoch + 1)
        if not self.quiet:
            extra = "".join(f", {k} {v:.4f}" for k, v in val.items())
            print(
                f"epoch {epoch + 1}: loss {stats.loss:.4f}, active {stats.fraction_active:.3f}, "
                f"{stats.samples_per_second:.0f} img/s{extra}",
                file=sys.stderr,
            )

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
        if self.writer is not None:
            self.writer.close()


class ProgressBars:
    """Progress bars on stderr for the library's ``progress(description, done, total)``
    callbacks: a call with ``done == 0`` (or the first one) opens a bar, ``done == total``
    closes it. No bar when stderr is not a terminal."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.bar is None or done == 0:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, desc=description, leave=False, disable=None)
        self.bar.set_description_str(description, refresh=False)
        self.bar.n = done
        self.bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(ns: argparse.Namespace) -> ProgressBars | None:
    return None if getattr(ns, "quiet", False) else ProgressBars()


def _default_run_dir(config: TrainConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.dataset.split(":")[0]
    return Path("runs") / f"{stamp}-{name}-{config.objective}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as aligned text: ``name  value`` lines; grouped metrics (``{"seen": {...},
    "unseen": {...}}``) as a table with a column per group, before the other values."""
    blocks = []
    for table in metric_tables(metrics):
        rows = [(name, [format_value(v) for v in values]) for name, values in table.rows]
        if table.columns != ("value",):
            rows.insert(0, ("metric", list(table.columns)))
        widths = [max(len(r[0]) for r in rows)]
        widths += [max(len(r[1][i]) for r in rows) for i in range(len(table.columns))]
        lines = [
            "  ".join(f"{c:<{w}}" for c, w in zip([name, *cells], widths, strict=True)).rstrip()
            for name, cells in rows
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _prepare_run_dir(config: TrainConfig, resume: str | None, argv: Sequence[str]) -> Path:
    """The run folder, created (or checked, for a resume), with ``command.txt`` written."""
    if resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise ValueError(f"--resume {resume}: no such run folder")
    else:
        run_dir = Path(config.out) if config.out else _default_run_dir(config)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"cannot create the run folder {run_dir} ({err.strerror}); choose another --out"
            ) from None
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ValueError(
                f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
            )
    try:
        atomic_write_text(run_dir / "command.txt", shlex.join(["tripletlab", *argv]) + "\n")
    except OSError as err:
        raise ValueError(
            f"cannot write to the run folder {run_dir} ({err.strerror}); choose another --out"
        ) from None
    return run_dir


def cmd_train(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    """``tripletlab train``; under ``torchrun``, in the process group it sets up and leaves."""
    own_group = distributed.launched() and not distributed.ranks().distributed
    timeout = getattr(ns, "dist_timeout", distributed.DEFAULT_TIMEOUT_S)
    where = distributed.init(timeout) if own_group else distributed.ranks()
    try:
        return _train(ns, argv, where)
    except RuntimeError as err:  # fit names the epoch and checkpoint; this is the set-up
        if not (where.distributed and distributed.is_collective_failure(err)):
            raise
        raise distributed.PeersLost(
            f"rank {where.rank} lost the other processes ({str(err).splitlines()[0][:200]}): "
            "another rank failed (see its message) or did not answer within --dist-timeout"
        ) from err
    finally:
        if own_group:
            distributed.close()


def _train(ns: argparse.Namespace, argv: Sequence[str], where: distributed.Ranks) -> int:
    resume = getattr(ns, "resume", None)
    if resume:
        config = TrainConfig()  # unused: the run's saved config is used (only --epochs applies)
    else:
        config = build_config(ns)
        config.resolved()  # fail on bad flags before touching the disk
    # Rank 0 alone touches the run folder; an error there stops every rank.
    run_dir = distributed.from_rank0(lambda: _prepare_run_dir(config, resume, argv))
    reporter = (
        CliReporter(
            run_dir,
            quiet=getattr(ns, "quiet", False),
            tensorboard=getattr(ns, "tensorboard", False),
        )
        if where.writes
        else None
    )
    try:
        result = fit(
            config,
            run_dir,
            reporter=reporter,
            resume=bool(resume),
            epochs=getattr(ns, "epochs", None) if resume else None,
        )
    finally:
        if reporter is not None:
            reporter.close()
    if not where.writes:
        return 0  # rank 0 evaluates, prints and writes the report
    print(format_metrics(result.metrics))
    if not getattr(ns, "no_report", False):
        if not getattr(ns, "quiet", False):
            print("writing pictures (PCA) and report.html", file=sys.stderr)
        device = result.config.device if result.config is not None else "auto"
        plot = PlotConfig(run=str(run_dir), quick=True, device=device)
        try:
            print(f"report: {_with_bars(ns, lambda p: run_plot(plot, p)).report}")
        except (DataError, TrainingError, ValueError) as err:  # the run itself is complete
            print(
                f"tripletlab: warning: no pictures or report ({err}); the run is complete",
                file=sys.stderr,
            )
    print(f"run folder: {run_dir}")
    return 0


def _with_bars(ns: argparse.Namespace, call: Callable[[Progress | None], T]) -> T:
    """``call(progress)`` with progress bars (unless ``--quiet``), closed however it ends."""
    bars = _progress(ns)
    try:
        return call(bars)
    finally:
        if bars is not None:
            bars.close()


def cmd_evaluate(ns: argparse.Namespace) -> int:
    config = EvalConfig(
        run=ns.run,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        split=ns.split,
        out=ns.out,
        device=ns.device,
        k=ns.k,
        metrics=ns.metrics,
        batch_size=ns.batch_size,
    )
    result = _with_bars(ns, lambda p: run_evaluate(config, p))
    print(format_metrics(result.metrics))
    print(f"wrote {result.path}")
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    config = PlotConfig(
        run=ns.run,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        projections=ns.projections,
        device=ns.device,
        train_items=ns.train_items,
        batch_size=ns.batch_size,
    )
    result = _with_bars(ns, lambda p: run_plot(config, p))
    for path in result.pictures.values():
        print(path)
    print(f"report: {result.report}")
    return 0


def cmd_embed(ns: argparse.Namespace) -> int:
    config = EmbedConfig(
        run=ns.run,
        out=ns.out,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        split=ns.split,
        device=ns.device,
        batch_size=ns.batch_size,
    )
    result = _with_bars(ns, lambda p: run_embed(config, p))
    print(
        f"embedded {len(result.data)} images in {result.seconds:.2f} s "
        f"({result.images_per_second:.0f} images/s)"
    )
    print(f"wrote {result.path}")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    config = ExportConfig(
        run=ns.run, onnx=ns.onnx, opset=ns.opset, tta=ns.tta, data_dir=ns.data_dir
    )
    result = run_export(config)
    c, h, w = result.metadata["image_shape"]
    print(
        f"input images: uint8 (batch, {c}, {h}, {w}); output embeddings: float32 "
        f"(batch, {result.metadata['embedding_dim']}); opset {result.opset}; onnxruntime "
        f"matches PyTorch to {result.max_abs_diff:.1e}"
    )
    print(f"wrote {result.path}")
    return 0


def cmd_index(ns: argparse.Namespace) -> int:
    config = IndexBuildConfig(
        embeddings=ns.embeddings,
        out=ns.out,
        index=IndexConfig(
            distance=ns.distance or IndexConfig.distance,
            backend=ns.backend or ("faiss" if ns.faiss_index else "exact"),
            faiss_index=ns.faiss_index or IndexConfig.faiss_index,
            hnsw_m=ns.hnsw_m,
            ef_construction=ns.ef_construction,
            ef_search=ns.ef_search,
            nlist=ns.nlist,
            nprobe=ns.nprobe,
        ),
        distance_from_file=ns.distance is None,
    )
    index = run_index_build(config)
    print(
        f"wrote {config.out}: {len(index):,} items of dimension {index.dim}, "
        f"{index.config.describe()}"
    )
    return 0


def cmd_search(ns: argparse.Namespace) -> int:
    config = SearchConfig(
        index=ns.index,
        embeddings=ns.embeddings,
        images=tuple(ns.images or ()),
        k=ns.k,
        grid=ns.grid,
        run=ns.run,
        device=ns.device,
        ef_search=ns.ef_search,
        nprobe=ns.nprobe,
    )
    out = run_search(config)
    print(format_search(out, limit=ns.limit or None))
    shown = len(out.query_ids) if not ns.limit else min(ns.limit, len(out.query_ids))
    if shown < len(out.query_ids):
        print(f"(the first {shown} of {len(out.query_ids):,} queries; --limit 0 prints all)")
    if out.note:
        print(f"tripletlab: {out.note}", file=sys.stderr)
    if out.grid is not None:
        print(f"grid: {out.grid}")
    return 0


def cmd_calibrate(ns: argparse.Namespace) -> int:
    config = CalibrateConfig(
        index=ns.index, embeddings=ns.embeddings, precisions=tuple(ns.precision), plot=ns.plot
    )
    out = run_calibrate(config)
    print(format_calibration(out.calibration))
    print(f"wrote the thresholds into {out.index}")
    if out.plot is not None:
        print(f"plot: {out.plot}")
    return 0


#: The search subcommands, dispatched by ``main``.
SEARCH_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "search": cmd_search,
    "calibrate": cmd_calibrate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tripletlab",
        description="Similarity learning with triplet loss: train an embedding, evaluate it "
        "(on any dataset, seen and unseen classes) and draw it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_plot_parser(sub)
    _add_embed_parser(sub)
    _add_export_parser(sub)
    _add_search_parsers(sub)
    return parser


def _prefix() -> str:
    """``tripletlab: `` and, in a distributed run, the rank (``tripletlab: rank 1: ``)."""
    return (
        f"tripletlab: rank {os.environ.get('RANK', '?')}: "
        if distributed.launched()
        else "tripletlab: "
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    try:
        if ns.command == "train":
            return cmd_train(ns, args)
        if ns.command == "evaluate":
            return cmd_evaluate(ns)
        if ns.command == "plot":
            return cmd_plot(ns)
        if ns.command == "embed":
            return cmd_embed(ns)
        if ns.command == "export":
            return cmd_export(ns)
        if ns.command in SEARCH_COMMANDS:
            return SEARCH_COMMANDS[ns.command](ns)
    except Interrupted as err:
        print(f"{_prefix()}{err}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (NonFiniteLoss, distributed.PeersLost) as err:
        print(f"{_prefix()}error: {err}", file=sys.stderr)
        return 1
    except (DataError, TrainingError, ValueError) as err:
        print(f"{_prefix()}error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
