"""The layout of docs/architecture.md, enforced: import-linter contracts (pyproject.toml) and each notebook's imports."""
from __future__ import annotations

import ast
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHAPTERS = sorted(p.name for p in (ROOT / "symviz" / "chapters").iterdir() if p.is_dir() and p.name.startswith("ch"))


def _lint_imports() -> str:
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.fail("lint-imports is not installed: pip install -e '.[test]' (import-linter is a test dependency)")
        exe = pathlib.Path(found)
    return str(exe)


def test_import_contracts_hold():
    """core <- data <- nn | viz <- chapters <- tools; chapters independent; tools never import chapters."""
    res = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 4


def test_one_chapter_package_per_notebook():
    assert [f"ch{p.name[:2]}_{p.stem[3:]}" for p in NOTEBOOKS] == CHAPTERS


def _symviz_imports(nb_path: pathlib.Path) -> set[str]:
    mods = set()
    for cell in json.loads(nb_path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        try:
            tree = ast.parse(src)
        except SyntaxError:  # a cell with IPython magics: skip its imports (none of ours has any)
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("symviz"):
                mods.add(n.module)
                mods.update(f"{n.module}.{a.name}" for a in n.names)
            elif isinstance(n, ast.Import):
                mods.update(a.name for a in n.names if a.name.startswith("symviz"))
    return mods


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_only_its_own_chapter_package(path):
    own = f"symviz.chapters.ch{path.name[:2]}_{path.stem[3:]}"
    chapter_imports = {m for m in _symviz_imports(path) if m.startswith("symviz.chapters")}
    assert chapter_imports, f"{path.name} imports nothing from {own}"
    foreign = sorted(m for m in chapter_imports if not (m == own or m.startswith(own + ".")))
    assert not foreign, f"{path.name} imports another chapter's package: {foreign}"


def test_the_checker_can_fail(tmp_path):
    """A module of the core that imports a chapter breaks the layers contract (the contract is not vacuous)."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "symviz", work / "symviz", ignore=shutil.ignore_patterns("__pycache__", "fashion_mnist"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    bad = work / "symviz" / "losses.py"
    bad.write_text(bad.read_text() + "\nfrom symviz.chapters.ch04_multichannel_egnn import experiments  # noqa\n")
    env = {"PYTHONPATH": str(work), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([_lint_imports(), "--no-cache"], cwd=work, capture_output=True, text=True, env=env)
    assert res.returncode != 0 and "symviz.losses" in res.stdout, res.stdout[-3000:]
