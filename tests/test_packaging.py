"""Packaging as a new user meets it: declared dependencies, package discovery, console scripts,
and where numba writes its cache (issue 14)."""
import ast
import fnmatch
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# imported only when the user asks for them (keras backend torch, a dask-jobqueue cluster)
OPTIONAL = {"torch", "dask_jobqueue"}


def _pyproject():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dist_name(requirement):
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_imports(paths):
    """{top-level module: first file importing it}, nested and guarded imports included."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(Path(path).relative_to(REPO)))
    return found


def _undeclared(paths, declared):
    local = {"hotspot"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(_top_level_imports(paths).items()):
        if module in sys.stdlib_module_names or module in local or module in OPTIONAL:
            continue
        owners = {_dist_name(d) for d in dists.get(module, [module])}
        if not owners & declared:
            missing.append(f"{module} ({where}; distribution {', '.join(sorted(owners))})")
    return missing


def test_every_import_of_the_package_is_a_declared_dependency():
    project = _pyproject()["project"]
    declared = {_dist_name(r) for r in project["dependencies"]}
    missing = _undeclared(sorted((REPO / "hotspot").rglob("*.py")), declared)
    assert not missing, f"imported by hotspot but not in [project] dependencies: {missing}"


def test_every_test_import_is_in_the_test_extra():
    """The README's `pip install -e ".[test]" && python -m pytest` in a fresh venv must find
    every module the tests import (jsonschema was missing: 0 tests ran)."""
    project = _pyproject()["project"]
    declared = {_dist_name(r) for r in project["dependencies"]}
    declared |= {_dist_name(r) for r in project["optional-dependencies"]["test"]}
    files = sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    missing = _undeclared(files, declared)
    assert not missing, f"imported by tests/benchmarks but not declared: {missing}"


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in readme
    assert "-m venv" in ci                      # not the machine's site-packages
    assert 'pip install -e ".[test]"' in ci
    assert re.search(r"python -m pytest\b", ci)


def test_package_discovery_takes_the_package_only():
    """`hotspot*` also matched the demo's output folder hotspot_demo/ inside the clone."""
    patterns = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    matches = [p for p in patterns if any(fnmatch.fnmatchcase(name, p) for name in
                                          ("hotspot_demo", "hotspot_demo_hard", "hotspotwork"))]
    assert not matches, f"package patterns {matches} match folders that are not the package"
    assert any(fnmatch.fnmatchcase("hotspot.plots", p) for p in patterns)
    assert any(fnmatch.fnmatchcase("hotspot", p) for p in patterns)
    ignored = (REPO / ".gitignore").read_text().split()
    assert "/hotspot_demo/" in ignored or "hotspot_demo/" in ignored


def test_numba_cache_goes_to_a_user_cache_dir_not_the_package(tmp_path):
    """A kernel compiled with cache=True must not leave *.nbi / *.nbc in the package folder:
    a non-editable install's site-packages/hotspot survives a later editable install and
    shadows it."""
    package = REPO / "hotspot"
    before = {p for p in package.rglob("*.nb[ic]")}
    cache = tmp_path / "home" / ".cache"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPO))
    code = ("import numpy as np; from hotspot.steps.kernels import dtw as kernels; import numba; "
            "print(numba.config.CACHE_DIR); "
            "a = np.random.default_rng(0).normal(size=(3, 12)); "
            "print(kernels.exact_cost(a[0], a[1], 12, True, 0.01))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(cache / "hotspot" / "numba")
    written = {p for p in package.rglob("*.nb[ic]")} - before
    assert not written, f"numba cache written inside the package: {sorted(written)[:3]}"
    assert list((cache / "hotspot" / "numba").rglob("*.nbi"))


def test_numba_cache_dir_set_by_the_user_is_kept(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", "import hotspot, numba; print(numba.config.CACHE_DIR)"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "mine")


@pytest.mark.parametrize("module, flag", [("hotspot.cli.hotspotApp", "-H"),
                                          ("hotspot.cli.hotspotApp", "--version"),
                                          ("hotspot.cli.simulate", "-h"),
                                          ("hotspot.cli.score", "-h"),
                                          ("hotspot.cli.demo", "-h")])
def test_console_scripts_start(module, flag, tmp_path):
    """Every console script of [project.scripts] starts (the entry point exists and its module
    imports). In a venv where this tree is installed (the README's `pip install . && ...`
    then `pip install -e ".[test]"`), the installed script itself is run: a stale
    site-packages/hotspot left by the first install made every script fail there."""
    scripts = _pyproject()["project"]["scripts"]
    name = next(n for n, target in scripts.items() if target == f"{module}:main")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)
    installed = Path(sys.executable).parent / name
    if installed.is_file() and _installed_from_this_tree():
        cmd = [str(installed), flag]
    else:
        env["PYTHONPATH"] = str(REPO)
        code = f"import sys; sys.argv[0] = {name!r}; from {module} import main; main()"
        cmd = [sys.executable, "-c", code, flag]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
    assert "Traceback" not in out.stderr


def _installed_from_this_tree():
    """True when this interpreter's `hotspot` distribution was installed from this source tree
    (pip's direct_url.json), editable or not."""
    import json
    try:
        text = importlib.metadata.distribution("hotspot").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return False
    url = json.loads(text or "{}").get("url", "")
    return url.startswith("file://") and Path(url[len("file://"):]).resolve() == REPO
