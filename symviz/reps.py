"""Representations of finite groups on flat feature vectors, and the equivariant linear maps between them.

A representation acts on **flat feature vectors** ``x: (..., d)`` as ``x @ ρ(g).T``; a permutation
representation is stored as gather indices ``p`` with ``(g·x)[i] = x[p[i]]`` (the convention of
:mod:`symviz.groups`). A :class:`SumRep` is a direct sum with multiplicities, laid out block after block,
each block channel-major. :func:`equivariant_basis` solves ``ρ_out(g) W = W ρ_in(g)`` for every generator
(Finzi, Welling and Wilson, ICML 2021, arXiv:2104.09459), as a null space or, for permutation
representations, as the maps constant on the orbits of G on index pairs.

Core module: imports only torch, numpy and :mod:`symviz.groups`. The E-MLPs built on it live in
:mod:`symviz.nn.emlp`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from symviz.groups import FiniteGroup, PermutationGroup

__all__ = ["PermutationGroup", "graph_automorphism_group", "generators", "Representation", "SumRep", "as_sumrep",
           "equivariant_basis", "fixed_basis", "stabilizer_elements"]


# ----------------------------------------------------------------------------------------------
# Groups given by permutations
# ----------------------------------------------------------------------------------------------

def graph_automorphism_group(adjacency, name: str = "Aut") -> PermutationGroup:
    """The automorphism group of an undirected graph given by its ``(n, n)`` adjacency matrix.

    >>> from symviz.equivariance import cycle_graph
    >>> graph_automorphism_group(cycle_graph(5)).order            # D5
    10
    """
    import networkx as nx
    from networkx.algorithms.isomorphism import GraphMatcher

    A = np.asarray(adjacency.cpu() if torch.is_tensor(adjacency) else adjacency)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.allclose(A, A.T):
        raise ValueError(f"adjacency must be a symmetric (n, n) matrix, got shape {A.shape}")
    graph = nx.from_numpy_array((A != 0).astype(int))
    n = A.shape[0]
    perms = []
    for m in GraphMatcher(graph, graph).isomorphisms_iter():
        # m maps node u -> m[u]; as a gather permutation: (g·x)[m[u]] = x[u]
        p = [0] * n
        for u, v in m.items():
            p[v] = u
        perms.append(p)
    return PermutationGroup(perms, name=name)


def generators(group: FiniteGroup) -> list[int]:
    """A small generating set of ``group`` (greedy: add an element whenever it is not yet generated).

    >>> from symviz.groups import DihedralGroup
    >>> len(generators(DihedralGroup(6)))
    2
    """
    table = group.table
    span = {0}
    gens: list[int] = []
    # try elements in order of decreasing order of the element: big cycles generate more
    def elem_order(g):
        k, x = 1, g
        while x != 0:
            x, k = int(table[x, g]), k + 1
        return k
    for g in sorted(range(1, group.order), key=lambda g: (-elem_order(g), g)):
        if g in span:
            continue
        gens.append(g)
        frontier = list(span)
        span = set(span)
        while frontier:  # right multiplication by the generators closes a finite subgroup
            new = []
            for a in frontier:
                for s in gens:
                    c = int(table[a, s])
                    if c not in span:
                        span.add(c)
                        new.append(c)
            frontier = new
        if len(span) == group.order:
            break
    return gens


# ----------------------------------------------------------------------------------------------
# Representations
# ----------------------------------------------------------------------------------------------

class Representation:
    """A representation ``ρ: G → GL(d)`` of a finite group, given on every element.

    Args:
        group: a :class:`symviz.groups.FiniteGroup`.
        matrices: ``(order, d, d)``, ``matrices[g] = ρ(g)``; or None when ``perms`` is given.
        perms: ``(order, d)`` gather permutations (a permutation representation).
        check: verify that ``ρ`` is a homomorphism: ``ρ(e) = I`` and ``ρ(a)ρ(s) = ρ(a·s)`` for every
            element ``a`` and generator ``s`` (enough by induction). Raises ``ValueError`` otherwise.

    >>> from symviz.groups import CyclicGroup
    >>> C3 = CyclicGroup(3)
    >>> Representation.regular(C3).dim, Representation(C3, C3.matrices()).dim
    (3, 2)
    >>> Representation(C3, C3.matrices().flip(0))             # g -> ρ(-g) reversed: not a homomorphism
    Traceback (most recent call last):
    ...
    ValueError: matrices: not a representation of C3: rho(e) is not the identity (max deviation 1.5)
    """

    def __init__(self, group: FiniteGroup, matrices: torch.Tensor | None = None, perms: torch.Tensor | None = None,
                 name: str = "rho", check: bool = True, tol: float = 1e-8):
        if not isinstance(group, FiniteGroup):
            raise TypeError(f"group must be a symviz.groups.FiniteGroup, got {type(group).__name__}")
        self.group, self.name = group, name
        order = group.order
        if perms is not None:
            perms = torch.as_tensor(perms, dtype=torch.long)
            if perms.ndim != 2 or perms.shape[0] != order:
                raise ValueError(f"perms must be ({order}, d) gather permutations (one per group element), got {tuple(perms.shape)}")
            d = perms.shape[1]
            if not (perms.sort(-1).values == torch.arange(d)).all():
                raise ValueError("perms: every row must be a permutation of 0..d-1")
            self.perms = perms
            mats = torch.zeros(order, d, d, dtype=torch.float64)
            mats.scatter_(2, perms.unsqueeze(-1), 1.0)
            self.matrices = mats
        else:
            if matrices is None:
                raise ValueError("give either matrices (order, d, d) or perms (order, d)")
            matrices = torch.as_tensor(matrices).to(torch.float64)
            if matrices.ndim != 3 or matrices.shape[0] != order or matrices.shape[1] != matrices.shape[2]:
                raise ValueError(f"matrices must be ({order}, d, d), one square matrix per element of {group.name}, "
                                 f"got {tuple(matrices.shape)}")
            self.matrices = matrices
            self.perms = _as_perms(matrices)
        self.dim = int(self.matrices.shape[-1])
        if check:
            self._check_homomorphism(tol)

    def _check_homomorphism(self, tol: float) -> None:
        G = self.group
        d = self.dim
        dev = float((self.matrices[0] - torch.eye(d, dtype=torch.float64)).abs().max()) if d else 0.0
        if dev > tol:
            raise ValueError(f"matrices: not a representation of {G.name}: rho(e) is not the identity (max deviation {dev:.2g})")
        gens = generators(G)
        for s in gens:
            if self.perms is not None:
                # (ρ(a)ρ(s))[i, :] picks p_s[p_a[i]]
                lhs = self.perms[s][self.perms]  # row a: p_s[p_a[i]], the gather indices of ρ(a)ρ(s)
                rhs = self.perms[torch.as_tensor(G.table[:, s])]
                bad = (lhs != rhs).any(-1)
                if bad.any():
                    a = int(torch.nonzero(bad)[0])
                    raise ValueError(f"matrices: not a representation of {G.name}: rho({a}) rho({s}) != rho({a}·{s}) = rho({G.table[a, s]})")
            else:
                lhs = self.matrices @ self.matrices[s]
                rhs = self.matrices[torch.as_tensor(G.table[:, s])]
                err = (lhs - rhs).abs().amax((-1, -2))
                if float(err.max()) > tol:
                    a = int(err.argmax())
                    raise ValueError(f"matrices: not a representation of {G.name}: rho({a}) rho({s}) != rho({a}·{s}) "
                                     f"(max deviation {float(err.max()):.2g})")

    # constructors -----------------------------------------------------------------------------
    @classmethod
    def regular(cls, group: FiniteGroup) -> "Representation":
        """The regular representation on ``R^|G|``: ``ρ(a) e_b = e_{a·b}``."""
        inv = np.array([group.inverse(a) for a in group.elements])
        # (ρ(a) x)[i] = x[a⁻¹·i]
        perms = torch.as_tensor(group.table[inv, :])
        return cls(group, perms=perms, name="regular", check=False)

    @classmethod
    def trivial(cls, group: FiniteGroup, dim: int = 1) -> "Representation":
        return cls(group, perms=torch.arange(dim).repeat(group.order, 1), name="trivial", check=False)

    @classmethod
    def from_group_vertices(cls, group: FiniteGroup, name: str = "vertices") -> "Representation":
        """The permutation representation of a group acting on vertices/nodes (``vertex_permutation`` or
        ``permutation`` of the group)."""
        fn = getattr(group, "vertex_permutation", None) or getattr(group, "permutation", None)
        if fn is None:
            raise ValueError(f"{group!r} has no vertex_permutation/permutation: pass perms to Representation")
        return cls(group, perms=torch.stack([fn(g) for g in group.elements]), name=name)

    @classmethod
    def on_edges(cls, group: FiniteGroup, edges: Sequence[tuple[int, int]], name: str = "edges") -> "Representation":
        """The permutation representation on the undirected ``edges`` of a graph that ``group`` permutes
        as nodes: ``(g·w)[(u, v)] = w[(p[u], p[v])]``."""
        node = cls.from_group_vertices(group)
        index = {}
        for e, (u, v) in enumerate(edges):
            index[(int(u), int(v))] = e
            index[(int(v), int(u))] = e
        perms = []
        for g in group.elements:
            p = node.perms[g].tolist()
            try:
                perms.append([index[(p[u], p[v])] for u, v in edges])
            except KeyError as exc:
                raise ValueError(f"edges: element {g} of {group.name} does not map the edge set to itself") from exc
        return cls(group, perms=torch.tensor(perms), name=name)

    # action -----------------------------------------------------------------------------------
    @property
    def is_permutation(self) -> bool:
        return self.perms is not None

    def __call__(self, g: int) -> torch.Tensor:
        return self.matrices[self.group._check(g)]

    def act(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """``ρ(g)`` applied to features ``x: (..., d)`` (row layout: ``x @ ρ(g).T``)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.name} acts on (..., {self.dim}) features, got shape {tuple(x.shape)}")
        g = self.group._check(g)
        if self.perms is not None:
            return x[..., self.perms[g].to(x.device)]
        return x @ self.matrices[g].to(x).T

    def __mul__(self, channels: int) -> "SumRep":
        return SumRep([(self, channels)])

    __rmul__ = __mul__

    def __add__(self, other) -> "SumRep":
        return as_sumrep(self) + as_sumrep(other)

    def __repr__(self) -> str:
        return f"Representation({self.name} of {self.group.name}, dim={self.dim})"


def _as_perms(matrices: torch.Tensor) -> torch.Tensor | None:
    """Gather permutations if every matrix is a 0/1 permutation matrix, else None."""
    if not bool(((matrices == 0) | (matrices == 1)).all()):
        return None
    if not (bool((matrices.sum(-1) == 1).all()) and bool((matrices.sum(-2) == 1).all())):
        return None
    return matrices.argmax(-1)


class SumRep:
    """A direct sum ``⊕_i ρ_i^{⊕ c_i}`` of representations with multiplicities (channels).

    Features are laid out block by block, each block ``(c_i, dim_i)`` flattened channel-major.

    >>> from symviz.groups import CyclicGroup
    >>> C4 = CyclicGroup(4)
    >>> rep = Representation.from_group_vertices(C4) + 3 * Representation.regular(C4)
    >>> rep.dim, rep.is_permutation
    (16, True)
    """

    def __init__(self, blocks: Sequence[tuple[Representation, int]]):
        blocks = [(r, int(c)) for r, c in blocks]
        if not blocks:
            raise ValueError("SumRep needs at least one (Representation, channels) block")
        for r, c in blocks:
            if not isinstance(r, Representation):
                raise TypeError(f"SumRep blocks are (Representation, channels), got {type(r).__name__}")
            if c < 1:
                raise ValueError(f"channels must be positive, got {c} for {r.name}")
        G = blocks[0][0].group
        if any(r.group is not G for r, _ in blocks):
            raise ValueError("all blocks of a SumRep must represent the same group object")
        self.blocks, self.group = blocks, G
        self.dim = sum(r.dim * c for r, c in blocks)

    @property
    def is_permutation(self) -> bool:
        return all(r.is_permutation for r, _ in self.blocks)

    def matrix(self, g: int) -> torch.Tensor:
        """The block-diagonal ``(dim, dim)`` matrix of ``g``."""
        mats = []
        for r, c in self.blocks:
            mats += [r(g)] * c
        return torch.block_diag(*mats)

    def matrices(self) -> torch.Tensor:
        """``(order, dim, dim)`` for all elements."""
        return torch.stack([self.matrix(g) for g in self.group.elements])

    def act(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """Apply ``g`` to features ``x: (..., dim)``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"this representation acts on (..., {self.dim}) features, got shape {tuple(x.shape)}")
        out, start = [], 0
        lead = x.shape[:-1]
        for r, c in self.blocks:
            part = x[..., start:start + r.dim * c].reshape(*lead, c, r.dim)
            out.append(r.act(g, part).reshape(*lead, c * r.dim))
            start += r.dim * c
        return torch.cat(out, -1)

    def __add__(self, other) -> "SumRep":
        return SumRep(self.blocks + as_sumrep(other).blocks)

    def __repr__(self) -> str:
        return "SumRep(" + " + ".join(f"{c}x{r.name}" for r, c in self.blocks) + f", dim={self.dim})"


def as_sumrep(rep) -> SumRep:
    if isinstance(rep, SumRep):
        return rep
    if isinstance(rep, Representation):
        return SumRep([(rep, 1)])
    raise TypeError(f"expected a Representation or SumRep, got {type(rep).__name__}")


# ----------------------------------------------------------------------------------------------
# Equivariant linear maps
# ----------------------------------------------------------------------------------------------

def _orbit_labels(pairs_perm: list[np.ndarray], size: int) -> np.ndarray:
    """Union-find labels of ``range(size)`` under the maps ``i -> perm[i]`` (one per generator)."""
    parent = np.arange(size)

    def find(i):
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for perm in pairs_perm:
        for i in range(size):
            a, b = find(i), find(int(perm[i]))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(size)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def equivariant_basis(rep_in: Representation, rep_out: Representation, method: str = "auto",
                      tol: float = 1e-7) -> torch.Tensor:
    """A basis ``(K, d_out, d_in)`` of the solutions of ``ρ_out(g) W = W ρ_in(g)`` for all ``g``.

    ``method="svd"``: the null space of the stacked constraints ``(ρ_out(g) ⊗ I − I ⊗ ρ_in(g)ᵀ) vec W = 0``
    over a generating set (row-major ``vec``), orthonormal in the Frobenius inner product.
    ``method="orbits"`` (both representations permutation ones): the indicator matrices of the orbits
    of ``G`` on index pairs ``(i, j)``, normalised. ``"auto"`` picks orbits when possible.

    >>> from symviz.groups import DihedralGroup
    >>> D5 = DihedralGroup(5)
    >>> nodes = Representation.from_group_vertices(D5)
    >>> equivariant_basis(nodes, nodes).shape[0]            # orbits of D5 on pairs of pentagon vertices
    3
    >>> equivariant_basis(nodes, nodes, method="svd").shape[0]
    3
    """
    if not isinstance(rep_in, Representation) or not isinstance(rep_out, Representation):
        raise TypeError("equivariant_basis(rep_in, rep_out) takes two Representation objects")
    if rep_in.group is not rep_out.group:
        raise ValueError("rep_in and rep_out must represent the same group object")
    if method not in ("auto", "svd", "orbits"):
        raise ValueError(f"method must be 'auto', 'svd' or 'orbits', got {method!r}")
    G = rep_in.group
    gens = generators(G) or [0]
    di, do = rep_in.dim, rep_out.dim
    if method == "orbits" or (method == "auto" and rep_in.is_permutation and rep_out.is_permutation):
        if not (rep_in.is_permutation and rep_out.is_permutation):
            raise ValueError("method='orbits' needs two permutation representations")
        maps = []
        for s in gens:
            po, pi = rep_out.perms[s].numpy(), rep_in.perms[s].numpy()
            # W[po[i], pi[j]] = W[i, j]: the pair (i, j) is linked to (po[i], pi[j])
            maps.append((po[:, None] * di + pi[None, :]).reshape(-1))
        labels = _orbit_labels(maps, do * di)
        K = int(labels.max()) + 1
        basis = torch.zeros(K, do * di, dtype=torch.float64)
        basis[torch.as_tensor(labels), torch.arange(do * di)] = 1.0
        basis = basis / basis.norm(dim=1, keepdim=True)
        return basis.reshape(K, do, di)
    cons = []
    for s in gens:
        A, B = rep_out(s), rep_in(s)
        cons.append(torch.kron(A, torch.eye(di, dtype=torch.float64)) - torch.kron(torch.eye(do, dtype=torch.float64), B.T.contiguous()))
    C = torch.cat(cons, 0)
    _, S, Vh = torch.linalg.svd(C, full_matrices=True)
    s_full = torch.zeros(Vh.shape[0], dtype=torch.float64)
    s_full[:S.numel()] = S
    scale = max(float(S.max()) if S.numel() else 1.0, 1.0)
    null = Vh[s_full <= tol * scale]
    return null.reshape(-1, do, di)


def fixed_basis(rep: Representation) -> torch.Tensor:
    """A basis ``(K, d)`` of the vectors fixed by every ``ρ(g)`` (equivariant biases)."""
    return equivariant_basis(Representation.trivial(rep.group), rep)[..., 0]


def stabilizer_elements(x: torch.Tensor, rep, tol: float = 1e-6) -> list[int]:
    """``G_x = {g : ρ(g) x = x}`` for one input ``x: (d,)`` (relative tolerance ``tol``).

    Uses :func:`symviz.equivariance.stabilizer` with the representation's action.

    >>> from symviz.groups import DihedralGroup
    >>> D4 = DihedralGroup(4)
    >>> stabilizer_elements(torch.tensor([1., 0., 1., 0.]), Representation.from_group_vertices(D4))
    [0, 2, 4, 6]
    """
    from symviz.equivariance import stabilizer

    rep = as_sumrep(rep)
    x = torch.as_tensor(x)
    if x.ndim != 1 or x.shape[0] != rep.dim:
        raise ValueError(f"x must be one input of shape ({rep.dim},), got {tuple(x.shape)}")
    return stabilizer(x, rep.group, rep.act, tol=tol)
