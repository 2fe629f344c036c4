"""The ``heterotron.*`` import names map onto the repository folders, packages are discovered
(a new subpackage cannot go missing from a normal install), and the configurations and data
ship with the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import heterotron.hdl
import heterotron.scripts
import heterotron.sim
import heterotron.tb

REPO = Path(__file__).resolve().parent.parent
#: Source folder -> import name (setup.py's ROOTS).
ROOTS = {"hdl": "heterotron/hdl", "sim": "heterotron/sim", "tb": "heterotron/tb",
         "scripts": "heterotron/scripts", "configs": "heterotron/configs"}


def test_namespaces_map_onto_folders():
    for module, folder in ((heterotron.hdl, "hdl"), (heterotron.sim, "sim"),
                           (heterotron.tb, "tb"), (heterotron.scripts, "scripts")):
        assert Path(next(iter(module.__path__))).name == folder


def _source_files() -> set[str]:
    """Every file a normal install must carry, as its path inside the wheel."""
    found = set()
    for folder, name in ROOTS.items():
        for path in (REPO / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in (".py", ".toml", ".txt"):
                found.add(f"{name}/{path.relative_to(REPO / folder).as_posix()}")
    return found


def test_normal_install_has_every_module_and_imports_it(tmp_path):
    # Build from a clean copy: a stale setuptools build/ in the checkout must not hide a gap.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(tmp_path / "wheel"), str(src)],
                   check=True)
    wheel = next((tmp_path / "wheel").glob("heterotron-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("heterotron/")}
    assert _source_files() - shipped == set()
    assert "heterotron/sim/data/paragraphs.txt" in shipped
    # the scale model's energy table, calibration and the runs it is scored on
    for data in ("energy.toml", "perf_calibration.json", "calibration_runs.json",
                 "minilm_rtl_runs.json"):
        assert f"heterotron/sim/data/{data}" in shipped, data
    assert "heterotron/hdl/contract/numerics.py" in shipped

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__")
                     for n in shipped if n.endswith(".py"))
    # Import every module from the installed copy (not the checkout), then use a built-in
    # configuration through the CLI's loader.
    code = (f"import importlib, sys; sys.path.insert(0, {str(target)!r})\n"
            f"for m in {modules!r}:\n"
            f"    mod = importlib.import_module(m)\n"
            f"    assert mod.__file__.startswith({str(target)!r}), mod.__file__\n"
            "import heterotron.scripts.common as c; print(len(" f"{modules!r}" "));"
            "print(c.load_config('small')[0])")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    count, config = proc.stdout.splitlines()[-2:]
    assert int(count) == len(modules) > 50
    assert config == "built-in small"
