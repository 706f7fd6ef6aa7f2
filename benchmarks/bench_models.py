"""Choose the default embedding network: size, CPU throughput and a short triplet-loss probe.

For each candidate network this measures, with ``torch.set_num_threads(threads)``:

- parameters;
- training throughput: images/s of forward + batch-hard triplet loss + backward + Adam step
  on a (128, 1, 28, 28) batch (8 labels x 16), median of timed steps after warm-up;
- inference throughput: images/s of a no-grad forward in eval mode on a (256, 1, 28, 28) batch;
  both with PyTorch's default NCHW weights and with channels-last weights, every setup timed
  round-robin;
- a quality probe: train from scratch on Fashion-MNIST for a fixed wall-clock budget
  (``TripletMarginLoss(0.2, mining="batch_hard")``, euclidean, ``PKSampler(p=8, k=16)``, Adam
  lr 1e-3, embedding dim 64, random horizontal flips, channels-last weights unless
  ``--no-channels-last``), then the 1-NN accuracy of the 10,000
  test images against the 60,000 training images as gallery, and how long that evaluation
  (embedding 70,000 images + the chunked nearest-neighbour search) took.

Fashion-MNIST is read from the IDX files (``.gz`` or raw) in the first directory that exists
among ``$TRIPLETLAB_DATA``, ``/usr/share/datasets/fashion-mnist`` and
``~/.cache/tripletlab/fashion-mnist`` (Debian: ``apt-get install dataset-fashion-mnist``).

Usage:
    python benchmarks/bench_models.py --out docs/bench_models.md
    python benchmarks/bench_models.py --mining semi_hard      # batch_hard collapses here
    python benchmarks/bench_models.py --models small-w16 small-w32 --budget 20   # a quick look
    # about the 10-minute train + eval of `tripletlab train`:
    python benchmarks/bench_models.py --mining semi_hard --models small-w16 small-w32 \
        --budget 510 --no-speed
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from machine import describe_machine
from sections import write_section
from torch import Tensor

from tripletlab import TripletMarginLoss
from tripletlab.losses import TRIPLET_MININGS
from tripletlab.models import EmbeddingModel, SmallConvNet, build_model
from tripletlab.samplers import PKSampler

MEAN, STD = 0.2860, 0.3530
EMBEDDING_DIM = 64
# P labels x K images per batch. Fashion-MNIST has only 10 classes, so the P = 32, K = 4 of
# person re-identification cannot be drawn; 8 x 16 keeps the batch at 128 (torchvision's
# references/similarity uses P = 8 on Fashion-MNIST).
P, K = 8, 16
INFER_BATCH = 256
CONTENDED = 0.7  # probe rate / measured train rate below which a probe is run again
DATA_DIRS = [
    os.environ.get("TRIPLETLAB_DATA", ""),
    "/usr/share/datasets/fashion-mnist",
    "~/.cache/tripletlab/fashion-mnist",
]

CANDIDATES: dict[str, tuple[str, Callable[[], EmbeddingModel]]] = {
    "embeddingnet": (
        "siamese-triplet EmbeddingNet (conv 32-64 5x5, FC 256-256)",
        lambda: build_model("embeddingnet", embedding_dim=EMBEDDING_DIM),
    ),
    "small-w16": (
        "small, width 16: 16-pool-32-32-pool-64, 7x7 grid",
        lambda: build_model("small", width=16, embedding_dim=EMBEDDING_DIM),
    ),
    "small-w32-shallow": (
        "small, one conv per stage: 32-pool-64-pool-128",
        lambda: EmbeddingModel(SmallConvNet(1, ((32,), (64,), (128,))), 128, EMBEDDING_DIM),
    ),
    "small-w32": (
        "small (the default), width 32: 32-pool-64-64-pool-128, 7x7 grid",
        lambda: build_model("small", width=32, embedding_dim=EMBEDDING_DIM),
    ),
    "small-w32-gap": (
        "the earlier default: 32-32-pool-64-64-pool-128, global average",
        lambda: EmbeddingModel(SmallConvNet(1, ((32, 32), (64, 64), (128,))), 128, EMBEDDING_DIM),
    ),
    "resnet18": (
        "ResNet-18, 3x3 stride-1 stem (small_input)",
        lambda: build_model("resnet18", embedding_dim=EMBEDDING_DIM),
    ),
}


# --------------------------------------------------------------------------- data


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file of unsigned bytes (gzip-compressed or raw) as an array of its shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normalised train/test images (N, 1, 28, 28) float32 and labels (N,) int64."""
    dirs = [Path(d).expanduser() for d in DATA_DIRS if d]
    root = next((d for d in dirs if d.is_dir()), None)
    if root is None:
        sys.exit(
            "Fashion-MNIST not found in any of "
            + ", ".join(map(str, dirs))
            + "; install it (apt-get install -y dataset-fashion-mnist) or set TRIPLETLAB_DATA"
        )

    def read(stem: str) -> npt.NDArray[np.uint8]:
        for name in (f"{stem}.gz", stem):
            if (root / name).is_file():
                return _read_idx(root / name)
        sys.exit(f"{stem}[.gz] not found in {root}")

    out: list[Tensor] = []
    for split in ("train", "t10k"):
        images = torch.from_numpy(read(f"{split}-images-idx3-ubyte").copy())  # (N, 28, 28)
        x = (images.float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)  # (N, 1, 28, 28)
        y = torch.from_numpy(read(f"{split}-labels-idx1-ubyte").astype(np.int64))  # (N,)
        out += [x, y]
    return out[0], out[1], out[2], out[3]


# --------------------------------------------------------------------------- speed


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _to_format(model: EmbeddingModel, channels_last: bool) -> EmbeddingModel:
    """The model with its weights in channels-last (NHWC) layout when asked.

    Outputs are the same up to float rounding; only the memory layout the convolutions (oneDNN
    on CPU) work in changes. Inputs need no conversion: a channels-last weight makes the
    convolution produce channels-last activations, and the rest of the network follows.
    """
    if not channels_last:
        return model
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def throughputs(
    names: list[str], warmup: int, steps: int
) -> dict[tuple[str, bool], dict[str, float]]:
    """Train and inference images/s of every (model, channels_last), timed round-robin.

    Train: forward + batch-hard triplet loss + backward + Adam step on a P x K = 128 batch.
    Infer: no-grad eval-mode forward on a batch of 256. Every round times one step of each
    setup in turn, so slow drifts of the machine (other processes, clock) touch all of them
    alike; the first ``warmup`` rounds are not timed; the median step gives the rate.
    """
    loss_fn = TripletMarginLoss(0.2, mining="batch_hard", distance="euclidean", seed=0)
    y = torch.arange(P).repeat_interleave(K)  # (128,)
    x_train = torch.randn(P * K, 1, 28, 28)
    x_infer = torch.randn(INFER_BATCH, 1, 28, 28)
    keys = [(name, cl) for name in names for cl in (False, True)]
    models, opts = {}, {}
    for key in keys:
        torch.manual_seed(0)
        models[key] = _to_format(CANDIDATES[key[0]][1](), key[1])
        opts[key] = torch.optim.Adam(models[key].parameters(), lr=1e-3)
    train: dict[tuple[str, bool], list[float]] = {key: [] for key in keys}
    infer: dict[tuple[str, bool], list[float]] = {key: [] for key in keys}
    for r in range(warmup + steps):
        for key in keys:
            model, opt = models[key].train(), opts[key]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x_train), y).backward()
            opt.step()
            t1 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                model(x_infer)
            t2 = time.perf_counter()
            if r >= warmup:
                train[key].append(t1 - t0)
                infer[key].append(t2 - t1)
    return {
        key: {
            "train": P * K / statistics.median(train[key]),
            "infer": INFER_BATCH / statistics.median(infer[key]),
        }
        for key in keys
    }


# --------------------------------------------------------------------------- quality


@torch.no_grad()
def embed(model: EmbeddingModel, x: Tensor, batch: int = 1024) -> Tensor:
    """Eval-mode embeddings (N, D) of images (N, 1, 28, 28)."""
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


@torch.no_grad()
def nn_accuracy(
    query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor, chunk: int = 512
) -> float:
    """Share of queries whose nearest gallery item (Euclidean) has the query's label.

    Queries are taken ``chunk`` at a time, so at most a (chunk, N_gallery) block of distances
    is in memory. Query and gallery are disjoint here (test vs train), so there are no
    self-matches to exclude.
    """
    hits = 0
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i : i + chunk], gallery)  # (chunk, N_gallery)
        nearest = d.topk(1, dim=1, largest=False).indices[:, 0]  # (chunk,)
        hits += int((gallery_labels[nearest] == query_labels[i : i + chunk]).sum())
    return hits / query.shape[0]


def probe(
    make: Callable[[], EmbeddingModel],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Train for ``args.budget`` seconds of wall-clock, then 1-NN accuracy test vs train."""
    x_train, y_train, x_test, y_test = data
    seed = args.seed
    torch.manual_seed(seed)
    model = _to_format(make(), args.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = TripletMarginLoss(args.margin, mining=args.mining, distance="euclidean", seed=seed)
    sampler = PKSampler(y_train, p=args.p, k=args.k, seed=seed)
    flips = torch.Generator().manual_seed(seed)
    steps = 0
    recent: deque[float] = deque(maxlen=50)  # losses of the last 50 steps
    start = time.perf_counter()
    done = False
    while not done:
        for batch in sampler:
            idx = torch.tensor(batch)  # (128,)
            x, y = x_train[idx], y_train[idx]  # (128, 1, 28, 28), (128,)
            flip = torch.rand(x.shape[0], 1, 1, 1, generator=flips) < 0.5  # (128, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            steps += 1
            recent.append(float(loss.detach()))
            if time.perf_counter() - start >= args.budget:
                done = True
                break
    train_s = time.perf_counter() - start
    t0 = time.perf_counter()
    acc = nn_accuracy(embed(model, x_test), y_test, embed(model, x_train), y_train)
    eval_s = time.perf_counter() - t0
    return {
        "steps": steps,
        "epochs": steps * args.p * args.k / x_train.shape[0],
        "train_s": train_s,
        "probe_rate": steps * args.p * args.k / train_s,
        "acc": acc,
        "eval_s": eval_s,
        "loss_last50": statistics.fmean(recent),
    }


# --------------------------------------------------------------------------- report


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    """The markdown section: how it was measured, then one row per model."""
    layout = "channels-last" if args.channels_last else "default (NCHW)"
    lines = [
        "## Models: size, CPU throughput and a triplet-loss probe on Fashion-MNIST",
        "",
        f"- Command: `python benchmarks/bench_models.py {' '.join(sys.argv[1:])}`",
        f"- Machine: {describe_machine()}; {args.threads} torch threads; load average (1 min) "
        f"{args.load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        f"- Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"torch {torch.__version__}",
        f"- Throughput (images/s): train = forward + batch-hard triplet loss + backward + Adam "
        f"step, batch {P * K} (P={P} x K={K}) of 1x28x28; infer = no-grad eval forward, batch "
        f"{INFER_BATCH}; median of {args.steps} steps after {args.warmup} warm-up, every model "
        "and layout timed round-robin. NCHW = PyTorch's default layout; CL = the model moved "
        "to channels-last (`model.to(memory_format=torch.channels_last)`).",
        f"- Probe: train from scratch for {args.budget:g} s wall-clock with {layout} weights "
        f"(TripletMarginLoss margin {args.margin:g}, {args.mining}, euclidean; PKSampler "
        f"p={args.p} k={args.k}; Adam lr {args.lr:g}; embedding dim {EMBEDDING_DIM}, "
        f"L2-normalised; inputs normalised with mean {MEAN} std {STD}; random horizontal "
        f"flips; seed {args.seed}), then 1-NN accuracy of the 10,000 test images against the "
        "60,000 training images. Eval s = embedding the 70,000 images + the chunked "
        "nearest-neighbour search. Loss = mean of the last 50 steps (with batch_hard, a loss "
        "equal to the margin means the hardest negatives are as close as the hardest "
        "positives: collapsed embeddings).",
        "- Probe img/s = images trained on per second during the probe; well below the train "
        f"column means other processes took CPU time during the probe; a probe below "
        f"{CONTENDED:.0%} of it is run again (up to --retries times) and its attempt shown.",
        "",
        "| model | params | train img/s NCHW / CL | infer img/s NCHW / CL | steps (epochs) "
        "| probe img/s | loss | 1-NN acc | eval s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():

        def cell(key: str, fmt: str, r: dict[str, float] = r) -> str:
            return format(r[key], fmt) if key in r else "-"

        steps = f"{int(r['steps'])} ({r['epochs']:.2f})" if "steps" in r else "-"
        if r.get("attempts", 1) > 1:
            steps += f", attempt {int(r['attempts'])}"
        acc = cell("acc", ".4f")
        if "skipped_eval_s" in r:
            acc = f"not run (eval alone ~{r['skipped_eval_s']:.0f} s)"
        lines.append(
            f"| {name}: {CANDIDATES[name][0]} | {int(r['params']):,} "
            f"| {cell('train', '.0f')} / {cell('train_cl', '.0f')} "
            f"| {cell('infer', '.0f')} / {cell('infer_cl', '.0f')} "
            f"| {steps} | {cell('probe_rate', '.0f')} | {cell('loss_last50', '.3f')} | {acc} "
            f"| {cell('eval_s', '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of training each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--seed", type=int, default=0)
    probe_args = parser.add_argument_group("probe training")
    probe_args.add_argument("--mining", choices=TRIPLET_MININGS, default="batch_hard")
    probe_args.add_argument("--margin", type=float, default=0.2)
    probe_args.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    probe_args.add_argument("-p", "--labels-per-batch", dest="p", type=int, default=P)
    probe_args.add_argument("-k", "--samples-per-label", dest="k", type=int, default=K)
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput columns")
    parser.add_argument("--no-probe", action="store_true", help="skip the Fashion-MNIST probe")
    parser.add_argument(
        "--max-eval-s",
        type=float,
        default=300.0,
        help="skip the probe of a model whose evaluation (70,000 images at its measured "
        "inference speed) would take longer than this",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train and evaluate the probe with channels-last weights (default: yes)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"rerun a probe that trained below {CONTENDED * 100:.0f}%% of the measured rate",
    )
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.load_start = os.getloadavg()[0]  # other processes skew every number here

    data = None if args.no_probe else load_fashion_mnist()
    rows: dict[str, dict[str, float]] = {
        name: {"params": _params(CANDIDATES[name][1]())} for name in args.models
    }
    if not args.no_speed:
        print("timing (round-robin over all models) ...", flush=True)
        for (name, cl), rates in throughputs(args.models, args.warmup, args.steps).items():
            suffix = "_cl" if cl else ""
            rows[name] |= {k + suffix: v for k, v in rates.items()}
    for name in args.models:
        row = rows[name]
        infer = row.get("infer_cl" if args.channels_last else "infer")
        eval_estimate = 70_000 / infer if infer else 0.0
        if data is not None and eval_estimate > args.max_eval_s:
            row["skipped_eval_s"] = eval_estimate
        elif data is not None:
            # A probe that trained much slower than the measured rate shared the CPU with
            # another process (two OpenMP threads on two cores stall badly when one is taken):
            # run it again, up to --retries times, and report the number of attempts.
            expected = row.get("train_cl" if args.channels_last else "train")
            for attempt in range(1, args.retries + 2):
                result = probe(CANDIDATES[name][1], data, args)
                result["attempts"] = attempt
                if expected is None or result["probe_rate"] >= CONTENDED * expected:
                    break
                print(f"{name}: probe ran at {result['probe_rate']:.0f} img/s, retrying")
            row |= result
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)

    text = report(rows, args)
    print(text)
    if args.out:
        write_section(args.out, text)


if __name__ == "__main__":
    main()
