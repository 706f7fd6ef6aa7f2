"""Train the default configuration with another layout of the ``small`` network.

How the current ``small`` layout was chosen (docs/results.md, "How the defaults were
chosen"): each run is ``tripletlab.training.fit`` with the defaults plus ``--set`` overrides,
the ``small`` builder swapped for one of these layouts:

- ``gap-2conv``: the earlier default, 32-32-pool-64-64-pool-128, global average pooling;
- ``gap``: 32-pool-64-64-pool-128, global average pooling;
- ``grid7``: 32-pool-64-64-pool-128, the last map pooled to a 7x7 grid and flattened (the
  current default, what ``build_model("small")`` builds).

Usage::

    python benchmarks/probe_layouts.py --layout gap-2conv --set epochs=6 --out /tmp/probe
    python benchmarks/probe_layouts.py --layout grid7 --set epochs=6 margin=0.4

Prints one JSON line with the test metrics, the training time and the wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tripletlab import models
from tripletlab.training import config_from_dict, fit

LAYOUTS: dict[str, tuple[tuple[tuple[int, ...], ...], int | None]] = {
    "gap-2conv": (((32, 32), (64, 64), (128,)), None),
    "gap": (((32,), (64, 64), (128,)), None),
    "grid7": (((32,), (64, 64), (128,)), 7),
}
KEYS = (
    "knn_accuracy",
    "precision_at_1",
    "map_at_r",
    "pair_accuracy",
    "pair_threshold",
    "train_seconds",
    "samples_per_second",
    "best_epoch",
)


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), required=True)
    p.add_argument(
        "--set", nargs="*", default=[], help="TrainConfig overrides, key=value (flat keys: lr=0.01)"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", help="run folder (default: a temporary one)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stages, grid = LAYOUTS[args.layout]

    def build(in_channels: int, image_size: int, width: int | None) -> tuple[nn.Module, int]:
        net = models.SmallConvNet(in_channels, stages, grid=grid)
        return net, net.feature_dim

    models._BUILDERS["small"] = build  # the layout under test, for this process only
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = config_from_dict(overrides)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="probe-"))
    t0 = time.perf_counter()
    result = fit(config, out)
    record = {
        "layout": args.layout,
        "overrides": overrides,
        "wall_seconds": time.perf_counter() - t0,
        **{k: result.metrics.get(k) for k in KEYS},
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
