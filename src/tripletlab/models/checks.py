"""The checks every model here shares: an integer argument at least a minimum, and a
floating (B, C, H, W) image batch with the channels the model was built for."""

from __future__ import annotations

from torch import Tensor


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def _check_images(x: Tensor, in_channels: int) -> None:
    """Inputs must be a 4-D (B, C, H, W) floating batch with ``in_channels`` channels."""
    if x.dim() != 4 or x.shape[1] != in_channels or not x.dtype.is_floating_point:
        raise ValueError(
            f"expected a floating (B, {in_channels}, H, W) batch of images, got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}; add a batch dimension with x[None] and "
            "convert with x.float()"
        )
