"""ipywidgets helpers that degrade to static figures where no widget frontend exists.

``symviz run`` (papermill) sets ``SYMVIZ_STATIC=1``: nobody can move a slider in a batch run, and
the HTML export cannot run Python callbacks, so interactive cells show a static figure instead (a
grid of a few slider positions). In JupyterLab, Notebook, VS Code or Binder the widget is shown.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

__all__ = ["has_widget_frontend", "show", "Shown", "rotate_input_widget", "slider_grid"]


def has_widget_frontend() -> bool:
    """True inside a Jupyter kernel unless ``SYMVIZ_STATIC`` is set (batch runs, tests)."""
    if os.environ.get("SYMVIZ_STATIC", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _display(obj: Any) -> None:
    try:
        from IPython.display import display
        display(obj)
    except ImportError:  # plain python: nothing to display into
        pass


class Shown:
    """What :func:`show` displayed (``.obj``: the widget or the static figure; ``.kind``: ``"widget"`` or
    ``"static"``). It renders as nothing, so a cell that ends with a display helper shows its output once;
    attribute access goes to ``.obj`` (``handle.axes``, ``handle.children``) for tests and power users."""

    def __init__(self, obj: Any, kind: str):
        self.obj, self.kind = obj, kind

    def _ipython_display_(self) -> None:  # already displayed by show(): IPython shows nothing for the handle
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("__", "_repr_", "_ipython_")):  # nothing that would make a front end render it
            raise AttributeError(name)
        return getattr(self.__dict__["obj"], name)

    def __repr__(self) -> str:
        return f"<shown {self.kind}: {type(self.obj).__name__}>"


def show(make_widget: Callable[[], Any], make_static: Callable[[], Any]) -> Shown:
    """Display ``make_widget()`` when a widget frontend exists, else ``make_static()`` (a figure), once.

    Returns a :class:`Shown` handle that does not render, so ``show(...)`` as the last line of a cell does not
    display the widget a second time.
    """
    if has_widget_frontend():
        w = make_widget()
        _display(w)
        return Shown(w, "widget")
    fig = make_static()
    if fig is not None:
        _display(fig)
        try:  # a matplotlib figure should not be displayed twice by the inline backend
            import matplotlib.pyplot as plt
            import matplotlib.figure
            if isinstance(fig, matplotlib.figure.Figure):
                plt.close(fig)
        except ImportError:  # pragma: no cover
            pass
    return Shown(fig, "static")


def slider_grid(draw: Callable[[Any, float], None], values: Sequence[float], title: Callable[[float], str] | None = None,
                ncols: int | None = None, size: float = 2.6):
    """A static stand-in for a slider: ``draw(ax, value)`` for a few ``values`` side by side."""
    import matplotlib.pyplot as plt

    values = list(values)
    if not values:
        raise ValueError("slider_grid needs at least one value")
    ncols = ncols or len(values)
    nrows = math.ceil(len(values) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[len(values):]:
        ax.axis("off")
    for ax, v in zip(axes.flat, values):
        draw(ax, v)
        if title:
            ax.set_title(title(v), fontsize=9)
    fig.tight_layout()
    return fig


def rotate_input_widget(draw: Callable[[Any, float], None], *, angles: Sequence[float] | None = None,
                        description: str = "rotate (deg)", step: float = 15.0, max_angle: float = 360.0,
                        figsize: tuple[float, float] = (7.5, 3.2), title: str | None = None):
    """The "rotate the input" widget: a slider for an angle (degrees) redraws ``draw(fig, angle)``.

    ``draw`` receives a cleared matplotlib figure and the angle and draws the rotated input and the
    model's output (invariant outputs stay still, equivariant ones turn with the input). Without a
    widget frontend, returns a static figure with ``angles`` (default 0, 90, 180, 270 deg) side by side.
    """
    import matplotlib.pyplot as plt

    angles = list(angles) if angles is not None else [0.0, 90.0, 180.0, 270.0]

    def static():
        figs = []
        fig = plt.figure(figsize=(figsize[0], figsize[1] * len(angles)))
        subfigs = fig.subfigures(len(angles), 1)
        for sf, a in zip(subfigs if len(angles) > 1 else [subfigs], angles):
            draw(sf, a)
            sf.suptitle(f"{title + ': ' if title else ''}input rotated by {a:g}°", fontsize=10)
        figs.append(fig)
        return fig

    def widget():
        import ipywidgets as W

        out = W.Output()
        slider = W.FloatSlider(value=0.0, min=0.0, max=max_angle, step=step, description=description,
                               continuous_update=True, style={"description_width": "initial"},
                               layout=W.Layout(width="60%"))

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                fig = plt.figure(figsize=figsize)
                draw(fig, slider.value)
                if title:
                    fig.suptitle(title, fontsize=10)
                plt.show()

        slider.observe(redraw, names="value")
        redraw()
        return W.VBox([slider, out])

    return show(widget, static)
