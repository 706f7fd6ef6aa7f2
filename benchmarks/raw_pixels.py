"""Raw-pixel retrieval on an image folder's held-out classes, at several sizes, colour and grey.

The baseline ``tripletlab train`` computes on its unseen classes (``metrics.json``:
``unseen.baselines.raw_pixels``: the pixels as a vector, values / 255, cosine distance,
each image a leave-one-out query) for the last ``--unseen`` classes in sorted folder order,
read as the image folder reads them (:func:`tripletlab.data.imagefolder.read_image_file`),
at each ``--sizes`` side, in colour (3 channels) and grey (1). No training: seconds. Tells
how much a larger ``--image-size`` or colour gives the pixels themselves.

Usage:
    python benchmarks/raw_pixels.py --data ~/data/icons --unseen 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from machine import describe_machine

from tripletlab.data import read_image_file
from tripletlab.metrics.retrieval import retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an image folder")
    parser.add_argument("--unseen", type=int, required=True, help="the last N classes")
    parser.add_argument("--sizes", default="28,32,48,64", help="image sides, comma-separated")
    args = parser.parse_args()
    folders = sorted(
        d for d in args.data.expanduser().iterdir() if d.is_dir() and not d.name.startswith(".")
    )[-args.unseen :]
    print(f"- Command: python benchmarks/raw_pixels.py {' '.join(sys.argv[1:])}")
    print(f"- Machine: {describe_machine()}")
    print("\n| channels | size | items | P@1 | MAP@R |\n|---|---:|---:|---:|---:|")
    for channels in (3, 1):
        for size in (int(s) for s in args.sizes.split(",")):
            rows, labels = [], []
            for label, folder in enumerate(folders):
                for f in sorted(p for p in folder.iterdir() if p.is_file()):
                    rows.append(read_image_file(f, size, channels).flatten().float() / 255)
                    labels.append(label)
            x, y = torch.stack(rows), torch.tensor(labels)  # (N, C*H*W), (N,)
            m = retrieval_metrics(x, y, distance="cosine")
            print(
                f"| {'colour' if channels == 3 else 'grey'} | {size} | {len(labels)} "
                f"| {float(m.precision_at_1):.3f} | {float(m.map_at_r):.3f} |"
            )


if __name__ == "__main__":
    main()
