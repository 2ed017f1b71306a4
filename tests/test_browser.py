"""Every chapter in a real JupyterLab in headless Chromium: widgets, plotly figures and nglview render.

A notebook that papermill executes without error can still show "Error displaying widget" in a browser
(a JS module version mismatch, a missing lab extension), so this suite does what a learner does: it
starts JupyterLab (the project's environment, ``sys.executable -m jupyter lab``) on 127.0.0.1 on a
free port, opens a temporary copy of each chapter with ``?reset``, runs all cells (quick mode is the
default in every parameters cell) and checks pixels, not only elements:

* no "Error displaying widget" / "Failed to load model class" / "Click to show javascript error" and
  no Python traceback on the page, and every code cell executed;
* at least one interactive view per chapter (the chapter contract): an ipywidgets slider
  (``.widget-slider``) or dropdown (``.widget-dropdown``), a plotly figure (``.js-plotly-plot``) or an nglview canvas;
* each plotly figure is drawn (its screenshot has many colours); each nglview canvas is drawn
  (WebGL through SwiftShader, see ``CHROMIUM_FLAGS``); moving a slider with ArrowRight (or choosing
  another option of a dropdown) changes the plot it drives and raises nothing (a screenshot of the cell's plot differs afterwards);
* a screenshot of the whole notebook is saved to ``build/screenshots/NN.png`` and what was checked
  (counts of sliders, plotly figures, nglview canvases; seconds) to ``build/screenshots/NN.json``.

Also: a three-cell widget smoke test (nglview, plotly 3-D, a slider; about a minute) that proves each kind
of view renders independently of how long the chapters take, and: the HTML site written by ``symviz run`` opens in Chromium with the network blocked and its
plotly figures are interactive (plotly.js is inlined).

Uses Debian's Chromium (``/usr/bin/chromium``, override with ``$SYMVIZ_CHROMIUM``) through Playwright
for Python with ``executable_path``; never ``playwright install``. Skips with a reason when either is
missing. Knobs (environment variables):

* ``SYMVIZ_BROWSER_CHAPTERS``: comma-separated chapter numbers to run (default: every notebook);
* ``SYMVIZ_BROWSER_BUDGET``: seconds allowed per chapter for "run all cells" (default 300); a chapter
  slower than this fails with a clear message (quick mode is meant to take about a minute).
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("SYMVIZ_CHROMIUM", "/usr/bin/chromium")
BUDGET_S = float(os.environ.get("SYMVIZ_BROWSER_BUDGET", "300"))
# Headless Chromium without a GPU: WebGL (nglview, plotly 3-D) works only through SwiftShader, asked for
# explicitly (the implicit software fallback is deprecated and yields a null WebGL context). Never pass
# --disable-software-rasterizer: that removes WebGL altogether.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
WIDGET_ERRORS = ("Error displaying widget", "Failed to load model class", "Click to show javascript error")
LAB_SETTINGS = {
    # start the kernel without the "Select Kernel" dialog
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True,
                                                                   # every cell in the DOM: selectors see them all
                                                                   "windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
NGL_RE = re.compile(r"view_atoms|view_structure|nglview")
SLIDER_RE = re.compile(r"rotate_input_widget|Slider\(|interact\(")


def _chapters() -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    pick = os.environ.get("SYMVIZ_BROWSER_CHAPTERS", "").strip()
    if pick and pick != "all":
        want = {s.strip().zfill(2) for s in pick.split(",") if s.strip()}
        found = [p for p in found if p.name[:2] in want]
    return found


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (pip install -e '.[browser]'; never `playwright install`)"
    return None


_REASON = _skip_reason()
if _REASON:
    pytestmark = [pytest.mark.browser, pytest.mark.skip(reason=_REASON)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def n_colours(png: bytes) -> int:
    """Number of distinct RGB colours in a PNG (a blank or failed canvas has one or two)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    img.thumbnail((400, 400))
    return len(set(img.getdata()))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port serving a temporary folder; yields (base_url, folder)."""
    work = tmp_path_factory.mktemp("lab")
    root = work / "root"
    root.mkdir()
    settings = work / "settings"
    for rel, body in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(body))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"))
    # the learner's environment, not the test suite's: widgets on, inline matplotlib, plotly's default renderer
    for var in ("SYMVIZ_STATIC", "MPLBACKEND", "PLOTLY_RENDERER"):
        env.pop(var, None)
    port = _free_port()
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
                             "--ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=",
                             "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
                             "--ServerApp.port_retries=0", "--LabApp.news_url=None"],
                            cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}: {(work / 'lab.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("JupyterLab did not open its port within 120 s")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", root
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def _shutdown_kernels(base: str) -> None:
    """Stop every kernel of the test server (each chapter's kernel holds ~0.5 GB until it is stopped)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/api/kernels", timeout=10) as resp:
            kernels = json.loads(resp.read())
        for k in kernels:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{k['id']}", method="DELETE"), timeout=30)
    except OSError:  # the server is gone already: nothing to stop
        pass


def _copy_notebook(src: Path, root: Path) -> str:
    nb = json.loads(src.read_text())
    nb.setdefault("metadata", {}).setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    (root / src.name).write_text(json.dumps(nb))
    return src.name


def _wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => / \\| Idle$/.test(e.textContent.trim()) && !e.textContent.startsWith('No Kernel'))",
        timeout=timeout_ms)


_PROMPTS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
                      .map(p => p.textContent.trim())"""


def _run_all(page, budget_s: float) -> list[str]:
    """Click Run > Run All Cells (retrying while the kernel ignores it) and wait until nothing is queued."""
    for attempt in range(6):
        page.click(".jp-Notebook")
        page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=10_000)
        page.wait_for_timeout(3000)
        if any(re.search(r"\[(\*|\d+)\]", p) for p in page.evaluate(_PROMPTS_JS)):
            break
    else:
        pytest.fail("Run All Cells did nothing (the kernel never started executing)")
    t0, stable = time.time(), 0
    while True:
        prompts = page.evaluate(_PROMPTS_JS)
        busy = any("[*]" in p for p in prompts)
        stable = 0 if busy else stable + 1
        if stable >= 2:
            return prompts
        if time.time() - t0 > budget_s:
            pytest.fail(f"cells still running after {budget_s:.0f} s (SYMVIZ_BROWSER_BUDGET); prompts: {prompts}")
        page.wait_for_timeout(1500)


def save_notebook_screenshot(page, path: Path, max_height: int = 30_000) -> None:
    """Save the whole notebook (not only the viewport) as one PNG.

    JupyterLab scrolls the notebook inside its own panel, and SwiftShader cannot paint a viewport much
    taller than 8192 px, so the panel is scrolled page by page and the pieces are stitched together.
    """
    from PIL import Image

    box = page.evaluate("""() => { const p = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')
                                   || document.querySelector('.jp-WindowedPanel-outer');
                                   const r = p.getBoundingClientRect();
                                   return {x: r.x, y: r.y, w: r.width, h: p.clientHeight, total: p.scrollHeight}; }""")
    scroll = ("(y) => { const p = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')"
              " || document.querySelector('.jp-WindowedPanel-outer'); p.scrollTop = y; return p.scrollTop; }")
    vw = page.viewport_size["width"]
    top, step = int(box["y"]), max(int(box["h"]), 200)
    total = min(int(box["total"]), max_height)
    canvas = None
    y = 0
    while y < total:
        actual = page.evaluate(scroll, y)
        page.wait_for_timeout(400)
        shot = Image.open(io.BytesIO(page.screenshot()))
        if canvas is None:
            canvas = Image.new("RGB", (vw, top + total), "white")
            canvas.paste(shot.crop((0, 0, vw, top)), (0, 0))
        left = 0 if actual == 0 else max(int(box["x"]), 0)  # the side bar once, then only the notebook
        piece = shot.crop((left, top, vw, top + step))
        canvas.paste(piece, (left, top + actual))
        y += step
    page.evaluate(scroll, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    (canvas or Image.open(io.BytesIO(page.screenshot()))).save(path)


def _plot_target(cell):
    """The element a slider in ``cell`` redraws: an Output widget, else a plot or image of the cell."""
    for sel in (".widget-output", ".js-plotly-plot", ".jp-OutputArea-output img", "canvas"):
        loc = cell.locator(sel)
        if loc.count():
            return loc.first
    return None


@pytest.mark.parametrize("notebook", _chapters(), ids=lambda p: p.stem)
def test_chapter_renders_in_jupyterlab(notebook, lab, browser):
    check_notebook_in_lab(notebook, SCREENSHOTS / f"{notebook.name[:2]}.png", lab, browser)


_WIDGET_DEMO = [
    ("markdown", "# Widget smoke test\nOne of each interactive kind the chapters use."),
    ("code", "from ase.build import bulk\nfrom symviz.viz.molecules import view_atoms\n"
             "view_atoms(bulk('NaCl', 'rocksalt', a=5.64).repeat((2, 2, 2)))"),
    ("code", "import torch\nfrom symviz.viz.scenes import points_figure\n"
             "points_figure(torch.randn(20, 3, generator=torch.Generator().manual_seed(0)), title='points')"),
    ("code", "import math\nfrom symviz.viz.widgets import rotate_input_widget\n"
             "def draw(fig, a):\n    ax = fig.subplots()\n    t = math.radians(a)\n"
             "    ax.plot([0, math.cos(t)], [0, math.sin(t)], lw=4)\n    ax.set_xlim(-1, 1); ax.set_ylim(-1, 1)\n"
             "rotate_input_widget(draw, step=30.0);"),
]


def test_each_widget_kind_renders_in_jupyterlab(lab, browser, tmp_path):
    """nglview (WebGL via SwiftShader), plotly 3-D and an ipywidgets slider, in seconds rather than minutes."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                for kind, src in _WIDGET_DEMO]
    path = tmp_path / "98_widget_smoke.ipynb"
    nbformat.write(nb, path)
    counts = check_notebook_in_lab(path, SCREENSHOTS / "widgets.png", lab, browser)
    assert counts["nglview"] >= 1 and counts["plotly"] >= 1 and counts["sliders"] >= 1, counts


def open_and_run_all(page, base: str, name: str, budget_s: float) -> list[str]:
    """Open notebook ``name`` of the test JupyterLab in a workspace of its own (no tab of an earlier notebook is
    restored next to it), accept the kernel, run all cells; returns the code cells' prompts."""
    workspace = re.sub(r"[^A-Za-z0-9]", "", Path(name).stem)
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?reset", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_timeout(2000)
    accept = page.locator('.jp-Dialog:has-text("Select Kernel") .jp-mod-accept')
    if accept.count():
        accept.first.click()
    _wait_idle(page)
    return _run_all(page, budget_s)


def check_notebook_in_lab(notebook: Path, shot: Path, lab, browser) -> dict:
    """Open ``notebook`` in the test JupyterLab, run all cells, check what rendered; returns the counts."""
    base, root = lab
    name = _copy_notebook(notebook, root)
    source = "\n".join("".join(c.get("source", "")) for c in json.loads(notebook.read_text())["cells"]
                       if c.get("cell_type") == "code")
    ctx = browser.new_context(viewport={"width": 1400, "height": 2000}, device_scale_factor=1)
    page = ctx.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    t_start = time.time()
    try:
        prompts = open_and_run_all(page, base, name, BUDGET_S)
        try:  # widget views may still be talking to the kernel (nglview fetches its structure): not an error
            _wait_idle(page, 60_000)
        except Exception:
            pass
        page.wait_for_timeout(4000)  # widget views, plotly and WebGL draw after the kernel is idle
        errors = {e: page.locator(f"text={e}").count() for e in WIDGET_ERRORS}
        tracebacks = [t for t in page.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback" in t]
        save_notebook_screenshot(page, shot)  # first, so that a failing chapter leaves its picture
        assert not tracebacks, f"{notebook.name}: a cell raised in the browser:\n{tracebacks[0][-1500:]}"
        assert not any(errors.values()), f"{notebook.name}: widget errors on the page: {errors}; JS errors: {js_errors[:3]}"
        not_run = [i for i, p in enumerate(prompts) if not re.search(r"\[\d+\]", p)]
        assert not not_run, f"{notebook.name}: code cells {not_run} did not execute (prompts {prompts})"

        sliders = page.locator(".jp-Notebook .widget-slider")  # (a widget displayed twice counts twice)
        plots = page.locator(".jp-Notebook .js-plotly-plot")
        ngl_canvases = [c for c in page.locator(".jupyter-widgets canvas, .jp-OutputArea-output .lm-Widget canvas").all()
                        if not c.evaluate("c => !!c.closest('.js-plotly-plot')")]
        dropdowns = page.locator(".jp-Notebook .widget-dropdown select")
        counts = {"sliders": sliders.count(), "dropdowns": dropdowns.count(), "plotly": plots.count(),
                  "nglview": len(ngl_canvases)}
        print(f"{notebook.stem}: {counts}; screenshot {shot}")
        assert sum(counts.values()) >= 1, f"{notebook.name}: no widget, plotly figure or nglview canvas rendered"
        if SLIDER_RE.search(source):
            assert counts["sliders"] >= 1, f"{notebook.name} builds a slider widget but none rendered"
        if NGL_RE.search(source):
            assert counts["nglview"] >= 1, f"{notebook.name} shows an nglview view but no canvas rendered"

        for i in range(min(counts["plotly"], 4)):  # plotly draws SVG (2-D) or WebGL (3-D): many colours either way
            fig = plots.nth(i)
            assert fig.locator(".main-svg").count() >= 1, f"{notebook.name}: plotly figure {i} has no SVG"
            nc = n_colours(fig.screenshot())
            assert nc >= 8, f"{notebook.name}: plotly figure {i} looks blank ({nc} colours)"
        for i, canvas in enumerate(ngl_canvases[:3]):
            nc, t0 = 0, time.time()
            while time.time() - t0 < 20:  # nglview loads the structure asynchronously
                nc = n_colours(canvas.screenshot())
                if nc >= 20:
                    break
                page.wait_for_timeout(1000)
            assert nc >= 20, f"{notebook.name}: nglview canvas {i} looks blank ({nc} colours): is WebGL on?"
        slider_cells = page.locator(".jp-Notebook .jp-CodeCell").filter(has=page.locator(".widget-slider"))
        moved = 0
        for i in range(min(slider_cells.count(), 3)):  # a slider must drive its plot (one slider per cell)
            cell = slider_cells.nth(i)
            target = _plot_target(cell)
            slider = cell.locator(".widget-slider").first
            readout = slider.locator(".widget-readout")
            value = readout.first.inner_text() if readout.count() else None
            before = target.screenshot() if target is not None else None
            handle = slider.locator(".noUi-handle").first
            if handle.get_attribute("aria-valuemin") == handle.get_attribute("aria-valuemax"):
                continue  # a slider with one position (nglview's frame slider for a single structure)
            handle.focus()
            at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            for _ in range(3):  # a slider that starts at its maximum moves the other way
                handle.press("ArrowLeft" if at_max else "ArrowRight")
            moved += 1
            page.wait_for_timeout(500)
            if value is not None:
                assert readout.first.inner_text() != value, f"{notebook.name}: slider {i} did not move with the arrow keys"
            if target is None:
                continue
            changed, t0 = False, time.time()
            while time.time() - t0 < 60 and not changed:  # the kernel redraws; slow on a busy machine
                page.wait_for_timeout(1000)
                target = _plot_target(cell)
                changed = target is not None and target.screenshot() != before
            assert changed, f"{notebook.name}: moving slider {i} with the arrow keys did not change its plot"
            page.wait_for_timeout(1500)
            after = [t for t in cell.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback" in t]
            if after:
                save_notebook_screenshot(page, shot)
                pytest.fail(f"{notebook.name}: moving slider {i} made its callback raise:\n{after[0][-1200:]}")
        dropdown_cells = page.locator(".jp-Notebook .jp-CodeCell").filter(has=page.locator(".widget-dropdown select"))
        for i in range(min(dropdown_cells.count(), 2)):  # a dropdown must drive its plot too
            cell = dropdown_cells.nth(i)
            select = cell.locator(".widget-dropdown select").first
            options = select.locator("option")
            target = _plot_target(cell)
            if options.count() < 2 or target is None:
                continue
            before = target.screenshot()
            current = select.input_value()
            values = [o.get_attribute("value") for o in options.all()]
            select.select_option(next(v for v in values if v != current))
            changed, t0 = False, time.time()
            while time.time() - t0 < 60 and not changed:
                page.wait_for_timeout(1000)
                target = _plot_target(cell)
                changed = target is not None and target.screenshot() != before
            assert changed, f"{notebook.name}: choosing another option in dropdown {i} did not change its plot"
            moved += 1
            page.wait_for_timeout(1500)
            after = [t for t in cell.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback" in t]
            if after:
                save_notebook_screenshot(page, shot)
                pytest.fail(f"{notebook.name}: changing dropdown {i} made its callback raise:\n{after[0][-1200:]}")
        errors = {e: page.locator(f"text={e}").count() for e in WIDGET_ERRORS}
        assert not any(errors.values()), f"{notebook.name}: widget errors after interacting: {errors}"
        save_notebook_screenshot(page, shot)
        checked = {"chapter": notebook.stem, **counts, "controls_moved": moved,
                   "seconds": round(time.time() - t_start, 1), "screenshot": str(shot.relative_to(ROOT))}
        shot.with_suffix(".json").write_text(json.dumps(checked, indent=1))
        return counts
    finally:
        if not shot.exists() or shot.stat().st_mtime < t_start:  # a failure before the screenshot: keep a picture
            try:
                save_notebook_screenshot(page, shot)
            except Exception:  # the page itself may be broken; the assertion message says why
                pass
        ctx.close()
        _shutdown_kernels(base)


# --- the lecture site written by `symviz run` -------------------------------------------------------------

_DEMO_CELLS = [
    ("markdown", "# 99 · Plotly demo\nA tiny chapter used by the browser test of the HTML site."),
    ("code", 'SCALE = "quick"\nDEVICE = "auto"\nSEED = 0\nREPORT_PATH = None'),
    ("code", "import plotly.graph_objects as go\nfrom symviz import report\n"
             "fig = go.Figure(go.Scatter(x=[0, 1, 2, 3], y=[1, 3, 2, 4], mode='lines+markers'))\n"
             "fig.update_layout(height=320, title='a line')\nfig.show()"),
    ("code", "fig3 = go.Figure(go.Scatter3d(x=[0, 1, 0], y=[0, 0, 1], z=[0, 1, 1], mode='markers',"
             " marker=dict(size=8, color=['red', 'green', 'blue'])))\nfig3.update_layout(height=320)\nfig3.show()"),
    ("code", 'report.start("99_plotly_demo", REPORT_PATH)\nreport.metric("points", 4)\n'
             'report.claim("the demo figure has four points", len(fig.data[0].x) == 4, value=len(fig.data[0].x))\n'
             "report.check()"),
]


def _demo_notebook(folder: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in _DEMO_CELLS:
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        if src.startswith("SCALE"):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    path = folder / "99_plotly_demo.ipynb"
    nbformat.write(nb, path)
    return path


def test_symviz_run_html_site_is_interactive_offline(tmp_path, browser):
    """`symviz run` -> build/html: the index lists the chapter and links it; plotly works with no network."""
    from symviz.run import run_chapters

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _demo_notebook(nbdir)
    summary = run_chapters([], out=tmp_path / "build", notebooks=nbdir, verbose=False, timeout=600)
    assert summary["chapters"][0]["status"] == "ok", summary
    index = tmp_path / "build" / "html" / "index.html"
    assert index.is_file()

    ctx = browser.new_context(viewport={"width": 1300, "height": 1200})
    requested: list[str] = []

    def block(route):  # a lecture hall without network: only files from the site itself
        requested.append(route.request.url)
        route.abort()

    ctx.route(re.compile(r"^(https?|wss?)://"), block)
    page = ctx.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    try:
        page.goto(index.as_uri())
        assert "99_plotly_demo" in page.inner_text("body")
        assert "the demo figure has four points" in page.inner_text("body")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "site_index.png"), full_page=True)
        page.click("a[href$='99_plotly_demo.html']")
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        page.wait_for_timeout(1500)
        plots = page.locator(".js-plotly-plot")
        assert plots.count() == 2, f"expected 2 plotly figures, found {plots.count()}"
        assert page.evaluate("() => typeof window.Plotly === 'object' && "
                             "[...document.querySelectorAll('.js-plotly-plot')].every(d => d._fullData && d._fullData.length)")
        for i in range(2):
            nc = n_colours(plots.nth(i).screenshot())
            assert nc >= 8, f"plotly figure {i} looks blank offline ({nc} colours)"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "site.png"), full_page=True)
        # interactive, not a picture: a relayout through plotly.js changes the 2-D figure's axis range
        new_range = page.evaluate("""async () => { const d = document.querySelectorAll('.js-plotly-plot')[0];
            await window.Plotly.relayout(d, {'xaxis.range': [10, 20]}); return d._fullLayout.xaxis.range; }""")
        assert [round(v) for v in new_range] == [10, 20]
        assert not [e for e in js_errors if "plotly" in e.lower()], js_errors
    finally:
        ctx.close()


# --- a failing claim in an interactive session: a visible warning, and Run All goes on -----------------------

_FAILING_CLAIM_CELLS = [
    "from symviz import report\nreport.start('97_claim_warning', None)\n"
    "report.claim('the effect the learner broke', 1 > 2, value={'a': 1, 'b': 2})\nreport.check()",
    "print('after the check: still running')",
]


def test_failing_claim_warns_without_stopping_run_all(lab, browser, tmp_path):
    """What a learner sees after changing a knob that breaks a claim: the warning, no traceback, every cell run."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in _FAILING_CLAIM_CELLS]
    path = tmp_path / "97_claim_warning.ipynb"
    nbformat.write(nb, path)
    base, root = lab
    name = _copy_notebook(path, root)
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    page = ctx.new_page()
    shot = SCREENSHOTS / "claim_warning.png"
    try:
        prompts = open_and_run_all(page, base, name, 120)
        _wait_idle(page)
        page.wait_for_timeout(1500)
        save_notebook_screenshot(page, shot)
        texts = page.locator(".jp-OutputArea-output").all_inner_texts()
        joined = "\n".join(texts)
        assert not [t for t in texts if "Traceback" in t], joined[-1500:]
        assert all(re.search(r"\[\d+\]", p) for p in prompts), f"not every cell ran: {prompts}"
        assert "claims do not hold on this run: the effect the learner broke" in joined, joined[-1500:]
        assert "after the check: still running" in joined
        warn = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
        assert warn.count() >= 1, "the warning is not in a highlighted (stderr) output"
    finally:
        ctx.close()
        _shutdown_kernels(base)
