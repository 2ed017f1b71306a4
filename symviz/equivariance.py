"""Measuring symmetry: equivariance and invariance errors, stabilizers, symmetric inputs.

A function ``f`` is *equivariant* when ``f(g·x) = g·f(x)`` and *invariant* when ``f(g·x) = f(x)``.
Every error in symviz is **relative**, computed by one function, :func:`relative_error`:
``‖f(g·x) − g·f(x)‖ / (max(‖g·f(x)‖, 1e-3 · scale) + 1e-12)``, so 1e-7 means "equal up to float32
rounding" (1e-15: float64) whatever the scale of the output. The measures here, the violation measures
of :mod:`symviz.nn.emlp` and :func:`symviz.nn.crystal.symmetry_errors` all call it. Points are row
vectors (``x @ R.T``), see :mod:`symviz.groups`.

Declare how each input and output transforms, as e3nn does, and get the worst error over random
group elements::

    >>> import torch
    >>> f = lambda x: x - x.mean(-2, keepdim=True)           # centring is E(3)- and S_n-equivariant
    >>> x = torch.randn(5, 3, dtype=torch.float64)
    >>> rep = check_equivariance(f, (x,), in_kinds=("point",), out_kinds=("node_vector",), group="E(3)xS_n")
    >>> rep.max_error < 1e-12
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from symviz import groups as _g

__all__ = [
    "relative_error", "equivariance_error", "invariance_error", "rot90_invariance_error", "Transform",
    "sample_transform", "check_equivariance", "EquivarianceReport", "stabilizer", "regular_polygon",
    "cycle_graph", "complete_graph", "symmetric_molecule", "KINDS", "GROUPS",
]

EPS = 1e-12
"""Absolute floor added to every denominator of :func:`relative_error` (see there)."""

RELATIVE_FLOOR = 1e-3
"""References smaller than this fraction of the batch's largest one count as that size (see :func:`relative_error`)."""


def relative_error(diff: torch.Tensor, ref: torch.Tensor, dim: int | None = None, *,
                   scale: float | torch.Tensor | None = None, floor: float = RELATIVE_FLOOR) -> torch.Tensor:
    """The relative error that every symmetry measure of symviz reports:

        ``err_i = ‖d_i‖ / (max(‖r_i‖, floor · s) + EPS)``,   ``s = scale`` or, by default, ``max_j ‖r_j‖``

    * **numerator** ``‖d_i‖``: the Euclidean norm of the difference ``d_i`` between what ``f`` gives and
      what the symmetry says it should give (e.g. ``f(g·x_i) − g·f(x_i)``), for item ``i``;
    * **denominator** ``‖r_i‖``: the Euclidean norm of the expected value ``r_i`` (``g·f(x_i)``) of the
      same item, so that the error does not depend on the scale of the output;
    * **floors**: ``‖r_i‖`` is raised to at least ``floor · s`` (1e-3 of the largest reference of the
      batch): an output that should be exactly 0 by symmetry (an equivariant map at a fully symmetric
      input gives ~1e-16 instead of 0) would otherwise turn float rounding into an error of order one;
      ``EPS = 1e-12`` is added so that an all-zero reference (0/0) gives ``‖d‖ · 1e12``, not NaN.

    Items: with ``dim=None`` the whole tensor is one item and the result is a 0-d tensor (then
    ``max(‖r‖, floor·‖r‖) = ‖r‖`` and the error is ``‖d‖ / (‖r‖ + EPS)``); with ``dim`` the norms are
    taken along ``dim`` and each remaining index is an item (e.g. ``d, r: (batch, features)``, ``dim=-1``
    gives one error per input). ``ref``'s norms broadcast against ``diff``'s (``diff`` may carry extra
    leading axes, e.g. one per group element); ``scale`` replaces ``max_j ‖r_j‖``.

    >>> relative_error(torch.tensor([3e-7, 4e-7]), torch.tensor([3.0, 4.0]))     # 5e-7 / 5
    tensor(1.0000e-07)
    >>> relative_error(torch.tensor([[1e-9], [1.0]]), torch.tensor([[1e-16], [10.0]]), dim=-1)
    tensor([1.0000e-07, 1.0000e-01])
    """
    if not torch.is_tensor(diff) or not torch.is_tensor(ref):
        raise TypeError(f"relative_error(diff, ref): both must be tensors, got {type(diff).__name__} and {type(ref).__name__}")
    num = diff.norm() if dim is None else diff.norm(dim=dim)
    den = ref.norm() if dim is None else ref.norm(dim=dim)
    s = den.max() if scale is None else torch.as_tensor(scale, dtype=den.dtype, device=den.device)
    return num / (torch.clamp(den, min=floor * s) + EPS)


def _flat(out: Any) -> torch.Tensor:
    if torch.is_tensor(out):
        return out.reshape(-1).to(torch.float64)
    if isinstance(out, (tuple, list)):
        return torch.cat([_flat(o) for o in out])
    if isinstance(out, dict):
        return torch.cat([_flat(out[k]) for k in sorted(out)])
    return torch.as_tensor(out, dtype=torch.float64).reshape(-1)


def equivariance_error(f: Callable, x: Any, g_in: Callable, g_out: Callable | None = None) -> float:
    """Relative error ``‖f(g_in(x)) − g_out(f(x))‖ / (‖g_out(f(x))‖ + EPS)`` (:func:`relative_error` with
    all of ``f``'s output, every tensor of it flattened, as one item).

    ``x`` is passed to ``f`` as it is (a tensor, or a tuple unpacked as ``f(*x)``); ``g_in`` receives
    ``x`` in the same form and ``g_out`` receives ``f``'s output. ``g_out=None`` means invariance.

    >>> import torch
    >>> x = torch.arange(6.0).reshape(3, 2)
    >>> swap = lambda t: t[[2, 0, 1]]
    >>> equivariance_error(lambda t: 2 * t, x, swap, swap)
    0.0
    """
    if not callable(f) or not callable(g_in) or (g_out is not None and not callable(g_out)):
        raise TypeError("equivariance_error(f, x, g_in, g_out): f, g_in and g_out must be callables")
    call = (lambda a: f(*a)) if isinstance(x, tuple) else f
    with torch.no_grad():
        y = call(x)
        target = y if g_out is None else g_out(y)
        y_moved = call(g_in(x))
        a, b = _flat(y_moved), _flat(target)
        if a.shape != b.shape:
            raise ValueError(f"f(g·x) has {a.numel()} numbers but g·f(x) has {b.numel()}: check g_out")
        return float(relative_error(a - b, b))


def invariance_error(f: Callable, x: Any, g_in: Callable) -> float:
    """Relative error ``‖f(g·x) − f(x)‖ / (‖f(x)‖ + EPS)``."""
    return equivariance_error(f, x, g_in, None)


def rot90_invariance_error(model: Callable, x: torch.Tensor) -> float:
    """How far ``model`` is from C4 invariance on the images ``x: (B, H, W)`` or ``(B, C, H, W)``:

        ``max_{k=1,2,3} ‖f(r^k·x) − f(x)‖ / (‖f(x)‖ + EPS)``

    ``r^k`` rotates every image by ``k``·90° (``torch.rot90`` on the last two axes, exact); the norms are
    taken over the outputs of the whole batch (:func:`invariance_error`, normalised by
    :func:`relative_error`). An exactly invariant model gives float rounding (~1e-7 in float32, often 0:
    canonicalization feeds the backbone bit-identical images); a model that is not invariant gives a
    sizeable fraction of its outputs' norm (0.1 to 1). A module is evaluated in eval mode and its mode is
    restored.

    >>> f = lambda t: t.flatten(1).sort(-1).values               # sorted pixel values: C4-invariant
    >>> rot90_invariance_error(f, torch.rand(2, 1, 4, 4))
    0.0
    """
    if not callable(model):
        raise TypeError(f"rot90_invariance_error: model must be callable, got {type(model).__name__}")
    if not torch.is_tensor(x) or x.ndim not in (3, 4) or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rot90_invariance_error: x must be square images (B, H, W) or (B, C, H, W), "
                         f"got {tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    was = getattr(model, "training", None)
    if was is not None:
        model.eval()
    try:
        return max(invariance_error(model, x, lambda t, k=k: torch.rot90(t, k, dims=(-2, -1))) for k in (1, 2, 3))
    finally:
        if was is not None:
            model.train(was)


# ----------------------------------------------------------------------------------------------
# Declarative checks over random group elements
# ----------------------------------------------------------------------------------------------

@dataclass
class Transform:
    """One sampled element of E(3) × S_n: rotation/reflection ``R`` (3x3), translation ``t`` (3,),
    node permutation ``perm`` (``out[i] = in[perm[i]]``). Missing parts are identities."""

    R: torch.Tensor | None = None
    t: torch.Tensor | None = None
    perm: torch.Tensor | None = None

    def _nodes(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        if self.perm is None:
            return x
        return _g.permute_nodes(self.perm, x, dim)

    def apply(self, kind: str | Callable, x: Any) -> Any:
        """Act on ``x`` according to ``kind`` (see :data:`KINDS`), or call ``kind(self, x)``."""
        if callable(kind):
            return kind(self, x)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)} or a callable (T, x) -> x")
        if not torch.is_tensor(x):
            raise TypeError(f"kind {kind!r} acts on tensors, got {type(x).__name__}")
        R = None if self.R is None else self.R.to(x)
        if kind == "scalar":
            return x
        if kind == "node_scalar":
            return self._nodes(x)
        if kind in ("vector", "node_vector", "point"):
            if x.shape[-1] != 3:
                raise ValueError(f"kind {kind!r} expects (..., 3) row vectors, got shape {tuple(x.shape)}")
            y = x if R is None else x @ R.T
            if kind == "point" and self.t is not None:
                y = y + self.t.to(x)
            return self._nodes(y) if kind != "vector" else y
        if kind in ("node_vector_channels", "point_channels"):
            if x.shape[-2] != 3:
                raise ValueError(f"kind {kind!r} expects (..., n, 3, C), got shape {tuple(x.shape)}")
            y = x if R is None else torch.einsum("ij,...jc->...ic", R, x)
            if kind == "point_channels" and self.t is not None:
                y = y + self.t.to(x)[:, None]
            return self._nodes(y, -3)
        if kind == "matrix":
            if x.shape[-2:] != (3, 3):
                raise ValueError(f"kind 'matrix' expects (..., 3, 3), got {tuple(x.shape)}")
            return x if R is None else R @ x @ R.T
        if kind == "adjacency":
            return x if self.perm is None else _g.permute_adjacency(self.perm, x)
        raise AssertionError(kind)


KINDS = ("scalar", "node_scalar", "vector", "node_vector", "point", "node_vector_channels",
         "point_channels", "matrix", "adjacency")
"""How data transforms: ``scalar`` (invariant), ``node_scalar`` ((..., n, f), permuted),
``vector`` ((..., 3), rotated), ``node_vector`` ((..., n, 3), rotated and permuted), ``point``
(node_vector plus translation), ``*_channels`` ((..., n, 3, C)), ``matrix`` (R M Rᵀ) and
``adjacency`` ((..., n, n), rows and columns permuted)."""

GROUPS = ("SO(3)", "O(3)", "E(3)", "SE(3)", "S_n", "SO(3)xS_n", "O(3)xS_n", "E(3)xS_n", "SE(3)xS_n")


def sample_transform(group: str, n_nodes: int | None = None, dtype=torch.float64,
                     generator: torch.Generator | None = None) -> Transform:
    """A random element of ``group`` (one of :data:`GROUPS`)."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")
    parts = group.split("x")
    T = Transform()
    geo = parts[0] if parts[0] != "S_n" else None
    if geo in ("SO(3)", "SE(3)"):
        T.R = _g.random_rotation(dtype=dtype, generator=generator)
    elif geo in ("O(3)", "E(3)"):
        T.R = _g.random_orthogonal(dtype=dtype, generator=generator)
    if geo in ("E(3)", "SE(3)"):
        T.t = torch.randn(3, dtype=torch.float64, generator=generator).to(dtype)
    if "S_n" in parts:
        if not n_nodes:
            raise ValueError(f"group {group!r} permutes nodes: pass n_nodes")
        T.perm = torch.randperm(n_nodes, generator=generator)
    return T


@dataclass
class EquivarianceReport:
    """Relative errors of one :func:`check_equivariance` run."""

    group: str
    errors: list[float] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max(self.errors) if self.errors else float("nan")

    @property
    def mean_error(self) -> float:
        return sum(self.errors) / len(self.errors) if self.errors else float("nan")

    def assert_below(self, tol: float) -> "EquivarianceReport":
        if not self.max_error <= tol:
            raise AssertionError(f"equivariance under {self.group} violated: max relative error "
                                 f"{self.max_error:.3g} > tol {tol:.3g} (convention: points are row vectors, x @ R.T)")
        return self

    def __repr__(self) -> str:
        return f"EquivarianceReport({self.group}, trials={len(self.errors)}, max={self.max_error:.2e}, mean={self.mean_error:.2e})"


def check_equivariance(f: Callable, args: Sequence[Any], in_kinds: Sequence[str | Callable],
                       out_kinds: Sequence[str | Callable] | str, group: str = "SO(3)", trials: int = 10,
                       dtype: torch.dtype | None = torch.float64, seed: int = 0,
                       n_nodes: int | None = None) -> EquivarianceReport:
    """Relative equivariance error of ``f(*args)`` over ``trials`` random elements of ``group``.

    ``in_kinds[i]`` says how ``args[i]`` transforms, ``out_kinds`` how each output does (a single
    kind for a single tensor output). Floating tensors are cast to ``dtype`` (float64 by default, so
    that errors measure the math rather than float32 rounding; pass ``None`` to keep them).
    ``n_nodes`` is inferred from the first node-carrying argument when omitted.
    """
    args = tuple(args)
    if len(in_kinds) != len(args):
        raise ValueError(f"in_kinds has {len(in_kinds)} entries for {len(args)} args: give one kind per argument")
    if dtype is not None:
        args = tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    single = isinstance(out_kinds, str) or callable(out_kinds)
    outs = (out_kinds,) if single else tuple(out_kinds)
    if n_nodes is None and "S_n" in group:
        for a, k in zip(args, in_kinds):
            if k in ("node_scalar", "node_vector", "point", "adjacency") and torch.is_tensor(a):
                n_nodes = a.shape[-2]
                break
            if k in ("node_vector_channels", "point_channels") and torch.is_tensor(a):
                n_nodes = a.shape[-3]
                break
        if n_nodes is None:
            raise ValueError("cannot infer the number of nodes: pass n_nodes")
    gen = torch.Generator().manual_seed(seed)
    report = EquivarianceReport(group)
    for _ in range(trials):
        T = sample_transform(group, n_nodes, dtype or torch.float64, gen)

        def g_in(a, T=T):
            return tuple(T.apply(k, v) for k, v in zip(in_kinds, a))

        def g_out(y, T=T):
            if single or (len(outs) == 1 and torch.is_tensor(y)):
                return T.apply(outs[0], y)
            if len(y) != len(outs):
                raise ValueError(f"f returned {len(y)} outputs but out_kinds has {len(outs)}")
            return tuple(T.apply(k, v) for k, v in zip(outs, y))

        report.errors.append(equivariance_error(f, args, g_in, g_out))
    return report


# ----------------------------------------------------------------------------------------------
# Stabilizers and symmetric inputs
# ----------------------------------------------------------------------------------------------

def stabilizer(x: torch.Tensor, group: "_g.FiniteGroup", action: Callable | None = None,
               tol: float = 1e-6, as_set: bool = False) -> list[int]:
    """The elements ``g`` of a finite ``group`` with ``g·x = x`` (up to ``tol``, relative).

    ``action(g, x)`` defaults to permuting vertices (``group.act_vertices``) when the group has it.
    ``as_set=True`` compares the rows of ``x: (n, d)`` as an unordered set (a point cloud is the same
    object whatever order its points are listed in).

    >>> from symviz.groups import DihedralGroup
    >>> square = regular_polygon(4)                       # vertices as node features (4, 2)
    >>> D4 = DihedralGroup(4)
    >>> len(stabilizer(square, D4, D4.act_points, as_set=True))  # the square's own symmetry: all of D4
    8
    >>> colours = torch.tensor([[1.0], [0.0], [1.0], [0.0]])    # alternate colouring of the vertices
    >>> stabilizer(colours, D4)                           # rotations by 0, 180 deg and 4 reflections
    [0, 2, 4, 6]
    """
    if not isinstance(group, _g.FiniteGroup):
        raise TypeError(f"stabilizer needs a FiniteGroup (CyclicGroup, DihedralGroup, SymmetricGroup), got {type(group).__name__}")
    if action is None:
        if not hasattr(group, "act_vertices"):
            raise ValueError(f"{group!r} has no default action: pass action(g, x)")
        action = group.act_vertices
    x = torch.as_tensor(x)
    scale = float(x.abs().max()) + EPS

    def distance(y: torch.Tensor) -> float:
        if not as_set:
            return float((y - x).abs().max())
        if x.ndim != 2:
            raise ValueError(f"as_set=True compares rows of an (n, d) point set, got shape {tuple(x.shape)}")
        d = torch.cdist(y.to(torch.float64), x.to(torch.float64))
        return float(max(d.min(0).values.max(), d.min(1).values.max()))

    return [g for g in group.elements if distance(action(g, x)) <= tol * scale]


def regular_polygon(n: int, dim: int = 2, radius: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """Vertices ``(n, dim)`` of a regular n-gon in the xy-plane, vertex i at angle 2πi/n."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"regular_polygon: n must be an integer >= 2, got {n!r}")
    if dim not in (2, 3):
        raise ValueError(f"regular_polygon: dim must be 2 or 3, got {dim!r}")
    ang = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    pts = torch.stack([torch.cos(ang), torch.sin(ang)] + ([torch.zeros(n, dtype=torch.float64)] if dim == 3 else []), -1)
    return (radius * pts).to(dtype)


def cycle_graph(n: int, dtype=torch.float64) -> torch.Tensor:
    """Adjacency matrix ``(n, n)`` of the cycle C_n (symmetry group D_n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"cycle_graph: n must be an integer >= 3, got {n!r}")
    i = torch.arange(n)
    A = torch.zeros(n, n, dtype=dtype)
    A[i, (i + 1) % n] = 1
    A[(i + 1) % n, i] = 1
    return A


def complete_graph(n: int, dtype=torch.float64) -> torch.Tensor:
    """Adjacency matrix of K_n (symmetry group S_n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"complete_graph: n must be an integer >= 2, got {n!r}")
    return (torch.ones(n, n) - torch.eye(n)).to(dtype)


_MOLECULES = {
    # atomic numbers and positions in Å (idealised geometries: the point group is exact)
    "methane": ([6, 1, 1, 1, 1], [[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629],
                                   [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]], "Td"),
    "water": ([8, 1, 1], [[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]], "C2v"),
    "ammonia": ([7, 1, 1, 1], [[0, 0, 0.1162]] + [[0.9377 * math.cos(a), 0.9377 * math.sin(a), -0.2711]
                                                  for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)], "C3v"),
    "benzene": ([6] * 6 + [1] * 6, [[1.39 * math.cos(k * math.pi / 3), 1.39 * math.sin(k * math.pi / 3), 0] for k in range(6)]
                + [[2.47 * math.cos(k * math.pi / 3), 2.47 * math.sin(k * math.pi / 3), 0] for k in range(6)], "D6h"),
}


def symmetric_molecule(name: str, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(atomic_numbers (n,), positions (n, 3) in Å, point group)`` of an idealised symmetric molecule.

    >>> z, pos, pg = symmetric_molecule("benzene")
    >>> pos.shape, pg
    (torch.Size([12, 3]), 'D6h')
    """
    if name not in _MOLECULES:
        raise ValueError(f"unknown molecule {name!r}; available: {', '.join(sorted(_MOLECULES))}")
    z, pos, pg = _MOLECULES[name]
    return torch.tensor(z), torch.tensor(pos, dtype=dtype), pg
