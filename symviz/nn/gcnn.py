"""A small C4 group-equivariant CNN (P4 G-CNN) and its plain CNN counterpart.

Cohen & Welling, "Group Equivariant Convolutional Networks", ICML 2016 (arXiv 1602.07576).

Feature maps of a P4 G-CNN carry a rotation axis: ``(B, C, 4, H, W)``. With ``r`` the 90°
counter-clockwise rotation (``torch.rot90`` on the last two axes), every layer satisfies

    ``layer(r·x)[:, :, j] = r · layer(x)[:, :, j − 1]``

(rotate the image and cyclically shift the rotation axis). Pooling over space and rotations gives
exactly C4-invariant logits.

    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = P4CNN(in_channels=1, n_classes=3, hidden=4).double()
    >>> x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    >>> bool(torch.allclose(net(x), net(torch.rot90(x, 1, dims=(-2, -1))), atol=1e-10))
    True
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["P4LiftingConv", "P4GroupConv", "P4CNN", "SmallCNN", "max_pool2d", "MaxPool2d"]


def max_pool2d(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size)`` for ``x: (B, C, H, W)``, computed in the channels-last layout and returned
    contiguous. Same values and the same gradients (ties go to the same input, tested), but PyTorch's CPU kernel
    for the default layout is several times slower on small feature maps like these (12x12 and 6x6), where it
    took about a fifth of a training step of chapter 02's learned canonicalizer. Other inputs: ``F.max_pool2d``."""
    if not torch.is_tensor(x) or x.ndim != 4:
        return F.max_pool2d(x, kernel_size)
    return F.max_pool2d(_ChannelsLast.apply(x), kernel_size).contiguous()


class _ChannelsLast(torch.autograd.Function):
    """``x`` in the channels-last layout, its gradient back in the default one (else the ReLU before the pooling
    would run its backward on two layouts at once, which is slower than the pooling this saves)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (no padding, stride = kernel) through :func:`max_pool2d`."""

    def __init__(self, kernel_size: int):
        super().__init__(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size)


def _check_square(x: torch.Tensor, ndim: int, who: str, shape: str) -> None:
    if not torch.is_tensor(x) or x.ndim != ndim:
        raise ValueError(f"{who}: expected a tensor of shape {shape}, got {getattr(x, 'shape', type(x))}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{who}: exact 90° rotations need square feature maps, got H, W = {tuple(x.shape[-2:])}")


def _check_hidden(hidden: int, who: str) -> None:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{who}: hidden (channels) must be a positive integer, got {hidden!r}")


class P4LiftingConv(nn.Module):
    """Lift an image to P4: ``out[:, o, j] = conv(x, r^j·W_o)``; ``x: (B, C_in, H, W) -> (B, C_out, 4, H, W)``.

    Odd kernel, 'same' zero padding: then ``conv(r·x, r·W) = r·conv(x, W)`` exactly.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (symmetric padding keeps rot90 exact), got {kernel_size}")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size)
                                   * math.sqrt(2.0 / (in_channels * kernel_size ** 2)))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_square(x, 4, type(self).__name__, "(B, C_in, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected {self.in_channels} input channels, got {x.shape[1]}")
        w = torch.stack([torch.rot90(self.weight, j, dims=(-2, -1)) for j in range(4)], dim=1)  # (O, 4, I, k, k)
        out = F.conv2d(x, w.flatten(0, 1), padding=self.weight.shape[-1] // 2)
        B, _, H, W = out.shape
        return out.reshape(B, self.out_channels, 4, H, W) + self.bias[None, :, None, None, None]


class P4GroupConv(nn.Module):
    """P4 -> P4 group convolution: ``out[:, o, j] = Σ_{i,s} conv(f[:, i, s], r^j·W[o, i, (s − j) mod 4])``.

    ``f: (B, C_in, 4, H, W) -> (B, C_out, 4, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 4, kernel_size, kernel_size)
                                   * math.sqrt(2.0 / (4 * in_channels * kernel_size ** 2)))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        _check_square(f, 5, type(self).__name__, "(B, C_in, 4, H, W)")
        if f.shape[1] != self.in_channels or f.shape[2] != 4:
            raise ValueError(f"{type(self).__name__}: expected (B, {self.in_channels}, 4, H, W), got {tuple(f.shape)}")
        idx = torch.arange(4)
        filters = []
        for j in range(4):
            shifted = self.weight[:, :, (idx - j) % 4]                    # W[o, i, (s - j) mod 4]
            filters.append(torch.rot90(shifted, j, dims=(-2, -1)))
        w = torch.stack(filters, dim=1).flatten(0, 1).flatten(1, 2)       # (O*4, I*4, k, k)
        B, _, _, H, W = f.shape
        out = F.conv2d(f.flatten(1, 2), w, padding=self.weight.shape[-1] // 2)
        return out.reshape(B, self.out_channels, 4, H, W) + self.bias[None, :, None, None, None]


class P4CNN(nn.Module):
    """Lifting conv, two group convs, 2x2 max-pools, then max over rotations and mean over space.

    ``x: (B, C, H, W) -> logits (B, n_classes)``, exactly invariant to ``rot90`` when H and W are
    divisible by 4 (so that each 2x2 pooling tiles the rotated map the same way). ``hidden``: channels per
    rotation of the first two layers (the last has ``2 * hidden``).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, hidden: int = 8, kernel_size: int = 3):
        super().__init__()
        _check_hidden(hidden, type(self).__name__)
        self.lift = P4LiftingConv(in_channels, hidden, kernel_size)
        self.g1 = P4GroupConv(hidden, hidden, kernel_size)
        self.g2 = P4GroupConv(hidden, 2 * hidden, kernel_size)
        self.head = nn.Linear(2 * hidden, n_classes)

    @staticmethod
    def _pool(f: torch.Tensor) -> torch.Tensor:
        B, C, G, H, W = f.shape
        return max_pool2d(f.reshape(B, C * G, H, W), 2).reshape(B, C, G, H // 2, W // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(x) and x.ndim == 4 and (x.shape[-1] % 4 or x.shape[-2] % 4):
            raise ValueError(f"P4CNN: H and W must be divisible by 4 for exact invariance, got {tuple(x.shape[-2:])}")
        f = self._pool(F.relu(self.lift(x)))
        f = self._pool(F.relu(self.g1(f)))
        f = F.relu(self.g2(f))
        return self.head(f.amax(2).mean((-2, -1)))


class SmallCNN(nn.Module):
    """The unconstrained counterpart (same depth): three convs, two max-pools, a 3x3 average pool, MLP.

    ``x: (B, C, H, W) -> logits (B, n_classes)``. Used as the vanilla model and as the backbone of
    canonicalized models. ``hidden``: channels of the first two convolutions (the third has ``2 * hidden``).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, hidden: int = 16, kernel_size: int = 3):
        super().__init__()
        _check_hidden(hidden, type(self).__name__)
        pad = kernel_size // 2
        self.in_channels = in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size, padding=pad), nn.ReLU(), MaxPool2d(2),
            nn.Conv2d(hidden, hidden, kernel_size, padding=pad), nn.ReLU(), MaxPool2d(2),
            nn.Conv2d(hidden, 2 * hidden, kernel_size, padding=pad), nn.ReLU(),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(),   # keeps a coarse layout: the CNN knows "up"
        )
        self.head = nn.Sequential(nn.Linear(18 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SmallCNN: x must be (B, {self.in_channels}, H, W), got {getattr(x, 'shape', type(x))}")
        return self.head(self.net(x))
