"""EGNN (Satorras et al. 2021) and the multichannel MC-EGNN (Levy et al. 2023).

Papers:
    Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021, arXiv:2102.09844 (EGNN).
    Levy, Kaba, Gonzales, Miret, Ravanbakhsh, "Using Multiple Vector Channels Improves E(n)-Equivariant
    Graph Neural Networks", arXiv:2309.03139, 2023 (MC-EGNN).

Read this module from the top:

1. :class:`EGNNLayer` and :class:`EGNN`, **the reference**: the paper's equations line by line (edge
   message, coordinate update, node update) on an edge list. Short and plainly right; what follows is
   tested against it.
2. :func:`multichannel_coord_update`: MC-EGNN's coordinate update as Levy et al. write it (the
   chapter's "build it" exercise).
3. :class:`MCEGNNLayer`, :class:`MCEGNN`, :class:`MCEGNNRegressor`: what the chapter trains. With
   ``channels=1`` :class:`MCEGNN` computes the same function as :class:`EGNN`, with the same parameters
   regrouped (:meth:`MCEGNN.from_reference` copies them across; outputs and gradients are tested equal
   in float64); with ``channels=C`` it is MC-EGNN. ``coord_update=`` plugs in any function with the
   signature of :func:`multichannel_coord_update` (e.g. a learner's own): the model then runs it on the
   edge-list path, with plain autograd (the default, ``None``, keeps the fast built-in update).
4. The dense path's kernels, :class:`_DenseLayerFunction` with its hand-written backward: an
   optimisation of the same function, nothing more.

One MC-EGNN layer, with node features ``h_i`` (hidden), ``C`` position channels ``x_i in R^{3 x C}`` (all
channels are *points*: a translation moves every channel), optional edge attributes ``a_ij`` and the
input velocity ``v_i in R^3``::

    x_ij   = x_i - x_j                                    (3 x C)
    g_ij   = upper triangle of x_ij^T x_ij                (C(C+1)/2 invariants; C=1: |x_i - x_j|^2)
    m_ij   = phi_e(h_i, h_j, g_ij, a_ij)                  (hidden)
    u_i    = 1/(n_i - 1) sum_{j != i} x_ij  phi_x(m_ij)   (3 x C, phi_x(m_ij) is a C x C mixing matrix)
    v_i'   = v_i phi_v(h_i)^T + u_i                       (3 x C, phi_v(h_i) in R^C; EGNN Eq. 7)
    x_i'   = x_i + v_i'                                   (x_i + u_i without velocity)
    h_i'   = h_i + phi_h(h_i, sum_j m_ij)

For ``C = 1`` these are EGNN's Eqs. 3-7. Every operation on vectors is a linear combination of
differences ``x_i - x_j`` or of ``v_i`` with invariant coefficients, so the layer is E(3)-equivariant
(rotations, reflections, translations) and, since messages are summed, permutation-equivariant. The
input position is copied into the C channels; the output position is the mean of the channels (again
a point).

How :class:`MCEGNN` computes the same function faster: the first layer of ``phi_e`` acts on a
concatenation, ``W [h_i, h_j, g_ij, a_ij] + b = (W_1 h_i + b) + W_2 h_j + W_3 [g_ij, a_ij]``, so ``W_1 h``
and ``W_2 h`` are computed once per *node* and broadcast to the edges (likewise the node halves of
``phi_h`` and ``phi_v``: one matmul per node). At 5 particles there are only 4 edges per node, so this
cuts the matmul FLOPs by about 1.4x at most (the two hidden x hidden edge matmuls of ``phi_e`` and
``phi_x`` remain), and SiLU and its derivative on every edge cost as much as a matmul. For small fully
connected graphs (``n <= dense_max_nodes``) the edges of a batch are one dense ``(B, n, n-1, hidden)``
tensor built by broadcasting and slicing off the diagonal (:func:`off_diagonal`; no gathers, so no
scatters in the backward), and each layer is one autograd node with a hand-written backward
(:class:`_DenseLayerFunction`); otherwise an edge-list (gather / ``index_add_``) path runs under plain
autograd. Positions are kept channels-first, ``(C, 3, B, n)``, inside the dense path, so the ``3 x C``
algebra runs elementwise along long rows rather than as many tiny matrix products. The measured step
times of the reference and of both paths, eager and compiled, with the machine they ran on, are in
``benchmarks/results.md`` (``benchmarks/bench_04_multichannel_egnn.py`` measures them side by side).

    >>> import torch
    >>> model = MCEGNN(in_node_nf=2, hidden=16, n_layers=2, channels=3)
    >>> h, x, v = torch.randn(4, 5, 2), torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    >>> out = model(h, x, v)
    >>> out.x.shape, out.h.shape, out.x_channels.shape
    (torch.Size([4, 5, 3]), torch.Size([4, 5, 16]), torch.Size([4, 5, 3, 3]))
    >>> EGNN(in_node_nf=2, hidden=16, n_layers=2)(h, x, v).x.shape      # the reference: same call, same output type
    torch.Size([4, 5, 3])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EGNNOutput", "EGNNLayer", "EGNN", "multichannel_coord_update", "MCEGNNLayer", "MCEGNN",
           "MCEGNNRegressor", "MCEGNNVectors", "n_gram_invariants", "gram_invariants", "fully_connected_edges",
           "count_parameters", "nbody_inputs", "predict_nbody", "nbody_mse"]


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------

@dataclass
class EGNNOutput:
    """What :class:`EGNN` and :class:`MCEGNN` return.

    Attributes:
        h: node features ``(B, n, hidden)`` (invariant).
        x: predicted positions ``(B, n, 3)``: the mean of the channels (equivariant, a point).
        x_channels: all position channels ``(B, n, 3, C)`` (``C = 1`` for :class:`EGNN`).
    """

    h: torch.Tensor
    x: torch.Tensor
    x_channels: torch.Tensor


def n_gram_invariants(channels: int) -> int:
    """Number of invariants ``C(C+1)/2`` in the upper triangle of the ``C x C`` Gram matrix."""
    return channels * (channels + 1) // 2


def gram_invariants(diff: torch.Tensor) -> torch.Tensor:
    """Rotation/reflection invariants of ``C`` relative vectors: the upper triangle of ``diff^T diff``.

    Args:
        diff: ``(..., 3, C)``. Returns ``(..., C(C+1)/2)``; for ``C = 1`` it is ``|diff|^2``.

    >>> d = torch.tensor([[3.0, 1.0], [4.0, 0.0], [0.0, 0.0]])   # two channels
    >>> gram_invariants(d).tolist()
    [25.0, 3.0, 1.0]
    """
    C = diff.shape[-1]
    if C == 1:
        return (diff * diff).sum(-2)
    gram = torch.einsum("...dc,...de->...ce", diff, diff)
    iu = torch.triu_indices(C, C, device=diff.device)
    return gram[..., iu[0], iu[1]]


def fully_connected_edges(mask: torch.Tensor) -> torch.Tensor:
    """Edge list ``(2, E)`` of all ordered pairs ``i != j`` of valid nodes, for flattened ``(B*n)`` nodes.

    Args:
        mask: ``(B, n)`` bool, True for real (non-padding) nodes.
    Row 0 is the receiving node ``i``, row 1 the sending node ``j``.

    >>> fully_connected_edges(torch.ones(1, 3, dtype=torch.bool)).tolist()
    [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    """
    B, n = mask.shape
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=mask.device)
    b, i, j = pair.nonzero(as_tuple=True)
    return torch.stack([b * n + i, b * n + j])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _mlp(n_in: int, n_hidden: int, n_out: int, act: type[nn.Module] = nn.SiLU, last_bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), act(), nn.Linear(n_hidden, n_out, bias=last_bias))


def _check_sizes(**sizes: tuple[int, int]) -> None:
    """``name=(value, minimum)``: each value must be an integer (not a bool) of at least its minimum."""
    for name, (val, lo) in sizes.items():
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")


def _validate_batch(model: nn.Module, h, x, v, edge_attr, mask) -> torch.Tensor:
    """Check the batched inputs of :class:`EGNN` / :class:`MCEGNN` (``model`` has ``embedding``, ``in_node_nf``,
    ``channels`` and ``edge_nf``); returns ``x`` as ``(B, n, 3, C)`` position channels."""
    dev = model.embedding.weight.device
    named = {"h": h, "x": x, "v": v, "edge_attr": edge_attr, "mask": mask}
    for name, t in named.items():
        if t is not None and not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t is not None and t.device != dev:
            raise ValueError(f"{name} is on {t.device} but the model is on {dev}: move both to one device")
    if h.ndim != 3 or h.shape[-1] != model.in_node_nf:
        raise ValueError(f"h must have shape (batch, nodes, {model.in_node_nf}), got {tuple(h.shape)}")
    B, n = h.shape[:2]
    if x.ndim == 3:
        if x.shape != (B, n, 3):
            raise ValueError(f"x must have shape ({B}, {n}, 3) (row-vector points), got {tuple(x.shape)}")
        x = x[..., None].expand(B, n, 3, model.channels)
    elif x.ndim == 4:
        if x.shape[:3] != (B, n, 3):
            raise ValueError(f"x must have shape ({B}, {n}, 3, C), got {tuple(x.shape)}")
        if x.shape[3] != model.channels:
            raise ValueError(f"x has {x.shape[3]} channels but the model was built with channels={model.channels}")
    else:
        raise ValueError(f"x must have shape (batch, nodes, 3) or (batch, nodes, 3, channels), got {tuple(x.shape)}")
    if v is not None and v.shape != (B, n, 3):
        raise ValueError(f"v must have shape ({B}, {n}, 3), got {tuple(v.shape)}")
    if model.edge_nf and edge_attr is None:
        raise ValueError(f"the model was built with edge_nf={model.edge_nf}: pass edge_attr (batch, nodes, nodes, {model.edge_nf})")
    if edge_attr is not None and edge_attr.shape != (B, n, n, model.edge_nf):
        raise ValueError(f"edge_attr must have shape ({B}, {n}, {n}, {model.edge_nf}), got {tuple(edge_attr.shape)}")
    if mask is not None and (mask.shape != (B, n) or mask.dtype != torch.bool):
        raise ValueError(f"mask must be a bool tensor of shape ({B}, {n}), got {mask.dtype} {tuple(mask.shape)}")
    return x


# ----------------------------------------------------------------------------------------------
# The reference: EGNN as the paper writes it
# ----------------------------------------------------------------------------------------------

class EGNNLayer(nn.Module):
    """One EGNN layer as Satorras et al. (2021) write it: edge message, coordinate update, node update.

    For every edge ``(i, j)`` of the graph (``N(i)``: the neighbours of ``i``)::

        m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, a_ij)                                (Eq. 3)
        x_i' = x_i + phi_v(h_i) v_i + 1/|N(i)| sum_{j in N(i)} (x_i - x_j) phi_x(m_ij)   (Eqs. 4 and 7)
        m_i  = sum_{j in N(i)} m_ij                                                (Eq. 5)
        h_i' = h_i + phi_h(h_i, m_i)                                               (Eq. 6)

    The velocity term (Eq. 7) needs the input velocity ``v``; ``h_i +`` is the residual of the paper's
    code. ``phi_e``, ``phi_x``, ``phi_v`` and ``phi_h`` are two-layer SiLU MLPs on concatenated inputs,
    initialised as the paper's code (``models/gcl.py``, ``E_GCL_vel``): PyTorch's defaults, except the
    last layer of ``phi_x``, ``xavier_uniform`` with gain 0.001 and no bias, so that coordinate updates
    start tiny.

    Args:
        hidden: width of ``h``, of the messages and of the MLPs.
        edge_nf: number of edge attributes ``a_ij`` (0: none).
        velocity: use the velocity update (EGNN Eq. 7).
        update_coords: False keeps ``x`` fixed (an invariant EGNN, as in the EGNN QM9 model).

    Call ``layer(h, x, edge_index, v=None, edge_attr=None)`` with ``h (M, hidden)``, ``x (M, 3)``,
    ``edge_index (2, E)`` long (row 0 the receiving node ``i``, row 1 the sending node ``j``),
    ``v (M, 3)`` and ``edge_attr (E, edge_nf)``; returns ``(h', x')``.
    """

    def __init__(self, hidden: int, edge_nf: int = 0, velocity: bool = True, update_coords: bool = True):
        super().__init__()
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + 1 + edge_nf, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden), nn.SiLU())                     # phi_e
        self.coord_mlp = _mlp(hidden, hidden, 1, last_bias=False) if update_coords else None     # phi_x
        if update_coords:
            nn.init.xavier_uniform_(self.coord_mlp[2].weight, gain=0.001)
        self.vel_mlp = _mlp(hidden, hidden, 1) if velocity and update_coords else None           # phi_v
        self.node_mlp = _mlp(2 * hidden, hidden, hidden)                                       # phi_h

    def forward(self, h, x, edge_index, v=None, edge_attr=None):
        i, j = edge_index
        diff = x[i] - x[j]                                                        # x_i - x_j, (E, 3)
        dist2 = (diff ** 2).sum(-1, keepdim=True)
        m = self.edge_mlp(torch.cat([h[i], h[j], dist2] + ([] if edge_attr is None else [edge_attr]), -1))  # Eq. 3
        if self.coord_mlp is not None:
            n_neighbours = torch.zeros_like(x[:, :1]).index_add_(0, i, torch.ones_like(dist2)).clamp(min=1)
            update = torch.zeros_like(x).index_add_(0, i, diff * self.coord_mlp(m)) / n_neighbours       # Eq. 4
            if self.vel_mlp is not None and v is not None:
                update = update + self.vel_mlp(h) * v                                                 # Eq. 7
            x = x + update
        m_i = torch.zeros_like(h).index_add_(0, i, m)                                                   # Eq. 5
        return h + self.node_mlp(torch.cat([h, m_i], -1)), x                                            # Eq. 6


class EGNN(nn.Module):
    """EGNN (Satorras et al. 2021), the reference: an embedding of the node features, then
    :class:`EGNNLayer` s on the complete graph of each system of a batch.

    Args:
        in_node_nf: number of input node features (e.g. 1 for ``|v_i|`` on N-body).
        hidden: width of all hidden layers (64 in the paper's N-body model).
        n_layers: message-passing layers (4 in the paper's N-body model).
        edge_nf: number of edge attributes (e.g. 1 for ``q_i q_j``).
        velocity: use the velocity update (pass ``v``).
        update_coords: False for an invariant network (positions only give distances).

    Same call and output as :class:`MCEGNN`: ``model(h, x, v=None, edge_attr=None, *, mask=None)`` with
    ``h (B,n,in_node_nf)``, ``x (B,n,3)``, ``v (B,n,3)``, ``edge_attr (B,n,n,edge_nf)``, ``mask (B,n)``
    bool (False marks padding nodes: they send and receive nothing and come out as zeros); returns
    :class:`EGNNOutput`. Its speed is the baseline of ``benchmarks/bench_04_multichannel_egnn.py``.
    """

    channels = 1

    def __init__(self, in_node_nf: int, hidden: int = 64, n_layers: int = 4, edge_nf: int = 0,
                 velocity: bool = True, update_coords: bool = True):
        super().__init__()
        _check_sizes(in_node_nf=(in_node_nf, 1), hidden=(hidden, 1), n_layers=(n_layers, 1), edge_nf=(edge_nf, 0))
        self.in_node_nf, self.hidden, self.n_layers, self.edge_nf = in_node_nf, hidden, n_layers, edge_nf
        self.velocity, self.update_coords = velocity, update_coords
        self.embedding = nn.Linear(in_node_nf, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_nf, velocity, update_coords) for _ in range(n_layers))

    def forward(self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None, *, mask: torch.Tensor | None = None) -> EGNNOutput:
        x = _validate_batch(self, h, x, v, edge_attr, mask)[..., 0]
        B, n = h.shape[:2]
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.bool, device=h.device)
        edge_index = fully_connected_edges(mask)              # every pair i != j of real nodes, flat indices
        i, j = edge_index
        hf, xf = self.embedding(h).reshape(B * n, -1), x.reshape(B * n, 3)
        vf = None if v is None else v.reshape(B * n, 3)
        ea = None if edge_attr is None else edge_attr.reshape(B * n, n, -1)[i, j % n]       # a_ij of each edge
        for layer in self.layers:
            hf, xf = layer(hf, xf, edge_index, vf, ea)
        real = mask.reshape(B * n, 1).to(hf.dtype)
        hf, xf = (hf * real).reshape(B, n, -1), (xf * real).reshape(B, n, 3)
        return EGNNOutput(h=hf, x=xf, x_channels=xf[..., None])


def multichannel_coord_update(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The multichannel coordinate update of one fully connected graph batch (Levy et al. 2023).

    ``x_i' = x_i + 1/(n-1) sum_{j != i} (x_i - x_j) W_ij``, where ``x_i - x_j`` is ``3 x C`` and the
    invariant mixing matrix ``W_ij = phi_x(m_ij)`` is ``C x C`` (``C = 1``: EGNN's Eq. 4).

    Args:
        x: ``(B, n, 3, C)`` position channels; w: ``(B, n, n, C, C)`` (the diagonal ``w_ii`` is ignored).
    Returns:
        ``(B, n, 3, C)``.

    >>> x = torch.tensor([[[[0.0], [0.0], [0.0]], [[2.0], [0.0], [0.0]]]])     # two nodes, C = 1
    >>> multichannel_coord_update(x, torch.full((1, 2, 2, 1, 1), 0.5))[0, :, 0, 0].tolist()
    [-1.0, 3.0]
    """
    if x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"x must have shape (batch, nodes, 3, channels), got {tuple(x.shape)}")
    B, n, _, C = x.shape
    if w.shape != (B, n, n, C, C):
        raise ValueError(f"w must have shape ({B}, {n}, {n}, {C}, {C}) for x of shape {tuple(x.shape)}, got {tuple(w.shape)}")
    diff = x[:, :, None] - x[:, None, :]                       # (B,n,n,3,C); zero on the diagonal
    return x + torch.einsum("bijdc,bijce->bide", diff, w) / max(n - 1, 1)


# ----------------------------------------------------------------------------------------------
# The implementation the chapter trains: the same function (C = 1) and MC-EGNN (C > 1), faster
# ----------------------------------------------------------------------------------------------

class MCEGNNLayer(nn.Module):
    """One (multichannel) EGNN layer; see the module docstring for the equations. With ``channels=1``
    it computes the same function as :class:`EGNNLayer`, with the same parameters regrouped.

    Args:
        hidden: width of ``h`` and of the messages.
        channels: ``C``, the number of position channels (1: EGNN).
        edge_nf: number of edge attributes ``a_ij`` (0: none).
        velocity: use the velocity update (EGNN Eq. 7).
        update_coords: False keeps ``x`` fixed (an invariant EGNN, as in the EGNN QM9 model).

        coord_update: ``None`` (the built-in update) or a function ``f(x, w) -> x'`` with the signature of
            :func:`multichannel_coord_update` (``x (B,n,3,C)``, ``w (B,n,n,C,C)``): the coordinate update
            ``x_i + 1/(n-1) sum_{j != i} (x_i - x_j) w_ij`` computed by ``f`` instead (chapter 04's exercise).
            It runs on complete graphs of the edge-list path only (:meth:`forward_edges` with
            ``dense_shape``), under plain autograd; the velocity term is added after it.

    Every linear map that reads only ``h_i`` (the node halves of the first layers of ``phi_e`` and
    ``phi_h`` and the first layer of ``phi_v``) is one ``(hidden, k*hidden)`` matrix applied once per
    node: the same function as separate layers on concatenated inputs, with fewer, larger kernels.
    The blocks are initialised as the concatenated layers they replace (:meth:`reset_parameters`), so
    the model starts where the EGNN reference code starts, not only in the same function class.
    """

    def __init__(self, hidden: int, channels: int = 1, edge_nf: int = 0, velocity: bool = True,
                 update_coords: bool = True, coord_update=None):
        super().__init__()
        if coord_update is not None and not callable(coord_update):
            raise TypeError(f"coord_update must be None or a function f(x, w) -> x', got {type(coord_update).__name__}")
        self.hidden, self.channels, self.edge_nf = hidden, channels, edge_nf
        self.coord_update = coord_update
        self.velocity = bool(velocity and update_coords)
        self.update_coords = update_coords
        H = hidden
        self.n_inv = n_gram_invariants(channels) + edge_nf
        # node-level halves: [W_1 h (phi_e, receiver), W_2 h (phi_e, sender), W_h h (phi_h), phi_v layer 1]
        self.n_node_blocks = 4 if self.velocity else 3
        self.node_in = nn.Linear(H, self.n_node_blocks * H, bias=False)
        # biases of the receiver block of phi_e, of phi_h and of phi_v; the sender block has none (the
        # concatenated layer W [h_i, h_j, g_ij, a_ij] + b it comes from has one bias, added once)
        self.node_in_bias = nn.Parameter(torch.empty((self.n_node_blocks - 1) * H))
        self.edge_in_inv = nn.Linear(self.n_inv, H, bias=False)               # W_3 [g_ij, a_ij]
        self.edge_out = nn.Linear(H, H)                                        # phi_e layer 2
        self.node_in_agg = nn.Linear(H, H, bias=False)                         # phi_h layer 1, message half
        self.node_out = nn.Linear(H, H)                                        # phi_h layer 2
        if update_coords:                                                      # phi_x: m_ij -> C x C
            self.coord_mlp = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, channels * channels, bias=False))
        if self.velocity:
            self.vel_out = nn.Linear(H, channels)                              # phi_v layer 2
        self.act = nn.SiLU()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as the EGNN reference code (Satorras et al., ``models/gcl.py``, ``E_GCL_vel``) does.

        Every block gets PyTorch's ``nn.Linear`` default, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the
        weights and the bias, with the fan-in of the *concatenated* layer it is a block of:
        ``2H + C(C+1)/2 + edge_nf`` for the first layer of ``phi_e`` (node halves and invariant half
        alike), ``2H`` for the first layer of ``phi_h``, ``H`` for the rest. With the fan-in of the block
        alone (``H``, or ``C(C+1)/2 + edge_nf`` for the invariant half) the weights on ``|x_i - x_j|^2``
        and ``q_i q_j`` would start several times larger (8x at hidden 64, ``C = 1``, one edge attribute),
        and training with the reference recipe diverged on some seeds. The last layer of
        ``phi_x`` is ``xavier_uniform`` with gain 0.001 and no bias: coordinate updates start tiny.
        """
        H = self.hidden
        fan_e, fan_h = 2 * H + self.n_inv, 2 * H

        def uniform_(t, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            t.uniform_(-bound, bound)

        W, b = self.node_in.weight, self.node_in_bias
        uniform_(W[:2 * H], fan_e)                    # phi_e layer 1, h_i and h_j halves
        uniform_(self.edge_in_inv.weight, fan_e)      # phi_e layer 1, invariant half
        uniform_(b[:H], fan_e)
        uniform_(W[2 * H:3 * H], fan_h)               # phi_h layer 1, h half ...
        uniform_(self.node_in_agg.weight, fan_h)      # ... and message half
        uniform_(b[H:2 * H], fan_h)
        if self.velocity:                             # phi_v layer 1: a plain Linear(H, H)
            uniform_(W[3 * H:], H)
            uniform_(b[2 * H:], H)
        for lin in (self.edge_out, self.node_out):
            lin.reset_parameters()
        if self.update_coords:
            self.coord_mlp[0].reset_parameters()
            nn.init.xavier_uniform_(self.coord_mlp[2].weight, gain=0.001)
        if self.velocity:
            self.vel_out.reset_parameters()

    def _node_bias(self) -> torch.Tensor:
        """The bias of :attr:`node_in` per block, ``(n_node_blocks * H,)``, zero for the sender block."""
        b, H = self.node_in_bias, self.hidden
        return torch.cat([b[:H], b.new_zeros(H), b[H:]])

    def _node_terms(self, h):
        parts = F.linear(h, self.node_in.weight, self._node_bias()).chunk(self.n_node_blocks, -1)
        vel = self.vel_out(self.act(parts[3])) if self.velocity else None
        return parts[0], parts[1], parts[2], vel

    def _node_update(self, h, node_h, agg):
        return h + self.node_out(self.act(node_h + self.node_in_agg(agg)))

    def _params(self):
        none2 = (None, None)
        coord = (self.coord_mlp[0].weight, self.coord_mlp[0].bias, self.coord_mlp[2].weight,
                 None) if self.update_coords else none2 + none2
        vel = (self.vel_out.weight, self.vel_out.bias) if self.velocity else none2
        return (self.node_in.weight, self._node_bias(), self.edge_in_inv.weight, self.edge_out.weight,
                self.edge_out.bias, self.node_in_agg.weight, self.node_out.weight, self.node_out.bias) + coord + vel

    def forward_dense(self, h, x, v0, inv_extra, emask, inv_deg, pairs):
        """Dense path over the ``n - 1`` neighbours of each node of fully connected graphs.

        ``h (B,n,H)``, ``x (C,3,B,n)`` (channels-first, contiguous), ``v0 (3,B,n)|None``,
        ``inv_extra (B,n,n-1,E)|None`` (edge attributes), ``emask (B,n,n-1,1)|None`` (1 for real edges;
        None: all real), ``inv_deg (B,1)`` = 1/(n_valid - 1), ``pairs`` = :func:`_dense_pairs` ``(B, n)``.
        Returns ``h (B,n,H), x (C,3,B,n)``. Pair tensors are built by broadcasting over ``(n, n)`` and keeping the
        off-diagonal (:func:`off_diagonal`), so there are no gathers or scatters; the forward and a
        hand-written backward run as one autograd node (:class:`_DenseLayerFunction`), which supports
        first derivatives (training, forces) but not double backward (``create_graph=True`` raises an
        error that says to use ``path="edges"``, which supports it).
        """
        cfg = (self.channels, self.n_node_blocks, self.update_coords)
        return _DenseLayerFunction.apply(cfg, h, x, v0, inv_extra, emask, inv_deg, *pairs, *self._params())

    def forward_edges(self, h, x, v0, edge_attr, edge_index, inv_deg, dense_shape=None):
        """Edge-list path. ``h (M,H)``, ``x (M,3,C)``, ``v0 (M,3)|None``, ``edge_attr (E,E_f)|None``,
        ``edge_index (2,E)`` (row 0 receives), ``inv_deg (M,1,1)`` = 1/(number of incoming edges).
        ``dense_shape = (B, n)`` when the nodes are ``B`` complete graphs of ``n`` nodes (padding nodes, if
        any, have no edges): needed by a :attr:`coord_update` function, which sees the graphs as dense
        ``(B, n, ...)`` tensors."""
        row, col = edge_index[0], edge_index[1]
        diff = x[row] - x[col]                                                # (E,3,C)
        inv = gram_invariants(diff)
        if edge_attr is not None:
            inv = torch.cat([inv, edge_attr], -1)
        e_i, e_j, node_h, vel = self._node_terms(h)
        m = self.act(self.edge_out(self.act(e_i[row] + e_j[col] + self.edge_in_inv(inv))))    # (E,H)
        if self.update_coords:
            C = self.channels
            w = self.coord_mlp(m).view(-1, C, C)
            if self.coord_update is None:
                trans = torch.einsum("kdc,kce->kde", diff, w)
                u = torch.zeros_like(x).index_add_(0, row, trans) * inv_deg
            else:
                u = self._plugged_update(x, w, row, col, inv_deg, dense_shape)
            if vel is not None and v0 is not None:
                u = u + v0[..., None] * vel[:, None, :]
            x = x + u
        agg = torch.zeros_like(h).index_add_(0, row, m)
        return self._node_update(h, node_h, agg), x

    def _plugged_update(self, x, w, row, col, inv_deg, dense_shape):
        """``u = coord_update(X, W) - X`` on the dense view of complete graphs: ``X (B,n,3,C)``, and ``W``
        ``(B,n,n,C,C)`` holding each edge's mixing matrix (zero on the diagonal and for padding nodes).
        With padding the function's ``1/(n-1)`` is rescaled to ``1/(n_valid-1)``, the built-in normalisation."""
        if dense_shape is None:
            raise ValueError("coord_update= works on complete graphs given as (B, n, ...) batches "
                             "(MCEGNN.forward), not on the sparse graphs of forward_graph")
        B, n = dense_shape
        C = self.channels
        X = x.view(B, n, 3, C)
        W = w.new_zeros(B * n, n, C, C).index_put((row, col % n), w).view(B, n, n, C, C)
        out = self.coord_update(X, W)
        if not torch.is_tensor(out) or out.shape != X.shape:
            raise ValueError(f"coord_update must return a tensor of shape {tuple(X.shape)} (B, n, 3, C), "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
        u = (out - X).reshape(B * n, 3, C)
        if row.numel() != B * n * (n - 1):               # padding: rescale 1/(n-1) to 1/(n_valid-1)
            u = u * (inv_deg * (n - 1))
        return u


class MCEGNN(nn.Module):
    """Multichannel EGNN (Levy et al. 2023); ``channels=1`` computes the same function as :class:`EGNN`.

    Args:
        in_node_nf: number of input node features (e.g. 1 for ``|v_i|`` on N-body).
        hidden: width of all hidden layers (64 in both papers' N-body models).
        n_layers: message-passing layers (4 in both papers' N-body models).
        channels: ``C >= 1`` position channels.
        edge_nf: number of edge attributes (e.g. 1 for ``q_i q_j``).
        velocity: use the velocity update (pass ``v`` to :meth:`forward`).
        update_coords: False for an invariant network (positions only give distances).
        path: ``"auto"`` (see :meth:`chosen_path`), ``"dense"`` or ``"edges"``; the same function on every path.
        dense_max_nodes: the largest graph ``"auto"`` runs on the dense path.
        coord_update: ``None`` (the built-in update) or a function with the signature of
            :func:`multichannel_coord_update` that every layer uses for its coordinate update (see
            :class:`MCEGNNLayer`); the model then runs on the edge-list path (``"auto"`` chooses it; the
            dense path's hand-written backward cannot differentiate an arbitrary function).

    Call ``model(h, x, v=None, edge_attr=None, *, mask=None)`` with ``h (B,n,in_node_nf)``,
    ``x (B,n,3)`` or ``(B,n,3,C)``, ``v (B,n,3)``, ``edge_attr (B,n,n,edge_nf)`` and ``mask (B,n)`` bool
    (False marks padding nodes of smaller graphs). The graph is fully connected among valid nodes.
    Returns :class:`EGNNOutput`. For a sparse graph use :meth:`forward_graph`.
    """

    PATHS = ("auto", "dense", "edges")

    def __init__(self, in_node_nf: int, hidden: int = 64, n_layers: int = 4, channels: int = 1,
                 edge_nf: int = 0, velocity: bool = True, update_coords: bool = True, path: str = "auto",
                 dense_max_nodes: int = 64, coord_update=None):
        super().__init__()
        _check_sizes(in_node_nf=(in_node_nf, 1), hidden=(hidden, 1), n_layers=(n_layers, 1), channels=(channels, 1),
                     edge_nf=(edge_nf, 0))
        if path not in self.PATHS:
            raise ValueError(f"path must be one of {self.PATHS}, got {path!r}")
        if coord_update is not None and path == "dense":
            raise ValueError("coord_update= runs on the edge-list path (plain autograd): use path='auto' or 'edges', "
                             "not 'dense' (its hand-written backward knows only the built-in update)")
        self.in_node_nf, self.hidden, self.n_layers = in_node_nf, hidden, n_layers
        self.channels, self.edge_nf, self.velocity, self.path = channels, edge_nf, velocity, path
        self.update_coords = update_coords
        self.dense_max_nodes = dense_max_nodes
        self.embedding = nn.Linear(in_node_nf, hidden)
        self.layers = nn.ModuleList(MCEGNNLayer(hidden, channels, edge_nf, velocity, update_coords, coord_update)
                                    for _ in range(n_layers))
        self.coord_update = coord_update

    @classmethod
    @torch.no_grad()
    def from_reference(cls, reference: EGNN, path: str = "auto", dense_max_nodes: int = 64) -> "MCEGNN":
        """A one-channel :class:`MCEGNN` holding the weights of a reference :class:`EGNN`: the same function.

        Each first layer on a concatenation is split into its blocks (see :class:`MCEGNNLayer`)::

            phi_e layer 1:  W = [W_i | W_j | W_g], b  ->  node_in.weight[:H], node_in.weight[H:2H],
                                                         edge_in_inv.weight, node_in_bias[:H]
            phi_h layer 1:  W = [W_h | W_m], b        ->  node_in.weight[2H:3H], node_in_agg.weight,
                                                         node_in_bias[H:2H]
            phi_v layer 1:  W, b                      ->  node_in.weight[3H:], node_in_bias[2H:]

        and every other layer is copied as it is. The copy is linear (weights only move), so applied to
        gradients it maps the reference's gradients onto the fast model's (that is how they are tested).
        """
        if not isinstance(reference, EGNN):
            raise TypeError(f"reference must be a symviz.nn.egnn.EGNN, got {type(reference).__name__}")
        H = reference.hidden
        model = cls(reference.in_node_nf, H, reference.n_layers, 1, reference.edge_nf, reference.velocity,
                    reference.update_coords, path, dense_max_nodes)
        model.to(reference.embedding.weight)
        model.embedding.load_state_dict(reference.embedding.state_dict())
        for fast, ref in zip(model.layers, reference.layers):
            W, b = fast.node_in.weight, fast.node_in_bias
            W_e, W_h = ref.edge_mlp[0].weight, ref.node_mlp[0].weight
            W[:H], W[H:2 * H] = W_e[:, :H], W_e[:, H:2 * H]
            fast.edge_in_inv.weight.copy_(W_e[:, 2 * H:])
            b[:H] = ref.edge_mlp[0].bias
            fast.edge_out.load_state_dict(ref.edge_mlp[2].state_dict())
            W[2 * H:3 * H] = W_h[:, :H]
            fast.node_in_agg.weight.copy_(W_h[:, H:])
            b[H:2 * H] = ref.node_mlp[0].bias
            fast.node_out.load_state_dict(ref.node_mlp[2].state_dict())
            if fast.update_coords:
                fast.coord_mlp.load_state_dict(ref.coord_mlp.state_dict())
            if fast.velocity:
                W[3 * H:] = ref.vel_mlp[0].weight
                b[2 * H:] = ref.vel_mlp[0].bias
                fast.vel_out.load_state_dict(ref.vel_mlp[2].state_dict())
        return model

    def extra_repr(self) -> str:
        return f"channels={self.channels}, path={self.path!r}"

    def chosen_path(self, n_nodes: int) -> str:
        """The path a batch of graphs of ``n_nodes`` nodes runs on: :attr:`path`, or for ``"auto"`` the dense
        path up to ``dense_max_nodes`` nodes (its ``(B, n, n-1, hidden)`` pair tensors grow as ``n^2``) and
        the edge list beyond. With a :attr:`coord_update` function: always the edge list."""
        if self.coord_update is not None:
            if self.path == "dense":
                raise ValueError("coord_update= runs on the edge-list path: set model.path to 'auto' or 'edges'")
            return "edges"
        if self.path != "auto":
            return self.path
        return "dense" if n_nodes <= self.dense_max_nodes else "edges"

    def forward(self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None, *, mask: torch.Tensor | None = None) -> EGNNOutput:
        x = _validate_batch(self, h, x, v, edge_attr, mask)
        B, n = h.shape[:2]
        path = self.chosen_path(n)
        padded = mask is not None and not bool(mask.all())
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.bool, device=h.device)
        fmask = mask.to(h.dtype)
        deg = (fmask.sum(1) - 1).clamp(min=1)                                   # (B,) valid neighbours
        hid = self.embedding(h)
        if padded:
            hid, x = hid * fmask[..., None], x * fmask[..., None, None]
        if path == "dense":
            # edge mask (B,n,n-1,1); None without padding saves two passes over the edge tensors per layer
            emask = off_diagonal(fmask[:, :, None] * fmask[:, None, :])[..., None] if padded else None
            inv_deg = (1.0 / deg)[:, None]
            extra = None if edge_attr is None else off_diagonal(edge_attr)
            xt = x.permute(3, 2, 0, 1).contiguous()                             # (C,3,B,n)
            vt = None if v is None else v.permute(2, 0, 1).contiguous()         # (3,B,n)
            pairs = _dense_pairs(B, n, h.device)                                # the same for every layer
            for layer in self.layers:
                hid, xt = layer.forward_dense(hid, xt, vt, extra, emask, inv_deg, pairs)
            x = xt.permute(2, 3, 1, 0).contiguous()
        else:
            edge_index = fully_connected_edges(mask)
            ea = None if edge_attr is None else edge_attr.reshape(B * n, n, -1)[edge_index[0], edge_index[1] % n]
            inv_deg = (1.0 / deg).repeat_interleave(n)[:, None, None]
            hf, xf = hid.reshape(B * n, -1), x.reshape(B * n, 3, self.channels)
            vf = None if v is None else v.reshape(B * n, 3)
            for layer in self.layers:
                hf, xf = layer.forward_edges(hf, xf, vf, ea, edge_index, inv_deg, dense_shape=(B, n))
            hid, x = hf.reshape(B, n, -1), xf.reshape(B, n, 3, self.channels)
        if padded:
            hid, x = hid * fmask[..., None], x * fmask[..., None, None]
        return EGNNOutput(h=hid, x=x.mean(-1), x_channels=x)

    def forward_graph(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor,
                      v: torch.Tensor | None = None, edge_attr: torch.Tensor | None = None) -> EGNNOutput:
        """Sparse graphs: ``h (M,F)``, ``x (M,3)``, ``edge_index (2,E)`` long (row 0 receives),
        ``v (M,3)``, ``edge_attr (E,edge_nf)``. Coordinate updates are averaged over incoming edges.
        Returns :class:`EGNNOutput` with node-level tensors ``(M, ...)``."""
        if not (torch.is_tensor(edge_index) and edge_index.ndim == 2 and edge_index.shape[0] == 2
                and edge_index.dtype == torch.long):
            raise ValueError(f"edge_index must be a long tensor of shape (2, E), got {getattr(edge_index, 'shape', edge_index)}")
        if h.ndim != 2 or x.ndim != 2 or x.shape != (h.shape[0], 3):
            raise ValueError(f"forward_graph expects h (M, F) and x (M, 3), got {tuple(h.shape)} and {tuple(x.shape)}")
        if h.shape[1] != self.in_node_nf:
            raise ValueError(f"h must have shape (M, {self.in_node_nf}), got {tuple(h.shape)}")
        if v is not None and v.shape != x.shape:
            raise ValueError(f"v must have shape {tuple(x.shape)}, got {tuple(v.shape)}")
        if self.edge_nf and edge_attr is None:
            raise ValueError(f"the model was built with edge_nf={self.edge_nf}: pass edge_attr (E, {self.edge_nf})")
        dev = self.embedding.weight.device
        for name, t in (("h", h), ("x", x), ("edge_index", edge_index), ("v", v), ("edge_attr", edge_attr)):
            if t is not None and t.device != dev:
                raise ValueError(f"{name} is on {t.device} but the model is on {dev}: move both to one device")
        M = h.shape[0]
        if edge_attr is not None and edge_attr.shape != (edge_index.shape[1], self.edge_nf):
            raise ValueError(f"edge_attr must have shape ({edge_index.shape[1]}, {self.edge_nf}), got {tuple(edge_attr.shape)}")
        deg = torch.zeros(M, dtype=h.dtype, device=h.device).index_add_(0, edge_index[0], torch.ones_like(edge_index[0], dtype=h.dtype))
        inv_deg = (1.0 / deg.clamp(min=1))[:, None, None]
        hf = self.embedding(h)
        xf = x[..., None].expand(M, 3, self.channels)
        for layer in self.layers:
            hf, xf = layer.forward_edges(hf, xf, v, edge_attr, edge_index, inv_deg)
        return EGNNOutput(h=hf, x=xf.mean(-1), x_channels=xf)


class MCEGNNRegressor(nn.Module):
    """Graph-level (invariant) regression with an (MC-)EGNN trunk, as in the EGNN QM9 model.

    ``y = MLP( sum_i mask_i MLP(h_i) )`` with ``h`` from :class:`MCEGNN` (no velocity).
    Call ``model(h, x, *, mask=None)`` with ``h (B,n,F)``, ``x (B,n,3)``, ``mask (B,n)`` bool; returns ``(B, out_dim)``.
    """

    def __init__(self, in_node_nf: int, hidden: int = 64, n_layers: int = 4, channels: int = 1,
                 out_dim: int = 1, update_coords: bool = True, path: str = "auto"):
        super().__init__()
        self.trunk = MCEGNN(in_node_nf, hidden, n_layers, channels, 0, velocity=False,
                            update_coords=update_coords, path=path)
        self.node_dec = _mlp(hidden, hidden, hidden)
        self.graph_dec = _mlp(hidden, hidden, out_dim)

    def forward(self, h: torch.Tensor, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.trunk(h, x, mask=mask)
        node = self.node_dec(out.h)
        if mask is not None:
            node = node * mask[..., None].to(node.dtype)
        return self.graph_dec(node.sum(1))


class MCEGNNVectors(nn.Module):
    """``K`` equivariant vectors per node from an (MC-)EGNN trunk: the channels' displacements, mixed.

    ``Y_i = (X_i^L - x_i 1^T) A``: the ``3 x C`` displacements of node ``i``'s ``C`` output position channels
    from its input position (vectors: translations cancel), times one learned ``C x K`` matrix ``A``
    (no bias: a constant vector would break rotation equivariance). Used by chapter 04's toy, where each
    node must report two vectors (its displacement and its velocity after a time step).

    With ``channels=1`` every output is a multiple of one vector, ``Y_i = y_i a^T``: rank at most 1, so a
    target whose ``3 x K`` matrix has rank 2 stays out of reach (its best rank-1 approximation is the
    floor). With ``channels >= K`` nothing in the read-out limits the rank.

    Call ``model(h, x, v=None, edge_attr=None, *, mask=None)`` with the inputs of :class:`MCEGNN`, ``x (B,n,3)``;
    returns ``(B, n, 3, K)`` (zero for padding nodes).

    >>> model = MCEGNNVectors(in_node_nf=1, hidden=8, n_layers=1, channels=2, n_vectors=2)
    >>> model(torch.randn(4, 2, 1), torch.randn(4, 2, 3), torch.randn(4, 2, 3)).shape
    torch.Size([4, 2, 3, 2])
    """

    def __init__(self, in_node_nf: int, hidden: int = 64, n_layers: int = 4, channels: int = 1, n_vectors: int = 2,
                 edge_nf: int = 0, velocity: bool = True, path: str = "auto"):
        super().__init__()
        _check_sizes(n_vectors=(n_vectors, 1))
        self.trunk = MCEGNN(in_node_nf, hidden, n_layers, channels, edge_nf, velocity=velocity, path=path)
        self.channels, self.n_vectors = channels, n_vectors
        self.readout = nn.Linear(channels, n_vectors, bias=False)               # A, acting on the channel axis

    def forward(self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"x must be the input positions, shape (batch, nodes, 3), got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        out = self.trunk(h, x, v, edge_attr, mask=mask)
        y = self.readout(out.x_channels - x[..., None])                        # (B, n, 3, K)
        if mask is not None:
            y = y * mask[..., None, None].to(y.dtype)
        return y


# ----------------------------------------------------------------------------------------------
# The dense path's kernels: pair tensors without gathers, one autograd node per layer
# ----------------------------------------------------------------------------------------------

def off_diagonal(t: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a ``(B, n, n, ...)`` pair tensor as ``(B, n, n-1, ...)``.

    Row ``i`` keeps the entries ``j != i`` in increasing ``j``. Pure slicing and reshaping (no index
    gather), so its backward is a cheap zero-padding rather than a scatter:
    drop the first of the ``n*n`` flattened entries, view the rest as ``(n-1, n+1)`` and drop the last
    column, which holds exactly the diagonal entries ``(1,1), (2,2), ...``.

    >>> off_diagonal(torch.arange(9).view(1, 3, 3)).tolist()
    [[[1, 2], [3, 5], [6, 7]]]
    """
    B, n = t.shape[:2]
    rest = t.shape[3:]
    return t.reshape(B, n * n, *rest)[:, 1:].reshape(B, n - 1, n + 1, *rest)[:, :, :n].reshape(B, n, n - 1, *rest)


def _pad_off_diagonal(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`off_diagonal`: ``(B, n, n-1, ...)`` back to ``(B, n, n, ...)`` with a zero diagonal."""
    B, n = t.shape[:2]
    rest = t.shape[3:]
    full = t.new_zeros(B, n * n, *rest)
    full[:, 1:].view(B, n - 1, n + 1, *rest)[:, :, :n] = t.reshape(B, n - 1, n, *rest)
    return full.view(B, n, n, *rest)


def _dense_pairs(B: int, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat node indices ``(row, col)`` of the pairs ``(i, j != i)`` of ``B`` complete graphs of ``n`` nodes, in
    :func:`off_diagonal` order (row-major, increasing ``j``), without ``nonzero`` (so it traces into a
    compiled graph). Same pairs as :func:`fully_connected_edges` of a full mask."""
    k = n - 1
    i = torch.arange(n, device=device)[:, None]
    t = torch.arange(k, device=device)[None, :]
    j = t + (t >= i).long()                                                   # skip the diagonal
    base = (torch.arange(B, device=device) * n)[:, None, None]
    return (base + i.expand(n, k)).reshape(-1), (base + j).reshape(-1)


def _silu_grad(grad: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.silu_backward(grad, pre)


def _sym_gram_grad(g: torch.Tensor, C: int) -> torch.Tensor:
    """``(C(C+1)/2, ...)`` gradients of the Gram upper triangle -> the symmetric ``(C, C, ...)`` matrix ``S``
    with ``d/d(diff) = diff @ S`` (off-diagonal entries once, diagonal entries twice)."""
    iu = torch.triu_indices(C, C, device=g.device)
    M = g.new_zeros(C, C, *g.shape[1:])
    M[iu[0], iu[1]] = g
    return M + M.transpose(0, 1)


DOUBLE_BACKWARD_MESSAGE = (
    "MCEGNN(path='dense') cannot be differentiated twice: its layers have a hand-written first-order "
    "backward, and a derivative with create_graph=True (e.g. forces = -dE/dx of an energy model, then a "
    "loss on the forces) would need the derivative of that backward. Build the model with path='edges' "
    "(same function and weights, plain autograd: model.path = 'edges' switches an existing model), or "
    "compute the derivative without create_graph=True if you do not backpropagate through it.")


class _DenseLayerFunction(torch.autograd.Function):
    """One dense (MC-)EGNN layer with a hand-written backward (see :meth:`MCEGNNLayer.forward_dense`).

    Autograd would record ~40 small operations per layer and keep every intermediate; here the
    forward runs without autograd, saves exactly the tensors the backward reads, and the backward
    skips what no one asked for (e.g. the last layer's ``h`` update when only positions enter the loss).
    Same function as :meth:`MCEGNNLayer.forward_edges` (tested, values and gradients, in float64).
    """

    @staticmethod
    def forward(ctx, cfg, h, x, v0, extra, emask, inv_deg, row, col, *params):
        C, n_blocks, update = cfg
        Wn, bn, W3, We, be, Wa, Wo, bo, Wc0, bc0, Wc2, bc2, Wv, bv = params
        B, n, H = h.shape
        k, E = n - 1, B * n * (n - 1)
        h2 = h.reshape(B * n, H)
        P = torch.addmm(bn, h2, Wn.t()).view(B, n, n_blocks, H)
        # vectors are channels-first, x (C, 3, B, n), and pair vectors edge-major, (C, 3, E): the 3 x C
        # algebra becomes a few elementwise products along long contiguous rows instead of E tiny matrix
        # products (and a compiler vectorises over nodes/edges, not over the 3 coordinates)
        xt = x.reshape(C, 3, B * n)
        diff = xt[:, :, row] - xt[:, :, col]                                  # (C,3,E): x_i - x_j
        iu = torch.triu_indices(C, C, device=x.device)
        inv2 = (diff[iu[0]] * diff[iu[1]]).sum(1).t()                         # (E, C(C+1)/2) Gram invariants
        if extra is not None:
            inv2 = torch.cat([inv2, extra.reshape(E, -1)], -1)
        pre = off_diagonal(P[:, :, 0, None] + P[:, None, :, 1]).reshape(E, H).addmm_(inv2, W3.t())
        s1 = F.silu(pre)
        # bias adds written after the matmul (not addmm): a fusing compiler folds them into the next kernel
        t = torch.mm(s1, We.t()).add_(be)
        m = F.silu(t)
        em = None if emask is None else emask.reshape(E, 1)
        if em is not None:
            m.mul_(em)
        agg = m.view(B, n, k, H).sum(2).view(B * n, H)
        q = torch.mm(agg, Wa.t()).add_(P[:, :, 2].reshape(B * n, H))
        sq = F.silu(q)
        h_new = torch.mm(sq, Wo.t()).add_(bo).add_(h2).view(B, n, H)
        c = s3 = w = sv = vs = None
        if update:
            c = torch.mm(m, Wc0.t()).add_(bc0)
            s3 = F.silu(c)
            w = torch.mm(Wc2, s3.t()) if bc2 is None else torch.addmm(bc2[:, None], Wc2, s3.t())  # (C*C, E): phi_x
            if em is not None:
                w.mul_(em.t())
            wt = w.view(C, C, E)
            ut = (diff[:, None] * wt[:, :, None]).sum(0)                       # (C,3,E): sum_c diff[:, c] w[c, e]
            u = ut.view(C, 3, B, n, k).sum(-1).mul_(inv_deg.view(1, 1, B, 1))   # (C,3,B,n)
            if Wv is not None and v0 is not None:
                sv = F.silu(P[:, :, 3].reshape(B * n, H))
                vs = torch.addmm(bv, sv, Wv.t()).t().reshape(C, 1, B, n)
                u.add_(v0[None] * vs)
            x_new = x + u
        else:
            x_new = x.clone()
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(h2, P, diff, inv2, pre, s1, t, m, agg, q, sq, c, s3, w, sv, vs, v0, em, inv_deg,
                              row, col, *params)
        return h_new, x_new

    @staticmethod
    def backward(ctx, gh_new, gx_new):
        if torch.is_grad_enabled():     # create_graph=True: this backward is written by hand, first order only
            raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)
        C, n_blocks, update = ctx.cfg
        (h2, P, diff, inv2, pre, s1, t, m, agg, q, sq, c, s3, w, sv, vs, v0, em, inv_deg, row, col,
         Wn, bn, W3, We, be, Wa, Wo, bo, Wc0, bc0, Wc2, bc2, Wv, bv) = ctx.saved_tensors
        B, n = P.shape[:2]
        k, H = n - 1, h2.shape[1]
        E = B * n * k
        grads = dict.fromkeys(("Wn", "bn", "W3", "We", "be", "Wa", "Wo", "bo", "Wc0", "bc0", "Wc2", "bc2", "Wv", "bv"))
        gP = h2.new_zeros(B, n, n_blocks, H)
        gh, gx = None, gx_new                                                 # residual paths
        gv0 = gextra = gm = gm_node = gdiff = None
        if gh_new is not None:                                                # node update
            g = gh_new.reshape(B * n, H)
            gh = g
            grads["Wo"], grads["bo"] = g.t() @ sq, g.sum(0)
            gq = _silu_grad(g @ Wo, q)
            gP[:, :, 2] = gq.view(B, n, H)
            grads["Wa"] = gq.t() @ agg
            gm_node = (gq @ Wa).view(B, n, 1, H)                             # d/dm of sum_j m_ij: broadcast
        if update and gx_new is not None:                                     # coordinate update
            if vs is not None:
                gvs = (gx_new * v0[None]).sum(1).reshape(C, B * n).t()           # (B*n, C)
                if ctx.needs_input_grad[3]:
                    gv0 = (gx_new * vs).sum(0)                                  # (3,B,n)
                grads["Wv"], grads["bv"] = gvs.t() @ sv, gvs.sum(0)
                gP[:, :, 3] = _silu_grad(gvs @ Wv, P[:, :, 3].reshape(B * n, H)).view(B, n, H)
            gus = (gx_new * inv_deg.view(1, 1, B, 1))[..., None].expand(C, 3, B, n, k).reshape(C, 3, E)
            wt = w.view(C, C, E)
            gw = (diff[:, None] * gus[None]).sum(2).reshape(C * C, E)         # sum_d gus[d, e] diff[d, c]
            gdiff = (wt[:, :, None] * gus[None]).sum(1)                        # (C,3,E): sum_e gus[d, e] w[c, e]
            if em is not None:
                gw = gw * em.t()
            grads["Wc2"], grads["bc2"] = gw @ s3, (None if bc2 is None else gw.sum(1))
            gc = _silu_grad(gw.t() @ Wc2, c)
            grads["Wc0"], grads["bc0"] = gc.t() @ m, gc.sum(0)
            gm = gc @ Wc0
        if gm_node is not None:
            gm = (gm_node.expand(B, n, k, H) if gm is None else gm.view(B, n, k, H) + gm_node).reshape(E, H)
        if gm is not None:                                                    # message MLP phi_e
            if em is not None:
                gm = gm * em
            gt = _silu_grad(gm, t)
            grads["We"], grads["be"] = gt.t() @ s1, gt.sum(0)
            gpre = _silu_grad(gt @ We, pre)
            grads["W3"] = gpre.t() @ inv2
            ginv = gpre @ W3
            gpre4 = gpre.view(B, n, k, H)
            gP[:, :, 0] = gpre4.sum(2)
            gP[:, :, 1] = _pad_off_diagonal(gpre4).sum(1)
            n_gram = C * (C + 1) // 2
            S = _sym_gram_grad(ginv[:, :n_gram].t(), C)                        # (C,C,E), symmetric
            g_gram = (diff[:, None] * S[:, :, None]).sum(0)                    # (C,3,E): diff @ S
            gdiff = g_gram if gdiff is None else gdiff + g_gram
            if ctx.needs_input_grad[4]:
                gextra = ginv[:, n_gram:].reshape(B, n, k, -1)
        gP2 = gP.view(B * n, n_blocks * H)
        grads["Wn"], grads["bn"] = gP2.t() @ h2, gP2.sum(0)
        gh = gP2 @ Wn if gh is None else gP2 @ Wn + gh
        if gdiff is not None:                                                 # diff = x_i - x_j
            receivers = gdiff.view(C, 3, B, n, k).sum(-1)                      # edges are grouped by i
            senders = _pad_off_diagonal(gdiff.view(C * 3 * B, n, k)).sum(1).view(C, 3, B, n)
            gxd = receivers - senders
            gx = gxd if gx is None else gx + gxd
        gparams = [grads[name] if p is not None else None
                   for name, p in zip(grads, (Wn, bn, W3, We, be, Wa, Wo, bo, Wc0, bc0, Wc2, bc2, Wv, bv))]
        return (None, gh.view(B, n, H), gx, gv0, gextra, None, None, None, None, *gparams)



# ----------------------------------------------------------------------------------------------
# N-body: EGNN's featurisation and loss
# ----------------------------------------------------------------------------------------------

def nbody_inputs(loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor):
    """EGNN's N-body featurisation (Satorras et al. 2021, Sec. 5.1): ``h_i = |v_i|``, ``a_ij = q_i q_j``.

    Shapes: ``loc, vel (B,n,3)``, ``charges (B,n,1)``; returns ``(h (B,n,1), x, v, edge_attr (B,n,n,1))``.
    """
    if loc.ndim != 3 or loc.shape[-1] != 3 or vel.shape != loc.shape or charges.shape != loc.shape[:2] + (1,):
        raise ValueError(f"expected loc, vel (B, n, 3) and charges (B, n, 1), got {tuple(loc.shape)}, "
                         f"{tuple(vel.shape)}, {tuple(charges.shape)}")
    h = vel.norm(dim=-1, keepdim=True)
    edge_attr = charges[:, :, None, :] * charges[:, None, :, :]
    return h, loc, vel, edge_attr


def predict_nbody(model: nn.Module, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
    """Predicted positions ``(B,n,3)`` of an :class:`EGNN` or :class:`MCEGNN` built with ``in_node_nf=1, edge_nf=1``."""
    h, x, v, ea = nbody_inputs(loc, vel, charges)
    return model(h, x, v, ea).x


def nbody_mse(model: nn.Module, batch) -> torch.Tensor:
    """The loss for :func:`symviz.train.fit` on ``(loc, vel, charges, target)`` batches: position MSE."""
    loc, vel, charges, target = batch
    return ((predict_nbody(model, loc, vel, charges) - target) ** 2).mean()
