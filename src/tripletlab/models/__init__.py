"""Embedding networks: a backbone, a linear projection to the embedding, L2 normalisation.

Every model is an :class:`EmbeddingModel`: ``backbone -> Linear(feature_dim, embedding_dim)
-> optional L2 normalisation``, with an optional classification head on the unnormalised
embedding for the softmax baseline. The backbones:

- ``"small"``, :class:`SmallConvNet`: VGG-style stacks of 3x3 convolutions (Simonyan &
  Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2015) with
  batch normalisation (Ioffe & Szegedy, 2015) and ReLU, 2x2 max-pooling between stages, and
  the last feature map pooled to at most a 7x7 grid and flattened, so the projection sees
  where each feature is. Sized for 28x28 grey images on a CPU; the default model of
  ``tripletlab train``. Its default layout, 32-pool-64-64-pool-128 then the 7x7 grid, beat
  the earlier 32-32-pool-64-64-pool-128 with global average pooling (Lin, Chen & Yan,
  "Network In Network", 2014; ``grid=None`` here) on Fashion-MNIST at equal epochs (1-NN
  0.920 against 0.917 after 6 epochs) while training 1.4x faster on a CPU
  (``docs/results.md``).
- ``"embeddingnet"``, :class:`EmbeddingNet`: the network of Adam Bielski's siamese-triplet
  (github.com/adambielski/siamese-triplet, ``networks.EmbeddingNet``), conv 32 5x5 - PReLU -
  max-pool - conv 64 5x5 - PReLU - max-pool - FC 256 - PReLU - FC 256 - PReLU - FC dim.
- ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, :class:`ResNet`: He, Zhang, Ren & Sun,
  "Deep Residual Learning for Image Recognition" (CVPR 2016), torchvision's networks with
  its module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...)
  and shapes (``BasicBlock`` / ``Bottleneck`` with the stride on the 3x3 convolution, layers
  [2, 2, 2, 2] / [3, 4, 6, 3] / [3, 4, 6, 3], 7x7 stride-2 stem and max-pool), less the
  ``fc`` classifier, so torchvision's weight files load unchanged: :func:`load_pretrained`
  downloads its ImageNet weights or reads a ``.pth``/``.safetensors`` file
  (:mod:`~tripletlab.models.pretrained`). ``small_input`` swaps the stem for a 3x3 stride-1
  convolution without max-pool, as is usual for 28x28 and 32x32 images (trained from
  scratch: pretrained weights need the standard stem, ``build_model(standard_stem=True)``).

Why the output is L2-normalised by default (as in FaceNet, Schroff, Kalenichenko & Philbin,
2015, where ``||f(x)||_2 = 1``): it takes the scale away from the network. With raw outputs
the network can shrink every embedding towards the origin, where all distances vanish and
every triplet's loss sits at the margin (the "loss stuck at the margin" collapse users report),
or meet the margin by inflating the scale without separating anything. On the unit sphere
Euclidean distances lie in ``[0, 2]``, so a margin such as 0.2 is a fixed fraction of the
range and means the same thing throughout training. Pass ``normalize=False`` for raw outputs
(e.g. with a soft margin, as in Hermans, Beyer & Leibe 2017).

On a CPU, channels-last weights (``model.to(memory_format=torch.channels_last)``) trained
these networks 1.2-1.5x faster in ``benchmarks/bench_models.py``, with the same outputs up to
float rounding; inputs need no conversion.

The modules, one concept each (every public name is importable from here,
``from tripletlab.models import build_model``):

- :mod:`~tripletlab.models.embedding`: :class:`EmbeddingModel`, the wrapper above, and
  :func:`fuse_batchnorm`, its inference copy with BatchNorm folded into the convolutions.
- :mod:`~tripletlab.models.small`: :class:`SmallConvNet`, :func:`small_stages` and
  :data:`SMALL_MAX_GRID`.
- :mod:`~tripletlab.models.embeddingnet`: :class:`EmbeddingNet`.
- :mod:`~tripletlab.models.resnet`: :class:`ResNet`, :class:`BasicBlock`,
  :class:`Bottleneck`.
- :mod:`~tripletlab.models.pretrained`: :func:`load_pretrained`, :func:`read_weights`,
  :func:`load_backbone_weights`, :func:`imagenet_weights_file` (torchvision's ImageNet
  files in torch's hub cache, checked), :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`,
  :class:`WeightsError`.
- :mod:`~tripletlab.models.build`: the registry of names, :data:`MODELS` (the
  :data:`ModelName` literal), and :func:`build_model`.
- :mod:`~tripletlab.models.checks`: the argument and input checks the models share.
"""

# Not in __all__ but importable from here as before: RESNET_SMALL_INPUT_BELOW, Builder and
# the registry _BUILDERS, the very dict build_model reads (a script may swap a backbone for one
# process: benchmarks/probe_layouts.py sets models._BUILDERS["small"]).
from tripletlab.models.build import _BUILDERS as _BUILDERS
from tripletlab.models.build import MODELS, ModelName, build_model
from tripletlab.models.build import RESNET_SMALL_INPUT_BELOW as RESNET_SMALL_INPUT_BELOW
from tripletlab.models.build import Builder as Builder
from tripletlab.models.embedding import EmbeddingModel, Forward, fuse_batchnorm
from tripletlab.models.embeddingnet import EmbeddingNet
from tripletlab.models.pretrained import (
    IMAGENET_FILES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINED_MODELS,
    WEIGHTS_URL,
    WEIGHTS_URL_ENV,
    PretrainedModel,
    WeightsError,
    imagenet_weights_file,
    load_backbone_weights,
    load_pretrained,
    read_weights,
    weights_cache_dir,
)
from tripletlab.models.resnet import BasicBlock, Bottleneck, ResNet
from tripletlab.models.small import SMALL_MAX_GRID, SmallConvNet, small_stages

__all__ = [
    "IMAGENET_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "PRETRAINED_MODELS",
    "SMALL_MAX_GRID",
    "WEIGHTS_URL",
    "WEIGHTS_URL_ENV",
    "BasicBlock",
    "Bottleneck",
    "EmbeddingModel",
    "EmbeddingNet",
    "Forward",
    "ModelName",
    "PretrainedModel",
    "ResNet",
    "SmallConvNet",
    "WeightsError",
    "build_model",
    "fuse_batchnorm",
    "imagenet_weights_file",
    "load_backbone_weights",
    "load_pretrained",
    "read_weights",
    "small_stages",
    "weights_cache_dir",
]
