"""Groups and their actions: C_n, D_n, S_n, SO(3)/O(3).

Conventions (used everywhere in symviz and stated in every check):

* Points and vectors are **row vectors**: a rotation ``R`` acts on ``x: (..., n, 3)`` as ``x @ R.T``.
* A permutation ``p`` (a LongTensor with ``p[i]`` = old index of new node ``i``) acts on node
  features ``h: (..., n, f)`` as ``h[..., p, :]``, and on an adjacency matrix as ``A[p][:, p]``.
* Images are ``(..., H, W)``; C_4 acts exactly with ``torch.rot90`` (counter-clockwise), other
  rotations by bilinear interpolation (not exact: corners and pixels are resampled).

Finite groups list their elements as integers ``0 .. order-1`` with ``0`` the identity, and give
``compose``, ``inverse``, a 2-D ``matrix`` representation and a permutation action on the vertices
of a regular polygon.

    >>> D4 = DihedralGroup(4)
    >>> D4.order, D4.compose(1, D4.inverse(1))
    (8, 0)
    >>> all(torch.allclose(D4.matrix(D4.compose(a, b)), D4.matrix(a) @ D4.matrix(b), atol=1e-12)
    ...     for a in range(8) for b in range(8))
    True
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "FiniteGroup", "CyclicGroup", "DihedralGroup", "PermutationGroup", "SymmetricGroup",
    "random_rotation", "random_orthogonal", "rotation_2d", "act_points", "permute_nodes",
    "permute_adjacency", "random_permutation", "rotate_image", "rot90_image", "wigner_D",
]


class FiniteGroup:
    """A finite group given by its Cayley table (elements ``0..order-1``, ``0`` the identity).

    Subclasses add meaning (a matrix representation, a permutation action); ``table[a, b]`` is the
    index of ``a·b`` (apply ``b`` first, then ``a``).
    """

    name = "G"

    def __init__(self, table: np.ndarray, name: str | None = None):
        table = np.asarray(table, dtype=np.int64)
        n = table.shape[0]
        if table.shape != (n, n) or set(np.unique(table)) != set(range(n)):
            raise ValueError(f"a Cayley table must be an (n, n) array of indices 0..n-1, got shape {table.shape}")
        if not (table[0] == np.arange(n)).all():
            raise ValueError("element 0 must be the identity (table[0, b] == b)")
        self.table = table
        if name:
            self.name = name

    @property
    def order(self) -> int:
        return int(self.table.shape[0])

    @property
    def elements(self) -> range:
        return range(self.order)

    @property
    def identity(self) -> int:
        return 0

    def _check(self, g) -> int:
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= int(g) < self.order:
            raise ValueError(f"{self.name}: group elements are integers 0..{self.order - 1}, got {g!r}")
        return int(g)

    def compose(self, a: int, b: int) -> int:
        """``a·b`` (apply ``b`` first)."""
        return int(self.table[self._check(a), self._check(b)])

    def inverse(self, g: int) -> int:
        g = self._check(g)
        return int(np.nonzero(self.table[g] == 0)[0][0])

    def __len__(self) -> int:
        return self.order

    def __repr__(self) -> str:
        return f"{self.name}(order={self.order})"


def rotation_2d(theta: float, dtype=torch.float64) -> torch.Tensor:
    """The 2x2 counter-clockwise rotation matrix by ``theta`` radians."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=dtype)


class _PlanarGroup(FiniteGroup):
    """A finite subgroup of O(2): elements given by 2x2 matrices and vertex permutations of an n-gon."""

    n: int

    def _build(self, mats: list[torch.Tensor], perms: list[list[int]]):
        self._mats = torch.stack(mats)
        self._perms = torch.tensor(perms, dtype=torch.long)
        order = len(mats)
        table = np.zeros((order, order), dtype=np.int64)
        flat = self._mats.reshape(order, -1)
        for a in range(order):
            for b in range(order):
                prod = (self._mats[a] @ self._mats[b]).reshape(-1)
                table[a, b] = int(torch.argmin((flat - prod).abs().sum(-1)))
        FiniteGroup.__init__(self, table)

    def matrix(self, g: int, dtype=torch.float64) -> torch.Tensor:
        """The 2x2 orthogonal matrix of ``g`` (acting on column vectors; use ``x @ M.T`` on rows)."""
        return self._mats[self._check(g)].to(dtype)

    def matrices(self, dtype=torch.float64) -> torch.Tensor:
        """All elements' matrices, ``(order, 2, 2)``."""
        return self._mats.to(dtype)

    def vertex_permutation(self, g: int) -> torch.Tensor:
        """How ``g`` permutes the vertices of the regular n-gon ``regular_polygon(n)``.

        Returned as ``p`` with ``(g·x)[i] = x[p[i]]`` for vertex features ``x: (..., n, f)``.
        """
        return self._perms[self._check(g)].clone()

    def act_points(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """Rotate/reflect planar points ``x: (..., 2)`` (row vectors)."""
        return x @ self.matrix(g, x.dtype).to(x.device).T

    def act_vertices(self, g: int, h: torch.Tensor) -> torch.Tensor:
        """Permute features ``h: (..., n, f)`` living on the n-gon's vertices."""
        if h.shape[-2] != self.n:
            raise ValueError(f"{self.name} acts on {self.n} vertices; got features of shape {tuple(h.shape)}")
        return h[..., self.vertex_permutation(g).to(h.device), :]


class CyclicGroup(_PlanarGroup):
    """C_n: rotations by ``2πk/n``; element ``k``.

    >>> CyclicGroup(6).compose(4, 5)
    3
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"CyclicGroup(n): n must be a positive integer, got {n!r}")
        self.n = int(n)
        self.name = f"C{self.n}"
        # vertex i of the polygon sits at angle 2πi/n; rotating by k moves vertex j to j+k,
        # so the new vertex i carries the old vertex i-k.
        self._build([rotation_2d(2 * math.pi * k / n) for k in range(n)],
                    [[(i - k) % n for i in range(n)] for k in range(n)])

    def act_image(self, g: int, img: torch.Tensor) -> torch.Tensor:
        """Rotate images ``(..., H, W)`` by ``2πg/n`` counter-clockwise (exact when n divides 4)."""
        g = self._check(g)
        if 4 % self.n == 0:
            return rot90_image(img, g * (4 // self.n))
        return rotate_image(img, 2 * math.pi * g / self.n)


class DihedralGroup(_PlanarGroup):
    """D_n (order 2n): element ``k`` is the rotation r^k, ``n + k`` is r^k·m with m the reflection y -> -y.

    >>> D3 = DihedralGroup(3)
    >>> [D3.compose(3, 3), D3.order]
    [0, 6]
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"DihedralGroup(n): n must be a positive integer, got {n!r}")
        self.n = int(n)
        self.name = f"D{self.n}"
        m = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        mats = [rotation_2d(2 * math.pi * k / n) for k in range(n)]
        mats += [rotation_2d(2 * math.pi * k / n) @ m for k in range(n)]
        perms = [[(i - k) % n for i in range(n)] for k in range(n)]
        # r^k m maps vertex j (angle 2πj/n) to vertex k - j
        perms += [[(k - i) % n for i in range(n)] for k in range(n)]
        self._build(mats, perms)


class PermutationGroup(FiniteGroup):
    """The finite group generated by permutations of ``n`` objects (gather convention).

    ``generators``: a list of permutations ``p`` (sequences of ``0..n-1``) with ``(g·x)[i] = x[p[i]]``.
    The composition ``a·b`` (apply ``b`` first) has ``p_ab[i] = p_b[p_a[i]]``, as in
    :class:`symviz.groups.SymmetricGroup`. Element 0 is the identity.

    >>> G = PermutationGroup([[1, 2, 3, 0]])            # rotations of a square: C4
    >>> G.order, G.permutation(1).tolist()
    (4, [1, 2, 3, 0])
    """

    def __init__(self, generators: Sequence[Sequence[int]], name: str = "G", max_order: int = 5000):
        gens = [tuple(int(i) for i in p) for p in generators]
        if not gens:
            raise ValueError("PermutationGroup needs at least one generator (a permutation of 0..n-1)")
        n = len(gens[0])
        for p in gens:
            if len(p) != n or sorted(p) != list(range(n)):
                raise ValueError(f"PermutationGroup: generators must be permutations of 0..{n - 1}, got {list(p)}")
        ident = tuple(range(n))
        perms, index = [ident], {ident: 0}
        frontier = [ident]
        while frontier:
            new = []
            for a in frontier:
                for s in gens:
                    c = tuple(s[a[i]] for i in range(n))  # the element a·s
                    if c not in index:
                        index[c] = len(perms)
                        perms.append(c)
                        new.append(c)
                        if len(perms) > max_order:
                            raise ValueError(f"PermutationGroup: the group has more than max_order={max_order} elements")
            frontier = new
        P = np.array(perms, dtype=np.int64)
        order = len(perms)
        table = np.empty((order, order), dtype=np.int64)
        for a in range(order):
            # p_ab[i] = p_b[p_a[i]]
            comp = P[:, P[a]]  # row b: P[b][P[a]]
            table[a] = [index[tuple(r)] for r in comp]
        self.n = n
        self._perms = torch.as_tensor(P)
        FiniteGroup.__init__(self, table, name=name)

    def permutation(self, g: int) -> torch.Tensor:
        """Gather indices ``p`` of element ``g``: ``(g·x)[i] = x[p[i]]``."""
        return self._perms[self._check(g)].clone()

    def act_vertices(self, g: int, h: torch.Tensor) -> torch.Tensor:
        """Permute node features ``h: (..., n, f)``."""
        if h.shape[-2] != self.n:
            raise ValueError(f"{self.name} acts on {self.n} nodes; got features of shape {tuple(h.shape)}")
        return h[..., self.permutation(g).to(h.device), :]


class SymmetricGroup(PermutationGroup):
    """S_n, all permutations of n objects (n ≤ 7 so that the Cayley table stays small), generated by the
    transposition (0 1) and the n-cycle.

    >>> S3 = SymmetricGroup(3)
    >>> S3.order, S3.permutation(0).tolist()
    (6, [0, 1, 2])
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 7:
            raise ValueError(f"SymmetricGroup(n): n must be an integer in 1..7 (n! elements), got {n!r}")
        n = int(n)
        swap = [1, 0] + list(range(2, n)) if n > 1 else [0]
        cycle = [(i + 1) % n for i in range(n)]
        PermutationGroup.__init__(self, [swap, cycle], name=f"S{n}")


# ----------------------------------------------------------------------------------------------
# Continuous groups and actions
# ----------------------------------------------------------------------------------------------

def random_rotation(n: int | None = None, dtype=torch.float64, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-random SO(3) matrices, ``(3, 3)`` or ``(n, 3, 3)`` (QR of a Gaussian, sign-fixed).

    >>> R = random_rotation(dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64))), round(float(torch.det(R)), 6)
    (True, 1.0)
    """
    shape = (1 if n is None else int(n), 3, 3)
    a = torch.randn(shape, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.det(q)
    q[..., :, 0] *= det.unsqueeze(-1)  # flip one column where det = -1
    q = q.to(dtype)
    return q[0] if n is None else q


def random_orthogonal(n: int | None = None, dtype=torch.float64, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-random O(3) matrices: a random rotation times a random sign (±1, a reflection half the time)."""
    R = random_rotation(n, torch.float64, generator)
    sign = torch.where(torch.rand(() if n is None else (int(n),), generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    return (R * sign.reshape(*sign.shape, *(1, 1)) if n is not None else R * sign).to(dtype)


def wigner_D(l: int, R: torch.Tensor) -> torch.Tensor:
    """Wigner D matrix ``(2l+1, 2l+1)`` of degree ``l`` for rotation matrices ``R`` (e3nn's real basis;
    in e3nn >= 0.6 the l = 1 basis is Cartesian x, y, z, so ``wigner_D(1, R) == R``).

    >>> R = random_rotation(generator=torch.Generator().manual_seed(1))
    >>> bool(torch.allclose(wigner_D(1, R), R, atol=1e-6)), tuple(wigner_D(2, R).shape)
    (True, (5, 5))
    """
    from e3nn import o3

    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must be rotation matrices (..., 3, 3), got {tuple(R.shape)}")
    # e3nn builds its generators in the default dtype: compute in R's precision
    prev = torch.get_default_dtype()
    torch.set_default_dtype(R.dtype if R.dtype in (torch.float32, torch.float64) else prev)
    try:
        return o3.Irrep(l, (-1) ** l).D_from_matrix(R)
    finally:
        torch.set_default_dtype(prev)


def act_points(R: torch.Tensor, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ R.T + t`` for points ``x: (..., n, d)`` (row vectors), ``R: (d, d)``, ``t: (d,)``."""
    if R.shape[-1] != x.shape[-1]:
        raise ValueError(f"R {tuple(R.shape)} does not match points of dimension {x.shape[-1]} (x: (..., n, d))")
    y = x @ R.to(x).transpose(-1, -2)
    return y if t is None else y + t.to(x)


def random_permutation(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def permute_nodes(p: torch.Tensor, h: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Reorder nodes: ``out[i] = h[p[i]]`` along ``dim`` (default -2 for ``(..., n, f)``)."""
    if h.shape[dim] != p.numel():
        raise ValueError(f"permutation of {p.numel()} nodes applied to {h.shape[dim]} nodes (dim={dim})")
    return h.index_select(dim % h.ndim, p.to(h.device))


def permute_adjacency(p: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``A[p][:, p]`` for ``A: (..., n, n)``."""
    return permute_nodes(p, permute_nodes(p, A, -2), -1)


def rot90_image(img: torch.Tensor, k: int) -> torch.Tensor:
    """Exact counter-clockwise rotation by ``k·90°`` of images ``(..., H, W)``."""
    return torch.rot90(img, int(k) % 4, dims=(-2, -1))


def rotate_image(img: torch.Tensor, theta, mode: str = "bilinear") -> torch.Tensor:
    """Rotate images ``(..., H, W)`` counter-clockwise by ``theta`` radians (scalar or per-image
    ``(B,)``) about their centre, by interpolation (zeros outside). Not exact unless theta is a
    multiple of π/2; use :func:`rot90_image` then."""
    import torch.nn.functional as F

    if img.ndim < 2:
        raise ValueError(f"images must be (..., H, W), got shape {tuple(img.shape)}")
    lead = img.shape[:-2]
    H, W = img.shape[-2:]
    flat = img.reshape(-1, 1, H, W)
    B = flat.shape[0]
    theta = torch.as_tensor(theta, dtype=img.dtype, device=img.device).reshape(-1)
    if theta.numel() == 1:
        theta = theta.expand(B)
    elif theta.numel() != B:
        raise ValueError(f"theta must be a scalar or one angle per image ({B}), got {theta.numel()}")
    c, s = torch.cos(theta), torch.sin(theta)
    # affine_grid maps output coords to input coords; image y axis points down, so a CCW rotation
    # on screen uses the matrix [[c, -s], [s, c]] in (x, y_down) grid coordinates applied inversely.
    A = torch.zeros(B, 2, 3, dtype=img.dtype, device=img.device)
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = c, -s, s, c
    grid = F.affine_grid(A, (B, 1, H, W), align_corners=False)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.reshape(*lead, H, W)
