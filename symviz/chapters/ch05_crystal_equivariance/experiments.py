"""Chapter 05's training loop for the alloy-supercell models: :func:`fit_alloy_model` (Adam on the MSE of the
per-site energy, best-validation restore) and :func:`alloy_mae`."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["fit_alloy_model", "alloy_mae"]


def fit_alloy_model(model: nn.Module, occupancy: torch.Tensor, energy: torch.Tensor, *, epochs: int = 200,
                    steps: int | None = None, lr: float = 3e-3, batch_size: int = 32, seed: int = 0,
                    device: str = "auto", val_fraction: float = 0.2, patience: int | None = None,
                    site_energy: torch.Tensor | None = None):
    """Fit ``model`` (occupancy ``(N, n)`` -> :class:`CrystalPrediction`) to energies ``(N,)`` with MSE.

    A random ``val_fraction`` of the training set (at least 2 configurations) picks the best epoch
    (its weights are restored) and, with ``patience``, stops early. ``val_fraction=0`` holds nothing
    out: every configuration trains and the final weights are kept (for tiny training sets, where two
    validation configurations are too few to pick an epoch). ``steps``: train for about this
    many optimizer steps instead of ``epochs`` (so tiny training sets still get enough updates).
    Targets are scaled by their std inside the loss only. With ``site_energy: (N, n)`` the loss is the
    MSE of the per-site outputs instead (the model must have a per-site readout).
    Returns :class:`symviz.train.FitResult`.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from symviz.train import fit

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

    train_loader = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(TensorDataset(x[val], y[val]), batch_size=512) if n_val else None
    return fit(model, loss_fn, train_loader, val_loader, epochs=epochs, lr=lr, seed=seed, device=device,
               patience=patience, progress=False, desc=type(model).__name__)


@torch.no_grad()
def alloy_mae(model: nn.Module, occupancy: torch.Tensor, energy: torch.Tensor, per_site: bool = True) -> float:
    """Mean absolute error of the energy (eV per site if ``per_site``, else eV per supercell)."""
    model.eval()
    dev = next(model.parameters()).device
    pred = model(occupancy.float().to(dev)).energy.double().cpu()
    err = (pred - energy.double()).abs().mean()
    return float(err / occupancy.shape[1]) if per_site else float(err)
