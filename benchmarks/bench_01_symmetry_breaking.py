"""Chapter 01 hot paths: E-MLP / relaxed E-MLP / noise E-MLP train steps (the relaxed one also through the
``breaking_object`` hook the notebook feeds the learner's (k, b) to), canonicalization, the relaxed-equivariance
measurement and the answer distributions of section 9, on the spin-ring task (D8); full scale adds max-cut (S5, 120
elements)."""
import torch
from _timing import check_scale, time_ms


def _step(model, task, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        task.loss(model(x), x).mean().backward()
        opt.step()
    return step


def run(scale: str = "quick") -> list[dict]:
    # one thread, as the notebook does on CPU: these matrices are tiny, and with 2 threads on a shared
    # machine OpenMP spin-waiting made every step 10-40x slower (measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(scale)
    finally:
        torch.set_num_threads(threads)


def _run(scale: str) -> list[dict]:
    from symviz.data import symbreak
    from symviz.nn.emlp import relaxed_equivariance_violation
    from symviz.chapters.ch01_symmetry_breaking.experiments import (frozen, make_model, outcome_distributions,
                                                                    reference_breaking_object)
    from symviz.nn.emlp import stabilizer_elements

    check_scale(scale)
    torch.manual_seed(0)
    chapter = "01_symmetry_breaking"
    rows = []
    specs = [("spin_ring", 8, 128)] + ([("max_cut", 32, 256)] if scale == "full" else [])
    for name, hidden, batch in specs:
        task = symbreak.make_task(name, n_train=batch, n_test=16)
        x = task.x_train.float()
        reps = 20 if scale == "quick" else 50
        for kind in ("equivariant", "relaxed", "noise"):
            model = make_model(kind, task, hidden=hidden)
            rows.append({"chapter": chapter, "what": f"{kind} E-MLP train step, {name} "
                         f"({task.group.name}, {hidden} channels, batch {batch})",
                         "value": time_ms(_step(model, task, x), reps), "unit": "ms"})
        hooked = make_model("relaxed", task, hidden=hidden, breaking_object=reference_breaking_object)
        rows.append({"chapter": chapter, "what": f"relaxed E-MLP train step, (k, b) through breaking_object, {name} "
                     f"({task.group.name}, {hidden} channels, batch {batch})",
                     "value": time_ms(_step(hooked, task, x), reps), "unit": "ms"})
        relaxed = make_model("relaxed", task, hidden=hidden)
        rows.append({"chapter": chapter, "what": f"canonicalization of {batch} inputs, {name} ({task.group.name})",
                     "value": time_ms(lambda: relaxed.breaking(x), reps), "unit": "ms"})
        m = relaxed.double()
        xv = torch.cat([task.x_sym[:6], task.x_generic[:6]])
        rows.append({"chapter": chapter, "what": f"relaxed-equivariance violation, 12 inputs x {task.group.order} "
                     f"elements, {name}",
                     "value": time_ms(lambda: relaxed_equivariance_violation(frozen(m, "relaxed"), xv, task.rep_in,
                                                                        task.rep_out), 2), "unit": "ms"})
        if name == "spin_ring":
            noise = make_model("noise", task, hidden=hidden)
            rows.append({"chapter": chapter, "what": f"answer distributions, 4000 noise draws x {task.group.order} "
                         f"elements, {name}",
                         "value": time_ms(lambda: outcome_distributions(task, noise, relaxed, task.x_sym[0],
                                                                        stabilizer_elements, reference_breaking_object,
                                                                        draws=4000), 2), "unit": "ms"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['what']:<80} {row['value']:10.2f} {row['unit']}")
