"""The lecture site: ``symviz run`` writes ``<out>/html/index.html`` and one page per executed chapter.

    from symviz.site import build_site
    build_site("build", results)      # results: the "chapters" list of build/results.json

What the site is, and what works offline (the lecture-hall case):

* ``index.html`` lists every chapter with its title, status, time, peak memory, the metrics it
  recorded and the claims it checked (✔/✘), and links each executed chapter's page.
* ``NN_topic.html`` is the executed notebook rendered by nbconvert's ``lab`` template, with a link
  back to the index. Images are embedded (base64), so a page is one self-contained file.
* **plotly stays interactive**: ``symviz run`` executes chapters with
  ``PLOTLY_RENDERER=plotly_mimetype+notebook``; the ``notebook`` part inlines plotly.js into the first
  figure's output, so zoom, rotate and hover work with no network (tested in Chromium with the
  network blocked: ``tests/test_browser.py``).
* **ipywidgets and nglview are shown as static figures.** ``symviz run`` sets ``SYMVIZ_STATIC=1``, so
  every widget cell draws its static fallback (a grid of slider positions, a matplotlib picture of
  the structure). Embedding live widget state was rejected: papermill saves no widget state, the
  HTML widget manager and require.js load from public CDNs (no widget renders offline), and
  nglview 3.1.4 asks the CDN for ``nglview-js-widgets@3.1.4``, which npm does not have. A slider
  cannot run its Python callback in a static page anyway; the learner uses JupyterLab/Binder for that.
* Math is typeset by MathJax from its CDN when online; offline the LaTeX source stays readable.
"""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["build_site", "render_chapter", "index_html", "chapter_title", "memory_table", "BINDER_MEMORY_MB"]

# mybinder.org guarantees about 1 GB and caps a session at 2 GB (https://mybinder.readthedocs.io/en/latest/about/about.html)
BINDER_MEMORY_MB = 2048
# JupyterLab server + one idle kernel with symviz imported, measured in a browser session (see docs/teaching.md)
SERVER_OVERHEAD_MB = 300

_CSS = (
    "body{font-family:system-ui,-apple-system,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px 8px;vertical-align:top;"
    "text-align:left}th{background:#f6f8fa}.ok{color:#1a7f37}.bad{color:#cf222e}ul{margin:0;padding-left:0;"
    "list-style:none}.num{text-align:right;font-variant-numeric:tabular-nums}.metrics{font-size:.85em;color:#444}"
    ".title{font-size:.9em;color:#555}code{background:#f6f8fa;padding:1px 4px;border-radius:3px}"
    "footer{margin-top:2em;font-size:.85em;color:#666}.kind{font-size:.8em;color:#666;text-transform:uppercase;"
    "letter-spacing:.04em;margin-top:.3em}"
)
_BACK = ("<div style='font-family:system-ui,sans-serif;padding:8px 16px;background:#f6f8fa;border-bottom:1px solid #ddd'>"
         "<a href='index.html'>&larr; all chapters</a></div>")


def chapter_title(nb) -> str:
    """The first Markdown heading of a notebook (without ``#``), or "" when there is none.

    >>> chapter_title({"cells": [{"cell_type": "markdown", "source": "# 00 · A primer\\ntext"}]})
    '00 · A primer'
    """
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            m = re.search(r"^\s*#{1,2}\s+(.+)$", src, flags=re.M)
            if m:
                return m.group(1).strip()
    return ""


def render_chapter(executed: str | Path, dest: str | Path) -> str:
    """Render one executed notebook to a self-contained HTML page ``dest``; returns its title.

    Uses nbconvert's ``lab`` template with images embedded, and adds a link back to ``index.html``.
    """
    import nbformat
    from nbconvert import HTMLExporter

    executed, dest = Path(executed), Path(dest)
    if not executed.is_file():
        raise FileNotFoundError(f"executed notebook {str(executed)!r} does not exist")
    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _BACK, body, count=1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(body, encoding="utf-8")
    return chapter_title(nb)


def _short(v: Any, depth: int = 0) -> str:
    """A compact text for a metric or claim value: 4 significant digits, nested containers abbreviated."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        if depth > 1:
            return "{…}"
        return "{" + ", ".join(f"{k}: {_short(x, depth + 1)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if depth > 1:
            return "[…]"
        return "[" + ", ".join(_short(x, depth + 1) for x in v) + "]"
    return str(v)


def _fmt(v: Any, limit: int = 160) -> str:
    text = _short(v)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _num(v: Any, nd: int = 1) -> str:
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, (int, float)) else html.escape(str(v)))


def index_html(results: Sequence[dict], title: str = "symviz: symmetry in deep learning") -> str:
    """The index page for ``results`` (each: name, status, seconds, peak_rss_mb, scale, device, metrics,
    claims, error, and optionally ``html``/``title`` set by :func:`build_site`)."""
    rows = []
    for r in results:
        claims = "".join(
            (f"<li class='kind'>{'the paper' if kind == 'paper' else 'sanity (holds by construction)'}</li>"
             if any(c.get("kind", "paper") == kind for c in r.get("claims") or []) else "")
            + "".join(
                f"<li class='{'ok' if c.get('holds') else 'bad'}'>{'✔' if c.get('holds') else '✘'} {html.escape(str(c.get('text', '')))}"
                + (f" <span class='metrics'>({_fmt(c['value'])})</span>" if c.get("value") is not None else "") + "</li>"
                for c in r.get("claims") or [] if c.get("kind", "paper") == kind)
            for kind in ("paper", "sanity"))
        mets = r.get("metrics") or {}
        metrics = (f"<details><summary>{len(mets)} metric(s)</summary>"
                   + "<br>".join(f"{html.escape(str(k))} = {_fmt(v)}" for k, v in mets.items()) + "</details>") if mets else ""
        name = html.escape(r["name"])
        link = f"<a href='{html.escape(r['html'])}'>{name}</a>" if r.get("html") else name
        sub = f"<div class='title'>{html.escape(r['title'])}</div>" if r.get("title") else ""
        err = f"<div class='bad'>{html.escape(str(r['error']))}</div>" if r.get("error") else ""
        herr = f"<div class='bad'>HTML: {html.escape(str(r['html_error']))}</div>" if r.get("html_error") else ""
        status = r.get("status", "?")
        rows.append(
            f"<tr><td>{link}{sub}</td><td class='{'ok' if status == 'ok' else 'bad'}'>{html.escape(status)}</td>"
            f"<td class='num'>{_num(r.get('seconds'))}</td><td class='num'>{_num(r.get('peak_rss_mb'), 0)}</td>"
            f"<td>{html.escape(str(r.get('scale', '')))}<br>{html.escape(str(r.get('device', '')))}</td>"
            f"<td><ul>{claims}</ul>{'<div class=metrics>' + metrics + '</div>' if metrics else ''}{err}{herr}</td></tr>")
    n_ok = sum(r.get("status") == "ok" for r in results)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(results)} chapter(s) executed by <code>symviz run</code>, {n_ok} ok. "
        "Each chapter checked its claims on the numbers it computed in that run. Click a chapter to read it "
        "with its outputs: plotly figures stay interactive (offline too); sliders and molecule viewers appear as "
        "static figures. For the live widgets open the notebook in JupyterLab or on Binder.</p>"
        "<table><tr><th>chapter</th><th>status</th><th class='num'>seconds</th><th class='num'>peak MB</th>"
        "<th>scale / device</th><th>claims and metrics</th></tr>" + "".join(rows) + "</table>"
        f"<footer>Written {stamp}. Lecture mode: <code>python -m symviz.slides notebooks/*.ipynb</code> tags the "
        "cells for RISE; see <code>docs/teaching.md</code>.</footer></body></html>")


def build_site(out_dir: str | Path, results: list[dict]) -> Path:
    """Write ``<out_dir>/html/index.html`` and one page per chapter executed into ``<out_dir>/notebooks``.

    ``results``: the per-chapter dicts of ``symviz run`` (``name`` is required). Each dict is updated in
    place with ``html`` (the page's file name) and ``title``, or ``html_error`` when rendering failed (an
    HTML failure never hides the chapter's own result). Returns the index path.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = build_site(d, [{"name": "00_demo", "status": "failed", "claims": [], "error": "boom"}])
    >>> p.name, "00_demo" in p.read_text(), "boom" in p.read_text()
    ('index.html', True, True)
    """
    if not isinstance(results, (list, tuple)) or not all(isinstance(r, dict) and "name" in r for r in results):
        raise TypeError("results must be a list of dicts, each with a 'name' (the chapter's file stem)")
    out_dir = Path(out_dir)
    html_dir = out_dir / "html"
    html_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        executed = out_dir / "notebooks" / f"{r['name']}.ipynb"
        if not executed.exists():
            continue
        try:
            r["title"] = render_chapter(executed, html_dir / f"{r['name']}.html")
            r["html"] = f"{r['name']}.html"
        except Exception as err:  # an HTML failure must not hide the chapter's own result
            r["html_error"] = f"{type(err).__name__}: {err}"
    index = html_dir / "index.html"
    index.write_text(index_html(results), encoding="utf-8")
    (html_dir / "results.json").write_text(json.dumps({"chapters": results}, indent=2, default=str))
    return index


def memory_table(results: Sequence[dict], limit_mb: float = BINDER_MEMORY_MB,
                 overhead_mb: float = SERVER_OVERHEAD_MB) -> str:
    """A Markdown table of each chapter's measured peak memory against a per-user limit (Binder: 2 GB).

    ``peak_rss_mb`` is the kernel's peak resident memory measured by ``symviz run``; a learner's session
    also holds the JupyterLab server and browser-side state, counted as ``overhead_mb``.

    >>> print(memory_table([{"name": "00_x", "peak_rss_mb": 524.0, "seconds": 20.0, "scale": "quick"}]))
    | chapter | scale | seconds | kernel peak MB | with server MB | fits 2048 MB |
    |---|---|---:|---:|---:|---|
    | 00_x | quick | 20 | 524 | 824 | yes (40%) |
    """
    if limit_mb <= 0:
        raise ValueError(f"limit_mb must be positive, got {limit_mb}")
    lines = [f"| chapter | scale | seconds | kernel peak MB | with server MB | fits {limit_mb:.0f} MB |",
             "|---|---|---:|---:|---:|---|"]
    for r in results:
        peak = r.get("peak_rss_mb")
        if peak is None:
            lines.append(f"| {r['name']} | {r.get('scale', '')} | – | – | – | not measured ({r.get('status', '?')}) |")
            continue
        total = peak + overhead_mb
        fits = f"yes ({100 * total / limit_mb:.0f}%)" if total <= limit_mb else f"NO ({100 * total / limit_mb:.0f}%)"
        sec = r.get("seconds")
        lines.append(f"| {r['name']} | {r.get('scale', '')} | {'–' if sec is None else f'{sec:.0f}'} | {peak:.0f} | "
                     f"{total:.0f} | {fits} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m symviz.site build`` rebuilds the site from ``build/results.json``;
    ``--memory`` prints the memory table instead."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m symviz.site", description=main.__doc__)
    p.add_argument("out", nargs="?", default="build", help="the folder symviz run wrote (default build)")
    p.add_argument("--memory", action="store_true", help="print the per-chapter memory table (Markdown)")
    a = p.parse_args(argv)
    res = Path(a.out) / "results.json"
    if not res.is_file():
        print(f"python -m symviz.site: error: {res} does not exist; run `symviz run` first", flush=True)
        return 2
    results = json.loads(res.read_text())["chapters"]
    if a.memory:
        print(memory_table(results))
    else:
        print(build_site(a.out, results))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
