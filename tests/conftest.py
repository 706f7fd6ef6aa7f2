"""Shared fixtures: seeded generators and the label layouts every miner and loss is tried on."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tripletlab.models import EmbeddingModel

sys.path.insert(0, str(Path(__file__).parent))  # for `import reference`


def make_labels(layout: str, seed: int) -> torch.Tensor:
    """Label layouts: balanced P x K, unbalanced sizes, singletons mixed in, one class, tiny."""
    g = torch.Generator().manual_seed(seed)
    if layout == "balanced":
        labels = torch.arange(4).repeat_interleave(3)  # 4 classes x 3
    elif layout == "unbalanced":
        sizes = [1 + int(s) for s in torch.randint(0, 6, (5,), generator=g)]
        labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    elif layout == "singletons":
        labels = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5])
    elif layout == "one_class":
        labels = torch.zeros(6, dtype=torch.long)
    elif layout == "all_distinct":
        labels = torch.arange(7)
    elif layout == "pair":
        labels = torch.tensor([3, 3])
    else:
        raise ValueError(layout)
    return labels[torch.randperm(labels.shape[0], generator=g)].long()


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


#: For the tests of faiss code paths only: without faiss (an optional extra) they skip and the
#: exact backend's tests in the same module still run.
needs_faiss = pytest.mark.skipif(
    not _installed("faiss"), reason="faiss is not installed (pip install faiss-cpu)"
)

LAYOUTS = ["balanced", "unbalanced", "singletons", "one_class", "all_distinct", "pair"]
SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the tests were started in
    the background (``make test &``, ``nohup``), where the shell hands Python SIGINT ignored:
    the Ctrl-C tests would then see nothing, and the processes the distributed tests spawn
    would inherit the ignored signal."""
    found = signal.getsignal(signal.SIGINT)
    if found is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, found)


@pytest.fixture(autouse=True)
def _ctrl_c_handler_kept() -> Iterator[None]:
    """No test (nor the code it runs) leaves Ctrl-C handled otherwise than it found it: a
    handler left behind (ignored, or deferred) would make the Ctrl-C tests that come later
    pass or fail by the order they run in."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)  # the next tests run as they would alone
        pytest.fail(f"the test left SIGINT handled by {after!r} (it found {before!r})")


@pytest.fixture(autouse=True, scope="session")
def _image_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded images are cached in a folder of the test session (the CLI runs the tests
    start inherit it), never in the user's cache."""
    os.environ["TRIPLETLAB_IMAGE_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))


@pytest.fixture(params=["direct", "direct_chunked", "sorted"])
def mining_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each of the miners' two strategies (and tiny anchor chunks)."""
    from tripletlab import miners

    if request.param == "sorted":
        monkeypatch.setattr(miners, "DENSE_MAX_POSITIVES", -1)
    else:
        monkeypatch.setattr(miners, "DENSE_MAX_POSITIVES", 10**9)
    if request.param == "direct_chunked":
        monkeypatch.setattr(miners, "CHUNK_ELEMENTS", 8)
    return str(request.param)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder: the default model trained on scikit-learn's digits for one short epoch
    (about ten steps, a few seconds); shared by the inference and export tests. In float32
    (amp off), as every test run unless it is about bfloat16: ``amp="auto"`` would train in
    bfloat16 on CPUs with native bfloat16 only, so a test would see other numbers elsewhere."""
    from tripletlab.training import SilentReporter, config_from_dict, fit

    out = tmp_path_factory.mktemp("digits") / "run"
    settings = {"dataset": "digits", "epochs": 1, "val_size": 150, "seed": 0, "device": "cpu"}
    config = config_from_dict({**settings, "amp": "off"})
    fit(config, out, reporter=SilentReporter())
    return out


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file and the model, normalisation and flip it was exported with."""

    path: Path
    model: EmbeddingModel
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """The default model for Fashion-MNIST (``small``, 28x28x1, 64-d) with random weights and
    random BatchNorm statistics, exported without flip test-time augmentation at opset 20
    (the digits run is exported with flips at the default opset)."""
    pytest.importorskip("onnxruntime")
    from tripletlab.export import export_model
    from tripletlab.models import build_model

    g = torch.Generator().manual_seed(0)
    model = build_model("small", image_size=28, embedding_dim=64)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # eval-mode BatchNorm that does something
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    model.eval()
    mean, std = (0.2860,), (0.3530,)
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    meta = {"distance": "euclidean"}
    export_model(model, path, image_shape=(1, 28, 28), mean=mean, std=std, opset=20, metadata=meta)
    return ExportedModel(path, model, mean, std, False)
