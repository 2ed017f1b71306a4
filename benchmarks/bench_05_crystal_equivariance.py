"""Benchmark for chapter 05: step times of the crystal models and the cost of the symmetry machinery.

``run(scale)`` returns rows ``{"chapter", "what", "value", "unit"}``; the runner adds the notebook's
quick-mode wall time and peak memory itself.
"""
from __future__ import annotations

import time

import torch
from _timing import check_scale, time_ms

CHAPTER = "05_crystal_equivariance"


def run(scale: str = "quick") -> list[dict]:
    check_scale(scale)
    from symviz.data import crystals as C
    from symviz.nn.crystal import CrystalEquivariantNet, OccupancyMLP, SupercellCGCNN

    repeat = 5 if scale == "quick" else 30
    batch = 32 if scale == "quick" else 256
    rows = []

    t = time.perf_counter()
    atoms = C.lattice_supercell("hcp", "Cu")
    group = C.space_group(atoms, ignore_species=True)
    perms = C.site_permutations(atoms, group, ignore_species=True)
    po = C.pair_orbits(perms)
    rows.append({"chapter": CHAPTER, "what": f"space group + {perms.shape[0]} site permutations + pair orbits (hcp, 36 sites)",
                 "value": (time.perf_counter() - t) * 1000, "unit": "ms"})

    from symviz.chapters.ch05_crystal_equivariance.experiments import cluster_expansion_label
    from symviz.data.cluster_expansion import random_configurations

    t = time.perf_counter()
    ce, orbits = cluster_expansion_label(atoms)
    rows.append({"chapter": CHAPTER, "what": f"cluster orbits of hcp (36 sites, {len(orbits)} orbits up to triangles)",
                 "value": (time.perf_counter() - t) * 1000, "unit": "ms"})
    occ = random_configurations(1000, len(atoms), seed=0)
    rows.append({"chapter": CHAPTER, "what": "cluster-expansion energies of 1000 configurations",
                 "value": time_ms(lambda: ce.energy(occ), repeat), "unit": "ms"})

    from ase.calculators.emt import EMT
    a = atoms.copy()
    a.numbers[::3] = 79
    a.calc = EMT()
    rows.append({"chapter": CHAPTER, "what": "EMT energy of one 36-site configuration",
                 "value": time_ms(lambda: (a.calc.reset(), a.get_potential_energy()), repeat), "unit": "ms"})

    x = torch.randint(0, 2, (batch, len(atoms))).float()
    y = torch.randn(batch)
    scatter = SupercellCGCNN(atoms, hidden=32)
    scatter.dense = False   # the general index_add path, for comparison with the neighbour-table path
    for name, model in (("orbit-equivariant net", CrystalEquivariantNet(po, hidden=32)),
                        ("CGCNN on the supercell", SupercellCGCNN(atoms, hidden=32)),
                        ("CGCNN on the supercell, scatter path", scatter),
                        ("MLP on occupancies", OccupancyMLP(len(atoms)))):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss = ((model(x).energy - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows.append({"chapter": CHAPTER, "what": f"{name} train step (batch {batch}, 36 sites)",
                     "value": time_ms(step, repeat), "unit": "ms"})
    return rows


if __name__ == "__main__":
    for row in run("quick"):
        print(f"{row['what']:<70} {row['value']:10.2f} {row['unit']}")
