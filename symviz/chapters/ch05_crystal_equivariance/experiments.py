"""Chapter 05's training loop for the alloy-supercell models: :func:`fit_alloy_model` (Adam on the MSE of the
per-site energy, best-validation restore) and :func:`alloy_mae`; the cluster-expansion label of section 6b
(:func:`cluster_expansion_label`) and the two configurations that a distance-only model cannot tell apart
(:func:`same_distance_pair_configurations`)."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["fit_alloy_model", "alloy_mae", "start_readout_at_mean", "cluster_expansion_label",
           "same_distance_pair_configurations", "TRAINING_COST", "training_cost"]

TRAINING_COST = {"equivariant": 1.0, "CGCNN": 2.5, "MLP": 0.1}
"""Relative cost of one training step of each model family at the same batch (the first word of the chapter's model
names; measured at one thread: CGCNN's step 2.5-3x the orbit network's, the occupancy MLP's tiny)."""


def training_cost(name: str, n: int, steps: int) -> float:
    """A training's rough run time in relative units, so that :func:`symviz.train.parallel_runs` starts the longest
    first: ``steps x (8 + min(n, 32)) x TRAINING_COST[family]``. The measured shape of a step: a fixed part (about 8
    configurations' worth) plus one part per configuration of a batch of at most 32 (``fit_alloy_model``'s batch)."""
    family = name.split()[0] if isinstance(name, str) and name.strip() else name
    if family not in TRAINING_COST:
        raise ValueError(f"training_cost: model name must start with one of {sorted(TRAINING_COST)}, got {name!r}")
    if not (isinstance(n, int) and n >= 1 and isinstance(steps, int) and steps >= 1):
        raise ValueError(f"training_cost: n and steps must be positive ints, got n={n!r}, steps={steps!r}")
    return float(steps * (8 + min(n, 32)) * TRAINING_COST[family])


def fit_alloy_model(model: nn.Module, occupancy: torch.Tensor, energy: torch.Tensor, *, epochs: int = 200,
                    steps: int | None = None, lr: float = 3e-3, batch_size: int = 32, seed: int = 0,
                    device: str = "auto", val_fraction: float = 0.2, patience: int | None = None,
                    site_energy: torch.Tensor | None = None, zero_readout: bool = False):
    """Fit ``model`` (occupancy ``(N, n)`` -> :class:`CrystalPrediction`) to energies ``(N,)`` with MSE (Adam,
    :func:`symviz.train.fused_adam`).

    A random ``val_fraction`` of the training set (at least 2 configurations) picks the best epoch
    (its weights are restored) and, with ``patience``, stops early. ``val_fraction=0`` holds nothing
    out: every configuration trains and the final weights are kept (for tiny training sets, where two
    validation configurations are too few to pick an epoch). ``steps``: train for about this
    many optimizer steps instead of ``epochs`` (so tiny training sets still get enough updates).
    Targets are scaled by their std inside the loss only. With ``site_energy: (N, n)`` the loss is the
    MSE of the per-site outputs instead (the model must have a per-site readout).
    ``zero_readout``: first :func:`start_readout_at_mean` (models with a ``readout`` MLP, i.e.
    :class:`~symviz.nn.crystal.CrystalEquivariantNet`; others are left as they are).
    Returns :class:`symviz.train.FitResult`.
    """
    from symviz.train import TensorBatches, fit, fused_adam

    if occupancy.ndim != 2 or energy.shape != (occupancy.shape[0],):
        raise ValueError(f"fit_alloy_model: need occupancy (N, n) and energy (N,), got {tuple(occupancy.shape)} "
                         f"and {tuple(energy.shape)}")
    N = occupancy.shape[0]
    if N < 4:
        raise ValueError(f"fit_alloy_model: need at least 4 configurations, got {N}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(N, generator=g)
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ValueError(f"fit_alloy_model: val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = max(2, int(round(val_fraction * N))) if val_fraction > 0 else 0
    val, tr = perm[:n_val], perm[n_val:]
    scale = float(energy[tr].std().clamp(min=1e-6)) if len(tr) > 1 else 1.0
    if steps is not None:
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"fit_alloy_model: steps must be a positive int or None, got {steps!r}")
        epochs = max(1, math.ceil(steps / math.ceil(len(tr) / batch_size)))
    x, y = occupancy.float(), energy.float()
    if site_energy is not None:
        if site_energy.shape != occupancy.shape:
            raise ValueError(f"fit_alloy_model: site_energy must be (N, n) = {tuple(occupancy.shape)}, got "
                             f"{tuple(site_energy.shape)}")
        y = site_energy.float()
        scale = float(y[tr].std().clamp(min=1e-6))

    def loss_fn(m, batch):
        xb, yb = batch
        out = m(xb)
        if yb.ndim == 2:
            if out.site is None:
                raise ValueError("fit_alloy_model: site_energy targets need a model with a per-site output")
            return (((out.site - yb) / scale) ** 2).mean()
        return (((out.energy - yb) / scale) ** 2).mean()

    if zero_readout:
        start_readout_at_mean(model, float(energy[tr].mean()) / occupancy.shape[1])
    train_loader = TensorBatches(x[tr], y[tr], batch_size=batch_size, seed=seed)   # one gather per batch, no collate
    val_loader = TensorBatches(x[val], y[val], batch_size=512, shuffle=False) if n_val else None
    # Adam with the fused kernel: measured 0.94 -> 0.45 ms of a 7-17 ms training step of the CGCNN below
    return fit(model, loss_fn, train_loader, val_loader, epochs=epochs, optimizer=fused_adam(model, lr, 0.0, device),
               seed=seed, device=device, patience=patience, progress=False, desc=type(model).__name__)


@torch.no_grad()
def alloy_mae(model: nn.Module, occupancy: torch.Tensor, energy: torch.Tensor, per_site: bool = True) -> float:
    """Mean absolute error of the energy (eV per site if ``per_site``, else eV per supercell)."""
    model.eval()
    dev = next(model.parameters()).device
    pred = model(occupancy.float().to(dev)).energy.double().cpu()
    err = (pred - energy.double()).abs().mean()
    return float(err / occupancy.shape[1]) if per_site else float(err)


@torch.no_grad()
def start_readout_at_mean(model: nn.Module, site_mean: float) -> bool:
    """Zero the last layer of ``model.readout`` and set its bias to ``site_mean`` (eV per site); True if done.

    The energy is a sum of ``n`` per-site outputs: with random last-layer weights it starts as a sum of ``n``
    random numbers, far from the data, and the first steps of training spend themselves cancelling it (on the
    cluster-expansion label the orbit network then stalls on a plateau). Starting every site at the mean energy
    per site is the per-atom energy shift of atomistic networks (SchNet, NequIP). Models without a ``readout``
    ``nn.Sequential`` ending in ``nn.Linear`` are left untouched (False).
    """
    readout = getattr(model, "readout", None)
    if not (isinstance(readout, nn.Sequential) and isinstance(readout[-1], nn.Linear)):
        return False
    if not math.isfinite(site_mean):
        raise ValueError(f"start_readout_at_mean: site_mean must be a finite energy per site, got {site_mean!r}")
    readout[-1].weight.zero_()
    readout[-1].bias.fill_(site_mean)
    return True


def cluster_expansion_label(template, pair_shells: tuple = (0.0, 0.010), pair_anisotropy: float = 0.060,
                            triplet_anisotropy: float = 0.010, max_pair: float = 1.45, max_triplet: float = 1.05):
    """Section 6b's label on the alloy supercell ``template``: a :class:`symviz.data.cluster_expansion.ClusterExpansion`.

    Points, pairs up to ``max_pair`` x the nearest-neighbour distance and nearest-neighbour triangles (sides up to
    ``max_triplet`` x it); ECIs (eV) from :func:`symviz.data.cluster_expansion.anisotropic_ecis`:
    ``pair_shells[k] + pair_anisotropy * P2`` for the nearest (``k=0``) and next shell, ``triplet_anisotropy * P2``
    for triangles, ``P2`` the orbit's bond-angle factor about the c axis. In hcp the in-plane (``P2 = -1/2``) and
    out-of-plane (``P2 = +1/2``) nearest neighbours then get opposite ECIs at the same distance.
    Returns ``(ce, orbits)``.
    """
    import numpy as np

    from symviz.data import cluster_expansion as CE
    from symviz.data import crystals as C

    perms = C.site_permutations(template, ignore_species=True)
    d = C.pair_distances(template)
    d_nn = float(d[d > 1e-6].min())
    orbits = CE.find_cluster_orbits(template, perms, max_pair=max_pair * d_nn, max_triplet=max_triplet * d_nn)
    eci = CE.anisotropic_ecis(orbits, pair=tuple(pair_shells), pair_anisotropy=(pair_anisotropy,),
                              triplet_anisotropy=triplet_anisotropy)
    return CE.ClusterExpansion(orbits, np.asarray(eci)), orbits


def same_distance_pair_configurations(ce) -> tuple[torch.Tensor, list[int]] | None:
    """Two configurations a distance-only model cannot tell apart: one B-B pair from each of two pair orbits at the
    same distance (all other sites A). ``(occupancy (2, n), [orbit index, orbit index])``, or None when every
    distance holds a single pair orbit (then orbits and distance shells coincide)."""
    pairs = [(k, o) for k, o in enumerate(ce.orbits) if o.size == 2]
    for a in range(len(pairs)):
        for b in range(a + 1, len(pairs)):
            (ka, oa), (kb, ob) = pairs[a], pairs[b]
            if oa.distances == ob.distances and ce.eci[ka] != ce.eci[kb]:
                x = torch.zeros(2, ce.n_sites, dtype=torch.float64)
                x[0, torch.as_tensor(oa.clusters[0])] = 1.0
                x[1, torch.as_tensor(ob.clusters[0])] = 1.0
                return x, [ka, kb]
    return None
