"""tripletlab.models.resnet: torchvision's parameter names, shapes and counts (against a
listing written from torchvision's layout rules, not from the class), its forward pass
(against a functional twin that reads only the state dict), and checkpoints of earlier
versions (``stem.0``/``stem.1``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models_helpers import (
    images,
    num_params,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)
from torch import Tensor

from tripletlab.models import BasicBlock, Bottleneck, EmbeddingModel, ResNet, build_model

# name -> (bottleneck blocks?, stage depths, torchvision's parameter count with fc 1000)
TORCHVISION = {
    "resnet18": (False, (2, 2, 2, 2), 11_689_512),
    "resnet34": (False, (3, 4, 6, 3), 21_797_672),
    "resnet50": (True, (3, 4, 6, 3), 25_557_032),
}


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def torchvision_state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """torchvision's ``resnetXX().state_dict()`` names and shapes, fc included, written
    from its layout: 7x7 conv1 and bn1 of 64; stage i of planes 64 * 2^i, stride 2 from
    stage 2 on in its first block; BasicBlock conv1 3x3 (stride) - conv2 3x3, Bottleneck
    conv1 1x1 - conv2 3x3 (stride) - conv3 1x1 to 4 * planes; ``downsample.0`` (1x1 conv)
    and ``downsample.1`` (BatchNorm) when the stride or the channels change; fc to 1000."""
    bottleneck, depths, _ = TORCHVISION[name]
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for i, depth in enumerate(depths):
        planes = 64 * 2**i
        for j in range(depth):
            p = f"layer{i + 1}.{j}"
            stride = 2 if i > 0 and j == 0 else 1
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.bn1", planes))
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes.update(_bn(f"{p}.bn2", planes))
                shapes[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
                shapes.update(_bn(f"{p}.bn3", 4 * planes))
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                shapes.update(_bn(f"{p}.bn1", planes))
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes.update(_bn(f"{p}.bn2", planes))
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    shapes["fc.weight"] = (1000, inplanes)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_names_and_shapes_are_torchvision_s(name: str) -> None:
    backbone = build_model(name, in_channels=3, image_size=224).backbone
    ours = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    theirs = torchvision_state_shapes(name)
    fc = {k: theirs.pop(k) for k in ("fc.weight", "fc.bias")}
    assert ours == theirs
    assert list(ours) == list(theirs)  # the same order too
    params = sum(torch.Size(s).numel() for k, s in theirs.items() if "running" not in k)
    params -= sum(1 for k in theirs if k.endswith("num_batches_tracked"))  # () counts as 1
    assert params + sum(torch.Size(s).numel() for s in fc.values()) == TORCHVISION[name][2]
    assert num_params(backbone) == params


def test_resnet18_matches_torchvision_parameter_count() -> None:
    # torchvision.models.resnet18(): 3-channel 7x7 stem, fc 512 -> 1000.
    backbone = ResNet(BasicBlock, (2, 2, 2, 2), in_channels=3)
    assert backbone.feature_dim == 512
    classifier = EmbeddingModel(backbone, 512, 1000, normalize=False)
    assert num_params(classifier) == 11_689_512
    assert classifier(images(1, 3, 64)).shape == (1, 1000)


def test_resnet50_matches_torchvision_parameter_count() -> None:
    # torchvision.models.resnet50(): 3-channel 7x7 stem, fc 2048 -> 1000.
    backbone = ResNet(Bottleneck, (3, 4, 6, 3), in_channels=3)
    assert backbone.feature_dim == 2048
    assert num_params(backbone) + 2048 * 1000 + 1000 == 25_557_032
    assert num_params(EmbeddingModel(backbone, 2048, 1000)) == 25_557_032


def _bn_eval(x: Tensor, sd: dict[str, Tensor], p: str) -> Tensor:
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"]
    )


def functional_resnet(sd: dict[str, Tensor], x: Tensor, bottleneck: bool) -> Tensor:
    """torchvision's eval-mode ResNet forward (without fc) from a state dict alone: conv1
    (7x7, stride 2, padding 3) - bn1 - relu - max-pool (3, stride 2, padding 1) - blocks -
    global average pool; a block's stride sits on its 3x3 convolution and its shortcut."""
    h = F.relu(_bn_eval(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    h = F.max_pool2d(h, 3, stride=2, padding=1)
    for stage in range(1, 5):
        j = 0
        while f"layer{stage}.{j}.conv1.weight" in sd:
            p = f"layer{stage}.{j}"
            stride = 2 if stage > 1 and j == 0 else 1
            if bottleneck:
                out = F.relu(_bn_eval(F.conv2d(h, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)
                out = F.relu(_bn_eval(out, sd, f"{p}.bn2"))
                out = _bn_eval(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                out = F.conv2d(h, sd[f"{p}.conv1.weight"], stride=stride, padding=1)
                out = F.relu(_bn_eval(out, sd, f"{p}.bn1"))
                out = _bn_eval(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            short = h
            if f"{p}.downsample.0.weight" in sd:
                short = F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=stride)
                short = _bn_eval(short, sd, f"{p}.downsample.1")
            h = F.relu(out + short)
            j += 1
    return h.mean(dim=(2, 3))  # (B, C)


def _randomise_batchnorm(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            mean, var = m.running_mean, m.running_var
            assert mean is not None and var is not None
            mean.copy_(torch.randn(c, generator=g) * 0.1)
            var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 40), ("resnet50", 33)])
def test_forward_matches_a_functional_twin(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = build_model(name, in_channels=3, image_size=size, standard_stem=True).backbone.eval()
    _randomise_batchnorm(net, 1)
    sd = {k: v.double() for k, v in net.state_dict().items()}
    x = images(2, 3, size, seed=2)
    with torch.no_grad():
        ours = net.double()(x.double())
        twin = functional_resnet(sd, x.double(), bottleneck=name == "resnet50")
    torch.testing.assert_close(ours, twin, rtol=1e-10, atol=1e-10)


def test_state_dicts_of_earlier_versions_still_load() -> None:
    # Earlier versions named the stem's convolution and BatchNorm stem.0 and stem.1.
    torch.manual_seed(0)
    model = build_model("resnet18", image_size=28)
    old = {}
    for key, value in model.state_dict().items():
        key = key.replace("backbone.conv1.", "backbone.stem.0.")
        old[key.replace("backbone.bn1.", "backbone.stem.1.")] = value.clone() + 1
    assert "backbone.stem.0.weight" in old and "backbone.conv1.weight" not in old
    twin = build_model("resnet18", image_size=28)
    twin.load_state_dict(old)
    backbone = twin.backbone
    assert isinstance(backbone, ResNet)
    assert torch.equal(backbone.conv1.weight, old["backbone.stem.0.weight"])
    assert backbone.bn1.running_var is not None
    assert torch.equal(backbone.bn1.running_var, old["backbone.stem.1.running_var"])
