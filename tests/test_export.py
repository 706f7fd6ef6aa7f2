"""Tests for tripletlab.export and ``tripletlab export``: ONNX Runtime against PyTorch on real
images (scikit-learn's digits), the graph's L2 normalisation, the metadata, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ExportedModel
from tolerances import FORWARD_ATOL, FORWARD_RTOL

from tripletlab import export
from tripletlab.cli import build_parser, main
from tripletlab.data import load_dataset
from tripletlab.embedding import EmbedMode, embed
from tripletlab.evaluation import load_run
from tripletlab.export import EmbeddingPipeline, ExportError, export_model
from tripletlab.inference import load_run_dataset
from tripletlab.models import build_model

TOLERANCE = 1e-4


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def session(path: Path) -> Any:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_embed(path: Path, images: torch.Tensor) -> torch.Tensor:
    out = session(path).run(["embeddings"], {"images": images.numpy()})[0]
    return torch.from_numpy(out)


def metadata(path: Path) -> dict[str, Any]:
    raw = session(path).get_modelmeta().custom_metadata_map
    return {k: json.loads(v) for k, v in raw.items()}


@dataclass(frozen=True)
class CliExport:
    path: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def digits_cli(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> CliExport:
    """The digits run exported through the CLI, with flip test-time augmentation (the run
    itself does not use it: digits are not mirror-symmetric) to test that path too."""
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("export") / "new" / "digits.onnx"
    out, err = io.StringIO(), io.StringIO()
    argv = ["export", str(digits_run), "--onnx", str(path), "--tta", "true"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0
    return CliExport(path, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def digits_onnx(digits_cli: CliExport) -> Path:
    return digits_cli.path


def real_digits(n: int, size: int = 8) -> torch.Tensor:
    """(n, 1, size, size) uint8: test digits, bilinearly resized when size != 8."""
    images = load_dataset("digits").test.images[:n]
    if size == 8:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_pipeline_is_embed_in_float32(flip: bool, normalize: bool) -> None:
    model = build_model("small", image_size=8, embedding_dim=16, normalize=normalize).eval()
    stats = ((0.3,), (0.4,))
    x = real_digits(20)
    want = embed(model, x, stats, torch.device("cpu"), EmbedMode(flip=flip, batch_size=7))
    with torch.no_grad():
        got = EmbeddingPipeline(model, *stats, flip=flip)(x)
    assert got.dtype == torch.float32
    # embed fuses BatchNorm into the convolutions and runs batches of 7: equal up to rounding
    torch.testing.assert_close(got, want, atol=FORWARD_ATOL, rtol=FORWARD_RTOL)


def test_pipeline_checks_its_statistics() -> None:
    model = build_model("small", image_size=8)
    with pytest.raises(ValueError, match="std > 0"):
        EmbeddingPipeline(model, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        EmbeddingPipeline(model, (0.5, 0.5), (1.0,))


# --------------------------------------------------------------------------- a trained run


@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_matches_pytorch_on_real_digits(
    digits_run: Path, digits_onnx: Path, batch: int
) -> None:
    run = load_run(digits_run, "cpu")
    stats = load_run_dataset(run).stats
    x = real_digits(batch)
    got = onnx_embed(digits_onnx, x)
    want = embed(run.model, x, stats, torch.device("cpu"), EmbedMode(flip=True))
    assert got.shape == (batch, run.model.embedding_dim)
    assert float((got - want).abs().max()) < TOLERANCE
    assert torch.allclose(got.norm(dim=1), torch.ones(batch), atol=1e-5)  # L2 in the graph


def test_onnx_graph_and_metadata(digits_run: Path, digits_onnx: Path) -> None:
    import onnx

    path = digits_onnx
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert "ReduceL2" in {n.op_type for n in model.graph.node}  # the L2 normalisation
    assert max(o.version for o in model.opset_import if o.domain == "") == export.DEFAULT_OPSET
    s = session(path)
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("images", "tensor(uint8)", ["batch", 1, 8, 8])
    assert (out.name, out.type, out.shape) == ("embeddings", "tensor(float)", ["batch", 64])
    meta = metadata(path)
    run = load_run(digits_run, "cpu")
    mean, std = load_run_dataset(run).stats
    assert meta["mean"] == list(mean) and meta["std"] == list(std)
    assert meta["image_shape"] == [1, 8, 8] and meta["embedding_dim"] == 64
    assert meta["input_dtype"] == "uint8" and meta["input_layout"] == "NCHW"
    assert meta["distance"] == "euclidean" and meta["normalized"] is True
    assert meta["flip_tta"] is True and meta["classes"] == [str(d) for d in range(10)]
    assert meta["dataset"] == "digits" and meta["model"] == "small"
    assert meta["checkpoint"].endswith("best.pt") and meta["epoch"] == 1
    assert meta["run"] == str(digits_run) and meta["tripletlab_version"]
    assert "uint8" in model.doc_string


def test_export_cli_prints_shapes_and_path(digits_cli: CliExport) -> None:
    lines = digits_cli.stdout.splitlines()
    assert lines[0] == (
        "input images: uint8 (batch, 1, 8, 8); output embeddings: float32 (batch, 64); "
        f"opset {export.DEFAULT_OPSET}; onnxruntime matches PyTorch to {lines[0].split()[-1]}"
    )
    assert float(lines[0].split()[-1]) < TOLERANCE
    assert lines[1:] == [f"wrote {digits_cli.path}"]
    assert digits_cli.stderr == ""  # no exporter chatter
    assert [p.name for p in digits_cli.path.parent.iterdir()] == ["digits.onnx"]  # no temp file


# --------------------------------------------------------------------------- 28x28 model


@pytest.mark.parametrize("batch", [1, 16])
def test_small_28x28_model_on_resized_digits(small_onnx: ExportedModel, batch: int) -> None:
    x = real_digits(batch, size=28)
    stats = (small_onnx.mean, small_onnx.std)
    want = embed(small_onnx.model, x, stats, torch.device("cpu"))
    got = onnx_embed(small_onnx.path, x)
    assert got.shape == (batch, 64)
    assert float((got - want).abs().max()) < TOLERANCE
    assert torch.allclose(got.norm(dim=1), torch.ones(batch), atol=1e-5)
    meta = metadata(small_onnx.path)
    assert meta["image_shape"] == [1, 28, 28] and meta["flip_tta"] is False
    assert "classes" not in meta  # only what the caller knows


def test_opset_is_the_one_asked_for(small_onnx: ExportedModel) -> None:
    import onnx

    model = onnx.load(str(small_onnx.path))
    assert [o.version for o in model.opset_import if o.domain == ""] == [20]


def test_export_leaves_the_model_alone(small_onnx: ExportedModel) -> None:
    model = small_onnx.model
    assert not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "holds no checkpoint (looked for"),
        ("missing", "is neither a run folder nor a checkpoint file"),
        ("unwritable", "is not a folder); choose another --onnx"),
        ("folder", "is a folder; give a file name"),
        ("opset", "--opset must be between 18"),
        ("no-onnx", "pip install 'tripletlab[onnx]'"),
        ("no-onnxruntime", "(onnxruntime is not installed): pip install 'tripletlab[onnx]'"),
    ],
)
def test_export_bad_input_exit_2_with_one_line(
    case: str,
    message: str,
    digits_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case in ("no-onnx", "no-onnxruntime"):
        monkeypatch.setitem(sys.modules, case.removeprefix("no-"), None)  # import fails
    else:
        pytest.importorskip("onnxruntime")
    target = tmp_path / "m.onnx"
    run = str(digits_run)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    argv = {
        "empty": ["export", str(tmp_path / "empty"), "--onnx", str(target)],
        "missing": ["export", str(tmp_path / "nothing"), "--onnx", str(target)],
        "unwritable": ["export", run, "--onnx", str(blocker / "m.onnx")],
        "folder": ["export", run, "--onnx", str(tmp_path)],
        "opset": ["export", run, "--onnx", str(target), "--opset", "17"],
    }.get(case, ["export", run, "--onnx", str(target)])
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0], lines[0]
    assert "Traceback" not in err and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "empty"]  # nothing written


def _broken_model() -> Any:
    """A graph whose node reads an input that does not exist (onnx.checker rejects it)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["nowhere"], ["embeddings"])
    graph = helper.make_graph(
        [node],
        "broken",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])


def test_failed_checks_leave_nothing_behind(
    digits_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    model = build_model("small", image_size=8).eval()
    kwargs: dict[str, Any] = {"image_shape": (1, 8, 8), "mean": (0.3,), "std": (0.4,)}
    target = tmp_path / "m.onnx"
    monkeypatch.setattr(export, "_to_onnx", lambda *args: _broken_model())
    with pytest.raises(ExportError, match=r"fails onnx\.checker"):
        export_model(model, target, **kwargs)
    assert list(tmp_path.iterdir()) == []
    # A valid graph of another model (the digits run's): onnxruntime disagrees with PyTorch.
    other = onnx.load(str(digits_onnx))
    monkeypatch.setattr(export, "_to_onnx", lambda *args: other)
    with pytest.raises(ExportError, match="differ from PyTorch's by"):
        export_model(model, target, **kwargs)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"the previous file")  # a failed export leaves an old file as it was
    with pytest.raises(ExportError):
        export_model(model, target, **kwargs)
    assert target.read_bytes() == b"the previous file"


def test_exporter_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator aten::mystery\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fail)
    model = build_model("small", image_size=8).eval()
    with pytest.raises(ExportError) as info:
        export_model(model, tmp_path / "m.onnx", image_shape=(1, 8, 8), mean=(0.3,), std=(0.4,))
    assert str(info.value) == (
        "torch.onnx.export failed (RuntimeError: unsupported operator aten::mystery); this "
        "model cannot be exported"
    )
    assert list(tmp_path.iterdir()) == []


def test_opset_range() -> None:
    pytest.importorskip("onnx")
    import onnx

    assert export.check_opset(export.DEFAULT_OPSET) == export.DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    for bad in (17, newest + 1, True):
        with pytest.raises(ExportError, match="--opset must be between"):
            export.check_opset(bad)


def test_numpy_input_contract(small_onnx: ExportedModel) -> None:
    """A consumer feeds a numpy uint8 batch; float input is refused by onnxruntime."""
    s = session(small_onnx.path)
    x = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    assert s.run(None, {"images": x})[0].shape == (2, 64)
    with pytest.raises(Exception, match=r"(?i)type"):
        s.run(None, {"images": x.astype(np.float32)})


def test_export_takes_tta_as_train_does() -> None:
    """``--tta``, ``--tta false`` and ``--no-tta``, as ``train``'s boolean flags."""
    parser = build_parser()
    base = ["export", "run", "--onnx", "m.onnx"]
    assert parser.parse_args(base).tta is None  # as the run is evaluated
    assert parser.parse_args([*base, "--tta"]).tta is True
    assert parser.parse_args([*base, "--tta", "false"]).tta is False
    assert parser.parse_args([*base, "--no-tta"]).tta is False
