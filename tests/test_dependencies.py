"""pyproject.toml is the one source of dependencies: environment.yml and binder/ must install exactly that."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req.strip().strip('"').strip("'")).lower()


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    deps = {_norm(d) for d in _pyproject()["project"]["dependencies"]}
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    env = {_norm(line.split("- ", 1)[1]) for line in pip_block.splitlines() if line.strip().startswith("- ")}
    assert env == deps, f"only in environment.yml: {env - deps}; only in pyproject: {deps - env}"
    assert "python=3.11" in text


def test_binder_requirements_list_exactly_the_pyproject_dependencies():
    deps = {_norm(d) for d in _pyproject()["project"]["dependencies"]}
    lines = [l for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#") and not l.startswith("--")]
    req = {_norm(l) for l in lines}
    assert req == deps, f"only in binder: {req - deps}; only in pyproject: {deps - req}"


def test_binder_installs_symviz_and_the_no_deps_wheels_and_no_system_packages():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post and "pip install --no-deps -e ." in post and "pip-no-deps" in post
    # every dataset ships with what pip installs: no apt, no root (a learner's laptop has neither)
    assert not (ROOT / "binder" / "apt.txt").exists()
    for f in ("Makefile", "binder/postBuild"):
        text = (ROOT / f).read_text()
        assert "apt-get" not in text and "sudo" not in text, f"{f} must not need apt or root"
    nodeps = _pyproject()["tool"]["symviz"]["pip-no-deps"]
    assert any(n.startswith("crystal-toolkit") for n in nodeps)
    assert "pip-no-deps" in (ROOT / "Makefile").read_text()


def test_torch_is_a_range_and_the_cpu_wheel_is_installed_first():
    deps = _pyproject()["project"]["dependencies"]
    torch = [d for d in deps if d.startswith("torch")]
    assert torch and "<" in torch[0], "torch needs an upper bound"
    make = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in make and "nvidia-smi" in make
    nglview = [d for d in deps if d.startswith("nglview")]
    assert nglview == ["nglview==3.1.4"], "nglview 4.x does not render in JupyterLab 4 (see GUIDE)"


def test_ci_calls_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make run" in readme
