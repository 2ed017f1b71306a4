"""The exercise checks of chapter 03 (equivariant adaptation of a pretrained model): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_canonicalization_prior', 'check_adaptation_objective', 'check_adaptation_step']


def check_canonicalization_prior(prior_fn, check_continuous: bool = False) -> CheckResult:
    """Check the learner's ``prior_fn(scores) -> scalar`` against :func:`symviz.losses.canonicalization_prior`.

    Discrete case: ``scores: (B, n)`` logits, the mean cross-entropy towards element 0 (the identity),
    value and gradient. Continuous case (the chapter's bonus, only when ``check_continuous=True``):
    ``scores: (B, d, d)`` matrices, the mean squared Frobenius distance to the identity matrix.
    """
    import torch

    from symviz.losses import canonicalization_prior

    g = torch.Generator().manual_seed(3)
    cases = [("C4 logits (8, 4)", torch.randn(8, 4, generator=g, dtype=torch.float64) * 3),
             ("C8 logits (5, 8)", torch.randn(5, 8, generator=g, dtype=torch.float64))]
    if check_continuous:
        cases.append(("2x2 matrices (6, 2, 2)", torch.randn(6, 2, 2, generator=g, dtype=torch.float64)))
        cases.append(("3x3 matrices (4, 3, 3)", torch.randn(4, 3, 3, generator=g, dtype=torch.float64)))
    for name, s in cases:
        want = canonicalization_prior(s)
        s1 = s.clone().requires_grad_(True)
        try:
            got = prior_fn(s1)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on {name} your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"on {name}: expected a scalar tensor (the batch mean), got "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(torch.float64), want, rtol=1e-6, atol=1e-8):
            hint = ("cross-entropy of softmax(scores) towards index 0, averaged over the batch"
                    if s.ndim == 2 else "||R - I||_F^2 (squared, summed over entries), averaged over the batch")
            return verdict(False, "", f"on {name}: got {float(got.detach()):.6f}, expected {float(want):.6f}. "
                                      f"Hint: {hint}.")
        if not got.requires_grad:
            return verdict(False, "", f"on {name}: the value is right but carries no gradient; keep it a torch "
                                      "expression of scores (no .item(), numpy or argmax)")
        (grad,) = torch.autograd.grad(got.reshape(()), s1)
        s2 = s.clone().requires_grad_(True)
        (want_grad,) = torch.autograd.grad(canonicalization_prior(s2), s2)
        if not torch.allclose(grad.to(torch.float64), want_grad, rtol=1e-6, atol=1e-9):
            return verdict(False, "", f"on {name}: right value but wrong gradient (max diff "
                                      f"{float((grad - want_grad).abs().max()):.2e})")
    what = "discrete (cross-entropy to the identity) and continuous (distance to I)" if check_continuous else \
        "discrete (cross-entropy to the identity)"
    return verdict(True, f"your canonicalization prior matches the reference in value and gradient, {what}.", "")


def _objective_cases():
    """Random (logits, labels, scores, β) in float64: C4 and C8 scores, β = 0 (no prior), 0.5 and 3."""
    import torch

    g = torch.Generator().manual_seed(5)
    cases = []
    for B, classes, n, beta in ((8, 10, 4, 3.0), (6, 5, 8, 0.5), (7, 10, 4, 0.0)):
        cases.append((torch.randn(B, classes, generator=g, dtype=torch.float64) * 2,
                      torch.randint(0, classes, (B,), generator=g),
                      torch.randn(B, n, generator=g, dtype=torch.float64) * 2, beta))
    return cases


def check_adaptation_objective(objective_fn) -> CheckResult:
    """Check the learner's ``objective_fn(logits, labels, scores, beta) -> scalar`` against
    :func:`symviz.chapters.ch03_equivariant_adaptation.adaptation.adaptation_objective`.

    Expected (Mondal et al., NeurIPS 2023, Sec. 4): ``CE(logits, labels) + β · L_prior(scores)`` with
    ``L_prior`` the batch mean of ``−log softmax(scores)[:, 0]`` (cross-entropy towards the identity, element 0).
    Compared in float64 on C4 and C8 scores with β = 3, 0.5 and 0, value and gradients (with respect to the
    logits and the scores). A wrong answer gets a diagnosis where it is a common one: the prior's sign flipped,
    the prior towards another element, β on the task loss instead of the prior, β left out, a sum instead of
    the batch mean.
    """
    import torch
    import torch.nn.functional as F

    from symviz.chapters.ch03_equivariant_adaptation.adaptation import adaptation_objective

    for logits, labels, scores, beta in _objective_cases():
        where = f"β = {beta:g}, logits {tuple(logits.shape)}, scores {tuple(scores.shape)} (C{scores.shape[1]})"
        lg, sc = logits.clone().requires_grad_(True), scores.clone().requires_grad_(True)
        try:
            got = objective_fn(lg, labels, sc, beta)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on {where} your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"on {where}: expected a scalar tensor, got "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        want = adaptation_objective(logits, labels, scores, beta)
        value = float(got.detach())
        if not abs(value - float(want)) <= 1e-8 + 1e-6 * abs(float(want)):
            task = float(F.cross_entropy(logits, labels))
            prior = float(-torch.log_softmax(scores, 1)[:, 0].mean())
            alternatives = [
                (task - beta * prior, "the prior has the wrong sign: it must be the cross-entropy towards the identity, "
                                      "−log softmax(scores)[:, 0] (positive), added to the task loss"),
                (beta * task + prior, "β multiplies the task loss: it weighs the prior, CE + β·prior"),
                (task + prior, "β is missing: the prior is weighted by β, CE + β·prior"),
                (task + beta * len(scores) * prior, "the prior is summed over the batch: take its batch mean"),
            ]
            alternatives += [(task + beta * float(-torch.log_softmax(scores, 1)[:, k].mean()),
                              f"your prior pulls towards element {k}: the identity is element 0 (no rotation)")
                             for k in range(1, scores.shape[1])]
            alternatives.append((task + beta * float(F.cross_entropy(scores, scores.argmax(1))),
                                 "your prior pulls towards the element the canonicalizer already picks (argmax): it "
                                 "must pull towards the identity, element 0, whatever the scores"))
            why = next((text for v, text in alternatives if beta > 0 and abs(value - v) <= 1e-8 + 1e-6 * abs(v)),
                       "expected CE(logits, labels) + β · mean(−log softmax(scores)[:, 0])")
            return verdict(False, "", f"on {where}: got {value:.6f}, expected {float(want):.6f} (task CE {task:.4f}, "
                                      f"prior {prior:.4f}): {why}")
        if not got.requires_grad:
            return verdict(False, "", f"on {where}: the value is right but carries no gradient; keep it a torch "
                                      "expression of logits and scores (no .item(), numpy or argmax)")
        grads = torch.autograd.grad(got.reshape(()), (lg, sc), allow_unused=True)
        lg2, sc2 = logits.clone().requires_grad_(True), scores.clone().requires_grad_(True)
        want2 = adaptation_objective(lg2, labels, sc2, beta)
        if beta > 0:
            want_grads = torch.autograd.grad(want2, (lg2, sc2))
        else:
            want_grads = (torch.autograd.grad(want2, lg2)[0], torch.zeros_like(scores))
        for name, a, b in (("logits", grads[0], want_grads[0]), ("scores", grads[1], want_grads[1])):
            a = torch.zeros_like(b) if a is None else a
            if not torch.allclose(a.to(torch.float64), b, rtol=1e-6, atol=1e-9):
                return verdict(False, "", f"on {where}: right value but wrong gradient with respect to the {name} "
                                          f"(max difference {float((a - b).abs().max()):.2e})")
    return verdict(True, "your adaptation objective CE + β·prior matches the reference in value and gradient "
                         "(C4 and C8 scores, β = 3, 0.5 and 0).", "")


def _step_setup():
    """A tiny adapted model (C4 canonicalizer + linear backbone on 8x8 images), two batches, in float64."""
    import torch
    from torch import nn

    from symviz.chapters.ch03_equivariant_adaptation.adaptation import AdaptedModel
    from symviz.nn.canonical import C4ImageCanonicalizer

    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = AdaptedModel(C4ImageCanonicalizer(1, hidden=4, kernel_size=3),
                             nn.Sequential(nn.Flatten(), nn.Linear(64, 5))).double()
        for m in model.canonicalizer.phi:   # non-zero biases: scores of different sizes, no ties
            if getattr(m, "bias", None) is not None:
                nn.init.normal_(m.bias, std=0.3)
        batches = [(torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 5, (6,))) for _ in range(2)]
    return model, batches


def check_adaptation_step(step_fn) -> CheckResult:
    """Check the learner's ``step_fn(model, batch, optimizer, objective, beta) -> loss``: one training step.

    Expected (the reference is :func:`symviz.chapters.ch03_equivariant_adaptation.adaptation.adaptation_step`):
    forward through canonicalizer and backbone (``model.forward_with_details(x)``), the loss
    ``objective(logits, y, result.scores, beta)``, ``optimizer.zero_grad()``, ``loss.backward()`` and
    ``optimizer.step()``; the loss is returned. Two steps with plain SGD on a tiny adapted model (float64) must
    give the reference's losses and weights after each step: a step that never calls ``optimizer.step()`` leaves
    the weights alone, one without ``zero_grad`` adds the first step's gradients into the second.
    """
    import copy

    import torch

    from symviz.chapters.ch03_equivariant_adaptation.adaptation import adaptation_objective, adaptation_step

    base, batches = _step_setup()
    beta = 2.0

    def run(fn, model):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        out = []
        for batch in batches:
            model.train()
            loss = fn(model, batch, opt, adaptation_objective, beta)
            out.append((loss, [p.detach().clone() for p in model.parameters()]))
        return out

    want = run(adaptation_step, copy.deepcopy(base))
    model = copy.deepcopy(base)
    before = [p.detach().clone() for p in model.parameters()]
    try:
        got = run(step_fn, model)
    except Exception as exc:  # the learner's code may fail in any way: report it, never raise
        return verdict(False, "", f"your step raised {type(exc).__name__}: {exc}")
    for k, ((loss, params), (want_loss, want_params)) in enumerate(zip(got, want), start=1):
        try:
            value = float(loss)
        except Exception:
            return verdict(False, "", f"step {k}: return the loss (a scalar tensor or a float), got {type(loss).__name__}")
        if not abs(value - float(want_loss)) <= 1e-9 + 1e-7 * abs(float(want_loss)):
            return verdict(False, "", f"step {k}: your step's loss is {value:.6f}, expected {float(want_loss):.6f}: "
                                      "compute logits, result = model.forward_with_details(x) and the loss "
                                      "objective(logits, y, result.scores, beta) (before updating the weights)")
        same = all(torch.allclose(p, q, rtol=1e-9, atol=1e-12) for p, q in zip(params, want_params))
        if same:
            continue
        previous = before if k == 1 else got[k - 2][1]
        if all(torch.equal(p, q) for p, q in zip(params, previous)):
            has_grad = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
            why = ("the weights did not change: call optimizer.step() after loss.backward()" if has_grad else
                   "the weights did not change and no gradient was computed: call loss.backward(), then "
                   "optimizer.step()")
        elif k == 2:
            why = ("the second step differs from the reference although the first matched: the gradients of the first "
                   "step were still there. Call optimizer.zero_grad() before loss.backward()")
        else:
            why = "the weights after the step differ from the reference's (one backward of the loss, one optimizer step)"
        worst = max(float((p - q).abs().max()) for p, q in zip(params, want_params))
        return verdict(False, "", f"step {k}: {why} (largest weight difference {worst:.2e})")
    return verdict(True, "your training step matches the reference: forward through canonicalizer and backbone, "
                         "the objective, zero_grad, backward and optimizer.step (losses and weights equal after two "
                         "SGD steps).", "")
