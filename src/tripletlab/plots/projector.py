"""A TensorBoard projector export as plain files (:func:`write_projector`): tensors, metadata,
a sprite of thumbnails and the projector config, with no TensorFlow or TensorBoard needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from tripletlab.io import atomic_write_bytes as write_atomic
from tripletlab.plots._common import _check_images, _check_set, _class_name, _subsample

#: Points in a projector export (the sprite stays under TensorBoard's 8192 x 8192 limit).
PROJECTOR_MAX_POINTS = 10_000
SPRITE_MAX_SIDE = 8192


def _tsv_cell(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a cell


def write_projector(
    out_dir: Path,
    embeddings: Tensor,
    labels: Tensor,
    *,
    images: Tensor | None = None,
    classes: Sequence[str] | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
    max_points: int = PROJECTOR_MAX_POINTS,
    seed: int = 0,
    tensor_name: str = "embedding",
) -> dict[str, Path]:
    """Write a TensorBoard projector export as plain files (no TensorFlow or TensorBoard).

    Files in ``out_dir``: ``tensors.tsv`` (one row of D values per point), ``metadata.tsv``
    (a header row ``label<TAB>class[<TAB>column...]``, then one row per point),
    ``sprite.png`` (with ``images``: the thumbnails in row-major order on a square grid, each
    shrunk if needed to keep the sprite within 8192 x 8192) and ``projector_config.pbtxt``
    (paths relative to ``out_dir``). View with ``tensorboard --logdir OUT_DIR`` (Projector
    tab), or load the two TSV files at https://projector.tensorflow.org.

    Args:
        out_dir: the folder to write (created if needed).
        embeddings: (N, D), finite.
        labels: (N,) class ids.
        images: (N, C, H, W) uint8, for the sprite.
        classes: class names, indexed by label.
        columns: extra metadata columns, each a sequence of N strings (e.g. the split).
        max_points: at most this many points, a seeded random subset (in order).
        seed: subsampling seed.
        tensor_name: the name shown in the projector.

    Returns:
        ``{"tensors": ..., "metadata": ..., "sprite": ..., "config": ...}`` (no sprite
        without images).
    """
    _check_set("projector", embeddings, labels)
    n = embeddings.shape[0]
    if images is not None:
        _check_images("projector", images, n)
    extra = dict(columns or {})
    for name, values in extra.items():
        if len(values) != n:
            raise ValueError(
                f"metadata column {name!r} has {len(values)} values for {n} points; pass one "
                "value per embedding row"
            )
    keep = _subsample(n, max_points, seed)
    e = embeddings[keep.to(embeddings.device)].detach().cpu().double().numpy()  # (M, D)
    y = labels[keep.to(labels.device)].cpu().tolist()
    written: dict[str, Path] = {}

    buf = io.StringIO()
    np.savetxt(buf, e, fmt="%.6g", delimiter="\t")
    written["tensors"] = write_atomic(out_dir / "tensors.tsv", buf.getvalue().encode())

    header = ["label", "class", *(_tsv_cell(c) for c in extra)]
    rows = ["\t".join(header)]
    for pos, i in enumerate(keep.tolist()):
        cells = [str(y[pos]), _class_name(y[pos], classes), *(str(v[i]) for v in extra.values())]
        rows.append("\t".join(_tsv_cell(c) for c in cells))
    meta = "\n".join(rows) + "\n"
    written["metadata"] = write_atomic(out_dir / "metadata.tsv", meta.encode())

    sprite = ""
    if images is not None:
        m = len(keep)
        side = math.ceil(math.sqrt(m))  # tiles per row and column
        h, w = images.shape[2:]
        shrink = min(1.0, SPRITE_MAX_SIDE / (side * max(h, w)))
        th, tw = max(1, int(h * shrink)), max(1, int(w * shrink))
        mode = "L" if images.shape[1] == 1 else "RGB"
        sheet = Image.new(mode, (side * tw, side * th), 0)
        for pos, i in enumerate(keep.tolist()):
            x = images[i].cpu().permute(1, 2, 0).numpy()  # (H, W, C)
            thumb = Image.fromarray(x[:, :, 0] if mode == "L" else x, mode)
            if (th, tw) != (h, w):
                thumb = thumb.resize((tw, th), Image.Resampling.BILINEAR)
            sheet.paste(thumb, ((pos % side) * tw, (pos // side) * th))
        png = io.BytesIO()
        sheet.save(png, format="PNG")
        written["sprite"] = write_atomic(out_dir / "sprite.png", png.getvalue())
        sprite = (
            "  sprite {\n"
            '    image_path: "sprite.png"\n'
            f"    single_image_dim: {tw}\n"
            f"    single_image_dim: {th}\n"
            "  }\n"
        )
    name = tensor_name.replace("\\", "\\\\").replace('"', '\\"')
    config = (
        "embeddings {\n"
        f'  tensor_name: "{name}"\n'
        '  tensor_path: "tensors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n'
        f"{sprite}"
        "}\n"
    )
    written["config"] = write_atomic(out_dir / "projector_config.pbtxt", config.encode())
    return written
