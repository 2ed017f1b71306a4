"""The exercise checks of chapter 05 (crystal (space-group) equivariance): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_pair_orbits', 'check_orbit_linear']


def _check_05_cases():
    """(name, perms (m, n), reference pair orbits (n, n)) from spglib on three lattices."""
    return [(name, perms, po) for name, _, perms, po in _check_05_structures()]


def _check_05_structures():
    """(name, structure, perms (m, n), reference pair orbits (n, n)) from spglib on three lattices."""
    from pymatgen.core import Lattice, Structure

    from symviz.data import crystals as C

    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    cases = [("fcc cubic cell (4 sites, Fm-3m)", C.lattice_supercell("fcc", "Cu", size=(1, 1, 1))),
             ("hcp 2x2x1 supercell (8 sites, P6_3/mmc)", C.lattice_supercell("hcp", "Cu", size=(2, 2, 1))),
             ("rutile TiO2 (6 sites, P4_2/mnm, two site orbits)", rutile)]
    out = []
    for name, s in cases:
        perms = C.site_permutations(s)
        out.append((name, s, perms, C.pair_orbits(perms)))
    return out


def check_pair_orbits(pair_orbits_fn) -> CheckResult:
    """Check a learner's ``pair_orbits_fn(perms) -> (n, n) labels`` against the orbits from spglib.

    ``perms: (m, n)`` LongTensor, row ``g`` a site permutation of the space group (``x -> x[perms[g]]``).
    Any labelling is accepted as long as two pairs share a label exactly when an operation maps one
    onto the other (the partition is compared, not the label values).
    """
    import numpy as np

    from symviz.data.crystals import canonical_labels

    for name, perms, want in _check_05_cases():
        n = perms.shape[1]
        try:
            got = pair_orbits_fn(perms.clone())
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on the {name} your function raised {type(exc).__name__}: {exc}")
        got = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got)
        if got.shape != (n, n):
            return verdict(False, "", f"on the {name}: expected an ({n}, {n}) array of orbit labels, got shape {got.shape}")
        g, w = canonical_labels(got), canonical_labels(want)
        if (g == w).all():
            continue
        k_got, k_want = len(np.unique(got)), int(w.max()) + 1
        # find a pair of pairs on which the partitions disagree, to give a concrete hint
        a, b = np.argwhere(g != w)[0]
        same_want = np.argwhere(w == w[a, b])
        same_got = np.argwhere(g == g[a, b])
        if k_got > k_want:
            other = next(tuple(q) for q in same_want if g[tuple(q)] != g[a, b])
            hint = (f"pairs {(int(a), int(b))} and {tuple(int(v) for v in other)} are related by a symmetry "
                    "operation but got different labels (did you apply every operation, to both i and j?)")
        else:
            other = next((tuple(q) for q in same_got if w[tuple(q)] != w[a, b]), (int(a), int(b)))
            hint = (f"pairs {(int(a), int(b))} and {tuple(int(v) for v in other)} got the same label but no "
                    "operation maps one onto the other (e.g. (i, j) and (j, i) are not always in one orbit, "
                    "and a distance alone does not define an orbit)")
        return verdict(False, "", f"on the {name}: you found {k_got} orbits, spglib's group gives {k_want}; {hint}.")
    return verdict(True, "your pair orbits match the ones computed from spglib's operations on fcc, hcp and rutile.", "")


def _orbit_matrices(po, how: str):
    """``(K, n, n)`` orbit matrices: the reference (``"mean"``) and the plausible mistakes the verdict names."""
    import numpy as np
    import torch

    from symviz.nn.crystal import orbit_basis

    ind = orbit_basis(po, normalize=False)
    if how == "mean":
        return orbit_basis(po)
    if how == "sum":
        return ind
    if how == "transposed":
        return orbit_basis(po).transpose(1, 2)
    if how == "transposed labels":
        return orbit_basis(np.asarray(po).T)
    if how == "orbit size":
        return ind / ind.sum(dim=(1, 2), keepdim=True)
    if how == "columns":
        return ind / ind.sum(dim=1, keepdim=True).clamp(min=1.0)
    if how == "n":
        return ind / ind.shape[1]
    raise ValueError(how)  # pragma: no cover


_MISTAKES = (
    ("sum", "you summed h_j over each orbit; the layer averages: divide by k_o(i), the number of j with (i, j) in o"),
    ("transposed", "you used the transposed orbit matrix (a sum over i instead of j): y_i reads the h_j of the pairs "
                   "(i, j), row i of A_o"),
    ("transposed labels", "you read the orbit of (j, i) instead of (i, j): pair_orbits[i, j] labels the pair whose "
                          "message goes from j to i"),
    ("orbit size", "you divided by the size of the whole orbit (all its pairs); divide by k_o(i), the number of j "
                   "with (i, j) in o, so that each output is a mean over its own neighbours of that orbit"),
    ("columns", "you normalised the columns of A_o (counts over i); normalise each row i by k_o(i)"),
    ("n", "you divided by the number of sites n; divide by k_o(i), the number of j with (i, j) in o"),
)


def check_orbit_linear(layer_cls) -> CheckResult:
    """Check a learner's orbit-tied linear layer class (chapter 05; reference :class:`symviz.nn.crystal.OrbitLinear`).

    ``layer_cls(pair_orbits, in_dim, out_dim)`` with ``pair_orbits: (n, n)`` labels ``0..K-1`` must build a
    module with parameters ``weight (K, in_dim, out_dim)`` and ``bias (out_dim,)``, initialised uniform in
    ``+-1/sqrt(K * in_dim)``, whose ``forward(h)`` maps ``h (..., n, in_dim)`` to
    ``y_i = bias + sum_o 1/k_o(i) sum_{j: (i, j) in o} h_j weight[o]``, ``(..., n, out_dim)``.
    Tested on fcc, hcp and rutile (whose two site orbits make ``(i, j)`` and ``(j, i)`` different orbits): every
    space-group operation (sites relabelled ``x -> x[:, p_g]``, float64), the parameters, and the outputs with
    random weights copied into the reference. The verdict names the mistake it recognises.
    """
    import math

    import numpy as np
    import torch

    from symviz.data.crystals import pair_distances
    from symviz.equivariance import relative_error
    from symviz.nn.crystal import OrbitLinear

    in_dim, out_dim = 3, 2
    gen = torch.Generator().manual_seed(5)
    for name, structure, perms, po in _check_05_structures():
        n, K = perms.shape[1], int(po.max()) + 1
        try:
            torch.manual_seed(0)
            layer = layer_cls(np.array(po), in_dim, out_dim)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on the {name}: {getattr(layer_cls, '__name__', 'your class')}(pair_orbits, "
                                      f"in_dim={in_dim}, out_dim={out_dim}) raised {type(exc).__name__}: {exc}")
        if not isinstance(layer, torch.nn.Module):
            return verdict(False, "", f"your class must be a torch.nn.Module (class MyOrbitLinear(nn.Module)), "
                                      f"got a {type(layer).__name__}")
        params = dict(layer.named_parameters())
        weight, bias = params.get("weight"), params.get("bias")
        if weight is None or bias is None:
            return verdict(False, "", f"the layer needs two nn.Parameter attributes, weight (K, in_dim, out_dim) and "
                                      f"bias (out_dim,); found {sorted(params) or 'no parameters'}")
        h = torch.randn(4, n, in_dim, dtype=torch.float64, generator=gen)
        try:
            layer = layer.double()
            y = layer(h)
        except Exception as exc:
            return verdict(False, "", f"on the {name} (float64 input of shape {tuple(h.shape)}) your layer raised "
                                      f"{type(exc).__name__}: {exc} (keep the tensors forward needs as buffers, "
                                      "self.register_buffer(...), so that .double() and .to(device) convert them)")
        if not torch.is_tensor(y) or y.shape != (4, n, out_dim):
            return verdict(False, "", f"on the {name}: expected an output of shape (4, {n}, {out_dim}) (..., n, out_dim), "
                                      f"got {getattr(y, 'shape', type(y).__name__)}")
        # equivariance: relabelling the sites by every operation relabels the output
        err = 0.0
        with torch.no_grad():
            for p in perms:
                err = max(err, float(relative_error(layer(h[:, p]) - y[:, p], y[:, p], dim=(-2, -1)).max()))
        if not err <= 1e-9:
            return verdict(False, "", f"on the {name} the layer is not equivariant: relabelling the sites by a "
                                      f"space-group operation (x -> x[:, p_g]) does not relabel the output the same way "
                                      f"(relative error {err:.2g}). Pairs (i, j) of one pair orbit must share one weight "
                                      "matrix: tie the weights by orbit, not per site pair.")
        shells = len(np.unique(np.round(pair_distances(structure), 3)))
        if tuple(weight.shape) != (K, in_dim, out_dim) or tuple(bias.shape) != (out_dim,):
            extra = (f" {weight.shape[0]} is the number of distinct pair distances here: one weight per distance shell "
                     f"ties pairs at equal distance in different orbits together (section 1's picture); the orbits are "
                     "finer" if weight.ndim == 3 and weight.shape[0] == shells != K else "")
            return verdict(False, "", f"on the {name} ({K} pair orbits, in_dim={in_dim}, out_dim={out_dim}): expected "
                                      f"weight {(K, in_dim, out_dim)} and bias {(out_dim,)}, got {tuple(weight.shape)} "
                                      f"and {tuple(bias.shape)}.{extra}")
        n_params = sum(q.numel() for q in layer.parameters() if q.requires_grad)
        if n_params != K * in_dim * out_dim + out_dim:
            return verdict(False, "", f"on the {name}: the layer has {n_params} trainable parameters; one weight matrix "
                                      f"per pair orbit and a bias make K*in*out + out = {K * in_dim * out_dim + out_dim}")
        bound = 1.0 / math.sqrt(K * in_dim)
        for pname, q in (("weight", weight), ("bias", bias)):
            q = q.detach()
            if not (bool(torch.isfinite(q).all()) and float(q.abs().max()) <= bound * (1 + 1e-6) and float(q.std()) > 0.1 * bound):
                return verdict(False, "", f"initialise {pname} uniform in +-1/sqrt(K*in_dim) = +-{bound:.3g} (nn.Linear's "
                                          f"rule with the fan-in K*in_dim, as the paper's code): on the {name} it "
                                          f"ranges over [{float(q.min()):.3g}, {float(q.max()):.3g}]")
        # same weights in the learner's layer and the reference: same outputs
        W = torch.randn(K, in_dim, out_dim, dtype=torch.float64, generator=gen)
        b = torch.randn(out_dim, dtype=torch.float64, generator=gen)
        with torch.no_grad():
            weight.copy_(W)
            bias.copy_(b)
        try:
            got = layer(h)
        except Exception as exc:
            return verdict(False, "", f"on the {name} your layer raised {type(exc).__name__}: {exc}")
        want = OrbitLinear(po, in_dim, out_dim).double()
        with torch.no_grad():
            want.weight.copy_(W)
            want.bias.copy_(b)
            want = want(h)
        diff = float(relative_error(got.detach() - want, want, dim=(-2, -1)).max())
        if diff > 1e-6:    # the reference keeps its orbit matrices in float32 (rounding ~1e-8)
            hint = ("compute y_i = bias + sum over orbits o of the mean of h_j over the j with (i, j) in o, "
                    "times weight[o]")
            for how, message in _MISTAKES:
                A = _orbit_matrices(po, how)
                cand = torch.einsum("kij,bjc,kcd->bid", A, h, W) + b
                if torch.allclose(got.detach(), cand, rtol=1e-6, atol=1e-8):
                    hint = message
                    break
            return verdict(False, "", f"equivariant, but on the {name} with the same weights as the reference the "
                                      f"output differs by {diff:.2g} (relative): {hint}.")
        got.sum().backward()
        if weight.grad is None or bias.grad is None or float(weight.grad.abs().sum()) == 0:
            return verdict(False, "", "the output does not depend on weight through autograd: use the nn.Parameter "
                                      "in forward (no .detach(), no numpy), or the network cannot train it")
        try:
            y32 = layer.float()(h.float())
        except Exception as exc:
            return verdict(False, "", f"in float32 (how the chapter trains) your layer raised {type(exc).__name__}: {exc}")
        if y32.dtype != torch.float32:
            return verdict(False, "", f"a float32 input must give a float32 output (how the chapter trains), got {y32.dtype}")
    return verdict(True, "your orbit-tied linear layer matches the reference on fcc, hcp and rutile, with one weight "
                         "matrix per pair orbit, and commutes with every space-group operation.", "")
