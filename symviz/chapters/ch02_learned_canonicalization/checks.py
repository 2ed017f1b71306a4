"""The exercise checks of chapter 02 (learned canonicalization): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_gram_schmidt_frame', 'check_canonicalize']


def check_gram_schmidt_frame(frame_fn) -> "CheckResult":
    """Check a learner's ``frame_fn(v1, v2) -> (B, 3, 3)`` SO(3) frame from two vectors ``(B, 3)``.

    Expected (Kaba et al., ICML 2023, §3.3): Gram-Schmidt with the axes as *columns*:
    ``e1 = v1/|v1|``, ``e2 = normalize(v2 − ⟨v2,e1⟩e1)``, ``e3 = e1 × e2``. Checks, in float64, that the
    frames are orthonormal with det +1, equal the reference :func:`symviz.nn.canonical.gram_schmidt`,
    and are equivariant: ``frame_fn(v1 Qᵀ, v2 Qᵀ) = Q · frame_fn(v1, v2)`` for random rotations ``Q``
    (vectors are row vectors, rotated as ``v @ Q.T``; the frames' columns rotate as points with 3
    channels, :func:`symviz.equivariance.check_equivariance`'s ``"point_channels"``), relative error
    below 1e-8.
    """
    import torch

    from symviz.equivariance import check_equivariance
    from symviz.nn.canonical import gram_schmidt

    g = torch.Generator().manual_seed(7)
    v1 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    v2 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    try:
        F = frame_fn(v1, v2)
    except Exception as exc:  # the learner's code may fail in any way: report it, never raise
        return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
    if not torch.is_tensor(F) or tuple(F.shape) != (16, 3, 3):
        return verdict(False, "", f"expected frames of shape (B, 3, 3) = (16, 3, 3), got "
                                  f"{tuple(F.shape) if torch.is_tensor(F) else type(F).__name__}")
    F = F.to(torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    if not torch.allclose(F.transpose(-1, -2) @ F, eye.expand(16, 3, 3), atol=1e-8):
        return verdict(False, "", "your frames are not orthonormal (Fᵀ F ≠ I): normalise each axis and remove "
                                  "from e2 its component along e1")
    det = torch.det(F)
    if not torch.allclose(det, torch.ones_like(det), atol=1e-8):
        return verdict(False, "", f"some frames have det = {float(det.min()):+.3f}: for SO(3) take e3 = e1 × e2")
    want = gram_schmidt(v1, v2)
    if not torch.allclose(F, want, atol=1e-8):
        if torch.allclose(F.transpose(-1, -2), want, atol=1e-8):
            return verdict(False, "", "your axes are the rows of the matrix: stack them as columns (dim=-1)")
        return verdict(False, "", "orthonormal with det +1, but not the Gram-Schmidt frame of (v1, v2): e1 must "
                                  "point along v1 and e2 lie in the plane of v1 and v2, on v2's side")
    try:
        worst = check_equivariance(frame_fn, (v1, v2), ("vector", "vector"), "point_channels", group="SO(3)",
                                   trials=5, seed=7).max_error
    except Exception as exc:
        return verdict(False, "", f"your function raised {type(exc).__name__} on rotated vectors: {exc}")
    if not worst <= 1e-8:
        return verdict(False, "", f"not equivariant: frame_fn(v Qᵀ) differs from Q·frame_fn(v) by {worst:.2e} "
                                  "(relative error, worst of 5 random rotations Q)")
    return verdict(True, f"your Gram-Schmidt frame is orthonormal, has det +1, matches the reference and is "
                         f"SO(3)-equivariant (max error {worst:.1e}).", "")


def _fmt(t) -> str:
    return "[" + ", ".join(f"{float(v):+.5f}" for v in t) + "]"


def check_canonicalize(canonicalize_fn) -> "CheckResult":
    """Check a learner's C_n canonicalizer forward pass ``canonicalize_fn(x, score, n, tau) -> CanonicalizationResult``.

    Expected (Kaba et al., ICML 2023; the reference is :func:`symviz.nn.canonical.canonicalize_cn`): the scores
    ``s_j = score(r^{-j}·x)`` of the n rotated copies ``(B, n)``, the element ``h(x) = argmax_j s_j``, the
    straight-through weights ``onehot(h) + softmax(s/τ) − stopgrad(softmax(s/τ))`` and the canonical input
    ``r^{-h(x)}·x``. Run in float64 on random 12x12 images with a small scoring CNN (a
    :class:`~symviz.nn.canonical.CnImageCanonicalizer`'s ``score_images``), for C4 (τ = 1) and C8 (τ = 0.5):
    scores, element, weights and canonical images equal the reference's, the C4 canonical images do not move
    when the input turns by 90° (exactly), and the gradients of a loss on the canonical images reach the scoring
    network as the reference's do (the softmax gradient). The global random state is left alone.
    """
    import torch

    from symviz.nn.canonical import CanonicalizationResult, CnImageCanonicalizer, canonicalize_cn, rotate_images_cn

    with torch.random.fork_rng():
        torch.manual_seed(11)
        cases = []
        for n, tau in ((4, 1.0), (8, 0.5)):
            canon = CnImageCanonicalizer(n, in_channels=1, hidden=4).double()
            for m in canon.phi:   # non-zero biases: scores of different sizes, no ties
                if getattr(m, "bias", None) is not None:
                    torch.nn.init.normal_(m.bias, std=0.3)
            cases.append((n, tau, canon, torch.rand(6, 1, 12, 12, dtype=torch.float64),
                          torch.randn(6, 1, 12, 12, dtype=torch.float64)))

    def run(fn, canon, x, n, tau, probe):
        canon.zero_grad(set_to_none=True)
        res = fn(x, canon.score_images, n, tau)
        if isinstance(res, CanonicalizationResult) and torch.is_tensor(res.canonical) and res.canonical.requires_grad:
            (res.canonical * probe).sum().backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in canon.parameters()]
        return res, grads

    for n, tau, canon, x, probe in cases:
        where = f"C{n} (τ = {tau:g}), images (6, 1, 12, 12)"
        try:
            got, got_grads = run(canonicalize_fn, canon, x, n, tau, probe)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on {where} your function raised {type(exc).__name__}: {exc}")
        want, want_grads = run(canonicalize_cn, canon, x, n, tau, probe)
        if not isinstance(got, CanonicalizationResult):
            return verdict(False, "", f"return a CanonicalizationResult(element=..., scores=..., canonical=..., "
                                      f"weights=...), got {type(got).__name__}")
        shapes = {"scores": (6, n), "element": (6,), "canonical": (6, 1, 12, 12), "weights": (6, n)}
        for name, shape in shapes.items():
            t = getattr(got, name)
            if not torch.is_tensor(t) or tuple(t.shape) != shape:
                return verdict(False, "", f"on {where}: result.{name} should be a tensor of shape {shape}, got "
                                          f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        s, ws = got.scores.detach(), want.scores.detach()
        if not torch.allclose(s, ws, rtol=1e-6, atol=1e-9):
            example = f"image 0: your scores {_fmt(s[0])}, expected {_fmt(ws[0])}"
            if torch.allclose(s, s[:, :1].expand_as(s), atol=1e-12):
                why = ("all n scores of an image are equal: you scored only the unrotated image. Score every rotated "
                       "copy r^{-j}·x, j = 0..n-1: that lifting is what makes the scores shift with the input")
            elif torch.allclose(s, ws[:, (-torch.arange(n)) % n], rtol=1e-6, atol=1e-9):
                why = ("your scores come in the opposite order: you rotated the copies the wrong way. Copy j must be "
                       "r^{-j}·x, rotate_images_cn(x, -j, n)")
            else:
                why = "the scores must be s_j = score(r^{-j}·x) for j = 0..n-1, shape (B, n)"
            return verdict(False, "", f"on {where}: {why} ({example})")
        if got.element.dtype in (torch.float16, torch.float32, torch.float64) or not torch.equal(got.element, want.element):
            if torch.equal(got.element.long(), s.argmin(-1)):
                why = "you picked the lowest score (argmin): h(x) is the rotation with the highest score (argmax)"
            else:
                why = "result.element must be argmax_j s_j, integer indices (B,)"
            return verdict(False, "", f"on {where}: {why} (your elements {got.element.tolist()}, expected "
                                      f"{want.element.tolist()})")
        w = got.weights.detach()
        if not torch.allclose(w, want.weights.detach(), rtol=0, atol=1e-12):
            soft = torch.softmax(ws / tau, -1)
            if torch.allclose(w, soft, atol=1e-9) or torch.allclose(w, torch.softmax(ws, -1), atol=1e-9):
                why = ("your weights are the softmax itself: its forward value blends the n rotations, so the "
                       "canonical image is a blur and not one exact rotation. Use straight-through: "
                       "onehot(argmax) + softmax − softmax.detach()")
            else:
                why = "the forward value of the weights must be exactly the one-hot vector of h(x)"
            return verdict(False, "", f"on {where}: {why} (image 0: your weights {_fmt(w[0])})")
        c, wc = got.canonical.detach(), want.canonical.detach()
        if not torch.allclose(c, wc, rtol=1e-9, atol=1e-12):
            h = want.element
            plus = torch.stack([rotate_images_cn(x[i:i + 1], int(h[i]), n)[0] for i in range(len(x))])
            if torch.allclose(c, x, atol=1e-12):
                why = "your canonical images are the inputs themselves: un-rotate each image by its h(x), r^{-h(x)}·x"
            elif torch.allclose(c, plus, atol=1e-9):
                why = ("you rotated by h(x) instead of undoing it: the canonical image is r^{-h(x)}·x (the copy the "
                       "winning score was computed on)")
            else:
                why = "the canonical image must be r^{-h(x)}·x, the rotated copy whose score won"
            worst = int((c - wc).flatten(1).norm(dim=1).argmax())
            return verdict(False, "", f"on {where}: {why} (largest difference at image {worst}, h = {int(h[worst])})")
        if n == 4:
            try:
                moved = canonicalize_fn(torch.rot90(x, 1, dims=(-2, -1)), canon.score_images, n, tau).canonical
            except Exception as exc:
                return verdict(False, "", f"on rotated images your function raised {type(exc).__name__}: {exc}")
            if not torch.allclose(moved.detach(), c, rtol=0, atol=1e-12):
                err = float((moved.detach() - c).norm() / c.norm())
                return verdict(False, "", f"the canonical images move when the input turns by 90° (relative change "
                                          f"{err:.2e}): h must turn with the input")
        scale = max(max(float(g.abs().max()) for g in want_grads), 1e-30)
        worst = max(float((a - b).abs().max()) for a, b in zip(got_grads, want_grads)) / scale
        if worst > 1e-6:
            if max(float(g.abs().max()) for g in got_grads) == 0.0:
                why = ("no gradient reaches the scoring network: a hard one-hot (argmax, indexing) has none. Add the "
                       "straight-through term softmax(s/τ) − softmax(s/τ).detach() to the one-hot weights and mix "
                       "the rotated copies with them")
            else:
                why = ("the gradient reaching the scoring network differs from the straight-through softmax "
                       "gradient (is the softmax taken of s/τ, over the n elements, and are the copies mixed with "
                       "the weights?)")
            return verdict(False, "", f"on {where}: {why} (worst relative gradient difference {worst:.2e})")
    return verdict(True, "your canonicalizer scores every rotated copy, picks the argmax straight-through and "
                         "un-rotates: identical to the reference for C4 and C8 (scores, element, one-hot weights, "
                         "canonical images), exactly C4-invariant canonical images, and the softmax gradient "
                         "reaches the scoring network.", "")
