"""Embedding throughput on the CPU: PyTorch (float32, bfloat16 autocast) against ONNX Runtime.

The model is the default one (``small``: 32-pool-64-64-pool-128, 7x7 grid, 28x28x1, 64-d
L2-normalised embeddings) with random weights, or the model of a run (``--run``). Every setup
computes the same thing, :class:`tripletlab.export.EmbeddingPipeline`: uint8 images in,
normalisation, the network, L2 normalisation (and flip test-time augmentation when the run
uses it), embeddings out. The setups:

- ``PyTorch float32 (NCHW)``: PyTorch's default weight layout, ``torch.inference_mode()``;
- ``PyTorch float32 (channels-last)``: channels-last weights, as ``tripletlab embed`` runs;
- ``PyTorch float32 (channels-last, BN fused)``: with BatchNorm folded into the
  convolutions by :func:`tripletlab.models.fuse_batchnorm`, as ``tripletlab embed`` and the
  evaluation run it;
- ``PyTorch bf16 autocast``: the same two under ``torch.autocast("cpu", torch.bfloat16)``, only
  on CPUs with native bfloat16 (AVX512-BF16 or AMX; else oneDNN emulates it, slower);
- ``ONNX Runtime``: the file of :func:`tripletlab.export.export_model`, with
  ``graph_optimization_level = ORT_ENABLE_ALL`` (which adds the NCHWc convolution layout;
  the basic and extended levels ran at about half its speed) and sequential execution;
- ``ONNX Runtime, BN fused before export``: BatchNorm folded into the convolutions with
  :func:`tripletlab.models.fuse_batchnorm` before exporting (``--no-fused`` skips it).
  ONNX Runtime fuses Conv+BatchNorm itself, so this is expected to change nothing.

(Channels-last weights change nothing in the exported graph: ONNX is NCHW and ONNX Runtime
picks its own layout.)

Both libraries use ``--threads`` threads (``torch.set_num_threads``, ORT's
``intra_op_num_threads``; ``inter_op_num_threads = 1``). For each batch size every setup is
warmed up, then timed round-robin, one repeat of each in turn, so slow drifts of the machine
touch all of them alike; a repeat embeds at least ``--images-per-repeat`` images (256 calls
at batch 1, one at batch 256) and is timed with ``time.perf_counter``. The table gives the
median and the interquartile range of the per-repeat rates. The issue's target: ONNX
Runtime at least 1.5x PyTorch's float32 CPU throughput at batch 256.

Usage:
    python benchmarks/bench_inference.py                      # random weights, torch's threads
    python benchmarks/bench_inference.py --threads 1 --repeats 30
    python benchmarks/bench_inference.py --run runs/final-fmnist --out docs/bench_inference.md
    python benchmarks/bench_inference.py --repeats 3 --warmup 1   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import describe_machine
from sections import write_section
from torch import Tensor

from tripletlab.embedding import cpu_has_native_bf16
from tripletlab.evaluation import load_run
from tripletlab.export import EmbeddingPipeline, export_model, require_onnx
from tripletlab.inference import load_run_dataset
from tripletlab.models import EmbeddingModel, build_model, fuse_batchnorm

# Fashion-MNIST's training statistics, for the random-weights model.
MEAN, STD = (0.2860,), (0.3530,)
IMAGE_SHAPE = (1, 28, 28)
TARGET = 1.5
REFERENCE = "PyTorch float32 (channels-last)"
FUSED = "PyTorch float32 (channels-last, BN fused)"  # what tripletlab embed runs
ORT = "ONNX Runtime"

Setup = Callable[[Tensor], object]


def ort_session(path: Path, threads: int) -> Setup:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> object:
        return session.run(["embeddings"], {"images": x.numpy()})[0]

    return run


def torch_setup(pipeline: EmbeddingPipeline, *, bf16: bool) -> Setup:
    def run(x: Tensor) -> object:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return pipeline(x)

    return run


def build_setups(
    model: EmbeddingModel,
    image_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    flip: bool,
    threads: int,
    folder: Path,
    fused: bool,
) -> dict[str, Setup]:
    def copied(layout: torch.memory_format) -> EmbeddingModel:
        net = copy.deepcopy(model).eval()
        return net.to(memory_format=layout)  # type: ignore[call-overload,no-any-return]

    nchw = EmbeddingPipeline(copied(torch.contiguous_format), mean, std, flip=flip).eval()
    cl = EmbeddingPipeline(copied(torch.channels_last), mean, std, flip=flip).eval()
    folded = fuse_batchnorm(copied(torch.channels_last))
    cl_fused = EmbeddingPipeline(folded, mean, std, flip=flip).eval()
    setups: dict[str, Setup] = {
        "PyTorch float32 (NCHW)": torch_setup(nchw, bf16=False),
        REFERENCE: torch_setup(cl, bf16=False),
        FUSED: torch_setup(cl_fused, bf16=False),
    }
    if cpu_has_native_bf16():
        setups["PyTorch bf16 autocast (channels-last)"] = torch_setup(cl, bf16=True)
        setups["PyTorch bf16 autocast (channels-last, BN fused)"] = torch_setup(cl_fused, bf16=True)
    for name, net in (
        ("model", model),
        ("fused", fuse_batchnorm(copy.deepcopy(model).eval()) if fused else None),
    ):
        if net is not None:
            export_model(
                net, folder / f"{name}.onnx", image_shape=image_shape, mean=mean, std=std, flip=flip
            )
    setups[ORT] = ort_session(folder / "model.onnx", threads)
    if fused:
        setups[f"{ORT}, BN fused before export"] = ort_session(folder / "fused.onnx", threads)
    return setups


def measure(
    setups: dict[str, Setup],
    image_shape: tuple[int, int, int],
    batch: int,
    repeats: int,
    warmup: int,
    images: int,
) -> dict[str, list[float]]:
    """Per-repeat images/s of every setup at ``batch``, timed round-robin after warm-up."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, *image_shape), dtype=torch.uint8, generator=g)
    calls = max(1, -(-images // batch))
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(warmup):
        for run in setups.values():
            run(x)
    for _ in range(repeats):
        for name, run in setups.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                run(x)
            rates[name].append(calls * batch / (time.perf_counter() - t0))
    return rates


def agreement(setups: dict[str, Setup], image_shape: tuple[int, int, int]) -> float:
    """Max |ONNX Runtime - PyTorch float32| over the embeddings of 16 random images."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (16, *image_shape), dtype=torch.uint8, generator=g)
    want = np.asarray(setups[REFERENCE](x))
    return float(np.abs(np.asarray(setups[ORT](x)) - want).max())


def iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q3 - q1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder or .pt checkpoint (default: random weights)")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help=f"threads for torch and ONNX Runtime (default {torch.get_num_threads()}, torch's)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repeats (default 5)")
    parser.add_argument(
        "--images-per-repeat",
        type=int,
        default=256,
        help="images embedded per timed repeat (default 256)",
    )
    parser.add_argument("--no-fused", action="store_true", help="skip the BN-fused export")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    require_onnx()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    if args.run:
        run = load_run(Path(args.run), "cpu")
        data = load_run_dataset(run)
        model, (mean, std), flip = run.model, data.stats, bool(data.config.data.tta)
        shape = run.image_shape
        what = (
            f"the model of {args.run} ({run.config.model.name}, {run.image_shape}, flip TTA {flip})"
        )
    else:
        torch.manual_seed(0)
        model, mean, std, flip = build_model("small").eval(), MEAN, STD, False
        shape = IMAGE_SHAPE
        what = "the default model (small, 28x28x1, 64-d) with random weights"
    with tempfile.TemporaryDirectory() as tmp:
        setups = build_setups(
            model, shape, mean, std, flip, args.threads, Path(tmp), not args.no_fused
        )
        diff = agreement(setups, shape)
        results = {
            b: measure(setups, shape, b, args.repeats, args.warmup, args.images_per_repeat)
            for b in args.batch_sizes
        }
    lines = [
        "## Embedding throughput: PyTorch and ONNX Runtime on the CPU",
        "",
        f"- machine: {describe_machine()}",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s)",
        f"- model: {what}; {args.repeats} timed repeats of >= {args.images_per_repeat} images "
        f"after {args.warmup} warm-up repeats, round-robin",
        f"- ONNX Runtime vs PyTorch float32: max |difference| {diff:.1e} on 16 random images",
        "",
        "| setup | batch | images/s (median) | IQR | ms per batch |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for b, rates in results.items():
        for name, values in rates.items():
            med = statistics.median(values)
            lines.append(
                f"| {name} | {b} | {med:,.0f} | {iqr(values):,.0f} | {1000 * b / med:.2f} |"
            )
    lines.append("")
    for b in (256, *args.batch_sizes):
        if b in results:
            rates = results[b]
            ratio = statistics.median(rates[ORT]) / statistics.median(rates[REFERENCE])
            verdict = "reached" if ratio >= TARGET else "NOT reached"
            lines.append(
                f"ONNX Runtime / {REFERENCE} at batch {b}: {ratio:.2f}x (target {TARGET}x: "
                f"{verdict})"
            )
            for other in (
                FUSED,
                "PyTorch bf16 autocast (channels-last)",
                "PyTorch bf16 autocast (channels-last, BN fused)",
            ):
                if other in rates:
                    r = statistics.median(rates[ORT]) / statistics.median(rates[other])
                    lines.append(f"ONNX Runtime / {other} at batch {b}: {r:.2f}x")
            break
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
