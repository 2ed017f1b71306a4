"""Chapter 06 hot paths: crystal-graph construction, CGCNN and MEGNet-style train steps, descriptors, random forest,
the two-stage forests, and CHGNet labelling per structure (uncached, on a copy of the cache so the user's cache is
untouched)."""
import os
import tempfile
import time

import numpy as np
import torch
from _timing import check_scale, time_ms


def run(scale: str = "quick") -> list[dict]:
    from symviz.data import crystal_graph, descriptors, magnetic
    from symviz.chapters.ch06_magnetic_screening import screening
    from symviz.nn.cgcnn import CGCNN
    from symviz.nn.megnet import MEGNet

    check_scale(scale)
    chapter = "06_magnetic_screening"
    torch.manual_seed(0)
    n = 64 if scale == "quick" else 512
    pool = magnetic.candidate_pool(n_prototypes=n - 16, n_real=16, seed=0)
    structures = list(pool["structure"])
    rows = []

    t0 = time.perf_counter()
    graphs = crystal_graph.structures_to_graphs(structures, cutoff=5.0, targets=np.ones((len(structures), 1)))
    rows.append({"chapter": chapter, "what": f"crystal graphs ({len(graphs)} structures, 5 Å)",
                 "value": (time.perf_counter() - t0) / len(graphs) * 1e3, "unit": "ms/structure"})

    for hidden, n_conv in ((32, 2), (64, 3)):
        model = CGCNN(node_dim=92, cutoff=5.0, hidden=hidden, n_conv=n_conv)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = crystal_graph.collate_graphs(graphs[:32])

        def step():
            opt.zero_grad()
            (model(batch) - batch.y).abs().mean().backward()
            opt.step()
        rows.append({"chapter": chapter, "what": f"CGCNN train step (hidden {hidden}, {n_conv} conv, batch 32)",
                     "value": time_ms(step, 10 if scale == "quick" else 30), "unit": "ms"})

    for hidden, n_blocks in ((32, 2), (32, 3)):  # section 8: quick (2 blocks) and the paper's size (3 blocks)
        model = MEGNet(node_dim=92, cutoff=5.0, hidden=hidden, n_blocks=n_blocks, n_targets=2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = crystal_graph.collate_graphs(graphs[:32])

        def step():
            opt.zero_grad()
            (model(batch)[:, :1] - batch.y).abs().mean().backward()
            opt.step()
        rows.append({"chapter": chapter, "what": f"MEGNet train step (hidden {hidden}, {n_blocks} blocks, set2set, batch 32)",
                     "value": time_ms(step, 10 if scale == "quick" else 30), "unit": "ms"})

    t0 = time.perf_counter()
    X = descriptors.all_descriptors(structures)
    rows.append({"chapter": chapter, "what": f"descriptors ({X.shape[1]} per structure)",
                 "value": (time.perf_counter() - t0) / len(structures) * 1e3, "unit": "ms/structure"})
    y = np.random.default_rng(0).random(len(structures))
    t0 = time.perf_counter()
    screening.fit_random_forest(X, y, n_estimators=200)
    rows.append({"chapter": chapter, "what": f"random forest fit (200 trees, {len(y)} x {X.shape[1]})",
                 "value": time.perf_counter() - t0, "unit": "s"})
    t0 = time.perf_counter()
    screening.TwoStageForest(0.5, n_estimators=200).fit(X, y)
    rows.append({"chapter": chapter, "what": f"two-stage forests fit (classifier + regressor, 200 trees, {len(y)} x {X.shape[1]})",
                 "value": time.perf_counter() - t0, "unit": "s"})

    # the learner's piece (the scoring rule of the stochastic selection) at the quick size: 15 rounds x 55 of 344
    rng = np.random.default_rng(0)
    cols = np.stack([rng.choice(344, size=55, replace=False) for _ in range(15)])
    imp, mae = rng.dirichlet(np.ones(55), size=15), rng.uniform(0.2, 0.5, size=15)
    rows.append({"chapter": chapter, "what": "selection scores (15 rounds x 55 of 344 descriptors)",
                 "value": time_ms(lambda: descriptors.selection_scores(cols, imp, mae, 344), 50), "unit": "ms"})

    # the screening explorer's redraw (a slider move): re-rank the out-of-fold predictions of 260 candidates
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from symviz.chapters.ch06_magnetic_screening import plots as vscreen

    yt = rng.gamma(2.0, 0.4, size=260)
    preds = {"RF + CGCNN average": yt + 0.2 * rng.normal(size=260), "CGCNN": yt + 0.3 * rng.normal(size=260)}
    dis = np.abs(preds["CGCNN"] - preds["RF + CGCNN average"])
    curves = {m: screening.recall_curve(yt, p) for m, p in preds.items()}
    fig = plt.figure(figsize=(10, 3.8))

    def redraw():
        vscreen.draw_screening(fig, yt, preds, dis, 26, 0.3, "RF + CGCNN average", curves)
        fig.canvas.draw()
    rows.append({"chapter": chapter, "what": "screening explorer redraw (260 candidates, one slider move)",
                 "value": time_ms(redraw, 5), "unit": "ms"})
    plt.close(fig)

    with tempfile.TemporaryDirectory() as tmp:  # uncached CHGNet labelling, without touching the real cache
        k = 16 if scale == "quick" else 128
        magnetic._chgnet()  # load the weights outside the timing
        t0 = time.perf_counter()
        magnetic.chgnet_labels(structures[:k], cache=os.path.join(tmp, "labels.json"))
        rows.append({"chapter": chapter, "what": f"CHGNet labelling, uncached ({k} structures)",
                     "value": (time.perf_counter() - t0) / k * 1e3, "unit": "ms/structure"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
