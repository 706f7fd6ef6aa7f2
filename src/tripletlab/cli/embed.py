"""A trained run used outside tripletlab: ``tripletlab embed`` (a dataset to an
embeddings file, :mod:`tripletlab.inference`) and ``tripletlab export`` (the model to ONNX,
:mod:`tripletlab.export`)."""

from __future__ import annotations

import argparse

from tripletlab.cli.common import DATASET_HELP, _BoolFlag, _HelpFormatter
from tripletlab.cli.progress import _with_bars
from tripletlab.export import DEFAULT_OPSET, ExportConfig, run_export
from tripletlab.inference import EMBED_SPLITS, EmbedConfig, run_embed


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
        help=f"{DATASET_HELP} (default: the run's); resized to the run's image size",
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
        formatter_class=_HelpFormatter,
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
        action=_BoolFlag,
        help="export flip test-time augmentation (default: as the run is evaluated)",
    )
    p.add_argument(
        "--data-dir",
        help="folder holding the run's IDX files: only for runs written before checkpoints "
        "stored their normalisation (default: the run's)",
    )


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
