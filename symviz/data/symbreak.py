"""Tasks whose inputs are symmetric but whose answers are not (Kaba & Ravanbakhsh, arXiv:2312.09016).

Each task gives inputs ``x: (N, d_in)`` in a representation of a finite group ``G``, an
**orbit-invariant** loss (it does not care which of the symmetry-related answers a model picks), the
floor that every equivariant model hits on symmetric inputs, and the best achievable loss:

* ``spin_ring``    physics: antiferromagnetic Ising ring ``E(s) = J Σ s_i s_{i+1} − Σ h_i s_i`` under
  ``D_n``. Loss = energy per site of ``s = tanh(output)`` (invariant, so any ground state is right).
  A uniform field has stabilizer ``D_n``; an equivariant model must output a uniform ``s`` and cannot
  reach the two Néel ground states.
* ``node_pick``    graphs: pick a node of maximal score on the cycle ``C_n`` (group ``D_n``). Loss =
  ``−log max_{i ∈ argmax} p_i``. On a symmetric input, an equivariant model spreads ``p`` evenly over
  an orbit of ``G_x``: floor ``log |smallest orbit of G_x inside the argmax set|``.
* ``max_cut``      combinatorial optimisation: max-cut of the Petersen graph (``Aut = S_5``, 120
  elements) with edge weights ``w``. Loss = ``−cut(s)/Σw`` with ``cut(s) = Σ_(ij) w_ij (1 − s_i s_j)/2``.
  Uniform weights: an equivariant model outputs a constant ``s``, cutting at most half the weight;
  the maximum cut is 12 of 15 edges.
* ``decoding``     equivariant decoding: decode a latent ``z ∈ R²`` (``D_n`` rotating/reflecting the
  plane) into 4 ordered points, an arrow pointing along ``z``. The symmetric latent ``z = 0`` must
  decode into an arrow pointing along any of the ``n`` mirror axes, but an equivariant decoder can
  only output the ``D_n``-fixed point set: all points at the origin.

The loss of a task is ``task.loss(out, x) -> (B,)`` on raw model outputs ``out: (B, d_out)``.

    >>> task = spin_ring(n=6, n_train=8, n_test=4, seed=0)
    >>> task.x_train.shape, task.x_sym.shape, task.group.order
    (torch.Size([8, 6]), torch.Size([4, 6]), 12)
    >>> bool((task.floor >= task.optimum).all())
    True
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from symviz.groups import DihedralGroup, FiniteGroup
from symviz.reps import Representation, SumRep, graph_automorphism_group, stabilizer_elements

__all__ = ["SymBreakTask", "spin_ring", "node_pick", "max_cut", "decoding", "make_task", "TASKS",
           "ising_energy", "ground_states", "cut_value", "arrow_shape", "orbit_min"]

TASKS = ("spin_ring", "node_pick", "max_cut", "decoding")


@dataclass
class SymBreakTask:
    """A symmetry-breaking task (see the module docstring).

    Attributes:
        name, description: what it is.
        group, rep_in, rep_out: the finite group and how inputs ``(d_in,)`` and outputs ``(d_out,)`` transform.
        x_train ``(N, d_in)``: training inputs (a mix of symmetric and generic ones).
        x_sym ``(M, d_in)``: symmetric test inputs, where symmetry must be broken.
        x_generic ``(M2, d_in)``: generic test inputs (trivial or small stabilizers).
        loss: ``(out (B, d_out), x (B, d_in)) -> (B,)``, invariant under ``out -> ρ_out(h) out`` for ``h ∈ G_x``.
        floor ``(M,)``: the smallest loss any ``G``-equivariant model can have on ``x_sym``.
        optimum ``(M,)``: the smallest achievable loss on ``x_sym`` (the infimum).
        decode: raw output -> readable answer (spins, probabilities, points).
        meta: task-specific data (edges, adjacency, shape...).
    """

    name: str
    description: str
    group: FiniteGroup
    rep_in: Representation
    rep_out: object
    x_train: torch.Tensor
    x_sym: torch.Tensor
    x_generic: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    floor: torch.Tensor
    optimum: torch.Tensor
    decode: Callable[[torch.Tensor], torch.Tensor]
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SymBreakTask({self.name}: {self.group.name}, d_in={self.rep_in.dim}, d_out={self.rep_out.dim}, "
                f"train={len(self.x_train)}, sym={len(self.x_sym)}, generic={len(self.x_generic)})")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _random_elements(G: FiniteGroup, n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(0, G.order, (n,), generator=gen).tolist()


def _act_each(rep, x: torch.Tensor, gs: list[int]) -> torch.Tensor:
    return torch.stack([rep.act(g, xi) for g, xi in zip(gs, x)])


def orbit_min(per_element: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``min_{h allowed} per_element[:, h]``: ``per_element, allowed: (B, |G|)`` -> ``(B,)``."""
    return torch.where(allowed, per_element, torch.full_like(per_element, math.inf)).min(-1).values


# ----------------------------------------------------------------------------------------------
# (1) physics: antiferromagnetic Ising ring
# ----------------------------------------------------------------------------------------------

def ising_energy(s: torch.Tensor, h: torch.Tensor, J: float = 1.0) -> torch.Tensor:
    """Energy per site ``(J Σ_i s_i s_{i+1} − Σ_i h_i s_i) / n`` on a ring; ``s, h: (..., n)`` -> ``(...)``.

    ``J > 0`` is antiferromagnetic. Spins may be relaxed to ``[-1, 1]``.

    >>> s = torch.tensor([1., -1., 1., -1.])
    >>> float(ising_energy(s, torch.zeros(4)))                 # a Néel state: every bond satisfied
    -1.0
    """
    if s.shape[-1] != h.shape[-1]:
        raise ValueError(f"spins s {tuple(s.shape)} and fields h {tuple(h.shape)} must have the same number of sites")
    n = s.shape[-1]
    return (J * (s * s.roll(-1, -1)).sum(-1) - (h * s).sum(-1)) / n


def ground_states(h: torch.Tensor, J: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ground-state energy per site ``(B,)`` and one ground state ``(B, n)`` by enumeration (n ≤ 16)."""
    n = h.shape[-1]
    if n > 16:
        raise ValueError(f"ground_states enumerates 2^n states: n must be <= 16, got {n}")
    configs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=h.dtype)
    E = ising_energy(configs.unsqueeze(0), h.unsqueeze(1), J)  # (B, 2^n)
    e, idx = E.min(-1)
    return e, configs[idx]


def spin_ring(n: int = 8, n_train: int = 512, n_test: int = 64, J: float = 1.0, field_max: float = 1.5,
              seed: int = 0) -> SymBreakTask:
    """Antiferromagnetic Ising ring of ``n`` sites under ``D_n``; inputs are the local fields ``h: (n,)``.

    Training inputs: one half uniform fields ``h_i = a``, a quarter period-2 fields
    ``a + b(−1)^i`` (stabilizer: even rotations and half the reflections), a quarter generic random
    fields, with ``a, b ~ U(−field_max, field_max)``. ``x_sym``: uniform fields. For ``|a| < 2J`` the
    ground states are the two Néel states (energy ``−J`` per site); an equivariant model outputs a
    uniform ``s`` and its best energy is ``min_s J s² − a s = −a²/(4J)`` (``J − |a|`` for ``|a| ≥ 2J``).
    """
    n = _check_int("n", n, 3)
    n_train, n_test = _check_int("n_train", n_train, 4), _check_int("n_test", n_test, 1)
    if n % 2:
        raise ValueError(f"n must be even (an odd antiferromagnetic ring is frustrated), got {n}")
    if not J > 0:
        raise ValueError(f"J must be positive (antiferromagnetic), got {J!r}")
    gen = torch.Generator().manual_seed(seed)
    G = DihedralGroup(n)
    rep = Representation.from_group_vertices(G, name="sites")
    alt = torch.tensor([(-1.0) ** i for i in range(n)], dtype=torch.float64)

    def u(*shape):
        return (2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) * field_max

    n_uni, n_p2 = n_train // 2, n_train // 4
    n_gen = n_train - n_uni - n_p2
    uni = u(n_uni, 1).expand(n_uni, n).clone()
    p2 = u(n_p2, 1) + u(n_p2, 1) * alt
    p2 = _act_each(rep, p2, _random_elements(G, n_p2, gen))
    rnd = u(n_gen, n)
    x_train = torch.cat([uni, p2, rnd])[torch.randperm(n_train, generator=gen)]
    a = u(n_test, 1)
    x_sym = a.expand(n_test, n).clone()
    x_generic = torch.cat([u(n_test // 2, 1) + u(n_test // 2, 1) * alt, u(n_test - n_test // 2, n)])
    a = a[:, 0]
    floor = torch.where(a.abs() < 2 * J, -a ** 2 / (4 * J), J - a.abs())
    optimum, _ = ground_states(x_sym, J)

    def loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ising_energy(torch.tanh(out), x, J)

    return SymBreakTask("spin_ring", f"antiferromagnetic Ising ring, {n} sites, J={J}: output the ground state",
                        G, rep, rep, x_train, x_sym, x_generic, loss, floor, optimum, torch.tanh,
                        {"J": J, "n": n})


# ----------------------------------------------------------------------------------------------
# (2) graphs: pick a node
# ----------------------------------------------------------------------------------------------

def _argmax_set(x: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    return x >= x.max(-1, keepdim=True).values - tol


def node_pick(n: int = 6, n_train: int = 512, n_test: int = 64, seed: int = 0) -> SymBreakTask:
    """Pick a node of maximal score on the cycle graph ``C_n`` (group ``D_n`` permuting the nodes).

    Inputs: node scores ``x: (n,)``. Symmetric inputs are periodic patterns
    ``a + b cos(2π m i / n)`` (``m`` a divisor of ``n``, ``b > 0``; ``m = 0`` gives a constant), moved
    by a random group element; their argmax set is an orbit of the stabilizer with ``n/m`` nodes (``n``
    for a constant). Output: logits ``(n,)``; loss ``−log max_{i ∈ argmax(x)} softmax(out)_i``.
    Floor for an equivariant model: ``log`` of the smallest ``G_x``-orbit inside the argmax set;
    optimum: 0.
    """
    n = _check_int("n", n, 3)
    n_train, n_test = _check_int("n_train", n_train, 4), _check_int("n_test", n_test, 1)
    gen = torch.Generator().manual_seed(seed)
    G = DihedralGroup(n)
    rep = Representation.from_group_vertices(G, name="nodes")
    i = torch.arange(n, dtype=torch.float64)
    periods = [m for m in range(2, n) if n % m == 0] + [0]  # m = 1 has a single maximum

    def symmetric(count):
        m = torch.tensor(periods)[torch.randint(0, len(periods), (count,), generator=gen)]
        a = torch.randn(count, 1, generator=gen, dtype=torch.float64)
        b = 0.5 + torch.rand(count, 1, generator=gen, dtype=torch.float64)
        x = a + b * torch.cos(2 * math.pi * m[:, None].double() * i / n)
        return _act_each(rep, x, _random_elements(G, count, gen))

    half = n_train // 2
    x_train = torch.cat([symmetric(half), torch.randn(n_train - half, n, generator=gen, dtype=torch.float64)])
    x_train = x_train[torch.randperm(n_train, generator=gen)]
    x_sym = symmetric(n_test)
    x_generic = torch.randn(n_test, n, generator=gen, dtype=torch.float64)

    floors = []
    for x in x_sym:
        T = _argmax_set(x)
        stab = stabilizer_elements(x, rep)
        # orbits of the stabilizer on the argmax nodes; a G_x-invariant p is constant on each
        sizes = []
        seen = set()
        for v in torch.nonzero(T).flatten().tolist():
            if v in seen:
                continue
            orbit = {int(rep.perms[h].tolist().index(v)) for h in stab}  # nodes that h maps v to
            seen |= orbit
            sizes.append(len(orbit))
        floors.append(math.log(min(sizes)))
    floor = torch.tensor(floors, dtype=torch.float64)

    def loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(out, -1)
        return -torch.where(_argmax_set(x), logp, torch.full_like(logp, -math.inf)).max(-1).values

    return SymBreakTask("node_pick", f"pick a highest-scoring node of the {n}-cycle", G, rep, rep, x_train, x_sym,
                        x_generic, loss, floor, torch.zeros_like(floor), lambda out: torch.softmax(out, -1), {"n": n})


# ----------------------------------------------------------------------------------------------
# (3) combinatorial optimisation: max-cut on the Petersen graph
# ----------------------------------------------------------------------------------------------

def cut_value(s: torch.Tensor, w: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Relaxed cut ``Σ_e w_e (1 − s_u s_v) / 2`` for ``s: (..., n)`` in ``[-1, 1]``, ``w: (..., E)``,
    ``edges: (E, 2)``.

    >>> edges = torch.tensor([[0, 1], [1, 2], [2, 0]])
    >>> float(cut_value(torch.tensor([1., -1., 1.]), torch.ones(3), edges))     # best cut of a triangle
    2.0
    """
    if w.shape[-1] != edges.shape[0]:
        raise ValueError(f"w has {w.shape[-1]} edge weights but edges lists {edges.shape[0]} edges")
    return (w * (1 - s[..., edges[:, 0]] * s[..., edges[:, 1]]) / 2).sum(-1)


def max_cut(graph: str = "petersen", n_train: int = 512, n_test: int = 64, seed: int = 0) -> SymBreakTask:
    """Weighted max-cut on a vertex-transitive graph (``"petersen"``: Aut = S_5, 120 elements; or
    ``"cube"``: the 3-cube, 48 elements). Inputs: edge weights ``w: (E,)``; outputs: node logits,
    ``s = tanh(out)``; loss ``−cut(s)/Σw``. Symmetric inputs: uniform weights, where an equivariant
    model outputs a constant ``s`` and cuts ``(1 − s²)/2 ≤ 1/2`` of the weight (floor ``−1/2``). The
    optimum is found by enumerating all ``2^n`` cuts (Petersen: 12 of 15 edges).
    """
    import networkx as nx

    if graph == "petersen":
        g = nx.petersen_graph()
    elif graph == "cube":
        g = nx.convert_node_labels_to_integers(nx.hypercube_graph(3))
    else:
        raise ValueError(f"graph must be 'petersen' or 'cube', got {graph!r}")
    n_train, n_test = _check_int("n_train", n_train, 4), _check_int("n_test", n_test, 1)
    gen = torch.Generator().manual_seed(seed)
    A = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()))
    G = graph_automorphism_group(A, name=f"Aut({graph})")
    edges = torch.tensor(sorted(tuple(sorted(e)) for e in g.edges()))
    rep_in = Representation.on_edges(G, edges.tolist())
    rep_out = Representation.from_group_vertices(G, name="nodes")
    E, n = edges.shape[0], A.shape[0]

    def weights(count, uniform):
        if uniform:
            return (0.5 + torch.rand(count, 1, generator=gen, dtype=torch.float64)).expand(count, E).clone()
        return 0.5 + torch.rand(count, E, generator=gen, dtype=torch.float64)

    half = n_train // 2
    x_train = torch.cat([weights(half, True), weights(n_train - half, False)])[torch.randperm(n_train, generator=gen)]
    x_sym = weights(n_test, True)
    x_generic = weights(n_test, False)
    configs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=torch.float64)
    best = cut_value(configs.unsqueeze(0), x_sym.unsqueeze(1), edges).max(-1).values
    optimum = -best / x_sym.sum(-1)
    floor = torch.full((n_test,), -0.5, dtype=torch.float64)

    def loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -cut_value(torch.tanh(out), x, edges.to(out.device)) / x.sum(-1)

    return SymBreakTask("max_cut", f"max-cut of the {graph} graph ({n} nodes, {E} edges)", G, rep_in, rep_out,
                        x_train, x_sym, x_generic, loss, floor, optimum, torch.tanh,
                        {"edges": edges, "adjacency": torch.as_tensor(A), "graph": graph})


# ----------------------------------------------------------------------------------------------
# (4) equivariant decoding: a latent vector into an arrow
# ----------------------------------------------------------------------------------------------

def arrow_shape(dtype=torch.float64) -> torch.Tensor:
    """Four points ``(4, 2)`` of an arrow pointing along +x, mirror-symmetric about the x axis, centred."""
    pts = torch.tensor([[1.0, 0.0], [0.25, 0.45], [0.25, -0.45], [-0.7, 0.0]], dtype=dtype)
    return pts - pts.mean(0)


def decoding(n: int = 5, n_train: int = 512, n_test: int = 64, seed: int = 0) -> SymBreakTask:
    """Decode a latent ``z ∈ R²`` into an arrow (4 ordered points) pointing along ``z``; group ``D_n``
    acting on the plane (``z`` and every point). ``z = 0`` is symmetric: the arrow may point along any
    of the ``n`` directions ``2πk/n`` (the orbit of the +x arrow under ``D_n``). Loss: mean squared
    distance per point to the nearest target in the ``G_z``-orbit, the two barbs of the arrow counted
    as an unordered pair (a mirror swaps them, so this keeps the loss ``G``-invariant). An equivariant decoder outputs the
    ``D_n``-fixed point set for ``z = 0`` (every point at the origin): floor = mean ``‖p_j‖²`` of the arrow.
    """
    n = _check_int("n", n, 3)
    n_train, n_test = _check_int("n_train", n_train, 4), _check_int("n_test", n_test, 1)
    gen = torch.Generator().manual_seed(seed)
    G = DihedralGroup(n)
    rep_in = Representation(G, G.matrices(), name="plane")
    rep_out = SumRep([(rep_in, 4)])
    T = arrow_shape()
    out_mats = rep_out.matrices()  # (|G|, 8, 8)
    in_mats = rep_in.matrices

    def latent(count):
        r = 0.3 + 0.7 * torch.rand(count, generator=gen, dtype=torch.float64)
        th = 2 * math.pi * torch.rand(count, generator=gen, dtype=torch.float64)
        return torch.stack([r * torch.cos(th), r * torch.sin(th)], -1)

    n_zero = n_train // 4
    x_train = torch.cat([torch.zeros(n_zero, 2, dtype=torch.float64), latent(n_train - n_zero)])
    x_train = x_train[torch.randperm(n_train, generator=gen)]
    x_sym = torch.zeros(n_test, 2, dtype=torch.float64)
    x_generic = latent(n_test)

    def target(z: torch.Tensor) -> torch.Tensor:
        th = torch.atan2(z[:, 1], z[:, 0])
        c, s = torch.cos(th), torch.sin(th)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
        return torch.einsum("bij,pj->bpi", R, T.to(z)).reshape(z.shape[0], -1)

    swap = torch.tensor([0, 1, 4, 5, 2, 3, 6, 7])  # the two barbs exchanged (a mirror reorders them)

    def loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = target(x)  # (B, 8)
        moved = torch.einsum("gij,bj->bgi", out_mats.to(out), y)  # ρ_out(h) y* for every h
        per = ((out.unsqueeze(1) - moved) ** 2).sum(-1) / 4
        per = torch.minimum(per, ((out[:, swap.to(out.device)].unsqueeze(1) - moved) ** 2).sum(-1) / 4)
        zs = torch.einsum("gij,bj->bgi", in_mats.to(x), x)
        allowed = (zs - x.unsqueeze(1)).norm(dim=-1) <= 1e-6 * (x.norm(dim=-1, keepdim=True) + 1e-12)
        return orbit_min(per, allowed)

    floor = torch.full((n_test,), float((T ** 2).sum(-1).mean()), dtype=torch.float64)
    return SymBreakTask("decoding", f"decode a latent vector into an arrow (D{n})", G, rep_in, rep_out, x_train, x_sym,
                        x_generic, loss, floor, torch.zeros(n_test, dtype=torch.float64),
                        lambda out: out.reshape(*out.shape[:-1], 4, 2), {"shape": T, "n": n})


def make_task(name: str, n_train: int = 512, n_test: int = 64, seed: int = 0) -> SymBreakTask:
    """One of :data:`TASKS` with its default sizes."""
    builders = {"spin_ring": spin_ring, "node_pick": node_pick, "max_cut": max_cut, "decoding": decoding}
    if name not in builders:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return builders[name](n_train=n_train, n_test=n_test, seed=seed)
