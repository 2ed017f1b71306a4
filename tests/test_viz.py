import numpy as np
import pytest
import torch

from symviz.viz import molecules, scenes, widgets


def test_static_fallback_under_symviz_static(monkeypatch):
    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    assert not widgets.has_widget_frontend()
    drawn = []

    def draw(fig, angle):
        drawn.append(angle)
        fig.subplots(1, 1).plot([0, 1], [0, angle])

    out = widgets.rotate_input_widget(draw, angles=[0, 45])
    import matplotlib.figure
    assert isinstance(out, widgets.Shown) and out.kind == "static"
    assert isinstance(out.obj, matplotlib.figure.Figure) and drawn == [0, 45]


def test_widget_is_built_when_a_frontend_exists(monkeypatch):
    monkeypatch.setattr(widgets, "has_widget_frontend", lambda: True)
    import ipywidgets as W

    w = widgets.rotate_input_widget(lambda fig, a: fig.subplots(1, 1).plot([0, a]))
    assert isinstance(w, widgets.Shown) and w.kind == "widget" and isinstance(w.obj, W.VBox)
    slider = w.children[0]
    slider.value = 90.0  # moving the slider redraws without error
    assert isinstance(slider, W.FloatSlider)


def test_slider_grid_and_its_errors():
    fig = widgets.slider_grid(lambda ax, v: ax.plot([0, v]), [1, 2, 3], ncols=2)
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="at least one value"):
        widgets.slider_grid(lambda ax, v: None, [])


def test_plotly_scenes():
    fig = scenes.points_figure(torch.randn(4, 3), colors=np.arange(4))
    scenes.add_vectors(fig, np.zeros((4, 3)), np.eye(4, 3) + 0.1)
    assert len(fig.data) == 3
    traj = {"true": np.random.randn(6, 3, 3), "model": np.random.randn(6, 3, 3)}
    fig = scenes.trajectory_figure(traj, node_labels=["a", "b", "c"])
    assert len(fig.frames) == 6 and fig.layout.sliders[0].steps[-1].label == "5"
    cell = scenes.unit_cell_figure(np.eye(3) * 4, np.random.rand(2, 3), ["Cu", "Au"])
    assert cell.data[0].mode == "lines"
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        scenes.points_figure(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        scenes.trajectory_figure({"a": np.zeros((3, 2, 3)), "b": np.zeros((4, 2, 3))})


def test_molecule_views_static_and_widget():
    from ase.build import bulk
    from pymatgen.core import Lattice, Structure

    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    import matplotlib.figure
    assert isinstance(molecules.view_atoms(atoms).obj, matplotlib.figure.Figure)
    s = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert isinstance(molecules.view_structure(s, colors=["#ff0000", "#0000ff"], supercell=(2, 1, 1)).obj,
                      matplotlib.figure.Figure)
    view = molecules._ngl_view(atoms, colors=["#ff0000"] * len(atoms))
    assert type(view).__name__ == "NGLWidget"
    with pytest.raises(ValueError, match="3 entries for 8 sites"):
        molecules.view_atoms(atoms, colors=["#fff"] * 3)
    with pytest.raises(TypeError, match="ase.Atoms or a pymatgen"):
        molecules.view_atoms("Cu")
