"""Screening models and metrics: random forest, trivial baselines, recall@k, disagreement as error estimate.

Kaba et al., "Prediction of Large Magnetic Moment Materials With Graph Neural Networks and Random
Forests" (arXiv:2111.14712): a random forest on ~100 selected descriptors is competitive with a crystal
graph network; ranking a pool by predicted moment finds large-moment materials; and the disagreement
between different model families estimates the error on materials without labels. The second half of the module
is the paper's pipeline on a pool held out by chemical system: a two-stage screen (magnetic? then how large?)
with three families (random forest, CGCNN, a MEGNet-style network), their spread as an error bar, and the checks
of that error bar (coverage, rank correlation) and of the networks' independence of the unit cell.

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
    "chemical_systems", "group_split", "magnetic_labels", "GNN_KINDS", "train_two_stage_gnn", "predict_two_stage_gnn",
    "TwoStageForest", "ensemble_predictions", "two_stage_screen", "precision_recall", "coverage", "bootstrap_lower",
    "composition_variance_share", "supercell_site_map", "cell_choice_errors", "roc_auc", "auc_gaps",
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
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    obs = spearman(a, b)
    a, b = _arr(a, "a"), _arr(b, "b")
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0
    # ranks commute with shuffling, so each shuffle of b is a shuffle of its ranks: one matrix product for all
    perms = np.stack([rng.permutation(b.size) for _ in range(n_perm)])
    ca, cb = ra - ra.mean(), rb - rb.mean()
    null = (cb[perms] @ ca) / np.sqrt((ca @ ca) * (cb @ cb))
    return float((1 + np.sum(null >= obs - 1e-12)) / (n_perm + 1))


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
                                n_targets=int(ys.shape[1]), eval_norm_always=True), ys.mean(0), ys.std(0).clamp(min=1e-6))
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


# ----------------------------------------------------------------------------------------------
# The two-stage screen of Kaba et al.: is it magnetic?  then: how large?  (held-out pool, three model families)
# ----------------------------------------------------------------------------------------------

def chemical_systems(structures) -> list[str]:
    """The chemical system of each structure, its sorted element symbols joined by ``-`` (``"Co-Mn-Si"``).

    Polymorphs (same composition, different structure) and compounds of the same elements share a system.
    """
    out = []
    for i, s in enumerate(structures):
        comp = getattr(s, "composition", None)
        if comp is None:
            raise TypeError(f"chemical_systems: structures[{i}] has no composition (expected a pymatgen Structure)")
        out.append("-".join(sorted(el.symbol for el in comp.elements)))
    return out


def group_split(groups: Sequence[Any], test_fraction: float = 0.3, seed: int = 0):
    """Split indices so that every group lies wholly on one side: ``(train_idx, test_idx)``, sorted int arrays.

    Groups are drawn in a random order (``seed``) into the test side until it holds at least ``test_fraction`` of
    the items. Grouping by :func:`chemical_systems` keeps every composition (and all its polymorphs) out of
    training, so a model cannot just remember the compositions it was shown.

        >>> tr, te = group_split(["a", "a", "b", "c", "c", "d"], test_fraction=0.3, seed=0)
        >>> sorted(set(tr) | set(te)) == list(range(6)) and not set(tr) & set(te)
        True
    """
    groups = list(groups)
    if len(groups) < 2:
        raise ValueError(f"group_split: need at least 2 items, got {len(groups)}")
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"group_split: test_fraction must be in (0, 1), got {test_fraction!r}")
    keys = list(dict.fromkeys(groups))
    if len(keys) < 2:
        raise ValueError("group_split: every item is in the same group; nothing can be held out")
    order = np.random.default_rng(seed).permutation(len(keys))
    where = {g: [] for g in keys}
    for i, g in enumerate(groups):
        where[g].append(i)
    test: list[int] = []
    for j in order[:-1]:  # the last group always stays in training
        if len(test) >= test_fraction * len(groups):
            break
        test += where[keys[j]]
    test_idx = np.array(sorted(test), dtype=int)
    train_idx = np.setdiff1d(np.arange(len(groups)), test_idx)
    return train_idx, test_idx


def magnetic_labels(y: Sequence[float], threshold: float) -> np.ndarray:
    """Stage 1's label: ``y > threshold`` (moment per atom in μB) as a bool array."""
    y = _arr(y, "y")
    if not (isinstance(threshold, (int, float)) and threshold >= 0):
        raise ValueError(f"magnetic_labels: threshold must be a moment >= 0 in μB/atom, got {threshold!r}")
    return y > threshold


class _TwoStageNet(torch.nn.Module):
    """A graph network with two outputs: column 0 the moment (μB/atom, de-standardised), column 1 the logit of
    P(magnetic). The network itself learns the standardised moment of magnetic materials."""

    def __init__(self, net: torch.nn.Module, mean: float, std: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, batch) -> torch.Tensor:
        out = self.net(batch)
        return torch.stack([out[:, 0] * self.std + self.mean, out[:, 1]], dim=1)


GNN_KINDS = ("cgcnn", "megnet")


def train_two_stage_gnn(kind: str, train_graphs, val_graphs, *, threshold: float, hidden: int = 32,
                        n_layers: int = 2, epochs: int = 30, lr: float = 3e-3, batch_size: int = 32,
                        cutoff: float = 5.0, seed: int = 0, device: str = "auto", patience: int | None = None,
                        readout: str | None = None, progress: bool = False):
    """Train a CGCNN or a MEGNet-style network for both stages at once (two heads on one network).

    Stage 1 is a binary cross-entropy on ``y > threshold`` (magnetic or not), stage 2 an L1 loss on the
    standardised moment of the *magnetic* training crystals only (a non-magnetic one says nothing about how
    large a moment is)::

        loss = BCE(logit, 1[y > threshold]) + mean_{magnetic} |ŷ_std - (y - μ)/σ|

    ``kind``: ``"cgcnn"`` (``n_layers`` convolutions) or ``"megnet"`` (``n_layers`` blocks; ``readout`` default
    ``"set2set"``). Returns ``(model, FitResult)``; ``model(batch)`` is ``(B, 2)``: moment, logit.
    """
    from symviz.nn.cgcnn import CGCNN
    from symviz.nn.megnet import MEGNet
    from symviz.train import fit, seed_everything

    if kind not in GNN_KINDS:
        raise ValueError(f"train_two_stage_gnn: kind must be one of {GNN_KINDS}, got {kind!r}")
    if not train_graphs or not val_graphs:
        raise ValueError("train_two_stage_gnn: needs non-empty train_graphs and val_graphs")
    if any(g.y is None for g in list(train_graphs) + list(val_graphs)):
        raise ValueError("train_two_stage_gnn: every graph needs a target y (pass targets= to structures_to_graphs)")
    ys = torch.stack([g.y[0] for g in train_graphs]).double()
    mag = ys > threshold
    if int(mag.sum()) < 2 or int((~mag).sum()) < 1:
        raise ValueError(f"train_two_stage_gnn: the training crystals need both classes (and >= 2 magnetic ones) at "
                         f"threshold {threshold} μB/atom; got {int(mag.sum())} magnetic of {len(ys)}")
    mean, std = float(ys[mag].mean()), float(ys[mag].std().clamp(min=1e-6))
    seed_everything(seed)
    node_dim = int(train_graphs[0].node_features.shape[1])
    if kind == "cgcnn":
        net = CGCNN(node_dim=node_dim, cutoff=cutoff, hidden=hidden, n_conv=n_layers, n_targets=2, eval_norm_always=True)
    else:
        net = MEGNet(node_dim=node_dim, cutoff=cutoff, hidden=hidden, n_blocks=n_layers, n_targets=2,
                     readout=readout or "set2set")
    model = _TwoStageNet(net, mean, std)

    def loss(m, b):
        out = m.net(b)
        y = b.y[:, 0]
        is_mag = (y > threshold).to(out.dtype)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1], is_mag)
        l1 = ((out[:, 0] - (y - m.mean) / m.std).abs() * is_mag).sum() / is_mag.sum().clamp(min=1.0)
        return bce + l1

    result = fit(model, loss, _loader(list(train_graphs), batch_size, True, seed),
                 _loader(list(val_graphs), 256, False, seed), epochs=epochs, lr=lr, device=device, seed=seed,
                 patience=patience, progress=progress, scheduler="cosine", desc=kind.upper())
    return result.model, result


@torch.no_grad()
def predict_two_stage_gnn(model: torch.nn.Module, graphs, batch_size: int = 256):
    """``(moment (n,), p_magnetic (n,))`` of a model from :func:`train_two_stage_gnn`, in eval mode."""
    dev = next(model.parameters()).device
    model.eval()
    out = torch.cat([model(b.to(dev)).cpu() for b in _loader(list(graphs), batch_size, False, 0)])
    return out[:, 0].double().numpy(), torch.sigmoid(out[:, 1]).double().numpy()


class TwoStageForest:
    """Random forests for both stages: a classifier of ``y > threshold`` and a regressor fit on magnetic crystals."""

    def __init__(self, threshold: float, n_estimators: int = 200, seed: int = 0, n_jobs: int | None = 1):
        if not (isinstance(threshold, (int, float)) and threshold >= 0):
            raise ValueError(f"TwoStageForest: threshold must be a moment >= 0 in μB/atom, got {threshold!r}")
        self.threshold, self.n_estimators, self.seed, self.n_jobs = float(threshold), n_estimators, seed, n_jobs

    def fit(self, X, y) -> "TwoStageForest":
        from sklearn.ensemble import RandomForestClassifier

        y = _arr(y, "y")
        if len(X) != len(y):
            raise ValueError(f"TwoStageForest.fit: X has {len(X)} rows but y has {len(y)}")
        mag = magnetic_labels(y, self.threshold)
        if mag.sum() < 2 or (~mag).sum() < 1:
            raise ValueError(f"TwoStageForest.fit: need both classes at threshold {self.threshold} μB/atom "
                             f"(got {int(mag.sum())} magnetic of {len(y)})")
        X = np.asarray(X, dtype=float)
        self.classifier_ = RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.seed,
                                                  n_jobs=self.n_jobs, max_features="sqrt").fit(X, mag)
        self.regressor_ = fit_random_forest(X[mag], y[mag], n_estimators=self.n_estimators, seed=self.seed,
                                            n_jobs=self.n_jobs)
        return self

    def predict(self, X):
        """``(moment (n,), p_magnetic (n,))``."""
        X = np.asarray(X, dtype=float)
        p = self.classifier_.predict_proba(X)[:, list(self.classifier_.classes_).index(True)]
        return self.regressor_.predict(X), p


def ensemble_predictions(predictions: dict[str, tuple[Sequence[float], Sequence[float]]]):
    """Combine the models' ``(moment, p_magnetic)``: a DataFrame with one column per model and stage (``moment
    <name>``, ``p <name>``), the means ``p_magnetic`` and ``moment``, and the error bar ``spread`` (the standard
    deviation of the models' moments, ``ddof=0``) and ``range`` (max - min).
    """
    import pandas as pd

    if len(predictions) < 2:
        raise ValueError("ensemble_predictions: needs the (moment, p_magnetic) of at least two models")
    df = pd.DataFrame()
    n = None
    for name, pair in predictions.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"ensemble_predictions: {name!r} must map to a pair (moment, p_magnetic)")
        m, p = _arr(pair[0], f"moment of {name!r}"), _arr(pair[1], f"p_magnetic of {name!r}")
        if n is None:
            n = m.size
        if m.size != n or p.size != n:
            raise ValueError(f"ensemble_predictions: {name!r} has {m.size} moments / {p.size} probabilities, "
                             f"expected {n}")
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"ensemble_predictions: p_magnetic of {name!r} must lie in [0, 1]")
        df[f"moment {name}"], df[f"p {name}"] = m, p
    M = df[[f"moment {k}" for k in predictions]].to_numpy()
    df["p_magnetic"] = df[[f"p {k}" for k in predictions]].mean(1)
    df["moment"] = M.mean(1)
    df["spread"] = M.std(1)
    df["range"] = M.max(1) - M.min(1)
    return df


def two_stage_screen(p_magnetic: Sequence[float], moment: Sequence[float], k: int, p_cut: float = 0.5) -> np.ndarray:
    """Indices of the screened candidates: among those with ``p_magnetic >= p_cut`` (stage 1), the ``k`` with the
    largest predicted ``moment`` (stage 2), best first. Fewer than ``k`` if fewer pass stage 1.

        >>> two_stage_screen([0.9, 0.2, 0.8, 0.7], [1.0, 5.0, 3.0, 2.0], k=2).tolist()
        [2, 3]
    """
    p, m = _arr(p_magnetic, "p_magnetic"), _arr(moment, "moment")
    if p.shape != m.shape:
        raise ValueError(f"two_stage_screen: p_magnetic has {p.size} values but moment has {m.size}")
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= p.size):
        raise ValueError(f"two_stage_screen: k must be an int in 1..{p.size}, got {k!r}")
    if not 0 <= p_cut <= 1:
        raise ValueError(f"two_stage_screen: p_cut must be a probability in [0, 1], got {p_cut!r}")
    passing = np.where(p >= p_cut)[0]
    return passing[np.argsort(-m[passing], kind="stable")][:k]


def precision_recall(y_true: Sequence[float], selected: Sequence[int], large: float) -> dict[str, float]:
    """Of the ``selected`` candidates, the fraction with ``y_true >= large`` (precision) and the fraction of all
    ``y_true >= large`` that were selected (recall); ``base_rate`` is the precision of a random pick.

        >>> precision_recall([3.0, 0.1, 2.5, 0.2], [0, 1], large=2.0)
        {'precision': 0.5, 'recall': 0.5, 'base_rate': 0.5, 'n_large': 2, 'k': 2}
    """
    y = _arr(y_true, "y_true")
    sel = np.asarray(selected, dtype=int).reshape(-1)
    if sel.size and (sel.min() < 0 or sel.max() >= y.size):
        raise ValueError(f"precision_recall: selected holds indices outside 0..{y.size - 1}")
    is_large = y >= large
    hits = int(is_large[sel].sum()) if sel.size else 0
    return {"precision": hits / sel.size if sel.size else 0.0,
            "recall": hits / int(is_large.sum()) if is_large.any() else float("nan"),
            "base_rate": float(is_large.mean()), "n_large": int(is_large.sum()), "k": int(sel.size)}


def coverage(y_true: Sequence[float], mean: Sequence[float], spread: Sequence[float],
             ks: Sequence[float] = (1.0, 2.0)) -> dict[float, float]:
    """Calibration of an error bar: for each ``k`` the fraction of items with ``|y - mean| <= k * spread``.

    A Gaussian error bar of the right size covers 68% at k = 1 and 95% at k = 2; less means over-confident.

        >>> coverage([1.0, 2.0, 3.0], [1.1, 2.5, 3.0], [0.2, 0.2, 0.1], ks=[1, 3])
        {1: 0.6666666666666666, 3: 1.0}
    """
    y, m, s = _arr(y_true, "y_true"), _arr(mean, "mean"), _arr(spread, "spread")
    if not (y.shape == m.shape == s.shape):
        raise ValueError(f"coverage: y_true, mean and spread need the same length, got {y.size}, {m.size}, {s.size}")
    if s.min() < 0:
        raise ValueError("coverage: spread must be >= 0")
    err = np.abs(y - m)
    return {k: float(np.mean(err <= k * s)) for k in ks}


def bootstrap_lower(values: Sequence[float], q: float = 0.05, n_boot: int = 2000, seed: int = 0) -> float:
    """The ``q`` quantile of the bootstrap distribution of ``mean(values)``: a one-sided lower bound of the mean
    that accounts for how few candidates a short list holds."""
    v = _arr(values, "values")
    if not 0 < q < 1:
        raise ValueError(f"bootstrap_lower: q must be in (0, 1), got {q!r}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    return float(np.quantile(means, q))


def composition_variance_share(y: Sequence[float], formulas: Sequence[str]) -> dict[str, float]:
    """How much of the label varies between polymorphs: over the formulas that occur in several structures,
    ``within_std`` (pooled standard deviation inside a formula), ``total_std`` (of the same crystals) and
    ``structure_share = within_var / total_var`` (0: the composition fixes the moment; 1: only structure matters).
    """
    import pandas as pd

    y = _arr(y, "y")
    if len(formulas) != y.size:
        raise ValueError(f"composition_variance_share: {len(formulas)} formulas for {y.size} labels")
    df = pd.DataFrame({"y": y, "f": list(formulas)})
    counts = df["f"].map(df["f"].value_counts())
    poly = df[counts > 1]
    if poly.empty:
        return {"n_formulas": 0, "n_crystals": 0, "within_std": float("nan"), "total_std": float("nan"),
                "structure_share": float("nan")}
    within = float(((poly["y"] - poly.groupby("f")["y"].transform("mean")) ** 2).mean())
    total = float(poly["y"].var(ddof=0))
    return {"n_formulas": int(poly["f"].nunique()), "n_crystals": int(len(poly)), "within_std": within ** 0.5,
            "total_std": total ** 0.5, "structure_share": within / total if total > 0 else float("nan")}


def supercell_site_map(structure, supercell) -> np.ndarray:
    """For each site of ``supercell`` (a supercell of ``structure``), the index of the cell site it repeats.

    Found from positions (the supercell's Cartesian position in the cell's fractional coordinates, modulo 1),
    so it works whatever order pymatgen lists the supercell's sites in. Raises ValueError if a site has no match.
    """
    frac = np.mod(structure.lattice.get_fractional_coords(supercell.cart_coords), 1.0)
    ref = np.mod(structure.frac_coords, 1.0)
    d = frac[:, None, :] - ref[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ structure.lattice.matrix, axis=-1)
    idx = dist.argmin(1)
    same = [supercell[j].species_string == structure[i].species_string for j, i in enumerate(idx)]
    if dist[np.arange(len(idx)), idx].max() > 1e-3 or not all(same):
        raise ValueError("supercell_site_map: supercell is not a supercell of structure (a site has no match)")
    return idx


def cell_choice_errors(model: torch.nn.Module, structure, *, cutoff: float, scaling=(2, 1, 1), seed: int = 0,
                       max_neighbors: int | None = 12) -> dict[str, float]:
    """How much a graph network's per-atom representations and crystal prediction depend on the choice of cell.

    The model (a copy in float64, eval mode) is run on ``structure``, on its ``scaling`` supercell and on the cell
    with its sites shuffled (``seed``). Returned relative errors (:func:`symviz.equivariance.relative_error`):

    * ``atoms_supercell``: per-atom features of the supercell vs the features of the cell site each one repeats;
    * ``crystal_supercell``: the crystal's prediction (moment per atom, intensive) on the supercell vs the cell;
    * ``atoms_permutation``: per-atom features of the shuffled cell vs the shuffled features of the cell;
    * ``crystal_permutation``: the prediction on the shuffled cell vs the cell.

    All four are ~1e-15 for a network built from distances, sums and means over atoms (CGCNN, MEGNet).
    ``model`` is a :class:`~symviz.nn.cgcnn.CGCNN`, a :class:`~symviz.nn.megnet.MEGNet` or a wrapper with ``.net``.
    """
    import copy

    from pymatgen.core import Structure

    from symviz.data.crystal_graph import collate_graphs, structures_to_graphs
    from symviz.equivariance import relative_error

    if not isinstance(structure, Structure):
        raise TypeError(f"cell_choice_errors: structure must be a pymatgen Structure, got {type(structure).__name__}")
    net = copy.deepcopy(model).double().eval().cpu()
    core = getattr(net, "net", net)
    if not hasattr(core, "atom_features"):
        raise ValueError("cell_choice_errors: model (or model.net) needs an atom_features(batch) method")
    sup = structure * tuple(scaling)
    perm = np.random.default_rng(seed).permutation(len(structure))
    shuffled = Structure(structure.lattice, [structure.species[i] for i in perm], structure.frac_coords[perm])
    graphs = structures_to_graphs([structure, sup, shuffled], cutoff=cutoff, max_neighbors=max_neighbors)
    with torch.no_grad():
        outs = [(core.atom_features(b), net(b)) for b in (collate_graphs([g]) for g in graphs)]
    (h, y), (h_sup, y_sup), (h_perm, y_perm) = outs
    site = torch.as_tensor(supercell_site_map(structure, sup))
    return {"atoms_supercell": float(relative_error(h_sup - h[site], h[site])),
            "crystal_supercell": float(relative_error(y_sup - y, y)),
            "atoms_permutation": float(relative_error(h_perm - h[torch.as_tensor(perm)], h[torch.as_tensor(perm)])),
            "crystal_permutation": float(relative_error(y_perm - y, y))}


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count one half), from the ranks (Mann–Whitney U).

        >>> roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
        0.875
    """
    from scipy.stats import rankdata

    lab = np.asarray(labels, dtype=bool).reshape(-1)
    s = _arr(scores, "scores")
    if lab.shape != s.shape:
        raise ValueError(f"roc_auc: {lab.size} labels for {s.size} scores")
    n1 = int(lab.sum())
    n0 = lab.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("roc_auc: needs at least one positive and one negative label")
    ranks = rankdata(s)
    return float((ranks[lab].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_gaps(labels: Sequence[bool], scores: dict[str, Sequence[float]], n_boot: int = 1000, q: float = 0.05,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Are several classifiers comparable? Paired bootstrap of each one's ROC AUC gap to the best one.

    ``best`` is the model with the largest AUC on all items; for every model ``m``, the items are resampled
    ``n_boot`` times (the same resamples for all models) and ``gap = AUC_best - AUC_m`` recomputed. Returns
    ``{m: {"auc", "gap", "gap_lower"}}`` with ``gap_lower`` the ``q`` quantile of the bootstrap gaps: a
    ``gap_lower <= 0`` says the gap is within the noise of this many items (``0`` for the best model itself).
    """
    from scipy.stats import rankdata

    lab = np.asarray(labels, dtype=bool).reshape(-1)
    if len(scores) < 2:
        raise ValueError("auc_gaps: needs the scores of at least two models")
    if not 0 < q < 1:
        raise ValueError(f"auc_gaps: q must be in (0, 1), got {q!r}")
    S = {}
    for name, s in scores.items():
        s = _arr(s, f"scores[{name!r}]")
        if s.shape != lab.shape:
            raise ValueError(f"auc_gaps: {name!r} has {s.size} scores for {lab.size} labels")
        S[name] = s
    auc = {name: roc_auc(lab, s) for name, s in S.items()}
    best = max(auc, key=auc.get)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, lab.size, size=(n_boot, lab.size))
    L = lab[idx]
    n1 = L.sum(1)
    ok = (n1 > 0) & (n1 < lab.size)  # resamples with both classes

    def boot_auc(s):
        r = rankdata(s[idx], axis=1)
        return ((r * L).sum(1) - n1 * (n1 + 1) / 2) / np.maximum(n1 * (lab.size - n1), 1)

    ref = boot_auc(S[best])
    out = {}
    for name, s in S.items():
        gaps = (ref - boot_auc(s))[ok]
        out[name] = {"auc": auc[name], "gap": auc[best] - auc[name],
                     "gap_lower": 0.0 if name == best else float(np.quantile(gaps, q))}
    return out
