"""Screening models and metrics: random forest, trivial baselines, recall@k, disagreement as error estimate.

Kaba et al., "Prediction of Large Magnetic Moment Materials With Graph Neural Networks and Random
Forests" (arXiv:2111.14712): a random forest on ~100 selected descriptors is competitive with a crystal
graph network; ranking a pool by predicted moment finds large-moment materials; and the disagreement
between two different model families estimates the error on materials without labels.

    >>> import numpy as np
    >>> y = np.array([0.1, 2.0, 0.3, 1.5, 0.0]); pred = np.array([0.2, 1.8, 0.1, 1.7, 0.3])
    >>> recall_at_k(y, pred, k=2)          # the two largest true moments are the two largest predicted
    1.0
    >>> round(mae(y, pred), 3)
    0.2
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "mae", "recall_at_k", "recall_curve", "random_recall_at_k", "MeanBaseline", "ElementAverageBaseline", "fit_random_forest",
    "disagreement", "spearman", "permutation_pvalue", "rank_candidates", "train_cgcnn", "predict_cgcnn",
]


def _arr(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=float).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def mae(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Mean absolute error ``mean |y_pred - y_true|``."""
    a, b = _arr(y_true, "y_true"), _arr(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"mae: y_true has {a.size} values but y_pred has {b.size}")
    return float(np.mean(np.abs(a - b)))


def recall_at_k(y_true: Sequence[float], y_pred: Sequence[float], k: int, top: int | None = None) -> float:
    """Fraction of the ``top`` truly largest materials found among the ``k`` largest predictions.

    ``top`` defaults to ``k`` (then recall = precision). Ties in ``y_true`` at the boundary are broken
    by index (stable sort).
    """
    a, b = _arr(y_true, "y_true"), _arr(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"recall_at_k: y_true has {a.size} values but y_pred has {b.size}")
    top = k if top is None else top
    for name, v in (("k", k), ("top", top)):
        if not (isinstance(v, (int, np.integer)) and 1 <= v <= a.size):
            raise ValueError(f"recall_at_k: {name} must be an int in 1..{a.size}, got {v!r}")
    true_top = set(np.argsort(-a, kind="stable")[:top].tolist())
    picked = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(true_top & picked) / top


def recall_curve(y_true: Sequence[float], y_pred: Sequence[float], ks: Sequence[int] | None = None) -> np.ndarray:
    """:func:`recall_at_k` for every ``k`` in ``ks`` (default ``1..n``) at once, ``(len(ks),)``.

        >>> recall_curve([3.0, 2.0, 1.0, 0.0], [0.0, 2.0, 1.0, 3.0], ks=[1, 2, 4]).tolist()
        [0.0, 0.5, 1.0]
    """
    a, b = _arr(y_true, "y_true"), _arr(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"recall_curve: y_true has {a.size} values but y_pred has {b.size}")
    ks = np.arange(1, a.size + 1) if ks is None else np.asarray(ks)
    if ks.ndim != 1 or not np.issubdtype(ks.dtype, np.integer) or ks.size == 0 or ks.min() < 1 or ks.max() > a.size:
        raise ValueError(f"recall_curve: ks must be integers in 1..{a.size}")
    rank_pred = np.empty(a.size, dtype=int)
    rank_pred[np.argsort(-b, kind="stable")] = np.arange(a.size)
    by_truth = rank_pred[np.argsort(-a, kind="stable")]   # where each truly-largest material lands in the ranking
    return np.array([np.count_nonzero(by_truth[:k] < k) / k for k in ks])


def random_recall_at_k(n: int, k: int, top: int | None = None) -> float:
    """Expected recall@k of picking ``k`` of ``n`` materials at random: ``k / n``."""
    if not (isinstance(n, int) and n >= 1 and isinstance(k, int) and 1 <= k <= n):
        raise ValueError(f"random_recall_at_k: need 1 <= k <= n, got n={n!r}, k={k!r}")
    return k / n


class MeanBaseline:
    """Predicts the training mean for every material (the trivial baseline)."""

    def fit(self, X: Any, y: Sequence[float]) -> "MeanBaseline":
        self.mean_ = float(np.mean(_arr(y, "y")))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.mean_)


class ElementAverageBaseline:
    """Moment as a composition-weighted sum of per-element moments: ``y ≈ Σ_e f_e w_e`` (ridge fit).

    ``X`` is a list of pymatgen Compositions / Structures / formulas. Elements unseen in training get the
    mean of the learned ``w_e``.
    """

    def __init__(self, alpha: float = 1e-2):
        if not alpha >= 0:
            raise ValueError(f"ElementAverageBaseline: alpha must be >= 0, got {alpha!r}")
        self.alpha = alpha

    @staticmethod
    def _fractions(X, symbols=None):
        from symviz.data.descriptors import _fractions

        F, syms = _fractions(X, "ElementAverageBaseline")
        if symbols is None:
            return F, syms
        out = np.zeros((F.shape[0], len(symbols) + 1))
        col = {s: k for k, s in enumerate(symbols)}
        for j, s in enumerate(syms):
            out[:, col.get(s, len(symbols))] += F[:, j]
        return out, symbols

    def fit(self, X: Sequence[Any], y: Sequence[float]) -> "ElementAverageBaseline":
        y = _arr(y, "y")
        F, self.symbols_ = self._fractions(X)
        A = F.T @ F + self.alpha * np.eye(F.shape[1])
        self.weights_ = np.linalg.solve(A, F.T @ y)
        return self

    def predict(self, X: Sequence[Any]) -> np.ndarray:
        F, _ = self._fractions(X, self.symbols_)
        w = np.append(self.weights_, self.weights_.mean())
        return F @ w


def fit_random_forest(X, y, n_estimators: int = 300, seed: int = 0, min_samples_leaf: int = 1,
                      max_features: float | str = 0.33, n_jobs: int | None = 1):
    """A scikit-learn ``RandomForestRegressor`` on descriptors ``X (n, d)`` and targets ``y (n,)``."""
    from sklearn.ensemble import RandomForestRegressor

    y = _arr(y, "y")
    if len(X) != len(y):
        raise ValueError(f"fit_random_forest: X has {len(X)} rows but y has {len(y)}")
    rf = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, min_samples_leaf=min_samples_leaf,
                               max_features=max_features, n_jobs=n_jobs)
    return rf.fit(X, y)


def disagreement(*predictions: Sequence[float]) -> np.ndarray:
    """Per-material spread of several models' predictions: ``max - min`` (for two models ``|a - b|``).

    Kaba et al. use the difference between model families as an estimate of the prediction error on
    unlabelled candidates.
    """
    if len(predictions) < 2:
        raise ValueError("disagreement needs the predictions of at least two models")
    P = np.stack([_arr(p, f"predictions[{i}]") for i, p in enumerate(predictions)])
    return P.max(0) - P.min(0)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties get average ranks)."""
    from scipy.stats import rankdata

    a, b = _arr(a, "a"), _arr(b, "b")
    if a.shape != b.shape or a.size < 3:
        raise ValueError("spearman: a and b need the same length >= 3")
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def permutation_pvalue(a: Sequence[float], b: Sequence[float], n_perm: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that ``spearman(a, b)`` is this large by chance (shuffling ``b``)."""
    rng = np.random.default_rng(seed)
    obs = spearman(a, b)
    b = _arr(b, "b")
    null = np.array([spearman(a, rng.permutation(b)) for _ in range(n_perm)])
    return float((1 + np.sum(null >= obs)) / (n_perm + 1))


def rank_candidates(ids: Sequence[Any], predictions: dict[str, Sequence[float]], k: int | None = None,
                    by: str | None = None, truth: Sequence[float] | None = None):
    """Rank candidates by the mean of the models' predictions (or by model ``by``); top ``k`` rows.

    Returns a DataFrame: ``id``, one column per model, ``mean_prediction``, ``disagreement`` (the error
    estimate), and ``truth`` / ``abs_error`` when given.
    """
    import pandas as pd

    if not predictions:
        raise ValueError("rank_candidates: predictions must map model name -> predictions")
    df = pd.DataFrame({"id": list(ids)})
    for name, p in predictions.items():
        p = _arr(p, f"predictions[{name!r}]")
        if len(p) != len(df):
            raise ValueError(f"rank_candidates: {name} has {len(p)} predictions for {len(df)} ids")
        df[name] = p
    names = list(predictions)
    df["mean_prediction"] = df[names].mean(1)
    df["disagreement"] = disagreement(*[df[n] for n in names]) if len(names) > 1 else 0.0
    if truth is not None:
        df["truth"] = _arr(truth, "truth")
        df["abs_error"] = (df["mean_prediction"] - df["truth"]).abs()
    if by is not None and by not in names:
        raise ValueError(f"rank_candidates: by must be one of {names}, got {by!r}")
    df = df.sort_values(by or "mean_prediction", ascending=False).reset_index(drop=True)
    return df if k is None else df.head(k)


# ----------------------------------------------------------------------------------------------
# CGCNN training on crystal graphs (wraps symviz.train.fit)
# ----------------------------------------------------------------------------------------------

def _loader(graphs, batch_size, shuffle, seed):
    from torch.utils.data import DataLoader

    from symviz.data.crystal_graph import collate_graphs

    g = torch.Generator().manual_seed(seed)
    return DataLoader(graphs, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_graphs, generator=g)


def train_cgcnn(train_graphs, val_graphs, *, epochs: int = 60, lr: float = 3e-3, batch_size: int = 32,
                hidden: int = 64, n_conv: int = 3, cutoff: float = 5.0, seed: int = 0, device: str = "auto",
                patience: int | None = 20, weight_decay: float = 0.0, progress: bool = False):
    """Train a :class:`~symviz.nn.cgcnn.CGCNN` to predict ``graph.y`` with an L1 loss (MAE).

    The targets are standardised inside the model wrapper (the returned model predicts in the original
    units). Returns ``(model, FitResult)``.
    """
    from symviz.nn.cgcnn import CGCNN
    from symviz.train import fit, seed_everything

    if not train_graphs or not val_graphs:
        raise ValueError("train_cgcnn: needs non-empty train_graphs and val_graphs")
    if any(g.y is None for g in list(train_graphs) + list(val_graphs)):
        raise ValueError("train_cgcnn: every graph needs a target y (pass targets= to structures_to_graphs)")
    seed_everything(seed)
    ys = torch.stack([g.y for g in train_graphs]).float()
    node_dim = int(train_graphs[0].node_features.shape[1])
    model = _Standardised(CGCNN(node_dim=node_dim, cutoff=cutoff, hidden=hidden, n_conv=n_conv,
                                n_targets=int(ys.shape[1])), ys.mean(0), ys.std(0).clamp(min=1e-6))
    loss = lambda m, b: (m(b) - b.y).abs().mean()
    result = fit(model, loss, _loader(list(train_graphs), batch_size, True, seed),
                 _loader(list(val_graphs), 256, False, seed), epochs=epochs, lr=lr, weight_decay=weight_decay,
                 device=device, seed=seed, patience=patience, progress=progress, scheduler="cosine", desc="CGCNN")
    return result.model, result


@torch.no_grad()
def predict_cgcnn(model: torch.nn.Module, graphs, batch_size: int = 256) -> np.ndarray:
    """Predictions ``(n_graphs,)`` (first target) of a trained model, in eval mode, on its device."""
    dev = next(model.parameters()).device
    model.eval()
    out = [model(b.to(dev))[:, 0].cpu() for b in _loader(list(graphs), batch_size, False, 0)]
    return torch.cat(out).numpy().astype(float)


class _Standardised(torch.nn.Module):
    """``model(batch) * std + mean``: the network learns standardised targets, we predict in μB."""

    def __init__(self, net: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.reshape(1, -1))
        self.register_buffer("std", std.reshape(1, -1))

    def forward(self, batch) -> torch.Tensor:
        return self.net(batch) * self.std + self.mean
