"""nglview views of ase ``Atoms`` and pymatgen ``Structure`` (with the cell), degrading to matplotlib.

nglview 3.1.4 is pinned: 4.0.1's Python side asks JupyterLab for a JS module version its bundled lab
extension does not register ("Failed to load model class 'NGLModel'"). Under ``SYMVIZ_STATIC=1`` (batch
runs) or without nglview, a static matplotlib 3-D scatter is drawn instead.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from symviz.viz.scenes import cell_edges
from symviz.viz.widgets import show

__all__ = ["view_atoms", "view_structure", "static_atoms_figure", "to_atoms"]


def to_atoms(obj):
    """ase ``Atoms`` from ase ``Atoms`` or a pymatgen ``Structure``/``Molecule``."""
    try:
        from ase import Atoms
    except ImportError as err:  # pragma: no cover - ase is a dependency
        raise ImportError("viewing structures needs ase: pip install ase") from err
    if isinstance(obj, Atoms):
        return obj
    try:
        from pymatgen.io.ase import AseAtomsAdaptor
        from pymatgen.core import Structure, Molecule
    except ImportError:  # pragma: no cover
        Structure = Molecule = ()
    if Structure and isinstance(obj, (Structure, Molecule)):
        return AseAtomsAdaptor.get_atoms(obj)
    raise TypeError(f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(obj).__name__}")


def static_atoms_figure(atoms, colors: Sequence | None = None, title: str | None = None, show_cell: bool = True):
    """A matplotlib 3-D picture of ``atoms`` (sites coloured by element or by ``colors``)."""
    import matplotlib.pyplot as plt

    atoms = to_atoms(atoms)
    pos = atoms.get_positions()
    fig = plt.figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot(projection="3d")
    if colors is None:
        z = atoms.get_atomic_numbers()
        uniq = sorted(set(z))
        cmap = plt.get_cmap("tab10")
        colors = [cmap(uniq.index(v) % 10) for v in z]
    ax.scatter(pos[:, 0], pos[:, 1], pos[:, 2], c=colors, s=120, edgecolors="k", depthshade=True)
    if show_cell and atoms.cell.rank == 3:
        for a, b in cell_edges(np.asarray(atoms.cell)):
            ax.plot(*zip(a, b), color="#555", lw=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def _ngl_view(atoms, colors: Sequence[str] | None = None, show_cell: bool = True, radius: float = 0.5):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nglview 3.1.4 imports pkg_resources
        import nglview

    view = nglview.show_ase(atoms)
    view.clear_representations()
    if colors is None:
        view.add_representation("ball+stick", radius=radius)
    else:
        hexes = [c if isinstance(c, str) else "#%02x%02x%02x" % tuple(int(255 * v) for v in c[:3]) for c in colors]
        groups: dict[str, list[int]] = {}
        for i, h in enumerate(hexes):
            groups.setdefault(h, []).append(i)
        for h, idx in groups.items():  # one representation per colour, selected by atom index
            view.add_representation("spacefill", selection="@" + ",".join(map(str, idx)), color=h, radiusScale=0.45)
    if show_cell and atoms.cell.rank == 3:
        view.add_unitcell()
    view.camera = "orthographic"
    return view


def view_atoms(atoms, colors: Sequence | None = None, title: str | None = None, show_cell: bool = True):
    """An nglview widget of ``atoms`` (with the unit cell), or a static figure without a widget frontend.

    ``colors``: one colour per site (hex strings or RGB tuples), e.g. to colour sites by orbit or moment.
    """
    atoms = to_atoms(atoms)
    if colors is not None and len(colors) != len(atoms):
        raise ValueError(f"colors has {len(colors)} entries for {len(atoms)} sites")
    return show(lambda: _ngl_view(atoms, colors, show_cell), lambda: static_atoms_figure(atoms, colors, title, show_cell))


def view_structure(structure, colors: Sequence | None = None, title: str | None = None, supercell: Sequence[int] | None = None):
    """Like :func:`view_atoms` for a pymatgen ``Structure`` (optionally repeated into a ``supercell``)."""
    atoms = to_atoms(structure)
    if supercell is not None:
        atoms = atoms.repeat(tuple(supercell))
        if colors is not None:
            colors = list(colors) * int(np.prod(supercell))
    return view_atoms(atoms, colors, title)
