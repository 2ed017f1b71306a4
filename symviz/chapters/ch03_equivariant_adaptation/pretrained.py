"""A "pretrained" ResNet-style CNN for chapter 03: trained upright on Fashion-MNIST, cached on disk.

Chapter 03 (Mondal et al., "Equivariant Adaptation of Large Pretrained Models", NeurIPS 2023,
arXiv 2310.01647) needs a model that was trained on *upright* images only, the way large vision
models are. We cannot download one offline, so :func:`pretrained_backbone` trains a small ResNet
(He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with :func:`symviz.train.fit`
on upright Fashion-MNIST (no rotation augmentation) and caches the weights in
``symviz.train.cache_dir()/checkpoints`` (``~/.cache/symviz`` or ``$SYMVIZ_CACHE``). The cache file
carries a fingerprint of the architecture and the training recipe: a missing, corrupt or mismatched
file is detected by :func:`symviz.train.load_checkpoint` and the backbone is retrained (never silently
used).

Using other local weights
-------------------------
Any ``torch.nn.Module`` that maps images ``(B, 1, H, W)`` (or ``(B, H, W)``) to class logits
``(B, classes)`` can be adapted by :mod:`symviz.chapters.ch03_equivariant_adaptation.adaptation`; the backbone need not come from
here. To load your own weights into this architecture, pass ``weights="path/to/file.pt"`` (a
``state_dict``, or a dict holding one under ``"state_dict"``, saved with ``torch.save``); nothing is
trained then. The file must match the architecture given by ``hidden``/``blocks``.

    >>> net = ResNetBackbone(hidden=4, blocks=(1, 1))
    >>> tuple(net(torch.zeros(2, 28, 28)).shape)
    (2, 10)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from symviz.train import accuracy  # re-exported: the notebook imports it from here

__all__ = ["ResNetBackbone", "BasicBlock", "BACKBONE_RECIPES", "PretrainedBackbone", "pretrained_backbone",
           "load_upright_data", "accuracy"]

#: Training recipes per scale. "quick" fits the notebook's one-minute budget on 2 CPU cores (cached after
#: the first run); "full" has the ResNet-20 layout (3 stages of 3 blocks, He et al. 2016, Sec. 4.2) at
#: twice its width (1.1M parameters), trained on all 60k upright images, meant for a GPU.
BACKBONE_RECIPES: dict[str, dict] = {
    "quick": dict(hidden=16, blocks=(1, 1), stem_stride=2, n_train=12000, epochs=3, lr=3e-3, batch_size=128),
    "full": dict(hidden=32, blocks=(3, 3, 3), stem_stride=1, n_train=60000, epochs=30, lr=1e-3, batch_size=128),
}
_RECIPE_VERSION = 2  # bump when the training procedure changes: old cache files are then retrained


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ``y = relu(x' + F(x))`` (He et al. 2016).

    ``x: (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity() if (stride == 1 and c_in == c_out) else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.skip(x) + self.bn2(self.conv2(h)))


class ResNetBackbone(nn.Module):
    """A small ResNet classifier: stem conv, stages of :class:`BasicBlock`, global average pool, linear.

    Stage ``i`` has ``hidden * 2**i`` channels and halves the resolution (except the first).
    Not rotation invariant: it is the "pretrained model" that chapter 03 adapts.

    Args:
        in_channels: image channels (1 for Fashion-MNIST).
        num_classes: logits returned.
        hidden: channels of the first stage.
        blocks: number of blocks per stage, e.g. ``(3, 3, 3)`` for ResNet-20.
        stem_stride: 2 halves the resolution in the first convolution (cheap CPU models).
    Shapes:
        ``x: (B, H, W)`` or ``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 16,
                 blocks: Sequence[int] = (1, 1, 1), stem_stride: int = 1):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ResNetBackbone: {name} must be a positive integer, got {v!r}")
        blocks = tuple(blocks)
        if not blocks or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks):
            raise ValueError(f"ResNetBackbone: blocks must be a non-empty sequence of positive integers, got {blocks!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"ResNetBackbone: stem_stride must be 1 or 2, got {stem_stride!r}")
        self.in_channels, self.num_classes, self.hidden, self.blocks = in_channels, num_classes, hidden, blocks
        self.stem_stride = stem_stride
        self.stem = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU())
        layers, c = [], hidden
        for i, nb in enumerate(blocks):
            c_out = hidden * 2 ** i
            for j in range(nb):
                layers.append(BasicBlock(c, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c = c_out
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        # torchvision's ResNet initialisation (the backbones of Mondal et al.'s code are torchvision
        # ResNets): He-normal convolutions with fan_out, BatchNorm at (1, 0), the classifier at
        # PyTorch's default. PyTorch's own conv default (kaiming_uniform, a=√5) is ~2.4x smaller.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, C)`` of images ``(B, H, W)`` or ``(B, in_channels, H, W)``."""
        if x.ndim == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNetBackbone: x must be (B, {self.in_channels}, H, W)"
                             f"{' or (B, H, W)' if self.in_channels == 1 else ''}, got shape {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_upright_data(n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                      source: str = "fashion_mnist"):
    """Upright train/test images ``(N, 28, 28)`` in [0, 1] and labels from :func:`symviz.data.images.load_images`.

    Returns ``(x_train, y_train, x_test, y_test, source)``; ``source`` names what was really loaded
    (``"fashion_mnist"`` unless another set was asked for). ``n_*`` subsample class-balanced.
    """
    from symviz.data.images import load_images_cached, subsample

    # the notebook and pretrained_backbone both need the full splits: decoded once per process
    xtr, ytr, src = load_images_cached(source, "train")
    xte, yte, _ = load_images_cached(src, "test")   # the same source as the training split
    if n_train is not None and n_train < len(ytr):
        xtr, ytr = subsample(xtr, ytr, n_train, seed=seed)
    if n_test is not None and n_test < len(yte):
        xte, yte = subsample(xte, yte, n_test, seed=seed + 1)
    return xtr, ytr, xte, yte, src


@dataclass
class PretrainedBackbone:
    """What :func:`pretrained_backbone` returns."""

    model: ResNetBackbone
    source: str            # data it was trained on ("fashion_mnist", "mnist", or "weights:<path>")
    from_cache: bool       # True when the weights came from the cache (or a weights file)
    seconds: float         # training time (0 when loaded)
    recipe: dict = field(default_factory=dict)
    checkpoint: Path | None = None


def _checkpoint_name(scale: str, seed: int, meta: dict) -> str:
    # the recipe's hash in the name lets several recipes live side by side in the cache; the
    # fingerprint inside the file still guards against a corrupt or mismatched file
    import hashlib
    import json
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:8]
    return f"ch03_backbone_{scale}_seed{seed}_{digest}"


def pretrained_backbone(scale: str = "quick", seed: int = 0, *, device: str | torch.device = "auto",
                        weights: str | Path | None = None, retrain: bool = False, progress: bool = False,
                        source: str = "fashion_mnist", **overrides) -> PretrainedBackbone:
    """The chapter-03 backbone, trained on upright images (no rotation augmentation), cached on disk.

    Args:
        scale: ``"quick"`` (small ResNet, 12k images, seconds on CPU) or ``"full"`` (ResNet-20-like,
            60k images, for a GPU); see :data:`BACKBONE_RECIPES`.
        seed: training seed (part of the cache key).
        device: where to train (``"auto"``, ``"cpu"``, ``"cuda"``...); the returned model is on CPU.
        weights: path of local weights (a ``state_dict`` saved with ``torch.save``) to load instead of
            training; must match the architecture of the recipe (plus ``overrides``).
        retrain: ignore the cache and retrain (the cache is then overwritten).
        source: image set to train on: ``"fashion_mnist"`` (falls back to MNIST when absent), ``"mnist"``
            or ``"digits"`` (8x8, for fast tests).
        **overrides: change recipe entries (``hidden``, ``blocks``, ``stem_stride``, ``n_train``,
            ``epochs``, ``lr``, ``batch_size``); they are part of the cache fingerprint.
    Returns:
        :class:`PretrainedBackbone` with the model in eval mode on CPU.
    """
    import time

    from symviz.train import TensorBatches

    from symviz.train import fit, load_checkpoint, save_checkpoint

    if scale not in BACKBONE_RECIPES:
        raise ValueError(f"pretrained_backbone: scale must be one of {sorted(BACKBONE_RECIPES)}, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"pretrained_backbone: seed must be an integer, got {seed!r}")
    unknown = set(overrides) - set(BACKBONE_RECIPES[scale])
    if unknown:
        raise ValueError(f"pretrained_backbone: unknown recipe keys {sorted(unknown)}; "
                         f"expected some of {sorted(BACKBONE_RECIPES[scale])}")
    recipe = {**BACKBONE_RECIPES[scale], **overrides}
    recipe["blocks"] = tuple(recipe["blocks"])
    torch.manual_seed(seed)
    model = ResNetBackbone(hidden=recipe["hidden"], blocks=recipe["blocks"], stem_stride=recipe["stem_stride"])

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_backbone: weights file {str(path)!r} does not exist")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"pretrained_backbone: weights in {str(path)!r} do not match ResNetBackbone("
                             f"hidden={recipe['hidden']}, blocks={recipe['blocks']}, stem_stride={recipe['stem_stride']}): "
                             f"{err}") from err
        return PretrainedBackbone(model.eval(), f"weights:{path}", True, 0.0, recipe, path)

    meta = {"recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
            "source": source, "seed": seed, "version": _RECIPE_VERSION}
    name = _checkpoint_name(scale, seed, meta)
    if not retrain and load_checkpoint(model, name, meta):
        from symviz.train import cache_dir
        return PretrainedBackbone(model.eval(), source, True, 0.0, recipe, cache_dir() / "checkpoints" / f"{name}.pt")

    xtr, ytr, _, _, src = load_upright_data(n_train=recipe["n_train"], seed=seed, source=source)
    if src != source:  # Fashion-MNIST missing: the fallback data get their own cache entry
        meta["source"] = src
        name = _checkpoint_name(scale, seed, meta)
        if not retrain and load_checkpoint(model, name, meta):
            from symviz.train import cache_dir
            return PretrainedBackbone(model.eval(), src, True, 0.0, recipe, cache_dir() / "checkpoints" / f"{name}.pt")
    loader = TensorBatches(xtr, ytr, batch_size=recipe["batch_size"], seed=seed)
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit(model, loss, loader, epochs=recipe["epochs"], lr=recipe["lr"], device=device, seed=seed,
            scheduler="cosine", progress=progress, desc="pretrain backbone (upright)")
    seconds = time.perf_counter() - t0
    model = model.cpu().eval()
    path = save_checkpoint(model, name, meta)
    return PretrainedBackbone(model, src, False, seconds, recipe, path)
