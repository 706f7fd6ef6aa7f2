"""Export a trained embedding model to ONNX, for serving without tripletlab or PyTorch.

The exported graph is :class:`EmbeddingPipeline`: raw pixels in, embeddings out, computing
what ``tripletlab embed`` computes, in float32:

- input ``images``: (batch, C, H, W) **uint8** pixels 0..255 (the dynamic batch axis is
  named ``batch``), the layout and dtype the training data had; the run's normalisation
  ``(x / 255 - mean[c]) / std[c]`` is inside the graph, so a consumer cannot get it wrong;
- output ``embeddings``: (batch, D) float32, L2-normalised inside the graph when the run
  normalises (the default), averaged with the mirror image's embedding first when the run
  is evaluated with flip test-time augmentation (``tta``; :func:`export_run`'s ``tta``
  overrides it).

Decisions, and why:

- **Normalisation folded into the graph, uint8 input.** Feeding float images normalised
  with the wrong statistics (ImageNet's, or none) is the usual silent error of exported
  embedding models; with uint8 input the file holds the whole preprocessing and a consumer
  only has to decode and resize the image (``numpy.asarray(PIL.Image.open(f).convert("L")
  .resize((W, H)))[None, None]``). The constants are also in the metadata.
- **Exporter:** ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based
  exporter, PyTorch's default since 2.9). With torch 2.13 it handles these models (the
  flip is a ``Slice`` with step -1, the L2 normalisation ``ReduceL2``/``Clip``/``Div``);
  the TorchScript exporter (``dynamo=False``) is deprecated and warns. The dynamo exporter
  builds opset 18 or later: asked for an older one it falls back to 18 after a failed
  conversion, so ``opset < 18`` is refused here (:data:`MIN_OPSET`).
- **float32, eval mode.** The model is copied to the CPU in float32, BatchNorm uses its
  running statistics. bfloat16 autocast is not exported: where ``tripletlab embed`` runs in
  float32 the two agree to float rounding (about 1e-7 in the tests), where it uses bfloat16
  (CUDA, CPUs with native bfloat16, for runs trained with ``--amp auto``) only to
  bfloat16's precision (about 1e-2).
- **Checked before it lands.** The file is written to a temporary file in the target
  folder, checked by ``onnx.checker`` (with shape inference) and run with ONNX Runtime on a
  batch of 3 seeded random images against PyTorch, then renamed into place: a failed export
  leaves nothing behind, and a reader never sees a partial file.

Metadata (``metadata_props``; with onnxruntime
``session.get_modelmeta().custom_metadata_map``), every value JSON-encoded:
``input_dtype`` (``"uint8"``), ``input_layout`` (``"NCHW"``), ``image_shape`` (``[C, H, W]``),
``mean`` and ``std`` (per channel, of ``x / 255``; applied in the graph), ``embedding_dim``,
``normalized`` (L2 in the graph), ``flip_tta``, ``distance`` (smaller is closer; ``cosine``
is ``1 - cos``), ``classes``, ``dataset``, ``model``, ``run``, ``checkpoint``, ``epoch``
(from a run), ``tripletlab_version``.

``onnx``, ``onnxruntime`` and ``onnxscript`` are optional (``pip install
'tripletlab[onnx]'``) and imported only here, when exporting.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tripletlab import __version__
from tripletlab.checks import check_not_an_input
from tripletlab.evaluation import LoadedRun, load_run
from tripletlab.inference import check_output_path
from tripletlab.io import atomic_path, write_errors
from tripletlab.models import EmbeddingModel

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "EmbeddingPipeline",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "export_model",
    "export_run",
    "require_onnx",
    "run_export",
]

#: Opset of the exported graph unless asked otherwise: the oldest the dynamo exporter
#: builds, run by onnxruntime >= 1.14 and most other runtimes.
DEFAULT_OPSET = 18
MIN_OPSET = 18
#: ONNX Runtime must agree with PyTorch to this much on the check at export time.
CHECK_TOLERANCE = 1e-3
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
INSTALL_HINT = "pip install 'tripletlab[onnx]'"


class ExportError(ValueError):
    """An export that cannot be done or did not check out: one line for the user."""


def require_onnx() -> None:
    """Import ``onnx``, ``onnxruntime`` and ``onnxscript`` or raise :class:`ExportError`
    telling the user how to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        missing = err.name or "a package"
        raise ExportError(
            f"exporting to ONNX needs onnx, onnxruntime and onnxscript ({missing} is not "
            f"installed): {INSTALL_HINT}"
        ) from None


# ------------------------------------------------------------------------------ the graph


class EmbeddingPipeline(nn.Module):
    """uint8 images -> embeddings: normalisation, the model, optional flip TTA.

    The same computation as :func:`tripletlab.training.embed` without bfloat16 autocast.

    Args:
        model: the embedding network (used as is: put it in eval mode, on the device and
            dtype wanted).
        mean, std: per-channel statistics of ``x / 255``, one per input channel, std > 0.
        flip: average each embedding with its mirror image's (L2-normalised again when the
            model normalises).

    Shapes:
        (B, C, H, W) uint8 -> (B, D) float32.

    Raises:
        ValueError: at construction, for ``mean``/``std`` of different lengths or a std
            that is not > 0.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        model: EmbeddingModel,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        flip: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean) or any(not s > 0 for s in std):
            raise ValueError(
                f"mean and std need one value per channel and std > 0, got {tuple(mean)} and "
                f"{tuple(std)}"
            )
        self.model = model
        self.flip = bool(flip)
        c = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings (B, D) of uint8 images (B, C, H, W)."""
        x = (images.to(torch.float32) / 255.0 - self.mean) / self.std  # (B, C, H, W)
        e: Tensor = self.model(x)  # (B, D)
        if self.flip:
            e = (e + self.model(x.flip(-1))) / 2  # (B, D)
            if self.model.normalize:
                e = F.normalize(e, dim=1)
        return e


# ------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the ONNX file.
        opset: its ONNX opset.
        max_abs_diff: largest difference between ONNX Runtime's and PyTorch's embeddings on
            the check batch (3 seeded random images).
        metadata: the ``metadata_props`` written, decoded.
    """

    path: Path
    opset: int
    max_abs_diff: float
    metadata: dict[str, Any] = field(default_factory=dict)


def check_opset(opset: int) -> int:
    """Return ``opset`` if the dynamo exporter can build it, else raise :class:`ExportError`."""
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(
            f"--opset must be between {MIN_OPSET} (the oldest the torch.onnx exporter builds) "
            f"and {newest} (the newest the installed onnx knows), got {opset}; the default is "
            f"{DEFAULT_OPSET}"
        )
    return opset


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (e.g. "torchvision is not installed")."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _to_onnx(pipeline: EmbeddingPipeline, example: Tensor, opset: int) -> Any:
    """The ``onnx.ModelProto`` of ``pipeline`` with a dynamic batch axis."""
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                pipeline,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                verbose=False,
                optimize=True,
            )
    except Exception as err:  # the exporter raises many types; the user needs one line
        raise ExportError(
            f"torch.onnx.export failed ({_first_line(err)}); this model cannot be exported"
        ) from err
    if program is None:  # only the TorchScript exporter returns None
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _check_with_onnxruntime(
    file: Path, pipeline: EmbeddingPipeline, image_shape: tuple[int, int, int]
) -> float:
    """Max |ORT - PyTorch| over the embeddings of 3 seeded random images."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, *image_shape), dtype=torch.uint8, generator=g)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    except Exception as err:  # onnxruntime's own exception types
        raise ExportError(
            f"onnxruntime {ort.__version__} cannot run the exported model ({_first_line(err)}); "
            f"try another --opset (default {DEFAULT_OPSET})"
        ) from err
    with torch.no_grad():
        want = pipeline(x).numpy()
    if got.shape != want.shape:
        raise ExportError(f"the exported model gives {got.shape} embeddings, PyTorch {want.shape}")
    return float(np.abs(got - want).max()) if want.size else 0.0


def export_model(
    model: EmbeddingModel,
    path: Path,
    *,
    image_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    flip: bool = False,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export ``EmbeddingPipeline(model, mean, std, flip=flip)`` to the ONNX file ``path``.

    Args:
        model: the embedding network (any device or dtype: a float32 CPU copy in eval mode
            is exported; the model itself is left as it was).
        path: the ``.onnx`` file; written atomically, its folder created if needed.
        image_shape: (C, H, W) of the images the model takes (the graph takes any batch
            size, only this image shape).
        mean, std: the normalisation, one value per channel (see :class:`EmbeddingPipeline`).
        flip: export flip test-time augmentation.
        opset: ONNX opset, :data:`MIN_OPSET` or later.
        metadata: more ``metadata_props`` (e.g. ``distance``, ``classes``), JSON-encoded.

    Returns:
        The file, its opset, the ONNX Runtime vs PyTorch check, the metadata.

    Raises:
        ExportError: onnx, onnxruntime or onnxscript missing; a bad opset; an export that
            fails or does not match PyTorch within :data:`CHECK_TOLERANCE`.
        tripletlab.io.WriteError (a ``ValueError``): ``path`` cannot be written. In every
            case nothing is left at ``path`` (nor a temporary file).
    """
    require_onnx()
    import onnx

    check_opset(opset)
    path = check_output_path(Path(path), "--onnx")
    c, h, w = image_shape
    if len(mean) != c:
        raise ExportError(f"mean and std need one value per channel ({c}), got {len(mean)}")
    net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    net = net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    pipeline = EmbeddingPipeline(net, mean, std, flip=flip).eval()
    g = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, c, h, w), dtype=torch.uint8, generator=g)
    proto = _to_onnx(pipeline, example, opset)
    props: dict[str, Any] = {
        "input_dtype": "uint8",
        "input_layout": "NCHW",
        "image_shape": [c, h, w],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "embedding_dim": int(model.embedding_dim),
        "normalized": bool(model.normalize),
        "flip_tta": bool(flip),
        **dict(metadata or {}),
        "tripletlab_version": __version__,
    }
    kept = {p.key: p.value for p in proto.metadata_props if p.key not in props}
    onnx.helper.set_model_props(proto, {**kept, **{k: json.dumps(v) for k, v in props.items()}})
    proto.doc_string = (
        f"tripletlab embedding model: {INPUT_NAME} uint8 (batch, {c}, {h}, {w}) pixels 0-255 "
        f"-> {OUTPUT_NAME} float32 (batch, {model.embedding_dim})"
        + (", L2-normalised" if model.normalize else "")
        + "; normalisation (x/255 - mean)/std in the graph; see metadata_props"
    )
    try:
        blob = proto.SerializeToString()
    except ValueError as err:  # protobuf's 2 GB limit
        raise ExportError(f"the model is too large for one ONNX file ({err})") from None
    with atomic_path(path) as tmp:
        with write_errors(path):
            tmp.write_bytes(blob)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as err:  # ValidationError, InferenceError
            raise ExportError(
                f"the exported model fails onnx.checker ({_first_line(err)})"
            ) from err
        diff = _check_with_onnxruntime(tmp, pipeline, (c, h, w))
        if not diff <= CHECK_TOLERANCE:
            raise ExportError(
                f"onnxruntime's embeddings differ from PyTorch's by {diff:.2g} (more than "
                f"{CHECK_TOLERANCE:g}); the export is wrong, please report it"
            )
    opset_used = max(
        (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset
    )
    return ExportResult(path, opset_used, diff, props)


def export_run(
    run: LoadedRun,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    tta: bool | None = None,
) -> ExportResult:
    """Export a loaded run's model with its normalisation and embedding mode, as its
    checkpoint states them (:attr:`LoadedRun.spec`): the training data is not needed.

    Args:
        run: from :func:`tripletlab.evaluation.load_run`.
        path, opset: as :func:`export_model`.
        tta: export flip test-time augmentation (default: the run's ``tta``, as ``tripletlab
            embed`` uses it).

    Raises:
        ExportError: as :func:`export_model`.
    """
    config, spec = run.config, run.spec
    flip = spec.tta if tta is None else bool(tta)
    metadata = {
        "distance": spec.distance,
        "classes": list(spec.classes),
        "dataset": config.data.dataset,
        "model": config.model.name,
        "run": str(run.run_dir if run.run_dir is not None else run.checkpoint),
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
    }
    return export_model(
        run.model,
        path,
        image_shape=spec.image_shape,
        mean=spec.mean,
        std=spec.std,
        flip=flip,
        opset=opset,
        metadata=metadata,
    )


# ------------------------------------------------------------------------------ command


@dataclass
class ExportConfig:
    """What ``tripletlab export`` does.

    Attributes:
        run: a run folder (its ``checkpoints/best.pt``) or a ``.pt`` checkpoint.
        onnx: the ``.onnx`` file to write.
        opset: ONNX opset (:data:`MIN_OPSET` or later).
        tta: export flip test-time augmentation (default: the run's).
        data_dir: where the run's IDX files are, only for checkpoints written before
            tripletlab stored the normalisation in them (default: the run's).
    """

    run: str
    onnx: str
    opset: int = DEFAULT_OPSET
    tta: bool | None = None
    data_dir: str | None = None

    def check(self) -> None:
        """Raise a one-line error for a bad setting or missing packages, before loading."""
        require_onnx()
        check_opset(self.opset)
        check_output_path(Path(self.onnx), "--onnx")


def run_export(config: ExportConfig) -> ExportResult:
    """``tripletlab export``: load the run on the CPU, export it, check it, write it."""
    config.check()
    run = load_run(Path(config.run), "cpu", data_dir=config.data_dir)
    check_not_an_input(Path(config.onnx), "--onnx", run.files())
    return export_run(run, Path(config.onnx), opset=config.opset, tta=config.tta)
