"""Where a default training step spends its time, how close it is to the CPU's matrix-product
peak, and what makes it faster (issue 17, item 3).

The step is the one ``tripletlab train`` runs with its defaults on ``--dataset`` (Fashion-MNIST
unless told otherwise): the run is set up as ``fit`` sets it up (data, P x K batches, network,
optimizer), then each step is timed in its phases, as :func:`tripletlab.training.loop.train_epoch`
runs them:

- ``data``: reading the batch's images and augmenting and normalising them;
- ``forward``: the network, under the run's autocast;
- ``loss``: mining and the loss (float32), with the step's one read-back to the host;
- ``backward`` and ``optimizer``: ``loss.backward()``, then the optimizer's step.

FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward and backward of the
network (convolutions and matrix products; what the loss and element-wise layers add is
left out, so the rate is a lower bound). The peak: the median rate of ``--peak-size`` square
matrix products in float32 and in bfloat16 with the same threads.

Variants, each in a process of its own, timed round-robin (``--rounds`` rounds; in each, every
variant's process is started in turn, sets its run up, takes ``--warmup`` steps, then times
``--steps``; the median step over the rounds kept), so that a busy machine slows every variant
alike and the ratios stay comparable. One process per variant, because a variant changes the
process it runs in: after compiled kernels ran (their OpenMP threads spin a while when they
finish), the plain steps of the same process were 1.6x slower here (86.9 ms against 53.6 ms
alone), which made ``torch.compile`` look 1.39x faster when it is not:

- ``default``: the run as it is (``--amp auto``: bfloat16 autocast where the CPU has native
  bfloat16);
- ``amp off``: float32 throughout;
- ``fused adam``: the same optimizer with ``fused=True``;
- ``compile network``: ``torch.compile`` (inductor) on the network;
- ``compile network + loss``: also on the objective's loss (mining included);
- ``batch x2``: P doubled, or K where the classes are too few (samples/s is what compares).

Usage::

    python benchmarks/bench_step.py --out docs/benchmarks.md
    python benchmarks/bench_step.py --rounds 2 --steps 5 --variants default "amp off"   # a look
    python benchmarks/bench_step.py --dataset imagefolder:DIR --set model=resnet18 \
        --set image_size=224 --variants default --rounds 1 --steps 5      # ResNet-18 at 224 px
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from machine import describe_machine
from sections import write_section
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from tripletlab import distributed
from tripletlab.embedding import use_amp
from tripletlab.training import TrainConfig
from tripletlab.training.config import config_from_dict
from tripletlab.training.loop import prepare_batch
from tripletlab.training.objective import ObjectiveFn
from tripletlab.training.reporter import SilentReporter
from tripletlab.training.run import _set_up

PHASES = ("data", "forward", "loss", "backward", "optimizer")
VARIANTS = (
    "default",
    "amp off",
    "fused adam",
    "compile network",
    "compile network + loss",
    "batch x2",
)


@dataclass
class Setup:
    """One variant's run pieces: what a step calls."""

    name: str
    run: Any  # tripletlab.training.run._Run
    forward: Callable[[Tensor], Tensor]
    loss: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]
    optimizer: torch.optim.Optimizer
    amp: bool
    batches: list[Tensor]
    samples: int = 0  # of the last step


@dataclass
class Measured:
    """One variant's timed steps, gathered over its processes."""

    name: str
    times: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    samples: int = 0
    amp: bool = False
    error: str | None = None


def _config(args: argparse.Namespace, tmp: Path, **flat: object) -> TrainConfig:
    raw: dict[str, object] = {"dataset": args.dataset, "out": str(tmp), "seed": 0}
    raw.update({k: json.loads(v) if v[:1] in "0123456789-[{tf" else v for k, v in _pairs(args)})
    raw.update(flat)
    if args.threads:
        raw["threads"] = args.threads
    return config_from_dict(raw).resolved()


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--set KEY=VALUE`` pairs (a VALUE that reads as JSON is read as JSON)."""
    return [(kv.split("=", 1)[0], kv.split("=", 1)[1]) for kv in args.set]


def _setup(name: str, args: argparse.Namespace, tmp: Path) -> Setup:
    """The variant ``name``: a run set up as ``fit`` would, then changed as the variant says."""
    flat: dict[str, object] = {}
    if name == "amp off":
        flat["amp"] = "off"
    config = _config(args, tmp / name.replace(" ", "_"), **flat)
    torch.manual_seed(0)
    run = _set_up(config, tmp, distributed.ranks(), SilentReporter(), fresh=True)
    if name == "batch x2":
        o = run.config.objective  # twice the classes where there are enough, else twice K
        classes = int(torch.unique(run.splits.train.labels).numel())
        if 2 * int(o.labels_per_batch or 1) <= classes:
            o.labels_per_batch = int(o.labels_per_batch or 1) * 2
        else:
            o.samples_per_label = int(o.samples_per_label or 1) * 2
        run.objective = ObjectiveFn(run.config, run.splits.train.labels)
    optimizer = run.optimizer
    if name == "fused adam":
        optimizer = type(optimizer)(run.model.parameters(), **_fused(optimizer.defaults))
    model = run.model
    forward: Callable[[Tensor], Tensor] = lambda x: run.objective.forward(model, x)  # noqa: E731
    loss = run.objective.loss
    if name.startswith("compile network"):
        compiled = torch.compile(model)
        forward = lambda x: run.objective.forward(compiled, x)  # type: ignore[arg-type]  # noqa: E731
    if name == "compile network + loss":
        loss = torch.compile(run.objective.loss, dynamic=True)
    amp = use_amp(run.config.run.amp, run.device)
    return Setup(name, run, forward, loss, optimizer, amp, run.objective.batches(0))


def _fused(defaults: dict[str, Any]) -> dict[str, Any]:
    keep = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    return {**{k: v for k, v in defaults.items() if k in keep}, "fused": True}


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def step(s: Setup, i: int) -> dict[str, float]:
    """One training step of ``s``, timed by phase (seconds)."""
    run, batch = s.run, s.batches[i % len(s.batches)]
    device = run.device
    t0 = _now(device)
    raw = run.splits.train.images[run.objective.images_of(batch)]
    x = prepare_batch(
        raw, run.config, (run.splits.mean, run.splits.std), device, run.aug_gen
    )  # (B, C, H, W)
    t1 = _now(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp):
        out = s.forward(x)  # (B, D)
    t2 = _now(device)
    loss = s.loss(out, batch)[0]
    float(loss.detach().cpu())  # the step's one read-back
    t3 = _now(device)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t4 = _now(device)
    s.optimizer.step()
    t5 = _now(device)
    s.samples = int(x.shape[0])
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True))


def network_flops(s: Setup) -> int:
    """FLOPs of one forward and backward of the network on a batch (float32, counted)."""
    model = copy.deepcopy(s.run.model)
    batch = s.batches[0]
    raw = s.run.splits.train.images[s.run.objective.images_of(batch)]
    x = prepare_batch(raw, s.run.config, (s.run.splits.mean, s.run.splits.std), s.run.device, None)
    with FlopCounterMode(display=False) as counter:
        model(x).float().pow(2).sum().backward()
    return int(counter.get_total_flops())


def matmul_peak(n: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """Median FLOP/s of (n, n) @ (n, n) products in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t))
    return statistics.median(rates)


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant (``args.variants[0]``) in this process: warm-up, then timed steps."""
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.variants[0]
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            s = _setup(name, args, Path(tmp))
            for i in range(args.warmup):  # a compiled variant compiles here
                step(s, i)
            for i in range(args.steps):
                for phase, sec in step(s, args.warmup + i).items():
                    times[phase].append(sec)
        except Exception as err:
            first = (str(err).splitlines() or [""])[0][:120]
            return {"name": name, "error": f"{type(err).__name__}: {first}"}
        flops = network_flops(s) if args.flops else 0
    return {"name": name, "times": times, "samples": s.samples, "amp": s.amp, "flops": flops}


def _child_argv(args: argparse.Namespace, name: str, flops: bool) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--variants", name]
    argv += ["--dataset", args.dataset, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += [f"--set={kv}" for kv in args.set]
    argv += ["--threads", str(args.threads)] if args.threads else []
    return argv + (["--flops"] if flops else [])


def measure(args: argparse.Namespace) -> str:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _load()
    results: dict[str, Measured] = {}
    flops = 0
    for r in range(args.rounds):
        for name in args.variants:
            if name in results and results[name].error is not None:
                continue
            want_flops = r == 0 and name == args.variants[0]
            done = subprocess.run(
                _child_argv(args, name, want_flops), capture_output=True, text=True, check=False
            )
            lines = done.stdout.strip().splitlines()
            try:
                got = json.loads(lines[-1]) if done.returncode == 0 and lines else None
            except json.JSONDecodeError:
                got = None
            if got is None:
                err = (done.stderr.strip().splitlines() or ["no output"])[-1][:120]
                got = {"name": name, "error": f"exit {done.returncode}: {err}"}
            s = results.setdefault(name, Measured(name))
            if "error" in got:
                s.error = got["error"]
                continue
            for phase, values in got["times"].items():
                s.times[phase].extend(values)
            s.samples, s.amp = got["samples"], got["amp"]
            flops = flops or int(got["flops"])
            print(f"round {r + 1}: {name} done", file=sys.stderr, flush=True)
    setups = [results[name] for name in args.variants if name in results]
    peak32 = matmul_peak(args.peak_size, torch.float32)
    peak16 = matmul_peak(args.peak_size, torch.bfloat16)
    return report(args, setups, flops, peak32, peak16, load_before, _load())


def report(
    args: argparse.Namespace,
    setups: list[Measured],
    flops: int,
    peak32: float,
    peak16: float,
    load_before: str,
    load_after: str,
) -> str:
    base = next((s for s in setups if s.name == "default" and s.error is None), None)
    base_rate = (
        base.samples / statistics.median(_totals(base)) if base is not None else float("nan")
    )
    rows = []
    for s in setups:
        if s.error is not None:
            rows.append(f"| {s.name} | not run: {s.error} |" + " |" * (len(PHASES) + 4))
            continue
        med = {p: statistics.median(v) * 1e3 for p, v in s.times.items()}
        total = statistics.median(_totals(s))
        rate = s.samples / total
        cells = " | ".join(f"{med[p]:.1f}" for p in PHASES)
        rows.append(
            f"| {s.name} | {s.samples} | {cells} | {total * 1e3:.1f} | {rate:,.0f} | "
            f"{rate / base_rate:.2f}x |"
        )
    lines = [
        "## A training step: where the time goes, and what makes it faster (issue 17)",
        "",
        f"- Command: `python benchmarks/bench_step.py {' '.join(sys.argv[1:])}`",
        f"- Machine: {describe_machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- Date: {dt.date.today().isoformat()}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after",
        f"- The step of `tripletlab train --dataset {args.dataset}`"
        + "".join(f" --{kv.replace('_', '-').replace('=', ' ', 1)}" for kv in args.set)
        + ", set up as `tripletlab train` sets it up; "
        f"{args.rounds} rounds x {args.steps} steps per variant, a process per variant and "
        f"round, round-robin, after {args.warmup} warm-up steps; medians in ms.",
        "",
        "| variant | batch | " + " | ".join(PHASES) + " | step | samples/s | vs default |",
        "|---|---:|" + "---:|" * (len(PHASES) + 3),
        *rows,
        "",
    ]
    if base is not None and flops:
        fwd_bwd = statistics.median(
            [a + b for a, b in zip(base.times["forward"], base.times["backward"], strict=True)]
        )
        whole = statistics.median(_totals(base))
        peak = peak16 if base.amp else peak32
        lines += [
            f"Network FLOPs per step (forward + backward, counted in float32): {flops / 1e9:.2f} "
            f"GFLOP. Matrix-product peak ({args.peak_size}^2, same threads): float32 "
            f"{peak32 / 1e9:,.0f} GFLOP/s, bfloat16 {peak16 / 1e9:,.0f} GFLOP/s. The default "
            f"step ({'bfloat16' if base.amp else 'float32'}) achieves "
            f"{flops / fwd_bwd / 1e9:,.1f} GFLOP/s in its forward + backward "
            f"({flops / fwd_bwd / peak:.1%} of that peak) and {flops / whole / 1e9:,.1f} GFLOP/s "
            f"over the whole step.",
            "",
        ]
    return "\n".join(lines)


def _totals(s: Measured) -> list[float]:
    return [sum(parts) for parts in zip(*(s.times[p] for p in PHASES), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the run, as in a config file (e.g. model=resnet18, image_size=224)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    text = measure(args)
    print(text)
    if args.out:
        write_section(args.out, text)


if __name__ == "__main__":
    main()
